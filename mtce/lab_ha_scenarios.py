"""`mtce lab --ha`'s failover scenarios (`--scenario`, docs/ha.md): agent-kill, node-kill and
swact move the agent, split cuts the controllers apart. Each does the real thing (kill -9, a
power cut, crm_resource --move, ring0 down), times it, and checks the promise it must keep:
before a move a worker is locked and another alarmed, after it both still hold, no host was
seen offline and the alarm hook ran once; after a split one controller and one agent are left.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import TYPE_CHECKING

from mtce import cli_ctl
from mtce.lab_cluster import FENCE_DELAY_S
from mtce.lab_ha_cluster import GROUP, HaCluster
from mtce.lab_plan import OFFLINE_AFTER_S, ONLINE_PERIOD_S, Plan
from mtce.lab_proc import ip_cmd
from mtce.lab_view import View
from mtce.states import NET_KEYS

if TYPE_CHECKING:
    from mtce.lab_ha import Watch

ALARM_RAISE_S = 40.0            # the pxeboot loss is alarmed within this
ALARM_CLEAR_S = 30.0
HOSTS_OK_S = 60.0
TAKEOVER_S = 60.0               # a scenario's move must end within this (else it failed)
CONFIRM_S = 10.0                # then crm_mon must show the group there within this
FAILOVER_BUDGET_S = 15.0        # node-kill: the survivor has the address and the agent within
DETECT_WINDOW_S = OFFLINE_AFTER_S + 3 * ONLINE_PERIOD_S + 2   # no offline or lost meanwhile


class ScenarioFailed(Exception):
    """The scenario's promise did not hold."""


