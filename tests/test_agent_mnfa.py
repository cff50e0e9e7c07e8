"""Multi-node failure avoidance (issue 27, docs/contract.md §8 "Multi-node failure avoidance
(MNFA)", docs/protocol.md §5.8): hosts that were `ok` on one network and lose it within one
detection window of each other are one fault of the controller's side, not one alarm per host. In
process, on a HostTable of hosts driven by plain floats (tests/harness/host_monitor.TableSim): the
rule's edges.
"""

from __future__ import annotations

import json

import pytest

from mtce.agent_decisions import ClearAlarm, RaiseAlarm, Settings
from mtce.agent_host import host_json
from mtce.agent_pxeboot import pxeboot_alarm_after_s
from mtce.config import Inventory
from mtce.states import ALARM_MNFA, ALARM_MTCALIVE, Admin, Availability, Net, NetState

from harness.host_monitor import TableSim

WINDOW_S = 2.0
S = Settings(online_period_s=2.0, offline_period_s=0.05, offline_threshold=20,
             pxeboot_window_s=WINDOW_S)
ALARM_S = pxeboot_alarm_after_s(S)                 # 24 s of total pxeboot loss to 200.003


def table_sim(n=4, **settings):
    from dataclasses import replace
    return TableSim(n, replace(S, **settings))


def cut(s, names, nets=(Net.PXEBOOT,), since=None):
    """`names` send nothing on `nets` from `since` (now) on; None names: nobody is cut."""
    since = s.t if since is None else since
    names, nets = set(names), set(nets)
    s.alive = lambda name, net, t: not (name in names and net in nets and t >= since)


def heal(s):
    s.alive = lambda name, net, t: True


def raised(s, alarm_id, start=-1.0):
    return [a for a in s.actions(RaiseAlarm, start) if a.alarm_id == alarm_id]


def cleared(s, alarm_id, start=-1.0):
    return [a for a in s.actions(ClearAlarm, start) if a.alarm_id == alarm_id]


def held(s, name):
    return host_json(s.table.hosts[name], s.t)["mnfa"]


def test_the_threshold_exactly_met_is_one_fault_raised_and_cleared_without_200_003():
    """Two of four hosts (the default threshold) lose pxeboot at once, for longer than the
    alarm bound: one `MNFA ENTER (pxeboot) ; 2 hosts`, one mtce.mnfa alarm (the agent's, major,
    naming the network and the hosts), no 200.003; back, after 200.003's clear debounce:
    `MNFA EXIT (pxeboot)` and the alarm cleared."""
    s = table_sim()
    s.run(10)
    cut(s, ["worker-0", "worker-1"])
    s.run(ALARM_S + 20)
    assert s.texts("MNFA ENTER") == ["MNFA ENTER (pxeboot) ; 2 hosts"]
    [alarm] = raised(s, ALARM_MNFA)
    assert (alarm.host, alarm.severity, alarm.network) == ("controller-0", "major", "pxeboot")
    assert alarm.hosts == ("worker-0", "worker-1") and "pxeboot" in alarm.reason
    assert not raised(s, ALARM_MTCALIVE), "no per-host 200.003 for the hosts in it"
    assert held(s, "worker-0") == ["pxeboot"] and held(s, "worker-2") == []
    assert s.table.hosts["worker-0"].net_state(Net.PXEBOOT, s.t) is NetState.LOST
    heal(s)
    back = s.t
    s.run(8 * WINDOW_S)
    assert s.texts("MNFA EXIT") == ["MNFA EXIT (pxeboot)"]
    assert [c.network for c in cleared(s, ALARM_MNFA)] == ["pxeboot"]
    exit_at = next(t for t, a in s.log if getattr(a, "text", "") == "MNFA EXIT (pxeboot)")
    assert exit_at - back >= 6 * WINDOW_S, "the clear debounce of 200.003 (6 good windows)"
    s.run(ALARM_S)
    assert not raised(s, ALARM_MTCALIVE) and held(s, "worker-0") == []
    assert all(h.availability is Availability.ONLINE for h in s.table)


