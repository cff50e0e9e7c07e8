"""mtcClient: sends mtcAlive on every network it has and carries out the agent's commands.

Wiring only (docs/design.md "Module map"): it builds the collaborators from the config, runs
the 5 s tick, decodes what arrives, and carries out what the pure core (client_core.ClientCore)
decides:
addresses are client_addrs.AddressBook's, sockets and sends client_net.ClientNet's, the host's
files and `[actions]` client_actions.HostActions', the "I am" flags and sequence numbers
client_status.Status'. Behaviour as docs/protocol.md describes the C daemon (HEAD `c1cd466`);
deviations are listed in docs/design.md.
"""

from __future__ import annotations

import logging

from mtce import alive, auth, client_core, config, logs, metrics, netif, netlink, transport
from mtce.budget import Budget
from mtce.client_actions import HostActions
from mtce.client_addrs import AddressBook, gates_of, read_platform
from mtce.client_confirmed import ConfirmedFile
from mtce.client_core import Do, RunAction, SaveConfirmed, SendAck, SendAlive
from mtce.client_net import RECOVERY_ORDER, SETUP_ORDER, ClientNet
from mtce.client_status import Status
from mtce.decisions import Log
from mtce.states import Net, cmd_name

PROGRAM = "mtcClient"
FIRST_TICK_S = 1.0             # the first mtcAlive tick comes 1 s after start
CHANGE_SEND_GAP_S = 1.0        # after a network change, mtcAlive at once, at most this often
# What received datagrams may log, whatever their number or mix (issue 11): repeated faults
# and commands that change nothing share NOISE; lines of real changes (a lock file made, a
# reboot started) have EVENTS, so that noise never hides them.
NOISE_BURST, NOISE_PER_MIN = 10, 6
EVENTS_BURST, EVENTS_PER_MIN = 30, 30
# Keys a running client cannot take (its gates are evaluated once per process,
# docs/protocol.md §4.1): the reload log says so. Every other key is applied: sockets are
# re-created.
RESTART_KEYS = {("paths", "pid_dir"), ("paths", "log_dir"), ("paths", "platform_conf"),
                ("paths", "platform_dir")}
UNUSED_KEYS = {("agent", k) for k in ("offline_period", "offline_threshold",
                                      "lazy_reboot_delay", "inventory", "mgmt_ip",
                                      "cluster_host_ip", "pxeboot_ip")} | \
    {("timeouts", k) for k in ("online_period", "pxeboot_mtcalive_window")} | \
    {("paths", k) for k in ("dnsmasq_hosts", "build_info", "state_dir", "agent_socket")} | \
    {("actions", "alarm")} | {("metrics", "listen")}