class HaScenarios:
    """The scenarios but `none`, played on a formed cluster: `play` returns the summary, or
    raises ScenarioFailed. `watch` is the lab's loop (it waits, and notes a host offline where
    it must not be), `event` writes one timed line, `measured` gathers the times the lab
    prints at the end."""

    def __init__(self, plan: Plan, view: View, cluster: HaCluster, watch: "Watch", event,
                 measured: list[str]):
        self.plan = plan
        self.view = view
        self.cluster = cluster
        self.watch = watch
        self.event = event
        self.measured = measured

    def play(self, scenario: str) -> str:
        if scenario == "split":
            return self.split()
        locked, alarmed = self.prepare_state()
        old = self.cluster.active
        other = next(n for n in self.cluster.nodes if n != old)
        everyone = [h.name for h in self.plan.clients]
        survivors = [n for n in everyone if n != old] if scenario == "node-kill" else everyone
        self.watch.must_stay_online = set(survivors)
        if scenario == "agent-kill":
            summary = self.agent_kill(old)
        elif scenario == "node-kill":
            summary = self.node_kill(old, other)
        else:
            summary = self.swact(old, other)
        self.check_after_move(locked, alarmed, survivors)
        if scenario == "swact":
            self.check_no_loss(alarmed)
        self.clear_alarm(alarmed)
        return summary

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
        self.watch.may_be_lost.add((alarmed, "pxeboot"))
        r = cli_ctl.request(self.view.socket, {"cmd": "lock", "host": locked}, timeout=5.0)
        if not r.get("ok"):
            raise ScenarioFailed(f"mtce lock {locked}: {r.get('error')}")
        self.watch.wait_for(f"{locked} locked", lambda: (self.view.hosts.get(locked) or {}).get(
            "administrative") == "locked", 10)
        self.event(f"operator: mtce lock {locked}")
        self.pxeboot_link(alarmed, False)
        self.event(f"{alarmed}: pxeboot link down")
        took = self.watch.wait_for(f"200.003 raised for {alarmed}",
                                   lambda: self.view.alarm_for(alarmed) is not None,
                                   ALARM_RAISE_S)
        self.event(f"alarm raised: 200.003 {alarmed} ({took:.1f} s after the link went down)")
        return locked, alarmed

    def check_after_move(self, locked: str, alarmed: str, survivors: list[str]) -> None:
        """One detection window on the new agent, then every promise of a move."""
        self.watch.hold(DETECT_WINDOW_S)
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
        if self.watch.offline_seen:
            problems.append("seen offline: " + ", ".join(self.watch.offline_seen))
        if problems:
            raise ScenarioFailed("; ".join(problems))
        self.event(f"after one detection window ({DETECT_WINDOW_S:g} s) on the new agent: every "
                   f"host online, {locked} locked, 200.003 {alarmed} active, raised once")

    def clear_alarm(self, alarmed: str) -> None:
        self.pxeboot_link(alarmed, True)
        self.event(f"{alarmed}: pxeboot link up")
        took = self.watch.wait_for(f"200.003 cleared for {alarmed}",
                                   lambda: self.view.alarm_for(alarmed) is None, ALARM_CLEAR_S)
        raises, clears = self.hook_count(alarmed, "raise"), self.hook_count(alarmed, "clear")
        if (raises, clears) != (1, 1):
            raise ScenarioFailed(f"alarm hook for {alarmed}: {raises} raises, {clears} clears "
                                 f"(expected one of each)")
        self.event(f"alarm cleared: 200.003 {alarmed}, {took:.1f} s after pxeboot came back ; "
                   f"the hook ran one raise and one clear")

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

    # -- the moves -------------------------------------------------------------------------------
    def took_over(self, name: str, ready=lambda: True) -> float:
        """Tick until `name` holds the floating address and its agent answers (what clients
        and operators see; timed to a tick, not to crm_mon's poll), then until crm_mon places
        the group there too. The seconds of the first wait."""
        c = self.cluster
        took = self.watch.wait_for(f"{name} has the address and the agent", lambda: ready() and
                                   c.agent_answers(name) and c.has_floating(name), TAKEOVER_S)
        self.watch.wait_for(f"crm_mon showing g_mtce on {name}",
                            lambda: c.state.group_on(GROUP) == name, CONFIRM_S)
        return took

    def agent_kill(self, where: str) -> str:
        node = self.cluster.nodes[where]
        pids = node.agent_pids()
        if not pids:
            raise ScenarioFailed(f"no agent process on {where}")
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        self.event(f"kill -9 the agent on {where} (pid {', '.join(map(str, pids))})")
        took = self.took_over(where, lambda: _new_pids(node.agent_pids(), pids))
        if self.cluster.active != where:
            raise ScenarioFailed(f"the agent moved to {self.cluster.active} instead of "
                                 f"restarting")
        text = f"the agent restarted in place on {where} {took:.1f} s after kill -9"
        self.measured.append(f"agent-kill: restarted in place in {took:.1f} s")
        self.event(text)
        return text

    def node_kill(self, old: str, other: str) -> str:
        self.cluster.nodes[old].power_off()
        self.event(f"power off {old} (every process of its namespaces killed)")
        start = time.monotonic()
        took = self.took_over(other)
        heard = self.watch.wait_for(
            "every surviving host on every network on the new agent",
            lambda: self.watch.hosts_ok(sorted(self.watch.must_stay_online - {
                h.name for h in self.plan.workers[:1]})), HOSTS_OK_S)
        total = time.monotonic() - start
        self.measured.append(f"node-kill: address and agent on {other} in {took:.1f} s "
                             f"(budget {FAILOVER_BUDGET_S:g} s) ; every host heard {total:.1f} s "
                             f"after the power-off")
        self.event(f"failover: {other} has {self.plan.floating} and the agent {took:.1f} s after "
                   f"the power-off ; every surviving host heard after {total:.1f} s "
                   f"(+{heard:.1f} s)")
        if old not in self.cluster.fenced:
            raise ScenarioFailed(f"{old} was not fenced before the takeover")
        if took > FAILOVER_BUDGET_S:
            raise ScenarioFailed(f"failover took {took:.1f} s, over the {FAILOVER_BUDGET_S:g} s "
                                 f"budget")
        return f"{other} took over in {took:.1f} s (budget {FAILOVER_BUDGET_S:g} s)"

    def swact(self, old: str, other: str) -> str:
        nodes = self.cluster.nodes
        r = nodes[old].run(["crm_resource", "--move", "--resource", "g_mtce", "--node", other],
                           timeout=30)
        if r.returncode != 0:
            raise ScenarioFailed(f"crm_resource --move: {r.stderr.strip()}")
        self.event(f"swact: crm_resource --move --resource g_mtce --node {other}")
        took = self.took_over(other)
        nodes[other].run(["crm_resource", "--clear", "--resource", "g_mtce"], timeout=30)
        self.measured.append(f"swact: address and agent on {other} in {took:.1f} s")
        self.event(f"swact: {other} has {self.plan.floating} and the agent {took:.1f} s after "
                   f"the move ; the move constraint cleared (stickiness keeps it there)")
        return f"planned move to {other} in {took:.1f} s"

    def split(self) -> str:
        c, w = self.cluster, self.watch
        everyone = [h.name for h in self.plan.clients]
        old = c.active
        w.counting, w.max_agents = True, 0
        w.must_stay_online = set(everyone) - set(c.nodes)
        ip_cmd("link", "set", "ring0", "down", ns=self.plan.host(old).ns)
        self.event(f"split: the controllers' corosync link (ring0) cut ; the agent runs on {old}")
        took = w.wait_for("one controller fenced", lambda: bool(c.fenced), TAKEOVER_S)
        w.hold(FENCE_DELAY_S + 5)
        alive = [n for n, node in c.nodes.items() if node.alive()]
        agents = {n: c.nodes[n].agent_pids() for n in alive}
        running = [n for n, pids in agents.items() if pids]
        problems = []
        if len(alive) != 1:
            problems.append(f"controllers still running: {alive}")
        if len(running) != 1 or len(agents.get(running[0] if running else "", [])) != 1:
            problems.append(f"agents running: {agents}")
        if w.max_agents > 1:
            problems.append(f"{w.max_agents} agents ran at the same time")
        if running and not c.agent_up_on(running[0]):
            problems.append(f"the agent on {running[0]} does not answer")
        if w.offline_seen:
            problems.append("seen offline: " + ", ".join(w.offline_seen))
        if problems:
            raise ScenarioFailed("; ".join(problems))
        w.counting = False
        winner = running[0]
        self.measured.append(f"split: {c.fenced[0]} fenced {took:.1f} s after the cut ; "
                             f"one agent, on {winner}")
        text = (f"{c.fenced[0]} fenced {took:.1f} s after the cut ; exactly one agent, on "
                f"{winner}{' (it never moved)' if winner == old else ''}")
        self.event(text)
        return text


def _new_pids(now: list[int], killed: list[int]) -> bool:
    """An agent runs again, and none of the killed ones."""
    return bool(now) and not set(now) & set(killed)