def test_one_host_below_the_threshold_still_raises_its_200_003():
    s = table_sim()
    s.run(10)
    cut(s, ["worker-2"])
    s.run(ALARM_S + 5)
    assert [a.host for a in raised(s, ALARM_MTCALIVE)] == ["worker-2"]
    assert not s.texts("MNFA") and not raised(s, ALARM_MNFA)


def test_threshold_0_is_off():
    s = table_sim(mnfa_threshold=0)
    s.run(10)
    cut(s, s.names)
    s.run(ALARM_S + 5)
    assert sorted(a.host for a in raised(s, ALARM_MTCALIVE)) == s.names
    assert not s.texts("MNFA")


def test_losses_spread_over_two_windows_are_separate_faults():
    """Two hosts whose losses are declared more than one detection window apart are two
    single failures: each raises its own 200.003, no MNFA."""
    s = table_sim()
    s.run(10)
    cut(s, ["worker-0"])
    s.run(3 * WINDOW_S)
    cut_both = {"worker-0": 10.0, "worker-1": s.t}
    s.alive = lambda name, net, t: not (net is Net.PXEBOOT and name in cut_both)
    s.run(ALARM_S + 10)
    assert sorted(a.host for a in raised(s, ALARM_MTCALIVE)) == ["worker-0", "worker-1"]
    assert not s.texts("MNFA")


def test_later_losers_join_and_a_host_failing_again_inside_stays_held():
    """Hosts that lose the network after MNFA began join it (the alarm names them); a host
    that recovers and fails again while MNFA lasts is held again: no 200.003 for any."""
    s = table_sim(n=5)
    s.run(10)
    cut(s, ["worker-0", "worker-1"])
    s.run(14)
    assert s.texts("MNFA ENTER") == ["MNFA ENTER (pxeboot) ; 2 hosts"]
    cut(s, ["worker-0", "worker-1", "worker-2"])
    s.run(20)
    assert held(s, "worker-2") == ["pxeboot"]
    assert raised(s, ALARM_MNFA)[-1].hosts == ("worker-0", "worker-1", "worker-2")
    cut(s, ["worker-1", "worker-2"])                 # worker-0 back ...
    s.run(8 * WINDOW_S)
    assert not s.texts("MNFA EXIT")
    cut(s, ["worker-0", "worker-1", "worker-2"])     # ... and lost again
    s.run(ALARM_S + 10)
    assert held(s, "worker-0") == ["pxeboot"] and not raised(s, ALARM_MTCALIVE)
    assert s.texts("MNFA ENTER") == ["MNFA ENTER (pxeboot) ; 2 hosts"], "one MNFA throughout"
    heal(s)
    s.run(8 * WINDOW_S)
    assert s.texts("MNFA EXIT") == ["MNFA EXIT (pxeboot)"]
    assert not raised(s, ALARM_MTCALIVE)


def test_the_timeout_ends_it_and_each_host_still_lost_is_handled_from_then():
    """mnfa_timeout: MNFA ends when it passes; each host still lost gets its 200.003 one alarm
    bound later, as if its loss began then, and not before."""
    s = table_sim(mnfa_timeout_s=30.0)
    s.run(10)
    cut(s, ["worker-0", "worker-1"])
    s.run(14)
    entered = next(t for t, a in s.log if getattr(a, "text", "").startswith("MNFA ENTER"))
    s.run(entered + 30 - s.t + 0.5)
    assert s.texts("MNFA EXIT") == ["MNFA EXIT (pxeboot) ; timeout after 30 secs ; 2 hosts "
                                    "still lost"]
    assert len(cleared(s, ALARM_MNFA)) == 1 and held(s, "worker-0") == []
    timed_out = s.t
    s.run(ALARM_S - 2 * WINDOW_S)
    assert not raised(s, ALARM_MTCALIVE), "not before one alarm bound from the timeout"
    s.run(4 * WINDOW_S)
    assert sorted(a.host for a in raised(s, ALARM_MTCALIVE, timed_out)) == ["worker-0",
                                                                           "worker-1"]
    assert s.texts("MNFA ENTER") == ["MNFA ENTER (pxeboot) ; 2 hosts"], "no new MNFA"


