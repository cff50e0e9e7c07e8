"""mtcAgent: receives mtcAlive on mgmt, cluster-host and pxeboot and acts on what the host table
decides.

Wiring only (docs/design.md "Module map"): it builds the collaborators from the config and runs the
periodic work. The decisions (sequence numbers, online/offline, the pxeboot monitor, lock
corrections) are `agent_table.HostTable`'s; datagrams in are `agent_inbox.Inbox`'s, commands out
`agent_outbox.Outbox`'s, sockets `agent_net.AgentNet`'s; this module carries out the `Send`,
`RaiseAlarm`, `ClearAlarm` and `Log` actions the table returns, keeps the alarm and operator state,
and answers the control socket.
Behaviour follows the original as docs/protocol.md states it; deviations are listed in
docs/design.md.
"""

from __future__ import annotations

import logging
import os

from mtce import agent_alarm_store, agent_ctl, agent_decisions, agent_net, agent_takeover, auth, \
    config, logs, metrics, netif, netlink, store, transport
from mtce.agent_dnsmasq import PxebootAddresses
from mtce.agent_inbox import Inbox
from mtce.agent_outbox import Outbox
from mtce.agent_pacing import Pacer
from mtce.agent_reading import Reading
from mtce.agent_table import HostTable
from mtce.budget import Budget
from mtce.children import Children
from mtce.decisions import Log

PROGRAM = "mtcAgent"
RATE_PERIOD_S = 60.0            # LOOP_TIMER_PERIOD_SECS
RATE_LOG_ABOVE = 20.0           # MSGS_PER_SEC_THRESHOLD
STALL_S = 2.0                   # a loop turn this late means the process was stalled
DROPS_CHECK_S = 5.0
ALARM_HOOK_TIMEOUT_S = 30.0
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
    {("metrics", "client_listen")} | \
    {("actions", k) for k in ("reboot", "reset", "lazy_reboot", "failsafe", "wipedisk")} | \
    {("paths", k) for k in ("dhcp_leases_dir", "ifcfg_dir", "sys_class_net", "persist_dir")} | \
    {("timeouts", "failsafe_shutdown_delay")}


