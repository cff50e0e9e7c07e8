"""`mtce lab --ha`: two controllers under real corosync and Pacemaker in namespaces, the agent
the cluster resource ocf:mtce:mtcAgent, workers running real clients (docs/contract.md §6,
docs/ha.md).

The controllers are cluster nodes (`lab_cluster.Node`) of one cluster
(`lab_ha_cluster.HaCluster`); the lab loads the reference CIB's group (the shared state_dir as
a bind-mount Filesystem, IPaddr2 for the floating `controller` address, the agent) and plays a
scenario (`lab_ha_scenarios.HaScenarios`):

- `agent-kill`: kill -9 the agent; Pacemaker restarts it on the same controller.
- `node-kill`: power off the active controller; the other fences it and takes the address
  and the agent.
- `swact`: move the group to the other controller (crm_resource --move).
- `split`: cut the controllers' corosync link; fencing leaves one controller and one agent.

Before the first three, a worker is locked and another loses pxeboot until 200.003 is
raised; after the move both must still hold, the alarm hook must not run again, and no
host may be seen offline; the alarm then clears once on the new agent when pxeboot comes
back. The lab prints the measured times and exits 0 only if the scenario's promise held.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time

from mtce import cli_ctl
from mtce.cli_screen import Interrupted, Output
from mtce.lab_cluster import FENCE_DELAY_S, TOOLS, ocf_agent
from mtce.lab_ha_cluster import HaCluster
from mtce.lab_ha_scenarios import HOSTS_OK_S, HaScenarios, ScenarioFailed
from mtce.lab_plan import (
    ENV_TAG, HA_SCENARIOS, MAX_HOSTS, LabError, Plan, cli_hint, program,
)
from mtce.lab_proc import (
    PENDING_SIGNALS, STOP_SIGNALS, Proc, build_topology, check_stop, ignore_stop_signals,
    init_process, netns_problem, on_stop_signal, signals_held, start_guardian, stop_all,
    stop_guardian, sweep,
)
from mtce.lab_view import View
from mtce.states import NET_KEYS

PXEBOOT_WINDOW_S = 1            # --ha: 200.003 after ~12 s of loss, cleared ~7 s after it ends
FORM_S = 90.0                   # both nodes online with a DC, and the group started, within
TICK_S, POLL_S, CLUSTER_POLL_S, COUNT_S = 0.1, 0.5, 1.0, 0.5


class HaLab:
    """The lab of one run: `validate` the command line and the host, `setup` the namespaces,
    the cluster and the clients, `form` the cluster until every host is online, `play` the
    scenario, `cleanup`. What runs while it waits is its `watch`."""

    def __init__(self, args, out=None):
        self.lines = Output(out or sys.stdout)
        self.hosts = 4 if args.hosts is None else args.hosts
        self.duration = args.duration
        self.scenario = args.scenario
        self.t0 = time.monotonic()
        self.root = self.tag = ""
        self.plan: Plan | None = None
        self.view: View | None = None
        self.cluster: HaCluster | None = None
        self.watch: Watch | None = None
        self.clients: dict[str, Proc] = {}
        self.measured: list[str] = []
        self._guardian: tuple[int, int] | None = None

    # -- output ----------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, text: str = "") -> None:
        self.lines.say(text)

    def event(self, text: str) -> None:
        self.say(f"{self.elapsed():7.1f}s  {text}")

    # -- checks and set-up -----------------------------------------------------------------------
    def validate(self) -> str | None:
        if self.scenario not in HA_SCENARIOS:
            return (f"--scenario {self.scenario} is not an --ha scenario (one of "
                    f"{', '.join(HA_SCENARIOS)})")
        if not 3 <= self.hosts <= MAX_HOSTS:
            return f"--ha needs --hosts between 3 and {MAX_HOSTS} (two controllers and workers)"
        if self.duration is not None and self.duration <= 0:
            return "--duration must be more than 0 seconds"
        problem = netns_problem()
        if problem:
            return problem.replace("--netns", "--ha")
        missing = [t for t in TOOLS if not shutil.which(t)]
        if missing:
            return (f"--ha needs {', '.join(missing)} (apt-get install corosync pacemaker "
                    f"resource-agents kmod util-linux)")
        if not os.path.isfile("/usr/lib/ocf/resource.d/heartbeat/IPaddr2"):
            return ("--ha needs resource-agents (IPaddr2, Filesystem): apt-get install "
                    "resource-agents")
        with open("/proc/filesystems", encoding="ascii") as f:
            if "overlay" not in f.read():
                return "--ha needs the overlay filesystem (modprobe overlay)"
        if ocf_agent() is None:
            return ("--ha needs mtce's resource agent: run it from the source tree or with the "
                    ".deb installed (/usr/lib/ocf/resource.d/mtce/mtcAgent)")
        return None

    def setup(self) -> None:
        init_process(os.getpid())
        with signals_held():
            self.root = tempfile.mkdtemp(prefix="mtce-ha-")
            self.tag = os.path.basename(self.root)
            self._guardian = start_guardian(self.tag, self.root, self.tag + "-")
        self.plan = Plan(self.root, self.hosts, netns=True, ha=True, ns_prefix=self.tag + "-",
                         pxeboot_window=PXEBOOT_WINDOW_S)
        self.plan.write()
        build_topology(self.plan)
        check_stop()
        env = dict(os.environ, **{ENV_TAG: self.tag})
        env.pop("NOTIFY_SOCKET", None)
        self.cluster = HaCluster(self.plan, self.event)
        self.cluster.build(env)
        self.view = View(self.plan)
        self.watch = Watch(self.plan, self.view, self.cluster, self.clients, self.elapsed,
                           self.duration)
        self._header()
        self.cluster.start()
        for h in self.plan.workers:
            self.clients[h.name] = Proc(h.name, ["ip", "netns", "exec", h.ns] + program() +
                                        ["client", "-c", h.ini, "-f"],
                                        h.client_log, env).start()
        self.event(f"started corosync, pacemaker and a client on each controller, and "
                   f"{len(self.plan.workers)} worker clients")

    def _header(self) -> None:
        p = self.plan
        self.say(f"mtce lab --ha: {len(p.clients)} hosts in network namespaces {p.ns_prefix}* ; "
                 f"controller-0 and controller-1 are cluster nodes (corosync + pacemaker)")
        self.say(f"  group g_mtce: the shared state_dir (bind mount of {self.cluster.shared}), the "
                 f"floating address {p.floating} (IPaddr2), the agent (ocf:mtce:mtcAgent)")
        self.say(f"  corosync over ring0 (198.19.1.0/24) ; fencing: the lab powers a controller's "
                 f"namespaces off ; priority-fencing-delay {FENCE_DELAY_S} s")
        if self.scenario != "none":
            self.say(f"  scenario: {self.scenario}")
        self.say(f"  files: {p.root} (removed on exit) ; cluster logs in ha/*/ ; daemon logs in "
                 f"*/log/")
        self.say(f"  crm_mon: nsenter -t <pid 1 of a node> -n -m -u -p crm_mon ; the hosts: "
                 f"{cli_hint()} -c {self.plan.controller.ini} hosts (on the active controller)")
        self.say()

    # -- start-up to steady ----------------------------------------------------------------------
    def form(self) -> None:
        c, w = self.cluster, self.watch
        both = set(c.nodes)
        took = w.wait_for("both controllers online in one cluster with a DC",
                          lambda: c.state.online >= both and bool(c.state.dc), FORM_S)
        self.event(f"cluster formed: controller-0 and controller-1 online, DC {c.state.dc} "
                   f"({took:.1f} s)")
        c.load_cib()
        self.event("loaded the CIB: fence devices, group g_mtce, stickiness, "
                   "priority-fencing-delay")
        took = w.wait_for("g_mtce started and its agent answering",
                          lambda: bool(c.active) and c.agent_up_on(c.active), FORM_S)
        self.event(f"the agent answers on {c.active} ({took:.1f} s after the CIB)")
        everyone = [h.name for h in self.plan.clients]
        took = w.wait_for("every host online on every network",
                          lambda: w.hosts_ok(everyone), HOSTS_OK_S)
        self.event(f"all {len(everyone)} hosts online on mgmt, cluster-host and pxeboot "
                   f"({self.elapsed():.1f} s after start)")
        self.say(cli_ctl.format_hosts([self.view.hosts[n] for n in self.view.order]))

    # -- the scenario ----------------------------------------------------------------------------
    def play(self) -> str:
        if self.scenario != "none":
            return HaScenarios(self.plan, self.view, self.cluster, self.watch, self.event,
                               self.measured).play(self.scenario)
        w = self.watch
        w.must_stay_online = {h.name for h in self.plan.clients}
        while self.duration is None or self.elapsed() < self.duration - 1:
            w.tick()
        if w.offline_seen:
            raise ScenarioFailed("seen offline: " + ", ".join(w.offline_seen))
        return f"every host stayed online with the agent on {self.cluster.active}"

    # -- the end ---------------------------------------------------------------------------------
    def cleanup(self) -> None:
        ignore_stop_signals()
        stop_all(list(self.clients.values()))
        if self.cluster is not None:
            self.cluster.power_off()
        if self.tag:
            sweep(self.tag, self.root, self.tag + "-")
        stop_guardian(self._guardian)


class Watch:
    """What runs while the lab waits (`tick`): fence requests served, the cluster and the
    agent's table polled, the clients checked, the agents counted while `counting`; and what
    it watches for: a host in `must_stay_online` seen offline, or one of its networks lost
    that is not in `may_be_lost` (`offline_seen`). Past `duration` the scenario failed."""

    def __init__(self, plan: Plan, view: View, cluster: HaCluster, clients: dict[str, Proc],
                 elapsed, duration: float | None):
        self.plan = plan
        self.view = view
        self.cluster = cluster
        self.clients = clients
        self.elapsed = elapsed
        self.duration = duration
        self.must_stay_online: set[str] = set()
        self.offline_seen: list[str] = []     # offline, or a network lost, where it must not
        self.may_be_lost: set = set()         # (host, network) a scenario takes down
        self.counting = False
        self.max_agents = 0
        self._next = {"poll": 0.0, "cluster": 0.0, "count": 0.0}

    def tick(self) -> None:
        """One step of everything that runs while the lab waits: fence requests, the cluster
        and the agent's table, the count of running agents."""
        check_stop()
        now = time.monotonic()
        if self.duration is not None and self.elapsed() > self.duration:
            raise ScenarioFailed(f"--duration {self.duration:g} s ran out first")
        self.cluster.serve_fence()
        if now >= self._next["cluster"]:
            self._next["cluster"] = now + CLUSTER_POLL_S
            self.cluster.poll()
        if self.counting and now >= self._next["count"]:
            self._next["count"] = now + COUNT_S
            n = sum(len(node.agent_pids()) for node in self.cluster.nodes.values()
                    if node.alive())
            if n > self.max_agents:
                self.max_agents = n
        if now >= self._next["poll"]:
            self._next["poll"] = now + POLL_S
            if self.cluster.active:
                self.view.socket = self.plan.socket_of(self.plan.host(self.cluster.active))
                if self.view.poll(now):
                    self._note_offline()
        for name, proc in self.clients.items():
            if not proc.running() and not proc.expected_exit:
                proc.expected_exit = True
                raise LabError(f"{name}'s client exited ({proc.returncode()}):\n{proc.tail()}")
        time.sleep(TICK_S)

    def _note_offline(self) -> None:
        for name in sorted(self.must_stay_online):
            h = self.view.hosts.get(name) or {}
            if h.get("availability") == "offline":
                self.offline_seen.append(f"{name} at {self.elapsed():.1f} s")
            # docs/contract.md §8 "Takeover": nor a network lost
            for net in NET_KEYS:
                if self.view.net_state(name, net) == "lost" and \
                        (name, net) not in self.may_be_lost:
                    self.offline_seen.append(f"{name} {net} lost at {self.elapsed():.1f} s")

    def wait_for(self, what: str, cond, timeout: float) -> float:
        """Tick until cond() is true; the seconds it took. ScenarioFailed after timeout."""
        start = time.monotonic()
        while not cond():
            if time.monotonic() - start > timeout:
                raise ScenarioFailed(f"{what}: not within {timeout:g} s")
            self.tick()
        return time.monotonic() - start

    def hold(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.tick()

    def hosts_ok(self, names) -> bool:
        return bool(self.view.hosts) and all(self.view.host_ok(n) for n in names)


def main(args) -> int:
    """Exit 0 when the scenario's promise held (or Ctrl-C without --duration), 1 when it did
    not or the lab failed, 2 for a usage problem."""
    lab = HaLab(args)
    problem = lab.validate()
    if problem:
        print(f"mtce lab: {problem}", file=sys.stderr)
        return 2
    PENDING_SIGNALS.clear()
    old = {s: signal.signal(s, on_stop_signal) for s in STOP_SIGNALS}
    verdict, ok, interrupted = "", False, None
    try:
        try:
            lab.setup()
            lab.form()
            summary = lab.play()
            ok, verdict = True, f"ok: scenario {lab.scenario}: {summary}"
        except ScenarioFailed as err:
            verdict = f"FAILED: scenario {lab.scenario}: {err}"
        except LabError as err:
            verdict = f"FAILED: {err}"
        except Interrupted as sig:
            interrupted = sig.signum
        except KeyboardInterrupt:
            interrupted = signal.SIGINT
        finally:
            if lab.view is not None and lab.view.hosts and interrupted is None:
                lab.say(cli_ctl.format_hosts([lab.view.hosts[n] for n in lab.view.order]))
                if lab.view.alarms:
                    lab.say(cli_ctl.format_alarms(lab.view.alarms))
            lab.cleanup()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if interrupted is not None:
        lab.say(f"mtce lab: stopped ({signal.Signals(interrupted).name}) ; every process, "
                f"namespace and file of the lab removed")
        return 0 if lab.duration is None else 128 + interrupted
    for line in lab.measured:
        lab.say(f"measured: {line}")
    lab.say(f"mtce lab: {verdict}")
    return 0 if ok else 1