def test_a_locked_host_neither_counts_nor_stays_held():
    """A locked host's loss is its operator's doing: it does not count toward the threshold;
    locked while held, it leaves the set (locked hosts carry no 200.003) and MNFA ends when
    the others are back."""
    s = table_sim()
    s.run(10)
    s.record(s.table.hosts["worker-3"].set_admin(Admin.LOCKED, s.t))
    cut(s, ["worker-2", "worker-3"], nets=(Net.CLSTR,))
    s.run(20)
    assert s.table.hosts["worker-3"].net_state(Net.CLSTR) is NetState.LOST
    assert not s.texts("MNFA"), "one unlocked host is below the threshold"
    heal(s)
    s.run(20)
    cut(s, ["worker-0", "worker-1"])
    s.run(14)
    assert s.texts("MNFA ENTER") == ["MNFA ENTER (pxeboot) ; 2 hosts"]
    s.record(s.table.hosts["worker-1"].set_admin(Admin.LOCKED, s.t))
    assert held(s, "worker-1") == []
    cut(s, ["worker-1"])
    s.run(8 * WINDOW_S)
    assert s.texts("MNFA EXIT") == ["MNFA EXIT (pxeboot)"]
    assert not [a for a in raised(s, ALARM_MTCALIVE) if a.host in ("worker-0", "worker-1")]


def test_cluster_host_lost_together_is_mnfa_and_no_host_goes_offline():
    """The controller's cluster-host link: every host lost on cluster-host at once stays
    online on mgmt; one MNFA (cluster-host), held hosts marked, exit when they are back."""
    s = table_sim()
    s.run(10)
    cut(s, s.names, nets=(Net.CLSTR,))
    s.run(20)
    assert s.texts("MNFA ENTER") == ["MNFA ENTER (cluster-host) ; 2 hosts"], "at the threshold"
    assert {a.network for a in raised(s, ALARM_MNFA)} == {"cluster-host"}
    assert raised(s, ALARM_MNFA)[-1].hosts == tuple(s.names), "the others joined it"
    assert all(h.availability is Availability.ONLINE for h in s.table)
    assert held(s, "worker-3") == ["cluster-host"]
    heal(s)
    s.run(5)
    assert s.texts("MNFA EXIT") == ["MNFA EXIT (cluster-host)"]
    assert [c.network for c in cleared(s, ALARM_MNFA)] == ["cluster-host"]


def test_a_host_silent_on_every_network_still_goes_offline():
    s = table_sim()
    s.run(10)
    cut(s, ["worker-0", "worker-1"], nets=tuple(Net))
    s.run(20)
    assert [s.table.hosts[n].availability for n in ("worker-0", "worker-1")] == \
        [Availability.OFFLINE] * 2


def test_two_networks_at_once_are_two_alarms():
    s = table_sim()
    s.run(10)
    cut(s, s.names, nets=(Net.CLSTR, Net.PXEBOOT))
    s.run(ALARM_S + 5)
    assert s.texts("MNFA ENTER (") == ["MNFA ENTER (cluster-host) ; 2 hosts",
                                       "MNFA ENTER (pxeboot) ; 2 hosts"]
    assert held(s, "worker-0") == ["cluster-host", "pxeboot"]
    heal(s)
    s.run(8 * WINDOW_S)
    assert sorted(c.network for c in cleared(s, ALARM_MNFA)) == ["cluster-host", "pxeboot"]
    assert not raised(s, ALARM_MTCALIVE)


def test_a_host_removed_from_the_inventory_leaves_the_set():
    s = table_sim()
    s.run(10)
    cut(s, ["worker-0", "worker-1", "worker-2"])
    s.run(14)
    keep = {n: s.table.hosts[n].entry for n in s.names if n != "worker-2"}
    s.record(s.table.apply_inventory(Inventory("<test>", keep), s.t)[3])
    s.names.remove("worker-2")
    assert raised(s, ALARM_MNFA)[-1].hosts == ("worker-0", "worker-1")
    heal(s)
    s.run(8 * WINDOW_S)
    assert s.texts("MNFA EXIT") == ["MNFA EXIT (pxeboot)"]


