"""`mtce lab`: an agent and N clients on this machine with a live table (docs/contract.md §6).

Generates one directory per host under a temporary directory (platform.conf, hosts, hostname,
build.info, inventory, dnsmasq.hosts, a DHCP lease and an mtc.ini whose every [paths] key points
into it and whose [actions] never touch this machine), starts the real daemons in the
foreground as child processes (`mtce agent -f`, `mtce client -f`), watches the agent over its
control socket, and plays an optional fault scenario. Loopback addresses by default (no root);
`--netns` (root) puts each host in a network namespace behind veth links.

Nothing outlives the lab: children get SIGKILL when the lab dies (PR_SET_PDEATHSIG), and a
guardian process removes the processes, namespaces and directory if the lab itself is killed.
"""

from __future__ import annotations


import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from mtce import cli_ctl
from mtce.agent_pxeboot import PXEBOOT_LOSS_THRESHOLD, PXEBOOT_MISS_THRESHOLD
from mtce.cli_screen import Interrupted, Output, Screen
from mtce.lab_plan import (
    AGENT_START_S, BURST_COUNT, BURST_RATE, DEFAULT_BLOCK, ENV_TAG, HA_SCENARIOS, MAX_HOSTS,
    MTCALIVE_PERIOD_S, OFFLINE_AFTER_S, ONLINE_PERIOD_S, POLL_S, PORT, PXEBOOT_ALARM_S,
    PXEBOOT_CLEAR_S, PXEBOOT_WINDOW_S, REBOOT_DOWN_S, REBOOT_KINDS, RECENT_LINES, REFRESH_S,
    SCENARIOS, STEADY_S, STOP_GRACE_S, TICK_S, check_ports, cli_hint, package_root, program,
    HostPlan, LabError, Plan,
)
from mtce.lab_proc import (
    PENDING_SIGNALS, STOP_SIGNALS, build_topology, check_stop, ignore_stop_signals,
    init_process, netns_problem, on_stop_signal, signals_held, start_guardian, stop_all,
    stop_guardian, sweep, Proc,
)
from mtce.lab_scenarios import (SCENARIO_CLASSES, Scenario)
from mtce.lab_view import LogTail, View, parse_log_line
from mtce.states import NET_KEYS

# == the lab =================================================================================