class Client:
    """The mtcClient daemon: collaborators, the tick, datagrams in, the core's actions out."""

    def __init__(self, cfg: config.Config, loop, clock, logger: logging.Logger | None = None,
                 links_factory=None, sockets: transport.Sockets = transport.SYSTEM,
                 netlink_watch: bool = True):
        self.cfg, self.loop, self.clock = cfg, loop, clock
        self.log = log = logger or logs.get()
        self.throttle = logs.Throttle(log, clock)
        self.noise = logs.Throttle(log, clock, budget=Budget(NOISE_BURST, NOISE_PER_MIN))
        self.events = logs.Throttle(log, clock, interval=0.0,
                                    budget=Budget(EVENTS_BURST, EVENTS_PER_MIN))
        self.lines = logs.Lines(log, self.noise, self.events)
        self.hostname = netif.read_hostname(cfg.paths.hostname_file)
        self.counters = transport.Counters()
        self.metrics = metrics.Endpoint(loop, self.series, log, clock)
        self.wire = transport.Wire(*auth.from_config(cfg, clock.wall, clock.now), log,
                                   self.lines.say, self.counters)
        self.book = AddressBook(cfg, log, self.throttle,
                                links_factory or netlink.NetlinkLinks.from_kernel)
        self.net = ClientNet(cfg, loop, log, self.throttle, self.noise, sockets, self.wire,
                             self.book, self.counters, self.on_datagram,
                             netlink.NetlinkWatcher if netlink_watch else None)
        self.core = client_core.ClientCore(cfg.client.mtcalive_period, clock.now(), self.counters)
        self.confirmed_file = ConfirmedFile(lambda: self.cfg.paths.persist_dir, log, self.throttle)
        self.actions = HostActions(cfg, loop, clock, log, self.throttle, self.hostname,
                                   noise=self.noise, events=self.events)
        self.status = Status(cfg.paths, "", log)
        self.gates: client_core.Gates | None = None
        self.identity: alive.Identity | None = None
        self.tick_timer = None
        self.our_ifaces: set = set()
        self._change_sent_at = float("-inf")

    @property
    def socks(self):
        return self.net.set.socks

    # -- start-up ----------------------------------------------------------------------------
    def start(self) -> None:
        """Everything before the main loop: config logs, gates, learning, sockets, ready."""
        c = self.cfg
        self.log.info("Agent Mgmnt : %d (tx)", c.agent.mtc_agent_port)
        self.log.info("Client Mgmnt: %d (rx)", c.client.mtc_rx_mgmnt_port)
        self.log.info("Shutdown TO : %g secs", c.timeouts.failsafe_shutdown_delay)
        self.log.info("%s", self.hostname)
        self.confirmed_file.load(self.core)
        self._load_platform()
        self._setup_all(first=True)
        if self.gates is not None and self.gates.pxeboot:
            self.book.note_lease()
        self.actions.housekeeping()
        self.net.set.watch(self.on_network_change, self._relevant,
                           f"relying on the {c.client.mtcalive_period:g} s tick")
        self.send_ready_event()
        self.metrics.use(c.metrics.client_listen)
        self.tick_timer = self.loop.call_later(FIRST_TICK_S, self.tick)

    def _load_platform(self) -> bool:
        """platform.conf facts; the gates are evaluated once, when the facts first exist."""
        conf = read_platform(self.cfg.paths.platform_conf, self.throttle)
        if conf is None:
            return False
        if self.gates is not None:
            return True
        g = self.gates = gates_of(conf, self.cfg.paths.platform_dir)
        self.status.personality = g.personality
        self.core.gates = self.book.gates = g
        for level, text in g.lines():
            self.log.log(logs.LEVELS[level], "%s", text)
        if g.pxeboot:
            self.book.update(pxeboot_iface=g.mgmt_iface)
            self.book.learn_pxeboot()
        return True

    def _wanted(self, name: str) -> bool:
        g = self.gates
        if name.startswith("pxeboot"):
            return g is not None and g.pxeboot
        if name.startswith("clstr"):
            return g is not None and g.clstr
        return g is not None or bool(self.cfg.client.mgmt_ip)

    def _setup_all(self, first: bool = False) -> None:
        for name in SETUP_ORDER:
            if self._wanted(name):
                self.net.open(name, first)
        self._rebuild_identity()

    def _rebuild_identity(self) -> None:
        own, g = self.book.own, self.gates
        ident = own.identity(self.hostname, g.personality if g else "", bool(g and g.clstr))
        if ident != self.identity:
            self.log.info("Identity    : %s", alive.json_text(ident.as_dict()))
        self.identity = ident
        self.core.set_names(own.c_mgmt, [a for _, a in own.clstr_dests])
        with_links = self.net.set.watcher is not None or not self.our_ifaces
        self.our_ifaces = self.book.our_interfaces(with_links)

    # -- the 5 s tick ------------------------------------------------------------------------
    def tick(self) -> None:
        self.tick_timer = self.loop.call_later(self.cfg.client.mtcalive_period, self.tick)
        if self.gates is None and self._load_platform():
            self._setup_all()
        self.actions.reap()
        if self.book.names_changed():
            self.book.resolve_controllers()
            self._rebuild_identity()
        self._check_lease()
        self._recover()
        self._send_tick_mtcalive()
        self.net.set.fit_check()
        if self.core.tick_done():
            self.log.debug("sending mtcClient ready event")
            self.send_ready_event()
            self.log_suppressed()

    def _send_tick_mtcalive(self) -> None:
        mgmt_ready = self.gates is not None or bool(self.cfg.client.mgmt_ip)
        self.carry_out(self.core.tick_nets(mgmt_ready, self.net["clstr_rx"] is not None))

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
        retried = self.net.set.recover(RECOVERY_ORDER, self._wanted, self.net.build)
        if retried & {"pxeboot_rx", "pxeboot_tx"}:
            self.book.note_lease()
            if self.book.learn_pxeboot() and self.book.own.pxeboot_ip:
                self.net.open("pxeboot_rx")
                self.net.open("pxeboot_tx")
        if retried:
            self._rebuild_identity()
        return retried

    def _check_lease(self) -> None:
        """A renewed lease with a new address is picked up at the next tick (the original
        keeps the old address until a restart or a socket failure)."""
        if self.gates is None or not self.gates.pxeboot or not self.book.lease_changed():
            return
        if self.book.learn_pxeboot():
            self.net.open("pxeboot_rx")
            self.net.open("pxeboot_tx")
            self._rebuild_identity()

    # -- netlink events ----------------------------------------------------------------------
    def _relevant(self, events) -> bool:
        """Events about the interfaces we use, or that hold one of our addresses."""
        return any(e == "error" or n.split(":")[0] in self.our_ifaces for e, n in events)

    def on_network_change(self) -> None:
        """A link or address of ours changed: drop sockets whose address is gone, recover
        the others now, and if anything moved, send mtcAlive now instead of at the tick."""
        self.net.set.close_vanished()
        retried = self._recover()
        now = self.clock.now()
        if now - self._change_sent_at >= CHANGE_SEND_GAP_S:
            self._change_sent_at = now
            self.log.info("network change%s ; sending mtcAlive now",
                          f" (re-created {', '.join(sorted(retried))})" if retried else "")
            self._send_tick_mtcalive()

    # -- sending -----------------------------------------------------------------------------
    def build_mtcalive(self, net: Net) -> bytes:
        """Consume the network's next sequence number and build its mtcAlive."""
        ident = self.identity or alive.Identity(self.hostname, "", "", "", "", "")
        return self.status.build(ident, net, self.clock.uptime())

    def send_mtcalive(self, net: Net, to: tuple = ()) -> None:
        """One mtcAlive on `net`; over pxeboot to the controllers of `to` (SendAlive)."""
        data = self.build_mtcalive(net)
        port = self.cfg.agent.mtc_agent_port
        if net is Net.MGMT:
            self.net.send(net, "mgmt_tx", data, self.book.own.controller, port,
                          "mtc_client_mgmt_tx_socket not ok")
        elif net is Net.CLSTR:
            dests = dict(self.book.own.clstr_dests)
            for ctl in self.gates.controllers:
                self.net.send(net, "clstr_tx", data, dests.get(ctl, ""), port,
                              f"mtc_client_clstr_tx_socket_c{ctl[-1]} not ok")
        else:
            # Each controller's line right after its send, as the original's loop logs it
            # (a send error is logged by the send itself, before the next controller's).
            port = self.cfg.agent.mtc_rx_pxeboot_port
            for ctl, addr in to:
                sent = bool(addr) and self.net.send_pxeboot(ctl, addr, data)
                self.carry_out(self.core.pxeboot_sent([(ctl, addr, sent)], port))

    def send_ready_event(self) -> None:
        """`{"hostname":..,"service":"mtcClient",..,"features":["pxeboot_mtcAlive"]}`."""
        active = self.core.ctrl_pxeboot["controller"]
        self.net.send_ready(alive.ready_event(self.hostname, active), active)
        self.log.debug("%s mtcClient ready", self.hostname)

    # -- receiving ---------------------------------------------------------------------------
    def on_datagram(self, data, src: str, net: Net) -> None:
        """One received datagram: authenticate, decode, check the target MAC, dispatch.

        Everything a datagram can make this daemon log goes through `noise` (bounded however
        many arrive, README "Security") except the lines of real changes (`events`)."""
        self.counters.rx += 1
        data, tagged = self.wire.admit(data, src, net)
        if data is None:
            return
        msg, reason = alive.try_decode(data)
        if msg is None:
            self.carry_out(self.core.on_undecodable(reason, src, net))
            return
        own = self.book.own
        self.carry_out(self.core.on_message(msg, src, net, tagged, self.clock.now(), self,
                                            (own.mgmt_ip, own.clstr_ip, ""), own.mgmt_mac))

    # -- the core's actions ------------------------------------------------------------------
    def would_change(self, kind: str, num: int, parm: tuple, net: Net) -> bool:
        return self.actions.would_change(kind, num, parm, net)

    def fit(self, name: str) -> bool:
        return self.actions.fit(name)

    def _say(self, line: Log | None) -> bool:
        """Log one of the core's lines by the one rule (logs.Lines); True if logged."""
        return False if line is None else self.lines.say(line, 4)

    def carry_out(self, actions) -> None:
        said = False
        for action in actions:
            kind = type(action)
            if kind is Log:
                said = self._say(action)
            elif kind is SendAck:
                data = alive.ack(action.msg, num=action.num, parm=action.parm)
                self.counters.acks_sent += 1
                self.net.send_ack(data, cmd_name(action.msg.cmd), action.src, action.net,
                                  action.log and said)
            elif kind is SendAlive:
                self.send_mtcalive(action.net, action.to)
            elif kind is RunAction:
                self._run(action)
            elif kind is SaveConfirmed:
                self.confirmed_file.save(action.addresses)

    def _run(self, action: RunAction) -> None:
        do, net, a = action.do, action.net, self.actions
        if do is Do.SYNC:
            a.sync(net)
        elif do is Do.LOCK:
            a.lock(action.num, action.parm, net)
        elif do is Do.UNLOCK:
            a.unlock(net)
        elif do is Do.SUBF_FAILED:
            a.subf_failed()
        elif do in client_core.AFTER_ACK:
            a.shutdown(do.value, net, action.parm[0] if action.num >= 1 else 0)

    # -- reload and stop ---------------------------------------------------------------------
    def reload(self) -> None:
        """SIGHUP: new config (or keep the old one), then re-learn and re-create sockets."""
        try:
            new = self.cfg.reread()
            new_auth, warnings = auth.from_config(new, self.clock.wall, self.clock.now)
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
        self.wire.use(new_auth, warnings)
        self.hostname = netif.read_hostname(new.paths.hostname_file)
        for part in (self.book, self.net):
            part.reconfigure(new)
        self.actions.reconfigure(new, self.hostname)
        self.status.reconfigure(new.paths)
        self.core.reconfigure(new.client.mtcalive_period)
        self._load_platform()
        self.book.learn_pxeboot()
        for name in SETUP_ORDER:
            self.net.set.close(name)
        self._setup_all()
        self.metrics.use(new.metrics.client_listen)

    def stop(self) -> None:
        if self.tick_timer is not None:          # no more ticks from a stopped client
            self.tick_timer.cancel()
            self.tick_timer = None
        self.metrics.close()
        self.net.set.close_all()
        self.actions.reap()

    # -- what tests, the lab and the metrics endpoint ask ------------------------------------
    @property
    def ctrl_pxeboot(self) -> dict:
        return self.core.ctrl_pxeboot

    def series(self, version: str | None = None) -> str:
        """The Prometheus text of `GET /metrics` (metrics.client_series)."""
        return metrics.client_series(self.counters, self.net.set.recoveries,
                                     self.book.own.pxeboot_ip, self.core.ctrl_pxeboot, version)


def main(cfg: config.Config, foreground: bool) -> int:
    """`mtce client`: daemonise, then run until SIGTERM/SIGINT (SIGHUP reloads)."""
    import time

    from mtce import service
    auth.from_config(cfg, time.time, time.monotonic)  # a bad key file exits 2 before forking
    return service.serve(PROGRAM, cfg, foreground,
                         lambda cfg, loop, clock, log: Client(cfg, loop, clock, log))