def test_ok_and_lost_transitions_are_counted_per_host_and_network():
    """Flapping shows before it becomes an alarm: every ok -> lost and lost -> ok change of a
    host's network is counted (the metric mtce_host_network_transitions_total)."""
    s = table_sim()
    s.run(10)
    for _ in range(2):
        cut(s, ["worker-0"], nets=(Net.CLSTR,))
        s.run(8)
        heal(s)
        s.run(4)
    assert s.table.hosts["worker-0"].transitions(Net.CLSTR) == (2, 2)
    assert s.table.hosts["worker-1"].transitions(Net.CLSTR) == (0, 0)
    assert s.table.hosts["worker-0"].transitions(Net.MGMT) == (0, 0)


@pytest.mark.parametrize("threshold", [2, 3])
def test_the_count_in_the_window_is_what_decides(threshold):
    s = table_sim(n=5, mnfa_threshold=threshold)
    s.run(10)
    cut(s, ["worker-0", "worker-1"])
    s.run(ALARM_S + 5)
    assert bool(s.texts("MNFA ENTER")) is (threshold == 2)
    assert bool(raised(s, ALARM_MTCALIVE)) is (threshold == 3)



# -- the agent: alarm store, hook, restart, what an operator sees (tests/harness/sim.py) ------

AGENT_TIMERS = {"agent": {"offline_period": 50, "offline_threshold": 20},
                "timeouts": {"online_period": 2, "pxeboot_mtcalive_window": 2}}
PXEBOOT_PORT = 2102


def mnfa_alarms(s):
    return [a for a in s.request(cmd="alarms")["alarms"] if a["id"] == ALARM_MNFA]


def test_the_agent_raises_one_mnfa_alarm_keeps_it_over_a_restart_and_clears_it(sim):
    """The controller's pxeboot side fails for longer than the alarm bound (every pxeboot
    mtcAlive to the agent is lost), the agent restarts in the middle, the link comes back:
    one mtce.mnfa alarm as docs/contract.md §5 shows it, raised and cleared once through the
    hook, kept in state_dir over the restart (no 200.003 before or after it), the hosts marked
    in `hosts --json`, and the metrics say so."""
    s = sim(workers=3, timers=AGENT_TIMERS).start()
    s.run_until(s.all_ok, 30, what="every host ok")
    names = sorted(s.hosts())
    cut = {"on": True}
    s.net.drop = lambda d: cut["on"] and d.dst[1] == PXEBOOT_PORT
    s.run(ALARM_S + 6)
    [alarm] = mnfa_alarms(s)
    assert list(alarm) == ["id", "host", "severity", "network", "hosts", "reason", "raised_at"]
    assert (alarm["host"], alarm["severity"], alarm["network"]) == \
        ("controller-0", "major", "pxeboot")
    assert alarm["hosts"] == names
    assert [a["id"] for a in s.request(cmd="alarms")["alarms"]] == [ALARM_MNFA]
    assert all(h["mnfa"] == ["pxeboot"] for h in s.hosts().values())
    assert all(h["availability"] == "online" for h in s.hosts().values())
    text = s.agent.series(s.clock.now())
    assert 'mtce_mnfa_active{network="pxeboot"} 1' in text
    assert f'mtce_mnfa_hosts{{network="pxeboot"}} {len(names)}' in text
    assert 'mtce_mnfa_active{network="mgmt"} 0' in text
    assert s.agent_capture.count("MNFA ENTER (pxeboot) ; ") == 1

    s.restart_agent()
    s.run(ALARM_S + 6)
    assert [a["id"] for a in s.request(cmd="alarms")["alarms"]] == [ALARM_MNFA], \
        "held over the restart: no 200.003"
    assert mnfa_alarms(s)[0]["raised_at"] == alarm["raised_at"]
    assert s.agent_capture.count("MNFA (pxeboot) found at start ; ") == 1

    cut["on"] = False
    s.run(10 * 2.0)
    assert s.request(cmd="alarms")["alarms"] == []
    assert s.agent_capture.count("MNFA EXIT (pxeboot)") == 1
    assert all(h["mnfa"] == [] for h in s.hosts().values())
    assert 'mtce_mnfa_active{network="pxeboot"} 0' in s.agent.series(s.clock.now())
    s.run(1.0)
    hooks = [line for line in s.files.alarm_hook_log().splitlines() if line.strip()]
    assert [(json.loads(h)["id"], json.loads(h)["action"]) for h in hooks] == \
        [(ALARM_MNFA, "raise"), (ALARM_MNFA, "clear")]
    assert set(json.loads(hooks[0])["hosts"]) < set(names), "raised at the threshold"
    assert json.loads(hooks[1])["hosts"] == names, "the clear names every host it held"


