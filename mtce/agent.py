"""mtcAgent: receives mtcAlive on mgmt, cluster-host and pxeboot and acts on what `hosts` decides.

Wiring only (style §2): sockets, dnsmasq.hosts, the alarm store and its hook, commands to hosts
with their retries, the ctl socket. The decisions (sequence numbers, online/offline, the
pxeboot monitor, lock corrections) are `hosts.HostTable`'s; this module carries out the
`Send`, `RaiseAlarm`, `ClearAlarm` and `Log` actions it returns. Behaviour follows
reference/agent.md; deviations are listed in docs/design.md.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess

from mtce import alarms, alive, auth, config, hosts, logs, netif, store, transport
from mtce.states import ALARM_MTCALIVE, PARM_LOCK_PERSIST, Admin, Cmd, Net, cmd_name

PROGRAM = "mtcAgent"
RX_BATCH = 50                   # MAX_RX_MSG_BATCH (agent.md §3.2)
BATCH_LOG_ABOVE = 25            # "serviced %d messages in one batch" above this
RATE_PERIOD_S = 60.0            # LOOP_TIMER_PERIOD_SECS
RATE_LOG_ABOVE = 20.0           # MSGS_PER_SEC_THRESHOLD
CMD_RETRY_S = 10.0              # MTC_CMD_RSP_TIMEOUT: wait for an ACK before resending
CMD_ATTEMPTS = 5                # resends before giving up (RESET_PROG_MAX_REBOOTS_B4_RESET)
SOCKET_RETRY_S = 5.0            # a receive socket that could not be bound is retried
STALL_S = 2.0                   # a loop turn this late means the process was stalled
NETLINK_SETTLE_S = 0.2          # coalesce a burst of netlink events into one re-check
FIT_CHECK_S = 1.0
DROPS_CHECK_S = 5.0
FIT_FILES = {"mgmt_rx": "agent_mgmnt_rxsock", "clstr_rx": "agent_clstr_rxsock",
             "pxeboot_rx": "agent_pxeboot_rxsock", "mgmt_tx": "agent_mgmnt_txsock",
             "clstr_tx": "agent_clstr_txsock", "pxeboot_tx": "agent_pxeboot_txsock"}
ALARM_HOOK_TIMEOUT_S = 30.0
COALESCE_S = 0.02               # at light load, let datagrams gather this long between reads
COALESCE_MAX_PILE = 256         # ... unless that many would pile up in the meantime
DNSMASQ_SETTLE_S = 2.0          # a dnsmasq.hosts changed this recently is parsed again anyway
ACK_FORGET_S = 1.0              # an ACKed command is kept this long for its other networks' ACKs
# What received datagrams may log, whatever their number or mix (issue 11): every line a
# datagram can cause that is not a host's state change shares this budget.
NOISE_BURST, NOISE_PER_MIN = 10, 6
SIMPLEX_FILE = "simplex"        # <platform_dir>/simplex (STILL_SIMPLEX_FILE)
# Keys whose change a SIGHUP applies by re-creating the sockets they shape.
SOCKET_KEYS = {("agent", "mtc_agent_port"): ("mgmt_rx", "clstr_rx"),
               ("agent", "mtc_rx_pxeboot_port"): ("pxeboot_rx",),
               ("agent", "mgmt_ip"): ("mgmt_rx",),
               ("agent", "cluster_host_ip"): ("clstr_rx", "clstr_tx"),
               ("agent", "pxeboot_ip"): ("pxeboot_rx", "pxeboot_tx"),
               ("paths", "hosts_file"): ("mgmt_rx", "clstr_rx")}
# Keys a running agent cannot take: the reload log says so instead of claiming the change.
RESTART_KEYS = {("paths", "pid_dir"), ("paths", "log_dir"), ("paths", "hostname_file"),
                ("paths", "platform_conf"), ("paths", "state_dir")}
UNUSED_KEYS = {("client", k) for k in ("mtcalive_period", "mgmt_ip", "cluster_host_ip")} | \
    {("actions", k) for k in ("reboot", "reset", "lazy_reboot", "failsafe", "wipedisk")} | \
    {("paths", k) for k in ("dhcp_leases_dir", "ifcfg_dir", "sys_class_net", "persist_dir")} | \
    {("timeouts", "failsafe_shutdown_delay")}
_NET_OF_SOCKET = {"mgmt_rx": Net.MGMT, "clstr_rx": Net.CLSTR, "pxeboot_rx": Net.PXEBOOT}
_RX_OF = {net: name for name, net in _NET_OF_SOCKET.items()}
_BATCH_NAME = {Net.MGMT: "Mgmnt", Net.CLSTR: "Clstr", Net.PXEBOOT: "pxeboot"}
# Commands that expect an ACK, and the networks they go over first to last (agent.md §7.2).
_ACKED = {Cmd.REBOOT, Cmd.RESET, Cmd.LAZY_REBOOT, Cmd.LOCKED, Cmd.UNLOCKED}


class Pending:
    """An operator command waiting for its ACK, resent every CMD_RETRY_S up to CMD_ATTEMPTS."""

    __slots__ = ("host", "cmd", "num", "parm", "attempts", "timer", "acked")

    def __init__(self, host: str, cmd: Cmd, num: int, parm: tuple):
        self.host, self.cmd, self.num, self.parm = host, cmd, num, parm
        self.attempts = 0
        self.timer = None
        self.acked: list[Net] = []


class Agent:
    """The mtcAgent daemon's state and handlers, driven by a `Loop`."""

    def __init__(self, cfg: config.Config, loop, clock, logger: logging.Logger | None = None,
                 inventory: config.Inventory | None = None,
                 sockets: transport.Sockets = transport.SYSTEM, netlink_watch: bool = True):
        self.cfg = cfg
        self.loop = loop
        self.clock = clock
        self.log = logger or logs.get()
        self.throttle = logs.Throttle(self.log, clock)
        self.noise = logs.Throttle(self.log, clock, budget=logs.Budget(NOISE_BURST,
                                                                       NOISE_PER_MIN))
        self.sockets = sockets
        self.netlink_watch = netlink_watch
        self.receiver = transport.Receiver(RX_BATCH)
        self.hostname = netif.read_hostname(cfg.paths.hostname_file)
        self.inventory = inventory or config.load_inventory(cfg.agent.inventory)
        self.platform = self._read_platform()
        self.system_mode = netif.system_mode(self.platform) if self.platform else "standard"
        self.simplex = self.system_mode == "simplex"
        own = self.inventory.hosts.get(self.hostname)
        self.own_mac = own.mgmt_mac if own else ""
        self.own_mgmt_ip = own.mgmt_ip if own else ""
        mgmt_iface = self.platform.get("management_interface", "")
        self.pxeboot_provisioned = (not self.simplex and mgmt_iface != "lo"
                                    and (bool(self.own_mac) or bool(cfg.agent.pxeboot_ip)))
        self.float_ip = ""
        self.clstr_ip = ""
        self.pxeboot_ip = cfg.agent.pxeboot_ip
        self.dnsmasq_path = config.expand_path(cfg.paths.dnsmasq_hosts, cfg.paths.build_info)
        self._dnsmasq_stamp = None
        self.table = hosts.HostTable(hosts.Settings.from_config(
            cfg, simplex=self.simplex, pxeboot_provisioned=self.pxeboot_provisioned))
        self.alarms = alarms.AlarmStore(cfg.paths.state_dir, deferred=True)
        self.operator_states = store.OperatorStates(cfg.paths.state_dir)
        self.socks: dict[str, socket.socket | None] = {
            "mgmt_rx": None, "clstr_rx": None, "pxeboot_rx": None,
            "mgmt_tx": None, "clstr_tx": None, "pxeboot_tx": None}
        self.pending: dict[tuple[str, Cmd], Pending] = {}
        self.ctl = None
        self.counters = {"rx": 0, "rx_bad": 0, "unknown_source": 0, "mtcalive": 0, "acks": 0,
                         "events": 0, "tx": 0, "tx_errors": 0}
        self._rate_count = 0
        self._rate_logged = 0.0
        self._last_turn = clock.now()
        self._audit_timer = None
        self._children: list[subprocess.Popen] = []
        self._handlers = {net: (lambda data, src, net=net: self.on_datagram(data, src, net))
                          for net in Net}
        self.wire = transport.Wire(*auth.from_config(cfg, clock.wall), self.log,
                                   self.noise, self.counters)
        self.watcher = None
        self._nl_timer = None
        self._retry_timer = None
        self._drops: dict[str, int] = {}
        self._saturated = False
        self._recent_rate = 0.0
        self._rate_mark = (clock.now(), 0)

    # -- start-up ----------------------------------------------------------------------------
    def _read_platform(self) -> dict:
        try:
            with open(self.cfg.paths.platform_conf, encoding="utf-8", errors="replace") as f:
                return netif.parse_platform_conf(f.read())
        except OSError as err:
            self.log.warning("cannot read %s (%s) ; assuming a standard system",
                             self.cfg.paths.platform_conf, err.strerror)
            return {}

    def start(self) -> None:
        now = self.clock.now()
        self.log.info("System Type : %s ; %d hosts in %s", self.system_mode,
                      len(self.inventory.hosts), self.inventory.path)
        for warning in self.inventory.warnings:
            self.log.warning("%s", warning)
        if self.hostname not in self.inventory.hosts:
            self.log.warning("%s is not in the inventory %s ; its own addresses are unknown",
                             self.hostname, self.inventory.path)
        self._run(self.table.apply_inventory(self.inventory, now)[3])
        self._refresh_facts()
        self._restore_operator_states(now)
        if self.simplex:
            self.log.info("Simplex Mode: Pxeboot network not provisioned")
        self.load_dnsmasq_hosts(force=True)
        if self.pxeboot_provisioned:
            self.log.info("Pxeboot IP  : %s", self.pxeboot_ip or "none")
        problem = self.alarms.load()
        if problem:
            self.log.error("%s", problem)
        active = [a.host for a in self.alarms.active() if a.id == ALARM_MTCALIVE]
        if active:
            self._run(self.table.restore_alarms(active, now))
        self.setup_sockets()
        self._start_ctl()
        self._start_watcher()
        self.loop.call_later(FIT_CHECK_S, self.fit_tick)
        self.loop.call_later(DROPS_CHECK_S, self.drops_tick)
        self._audit_timer = self.loop.call_later(self.table.settings.offline_period_s,
                                                 self.audit)
        self.loop.pause_hint = self.pause_hint
        self.loop.call_later(RATE_PERIOD_S, self.rate_tick)

    def _refresh_facts(self) -> None:
        """What hosts.py cannot read itself: the `<platform_dir>/simplex` file (agent.md §7.3,
        checked at each locked correction by the original; here at every audit tick)."""
        self.table.facts.still_simplex = os.path.exists(
            os.path.join(self.cfg.paths.platform_dir, SIMPLEX_FILE))

    # -- operator lock/unlock, kept in state_dir (contract §4) -------------------------------
    def _restore_operator_states(self, now: float) -> None:
        """At start: an operator's lock or unlock stays, unless the inventory's
        `administrative` of that host changed while the agent was down (then the file wins)."""
        for problem in self.operator_states.load():
            self.log.error("%s", problem)
        for name in self.operator_states.hosts():
            kept = self.operator_states.get(name)
            host = self.table.get(name)
            if host is None:
                self.log.info("%s not in inventory ; its operator %s is forgotten", name,
                              kept["administrative"])
                self.operator_states.drop(name)
            elif host.entry.administrative != kept["inventory"]:
                self.log.info("%s inventory administrative changed from %s to %s while the "
                              "agent was stopped ; the inventory's %s applies, not the "
                              "operator's %s", name, kept["inventory"],
                              host.entry.administrative, host.entry.administrative,
                              kept["administrative"])
                self.operator_states.drop(name)
            else:
                self._run(host.set_admin(kept["administrative"], now, "operator"))
                self.log.info("%s %s by the operator (%s) ; kept from %s", name,
                              kept["administrative"], kept.get("at") or "earlier",
                              self.operator_states.path)
        self._check_store()

    def _sync_operator_states(self) -> None:
        """After a reload: a host whose inventory `administrative` changed is the file's
        again; its kept operator value goes."""
        for name in self.operator_states.hosts():
            host = self.table.get(name)
            if host is None or host.admin_source != "operator":
                self.operator_states.drop(name)
        self._check_store()

    def _resolve(self, name: str) -> str:
        found = netif.resolve(name, self.cfg.paths.hosts_file)
        return found[0][1] if found else ""

    def setup_sockets(self) -> None:
        """Receive sockets where the original binds them (agent.md §1.2); any that cannot be
        bound now is retried every SOCKET_RETRY_S (the original exits or gives up)."""
        a = self.cfg.agent
        if self.socks["mgmt_rx"] is None:
            self.float_ip = a.mgmt_ip or self._resolve("controller")
            self.socks["mgmt_rx"] = self._bind_rx("mgmt_rx", self.float_ip, a.mtc_agent_port,
                                                  "controller")
        if self.socks["clstr_rx"] is None:
            self.clstr_ip = a.cluster_host_ip or self._resolve(f"{self.hostname}-cluster-host")
            if self.clstr_ip:
                self.socks["clstr_rx"] = self._bind_rx("clstr_rx", self.clstr_ip,
                                                       a.mtc_agent_port,
                                                       f"{self.hostname}-cluster-host")
        if self.pxeboot_provisioned and self.socks["pxeboot_rx"] is None:
            if self.pxeboot_ip:
                self.log.info("Creating pxeboot receive socket on %s:%d", self.pxeboot_ip,
                              a.mtc_rx_pxeboot_port)
                self.socks["pxeboot_rx"] = self._bind_rx("pxeboot_rx", self.pxeboot_ip,
                                                         a.mtc_rx_pxeboot_port, "pxeboot")
            else:
                self.throttle.warning(("bind", "pxeboot_rx"), "cannot create pxeboot receive "
                                      "socket: no pxeboot address for %s (mac %s) in %s",
                                      self.hostname, self.own_mac or "unknown",
                                      self.dnsmasq_path)
        for name, addr in (("mgmt_tx", self.own_mgmt_ip), ("clstr_tx", self.clstr_ip),
                           ("pxeboot_tx", self.pxeboot_ip)):
            if self.socks[name] is None and (name != "pxeboot_tx" or self.pxeboot_provisioned):
                self.socks[name] = self._tx_socket(name, addr)
        missing = any(self.socks[n] is None for n in self.socks if self._wanted(n))
        if missing and self._retry_timer is None:
            self._retry_timer = self.loop.call_later(SOCKET_RETRY_S, self._retry_sockets)

    def _retry_sockets(self) -> None:
        self._retry_timer = None
        self.setup_sockets()

    # -- netlink events and fault insertion --------------------------------------------------
    def _start_watcher(self) -> None:
        if not self.netlink_watch:
            return
        try:
            self.watcher = netif.NetlinkWatcher()
        except Exception as err:   # noqa: BLE001 - netlink is an accelerator, not a need
            self.log.warning("netlink events unavailable (%s) ; retrying sockets every %g s",
                             err, SOCKET_RETRY_S)
            return
        self.loop.add_reader(self.watcher, self._on_netlink)

    def _on_netlink(self, watcher) -> None:
        if watcher.drain() and self._nl_timer is None:
            self._nl_timer = self.loop.call_later(NETLINK_SETTLE_S, self.on_network_change)

    def on_network_change(self) -> None:
        """An address came or went (a floating address moving, a link restarted): close
        receive sockets whose address is gone and bind the missing ones now."""
        self._nl_timer = None
        for name, sock in list(self.socks.items()):
            addr = self.sockets.vanished(sock) if sock is not None else ""
            if addr:
                self.log.info("%s is gone from this host ; %s socket closed until it returns",
                              addr, name)
                self._close(name)
        self.setup_sockets()

    def fit_tick(self) -> None:
        """`<run_dir>/fit/agent_<socket>` closes that socket while it exists (the client's
        fault-insertion files, for the agent's sockets)."""
        self.loop.call_later(FIT_CHECK_S, self.fit_tick)
        fit = os.path.join(self.cfg.paths.run_dir, "fit")
        if not os.path.isdir(fit):
            return
        for name, fname in FIT_FILES.items():
            if self.socks[name] is not None and os.path.exists(os.path.join(fit, fname)):
                self.throttle.warning(("fit", name), "fault insertion: closing %s socket "
                                      "(fit/%s)", name, fname)
                self._close(name)
                if self._retry_timer is None:
                    self._retry_timer = self.loop.call_later(SOCKET_RETRY_S,
                                                             self._retry_sockets)

    def _fit_blocks(self, name: str) -> bool:
        path = os.path.join(self.cfg.paths.run_dir, "fit", FIT_FILES[name])
        if os.path.exists(path):
            self.throttle.error(("setup", name), "failed to init '%s' socket (rc:1) (fit/%s)",
                                name, FIT_FILES[name])
            return True
        return False

    def _wanted(self, name: str) -> bool:
        if name == "pxeboot_rx":
            return self.pxeboot_provisioned and bool(self.pxeboot_ip)
        if name == "pxeboot_tx":
            return self.pxeboot_provisioned
        if name == "clstr_rx":
            return bool(self.clstr_ip)
        return True

    def _bind_rx(self, name: str, addr: str, port: int, what: str):
        if self._fit_blocks(name):
            return None
        if not addr:
            self.throttle.error(("bind", name), "Unable to get ip address list for '%s', "
                                "retrying ...", what)
            return None
        try:
            # No SO_REUSEADDR (the original sets it): a second agent on the same address
            # must fail to bind, not silently share the traffic.
            sock = self.sockets.udp(addr, port, rcvbuf=transport.AGENT_RCVBUF)
        except OSError as err:
            self.throttle.error(("bind", name), "failed to bind %s:%d to socket (%s)", addr,
                                port, transport.describe_error(err))
            return None
        self.throttle.clear(("bind", name))
        net = _NET_OF_SOCKET[name]
        self.log.info("Listening On: 'mtc client receive' socket %s:%d (%d rx bytes - "
                      "req:%d) (%s)", addr, port, transport.rcvbuf_size(sock),
                      transport.AGENT_RCVBUF, net.iface)
        self.loop.add_reader(sock, lambda s, net=net: self.on_readable(s, net))
        return sock

    def _tx_socket(self, name: str, addr: str):
        """Transmit sockets bound to the agent's own address on that network when it has
        one, so that clients see it as the source (pxeboot ACKs go back to it)."""
        if self._fit_blocks(name):
            return None
        family = transport.family_of(addr) if addr else socket.AF_INET
        try:
            sock = self.sockets.udp(None, family=family)
        except OSError as err:
            self.log.error("failed to create %s socket (%s)", name,
                           transport.describe_error(err))
            return None
        if addr:
            try:
                sock.bind((addr, 0))
            except OSError as err:
                self.log.warning("%s socket not bound to %s (%s) ; the kernel picks the "
                                 "source", name, addr, transport.describe_error(err))
        return sock

    # -- dnsmasq.hosts -----------------------------------------------------------------------
    def load_dnsmasq_hosts(self, force: bool = False) -> None:
        """pxeboot addresses by mgmt MAC (agent.md §2), read where the original reads them:
        before every pxeboot mtcAlive request and on every ready event.

        The file is parsed again when it may have changed: a different inode, size, mtime or
        ctime, or a ctime so recent that a change in the same timestamp tick could hide
        (ctime cannot be set back, unlike mtime); otherwise it is the text already read."""
        if not self.pxeboot_provisioned:
            return
        try:
            st = os.stat(self.dnsmasq_path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            settled = self.clock.wall() - st.st_ctime_ns / 1e9 > DNSMASQ_SETTLE_S
        except OSError:
            stamp, settled = None, True
        if stamp == self._dnsmasq_stamp and settled and not force:
            return
        self._dnsmasq_stamp = stamp
        entries, problems, error = netif.read_dnsmasq_hosts(self.dnsmasq_path)
        if error:
            self.throttle.info(("dnsmasq", "error"), "%s", error)
            return
        self.throttle.clear(("dnsmasq", "error"))
        for lineno, why in problems:
            self.throttle.warning(("dnsmasq", lineno, why), "%s:%d: %s ; line ignored",
                                  self.dnsmasq_path, lineno, why)
        by_mac = {h.entry.mgmt_mac: h for h in self.table}
        now = self.clock.now()
        for e in entries:
            host = by_mac.get(e.mac)
            if e.mac == self.own_mac and not self.cfg.agent.pxeboot_ip and e.ip:
                if self.pxeboot_ip and e.ip != self.pxeboot_ip:
                    self.log.warning("own pxeboot ip changed from %s to %s ; receive socket "
                                     "rebound", self.pxeboot_ip, e.ip)
                    self._close("pxeboot_rx")
                    self._close("pxeboot_tx")
                self.pxeboot_ip = e.ip
            if host is None:
                self.throttle.warning(("dnsmasq", "nomac", e.mac), "no host found matching mac "
                                      "address:%s", e.mac)
                continue
            if not e.ip:
                self.throttle.warning(("dnsmasq", "noip", e.mac), "failed to lookup pxeboot ip "
                                      "from mac %s", e.mac)
                continue
            if e.ip != host.pxeboot_ip and not host.pxeboot_ip:
                self.log.info("%s pxeboot hostname: %s has pxeboot ip: %s", host.hostname,
                              e.name, e.ip)
            self._run(self.table.set_pxeboot_ip(host.hostname, e.ip, now))
        if self.pxeboot_provisioned and self.socks["pxeboot_rx"] is None and self.pxeboot_ip \
                and self.socks["mgmt_rx"] is not None:
            self.setup_sockets()

    def _close(self, name: str) -> None:
        sock = self.socks.get(name)
        if sock is not None:
            self.loop.remove_reader(sock)
            sock.close()
        self.socks[name] = None

    # -- receiving (the hot path) ------------------------------------------------------------
    def on_readable(self, sock, net: Net) -> None:
        try:
            count = self.receiver.drain(sock, self._handlers[net])
        except OSError as err:
            # A receive error that is not a queued ICMP report (transport.Receiver skips
            # those) is the socket's, not a datagram's: re-create it, as the client does.
            name = _RX_OF[net]
            self.throttle.error(("recv", net), "%s receive failed (%s) ; socket re-created",
                                net.iface, transport.describe_error(err))
            self._close(name)
            self.setup_sockets()
            return
        self._rate_count += count
        if count >= RX_BATCH:
            self._saturated = True
        if count > BATCH_LOG_ABOVE:
            self.noise.info(("batch", net), "serviced %d messages in one batch (%s)", count,
                            _BATCH_NAME[net])

    def on_datagram(self, data, src: str, net: Net) -> None:
        """One datagram; `data` is a memoryview valid only during the call.

        An mtcAlive changes a host only if its JSON parses and has a valid personality
        (contract §8, agent.md §4.1). A host's mtcAlive text differs from its last valid one
        only in `"sequence"`, so the hot path is a byte comparison with that text
        (`alive.text_matches`); any other text takes the full parse.
        """
        self.counters["rx"] += 1
        if self.wire.auth is not None:
            data = self.wire.admit(data, src, net)[0]
            if data is None:
                return
        fields = alive.mtcalive_fields(data)
        if fields is not None:
            host = self.table.lookup(src)
            if host is not None:
                prefix = host.nets[net].text_prefix
                if prefix is not None and alive.text_matches(data, prefix):
                    self.counters["mtcalive"] += 1
                    actions = host.on_mtcalive(net, fields[2], fields[1], fields[0],
                                               self.clock.now())
                    if actions:
                        self._run(actions)
                    return
        msg, reason = alive.try_decode(data)
        if msg is None:
            self._bad(net, src, reason)
            return
        host = self.table.lookup(src)
        if msg.sig == alive.SIG_MESSAGE:
            if msg.cmd != Cmd.MTCALIVE:
                self.noise.info(("goenabled", net), "%s from %s on %s network ; not handled "
                                "by mtce", cmd_name(msg.cmd), src, net.iface)
                return
            self.on_mtcalive_text(host, msg, src, net)
            return
        if host is None:
            self._unknown(src, net, msg)
            return
        if msg.sig == alive.SIG_CMD_RSP:
            self.on_ack(host, msg, net)
        elif msg.sig == alive.SIG_EVENT:
            self.on_event(host, msg, net)
        else:
            self.noise.warning(("unsupported", net), "Received unsupported or badly formed "
                               "message from %s on %s network", src, net.iface)

    def on_mtcalive_text(self, host, msg: alive.Message, src: str, net: Net) -> None:
        """An mtcAlive whose text is not the host's last one: parse and validate it first."""
        try:
            text = alive.parse_mtcalive(msg.buf)
        except alive.DecodeError as err:
            self._bad(net, src, f"mtcAlive: {err.reason}")
            return
        if host is None:
            host = self._learn_source(text, src, net, msg)
            if host is None:
                return
        now = self.clock.now()
        track = host.nets[net]
        actions = self.table.on_identity(host, text.personality,
                                         text.cluster_host_ip if self.clstr_ip else None, now)
        if actions:
            self._run(actions)
        track.text_prefix = alive.sequence_prefix(msg.buf)
        self.counters["mtcalive"] += 1
        p = msg.parm
        actions = host.on_mtcalive(net, p[3], p[2], p[0], now)
        if actions:
            self._run(actions)

    def _bad(self, net: Net, src: str, reason: str) -> None:
        self.counters["rx_bad"] += 1
        self.noise.warning(("bad", net, reason.split(" (")[0]), "bad message from %s on %s "
                           "network: %s ; dropping", src, net.iface, reason)

    def _unknown(self, src: str, net: Net, msg: alive.Message | None) -> None:
        self.counters["unknown_source"] += 1
        self.noise.warning(("unknown", net), "unknown hostname message from %s on %s network "
                           "... dropping (%s)", src, net.iface,
                           alive.describe(msg) if msg else "")

    def _learn_source(self, text: alive.AliveText, src: str, net: Net, msg: alive.Message):
        """A valid mtcAlive from an address no host owns: the original takes the JSON hostname
        and stores the source as that host's pxeboot address (agent.md §2). Here only on the
        pxeboot network, and only for a host that has no pxeboot address yet, so that a
        spoofed message cannot move a known address."""
        name = text.hostname
        host = self.table.get(name) if name else None
        if host is None or net != Net.PXEBOOT or host.pxeboot_ip:
            self._unknown(src, net, msg)
            return None
        self.log.info("%s hostname learned from %s mtcAlive ; hostaddr:%s was:%s", name,
                      net.iface, src, host.pxeboot_ip or "none")
        self._run(self.table.set_pxeboot_ip(name, src, self.clock.now()))
        return self.table.lookup(src)

    def on_event(self, host, msg: alive.Message, net: Net) -> None:
        self.counters["events"] += 1
        if msg.cmd != alive.EVENT_MONITOR_READY:
            self.log.debug("%s event 0x%x from %s network", host.hostname, msg.cmd, net.iface)
            return
        try:
            name, features = alive.parse_ready_event(msg)
        except alive.DecodeError as err:
            self._bad(net, host.hostname, f"ready event: {err.reason}")
            return
        if name != host.hostname:
            self.noise.warning(("ready-name", net), "ready event names %s but comes from %s's "
                               "address on %s network ; dropping", name, host.hostname,
                               net.iface)
            return
        if features is None:
            self.noise.info(("ready-old", net), "%s mtcClient not offering feature list ; "
                            "node may have upgrade pending", host.hostname)
        # agent.md §2 "When the file is (re)read": on every ready event (its pxeboot request).
        self.load_dnsmasq_hosts()
        self._run(host.on_ready(features, self.clock.now()))

    def on_ack(self, host, msg: alive.Message, net: Net) -> None:
        """`<host> <cmd> request ACK (<net>)` for a command this agent sent; any other ACK
        (unsolicited, or for a code we never send) is a repeatable datagram: noise."""
        self.counters["acks"] += 1
        host.on_ack(msg.cmd, net, self.clock.now())
        name = cmd_name(msg.cmd)
        pending = self.pending.get((host.hostname, msg.cmd)) if msg.cmd < Cmd.LAST else None
        if pending is None or net in pending.acked:
            self.noise.log(logging.DEBUG if msg.cmd == Cmd.LOCKED else logging.INFO,
                           ("ack", host.hostname, net), "%s %s request ACK (%s)",
                           host.hostname, name, net.iface)
            return
        self.log.log(logging.DEBUG if msg.cmd == Cmd.LOCKED else logging.INFO,
                     "%s %s request ACK (%s)", host.hostname, name, net.iface)
        pending.acked.append(net)
        if len(pending.acked) == 1:
            self.log.info("%s %s request succeeded (%s)", host.hostname, name, net.iface)
            if pending.timer is not None:
                pending.timer.cancel()
            self.loop.call_later(ACK_FORGET_S, lambda: self.pending.pop(
                (pending.host, pending.cmd), None))

    # -- actions -----------------------------------------------------------------------------
    def _run(self, actions) -> None:
        for action in actions:
            kind = type(action)
            if kind is hosts.Log:
                self.log.log(logs.LEVELS.get(action.level, logging.INFO), "%s", action.text)
            elif kind is hosts.Send:
                self.send_command(action.host, action.net, action.cmd, action.num, action.parm)
            elif kind is hosts.RaiseAlarm:
                self._raise(action)
            elif kind is hosts.ClearAlarm:
                self._clear(action)

    def _raise(self, action) -> None:
        alarm = alarms.Alarm.new(action.alarm_id, action.host, action.severity, action.reason,
                                 self.clock.wall())
        if self.alarms.raise_(alarm):
            self._alarm_hook(alarm, "raise")
        self._check_store()

    def _clear(self, action) -> None:
        alarm = self.alarms.clear(action.host, action.alarm_id)
        if alarm is not None:
            self._alarm_hook(alarm, "clear")
        self._check_store()

    def _check_store(self) -> None:
        for name, problem in (("alarms", self.alarms.save_problem),
                              ("administrative", self.operator_states.save_problem)):
            if problem:
                self.throttle.error((name, "save"), "%s", problem)

    def _alarm_hook(self, alarm, action: str) -> None:
        command = self.cfg.actions.alarm
        if not command:
            return
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True, close_fds=True)
        except OSError as err:
            self.log.error("cannot run [actions] alarm (%s)", err.strerror)
            return
        try:
            proc.stdin.write(alarms.hook_payload(alarm, action).encode())
            proc.stdin.close()
        except OSError:
            pass
        proc.started_at = self.clock.now()
        self._children.append(proc)

    def _reap(self) -> None:
        for proc in list(self._children):
            rc = proc.poll()
            if rc is None:
                if self.clock.now() - proc.started_at > ALARM_HOOK_TIMEOUT_S:
                    proc.kill()
                    self.log.warning("[actions] alarm took longer than %g s ; killed",
                                     ALARM_HOOK_TIMEOUT_S)
                continue
            self._children.remove(proc)
            if rc != 0:
                self.log.warning("[actions] alarm exited with status %d", rc)

    # -- commands to hosts -------------------------------------------------------------------
    def command_data(self, host, net: Net, cmd: Cmd) -> str:
        if cmd == Cmd.REQ_MTCALIVE and net == Net.PXEBOOT:
            c0, c1 = self.table.get("controller-0"), self.table.get("controller-1")
            return alive.pxeboot_info(self.pxeboot_ip, c0.pxeboot_ip if c0 else "",
                                      c1.pxeboot_ip if c1 else "")
        sender = {Net.MGMT: self.float_ip, Net.CLSTR: "", Net.PXEBOOT: self.pxeboot_ip}[net]
        return alive.default_data(sender, net)

    def send_command(self, hostname: str, net: Net, cmd: Cmd, num: int = 0,
                     parm: tuple = ()) -> bool:
        """Send one command to one host over one network (agent.md §7.0)."""
        host = self.table.get(hostname)
        if host is None:
            return False
        c = self.cfg.client
        if net == Net.MGMT:
            dest, port, sock = host.entry.mgmt_ip, c.mtc_rx_mgmnt_port, self.socks["mgmt_tx"]
        elif net == Net.CLSTR:
            dest, port, sock = host.clstr_ip, c.mtc_rx_clstr_port, self.socks["clstr_tx"]
        else:
            if not self.pxeboot_provisioned:
                return False
            if cmd == Cmd.REQ_MTCALIVE:
                self.load_dnsmasq_hosts()
            dest, port, sock = host.pxeboot_ip, c.mtc_rx_pxeboot_port, self.socks["pxeboot_tx"]
        if not dest:
            if net == Net.PXEBOOT and cmd == Cmd.REBOOT:
                self.log.info("%s Pxeboot network address not learned yet ; can't reboot",
                              hostname)
            return False
        if sock is None:
            self.throttle.warning(("notsent", net, cmd), "%s to %s network not sent",
                                  cmd_name(cmd), net.iface)
            return False
        data = alive.command(cmd, host.entry.mgmt_mac, self.command_data(host, net, cmd),
                             num=num, parm=parm)
        err = self.wire.send(sock, data, dest, port)
        if err is not None:
            self.counters["tx_errors"] += 1
            self.throttle.error(("send", net, err.errno), "%s failed to send %d:%s command to "
                                "%s:%d (%s) (%s)", hostname, cmd, cmd_name(cmd), dest, port,
                                net.iface, transport.describe_error(err))
            return False
        self.counters["tx"] += 1
        return True

    def operator(self, request: str, hostname: str) -> tuple[bool, str]:
        """lock, unlock, reboot, reset, lazy-reboot or alive for one host, from the CLI."""
        host = self.table.get(hostname)
        if host is None:
            return False, f"no such host: {hostname}"
        now = self.clock.now()
        if request == "alive":
            if not self.pxeboot_provisioned:
                return False, "pxeboot is not provisioned on this controller"
            if not host.pxeboot_ip:
                return False, f"{hostname} has no pxeboot address (dnsmasq.hosts)"
            sent = self.send_command(hostname, Net.PXEBOOT, Cmd.REQ_MTCALIVE)
            return sent, (f"mtcAlive request sent to {hostname} on pxeboot" if sent
                          else "send failed (see the agent's log)")
        if request in ("lock", "unlock"):
            state = Admin.LOCKED if request == "lock" else Admin.UNLOCKED
            self._run(host.set_admin(state, now, "operator"))
            # contract §4: kept in state_dir, winning over the inventory across reloads and
            # restarts until the file's `administrative` itself changes.
            self.operator_states.set(host.hostname, state.value, host.entry.administrative,
                                     self.clock.wall())
            self._check_store()
            if request == "lock":
                return self._start_command(host, Cmd.LOCKED, *self._lock_persist())
            return self._start_command(host, Cmd.UNLOCKED)
        if request == "reboot":
            return self._start_command(host, Cmd.REBOOT)
        if request == "reset":
            return self._start_command(host, Cmd.RESET)
        if request == "lazy-reboot":
            return self._start_command(host, Cmd.LAZY_REBOOT, 1,
                                       (self.cfg.agent.lazy_reboot_delay,))
        return False, f"unknown request {request!r}"

    def _lock_persist(self) -> tuple[int, tuple]:
        """num/parm of LOCKED: LOCK_PERSIST unless `<platform_dir>/simplex` exists
        (`M/mtcCtrlMsg.cpp:814-838`, read at the send as the original does)."""
        self._refresh_facts()
        if self.table.facts.still_simplex:
            return 0, ()
        return 1, tuple(int(i == PARM_LOCK_PERSIST) for i in range(PARM_LOCK_PERSIST + 1))

    def _nets_for(self, host, cmd: Cmd) -> list[Net]:
        """Where an operator command goes, first to last (agent.md §7.2-7.3): REBOOT and LAZY
        REBOOT over pxeboot first; LOCKED over pxeboot unless the simplex file exists; RESET
        never over pxeboot (the original sends no RESET there)."""
        nets = []
        pxeboot = self.pxeboot_provisioned and host.pxeboot_ip and not self.simplex
        if pxeboot and (cmd in (Cmd.REBOOT, Cmd.LAZY_REBOOT) or
                        (cmd == Cmd.LOCKED and not self.table.facts.still_simplex)):
            nets.append(Net.PXEBOOT)
        nets.append(Net.MGMT)
        if host.clstr_ip and cmd != Cmd.LAZY_REBOOT:
            nets.append(Net.CLSTR)
        return nets

    def _start_command(self, host, cmd: Cmd, num: int = 0, parm: tuple = ()):
        key = (host.hostname, cmd)
        old = self.pending.pop(key, None)
        if old is not None and old.timer is not None:
            old.timer.cancel()
        pending = Pending(host.hostname, cmd, num, parm)
        self.pending[key] = pending
        sent = self._attempt(pending)
        nets = ",".join(n.iface for n in sent)
        if not sent:
            return False, f"{cmd_name(cmd)} to {host.hostname} not sent (no usable network)"
        return True, f"{cmd_name(cmd)} sent to {host.hostname} ({nets}) ; waiting for ACK"

    def _attempt(self, pending: Pending) -> list:
        host = self.table.get(pending.host)
        if host is None or pending.acked:
            self.pending.pop((pending.host, pending.cmd), None)
            return []
        pending.attempts += 1
        if pending.attempts > CMD_ATTEMPTS:
            self.log.error("%s %s request failed ; no ACK after %d attempts", pending.host,
                           cmd_name(pending.cmd), CMD_ATTEMPTS)
            self.pending.pop((pending.host, pending.cmd), None)
            return []
        sent = [net for net in self._nets_for(host, pending.cmd)
                if self.send_command(pending.host, net, pending.cmd, pending.num, pending.parm)]
        self.log.info("%s sending '%s' request (%s) ; attempt %d of %d", pending.host,
                      cmd_name(pending.cmd), ",".join(n.iface for n in sent) or "none",
                      pending.attempts, CMD_ATTEMPTS)
        pending.timer = self.loop.call_later(CMD_RETRY_S, lambda: self._attempt(pending))
        return sent

    # -- periodic work -----------------------------------------------------------------------
    def pause_hint(self) -> float:
        """Seconds the loop may sleep before its next wait. At light load a short pause lets
        datagrams gather so that one wake-up reads many (steady CPU at 2,000 hosts drops by
        half, docs/bench.md); never when a socket had a full batch waiting or when the recent
        rate would pile up more than COALESCE_MAX_PILE meanwhile."""
        if self._saturated:
            self._saturated = False
            return 0.0
        if self._recent_rate * COALESCE_S > COALESCE_MAX_PILE:
            return 0.0
        return COALESCE_S

    def audit(self) -> None:
        """Every offline_period: stall check, then the hosts that are due."""
        now = self.clock.now()
        then, count = self._rate_mark
        if now - then >= 0.5:
            total = self.counters["rx"]
            self._recent_rate = (total - count) / (now - then)
            self._rate_mark = (now, total)
        period = self.table.settings.offline_period_s
        gap = now - self._last_turn
        self._last_turn = now
        if gap > max(STALL_S, 10 * period):
            self._run(self.table.note_stall(gap, now))
        self._refresh_facts()
        self._run(self.table.audit(now))
        self._reap()
        if self.alarms.dirty:
            self.alarms.flush()            # one write for every alarm change of this tick
            self._check_store()
        # The next audit on the offline_period grid, or earlier when a host in an offline
        # audit is due to go offline before that (offline on time, not one grid step late).
        due = self.table.next_offline_at()
        self._audit_timer = self.loop.call_at(min(now + period, max(due, now + 0.001)),
                                              self.audit)

    def drops_tick(self) -> None:
        """Datagrams the kernel dropped because a receive buffer was full: counted, and logged
        once per increase (a burst or a stall), never per datagram."""
        self.loop.call_later(DROPS_CHECK_S, self.drops_tick)
        for name in ("mgmt_rx", "clstr_rx", "pxeboot_rx"):
            sock = self.socks[name]
            drops = self.sockets.drops(sock) if sock is not None else None
            if drops is None:
                continue
            last = self._drops.get(name, 0)
            if drops > last:
                self.log.warning("%s receive buffer overflowed: the kernel dropped %d "
                                 "datagrams (%d in all)", _NET_OF_SOCKET[name].iface,
                                 drops - last, drops)
            self._drops[name] = drops
        self.counters["kernel_drops"] = sum(self._drops.values())

    def rate_tick(self) -> None:
        """The original's 60 s message-rate log (agent.md §3.4)."""
        self.loop.call_later(RATE_PERIOD_S, self.rate_tick)
        count, self._rate_count = self._rate_count, 0
        rate = count / RATE_PERIOD_S
        if rate > RATE_LOG_ABOVE and abs(rate - self._rate_logged) > 10:
            self.log.info("%d messages processed ; rate: %.1f msgs/sec] [%d:0:0:0:0:0", count,
                          rate, count)
            self._rate_logged = rate
        self._run(self.table.sequence_summaries(self.clock.now()))
        for what, throttle in (("", self.throttle), ("datagrams: ", self.noise)):
            text = throttle.summary()
            if text:
                self.log.info("log throttle: %s%s in the last minute", what, text)

    # -- ctl ---------------------------------------------------------------------------------
    def _start_ctl(self) -> None:
        from mtce import ctl
        try:
            self.ctl = ctl.Server(self.cfg.paths.agent_socket, self.loop, self.handle_request,
                                  self.log, self.clock)
        except OSError as err:
            self.log.error("cannot create the control socket %s (%s) ; mtce hosts will not "
                           "work", self.cfg.paths.agent_socket, err.strerror or err)

    def handle_request(self, req: dict) -> dict:
        now = self.clock.now()
        cmd = req.get("cmd")
        if cmd == "hosts":
            return {"ok": True, "hosts": self.table.to_json(now)}
        if cmd == "alarms":
            return {"ok": True, "alarms": self.alarms.to_json()}
        if cmd == "status":
            return {"ok": True, "hostname": self.hostname, "counters": dict(self.counters),
                    "pxeboot_ip": self.pxeboot_ip, "hosts": len(self.table),
                    "max_loop_lag_s": round(self.loop.max_lag, 3)}
        if cmd in ("lock", "unlock", "reboot", "reset", "lazy-reboot", "alive"):
            host = req.get("host")
            if not isinstance(host, str) or not host:
                return {"ok": False, "error": "a host name is required"}
            ok, message = self.operator(cmd, host)
            return {"ok": ok, "message" if ok else "error": message}
        return {"ok": False, "error": f"unknown request {cmd!r}"}

    # -- reload and stop ---------------------------------------------------------------------
    def reload(self) -> None:
        """SIGHUP: the config, the inventory and dnsmasq.hosts, each applied as a diff."""
        try:
            new = config.load(self.cfg.path)
            inventory = config.load_inventory(new.agent.inventory)
            new_auth, warnings = auth.from_config(new, self.clock.wall)
        except config.ConfigError as err:
            self.log.error("reload failed, keeping the running configuration: %s", err)
            return
        old, changed_keys = self.cfg, set(self.cfg.changed(new))
        notes = {key: "receive sockets re-created" for key in SOCKET_KEYS}
        notes[("paths", "agent_socket")] = "control socket moved"
        for line in old.reload_report(new, PROGRAM, RESTART_KEYS, UNUSED_KEYS, notes):
            self.log.info("config change: %s", line)
        # What needs a restart keeps its running value, so that nothing half-changes.
        for key in changed_keys & RESTART_KEYS:
            new = new.with_value(key, old.get(*key))
        self.cfg = new
        self.wire.use(new_auth, warnings)
        now = self.clock.now()
        self.table.apply_settings(hosts.Settings.from_config(
            new, simplex=self.simplex, pxeboot_provisioned=self.pxeboot_provisioned), now)
        self.table.forget_texts()
        added, removed, changed, actions = self.table.apply_inventory(inventory, now)
        self._run(actions)
        self._sync_operator_states()
        for name in removed:
            for a in [a for a in self.alarms.active() if a.host == name]:
                self._clear(hosts.ClearAlarm(name, a.id))
        self.inventory = inventory
        self.log.info("inventory reloaded: %d added, %d removed, %d changed", len(added),
                      len(removed), len(changed))
        self.dnsmasq_path = config.expand_path(new.paths.dnsmasq_hosts, new.paths.build_info)
        if ("agent", "pxeboot_ip") in changed_keys:
            self.pxeboot_ip = new.agent.pxeboot_ip
        for key in changed_keys & set(SOCKET_KEYS):
            for name in SOCKET_KEYS[key]:
                self._close(name)
        if ("paths", "agent_socket") in changed_keys:
            if self.ctl is not None:
                self.ctl.close()
                self.ctl = None
            self._start_ctl()
        self.load_dnsmasq_hosts(force=True)
        self.setup_sockets()

    def stop(self) -> None:
        if self.watcher is not None:
            self.loop.remove_reader(self.watcher)
            self.watcher.close()
            self.watcher = None
        if self.ctl is not None:
            self.ctl.close()
        for name in list(self.socks):
            self._close(name)
        for proc in self._children:
            if proc.poll() is None:
                proc.kill()


def main(cfg: config.Config, foreground: bool) -> int:
    """`mtce agent`: the inventory is checked before forking (a bad one exits 2)."""
    import time

    from mtce import daemon
    inventory = config.load_inventory(cfg.agent.inventory)
    auth.from_config(cfg, time.time)        # a bad key file exits 2 before forking
    return daemon.serve(PROGRAM, cfg, foreground,
                        lambda cfg, loop, clock, log: Agent(cfg, loop, clock, log, inventory))
