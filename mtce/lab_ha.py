"""`mtce lab --ha`: two controllers under real corosync and Pacemaker in namespaces, the agent
the cluster resource ocf:mtce:mtcAgent, workers running real clients (docs/contract.md §6,
docs/ha.md).

The controllers are cluster nodes (`lab_cluster.Node`); the lab loads the reference CIB's
group (the shared state_dir as a bind-mount Filesystem, IPaddr2 for the floating
`controller` address, the agent) and plays a scenario:

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

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from mtce import cli_ctl
from mtce.cli_screen import Interrupted, Lines
from mtce.lab_cluster import (
    FENCE_DELAY_S, TOOLS, ClusterState, Node, cib_configuration, corosync_conf, fence_script,
    mtce_program, ocf_agent, parse_crm_mon, power_switch,
)
from mtce.lab_plan import (
    ENV_TAG, HA_SCENARIOS, MAX_HOSTS, ONLINE_PERIOD_S, OFFLINE_AFTER_S,
    LabError, Plan, cli_hint, program,
)
from mtce.lab_proc import (
    PENDING_SIGNALS, STOP_SIGNALS, Proc, build_topology, check_stop, ignore_stop_signals,
    init_process, ip_cmd, netns_problem, on_stop_signal, signals_held, start_guardian,
    stop_all, stop_guardian, sweep,
)
from mtce.lab_view import View
from mtce.states import NET_KEYS

GROUP = ("p_state", "p_controller_ip", "p_mtcagent")
PXEBOOT_WINDOW_S = 1            # --ha: 200.003 after ~12 s of loss, cleared ~7 s after it ends
ALARM_RAISE_S = 40.0            # the pxeboot loss is alarmed within this
ALARM_CLEAR_S = 30.0
FORM_S = 90.0                   # both nodes online with a DC, and the group started, within
HOSTS_OK_S = 60.0
TAKEOVER_S = 60.0               # a scenario's move must end within this (else it failed)
CONFIRM_S = 10.0                # then crm_mon must show the group there within this
FAILOVER_BUDGET_S = 15.0        # node-kill: the survivor has the address and the agent within
DETECT_WINDOW_S = OFFLINE_AFTER_S + 3 * ONLINE_PERIOD_S + 2   # no offline or lost meanwhile
TICK_S, POLL_S, CLUSTER_POLL_S, COUNT_S = 0.1, 0.5, 1.0, 0.5


class ScenarioFailed(Exception):
    """The scenario's promise did not hold."""