def test_mtce_hosts_marks_the_held_networks_and_mtce_alarms_names_the_hosts():
    """What an operator reads: the host table marks each network a multi-node failure holds
    (with a legend), and the alarm list names the network and the hosts of mtce.mnfa."""
    from mtce.cli_ctl import fit_hosts, format_alarms, format_hosts
    s = table_sim()
    s.run(10)
    cut(s, ["worker-0", "worker-1"])
    s.run(16)
    hosts = s.table.to_json(s.t)
    table = format_hosts(hosts)
    row = {line.split()[0]: line for line in table.splitlines()}
    assert "lost^" in row["worker-0"] and "^" not in row["worker-2"]
    assert table.splitlines()[-1].startswith("^ held by a multi-node failure")
    assert "lost^" in fit_hosts(hosts, 60)
    alarm = {"id": ALARM_MNFA, "host": "controller-0", "severity": "major",
             "network": "pxeboot", "hosts": ["worker-0", "worker-1"],
             "reason": "why", "raised_at": "2026-12-07T18:00:00.000+00:00"}
    line = format_alarms([alarm])
    assert line.startswith("mtce.mnfa  major    controller-0 ") and \
        line.endswith("why ; pxeboot: 2 hosts (worker-0, worker-1)")
    many = format_alarms([dict(alarm, hosts=[f"worker-{i}" for i in range(40)])])
    assert many.endswith("40 hosts (worker-0, worker-1, worker-2, worker-3, worker-4, ...)")


def test_an_mnfa_taken_over_by_the_other_controller_is_cleared_under_the_name_it_was_raised():
    """A takeover: the agent on controller-1 finds controller-0's mtce.mnfa in the shared
    state_dir. It holds the hosts and, once they are back, clears that very alarm (the host it
    was raised on), not one of its own name that does not exist."""
    s = table_sim()
    s.run(10)
    s.table.mnfa.agent_host = "controller-1"
    out = s.table.restore_mnfa("pxeboot", ("worker-0", "worker-1"), 30.0, s.t,
                               raised_on="controller-0")
    assert [type(a).__name__ for a in out] == ["Log"], out
    assert held(s, "worker-0") == ["pxeboot"]
    s.run(9 * WINDOW_S)     # 200.003's clear debounce
    [clear] = cleared(s, ALARM_MNFA)
    assert (clear.host, clear.network) == ("controller-0", "pxeboot")


def test_a_reload_that_turns_mnfa_off_ends_the_one_under_way():
    """mnfa_threshold = 0 by SIGHUP while one lasts: it ends at once, as at its timeout (each
    host still lost handled on its own from then), rather than holding its hosts forever."""
    from dataclasses import replace
    s = table_sim()
    s.run(10)
    cut(s, ["worker-0", "worker-1"])
    s.run(16)
    assert s.texts("MNFA ENTER")
    s.record(s.table.apply_settings(replace(s.table.settings, mnfa_threshold=0), s.t))
    assert s.texts("MNFA EXIT") == ["MNFA EXIT (pxeboot) ; turned off (mnfa_threshold 0) ; 2 "
                                    "hosts still lost"]
    assert held(s, "worker-0") == [] and len(cleared(s, ALARM_MNFA)) == 1
    s.run(ALARM_S + 2 * WINDOW_S)
    assert sorted(a.host for a in raised(s, ALARM_MTCALIVE)) == ["worker-0", "worker-1"]