class Report:
    """What the lab tells: its header, one event per change the agent's table shows, the
    frame a terminal redraws, the agent's log lines among the recent ones."""

    def __init__(self, lab):
        self.lab = lab
        self._last_seen_states: dict = {}
        self._came_up: set = set()
        self._alarms_seen: dict = {}

    def header(self) -> None:
        p = self.lab.plan
        cli = cli_hint()
        where = (f"in network namespaces {p.ns_prefix}* (veth links, a bridge per network)"
                 if self.lab.netns else "on loopback")
        n = len(p.clients)
        self.lab.say(f"mtce lab: {n} host{'s' if n > 1 else ''} {where} ; controller-0 runs the "
                 f"agent and a client")
        self.lab.say(f"  networks: mgmt {p.net['mgmt']}0/24, cluster-host "
                 f"{p.net['cluster-host']}0/24, pxeboot {p.net['pxeboot']}0/24")
        self.lab.say(f"  timers: mtcAlive every {MTCALIVE_PERIOD_S} s, online_period "
                 f"{ONLINE_PERIOD_S} s, pxeboot window {PXEBOOT_WINDOW_S} s: a pxeboot loss is "
                 f"alarmed")
        self.lab.say(f"          after {PXEBOOT_ALARM_S} s and cleared ~{PXEBOOT_CLEAR_S} s after "
                     f"it ends ; a silent host is offline after ~{OFFLINE_AFTER_S:g} s")
        if self.lab.scenario_name != "none":
            self.lab.say(f"  scenario: {self.lab.scenario.status()}")
        self.lab.say(f"  files: {p.root} (removed on exit) ; daemon logs in */log/")
        self.lab.hint = f"{cli} -c {p.lab_ini} hosts"
        self.lab.say(f"  second terminal: {self.lab.hint}")
        self.lab.say("    (or alarms, lock HOST, unlock HOST, reboot HOST, reset HOST, alive "
                     "HOST ; reboot and reset restart that host's client)")
        self.lab.say("  " + (f"runs {self.lab.duration:g} s" if self.lab.duration else
                         "Ctrl-C stops the lab and removes everything"))
        self.lab.say()

    def read_agent_log(self) -> None:
        for line in self.lab.agent_tail.read():
            parsed = parse_log_line(line)
            if parsed:
                if parsed[1] != "Debug":
                    self.lab.recent.append(f"{parsed[0]} agent  {parsed[2]}")
            elif line.strip():         # a traceback, a message before logging was set up
                self.lab.recent.append(f"{'':8} agent  {line.strip()}")

    def note_changes(self, now: float) -> None:
        """One event per change of availability, admin, network state, pxeboot loss, alarm.

        Until a host is first ok on every network only that moment is told, not each step
        of its start-up."""
        v = self.lab.view
        for name in v.order:
            h = v.hosts[name]
            state = {"availability": h.get("availability"), "admin": h.get("administrative")}
            for net in NET_KEYS:
                state[net] = v.net_state(name, net)
            mon = h.get("pxeboot_monitor") or {}
            state["loss"] = mon.get("loss", 0)
            old = self._last_seen_states.get(name)
            self._last_seen_states[name] = state
            if name not in self._came_up:
                if v.host_ok(name):
                    self._came_up.add(name)
                    self.lab.event(f"{name} online ; ok on mgmt, cluster-host and pxeboot")
                elif name not in v.expected and old is not None and \
                        old.get("availability") != state["availability"]:
                    self.lab.event(f"{name} {state['availability']}")
                continue
            for key, value in state.items():
                if old is None or old.get(key) == value:
                    continue
                if key == "loss":
                    if value:
                        self.lab.event(f"{name} pxeboot monitor: loss {value} of "
                                   f"{PXEBOOT_LOSS_THRESHOLD}")
                elif key in NET_KEYS:
                    self.lab.event(f"{name} {key} {old.get(key)} -> {value}")
                else:
                    self.lab.event(f"{name} {value}")
        if v.first_all_ok == now:
            who = f"all {len(v.expected)} hosts" if len(v.expected) > 1 else "the host"
            self.lab.event(f"{who} online on every network {self.lab.elapsed(now):.1f} s after "
                           f"start")
            if not self.lab.tty:
                self.lab.say(cli_ctl.format_hosts([v.hosts[n] for n in v.order]))
        alarms = {(a.get("id"), a.get("host"), a.get("network")): a for a in v.alarms}
        for key, a in alarms.items():
            if key not in self._alarms_seen:
                held = f" ({a['network']}: {len(a.get('hosts') or ())} hosts)" \
                    if a.get("network") else ""
                self.lab.event(f"alarm raised: {a.get('id')} {a.get('severity')} "
                               f"{a.get('host')}{held}: {a.get('reason')}")
        for key, a in self._alarms_seen.items():
            if key not in alarms:
                held = f" ({a['network']})" if a.get("network") else ""
                self.lab.event(f"alarm cleared: {a.get('id')} {a.get('host')}{held}")
        self._alarms_seen = alarms

    def frame(self, now: float) -> list[str]:
        v = self.lab.view
        left = (f" ; {max(0.0, self.lab.t0 + self.lab.duration - now):.0f} s left"
                if self.lab.duration else " ; Ctrl-C to stop")
        lines = [f"mtce lab  {time.strftime('%H:%M:%S')}  up {self.lab.elapsed(now):.0f} s{left}"]
        if self.lab.scenario_name != "none":
            lines.append("scenario " + self.lab.scenario.status())
        lines.append("")
        if v.error:
            lines.append(f"agent: {v.error}")
        hosts = [v.hosts[n] for n in v.order]
        height = shutil.get_terminal_size((120, 40)).lines - 1
        room = max(3, height - len(lines) - 12)
        more = 0
        if len(hosts) > room:
            # Hosts that are not ok first; the rest is counted (mtce hosts lists them all).
            hosts = sorted(hosts, key=lambda h: v.host_ok(h["hostname"]))
            more, hosts = len(hosts) - (room - 1), hosts[:room - 1]
        table = cli_ctl.fit_hosts(hosts, shutil.get_terminal_size((120, 40)).columns - 1)
        lines += table.splitlines()
        if more:
            lines.append(f"... and {more} more hosts (mtce hosts lists them all)")
        for name in v.order:
            if name in self.lab.reboots:
                lines.append(f"  ({name} is rebooting: its client starts again in "
                             f"{self.lab.reboots[name][0] - now:.0f} s)")
        lines.append("")
        if v.alarms:
            lines += ["alarms:"] + ["  " + a for a in cli_ctl.format_alarms(v.alarms).splitlines()]
        else:
            lines.append("alarms: none")
        monitors = []
        for name in v.order:
            mon = v.hosts[name].get("pxeboot_monitor") or {}
            if mon.get("miss") or mon.get("loss"):
                monitors.append(f"{name} miss {mon.get('miss')} of {PXEBOOT_MISS_THRESHOLD}, "
                                f"loss {mon.get('loss')} of {PXEBOOT_LOSS_THRESHOLD}")
        if monitors:
            lines.append("pxeboot monitor: " + " ; ".join(monitors))
        lines += ["", "recent (lab events and the agent's log):"]
        height = shutil.get_terminal_size((120, 40)).lines - 1
        room = max(3, min(RECENT_LINES, height - len(lines) - 3))
        lines += ["  " + r for r in list(self.lab.recent)[-room:]]
        lines += ["", f"second terminal: {self.lab.hint}",
                  "  (or alarms, lock HOST, unlock HOST, reboot HOST, reset HOST, alive HOST)"]
        return lines


