"""mtce.agent_pxeboot through a HostMonitor: the pxeboot mtcAlive monitor's windows, misses,
loss, alarm 200.003 and its clear, the feature gate, the transition table.

Time is a plain float `now` (FakeClock style): minutes of protocol time run in milliseconds.
"""

from __future__ import annotations

import pytest

from mtce import agent_pxeboot
from mtce import agent_host as H
from mtce.agent_decisions import ClearAlarm, RaiseAlarm, Send, Settings
from mtce.agent_pxeboot import PxeStage, TransitionError
from mtce.decisions import Log
from mtce.states import ALARM_MTCALIVE, Admin, Availability, Cmd, Net, NetState

from harness.host_monitor import (
    FEATURES, LOCKED, PXE_IP, T0, Sim, alarmed, make, monitored, online, sends, texts,
)


# -- the pxeboot monitor --------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_the_one_step_quiet_window_is_what_the_stages_would_do(seed):
    """docs/protocol.md §5.5: WAIT -> CHECK -> MONITOR -> WAIT for a good window. The agent takes a
    quiet good window (no miss, loss, alarm or debug) in one step (issue 13: 200 of them a
    second at 2,000 hosts); under random pxeboot arrivals, gaps, client restarts and
    losses, a host that takes it and one that always goes through the stages say and do
    exactly the same. So does one whose audit always takes the general path (issue 25: the
    steady host's shortcut), through locks, unlocks and mgmt silences long enough to go
    offline."""
    import random
    rng = random.Random(seed)
    fast, slow = monitored(T0), monitored(T0)
    slow.pxe._good_quiet_window = lambda now, pxe: False
    slow.audit = slow.audit_all
    silent = range(rng.randint(100, 400), rng.randint(420, 500))
    taken = []
    quiet = fast.pxe._good_quiet_window
    fast.pxe._good_quiet_window = lambda now, pxe: taken.append(quiet(now, pxe)) or taken[-1]
    seq = 0
    for step in range(1, 600):
        now = T0 + step
        if rng.random() < 0.01:
            admin = rng.choice(["locked", "unlocked"])
            out = [list(h.set_admin(admin, now)) for h in (fast, slow)]
            assert out[0] == out[1]
        if step % 5 == 0 and step not in silent:   # each client's 5 s tick
            for h in (fast, slow):
                flags = LOCKED if h.admin is Admin.LOCKED else 0
                for net in (Net.MGMT, Net.CLSTR):
                    h.on_mtcalive(net, step // 5 + 1, flags, 12, now)
            roll = rng.random()
            if roll < 0.75 or step < 50:
                seq += 1                             # in order
            elif roll < 0.85:
                seq += rng.randint(2, 5)             # a gap
            elif roll < 0.9:
                seq = rng.randint(1, 2)              # the client restarted
            else:
                seq = None                           # lost on the way
            if seq is not None:
                out = [h.on_mtcalive(Net.PXEBOOT, seq, 0, 12, now) for h in (fast, slow)]
                assert out[0] == out[1]
            seq = seq or 0
        got = [list(h.audit(now)) for h in (fast, slow)]
        assert got[0] == got[1], (step, got)
        got = [list(h.audit(now + 0.5)) for h in (fast, slow)]
        assert got[0] == got[1], (step, got)
        assert fast.availability is slow.availability
        assert [(h.pxe.stage, h.pxe.miss, h.pxe.loss, h.pxe.alarm, h.pxe.timer, h.next_at)
                for h in (fast, slow)][0] == \
            [(h.pxe.stage, h.pxe.miss, h.pxe.loss, h.pxe.alarm, h.pxe.timer, h.next_at)
             for h in (fast, slow)][1]
        assert fast.next_at == fast.next_deadline(), "the audit leaves next_deadline()"
    assert True in taken and False in taken, "both ways were taken"


def test_pxeboot_timeline_loss_alarm_and_clear():
    S = T0
    host = monitored(S)
    sim = Sim(host, S)
    sim.record(host.audit(S))                            # START -> SEND -> MONITOR -> WAIT
    assert host.pxe.stage is PxeStage.WAIT
    resume = S + 151
    sim.run(S + 240, alive=lambda net, t: net is not Net.PXEBOOT or t >= resume)

    reqs = sim.at(Send, Net.PXEBOOT, Cmd.REQ_MTCALIVE)
    assert reqs == [S + 10 * k for k in range(16)]      # every window during loss, from S
    assert sim.at(RaiseAlarm) == [S + 120]
    assert sim.at(ClearAlarm) == [S + 220]             # 7 good windows after S + 150
    raise_ = [a for _, a in sim.log if isinstance(a, RaiseAlarm)][0]
    assert raise_ == RaiseAlarm("worker-0", "200.003", "minor",
                                "worker-0 pxeboot network communication failure")
    logs = sim.texts()
    want_start = [
        (S + 10, "worker-0 pxeboot mtcAlive miss count 1 ; loss count 0 ; sending request"),
        (S + 20, "worker-0 pxeboot mtcAlive miss count 2 ; loss count 0 ; sending request"),
        (S + 30, "worker-0 pxeboot mtcAlive miss count 3 ; loss count 0 ; sending request"),
        (S + 40, "worker-0 pxeboot mtcAlive miss count 4 ; loss count 0 ; sending request"),
        (S + 50, "worker-0 pxeboot mtcAlive miss count 5 ; loss count 0 ; sending request"),
        (S + 60, "worker-0 pxeboot mtcAlive not seen yet ; sending request"),
        (S + 60, "worker-0 pxeboot mtcAlive lost ; 1 more loss before alarm assertion"),
        (S + 70, "worker-0 pxeboot mtcAlive miss count 1 ; loss count 1 ; sending request"),
    ]
    assert logs[:len(want_start)] == want_start
    assert [x for t, x in logs if t == S + 120] == [
        "worker-0 pxeboot mtcAlive alarm assert (2)",      # "not seen yet" throttled (2nd)
        "worker-0 minor Pxeboot mtcAlive messaging failure",
        "worker-0 setting minor 'mtcAlive' failure alarm (200.003 )"]
    assert sum(1 for _, x in logs if "not seen yet" in x) == 1
    assert [x for t, x in logs if S + 121 <= t <= S + 150] == []   # alarm held, quiet
    recovery = [(t, x) for t, x in logs if t > S + 150 and "state change" not in x]
    assert recovery == [
        (S + 160 + 10 * i, f"worker-0 pxeboot mtcAlive miss count {6 - i} ; decrement ; "
                           f"alarm clear when 0 ; recovery") for i in range(6)] + [
        (S + 220, "worker-0 minor Pxeboot mtcAlive messaging failure"),
        (S + 220, "worker-0 clearing 'mtcAlive' alarm (200.003)")]
    assert not [t for t in reqs if S + 150 < t]        # no request while messages flow
    assert (host.pxe.miss, host.pxe.loss, host.pxe.alarm) == (0, 0, False)
    assert host.net_state(Net.PXEBOOT) is NetState.OK


def test_pxeboot_states_follow_the_monitor():
    host = monitored()
    sim = Sim(host, T0)
    sim.record(host.audit(T0))
    states = {}
    stop = T0 + 1
    sim.run(T0 + 1)
    sim.deliver(Net.PXEBOOT)                           # seen once, then silence
    for t in (T0 + 69, T0 + 70, T0 + 130):
        sim.run(t, alive=lambda net, t: net is not Net.PXEBOOT or t < stop)
        states[t - T0] = host.net_state(Net.PXEBOOT)
    assert states == {69: NetState.OK, 70: NetState.LOST, 130: NetState.LOST}
    lost = [x for _, x in sim.texts() if "lost ; missed" in x]
    # The first loss after a good window (seq 1 seen at T0 + 1): 6 more misses to T0 + 70.
    assert lost == ["worker-0 pxeboot mtcAlive lost ; missed: 6 ; last: count:1 seq: 1 ; "
                    "sending request"]


def test_loss_one_then_recovery_resets():
    host = monitored()
    sim = Sim(host, T0)
    sim.record(host.audit(T0))
    sim.run(T0 + 60, alive=lambda net, t: net is not Net.PXEBOOT)
    assert (host.pxe.loss, host.pxe.miss) == (1, 0)
    assert host.net_state(Net.PXEBOOT) is NetState.LOST
    sim.run(T0 + 70)                                   # pxeboot back: good window, miss == 0
    assert (host.pxe.loss, host.pxe.miss, host.pxe.alarm) == (0, 0, False)
    assert sim.at(ClearAlarm) == [] and sim.at(RaiseAlarm) == []
    assert host.net_state(Net.PXEBOOT) is NetState.OK


def test_loss_one_then_a_miss_then_recovery_restarts_the_debounce():
    host = monitored()
    sim = Sim(host, T0)
    sim.record(host.audit(T0))
    sim.run(T0 + 70, alive=lambda net, t: net is not Net.PXEBOOT)
    assert (host.pxe.loss, host.pxe.miss) == (1, 1)
    sim.run(T0 + 80)
    assert sim.texts(T0 + 80)[-1] == (T0 + 80, "worker-0 pxeboot mtcAlive miss count 6 ; "
                                               "decrement ; recovery")
    assert (host.pxe.loss, host.pxe.miss) == (0, 5)
    assert host.net_state(Net.PXEBOOT) is NetState.OK


def test_client_restart_during_monitoring_counts_one_miss():
    host = monitored()
    sim = Sim(host, T0)
    sim.record(host.audit(T0))
    sim.run(T0 + 30)
    assert host.pxe.miss == 0
    sim.next[Net.PXEBOOT] = 1e18                       # the client restarts at T0 + 32
    sim.run(T0 + 32)
    sim.deliver(Net.PXEBOOT, 1)
    sim.deliver(Net.PXEBOOT, 2)
    last = sim.seq[Net.PXEBOOT]
    sim.run(T0 + 40)
    assert host.pxe.miss == 1
    assert sim.texts(T0 + 40)[-1] == (T0 + 40, "worker-0 pxeboot mtcAlive miss count 1 ; loss "
                                               "count 0 ; out-of-sequence ; this:2  last:6")
    assert sim.at(Send, Net.PXEBOOT)[-1] == T0 + 40
    assert last == 2 and host.nets[Net.PXEBOOT].out_of_sequence == 0
    sim.next[Net.PXEBOOT] = T0 + 42
    sim.run(T0 + 50)
    assert host.pxe.miss == 0 and host.pxe.loss == 0


def test_pxeboot_monitor_start_zeroes_the_pxeboot_sequence():
    """Issue 11 item 8, docs/protocol.md §6 (when `last` is zeroed): every pxeboot monitor START
    zeroes the pxeboot `last`, so what comes next is not counted or logged as missed (an agent
    restart, an unlock, a re-learned address all pass through START)."""
    host = monitored()
    sim = Sim(host, T0)
    sim.record(host.audit(T0))
    sim.run(T0 + 20)
    pxe = host.nets[Net.PXEBOOT]
    assert pxe.last_seq > 0 and pxe.missed == 0
    sim.record(host.set_admin(Admin.LOCKED, sim.t))
    sim.record(host.set_admin(Admin.UNLOCKED, sim.t))          # unlock: the monitor STARTs
    sim.record(host.audit(sim.t))
    assert host.pxe.stage is PxeStage.WAIT and pxe.last_seq == 0
    before = len(sim.log)
    sim.deliver(Net.PXEBOOT, sim.seq[Net.PXEBOOT] + 5)        # the client went on meanwhile
    assert all("missed" not in a.text for _, a in sim.log[before:] if isinstance(a, Log))
    assert (pxe.missed, pxe.out_of_sequence) == (0, 0)
    assert pxe.last_seq == sim.seq[Net.PXEBOOT]


def test_locked_host_clears_alarm_and_holds_the_monitor():
    host, sim = alarmed()
    out = host.set_admin(Admin.LOCKED, sim.t)
    assert ClearAlarm("worker-0", ALARM_MTCALIVE) in out
    assert texts(out)[0] == "worker-0 administrative state unlocked -> locked (inventory)"
    assert host.pxe.stage is PxeStage.START and not host.pxe.alarm
    sim.record(out)
    mark = len(sim.log)
    sim.run(sim.t + 300, alive=lambda net, t: net is not Net.PXEBOOT)
    later = sim.log[mark:]
    assert not [a for _, a in later if isinstance(a, (Send, RaiseAlarm, ClearAlarm))
                and getattr(a, "net", Net.PXEBOOT) is Net.PXEBOOT]
    assert host.pxe.stage is PxeStage.START
    out = host.set_admin("unlocked", sim.t)
    out += host.audit(sim.t)
    assert sends(out, Net.PXEBOOT, Cmd.REQ_MTCALIVE)
    assert host.pxe.stage is PxeStage.WAIT


def test_offline_host_holds_the_monitor_and_keeps_the_alarm():
    host, sim = alarmed()
    sim.run(sim.t + 30, alive=lambda net, t: False)
    assert host.availability is Availability.OFFLINE
    assert host.pxe.alarm and host.pxe.stage is PxeStage.START
    assert (host.pxe.miss, host.pxe.loss) == (6, 2)
    assert sim.at(ClearAlarm) == []


def test_restore_alarm_then_seven_good_windows_clear_it():
    host = monitored()
    out = host.restore_alarm(T0)
    assert texts(out) == ["worker-0 found mtcAlive alarm ; loaded minor"]
    assert (host.pxe.alarm, host.pxe.loss, host.pxe.miss) == (True, 2, 6)
    assert host.net_state(Net.PXEBOOT) is NetState.LOST
    sim = Sim(host, T0)
    sim.record(host.audit(T0))
    sim.run(T0 + 70)
    assert sim.at(ClearAlarm) == [T0 + 70]


def test_restore_alarm_on_locked_or_simplex_clears_at_once():
    host = make(admin="locked")
    out = host.restore_alarm(T0)
    assert out[-1] == ClearAlarm("worker-0", ALARM_MTCALIVE) and not host.pxe.alarm
    host = make(settings=Settings(simplex=True, pxeboot_provisioned=False))
    assert host.restore_alarm(T0)[-1] == ClearAlarm("worker-0", ALARM_MTCALIVE)


def test_ready_without_features_leaves_pxeboot_unprovisioned():
    host = make()
    online(host, nets=(Net.MGMT, Net.CLSTR))
    out = host.on_ready(None, T0)
    assert texts(out) == ["worker-0 mtcClient ready"] and sends(out) == []
    assert host.net_state(Net.PXEBOOT) is NetState.UNPROVISIONED
    assert H.host_json(host, T0)["networks"]["pxeboot"]["state"] == "unprovisioned"
    for t in range(1, 200, 5):
        host.on_mtcalive(Net.MGMT, 1 + t, 0, 12, T0 + t)
        host.on_mtcalive(Net.CLSTR, 1 + t, 0, 12, T0 + t)
        assert sends(host.audit(T0 + t)) == []
    assert not host.pxe.alarm and host.pxe.stage is PxeStage.START


def test_ready_with_features_sends_a_request_every_time():
    host = make()
    online(host)
    out = host.on_ready(FEATURES, T0)
    assert texts(out) == ["worker-0 mtcClient ready ; with pxeboot mtcAlive support"]
    assert sends(out) == [Send("worker-0", Net.PXEBOOT, Cmd.REQ_MTCALIVE)]
    host.audit(T0)
    for t in (60, 120):
        out = host.on_ready(FEATURES, T0 + t)
        assert texts(out) == [] and sends(out) == [Send("worker-0", Net.PXEBOOT,
                                                        Cmd.REQ_MTCALIVE)]
    assert host.pxe.stage is PxeStage.WAIT                # an already supporting client: no restart


def test_simplex_runs_no_monitor():
    host = make(settings=Settings(simplex=True, pxeboot_provisioned=False))
    online(host)
    assert sends(host.on_ready(FEATURES, T0)) == []
    sim = Sim(host, T0)
    sim.run(T0 + 200, alive=lambda net, t: net is not Net.PXEBOOT)
    assert sim.at(Send) == [] and sim.at(RaiseAlarm) == []
    assert host.net_state(Net.PXEBOOT) is NetState.UNPROVISIONED


def test_no_pxeboot_address_no_monitor_until_learned():
    host = make(pxe="")
    online(host)
    host.on_ready(FEATURES, T0)
    assert host.audit(T0) == () and host.net_state(Net.PXEBOOT) is NetState.UNPROVISIONED
    out = host.set_pxeboot_ip(PXE_IP, T0 + 1)
    assert texts(out) == [f"worker-0 pxeboot ip set to {PXE_IP}"]
    assert host.next_deadline() <= T0 + 1
    assert sends(host.audit(T0 + 1), Net.PXEBOOT, Cmd.REQ_MTCALIVE)


def test_transition_table_rejects_illegal_edges():
    host = monitored()
    assert host.pxe.stage is PxeStage.START
    with pytest.raises(TransitionError):
        host.pxe.stage_to(PxeStage.CHECK)
    host.audit(T0)
    assert host.pxe.stage is PxeStage.WAIT
    with pytest.raises(TransitionError):
        host.pxe.stage_to(PxeStage.FAIL)
    for stage, allowed in agent_pxeboot.PXE_TRANSITIONS.items():
        assert (PxeStage.START in allowed) == (stage is not PxeStage.START)


# -- issue 23 item 12: no pxeboot monitoring for a client without the feature ---------------

@pytest.mark.parametrize("features", [None, [], ["goenabled"]])
def test_a_ready_event_without_the_feature_wins_over_pxeboot_mtcalive(features):
    """Issue 23 item 12, docs/contract.md §8 "Revision" (docs/protocol.md §3, §5.5): a client whose
    ready event lacks `pxeboot_mtcAlive` (a C client before 649e94c, or any list without it)
    is tracked on mgmt and cluster-host; its pxeboot shows `unprovisioned` even when pxeboot
    mtcAlive arrive from it: no monitor, no request, never 200.003 (here: pxeboot mtcAlive
    for a minute, then none for five)."""
    host = make()
    online(host, seqs=(1, 1), nets=(Net.MGMT, Net.CLSTR))
    out = list(host.on_ready(features, T0))
    sim = Sim(host, T0)
    sim.record(out)
    sim.run(T0 + 360, alive=lambda net, t: net is not Net.PXEBOOT or t < T0 + 60)
    assert host.nets[Net.PXEBOOT].count == 11, "its pxeboot mtcAlive were received"
    assert host.net_state(Net.PXEBOOT) is NetState.UNPROVISIONED
    assert H.host_json(host, T0 + 360)["networks"]["pxeboot"]["state"] == "unprovisioned"
    assert sim.at(Send, Net.PXEBOOT) == [] and sim.at(RaiseAlarm) == []
    assert not host.pxeboot_monitored and host.pxe.stage is PxeStage.START


def test_unknown_feature_monitors_from_pxeboot_but_alarms_only_once_announced():
    """Issue 23 item 12, docs/design.md deviations: after an agent start nothing is known of a
    host's client; its first pxeboot mtcAlive starts the monitor (a HEAD client re-announces
    only every ~60 s), but 200.003 waits for a ready event announcing the feature (a C client
    before 649e94c sends its ready event only once, at its own start). Once announced, the
    held loss raises at the next missed window."""
    host = make()
    online(host)                                     # pxeboot included, no ready event
    assert host.pxeboot_monitored
    sim = Sim(host, T0)
    sim.record(host.audit(T0))
    sim.run(T0 + 300, alive=lambda net, t: net is not Net.PXEBOOT)
    assert host.pxe.loss == 2 and sim.at(RaiseAlarm) == []
    assert host.net_state(Net.PXEBOOT) is NetState.LOST
    held = [x for _, x in sim.texts() if "announces" in x]
    assert held == ["worker-0 pxeboot mtcAlive lost (2) ; no 200.003 until its mtcClient "
                    "announces the pxeboot_mtcAlive feature"]
    sim.record(host.on_ready(FEATURES, sim.t))
    sim.run(T0 + 320, alive=lambda net, t: net is not Net.PXEBOOT)
    assert sim.at(RaiseAlarm) and sim.at(RaiseAlarm)[0] <= T0 + 310


def test_a_ready_event_without_the_feature_stops_an_inferred_monitor():
    host = make()
    online(host)
    assert host.pxeboot_monitored
    out = host.on_ready(None, T0 + 1)
    assert sends(out) == [] and not host.pxeboot_monitored
    host.on_mtcalive(Net.PXEBOOT, 2, 0, 12, T0 + 2)
    assert host.net_state(Net.PXEBOOT) is NetState.UNPROVISIONED


@pytest.mark.parametrize("late", [0.7, 25.0])
def test_a_pxeboot_window_judged_late_starts_the_next_from_its_judgement(late):
    """As the original restarts its timer: a window is never shorter than
    pxeboot_mtcalive_window however late the agent judged the last one (issue 25 attack: read
    on whole seconds, windows ended on their due time counted intervals shorter than that and
    logged misses for a host sending every 1.25 s into 1.5 s windows), and a judgement windows
    late (a stall) judges one window, not a burst of them."""
    host = monitored(T0)
    host.audit(T0)
    t = host.pxe.deadline() + late
    online(host, t, seqs=(2, 2), nets=(Net.MGMT, Net.CLSTR))
    host.audit(t)
    assert host.pxe.deadline() == pytest.approx(t + 10)


@pytest.mark.parametrize("window", [2.5, 10.0])
def test_on_the_long_grid_pxeboot_windows_end_on_its_points(window):
    """Issue 25 attack: read on a whole-second grid, each window was judged at the read after
    its end (a few ms past a point of the grid: the next point), so 2.5 s windows lasted 3 s
    and 200.003 came after 36 s instead of 30. A window now ends on the grid point nearest
    one window from its start, where the read that judges it comes."""
    grid = 0.5
    host = monitored(T0, settings=Settings(pxeboot_window_s=window))
    host.facts.grid_s = grid
    host.audit(T0)                                 # START -> SEND -> MONITOR -> WAIT
    sim = Sim(host, T0 + 0.003 - grid, step=grid)  # every read a little after its grid point
    sim.run(T0 + 14 * window, alive=lambda net, t: net is not Net.PXEBOOT)
    raised = sim.at(RaiseAlarm)
    assert len(raised) == 1 and T0 + 12 * window <= raised[0] < T0 + 12 * window + grid