class HaLab:
    def __init__(self, args, out=None):
        self.lines = Lines(out or sys.stdout)
        self.hosts = 4 if args.hosts is None else args.hosts
        self.duration = args.duration
        self.scenario = args.scenario
        self.t0 = time.monotonic()
        self.root = self.tag = ""
        self.plan: Plan | None = None
        self.view: View | None = None
        self.nodes: dict[str, Node] = {}
        self.clients: dict[str, Proc] = {}
        self.cluster = ClusterState()
        self.active = ""                      # where the group runs, as last seen
        self.fence_dir = self.shared = ""
        self.fenced: list[str] = []
        self.measured: list[str] = []
        self.must_stay_online: set[str] = set()
        self.offline_seen: list[str] = []     # offline, or a network lost, where it must not
        self.may_be_lost: set = set()         # (host, network) a scenario takes down
        self.counting = False
        self.max_agents = 0
        self._guardian: tuple[int, int] | None = None
        self._next = {"poll": 0.0, "cluster": 0.0, "count": 0.0}

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
            return "--ha needs resource-agents (IPaddr2, Filesystem): apt-get install resource-agents"
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
        c0, c1 = self.plan.controllers
        ip_cmd("link", "add", "ring0", "type", "veth", "peer", "name", "ring0", "netns", c1.ns,
               ns=c0.ns)
        env = dict(os.environ, **{ENV_TAG: self.tag})
        env.pop("NOTIFY_SOCKET", None)
        for i, h in enumerate((c0, c1)):
            node = Node(self.plan, h, i + 1, env)
            ip_cmd("addr", "add", f"{node.ring_ip}/24", "dev", "ring0", ns=h.ns)
            ip_cmd("link", "set", "ring0", "up", ns=h.ns)
            self.nodes[h.name] = node
        conf = corosync_conf(list(self.nodes.values()))
        for node in self.nodes.values():
            node.prepare(conf)
        self._write_cluster_files()
        self.view = View(self.plan)
        self._header()
        for node in self.nodes.values():
            node.start(self._overlays)
        for h in self.plan.workers:
            self.clients[h.name] = Proc(h.name, ["ip", "netns", "exec", h.ns] + program() +
                                        ["client", "-c", h.ini, "-f"],
                                        h.client_log, env).start()
        self.event(f"started corosync, pacemaker and a client on each controller, and "
                   f"{len(self.plan.workers)} worker clients")

    def _write_cluster_files(self) -> None:
        ha = os.path.join(self.root, "ha")
        self.shared = os.path.join(ha, "shared-state")
        self.fence_dir = os.path.join(ha, "fence")
        for d in (self.shared, self.fence_dir, self.plan.state_dir, os.path.join(ha, "sbin"),
                  os.path.join(ha, "ocf", "mtce")):
            os.makedirs(d, exist_ok=True)
        fence = os.path.join(ha, "sbin", "fence_mtce_lab")
        with open(fence, "w", encoding="utf-8") as f:
            f.write(fence_script(self.fence_dir))
        os.chmod(fence, 0o755)
        self._overlays = [(os.path.join(ha, "sbin"), "/usr/sbin")]
        source = ocf_agent()
        if source != "/usr/lib/ocf/resource.d/mtce/mtcAgent":
            shutil.copy(source, os.path.join(ha, "ocf", "mtce", "mtcAgent"))
            os.chmod(os.path.join(ha, "ocf", "mtce", "mtcAgent"), 0o755)
            self._overlays.append((os.path.join(ha, "ocf"), "/usr/lib/ocf/resource.d"))
        python, binary = mtce_program()
        with open(os.path.join(ha, "cib.xml"), "w", encoding="utf-8") as f:
            f.write(cib_configuration(self.plan, python, binary, self.shared))

    def _header(self) -> None:
        p = self.plan
        self.say(f"mtce lab --ha: {len(p.clients)} hosts in network namespaces {p.ns_prefix}* ; "
                 f"controller-0 and controller-1 are cluster nodes (corosync + pacemaker)")
        self.say(f"  group g_mtce: the shared state_dir (bind mount of {self.shared}), the floating "
                 f"address {p.floating} (IPaddr2), the agent (ocf:mtce:mtcAgent)")
        self.say(f"  corosync over ring0 (198.19.1.0/24) ; fencing: the lab powers a controller's "
                 f"namespaces off ; priority-fencing-delay {FENCE_DELAY_S} s")
        if self.scenario != "none":
            self.say(f"  scenario: {self.scenario}")
        self.say(f"  files: {p.root} (removed on exit) ; cluster logs in ha/*/ ; daemon logs in */log/")
        self.say(f"  crm_mon: nsenter -t <pid 1 of a node> -n -m -u -p crm_mon ; the hosts: "
                 f"{cli_hint()} -c {self.plan.controller.ini} hosts (on the active controller)")
        self.say()

    # -- the loop --------------------------------------------------------------------------------
    def tick(self) -> None:
        """One step of everything that runs while the lab waits: fence requests, the cluster
        and the agent's table, the count of running agents."""
        check_stop()
        now = time.monotonic()
        if self.duration is not None and now - self.t0 > self.duration:
            raise ScenarioFailed(f"--duration {self.duration:g} s ran out first")
        self.serve_fence()
        if now >= self._next["cluster"]:
            self._next["cluster"] = now + CLUSTER_POLL_S
            self.poll_cluster()
        if self.counting and now >= self._next["count"]:
            self._next["count"] = now + COUNT_S
            n = sum(len(node.agent_pids()) for node in self.nodes.values() if node.alive())
            if n > self.max_agents:
                self.max_agents = n
        if now >= self._next["poll"]:
            self._next["poll"] = now + POLL_S
            if self.active:
                self.view.socket = self.plan.socket_of(self.plan.host(self.active))
                if self.view.poll(now):
                    for name in sorted(self.must_stay_online):
                        h = self.view.hosts.get(name) or {}
                        if h.get("availability") == "offline":
                            self.offline_seen.append(f"{name} at {self.elapsed():.1f} s")
                        # docs/contract.md §8 "Takeover": nor a network lost
                        for net in NET_KEYS:
                            if self.view.net_state(name, net) == "lost" and \
                                    (name, net) not in self.may_be_lost:
                                self.offline_seen.append(f"{name} {net} lost at "
                                                         f"{self.elapsed():.1f} s")
        for name, proc in self.clients.items():
            if not proc.running() and not proc.expected_exit:
                proc.expected_exit = True
                raise LabError(f"{name}'s client exited ({proc.returncode()}):\n{proc.tail()}")
        time.sleep(TICK_S)

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

    def poll_cluster(self) -> None:
        for node in self.nodes.values():
            if not node.alive():
                continue
            try:
                r = node.run(["crm_mon", "-1", "--output-as=xml"], timeout=10)
            except (LabError, subprocess.TimeoutExpired):
                continue
            if r.returncode == 0:
                state = parse_crm_mon(r.stdout)
                where = state.group_on(GROUP)
                if where != self.active and where:
                    self.event(f"g_mtce started on {where} (state_dir, {self.plan.floating}, "
                               f"the agent)")
                self.cluster, self.active = state, where
                return
        self.cluster, self.active = ClusterState(), ""

    def serve_fence(self) -> None:
        for requester, target, action, was_on in power_switch(self.fence_dir, self.nodes):
            self.fenced.append(target)
            self.event(f"fence: {requester} fenced {target} ({action}): "
                       f"{'powered off' if was_on else 'was already off'}")

    def agent_status(self, name: str) -> dict:
        try:
            return cli_ctl.request(self.plan.socket_of(self.plan.host(name)), {"cmd": "status"},
                                   timeout=2.0)
        except cli_ctl.CtlError:
            return {}

    def agent_answers(self, name: str) -> bool:
        return self.agent_status(name).get("hostname") == name

    def agent_up_on(self, name: str) -> bool:
        return self.agent_answers(name) and self.cluster.group_on(GROUP) == name

    def took_over(self, name: str, ready=lambda: True) -> float:
        """Tick until `name` holds the floating address and its agent answers (what clients
        and operators see; timed to a tick, not to crm_mon's poll), then until crm_mon places
        the group there too. The seconds of the first wait."""
        took = self.wait_for(f"{name} has the address and the agent", lambda: ready() and
                             self.agent_answers(name) and self.has_floating(name), TAKEOVER_S)
        self.wait_for(f"crm_mon showing g_mtce on {name}",
                      lambda: self.cluster.group_on(GROUP) == name, CONFIRM_S)
        return took

    def has_floating(self, name: str) -> bool:
        r = ip_cmd("-o", "addr", "show", "dev", self.plan.ifaces[0], ns=self.plan.host(name).ns,
                   check=False)
        return f" {self.plan.floating}/" in r.stdout

    def hosts_ok(self, names) -> bool:
        return bool(self.view.hosts) and all(self.view.host_ok(n) for n in names)

    # -- start-up to steady ----------------------------------------------------------------------
    def form(self) -> None:
        both = set(self.nodes)
        took = self.wait_for("both controllers online in one cluster with a DC",
                             lambda: self.cluster.online >= both and bool(self.cluster.dc),
                             FORM_S)
        self.event(f"cluster formed: controller-0 and controller-1 online, DC {self.cluster.dc} "
                   f"({took:.1f} s)")
        dc = self.nodes[self.cluster.dc]
        r = dc.run(["cibadmin", "--replace", "--scope", "configuration", "--xml-file",
                    os.path.join(self.root, "ha", "cib.xml")], timeout=30)
        if r.returncode != 0:
            raise LabError(f"cibadmin --replace: {r.stderr.strip() or r.stdout.strip()}")
        self.event("loaded the CIB: fence devices, group g_mtce, stickiness, "
                   "priority-fencing-delay")
        took = self.wait_for("g_mtce started and its agent answering",
                             lambda: bool(self.active) and self.agent_up_on(self.active),
                             FORM_S)
        self.event(f"the agent answers on {self.active} ({took:.1f} s after the CIB)")
        everyone = [h.name for h in self.plan.clients]
        took = self.wait_for("every host online on every network",
                             lambda: self.hosts_ok(everyone), HOSTS_OK_S)
        self.event(f"all {len(everyone)} hosts online on mgmt, cluster-host and pxeboot "
                   f"({self.elapsed():.1f} s after start)")
        self.say(cli_ctl.format_hosts([self.view.hosts[n] for n in self.view.order]))

    # -- what the move scenarios prepare and check -----------------------------------------------
    def pxeboot_link(self, host: str, up: bool) -> None:
        i = [h.name for h in self.plan.hosts].index(host)
        ip_cmd("link", "set", f"p{i}p", "up" if up else "down", ns=self.plan.ns_prefix + "sw")

    def hook_count(self, host: str, action: str) -> int:
        """How often the `[actions] alarm` hook ran `action` for `host` (one JSON per line)."""
        try:
            with open(self.plan.alarm_log, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError:
            return 0
        count = 0
        for line in lines:
            try:
                body = json.loads(line)
            except ValueError:
                continue
            if isinstance(body, dict) and body.get("host") == host and \
                    body.get("action") == action:
                count += 1
        return count

    def prepare_state(self) -> tuple[str, str]:
        """Lock one worker, alarm another (pxeboot link down until 200.003 is raised)."""
        workers = [h.name for h in self.plan.workers]
        alarmed, locked = workers[0], workers[-1]
        self.may_be_lost.add((alarmed, "pxeboot"))
        r = cli_ctl.request(self.view.socket, {"cmd": "lock", "host": locked}, timeout=5.0)
        if not r.get("ok"):
            raise ScenarioFailed(f"mtce lock {locked}: {r.get('error')}")
        self.wait_for(f"{locked} locked", lambda: (self.view.hosts.get(locked) or {}).get(
            "administrative") == "locked", 10)
        self.event(f"operator: mtce lock {locked}")
        self.pxeboot_link(alarmed, False)
        self.event(f"{alarmed}: pxeboot link down")
        took = self.wait_for(f"200.003 raised for {alarmed}",
                             lambda: self.view.alarm_for(alarmed) is not None, ALARM_RAISE_S)
        self.event(f"alarm raised: 200.003 {alarmed} ({took:.1f} s after the link went down)")
        return locked, alarmed

    def check_after_move(self, locked: str, alarmed: str, survivors: list[str]) -> None:
        """One detection window on the new agent, then every promise of a move."""
        self.hold(DETECT_WINDOW_S)
        v = self.view
        problems = []
        for name in survivors:
            h = v.hosts.get(name) or {}
            bad = [n for n in NET_KEYS if v.net_state(name, n) != "ok" and
                   not (name == alarmed and n == "pxeboot")]
            if h.get("availability") != "online" or bad:
                problems.append(f"{name} {h.get('availability')}" +
                                (f", not ok on {', '.join(bad)}" if bad else ""))
        if (v.hosts.get(locked) or {}).get("administrative") != "locked":
            problems.append(f"the lock of {locked} was lost")
        if v.alarm_for(alarmed) is None:
            problems.append(f"the 200.003 alarm of {alarmed} was lost")
        if self.hook_count(alarmed, "raise") != 1:
            problems.append(f"the alarm hook ran {self.hook_count(alarmed, 'raise')} raises "
                            f"for {alarmed}")
        if self.offline_seen:
            problems.append("seen offline: " + ", ".join(self.offline_seen))
        if problems:
            raise ScenarioFailed("; ".join(problems))
        self.event(f"after one detection window ({DETECT_WINDOW_S:g} s) on the new agent: every "
                   f"host online, {locked} locked, 200.003 {alarmed} active, raised once")

    def clear_alarm(self, alarmed: str) -> None:
        self.pxeboot_link(alarmed, True)
        self.event(f"{alarmed}: pxeboot link up")
        took = self.wait_for(f"200.003 cleared for {alarmed}",
                             lambda: self.view.alarm_for(alarmed) is None, ALARM_CLEAR_S)
        raises, clears = self.hook_count(alarmed, "raise"), self.hook_count(alarmed, "clear")
        if (raises, clears) != (1, 1):
            raise ScenarioFailed(f"alarm hook for {alarmed}: {raises} raises, {clears} clears "
                                 f"(expected one of each)")
        self.event(f"alarm cleared: 200.003 {alarmed}, {took:.1f} s after pxeboot came back ; "
                   f"the hook ran one raise and one clear")

    # -- scenarios -------------------------------------------------------------------------------
    def play(self) -> str:
        if self.scenario == "none":
            everyone = [h.name for h in self.plan.clients]
            self.must_stay_online = set(everyone)
            while self.duration is None or self.elapsed() < self.duration - 1:
                self.tick()
            if self.offline_seen:
                raise ScenarioFailed("seen offline: " + ", ".join(self.offline_seen))
            return f"every host stayed online with the agent on {self.active}"
        if self.scenario == "split":
            return self.split()
        locked, alarmed = self.prepare_state()
        old = self.active
        other = next(n for n in self.nodes if n != old)
        everyone = [h.name for h in self.plan.clients]
        survivors = [n for n in everyone if n != old] if self.scenario == "node-kill" \
            else everyone
        self.must_stay_online = set(survivors)
        if self.scenario == "agent-kill":
            summary = self.agent_kill(old)
        elif self.scenario == "node-kill":
            summary = self.node_kill(old, other)
        else:
            summary = self.swact(old, other)
        self.check_after_move(locked, alarmed, survivors)
        if self.scenario == "swact":
            self.check_no_loss(alarmed)
        self.clear_alarm(alarmed)
        return summary

    def agent_kill(self, where: str) -> str:
        pids = self.nodes[where].agent_pids()
        if not pids:
            raise ScenarioFailed(f"no agent process on {where}")
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        self.event(f"kill -9 the agent on {where} (pid {', '.join(map(str, pids))})")
        took = self.took_over(where, lambda: _new_pids(self.nodes[where].agent_pids(), pids))
        if self.active != where:
            raise ScenarioFailed(f"the agent moved to {self.active} instead of restarting")
        text = f"the agent restarted in place on {where} {took:.1f} s after kill -9"
        self.measured.append(f"agent-kill: restarted in place in {took:.1f} s")
        self.event(text)
        return text

    def node_kill(self, old: str, other: str) -> str:
        self.nodes[old].power_off()
        self.event(f"power off {old} (every process of its namespaces killed)")
        start = time.monotonic()
        took = self.took_over(other)
        heard = self.wait_for("every surviving host on every network on the new agent",
                              lambda: self.hosts_ok(sorted(self.must_stay_online - {
                                  h.name for h in self.plan.workers[:1]})), HOSTS_OK_S)
        total = time.monotonic() - start
        self.measured.append(f"node-kill: address and agent on {other} in {took:.1f} s "
                             f"(budget {FAILOVER_BUDGET_S:g} s) ; every host heard {total:.1f} s "
                             f"after the power-off")
        self.event(f"failover: {other} has {self.plan.floating} and the agent {took:.1f} s after "
                   f"the power-off ; every surviving host heard after {total:.1f} s "
                   f"(+{heard:.1f} s)")
        if old not in self.fenced:
            raise ScenarioFailed(f"{old} was not fenced before the takeover")
        if took > FAILOVER_BUDGET_S:
            raise ScenarioFailed(f"failover took {took:.1f} s, over the {FAILOVER_BUDGET_S:g} s "
                                 f"budget")
        return f"{other} took over in {took:.1f} s (budget {FAILOVER_BUDGET_S:g} s)"

    def swact(self, old: str, other: str) -> str:
        r = self.nodes[old].run(["crm_resource", "--move", "--resource", "g_mtce", "--node",
                                other], timeout=30)
        if r.returncode != 0:
            raise ScenarioFailed(f"crm_resource --move: {r.stderr.strip()}")
        self.event(f"swact: crm_resource --move --resource g_mtce --node {other}")
        took = self.took_over(other)
        self.nodes[other].run(["crm_resource", "--clear", "--resource", "g_mtce"], timeout=30)
        self.measured.append(f"swact: address and agent on {other} in {took:.1f} s")
        self.event(f"swact: {other} has {self.plan.floating} and the agent {took:.1f} s after "
                   f"the move ; the move constraint cleared (stickiness keeps it there)")
        return f"planned move to {other} in {took:.1f} s"

    def check_no_loss(self, alarmed: str) -> None:
        """swact: the new agent counted no missed or out-of-sequence mtcAlive anywhere."""
        v = self.view
        bad = []
        for name in v.expected:
            for net in NET_KEYS:
                if name == alarmed and net == "pxeboot":
                    continue
                n = v.net(name, net)
                if n.get("missed") or n.get("out_of_sequence") or not n.get("last_seq"):
                    bad.append(f"{name} {net} last_seq {n.get('last_seq')} missed "
                               f"{n.get('missed')} out_of_sequence {n.get('out_of_sequence')}")
        if bad:
            raise ScenarioFailed("mtcAlive lost across the swact: " + "; ".join(bad))
        self.event("swact: every host answered the new agent on every network, none missed "
                   "and none out of sequence")

    def split(self) -> str:
        everyone = [h.name for h in self.plan.clients]
        old = self.active
        self.counting, self.max_agents = True, 0
        self.must_stay_online = set(everyone) - set(self.nodes)
        ip_cmd("link", "set", "ring0", "down", ns=self.plan.host(old).ns)
        self.event(f"split: the controllers' corosync link (ring0) cut ; the agent runs on {old}")
        took = self.wait_for("one controller fenced", lambda: bool(self.fenced), TAKEOVER_S)
        self.hold(FENCE_DELAY_S + 5)
        alive = [n for n, node in self.nodes.items() if node.alive()]
        agents = {n: self.nodes[n].agent_pids() for n in alive}
        running = [n for n, pids in agents.items() if pids]
        problems = []
        if len(alive) != 1:
            problems.append(f"controllers still running: {alive}")
        if len(running) != 1 or len(agents.get(running[0] if running else "", [])) != 1:
            problems.append(f"agents running: {agents}")
        if self.max_agents > 1:
            problems.append(f"{self.max_agents} agents ran at the same time")
        if running and not self.agent_up_on(running[0]):
            problems.append(f"the agent on {running[0]} does not answer")
        if self.offline_seen:
            problems.append("seen offline: " + ", ".join(self.offline_seen))
        if problems:
            raise ScenarioFailed("; ".join(problems))
        self.counting = False
        winner = running[0]
        self.measured.append(f"split: {self.fenced[0]} fenced {took:.1f} s after the cut ; "
                             f"one agent, on {winner}")
        text = (f"{self.fenced[0]} fenced {took:.1f} s after the cut ; exactly one agent, on "
                f"{winner}{' (it never moved)' if winner == old else ''}")
        self.event(text)
        return text

    # -- the end ---------------------------------------------------------------------------------
    def cleanup(self) -> None:
        ignore_stop_signals()
        stop_all(list(self.clients.values()))
        for node in self.nodes.values():
            node.power_off()
        if self.tag:
            sweep(self.tag, self.root, self.tag + "-")
        stop_guardian(self._guardian)


def _new_pids(now: list[int], killed: list[int]) -> bool:
    """An agent runs again, and none of the killed ones."""
    return bool(now) and not set(now) & set(killed)


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
