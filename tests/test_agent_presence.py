"""mtce.agent_presence through a HostMonitor: online and offline, the offline audit, lost
windows of mgmt and cluster-host, stalls, pxeboot alone never keeping a host online.

Time is a plain float `now` (FakeClock style): minutes of protocol time run in milliseconds.
"""

from __future__ import annotations

import pytest

from mtce import agent_decisions
from mtce import agent_host as H
from mtce.agent_decisions import Send, Settings
from mtce.decisions import Log
from mtce.states import Availability, Cmd, Net, NetState

from harness.host_monitor import T0, Sim, make, online, sends, table_of, texts


# -- online / offline -----------------------------------------------------------------------

def test_offline_edges_and_audit_requests():
    s = Settings(online_period_s=7, offline_period_s=0.1, offline_threshold=90)
    host = make(settings=s, pxe="")            # no pxeboot monitor: only the offline audit sends
    online(host)
    last = T0
    seen, t, went_offline_at = [], T0, None
    while t < last + 20:
        t = round(t + 0.01, 6)
        out = host.audit(t)
        seen += [(t, a) for a in out]
        if went_offline_at is None and host.availability is Availability.OFFLINE:
            went_offline_at = t
        if t <= last + 7 + 9 - 0.1:
            assert host.availability is Availability.ONLINE, t
    assert went_offline_at is not None and went_offline_at <= last + 7 + 9 + 0.1
    req = [(t, a.net) for t, a in seen if isinstance(a, Send)]
    assert all(a.cmd is Cmd.REQ_MTCALIVE for _, a in seen if isinstance(a, Send))
    assert sum(1 for _, net in req if net is Net.MGMT) == 90
    assert sum(1 for _, net in req if net is Net.CLSTR) == 90
    assert not [1 for _, net in req if net is Net.PXEBOOT]
    assert min(t for t, _ in req) == pytest.approx(last + 7, abs=0.011)
    logs = [a.text for _, a in seen if isinstance(a, Log)]
    assert logs == ["worker-0 starting 100 msec offline audit (unlocked-online)",
                    "worker-0 going offline ; (threshold (100 msec * 90)"]
    for net in Net:
        assert host.nets[net].last_seq == 0 and not host.nets[net].received
    assert host.next_deadline() == agent_decisions.INF
    doc = H.host_json(host, t)
    assert doc["availability"] == "offline"
    assert doc["networks"]["mgmt"]["state"] == "lost"
    assert doc["networks"]["mgmt"]["last_seq"] == 0


def test_offline_driven_by_deadlines_is_exact():
    host = make(pxe="", clstr=False)
    online(host)
    t, out = T0, []
    while host.availability is Availability.ONLINE:
        t = host.next_deadline()
        out += host.audit(t)
    assert t == pytest.approx(T0 + agent_decisions.offline_after_s(host.settings))
    assert len(sends(out, Net.MGMT, Cmd.REQ_MTCALIVE)) == 90
    assert sends(out, Net.CLSTR) == []              # no cluster_host_ip: no request there


def test_offline_audit_ends_on_any_mtcalive():
    host = make(pxe="")
    online(host)
    for t in (T0 + 7, T0 + 7.1, T0 + 7.2):
        host.audit(t)
    out = host.on_mtcalive(Net.CLSTR, 2, 0, 12, T0 + 7.25)
    assert texts(out) == ["worker-0 still seeing mtcAlive (Clstr seq:2) after 3 of 90 offline "
                          "audits ; exiting offline handling"]
    after = []
    for i in range(1, 70):
        after += host.audit(T0 + 7.25 + i * 0.1)
    assert sends(after) == []                       # next audit only 7 s after that message
    assert host.availability is Availability.ONLINE
    assert host.nets[Net.CLSTR].missed == 0         # the audit did not reset counters


def test_host_offline_then_back_counts_nothing_for_the_gap():
    host = make(pxe="")
    online(host, seqs=(100, 100, 100))
    t = T0
    while host.availability is Availability.ONLINE:
        t = host.next_deadline()
        host.audit(t)
    out = host.on_mtcalive(Net.MGMT, 140, 0, 300, t + 1)
    assert "worker-0 mtcAlive ; going 'online'" in texts(out)
    assert host.nets[Net.MGMT].missed == 0


def test_mgmt_lost_after_three_windows_while_pxeboot_keeps_coming():
    host = make(pxe="")
    online(host)
    sim = Sim(host, T0)
    sim.run(T0 + 40, alive=lambda net, t: net is not Net.MGMT)
    lost = [(t, x) for t, x in sim.texts() if "lost" in x]
    assert lost == [(T0 + 21, "worker-0 Mgmnt network mtcAlive lost ; none for 3 x 7 secs")]
    assert host.availability is Availability.ONLINE
    assert host.net_state(Net.MGMT) is NetState.LOST
    assert host.net_state(Net.CLSTR) is NetState.OK
    assert sim.at(Send) == []                          # never an offline audit
    sim.deliver(Net.MGMT, 9)
    assert host.net_state(Net.MGMT) is NetState.OK
    assert sim.texts(sim.t)[-1][1] == ("worker-0 mtcAlive received from Mgmnt network with "
                                       "uptime:12 ; seq:9 ; state change")
    assert host.nets[Net.MGMT].missed == 7             # seq 2..8 never came