def test_a_held_host_that_goes_offline_leaves_the_set_and_the_others_end_it():
    """The link comes back but one host of the set died meanwhile: offline, it is handled as
    any offline host; the MNFA ends when the others are back instead of lasting forever."""
    s = table_sim()
    s.run(10)
    cut(s, ["worker-0", "worker-1", "worker-2"])
    s.run(16)
    assert held(s, "worker-2") == ["pxeboot"]
    cut(s, ["worker-2"], nets=tuple(Net))
    s.run(8 * WINDOW_S)
    assert s.table.hosts["worker-2"].availability is Availability.OFFLINE
    assert held(s, "worker-2") == []
    assert s.texts("MNFA EXIT") == ["MNFA EXIT (pxeboot)"]


# -- the attack's cases (issue 27, a helper session with real processes) --------------------

def test_two_hosts_with_their_own_200_003_are_no_mnfa_after_a_restart():
    """Two unrelated hosts each raised their 200.003; the agent restarts (their monitors resume
    in the loss state, docs/protocol.md §5.5) and declares both losses in one tick: they were
    not ok, so no multi-node failure is entered on top of their alarms."""
    s = table_sim()
    s.run(10)
    for name in ("worker-1", "worker-2"):
        s.record(s.table.hosts[name].restore_alarm(s.t))
    cut(s, ["worker-1", "worker-2"])
    s.run(ALARM_S)
    assert not s.texts("MNFA")


def test_hosts_never_heard_on_pxeboot_since_the_agent_started_do_not_count():
    """After a restart, hosts whose pxeboot is already broken declare their losses together:
    they were never `ok` here, so that is no multi-node failure."""
    s = table_sim(n=4)
    for name in ("worker-0", "worker-1"):
        s.table.hosts[name].nets[Net.PXEBOOT].reset()     # as an agent that just started
    cut(s, ["worker-0", "worker-1"], since=s.t - 1)
    s.run(ALARM_S + 5)
    assert not s.texts("MNFA")
    assert sorted(a.host for a in raised(s, ALARM_MTCALIVE)) == ["worker-0", "worker-1"]


def test_a_held_host_locked_and_unlocked_rejoins_without_a_200_003():
    """The operator locks and unlocks hosts held by an MNFA (what one does facing alarms): the
    monitor kept its loss count over the lock; at its next declared loss the host joins the
    MNFA again before any 200.003 is decided."""
    s = table_sim()
    s.run(10)
    cut(s, s.names)
    s.run(ALARM_S + 4)
    assert s.texts("MNFA ENTER") and not raised(s, ALARM_MTCALIVE)
    for name in ("worker-0", "worker-1"):
        s.record(s.table.hosts[name].set_admin(Admin.LOCKED, s.t))
    s.run(3)
    for name in ("worker-0", "worker-1"):
        s.record(s.table.hosts[name].set_admin(Admin.UNLOCKED, s.t))
    s.run(ALARM_S)
    assert not raised(s, ALARM_MTCALIVE)
    assert held(s, "worker-0") == ["pxeboot"]


def test_a_restored_mnfa_holds_only_hosts_it_can_see_come_back():
    """A restored mtce.mnfa naming a host now locked (the inventory changed while the agent was
    down) or without a pxeboot address: those cannot come back on pxeboot, so they are not held
    and the MNFA ends when the others are back."""
    s = table_sim()
    s.run(10)
    s.record(s.table.hosts["worker-3"].set_admin(Admin.LOCKED, s.t))
    s.record(s.table.set_pxeboot_ip("worker-2", "", s.t))
    out = s.table.restore_mnfa("pxeboot", ("worker-0", "worker-2", "worker-3"), 5.0, s.t)
    s.record(out)
    assert held(s, "worker-0") == ["pxeboot"] and held(s, "worker-3") == []
    assert held(s, "worker-2") == []
    s.run(9 * WINDOW_S)     # 200.003's clear debounce
    assert s.texts("MNFA EXIT") == ["MNFA EXIT (pxeboot)"]


