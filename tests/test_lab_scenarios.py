"""The promises `mtce lab --scenario controller-link` checks (mtce/lab_scenarios.py, issue 27):
played against a View whose hosts, alarms and agent log the test writes, so that each broken
promise is seen to fail the scenario. The real run is tools/ci_lab.sh's (loopback and --netns).
"""

from __future__ import annotations

import os

import pytest

from mtce.lab_plan import Plan
from mtce.lab_scenarios import ControllerLink
from mtce.lab_view import View

HOLD_S = ControllerLink.HOLD_S


def host(name, availability="online"):
    return {"hostname": name, "availability": availability,
            "networks": {n: {"state": "ok", "last_seq": 9, "missed": 0, "last_seen_s": 0.5}
                         for n in ("mgmt", "cluster-host", "pxeboot")}}


def mnfa(net, hosts=("controller-0", "worker-0", "worker-1")):
    return {"id": "mtce.mnfa", "host": "controller-0", "severity": "major", "network": net,
            "hosts": list(hosts), "reason": "r", "raised_at": "2026-12-07T18:00:00.000+00:00"}


class FakeLab:
    def __init__(self, plan):
        self.plan, self.events = plan, []

    def event(self, text):
        self.events.append(text)


@pytest.fixture
def played(tmp_path):
    """The scenario and its view, every host ok and steady; `run(phase_hooks)` plays both
    phases as a good agent would, `hooks[(net, stage)](view)` breaking something on the way."""
    plan = Plan(str(tmp_path / "lab"), 3)
    plan.write()
    os.makedirs(os.path.dirname(plan.agent_log), exist_ok=True)
    open(plan.agent_log, "w").close()
    view = View(plan)
    view.hosts = {n: host(n) for n in view.expected}
    view.all_ok_since = 0.0
    lab = FakeLab(plan)
    scenario = ControllerLink(lab)

    def log(text):
        with open(plan.agent_log, "a", encoding="utf-8") as f:
            f.write(f"2026-12-07T18:00:00.000 controller-0 mtcAgent: agent_mnfa.py(1) {text}\n")

    def run(hooks=None, enter=1):
        hooks = hooks or {}
        now = 10.0
        for net, fit in (("pxeboot", "agent_pxeboot_rxsock"),
                         ("cluster-host", "agent_clstr_rxsock")):
            if scenario.done or scenario.failed:
                break
            scenario.step(now, view)                       # steady: the link goes down
            path = os.path.join(plan.controller.run_dir, "fit", fit)
            assert scenario.state == "down" and os.path.exists(path), scenario.state
            for _ in range(enter):
                log(f"MNFA ENTER ({net}) ; 3 hosts")
            view.alarms = view.alarms + [mnfa(net)]
            hooks.get((net, "down"), lambda v: None)(view)
            now += HOLD_S / 2
            scenario.step(now, view)
            now += HOLD_S / 2
            scenario.step(now, view)                       # held long enough: back up
            if scenario.failed:
                break
            assert scenario.state == "recovering" and not os.path.exists(path)
            view.alarms = [a for a in view.alarms if a.get("network") != net]
            log(f"MNFA EXIT ({net})")
            hooks.get((net, "up"), lambda v: None)(view)
            now += 5
            scenario.step(now, view)
            now += 5
        return scenario

    return run, view, lab


def test_a_good_agent_keeps_every_promise(played):
    run, _, lab = played
    s = run()
    assert s.done and not s.failed, s.failed
    assert s.summary == ("pxeboot: one mtce.mnfa (3 hosts), cleared 5.0 s after the link came "
                         "back ; cluster-host: one mtce.mnfa (3 hosts), cleared 5.0 s after the "
                         "link came back ; no 200.003, no host offline")
    assert any("agent's pxeboot receive socket closed" in e for e in lab.events)


@pytest.mark.parametrize("hooks, complaint", [
    ({("pxeboot", "down"): lambda v: v.alarms.append(
        {"id": "200.003", "host": "worker-0", "severity": "minor", "reason": "r",
         "raised_at": "x"})}, "200.003 raised for worker-0"),
    ({("cluster-host", "down"): lambda v: v.hosts["worker-1"].update(availability="offline")},
     "worker-1 went offline"),
    ({("pxeboot", "down"): lambda v: v.alarms.clear()}, "no mtce.mnfa for pxeboot"),
    ({("cluster-host", "up"): lambda v: v.alarms.append(mnfa("cluster-host"))},
     None),
])
def test_an_agent_that_breaks_a_promise_fails_the_scenario(played, hooks, complaint):
    run, _, _ = played
    s = run(hooks)
    assert not s.done
    if complaint is None:       # the alarm never clears: still waiting, then out of time
        assert s.state == "recovering"
    else:
        assert complaint in s.failed, s.failed


def test_two_mnfa_enter_lines_for_one_fault_fail_it(played):
    run, _, _ = played
    s = run(enter=2)
    assert "pxeboot: 2 MNFA ENTER and 1 MNFA EXIT lines (expected one each)" in s.failed