def test_mgmt_lost_edge():
    host = make(pxe="")
    online(host)
    for seq, t in enumerate((6, 12, 18, 20.95), 2):            # cluster-host keeps it online
        host.on_mtcalive(Net.CLSTR, seq, 0, 12, T0 + t)
    assert host.audit(T0 + 20.99) == ()
    assert host.net_state(Net.MGMT) is NetState.OK
    host.audit(T0 + 21)
    assert host.net_state(Net.MGMT) is NetState.LOST


# -- stalls -----------------------------------------------------------------------------------

def test_stall_gives_every_host_a_fresh_window():
    table = table_of(20)
    for host in table:
        online(host)
    table.audit(T0 + 5)
    now = T0 + 25                                     # the agent was stopped for 20 s
    out = table.note_stall(20.0, now)
    assert texts(out) == ["main loop stalled for 20.0 secs ; restarting the mtcAlive audit "
                          "windows of 20 hosts"]
    assert table.audit(now) == []
    for host in table:
        host.on_mtcalive(Net.MGMT, 2, 0, 12, now + 0.5)
    assert table.audit(now + 7) == []
    assert all(h.availability is Availability.ONLINE for h in table)
    # Without the stall notice the same gap starts an offline audit for everyone.
    other = table_of(20)
    for host in other:
        online(host)
    assert len(sends(other.audit(T0 + 25), Net.MGMT, Cmd.REQ_MTCALIVE)) == 20


def test_stall_without_traffic_still_goes_offline_later():
    table = table_of(1)
    host = table.get("worker-0")
    online(host)
    table.note_stall(20.0, T0 + 25)
    t = T0 + 25
    while host.availability is Availability.ONLINE:
        t = table.next_deadline()
        table.audit(t)
    assert t == pytest.approx(T0 + 25 + 16)


# -- issue 23 item 17: pxeboot alone never keeps a host online ------------------------------

def test_pxeboot_alone_brings_online_once_but_never_keeps_a_host_online():
    """Issue 23 item 17, docs/contract.md §8 "A learned pxeboot address" and Availability:
    pxeboot mtcAlive bring a host online at first (after an agent start they are often the
    first to answer), but neither delay nor end the offline audit: with mgmt and
    cluster-host silent the host is offline by the bound; then pxeboot alone does not bring
    it back, its next mgmt mtcAlive does."""
    s = Settings()
    host = make(settings=s)
    assert "going 'online'" in " ".join(texts(host.on_mtcalive(Net.PXEBOOT, 1, 0, 12, T0)))
    sim = Sim(host, T0, period=1.0, step=0.05)
    sim.run(T0 + 30, alive=lambda net, t: net is Net.PXEBOOT)
    offline = [t for t, x in sim.texts() if "going offline" in x]
    assert offline and \
        offline[0] <= T0 + agent_decisions.offline_after_s(s) + s.offline_period_s + 1e-6
    assert host.availability is Availability.OFFLINE and len(offline) == 1
    assert sum("pxeboot mtcAlive while offline" in x for _, x in sim.texts()) == 1
    sim.deliver(Net.MGMT, 1)
    assert host.availability is Availability.ONLINE


@pytest.mark.parametrize("seed", range(4))
def test_the_presence_deadline_is_the_rule_written_out(seed):
    """Issue 25: `Presence.deadline` runs for every steady host every few seconds, so it is
    written out for speed. Against the rule as docs/contract.md §8 states it (the audit's next
    step, else one online_period after the last mgmt or cluster-host mtcAlive; a network `ok`
    is `lost` lost_windows periods after its last one; never before the windows started),
    over random hosts: with and without a cluster-host address (inventory or learned),
    networks heard or not, ok or lost, windows restarted by a stall, the audit running."""
    import random
    rng = random.Random(seed)
    s = Settings(online_period_s=rng.choice((1.1, 5, 7)), offline_period_s=0.1,
                 offline_threshold=20, lost_windows=rng.choice((1, 3)))

    def rule(p):
        h = p.host
        heard = max([p.window_from] + [n.last_seen for n in h.nets[:2]
                                       if n.last_seen is not None])
        at = min(p.audit.send_at, p.audit.offline_at) if p.audit.start is not None \
            else heard + s.online_period_s
        for n in h.nets[:2] if h.clstr_ip else h.nets[:1]:
            if n.state is NetState.OK:
                seen = max(p.window_from, n.last_seen if n.last_seen is not None
                           else p.window_from)
                at = min(at, seen + s.online_period_s * s.lost_windows)
        return at

    checked = set()
    for _ in range(400):
        host = make(settings=s, clstr=rng.random() < 0.7)
        if not host.entry.cluster_host_ip and rng.random() < 0.5:
            host.learned_clstr_ip = "192.168.206.9"
        p = host.presence
        p.window_from = T0 + rng.uniform(-10, 10)
        for n in host.nets[:2]:
            n.last_seen = None if rng.random() < 0.2 else T0 + rng.uniform(-20, 20)
            n.state = rng.choice((NetState.OK, NetState.LOST))
        if rng.random() < 0.3:
            p.audit.begin(T0 + rng.uniform(-1, 1), T0, s.offline_period_s, s.offline_threshold)
            for _ in range(rng.randint(0, 5)):
                p.audit.due(T0 + rng.uniform(0, 3), s.offline_period_s)
        assert p.deadline() == rule(p)
        checked.add((bool(host.clstr_ip), p.audit.start is not None,
                     tuple(n.state for n in host.nets[:2])))
    assert len(checked) >= 12, "the random hosts cover the cases"