class Agent:
    """The mtcAgent daemon's collaborators and periodic work, driven by a `Loop`."""

    def __init__(self, cfg: config.Config, loop, clock, logger: logging.Logger | None = None,
                 inventory: config.Inventory | None = None,
                 sockets: transport.Sockets = transport.SYSTEM, netlink_watch: bool = True):
        self.cfg, self.loop, self.clock = cfg, loop, clock
        self.log = log = logger or logs.get()
        self.throttle = logs.Throttle(log, clock)
        self.noise = logs.Throttle(log, clock, budget=Budget(NOISE_BURST, NOISE_PER_MIN))
        self.lines = logs.Lines(log, self.noise, self.throttle)
        self.hostname = netif.read_hostname(cfg.paths.hostname_file)
        self.inventory = inventory or config.load_inventory(cfg.agent.inventory)
        platform = self._read_platform()
        self.system_mode = netif.system_mode(platform) if platform else "standard"
        self.simplex = self.system_mode == "simplex"
        own = self.inventory.hosts.get(self.hostname)
        self.own_mac = own.mgmt_mac if own else ""
        self.pxeboot_provisioned = (not self.simplex
                                    and platform.get("management_interface", "") != "lo"
                                    and (bool(self.own_mac) or bool(cfg.agent.pxeboot_ip)))
        self.dnsmasq_path = config.expand_path(cfg.paths.dnsmasq_hosts, cfg.paths.build_info)
        self.table = HostTable(agent_decisions.Settings.from_config(
            cfg, simplex=self.simplex, pxeboot_provisioned=self.pxeboot_provisioned),
            agent_host=self.hostname)
        self.alarms = agent_alarm_store.AlarmStore(cfg.paths.state_dir, deferred=True)
        self.operator_states = store.OperatorStates(cfg.paths.state_dir)
        self.host_facts = store.HostFacts(cfg.paths.state_dir)
        self.saver = store.SaveRetry((self.alarms, self.operator_states, self.host_facts), log,
                                     self.throttle)
        self.counters = transport.Counters()
        self.wire = transport.Wire(*auth.from_config(cfg, clock.wall, clock.now), log,
                                   self.lines.say, self.counters)
        self.inbox = Inbox(self.table, self.counters, clock, self.wire, self.lines.say, self.run,
                           self.load_dnsmasq_hosts, lambda: bool(self.net.clstr_ip))
        self.net = agent_net.AgentNet(cfg, loop, log, self.throttle, sockets, self.wire,
                                      self.counters, self.inbox.on_raw, self.hostname,
                                      own.mgmt_ip if own else "", self.pxeboot_provisioned,
                                      netlink.NetlinkWatcher if netlink_watch else None)
        self.net.pxeboot_note = (f"no pxeboot address for {self.hostname} (mac "
                                 f"{self.own_mac or 'unknown'}) in {self.dnsmasq_path}")
        self.net.host_count = lambda: len(self.inventory.hosts)
        self.outbox = Outbox(self.table, self.net, clock, loop, log, self.operator_states,
                             self.run, self.load_dnsmasq_hosts, self.refresh_facts, cfg,
                             self.simplex, self.pxeboot_provisioned)
        self.outbox.on_outcome = self._tell_waiter
        self.inbox.outbox = self.outbox       # it sends through the sockets that deliver there
        self.pxeboot_addrs = PxebootAddresses(self.table, self.net, loop, clock, log,
                                              self.throttle, self.run, self.own_mac,
                                              self.pxeboot_provisioned, cfg, self.dnsmasq_path)
        self.hooks = Children(log, clock)
        self.ctl = None
        self._rate_logged = 0.0
        self._last_turn = clock.now()
        self.pacer = Pacer(self.table.settings.offline_period_s, clock.now(),
                           _audit_s(self.table.settings), self.table.settings.pxeboot_window_s)
        self.reading = Reading(self.net, self.pacer, self.counters, self.table, self.outbox,
                               self.noise, clock)
        self.net.set.after_drain = self.reading.drained
        self.started_at = clock.wall()
        self.stopped = False
        self.metrics = metrics.Endpoint(loop, lambda: self.series(clock.now()),
                                        log, clock)

    def series(self, now: float, version: str | None = None) -> str:
        """The Prometheus text of `GET /metrics` (metrics.agent_series)."""
        return metrics.agent_series(self.table, self.counters, self.outbox.commands.counts,
                                    self.pacer.rate, self.started_at, now, version)

    @property
    def socks(self) -> dict:
        return self.net.set.socks

    @property
    def pxeboot_ip(self) -> str:
        return self.net.pxeboot_ip

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
        if not self.inventory.hosts:
            self.log.warning("no host in the inventory %s ; the agent maintains none",
                             self.inventory.path)
        if self.hostname not in self.inventory.hosts:
            self.log.warning("%s is not in the inventory %s ; its own addresses are unknown",
                             self.hostname, self.inventory.path)
        self.run(self.table.apply_inventory(self.inventory, now)[3])
        self.refresh_facts()
        agent_takeover.restore_hosts(self.table, self.operator_states, self.host_facts, self.log,
                                     self.run, now)
        self.check_store()
        if self.simplex:
            self.log.info("Simplex Mode: Pxeboot network not provisioned")
        self.load_dnsmasq_hosts(force=True)
        if self.pxeboot_provisioned:
            self.log.info("Pxeboot IP  : %s", self.pxeboot_ip or "none")
        agent_takeover.restore_alarms(self.table, self.alarms, self.log, self.run, now,
                                      self.clock.wall())
        self.net.setup()
        self.run(self.table.takeover_requests())
        self._start_ctl()
        self.net.watch()
        self.metrics.use(self.cfg.metrics.listen)
        self.loop.call_later(DROPS_CHECK_S, self.drops_tick)
        self.reading.size_pile()
        self.loop.call_at(self.pacer.next_tick(now), self.audit)
        self.loop.pause_hint = self.reading.pause_hint
        self.loop.call_later(RATE_PERIOD_S, self.rate_tick)

    def refresh_facts(self) -> None:
        """What agent_host.py cannot read itself: the `<platform_dir>/simplex` file (checked at
        each locked correction by the original, docs/protocol.md §5.4 "Locked correction"; here
        at every audit tick)."""
        self.table.facts.still_simplex = os.path.exists(
            os.path.join(self.cfg.paths.platform_dir, SIMPLEX_FILE))

    def load_dnsmasq_hosts(self, force: bool = False) -> None:
        self.pxeboot_addrs.load(force)

    # -- the table's actions -----------------------------------------------------------------
    def run(self, actions) -> None:
        for action in actions:
            kind = type(action)
            if kind is Log:
                self.lines.say(action)
            elif kind is agent_decisions.Send:
                self.outbox.send(action.host, action.net, action.cmd, action.num, action.parm)
            elif kind is agent_decisions.RaiseAlarm:
                alarm = agent_alarm_store.Alarm.new(action.alarm_id, action.host, action.severity,
                                                    action.reason, self.clock.wall(),
                                                    action.network, action.hosts)
                if self.alarms.raise_(alarm):
                    self._alarm_hook(alarm, "raise")
                self.check_store()
            elif kind is agent_decisions.ClearAlarm:
                self._clear(action)
            elif kind is agent_decisions.Remember:
                self.host_facts.set(action.host, action.fact, action.value)

    def _clear(self, action) -> None:
        alarm = self.alarms.clear(action.host, action.alarm_id, action.network)
        if alarm is not None:
            self._alarm_hook(alarm, "clear")
        self.check_store()

    def check_store(self) -> None:
        for s in (self.alarms, self.operator_states):
            if s.save_problem:
                self.throttle.error(("save", s.path), "%s ; kept in memory, written again "
                                    "when there is room", s.save_problem)

    def _alarm_hook(self, alarm, action: str) -> None:
        if self.cfg.actions.alarm:
            self.hooks.spawn("alarm", self.cfg.actions.alarm,
                             agent_alarm_store.hook_payload(alarm, action).encode(),
                             ALARM_HOOK_TIMEOUT_S)

    # -- periodic work -----------------------------------------------------------------------
    def audit(self) -> None:
        """Every tick (the offline_period or a fraction of it): stall check, then the hosts
        that are due."""
        if self.stopped:
            return
        now = self.clock.now()
        self.pacer.count(now, self.counters.rx)
        period = self.table.settings.offline_period_s
        gap = now - self._last_turn
        self._last_turn = now
        if gap > max(STALL_S, 10 * period):
            self.counters.stalls += 1
            self.run(self.table.note_stall(gap, now))
        # A freeze shorter than a stall (a paused VM, SIGSTOP) after this turn looked at its
        # sockets: what came meanwhile is read before any host is judged silent.
        if now - self.loop.polled_at > period:
            self.net.set.read_all()
            now = self.clock.now()
        self.refresh_facts()
        self.run(self.table.audit(now))
        self.hooks.reap()
        # One write for every alarm change of this tick; what a full disk refused, again.
        self.saver.tick(now)
        self.reading.choose_grid()
        # The next audit on the tick grid (pause_hint wakes on it too), or earlier when a
        # host in an offline audit is due to go offline before that (offline on time, not
        # one grid step late); on the long grid also when a host's silence starts to count
        # before it (HostTable.refresh).
        tick = self.pacer.next_tick(now)
        due = self.table.next_offline_at()
        if self.pacer.long:
            due = min(due, self.table.refresh(tick))
        self.loop.call_at(min(tick, max(due, now + 0.001)), self.audit)

    def drops_tick(self) -> None:
        if self.stopped:
            return
        self.loop.call_later(DROPS_CHECK_S, self.drops_tick)
        self.reading.check_drops()

    def rate_tick(self) -> None:
        """The original's 60 s message-rate log (docs/protocol.md §5.4 "Rate log")."""
        if self.stopped:
            return
        self.loop.call_later(RATE_PERIOD_S, self.rate_tick)
        count = self.reading.take_count()
        rate = count / RATE_PERIOD_S
        if rate > RATE_LOG_ABOVE and abs(rate - self._rate_logged) > 10:
            self.log.info("%d messages processed ; rate: %.1f msgs/sec] [%d:0:0:0:0:0", count,
                          rate, count)
            self._rate_logged = rate
        self.run(self.table.sequence_summaries(self.clock.now()))
        for what, throttle in (("", self.throttle), ("datagrams: ", self.noise)):
            text = throttle.summary()
            if text:
                self.log.info("log throttle: %s%s in the last minute", what, text)

    # -- ctl ---------------------------------------------------------------------------------
    def _start_ctl(self) -> None:
        try:
            self.ctl = agent_ctl.Server(self.cfg.paths.agent_socket, self.loop, self.handle_request,
                                        self.log, self.clock, forget=self.outbox.unwatch)
        except OSError as err:
            self.log.error("cannot create the control socket %s (%s) ; mtce hosts will not "
                           "work", self.cfg.paths.agent_socket, err.strerror or err)

    def handle_request(self, req: dict):
        """One control request's reply (agent_ctl.answer), or an agent_ctl.Wait."""
        return agent_ctl.answer(req, self.table, self.alarms, self.outbox, self.status,
                                self.clock.now())

    def status(self) -> dict:
        """`mtce status` (docs/contract.md §5)."""
        return {"hostname": self.hostname, "counters": self.counters.as_dict(),
                "pxeboot_ip": self.pxeboot_ip, "hosts": len(self.table),
                "max_loop_lag_s": round(self.loop.max_lag, 3)}

    def _tell_waiter(self, outcome) -> None:
        """A `--wait` request's outcome (agent_commands.Outcome), to its control connection."""
        if self.ctl is not None:
            self.ctl.tell(outcome.watch, agent_ctl.outcome_reply(outcome))

    # -- reload and stop ---------------------------------------------------------------------
    def reload(self) -> None:
        """SIGHUP: the config, the inventory and dnsmasq.hosts, each applied as a diff."""
        try:
            new = self.cfg.reread()
            inventory = config.load_inventory(new.agent.inventory)
            new_auth, warnings = auth.from_config(new, self.clock.wall, self.clock.now)
        except config.ConfigError as err:
            self.log.error("reload failed, keeping the running configuration: %s", err)
            return
        if not inventory.hosts and self.table.hosts:
            # A file truncated by a config tool while it writes, read in between, would
            # remove every host with its operator lock and alarms: not taken from a reload.
            self.log.error("reload failed, keeping the running configuration: %s: no host "
                           "(restart the agent to run with none)", inventory.path)
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
        self.net.reconfigure(new)
        self.outbox.reconfigure(new)
        self.wire.use(new_auth, warnings)
        now = self.clock.now()
        self.run(self.table.apply_settings(agent_decisions.Settings.from_config(
            new, simplex=self.simplex, pxeboot_provisioned=self.pxeboot_provisioned), now))
        self.pacer.reconfigure(self.table.settings.offline_period_s,
                               _audit_s(self.table.settings),
                               self.table.settings.pxeboot_window_s)
        self.table.forget_texts()
        added, removed, changed, actions = self.table.apply_inventory(inventory, now)
        self.run(actions)
        self.operator_states.sync(self.table)
        self.check_store()
        self.host_facts.keep_only(self.table.hosts)
        for name in removed:
            self.outbox.forget_host(name)
            for a in [a for a in self.alarms.active() if a.host == name]:
                self._clear(agent_decisions.ClearAlarm(name, a.id))
        for warning in inventory.warnings:
            if warning not in self.inventory.warnings:
                self.log.warning("%s", warning)
        self.inventory = inventory
        self.log.info("inventory reloaded: %d added, %d removed, %d changed", len(added),
                      len(removed), len(changed))
        self.net.resize_rx()
        self.dnsmasq_path = config.expand_path(new.paths.dnsmasq_hosts, new.paths.build_info)
        self.pxeboot_addrs.reconfigure(new, self.dnsmasq_path)
        if ("agent", "pxeboot_ip") in changed_keys:
            self.net.pxeboot_ip = new.agent.pxeboot_ip
        for key in changed_keys & set(SOCKET_KEYS):
            for name in SOCKET_KEYS[key]:
                self.net.set.close(name)
        if ("paths", "agent_socket") in changed_keys:
            if self.ctl is not None:
                self.ctl.close()
                self.ctl = None
            self._start_ctl()
        self.load_dnsmasq_hosts(force=True)
        self.net.setup()
        self.metrics.use(new.metrics.listen)

    def stop(self) -> None:
        """Close everything; the periodic work ends too (an agent stopped in a process that
        goes on, as in the in-process tests, must not keep auditing its old table)."""
        self.stopped = True
        self.outbox.cancel()
        self.metrics.close()
        if self.ctl is not None:
            self.ctl.close()
        self.net.set.close_all()
        self.alarms.flush()
        self.host_facts.flush()
        self.hooks.kill_all()


def main(cfg: config.Config, foreground: bool) -> int:
    """`mtce agent`: the inventory is checked before forking (a bad one exits 2)."""
    import time

    from mtce import service
    inventory = config.load_inventory(cfg.agent.inventory)
    auth.from_config(cfg, time.time, time.monotonic)  # a bad key file exits 2 before forking
    return service.serve(PROGRAM, cfg, foreground,
                         lambda cfg, loop, clock, log: Agent(cfg, loop, clock, log, inventory))


def _audit_s(s: agent_decisions.Settings) -> float:
    """How long an offline audit lasts: the long grid is at most half of it."""
    return s.offline_period_s * s.offline_threshold