def test_one_host_losing_twice_in_a_window_is_one_host():
    """A host that loses a network, is back and loses it again within one window is still one
    host: with the default threshold 2 that is no multi-node failure (the attack counted it
    twice: `MNFA ENTER (mgmt) ; 1 hosts`)."""
    from mtce.agent_mnfa import Mnfa
    s = table_sim()
    m, w1, out = Mnfa(S, "controller-0"), s.table.hosts["worker-1"], []
    w1.nets[Net.MGMT].received = True
    m.lost(w1, Net.MGMT, 100.0, out)
    m.back(w1, Net.MGMT, 100.5, out)
    m.lost(w1, Net.MGMT, 101.0, out)
    assert not [a for a in out if "MNFA" in getattr(a, "text", "")]


def test_hosts_joining_are_told_once_a_minute_at_most():
    """Hosts that join an MNFA are not one line each (2,000 of them would be a storm): one
    "change" line per network, which the daemon throttles to one a minute."""
    s = table_sim(n=6)
    s.run(10)
    cut(s, s.names)
    s.run(ALARM_S)
    joins = [a for _, a in s.log if getattr(a, "text", "").startswith("MNFA (pxeboot) ; ")]
    assert joins and all(a.kind == "change" and a.key == ("mnfa", "pxeboot") for a in joins)
    assert joins[-1].text == "MNFA (pxeboot) ; 6 hosts"


# -- the second attack's cases --------------------------------------------------------------

def active_alarms(s, alarm_id=ALARM_MTCALIVE):
    """Hosts whose `alarm_id` is active at the end of the recorded actions."""
    active = set()
    for _, a in s.log:
        if isinstance(a, RaiseAlarm) and a.alarm_id == alarm_id:
            active.add(a.host)
        elif isinstance(a, ClearAlarm) and a.alarm_id == alarm_id:
            active.discard(a.host)
    return active


def test_hosts_unlocked_together_after_leaving_an_mnfa_are_one_fault_not_a_200_003_each():
    """Both held hosts locked (the MNFA ends: none left), then unlocked while the link is still
    down: their monitors kept their loss counts, so the first loss declared is at alarm level
    before the second enters the MNFA with it. That 200.003 is this fault's: cleared when the
    host is held."""
    s = table_sim(n=2)
    s.run(10)
    cut(s, s.names)
    s.run(ALARM_S)
    assert s.texts("MNFA ENTER")
    for name in s.names:
        s.record(s.table.hosts[name].set_admin(Admin.LOCKED, s.t))
    s.run(3)
    for name in s.names:
        s.record(s.table.hosts[name].set_admin(Admin.UNLOCKED, s.t))
    s.run(ALARM_S)
    assert active_alarms(s) == set(), "no host in an MNFA carries its own 200.003"
    assert active_alarms(s, ALARM_MNFA) == {"controller-0"}


def test_a_duplicate_mnfa_alarm_for_one_network_is_cleared_at_start():
    s = table_sim()
    s.run(10)
    s.record(s.table.restore_mnfa("pxeboot", ("worker-0", "worker-1"), 5.0, s.t,
                                  "controller-1"))
    out = s.table.restore_mnfa("pxeboot", ("worker-0", "worker-2"), 5.0, s.t, "controller-0")
    assert [(a.host, a.network) for a in out if isinstance(a, ClearAlarm)] == \
        [("controller-0", "pxeboot")]
    s.record(out)
    s.run(9 * WINDOW_S)     # 200.003's clear debounce
    assert [(c.host, c.network) for c in cleared(s, ALARM_MNFA)] == \
        [("controller-0", "pxeboot"), ("controller-1", "pxeboot")]


