"""mtcClient: sends mtcAlive on every network it has and carries out the agent's commands.

Behaviour as reference/client.md describes the C daemon (HEAD `c1cd466`): pxeboot gating at
start, sockets per network, the 5 s tick (socket recovery, pxeboot address re-learning,
mtcAlive on pxeboot, mgmt and cluster-host, fault-insertion files, the ready event every
~60 s), per-network sequence numbers, commands with the target-MAC check and the ACK echo.
Deviations are listed in docs/design.md. Actions that touch the machine are the `[actions]`
shell commands, never hard-wired.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket

from mtce import alive, auth, config, logs, netif, schedule, transport
from mtce.actions import HostActions
from mtce.schedule import Ack, Do
from mtce.status import Status
from mtce.states import CONTROLLERS, Cmd, Net, cmd_name

PROGRAM = "mtcClient"
READY_EVENT_SECS = 60          # MTC_MINS_1: the ready event goes out about once a minute
# What received datagrams may log, whatever their number or mix (issue 11): repeated faults
# and commands that change nothing share NOISE; lines of real changes (a lock file made, a
# reboot started) have EVENTS, so that noise never hides them.
NOISE_BURST, NOISE_PER_MIN = 10, 6
EVENTS_BURST, EVENTS_PER_MIN = 30, 30
NETLINK_SETTLE_S = 0.2         # coalesce a burst of netlink events into one re-check
FIRST_TICK_SECS = 1.0          # the first mtcAlive tick comes 1 s after start
RX_BATCH = 10                  # datagrams read per socket per loop turn

# Socket names, their network, and the original's names in recovery logs.
SOCKETS = {
    "pxeboot_rx": (Net.PXEBOOT, "pxeboot_rx"),
    "pxeboot_tx": (Net.PXEBOOT, "pxeboot_tx"),
    "mgmt_rx": (Net.MGMT, "mgmt_rx"),
    "mgmt_tx": (Net.MGMT, "mgmt_tx"),
    "clstr_rx": (Net.CLSTR, "clstr_rx"),
    "clstr_tx": (Net.CLSTR, "clstr_tx_sockets"),
}
SETUP_ORDER = ("pxeboot_rx", "pxeboot_tx", "mgmt_rx", "mgmt_tx", "clstr_rx", "clstr_tx")
RECOVERY_ORDER = ("mgmt_rx", "mgmt_tx", "pxeboot_rx", "pxeboot_tx", "clstr_rx", "clstr_tx")

# Keys a running client cannot take (its gates are evaluated once per process, client.md
# §1.3): the reload log says so. Every other key is applied: sockets are re-created.
RESTART_KEYS = {("paths", "pid_dir"), ("paths", "log_dir"), ("paths", "platform_conf"),
                ("paths", "platform_dir")}
UNUSED_KEYS = {("agent", k) for k in ("offline_period", "offline_threshold",
                                      "lazy_reboot_delay", "inventory", "mgmt_ip",
                                      "cluster_host_ip", "pxeboot_ip")} | \
    {("timeouts", k) for k in ("online_period", "pxeboot_mtcalive_window")} | \
    {("paths", k) for k in ("dnsmasq_hosts", "build_info", "state_dir", "agent_socket")} | \
    {("actions", "alarm")}

# run_dir/fit/<file>: (socket, fails set-up too, text of that set-up failure)
FIT_SOCKETS = {
    "pxeboot_rxsock": ("pxeboot_rx", False, None),
    "pxeboot_txsock": ("pxeboot_tx", False, None),
    "mgmnt_rxsock": ("mgmt_rx", True, "management rx"),
    "mgmnt_txsock": ("mgmt_tx", True, "management tx"),
    "clstr_rxsock": ("clstr_rx", True, "cluster-host rx"),
    "clstr_txsock": ("clstr_tx", False, None),
}


class Client:
    """The mtcClient daemon's state and handlers, driven by a `Loop`."""

    def __init__(self, cfg: config.Config, loop, clock, logger: logging.Logger | None = None,
                 links_factory=None, sockets: transport.Sockets = transport.SYSTEM,
                 netlink_watch: bool = True):
        self.cfg = cfg
        self.loop = loop
        self.clock = clock
        self.log = logger or logs.get()
        self.throttle = logs.Throttle(self.log, clock)
        self.noise = logs.Throttle(self.log, clock, budget=logs.Budget(NOISE_BURST,
                                                                       NOISE_PER_MIN))
        self.events = logs.Throttle(self.log, clock, interval=0.0,
                                    budget=logs.Budget(EVENTS_BURST, EVENTS_PER_MIN))
        self.sockets = sockets
        self.netlink_watch = netlink_watch
        self.links_factory = links_factory or netif.NetlinkLinks.from_kernel
        self.receiver = transport.Receiver(RX_BATCH)
        self.hostname = netif.read_hostname(cfg.paths.hostname_file)

        self.platform: dict = {}
        self.platform_ready = False
        self.personality = ""
        self.system_mode = "simplex"
        self.mgmt_iface = ""
        self.clstr_iface = ""
        self.pxeboot_provisioned = False
        self.clstr_provisioned = False
        self.pxeboot_iface = ""
        self.pxeboot_addr = ""
        self.learn_outcome = None
        self.mgmt_ip = ""
        self.mgmt_mac = ""
        self.clstr_ip = ""
        self.mgmt_family = socket.AF_INET
        self.controller_addr = ""
        self.clstr_dests: dict[str, str] = {}
        # Controllers' pxeboot addresses, learned only from the agent's mtcAlive request.
        self.ctrl_pxeboot = {"controller": "", "controller-0": "", "controller-1": ""}
        self.pxeboot_learned_flag = {c: True for c in CONTROLLERS}
        self.status = Status(cfg.paths, "", self.log)
        self.socks: dict[str, socket.socket | None] = {name: None for name in SOCKETS}
        self.identity: alive.Identity | None = None
        self.ticks = 0
        self.tick_timer = None
        self.actions = HostActions(cfg, loop, clock, self.log, self.throttle, self.hostname,
                                   noise=self.noise, events=self.events)
        self.reset_timer = None
        self.counters = {"rx": 0, "rx_bad": 0, "tx": 0, "tx_errors": 0, "commands": 0,
                         "refused": 0}
        self.watcher = None
        self._nl_timer = None
        self._recovery_sent_at = float("-inf")
        self._lease_seen = None
        self.mgmt_master = ""
        self.our_ifaces: set = set()
        self.wire = transport.Wire(*auth.from_config(cfg, clock.wall), self.log,
                                   self.noise, self.counters)
        # Where commands may come from, per network (schedule.Sources, README "Security"):
        # the controllers' names, re-resolved whenever the hosts file changes, and the
        # pxeboot addresses of the latest mtcAlive request.
        self.sources = schedule.Sources()
        self._names_stamp = None
        self._c_mgmt: frozenset = frozenset()
        self._request_src = ""
        self._pxeboot_trust_at = clock.now()          # the last request from a trusted source

    # -- start-up ----------------------------------------------------------------------------
    def start(self) -> None:
        """Everything before the main loop: config logs, gates, learning, sockets, ready."""
        c = self.cfg
        self.log.info("Agent Mgmnt : %d (tx)", c.agent.mtc_agent_port)
        self.log.info("Client Mgmnt: %d (rx)", c.client.mtc_rx_mgmnt_port)
        self.log.info("Shutdown TO : %g secs", c.timeouts.failsafe_shutdown_delay)
        self.log.info("%s", self.hostname)
        self._load_platform()
        self._setup_all()
        self._lease_seen = self._lease_stamp() if self.pxeboot_provisioned else None
        self.actions.housekeeping()
        self._start_watcher()
        self.send_ready_event()
        self.tick_timer = self.loop.call_later(FIRST_TICK_SECS, self.tick)

    def _load_platform(self) -> bool:
        """platform.conf facts; the gates are evaluated once, when the facts first exist."""
        path = self.cfg.paths.platform_conf
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                conf = netif.parse_platform_conf(f.read())
        except OSError as err:
            self.throttle.warning(("platform", "read"), "cannot read %s (%s) ; retrying ...",
                                  path, err.strerror)
            return False
        missing = [k for k in ("management_interface", "subfunction") if not conf.get(k)]
        if missing:
            self.throttle.warning(("platform", "keys"), "%s lacks %s ; retrying ...", path,
                                  " and ".join(missing))
            return False
        self.throttle.clear(("platform", "read"))
        self.throttle.clear(("platform", "keys"))
        self.platform = conf
        if self.platform_ready:
            return True
        self.platform_ready = True
        self.personality = self.status.personality = conf["subfunction"]
        self.mgmt_iface = conf["management_interface"]
        self.clstr_iface = conf.get("cluster_host_interface", "")
        self.system_mode = netif.system_mode(conf)
        self.log.info("System Type : %s", {
            "standard": "Standard System", "duplex": "All-in-one Duplex",
            "duplex-direct": "All-in-one Duplex Direct Connect",
            "simplex": "All-in-one Simplex "}[self.system_mode])
        self.log.info("Node Type   : %s", self.personality)
        self._evaluate_gates()
        return True

    def _evaluate_gates(self) -> None:
        """Pxeboot and cluster-host provisioning, once per process (client.md §1.3)."""
        pd = self.cfg.paths.platform_dir
        first_install = (os.path.exists(os.path.join(pd, ".first_controller"))
                         and not os.path.exists(os.path.join(pd, ".initial_config_complete")))
        if self.mgmt_iface == "lo":
            self.pxeboot_provisioned = False
        elif first_install:
            self.pxeboot_provisioned = False
            self.log.debug("pxeboot network not provisionable yet")
        else:
            self.log.info("Mgmnt iface : %s", self.mgmt_iface)
            if self.system_mode == "simplex":
                self.log.info("Simplex Mode: Pxeboot network not provisioned")
                self.pxeboot_provisioned = False
            else:
                self.pxeboot_provisioned = True
                self.pxeboot_iface = self.mgmt_iface
        self.clstr_provisioned = bool(self.clstr_iface) and self.clstr_iface != self.mgmt_iface
        if self.pxeboot_provisioned:
            self.learn_pxeboot_address()

    @property
    def simplex(self) -> bool:
        return self.system_mode == "simplex"

    # -- addresses ---------------------------------------------------------------------------
    def _links(self):
        try:
            return self.links_factory()
        except Exception as err:   # noqa: BLE001 - netlink unavailable: learn from files only
            self.throttle.warning(("netlink",), "netlink dump failed (%s) ; using %s only",
                                  err, self.cfg.paths.sys_class_net)
            return netif.NetlinkLinks([])

    def learn_pxeboot_address(self) -> bool:
        """Own pxeboot address from the lease or ifcfg file (client.md §2.1-2.5).

        The chain and learning lines are logged when the outcome differs from the last one,
        so a failure that repeats every tick is logged once a minute, not a dozen lines each
        time.
        """
        if not self.pxeboot_provisioned:
            return False
        p = self.cfg.paths
        is_controller = "controller" in self.personality.split(",")
        result = netif.learn_pxeboot_address(self.pxeboot_iface or self.mgmt_iface,
                                             is_controller, p.sys_class_net, p.dhcp_leases_dir,
                                             p.ifcfg_dir, self._links())
        outcome = (result.addr, result.info.chain if result.info else None)
        if outcome != self.learn_outcome:
            for level, text in result.logs:
                self.log.log(logs.LEVELS.get(level, logging.INFO), "%s", text)
            if result.addr is None:
                self.log.warning("failed to learn my pxeboot address ; rc:%s",
                                 result.info.rc if result.info else "?")
            self.throttle.clear(("learn",))
        elif not result.addr:
            self.throttle.warning(("learn",), "pxeboot address still not learned (%s)",
                                  "interface info failed" if result.addr is None
                                  else "no lease or ifcfg address")
        self.learn_outcome = outcome
        changed = result.addr is not None and result.addr != self.pxeboot_addr
        if changed and self.pxeboot_addr:
            self.log.info("pxeboot address changed from %s to %s", self.pxeboot_addr,
                          result.addr or "none")
        if result.addr is not None:
            self.pxeboot_addr = result.addr
        if result.info is not None and result.info.ok and result.info.parent:
            self.pxeboot_iface = result.info.parent
        return changed

    def _resolve(self, name: str, family: int | None = None) -> str:
        """An address for `name`: hosts file first, IPv6 first (or the given family)."""
        found = netif.resolve(name, self.cfg.paths.hosts_file)
        for fam, addr in found:
            if family is None or fam == family:
                return addr
        return ""

    def _iface_address(self, iface: str, family: int, exclude: str = "") -> str:
        """The interface's (or its master's) address of `family`; never `exclude`: on the
        active controller the floating `controller` address sits on the mgmt interface too,
        and with IPv6 (no primary address) it may be listed first."""
        links = self._links()
        master = netif.iface_master(iface, self.cfg.paths.sys_class_net, links)
        skip = ipaddress.ip_address(exclude) if exclude else None
        for name in dict.fromkeys((master, iface)):
            addrs = [a for a in netif.iface_addresses(name, links, family)
                     if ipaddress.ip_address(a.split("%")[0]) != skip]
            if addrs:
                return addrs[0]
        return ""

    def _resolve_controllers(self) -> None:
        """The controllers' addresses by name (hosts file first): where mtcAlive and ACKs go
        and who may send commands. Run at socket set-up and whenever the hosts file changes,
        so that a swact or a readdress is followed at the next tick."""
        c = self.cfg.client
        self._names_stamp = _file_stamp(self.cfg.paths.hosts_file)
        old = self.controller_addr
        if c.mgmt_ip:
            self.mgmt_family = transport.family_of(c.mgmt_ip)
            self.controller_addr = self._resolve("controller", self.mgmt_family)
        else:
            found = netif.resolve("controller", self.cfg.paths.hosts_file)
            if found:
                self.mgmt_family, self.controller_addr = found[0]
            else:
                self.controller_addr = ""
        if old and self.controller_addr and old != self.controller_addr:
            self.log.info("Controller  : %s ; was %s", self.controller_addr, old)
        self._c_mgmt = frozenset(a for a in (
            self.controller_addr, self._resolve("controller-0", self.mgmt_family),
            self._resolve("controller-1", self.mgmt_family)) if a)
        if self.clstr_provisioned:
            found = netif.resolve("controller-0-cluster-host", self.cfg.paths.hosts_file)
            family = (transport.family_of(self.cfg.client.cluster_host_ip)
                      if self.cfg.client.cluster_host_ip
                      else found[0][0] if found else self.mgmt_family)
            dests = {}
            for ctl in CONTROLLERS[:1] if self.simplex else CONTROLLERS:
                addr = self._resolve(f"{ctl}-cluster-host", family)
                if addr:
                    dests[ctl] = addr
                else:
                    self.throttle.warning(("resolve", ctl), "Unable to get ip address list for "
                                          "'%s-cluster-host', retrying ...", ctl)
            self.clstr_dests = dests
        self._update_sources()

    def _update_sources(self) -> None:
        pxe = {a for a in self.ctrl_pxeboot.values() if a}
        if self._request_src:
            pxe.add(self._request_src)
        self.sources = schedule.Sources(
            own=frozenset(a for a in (self.mgmt_ip, self.clstr_ip) if a),
            mgmt=self._c_mgmt, clstr=frozenset(self.clstr_dests.values()),
            pxeboot=frozenset(pxe))

    def _refresh_names(self) -> None:
        """At each tick: a changed hosts file is read again (one stat when it is not)."""
        if _file_stamp(self.cfg.paths.hosts_file) != self._names_stamp:
            self._resolve_controllers()

    def _update_mgmt_address(self) -> bool:
        """Own mgmt address, MAC and the floating controller address. True when all known."""
        c = self.cfg.client
        self._resolve_controllers()
        if not self.controller_addr:
            self.throttle.warning(("resolve", "controller"),
                                  "Unable to get ip address list for 'controller', retrying ...")
        else:
            if self.throttle.active(("resolve", "controller")) or not self.identity:
                self.log.info("Controller  : %s", self.controller_addr)
            self.throttle.clear(("resolve", "controller"))
        if c.mgmt_ip:
            self.mgmt_ip = c.mgmt_ip
        elif self.mgmt_iface:
            ip = self._iface_address(self.mgmt_iface, self.mgmt_family,
                                     exclude=self.controller_addr)
            if not ip:
                self.throttle.warning(("noaddr", self.mgmt_iface),
                                      "%s has no IP address (rc=%d), retrying ...",
                                      self.mgmt_iface, 1)
            else:
                self.throttle.clear(("noaddr", self.mgmt_iface))
            self.mgmt_ip = ip
        if self.mgmt_iface:
            links = self._links()
            master = netif.iface_master(self.mgmt_iface, self.cfg.paths.sys_class_net, links)
            self.mgmt_master = master
            mac = netif.iface_mac(master, links, self.cfg.paths.sys_class_net) or \
                netif.iface_mac(self.mgmt_iface, links, self.cfg.paths.sys_class_net)
            if mac and mac != self.mgmt_mac:
                self.log.info("Mac Address : %s", mac)
            self.mgmt_mac = mac or self.mgmt_mac
        self._update_sources()
        return bool(self.mgmt_ip and self.controller_addr)

    def _update_clstr_address(self) -> bool:
        c = self.cfg.client
        self._resolve_controllers()
        if c.cluster_host_ip:
            self.clstr_ip = c.cluster_host_ip
        else:
            found = netif.resolve("controller-0-cluster-host", self.cfg.paths.hosts_file)
            family = found[0][0] if found else self.mgmt_family
            self.clstr_ip = self._iface_address(self.clstr_iface, family)
            if not self.clstr_ip:
                self.throttle.warning(("noaddr", self.clstr_iface),
                                      "%s has no IP address (rc=%d), retrying ...",
                                      self.clstr_iface, 1)
            else:
                self.throttle.clear(("noaddr", self.clstr_iface))
        self._update_sources()
        return bool(self.clstr_ip and self.clstr_dests)

    # -- sockets -----------------------------------------------------------------------------
    def _fit(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.cfg.paths.run_dir, "fit", name))

    def _needed(self, name: str) -> bool:
        net = SOCKETS[name][0]
        if net == Net.PXEBOOT:
            return self.pxeboot_provisioned
        if net == Net.CLSTR:
            return self.platform_ready and self.clstr_provisioned
        return self.platform_ready or bool(self.cfg.client.mgmt_ip)

    def _close(self, name: str) -> None:
        sock = self.socks.get(name)
        if sock is not None:
            if name.endswith("_rx"):
                self.loop.remove_reader(sock)
            sock.close()
        self.socks[name] = None

    def _setup_all(self) -> None:
        for name in SETUP_ORDER:
            if self._needed(name):
                self.setup_socket(name)
        self._rebuild_identity()

    def setup_socket(self, name: str) -> bool:
        """(Re)create one socket; False (logged) when it cannot be had now."""
        self._close(name)
        for fit_name, (sock_name, at_setup, label) in FIT_SOCKETS.items():
            if sock_name == name and at_setup and self._fit(fit_name):
                self.throttle.error(("setup", name), "failed to init '%s' socket (rc:1)", label)
                return False
        try:
            sock = getattr(self, f"_setup_{name}")()
        except OSError as err:
            self.throttle.error(("setup", name, "oserror"), "%s socket set-up failed (%s)",
                                name, transport.describe_error(err))
            return False
        if sock is None:
            return False
        self.socks[name] = sock
        self.throttle.clear(("setup", name))
        if name.endswith("_rx"):
            net = SOCKETS[name][0]
            self.loop.add_reader(sock, lambda s, net=net: self._on_readable(s, net))
        return True

    def _setup_pxeboot_rx(self):
        port = self.cfg.client.mtc_rx_pxeboot_port
        iface = self.pxeboot_iface
        if not self.pxeboot_addr:
            self.throttle.warning(("setup", "pxeboot_rx"), "cannot setup pxeboot receive "
                                  "socket socket on %s port %d with no pxeboot address",
                                  iface, port)
            return None
        try:
            sock = self.sockets.udp(self.pxeboot_addr, port, family=socket.AF_INET)
        except OSError as err:
            self.throttle.error(("setup", "pxeboot_rx"), "failed to bind %s:%d to socket "
                                "(%s)", self.pxeboot_addr, port, transport.describe_error(err))
            return None
        self.log.info("setup pxeboot receive socket on %s:%s:%d", iface, self.pxeboot_addr, port)
        return sock

    def _setup_pxeboot_tx(self):
        # Deviation (docs/design.md): bound to the own pxeboot address when it is known, so
        # that the agent sees that address as the source.
        sock = self.sockets.udp(None, family=socket.AF_INET)
        if self.pxeboot_addr:
            try:
                sock.bind((self.pxeboot_addr, 0))
            except OSError as err:
                self.throttle.warning(("bind", "pxeboot_tx"), "pxeboot transmit socket not "
                                      "bound to %s (%s) ; the kernel picks the source",
                                      self.pxeboot_addr, transport.describe_error(err))
        self.log.info("setup of pxeboot transmit socket")
        return sock

    def _setup_mgmt_rx(self):
        if not self._update_mgmt_address() and not self.mgmt_ip:
            return None
        port = self.cfg.client.mtc_rx_mgmnt_port
        self.log.info("Creating %s socket on port %d with address: %s", self.mgmt_iface or "mgmt",
                      port, self.mgmt_ip)
        try:
            return self.sockets.udp(self.mgmt_ip, port)
        except OSError as err:
            self.throttle.error(("setup", "mgmt_rx"), "failed to bind %s:%d to socket (%s)",
                                self.mgmt_ip, port, transport.describe_error(err))
            return None

    def _setup_mgmt_tx(self):
        if not self._update_mgmt_address():
            return None
        self.log.info("setup of Mgmt network transmit socket")
        self.log.info("Creating %s socket on port %d with address: controller",
                      self.mgmt_iface or "mgmt", self.cfg.agent.mtc_agent_port)
        return self.sockets.udp(self.mgmt_ip, 0)

    def _setup_clstr_rx(self):
        if not self._update_clstr_address() and not self.clstr_ip:
            return None
        port = self.cfg.client.mtc_rx_clstr_port
        self.log.info("setup of cluster-host receive socket")
        self.log.info("Cluster-host iface : %s", self.clstr_iface)
        self.log.info("Cluster-host addr  : %s", self.clstr_ip)
        try:
            return self.sockets.udp(self.clstr_ip, port)
        except OSError as err:
            self.throttle.error(("setup", "clstr_rx"), "failed to bind %s:%d to socket (%s)",
                                self.clstr_ip, port, transport.describe_error(err))
            return None

    def _setup_clstr_tx(self):
        if not self._update_clstr_address():
            return None
        self.log.info("setup of controller-0-cluster-host transmit sockets")
        return self.sockets.udp(self.clstr_ip, 0)

    def _rebuild_identity(self) -> None:
        ident = alive.Identity(
            hostname=self.hostname,
            personality=self.personality,
            pxeboot_ip=self.pxeboot_addr,
            mgmt_ip=self.mgmt_ip,
            cluster_host_ip=self.clstr_ip if self.clstr_provisioned else "",
            mgmt_mac=self.mgmt_mac.lower(),
        )
        if ident != self.identity:
            self.log.info("Identity    : %s", alive.json_text(ident.as_dict()))
        self.identity = ident
        ours = {self.mgmt_iface, self.clstr_iface, self.pxeboot_iface, self.mgmt_master}
        if self.watcher is not None or not self.our_ifaces:
            links = self._links()
            ours |= {links.owner_of(a) for a in (self.mgmt_ip, self.clstr_ip, self.pxeboot_addr)
                     if a}
        self.our_ifaces = ours - {""}

    # -- the 5 s tick ------------------------------------------------------------------------
    def tick(self) -> None:
        self.tick_timer = self.loop.call_later(self.cfg.client.mtcalive_period, self.tick)
        if not self.platform_ready and self._load_platform():
            self._setup_all()
        self.actions.reap()
        self._refresh_names()
        self._check_lease()
        self._recover()
        self.send_mtcalive(Net.PXEBOOT)
        self.send_mtcalive(Net.MGMT)
        self.send_mtcalive(Net.CLSTR)
        self.fit_checks()
        self.ticks += 1
        if self.ticks >= max(1, round(READY_EVENT_SECS / self.cfg.client.mtcalive_period)):
            self.ticks = 0
            self.log.debug("sending mtcClient ready event")
            self.send_ready_event()
            self.log_suppressed()

    def log_suppressed(self) -> None:
        """Once a minute: what each throttle held back, by cause."""
        for what, throttle in (("", self.throttle), ("datagrams: ", self.noise),
                               ("commands: ", self.events)):
            text = throttle.summary()
            if text:
                self.log.info("log throttle: %s%s in the last minute", what, text)

    def _recover(self) -> set:
        """Socket recovery, then re-learning when a pxeboot socket had to be re-created (the
        address may be why; the original re-learns only while a socket is still down)."""
        retried = self.recover_sockets()
        if retried & {"pxeboot_rx", "pxeboot_tx"}:
            self._lease_seen = self._lease_stamp()
            if self.learn_pxeboot_address() and self.pxeboot_addr:
                self.setup_socket("pxeboot_rx")
                self.setup_socket("pxeboot_tx")
        if retried:
            self._rebuild_identity()
        return retried

    def _lease_stamp(self) -> tuple:
        """What the own-address files look like now (names, times, sizes), cheaply."""
        key = f"{self.pxeboot_iface or self.mgmt_iface}:2"
        stamp = []
        try:
            for entry in os.scandir(self.cfg.paths.dhcp_leases_dir):
                if key in entry.name:
                    st = entry.stat()
                    stamp.append((entry.name, st.st_mtime_ns, st.st_size))
        except OSError:
            pass
        try:
            st = os.stat(os.path.join(self.cfg.paths.ifcfg_dir, f"ifcfg-{key}"))
            stamp.append(("ifcfg", st.st_mtime_ns, st.st_size))
        except OSError:
            pass
        return tuple(sorted(stamp))

    def _check_lease(self) -> None:
        """A renewed lease with a new address is picked up at the next tick (the original
        keeps the old address until a restart or a socket failure)."""
        if not self.pxeboot_provisioned:
            return
        stamp = self._lease_stamp()
        if stamp == self._lease_seen:
            return
        first, self._lease_seen = self._lease_seen is None, stamp
        if first:
            return
        if self.learn_pxeboot_address():
            self.setup_socket("pxeboot_rx")
            self.setup_socket("pxeboot_tx")
            self._rebuild_identity()

    # -- netlink events ----------------------------------------------------------------------
    def _start_watcher(self) -> None:
        if not self.netlink_watch:
            return
        try:
            self.watcher = netif.NetlinkWatcher()
        except Exception as err:   # noqa: BLE001 - netlink is an accelerator, not a need
            self.log.warning("netlink events unavailable (%s) ; relying on the %g s tick", err,
                             self.cfg.client.mtcalive_period)
            return
        self.loop.add_reader(self.watcher, self._on_netlink)

    def _relevant(self, name: str) -> bool:
        """Events about the interfaces we use, or that hold one of our addresses."""
        return name.split(":")[0] in self.our_ifaces

    def _on_netlink(self, watcher) -> None:
        events = watcher.drain()
        if any(e == "error" or self._relevant(n) for e, n in events) and self._nl_timer is None:
            self._nl_timer = self.loop.call_later(NETLINK_SETTLE_S, self.on_network_change)

    def on_network_change(self) -> None:
        """A link or address of ours changed: drop sockets whose address is gone, recover
        the others now, and if anything moved, send mtcAlive now instead of at the tick."""
        self._nl_timer = None
        for name, sock in list(self.socks.items()):
            addr = self.sockets.vanished(sock) if sock is not None else ""
            if addr:
                self.log.info("%s is gone from this host ; %s socket closed until it returns",
                              addr, name)
                self._close(name)
        retried = self._recover()
        now = self.clock.now()
        if now - self._recovery_sent_at >= NETLINK_SETTLE_S * 5:
            self._recovery_sent_at = now
            self.log.info("network change%s ; sending mtcAlive now",
                          f" (re-created {', '.join(sorted(retried))})" if retried else "")
            for net in Net:
                self.send_mtcalive(net)

    def recover_sockets(self) -> set:
        """One attempt for every failed socket (cbcb194), in the original's order.

        Returns the names of the sockets that were retried.
        """
        retried = set()
        for name in RECOVERY_ORDER:
            if self.socks[name] is None and self._needed(name):
                retried.add(name)
                self.throttle.warning(("recover", name), "calling setup_%s_socket "
                                      "(auto-recovery)", SOCKETS[name][1])
                if self.setup_socket(name):
                    self.throttle.clear(("recover", name))
        return retried

    def fit_checks(self) -> None:
        """Runtime fault insertion: `run_dir/fit/<socket file>` closes that socket."""
        if not os.path.isdir(os.path.join(self.cfg.paths.run_dir, "fit")):
            return
        for fit_name, (name, _, _) in FIT_SOCKETS.items():
            if self.socks[name] is not None and self._fit(fit_name):
                self.throttle.warning(("fit", fit_name), "fault insertion: closing %s socket "
                                      "(fit/%s)", name, fit_name)
                self._close(name)

    # -- mtcAlive ----------------------------------------------------------------------------
    def build_mtcalive(self, net: Net) -> bytes:
        """Consume the network's next sequence number and build its mtcAlive."""
        ident = self.identity or alive.Identity(self.hostname, self.personality, "", "", "", "")
        return self.status.build(ident, net, self.clock.uptime())

    def send_mtcalive(self, net: Net) -> None:
        if net == Net.PXEBOOT:
            if self.pxeboot_provisioned:
                self._send_pxeboot_mtcalive()
        elif net == Net.MGMT:
            if not self.platform_ready and not self.cfg.client.mgmt_ip:
                return
            data = self.build_mtcalive(Net.MGMT)
            self._send(Net.MGMT, "mgmt_tx", data, self.controller_addr,
                       self.cfg.agent.mtc_agent_port, "mtc_client_mgmt_tx_socket not ok")
        elif self.clstr_provisioned and self.socks["clstr_rx"] is not None:
            data = self.build_mtcalive(Net.CLSTR)
            for ctl in (CONTROLLERS[:1] if self.simplex else CONTROLLERS):
                self._send(Net.CLSTR, "clstr_tx", data, self.clstr_dests.get(ctl, ""),
                           self.cfg.agent.mtc_agent_port,
                           f"mtc_client_clstr_tx_socket_c{ctl[-1]} not ok")

    def _send(self, net: Net, sock_name: str, data: bytes, addr: str, port: int,
              not_ok: str) -> bool:
        sock = self.socks[sock_name]
        if sock is None or not addr:
            self.counters["tx_errors"] += 1
            self.throttle.error(("notok", sock_name), "%s", not_ok)
            return False
        err = self.wire.send(sock, data, addr, port)
        if err is not None:
            self.counters["tx_errors"] += 1
            self.throttle.error(("send", sock_name, err.errno), "message send failed on %s "
                                "network to %s:%d (%s)", net.iface, addr, port,
                                transport.describe_error(err))
            return False
        self.counters["tx"] += 1
        self.throttle.clear(("notok", sock_name))
        self.throttle.clear(("send", sock_name, None))
        return True

    def _send_pxeboot_mtcalive(self) -> None:
        data = self.build_mtcalive(Net.PXEBOOT)
        port = self.cfg.agent.mtc_rx_pxeboot_port
        for ctl in (CONTROLLERS[:1] if self.simplex else CONTROLLERS):
            addr = self.ctrl_pxeboot[ctl]
            if not addr:
                if self.pxeboot_learned_flag[ctl]:
                    self.pxeboot_learned_flag[ctl] = False
                    self.log.warning("%s pxeboot address not learned ; unable to send pxeboot "
                                     "mtcAlive", ctl)
                continue
            sock = self.socks["pxeboot_tx"]
            if sock is None:
                self.throttle.error(("notok", "pxeboot_tx"), "pxeboot_tx_socket not ok (0)")
                continue
            err = self.wire.send(sock, data, addr, port)
            if err is not None:
                self.counters["tx_errors"] += 1
                self.throttle.error(("send", "pxeboot", ctl, err.errno), "failed to send "
                                    "mtcAlive to %s using %s:%d (pxeboot) (rc:-1) (%s)", ctl,
                                    addr, port, transport.describe_error(err))
                continue
            self.counters["tx"] += 1
            if not self.pxeboot_learned_flag[ctl]:
                self.pxeboot_learned_flag[ctl] = True
                self.log.info("sending pxeboot network mtcAlive msg on port %d to %s at %s",
                              port, ctl, addr)

    def send_ready_event(self) -> None:
        """`{"hostname":..,"service":"mtcClient",..,"features":["pxeboot_mtcAlive"]}`."""
        data = alive.ready_event(self.hostname, self.ctrl_pxeboot["controller"])
        if self.socks["mgmt_tx"] is not None and self.controller_addr:
            err = self.wire.send(self.socks["mgmt_tx"], data, self.controller_addr,
                                   self.cfg.agent.mtc_agent_port)
            if err is not None:
                self.throttle.error(("ready", "mgmt"), "message send failed. (%s) message: %d "
                                    "bytes to %s:%d", transport.describe_error(err), len(data),
                                    self.controller_addr, self.cfg.agent.mtc_agent_port)
        else:
            self.throttle.error(("ready", "mgmt"), "cannot send to null or failed management "
                                "network socket (Mgmnt)")
        active = self.ctrl_pxeboot["controller"]
        if self.socks["pxeboot_tx"] is not None and active:
            port = self.cfg.agent.mtc_rx_pxeboot_port
            err = self.wire.send(self.socks["pxeboot_tx"], data, active, port)
            if err is not None:
                self.throttle.error(("ready", "pxeboot"), "failed to send monitor ready event "
                                    "to %s:%d on Pxeboot network (rc:-1) (%s)", active, port,
                                    transport.describe_error(err))
        self.log.debug("%s mtcClient ready", self.hostname)

    # -- receiving ---------------------------------------------------------------------------
    def _on_readable(self, sock, net: Net) -> None:
        try:
            self.receiver.drain(sock, lambda data, src: self.on_datagram(bytes(data), src, net))
        except OSError as err:
            name = {Net.MGMT: "mgmt_rx", Net.CLSTR: "clstr_rx", Net.PXEBOOT: "pxeboot_rx"}[net]
            self.throttle.error(("recv", name), "%s receive failed (%s) ; socket will be "
                                "re-created", net.iface, transport.describe_error(err))
            self._close(name)

    def on_datagram(self, data: bytes, src: str, net: Net) -> None:
        """One received datagram: authenticate, decode, check the target MAC, dispatch.

        Everything a datagram can make this daemon log goes through `noise` (bounded however
        many arrive, README "Security") except the lines of real changes (`events`)."""
        self.counters["rx"] += 1
        data, tagged = self.wire.admit(data, src, net)
        if data is None:
            return
        msg, reason = alive.try_decode(data)
        if msg is None:
            self.counters["rx_bad"] += 1
            kind = reason.split(" (")[0]
            if kind == "unknown header signature":
                self.noise.warning(("unsupported", net), "unsupported message from %s from %s "
                                   "network", src, net.iface)
            else:
                self.noise.warning(("malformed", net, kind), "malformed message from %s from %s "
                                   "network (%s) ; dropping", src, net.iface, reason)
            return
        self_sent = src in (self.mgmt_ip, self.clstr_ip) and src != ""
        if not self_sent and msg.ver >= 1:
            mine = self.mgmt_mac.lower()
            theirs = msg.mac
            if theirs.lower() != mine or not mine:
                self.counters["rx_bad"] += 1
                self.noise.warning(("mac", net), "%s req command from %s network not for this "
                                   "host (exp:%s det:%s) ; ignoring ...", cmd_name(msg.cmd),
                                   net.iface, mine, theirs)
                return
        if msg.sig == alive.SIG_CMD_REQ:
            self.on_command(msg, src, net, tagged)
        elif msg.sig == alive.SIG_REP_MSG:
            self.noise.info(("rep", net), "%s goEnabled results acknowledged from %s network",
                            "main function" if msg.cmd == Cmd.MAIN_GOENABLED else "sub-function",
                            net.iface)
        elif msg.sig == alive.SIG_MESSAGE:
            self.counters["rx_bad"] += 1
            self.noise.warning(("unexpected", net), "unexpected mtcAlive message from %s from %s "
                               "network ; WARNING: mtcClient is receiving mtcAgent bound "
                               "mtcAlive messages", src, net.iface)
        else:
            self.counters["rx_bad"] += 1
            self.noise.warning(("unsupported", net), "unsupported message from %s from %s "
                               "network", src, net.iface)

    # -- commands ----------------------------------------------------------------------------
    def on_command(self, msg: alive.Message, src: str, net: Net, tagged: bool = False) -> None:
        """Trusted? Look the code up, act before or after the ACK as its row says, ACK."""
        self.counters["commands"] += 1
        cmd = msg.cmd
        now = self.clock.now()
        if not schedule.may_command(self.sources, src, net, tagged):
            if not schedule.may_teach(cmd, net, self.sources, now - self._pxeboot_trust_at):
                self.counters["refused"] += 1
                self.noise.warning(("refused", net), "%s command from %s on %s network "
                                   "refused: not a controller address", cmd_name(cmd), src,
                                   net.iface)
                return
            if self.sources.pxeboot:
                self.log.warning("pxeboot mtcAlive request from %s, no request from the "
                                 "known controllers for %.0f secs ; following it", src,
                                 now - self._pxeboot_trust_at)
        if cmd == Cmd.REQ_MTCALIVE and net is Net.PXEBOOT:
            self._pxeboot_trust_at = now
        row = schedule.row_for(cmd)
        kind = row.do.value
        changes = self.actions.would_change(kind, msg.num, msg.parm)
        logged = self._log_command(row, msg, net, changes)
        rc = 0
        if row.do is Do.PXEBOOT_INFO:
            if net is Net.PXEBOOT:
                self.load_pxeboot_info(msg.buf, src)
                self.send_mtcalive(Net.PXEBOOT)
            return
        if row.do is Do.SYNC:
            self.actions.sync(net)
        elif row.do is Do.LOCK:
            self.actions.lock(msg.num, msg.parm, net)
        elif row.do is Do.UNLOCK:
            self.actions.unlock(net)
        elif row.do is Do.SUBF_FAILED:
            self.actions.subf_failed()
        elif row.do is Do.HOST_SERVICES:
            if self.actions.fit("host_services"):
                rc = schedule.FAIL_FIT
                self.noise.warning(("command", "hs fit", net), "%s Start Services - fit failure "
                                   "(%s)", cmd_name(cmd), net.iface)
            if self.actions.fit("no_hs_ack"):
                self.noise.warning(("command", "hs no ack", net), "%s Start Services - fit no "
                                   "ACK (%s)", cmd_name(cmd), net.iface)
                return
        if row.ack is not Ack.NONE:
            num, parm = schedule.ack_fields(row, msg.num, msg.parm, rc)
            self.send_ack(msg, src, net, log_ack=logged and row.log_ack, num=num, parm=parm)
        if row.do in schedule.AFTER_ACK:
            delay = msg.parm[0] if msg.num >= 1 else 0
            self.actions.shutdown(kind, net, delay)

    def _log_command(self, row, msg: alive.Message, net: Net, changes: bool) -> bool:
        """The received line of a command: always for a change, else within the noise budget.
        True if logged (its ACK line follows it, or neither is logged)."""
        if row.text is None:
            return changes
        text = row.text.format(iface=net.iface, delay=msg.parm[0] if msg.num >= 1 else 0,
                               code=msg.cmd, size=msg.size, name=cmd_name(msg.cmd),
                               host=self.hostname)
        level = logs.LEVELS[row.level]
        if level < self.log.getEffectiveLevel():
            return False
        throttle = self.events if changes else self.noise
        return throttle.log(level, ("command", row.do.value, net), "%s", text, _depth=3)

    def load_pxeboot_info(self, buf: bytes, src: str = "") -> None:
        """Learn the controllers' pxeboot addresses from an mtcAlive request (client.md §2.6);
        the request's source joins the trusted pxeboot sources (the active controller)."""
        try:
            info = alive.parse_pxeboot_info(buf)
        except alive.DecodeError as err:
            self.noise.error(("pxebootInfo", err.reason), "%s: %s", err.reason,
                             buf[:200].decode("utf-8", "replace"))
            return
        text = buf[:200].decode("utf-8", "replace")
        lesson = schedule.learn_pxeboot_info(self.ctrl_pxeboot, info, text)
        for kind, level, line in lesson.lines:
            if kind == "change":
                self.events.log(logs.LEVELS[level], ("pxebootInfo", line.split(" ")[0]),
                                "%s", line, _depth=3)
            elif kind == "fault":
                self.noise.log(logs.LEVELS[level], ("pxebootInfo", line.split(" ")[0], "fault"),
                               "%s", line, _depth=3)
            else:
                self.log.debug("%s", line)
        self.ctrl_pxeboot = lesson.addresses
        self._request_src = src
        self._update_sources()

    def send_ack(self, msg: alive.Message, src: str, net: Net, log_ack: bool = True,
                 num: int | None = None, parm: tuple | None = None) -> None:
        """The 100-byte echo (or its host-services form), to where the original sends it
        (protocol.md §4.2)."""
        data = alive.ack(msg, num=num, parm=parm)
        name = cmd_name(msg.cmd)
        port = self.cfg.agent.mtc_agent_port
        if net == Net.PXEBOOT:
            sock = self.socks["pxeboot_tx"]
            port = self.cfg.agent.mtc_rx_pxeboot_port
            if sock is None:
                self.noise.error(("notok", "pxeboot_tx"), "pxeboot_tx_socket not ok (0)")
                return
            if log_ack:
                self.log.info("sending %s ack to %s over Pxeboot network", name, src)
            err = self.wire.send(sock, data, src, port)
            if err is not None:
                self.noise.error(("ack", net, err.errno), "failed to send %s ack to %s:%d on "
                                 "Pxeboot network (rc:-1) (%s)", name, src, port,
                                 transport.describe_error(err))
            return
        if net == Net.MGMT:
            targets = [("controller", self.controller_addr)]
            sock = self.socks["mgmt_tx"]
        else:
            targets = list(self.clstr_dests.items())
            sock = self.socks["clstr_tx"]
        if sock is None:
            if net == Net.MGMT:
                self.noise.error(("ack", net, "null"), "cannot send to null or failed socket "
                                 "(%s)", net.iface)
            return
        for _, addr in targets:
            if not addr:
                continue
            err = self.wire.send(sock, data, addr, port)
            if err is None:
                if log_ack:
                    self.log.info("%s reply send (%s)", name, net.iface)
            else:
                self.noise.error(("ack", net, err.errno), "%s reply send failed (%s) (%s)",
                                 name, net.iface, transport.describe_error(err))

    # -- reload and stop ---------------------------------------------------------------------
    def reload(self) -> None:
        """SIGHUP: new config (or keep the old one), then re-learn and re-create sockets."""
        try:
            new = config.load(self.cfg.path)
            new_auth, warnings = auth.from_config(new, self.clock.wall)
        except config.ConfigError as err:
            self.log.error("reload failed, keeping the running configuration: %s", err)
            return
        old = self.cfg
        changes = old.reload_report(new, PROGRAM, RESTART_KEYS, UNUSED_KEYS)
        for line in changes:
            self.log.info("config change: %s", line)
        if not changes:
            self.log.info("reload: configuration unchanged")
        for key in set(old.changed(new)) & RESTART_KEYS:
            new = new.with_value(key, old.get(*key))
        self.cfg = new
        self._names_stamp = None            # names are resolved again with the new hosts file
        self.wire.use(new_auth, warnings)
        self.hostname = netif.read_hostname(new.paths.hostname_file)
        self.actions.reconfigure(new, self.hostname)
        self.status.reconfigure(new.paths)
        self._load_platform()
        self.learn_pxeboot_address()
        for name in SETUP_ORDER:
            self._close(name)
        self._setup_all()

    def stop(self) -> None:
        if self.watcher is not None:
            self.loop.remove_reader(self.watcher)
            self.watcher.close()
            self.watcher = None
        for name in SOCKETS:
            self._close(name)
        self.actions.reap()


def _file_stamp(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def main(cfg: config.Config, foreground: bool) -> int:
    """`mtce client`: daemonise, then run until SIGTERM/SIGINT (SIGHUP reloads)."""
    import time

    from mtce import daemon
    auth.from_config(cfg, time.time)        # a bad key file exits 2 before forking
    return daemon.serve(PROGRAM, cfg, foreground,
                        lambda cfg, loop, clock, log: Client(cfg, loop, clock, log))