class Lab:
    def __init__(self, args, out=None):
        self.args = args
        self.out = out or sys.stdout
        self.tty = self.out.isatty() and os.environ.get("TERM", "") not in ("", "dumb")
        self.hosts = 3 if args.hosts is None else args.hosts
        self.duration = args.duration
        self.netns = args.netns
        self.block = getattr(args, "block", None) or os.environ.get("MTCE_LAB_BLOCK") or \
            DEFAULT_BLOCK
        self.scenario_name = args.scenario
        self.t0 = time.monotonic()
        self.root: str | None = None
        self.tag = ""
        self.plan: Plan | None = None
        self.agent: Proc | None = None
        self.clients: dict[str, Proc] = {}
        self.extra: list[Proc] = []
        self.reboots: dict[str, tuple[float, str]] = {}   # host -> (restart at, kind)
        self.recent: collections.deque = collections.deque(maxlen=60)
        self.crashed: list[str] = []
        self.crash_logs: list[str] = []
        self.view: View | None = None
        self.scenario: Scenario | None = None
        self.screen = Screen(self.out) if self.tty else None
        self.agent_tail: LogTail | None = None
        self.program = program()
        self.report = Report(self)
        self._guardian: tuple[int, int] | None = None
        self.hint = ""
        self.lines = Output(self.out)

    # -- output ----------------------------------------------------------------------------------
    def elapsed(self, now: float | None = None) -> float:
        return (now or time.monotonic()) - self.t0

    def say(self, text: str = "") -> None:
        self.lines.say(text)

    def event(self, text: str) -> None:
        t = self.elapsed()
        self.recent.append(f"{time.strftime('%H:%M:%S')} lab    {text}")
        if not self.tty:
            self.say(f"{t:7.1f}s  {text}")

    # -- start-up --------------------------------------------------------------------------------
    def validate(self) -> str | None:
        """A usage problem (exit 2), or None."""
        if not 1 <= self.hosts <= MAX_HOSTS:
            return f"--hosts must be between 1 and {MAX_HOSTS} (controller-0 included)"
        if self.duration is not None and self.duration <= 0:
            return "--duration must be more than 0 seconds"
        cls = SCENARIO_CLASSES.get(self.scenario_name)
        if cls is None and self.scenario_name in HA_SCENARIOS:
            return f"--scenario {self.scenario_name} needs --ha"
        if cls is None:
            return f"unknown scenario {self.scenario_name!r} (one of {', '.join(SCENARIOS)})"
        if cls.needs_workers and self.hosts - 1 < cls.needs_workers:
            workers = "a worker" if cls.needs_workers == 1 else f"{cls.needs_workers} workers"
            return (f"--scenario {self.scenario_name} needs {workers}: use --hosts "
                    f"{cls.needs_workers + 1} or more")
        if self.netns:
            return netns_problem()
        if not re.fullmatch(r"127\.\d{1,3}", self.block) or int(self.block.split(".")[1]) > 255:
            return f"MTCE_LAB_BLOCK={self.block}: expected 127.<0-255>"
        return None

    def setup(self) -> None:
        init_process(os.getpid())
        burst = self.scenario_name == "burst"
        if not self.netns:     # the addresses only: nothing is written before the check
            check_ports(Plan(tempfile.gettempdir(), self.hosts, block=self.block, burst=burst))
        # Signals wait until the directory and its guardian both exist (then they clean up).
        with signals_held():
            self.root = tempfile.mkdtemp(prefix="mtce-lab-")
            self.tag = os.path.basename(self.root)
            # PR_SET_PDEATHSIG covers the children; the guardian files and namespaces.
            self._guardian = start_guardian(self.tag, self.root,
                                            self.tag + "-" if self.netns else None)
        ns_prefix = self.tag + "-" if self.netns else ""
        self.plan = Plan(self.root, self.hosts, netns=self.netns, block=self.block,
                         burst=burst, ns_prefix=ns_prefix)
        self.plan.write()
        if self.netns:
            build_topology(self.plan)
            check_stop()
        self.view = View(self.plan)
        self.scenario = SCENARIO_CLASSES[self.scenario_name](self)
        self.report.header()
        self.start_agent()
        for h in self.plan.clients:
            check_stop()
            self.start_client(h)
        self.event(f"started the agent and {len(self.plan.clients)} clients")

    def _env(self) -> dict:
        env = dict(os.environ)
        env[ENV_TAG] = self.tag
        env.pop("NOTIFY_SOCKET", None)
        return env

    def _prefix(self, h: HostPlan) -> list[str]:
        return ["ip", "netns", "exec", h.ns] if self.netns else []

    def start_agent(self) -> None:
        c = self.plan.controller
        # Registered before it starts, so that a stop signal at any moment finds it.
        self.agent = Proc("agent", self._prefix(c) + self.program +
                          ["agent", "-c", c.ini, "-f"], self.plan.agent_log, self._env())
        self.agent.start()
        self.agent_tail = LogTail(self.plan.agent_log)
        deadline = time.monotonic() + AGENT_START_S
        while True:
            check_stop()
            if self.view.poll(time.monotonic()):
                return
            if not self.agent.running():
                raise LabError(f"the agent exited with status {self.agent.returncode()} at "
                               f"start:\n{self.agent.tail(12)}")
            if time.monotonic() > deadline:
                raise LabError(f"the agent did not answer on {self.plan.agent_socket} within "
                               f"{AGENT_START_S:g} s: {self.view.error}\n{self.agent.tail(12)}")
            time.sleep(0.05)

    def start_client(self, h: HostPlan) -> Proc:
        proc = Proc(h.name, self._prefix(h) + self.program + ["client", "-c", h.ini, "-f"],
                    h.client_log, self._env())
        self.clients[h.name] = proc
        return proc.start()

    def start_loadgen(self, h: HostPlan) -> Proc:
        code = ("import sys; sys.path.insert(0, %r); from mtce import lab_loadgen; "
                "sys.exit(lab_loadgen.main(sys.argv[1:]))" % package_root())
        argv = self._prefix(h) + [sys.executable, "-c", code, "--src", h.mgmt_ip,
                                  "--dst", self.plan.floating,
                                  "--port", str(PORT["agent", "mtc_agent_port"]),
                                  "--host", h.name, "--mac", h.mac,
                                  "--count", str(BURST_COUNT), "--rate", str(BURST_RATE),
                                  "--lab", self.root]
        proc = Proc("loadgen", argv, os.path.join(self.root, "loadgen.out"), self._env())
        self.extra.append(proc)
        return proc.start()

    def run(self) -> None:
        end = None if self.duration is None else self.t0 + self.duration
        next_poll = next_draw = 0.0
        while True:
            check_stop()
            now = time.monotonic()
            if end is not None and now >= end:
                break
            self.check_processes(now)
            self.check_requests(now)
            polled = False
            if now >= next_poll:
                next_poll = now + POLL_S
                polled = self.view.poll(now)
                if polled:
                    self.report.note_changes(now)
                if not self.scenario.done and not self.scenario.failed:
                    self.scenario.step(now, self.view)
            self.report.read_agent_log()
            # Once a second, and at once when the first full table is there.
            if self.tty and (now >= next_draw or (polled and self.view.first_all_ok == now)):
                next_draw = now + REFRESH_S
                self.screen.draw(self.report.frame(now))
            time.sleep(TICK_S)

    def check_processes(self, now: float) -> None:
        procs = [("agent", self.agent)] + list(self.clients.items())
        for name, proc in procs:
            if proc is None or proc.running() or proc.expected_exit:
                continue
            proc.expected_exit = True
            what = "the agent" if proc is self.agent else f"{name}'s client"
            self.crashed.append(f"{what} exited with status {proc.returncode()}")
            tail = proc.tail(10)
            self.crash_logs.append(f"-- the last lines {what} logged:\n{tail}")
            last = parse_log_line(tail.splitlines()[-1]) if tail else None
            self.event(f"{what} exited unexpectedly (status {proc.returncode()})"
                       + (f" ; its last log line: {last[2]}" if last else ""))

    def check_requests(self, now: float) -> None:
        """[actions] reboot/reset/lazy_reboot of a host write `requests/<host>.<kind>`: the lab
        stops that client, clears what a reboot clears, and starts it again later."""
        try:
            names = sorted(os.listdir(self.plan.requests))
        except OSError:
            names = []
        for fname in names:
            os.unlink(os.path.join(self.plan.requests, fname))
            host, _, kind = fname.partition(".")
            proc = self.clients.get(host)
            if proc is None or host in self.reboots or kind not in REBOOT_KINDS:
                continue
            proc.expected_exit = True
            # A reset is a power cut; a reboot stops the services first.
            proc.signal(signal.SIGKILL if kind == "reset" else signal.SIGTERM)
            try:
                proc.popen.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.signal(signal.SIGKILL)
                proc.popen.wait(2)
            self._clear_volatile(self.plan.host(host))
            self.reboots[host] = (now + REBOOT_DOWN_S, kind)
            self.event(f"{host}: [actions] {kind} ran: client stopped ; simulated {kind}, "
                       f"back in {REBOOT_DOWN_S:g} s")
        for host, (at, kind) in list(self.reboots.items()):
            if now >= at:
                del self.reboots[host]
                self.start_client(self.plan.host(host))
                self.event(f"{host}: client started again after the simulated {kind}")

    @staticmethod
    def _clear_volatile(h: HostPlan) -> None:
        """A reboot empties /var/run (.node_reset, .node_locked, fit/): without this the new
        client would find .node_reset and 'reboot' again. persist_dir survives."""
        for entry in os.listdir(h.run_dir):
            path = os.path.join(h.run_dir, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def verdict(self) -> tuple[bool, str]:
        v = self.view
        problems = v.missing() + self.crashed
        s = self.scenario
        if s.failed:
            problems.append(f"scenario {s.name}: {s.failed}")
        elif not s.done and s.name != "none":
            need = 5 + STEADY_S + s.about_s + 10       # start-up, steady, scenario, margin
            problems.append(f"scenario {s.name} did not reach its end ({s.status()}) ; it "
                            f"needs about --duration {need:.0f}")
        if problems:
            return False, "FAILED: " + " ; ".join(problems)
        n = len(v.expected)
        when = (f"{v.first_all_ok - self.t0:.1f} s after start" if v.first_all_ok is not None
                else "(never all at the same time)")
        text = (f"ok: {n} host{'s' if n > 1 else ''} online on every network (mgmt, "
                f"cluster-host, pxeboot) {when}")
        if s.name != "none":
            text += f" ; scenario {s.name}: {s.summary}"
        return True, text

    def cleanup(self) -> None:
        ignore_stop_signals()
        if self.scenario is not None:
            try:
                self.scenario.stop()
            except (OSError, LabError):
                pass
        procs = list(self.extra) + list(self.clients.values()) + \
            ([self.agent] if self.agent else [])
        stop_all([p for p in procs if p is not None])
        if self.tag:
            sweep(self.tag, self.root, self.tag + "-" if self.netns else None)
        stop_guardian(self._guardian)


def main(args) -> int:
    """`mtce lab`: exit 0 (Ctrl-C, or --duration and everything came up), 1 (it did not,
    or a runtime failure), 2 (usage)."""
    lab = Lab(args)
    problem = lab.validate()
    if problem:
        print(f"mtce lab: {problem}", file=sys.stderr)
        return 2
    PENDING_SIGNALS.clear()
    old = {s: signal.signal(s, on_stop_signal) for s in STOP_SIGNALS}
    interrupted = None
    failure = ""
    ok, text = False, ""
    try:
        try:
            if lab.screen:
                lab.screen.hide_cursor()
            lab.setup()
            lab.run()
            ok, text = lab.verdict()
        except Interrupted as sig:
            interrupted = sig.signum
        except KeyboardInterrupt:
            interrupted = signal.SIGINT
        except LabError as err:
            failure = str(err)
        finally:
            ignore_stop_signals()
            if lab.screen:
                if lab.view is not None and lab.plan is not None and interrupted is None:
                    try:
                        lab.screen.draw(lab.report.frame(time.monotonic()))
                    except OSError:
                        pass
                lab.screen.restore()
            lab.cleanup()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if interrupted is not None:
        name = signal.Signals(interrupted).name
        if not lab.tty and lab.view is not None and lab.view.hosts:
            lab.say(cli_ctl.format_hosts([lab.view.hosts[n] for n in lab.view.order]))
        what = "process, namespace and file" if lab.netns else "process and file"
        lab.say(f"mtce lab: stopped ({name}) ; every {what} of the lab removed")
        return 0 if lab.duration is None else 128 + interrupted
    if failure:
        print(f"mtce lab: {failure}", file=sys.stderr)
        return 1
    if not lab.tty and lab.view is not None and lab.view.hosts:
        lab.say(cli_ctl.format_hosts([lab.view.hosts[n] for n in lab.view.order]))
        if lab.view.alarms:
            lab.say(cli_ctl.format_alarms(lab.view.alarms))
    for log in lab.crash_logs:
        lab.say(log)
    lab.say(f"mtce lab: {text}")
    return 0 if ok else 1