def test_an_agent_restarted_during_the_fault_still_sees_one_fault(sim):
    """The controller's pxeboot side fails; the agent restarts before it entered an MNFA (a
    takeover by a controller whose own link is the failed one is the same): the hosts its
    predecessor had online were ok, so their losses are one MNFA, not a 200.003 each."""
    s = sim(workers=3, timers=AGENT_TIMERS).start()
    s.run_until(s.all_ok, 30, what="every host ok")
    s.run(2)
    s.net.drop = lambda d: d.dst[1] == PXEBOOT_PORT
    s.run(4)
    s.restart_agent()
    s.run(ALARM_S + 10)
    assert [a["id"] for a in s.request(cmd="alarms")["alarms"]] == [ALARM_MNFA]


def test_after_a_restart_a_held_host_locked_and_unlocked_joins_again(sim):
    """The MNFA restored from state_dir holds hosts the new agent has not heard on pxeboot;
    one locked and unlocked meanwhile (its monitor's loss count kept) joins it again."""
    s = sim(workers=3, timers=AGENT_TIMERS).start()
    s.run_until(s.all_ok, 30, what="every host ok")
    s.run(2)
    s.net.drop = lambda d: d.dst[1] == PXEBOOT_PORT
    s.run(ALARM_S)
    assert mnfa_alarms(s)
    s.restart_agent()
    s.run(2)
    assert s.request(cmd="lock", host="worker-1")["ok"]
    s.run(3)
    assert s.request(cmd="unlock", host="worker-1")["ok"]
    s.run(ALARM_S + 6)
    assert [a["id"] for a in s.request(cmd="alarms")["alarms"]] == [ALARM_MNFA]
    assert "worker-1" in mnfa_alarms(s)[0]["hosts"]


# -- the third attack's cases ---------------------------------------------------------------

def test_a_restored_mnfa_ends_after_the_clear_debounce_not_one_window():
    """The agent before this one held the hosts; this one restores the MNFA while the link is
    already back: it ends with 200.003's clear debounce (7 good windows), not at the first."""
    s = table_sim()
    s.run(10)
    s.record(s.table.restore_mnfa("pxeboot", ("worker-0", "worker-1"), 5.0, s.t))
    s.run(3 * WINDOW_S)
    assert not s.texts("MNFA EXIT")
    s.run(6 * WINDOW_S)
    assert s.texts("MNFA EXIT") == ["MNFA EXIT (pxeboot)"]


def test_a_host_with_its_own_restored_200_003_is_not_held_by_a_restored_mnfa():
    """Both found at start (hand-edited, or a crash between two writes): the host keeps its own
    alarm and is not held (a host in an MNFA carries no 200.003)."""
    s = table_sim()
    s.run(10)
    s.record(s.table.hosts["worker-0"].restore_alarm(s.t))
    s.record(s.table.restore_mnfa("pxeboot", ("worker-0", "worker-1"), 5.0, s.t))
    assert held(s, "worker-0") == [] and held(s, "worker-1") == ["pxeboot"]


def test_the_timeout_decision_survives_a_restart(sim):
    """mnfa_timeout passed: each host still lost is handled on its own. An agent restarted
    then must not start a new MNFA with a new timeout for them (the attack: restarts put the
    per-host alarms off for ever): each gets its 200.003."""
    timers = {k: dict(v) for k, v in AGENT_TIMERS.items()}
    timers["timeouts"]["mnfa_timeout"] = 20
    s = sim(workers=2, timers=timers).start()
    s.run_until(s.all_ok, 30, what="every host ok")
    s.run(2)
    s.net.drop = lambda d: d.dst[1] == PXEBOOT_PORT
    s.run_until(lambda: s.agent_capture.count("MNFA EXIT (pxeboot) ; timeout") == 1, 60,
                what="the MNFA's timeout")
    s.run(2)
    s.restart_agent()
    s.run(ALARM_S + 10)
    assert s.agent_capture.count("MNFA ENTER") == 1, "no second MNFA"
    ids = [a["id"] for a in s.request(cmd="alarms")["alarms"]]
    assert ids == ["200.003"] * len(s.hosts()), ids
