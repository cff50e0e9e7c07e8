"""mtce.agent_seqs through a HostMonitor: sequence numbers per host and network, missed and
out-of-sequence counts, their logs within budgets, the fast and the slow path agreeing.

Time is a plain float `now` (FakeClock style): minutes of protocol time run in milliseconds.
"""

from __future__ import annotations

import pytest

from mtce import agent_seqs
from mtce.agent_decisions import SEQ_TABLE_BURST, Settings
from mtce.agent_host import HostMonitor
from mtce.agent_seqs import SeqResult, classify_seq
from mtce.agent_table import HostTable
from mtce.config import HostEntry, Inventory
from mtce.states import Admin, Availability, Net

from harness.host_monitor import FEATURES, PXE_IP, T0, entry, make, monitored, online, texts


# -- sequence numbers -----------------------------------------------------------------------

@pytest.mark.parametrize("last, seq, first, result, missed", [
    (0, 5000, True, SeqResult.FIRST, 0),
    (0, 5000, False, SeqResult.FIRST, 0),              # last zeroed: not a gap
    (10, 11, False, SeqResult.IN_ORDER, 0),
    (10, 14, False, SeqResult.GAP, 3),
    (10, 10, False, SeqResult.OUT_OF_SEQUENCE, 0),
    (10, 9, False, SeqResult.OUT_OF_SEQUENCE, 0),
    (500, 1, False, SeqResult.RESTART, 0),
    (500, 2, False, SeqResult.RESTART, 0),
    (500, 3, False, SeqResult.OUT_OF_SEQUENCE, 0),
    (4294967295, 0, False, SeqResult.IN_ORDER, 0),
    (0, 1, False, SeqResult.IN_ORDER, 0),
    (4294967294, 3, False, SeqResult.GAP, 4),           # ...95, 0, 1, 2 missing across the wrap
    (4294967290, 1, False, SeqResult.RESTART, 0),       # restart rule before wrap arithmetic
    (10, 11 + (1 << 31), False, SeqResult.OUT_OF_SEQUENCE, 0),   # half the space ahead or more
])
def test_classify_seq_table(last, seq, first, result, missed):
    assert classify_seq(last, seq, first) == (result, missed)


def test_in_order_stream_returns_no_action_at_all():
    host = make()
    online(host)
    for seq in range(2, 2000):
        for net in Net:
            assert host.on_mtcalive(net, seq, 0, 12, T0 + seq * 0.001) == ()
    for net in Net:
        n = host.nets[net]
        assert (n.last_seq, n.missed, n.out_of_sequence, n.count) == (1999, 0, 0, 1999)


def test_gap_adds_missed_and_is_logged_with_expect_and_detect():
    """docs/protocol.md §6: a gap logs `missed N mtcAlive msgs ; expect:E detect:D ; correcting`."""
    host = make()
    host.on_mtcalive(Net.MGMT, 10, 0, 12, T0)
    out = host.on_mtcalive(Net.MGMT, 14, 0, 12, T0 + 1)
    assert host.nets[Net.MGMT].missed == 3
    assert texts(out, "warning") == [
        "worker-0 mtcAlive received from Mgmnt network with uptime:12 ; missed 3 mtcAlive msgs "
        "; expect:11 detect:14 ; correcting"]


def test_three_sequence_events_in_one_second_are_each_logged():
    """Issue 11 item 3, docs/protocol.md §6: the original logs every gap and every out-of-sequence.
    A peer that skips 6, then 3, then repeats one, within a second, gets three lines."""
    host = make()
    online(host)
    for seq in range(2, 11):
        host.on_mtcalive(Net.MGMT, seq, 0, 12, T0)
    out = host.on_mtcalive(Net.MGMT, 17, 0, 12, T0 + 0.1)       # 11..16 missing
    out += host.on_mtcalive(Net.MGMT, 21, 0, 12, T0 + 0.5)      # 18..20 missing
    out += host.on_mtcalive(Net.MGMT, 21, 0, 12, T0 + 0.9)      # a duplicate
    assert texts(out, "warning") == [
        "worker-0 mtcAlive received from Mgmnt network with uptime:12 ; missed 6 mtcAlive msgs "
        "; expect:11 detect:17 ; correcting",
        "worker-0 mtcAlive received from Mgmnt network with uptime:12 ; missed 3 mtcAlive msgs "
        "; expect:18 detect:21 ; correcting",
        "worker-0 mtcAlive received from Mgmnt network with uptime:12 ; out-of-sequence ; "
        "expect:22 detect:21 ; correcting"]
    n = host.nets[Net.MGMT]
    assert (n.missed, n.out_of_sequence) == (9, 1)


def test_past_the_budget_events_are_counted_and_summarised_once():
    """Issue 11 item 3: SEQ_LOG_BUDGET lines per host and network a window, then one summary
    line with the counts; another host or network has its own budget."""
    table = HostTable(Settings())
    table.apply_inventory(Inventory("inv", {"worker-0": entry(), "worker-1": entry(
        "worker-1", 51)}), T0)
    w0, w1 = table.get("worker-0"), table.get("worker-1")
    for host in (w0, w1):
        online(host)
    out, seq = [], 1
    for i in range(40):                          # a gap of 1 every 0.5 s: 40 events in 20 s
        seq += 2
        out += w0.on_mtcalive(Net.MGMT, seq, 0, 12, T0 + i * 0.5)
    gaps = [t for t in texts(out) if "missed 1 mtcAlive msgs" in t]
    assert len(gaps) == agent_seqs.SEQ_LOG_BUDGET
    assert w0.nets[Net.MGMT].missed == 40, "every gap is counted, logged or not"
    # worker-0's cluster-host and worker-1's mgmt still log their first event
    assert texts(w0.on_mtcalive(Net.CLSTR, 5, 0, 12, T0 + 20), "warning")
    assert texts(w1.on_mtcalive(Net.MGMT, 5, 0, 12, T0 + 20), "warning")
    assert table.sequence_summaries(T0 + 59) == [], "the window is still open"
    summary = texts(table.sequence_summaries(T0 + 60))
    assert summary == ["worker-0 mtcAlive received from Mgmnt network ; 30 more sequence events "
                       "in 60 secs not logged (missed 30 mtcAlive msgs ; 0 out-of-sequence)"]
    assert table.sequence_summaries(T0 + 200) == [], "told once"
    seq += 2
    assert len(texts(w0.on_mtcalive(Net.MGMT, seq, 0, 12, T0 + 61), "warning")) == 1, \
        "a new window logs again"


def test_when_every_host_has_gaps_at_once_the_log_gets_a_line_of_totals():
    """Issue 11 item 3: the per-host budget, and a table-wide one (SEQ_TABLE_BURST, then
    SEQ_TABLE_PER_MIN): 300 hosts x 3 networks with a gap each (the agent's own receive
    buffer overflowed) give at most the table's burst of lines, then one line of totals."""
    n_hosts = 300
    table = HostTable(Settings())
    table.apply_inventory(Inventory("inv", {f"w{i}": HostEntry(
        f"w{i}", "worker", f"08:00:27:{i // 256:02x}:{i % 256:02x}:01",
        f"10.1.{i // 250}.{i % 250}",
        f"10.2.{i // 250}.{i % 250}", "unlocked") for i in range(n_hosts)}), T0)
    out = []
    for host in table:
        for net in Net:
            host.on_mtcalive(net, 10, 0, 12, T0)
            out += host.on_mtcalive(net, 15, 0, 12, T0 + 1)
    gaps = [t for t in texts(out) if "missed 4 mtcAlive msgs" in t]
    assert len(gaps) == SEQ_TABLE_BURST
    assert sum(h.nets[net].missed for h in table for net in Net) == 4 * 3 * n_hosts
    summary = texts(table.sequence_summaries(T0 + 61))
    assert len(summary) <= SEQ_TABLE_BURST + 1, "the summaries share the budget"
    told = sum(1 for t in summary[:-1] if "1 more sequence events in 60 secs" in t)
    assert summary[-1].startswith(f"{3 * n_hosts - SEQ_TABLE_BURST - told} more sequence "
                                  f"events of {3 * n_hosts - SEQ_TABLE_BURST - told} host "
                                  f"networks not logged"), summary[-1]


def test_duplicate_and_reorder_count_out_of_sequence():
    host = make()
    for seq in (10, 11):
        host.on_mtcalive(Net.CLSTR, seq, 0, 12, T0)
    out = host.on_mtcalive(Net.CLSTR, 11, 0, 12, T0)              # duplicate
    assert texts(out) == ["worker-0 mtcAlive received from Clstr network with uptime:12 ; "
                          "out-of-sequence ; expect:12 detect:11 ; correcting"]
    for seq in (12, 14, 13):                                      # reorder
        host.on_mtcalive(Net.CLSTR, seq, 0, 12, T0)
    n = host.nets[Net.CLSTR]
    # As the original, last_seq follows every message, so 13 after 14 re-bases at 13.
    assert (n.out_of_sequence, n.missed, n.last_seq) == (2, 1, 13)


@pytest.mark.parametrize("restart_seq", [1, 2])
def test_client_restart_is_neither_out_of_sequence_nor_missed(restart_seq):
    host = make()
    online(host)
    for seq in range(2, 501):
        host.on_mtcalive(Net.MGMT, seq, 0, 12, T0)
    out = host.on_mtcalive(Net.MGMT, restart_seq, 0, 3, T0 + 1)
    assert out == []
    for seq in range(restart_seq + 1, restart_seq + 5):
        assert host.on_mtcalive(Net.MGMT, seq, 0, 3, T0 + 1) == ()
    n = host.nets[Net.MGMT]
    assert (n.out_of_sequence, n.missed) == (0, 0)


def test_first_message_after_agent_start_is_not_counted():
    host = make()
    out = host.on_mtcalive(Net.PXEBOOT, 5000, 0, 12, T0)
    n = host.nets[Net.PXEBOOT]
    assert (n.last_seq, n.missed, n.out_of_sequence) == (5000, 0, 0)
    assert texts(out) == ["worker-0 mtcAlive ; going 'online'",
                          "worker-0 mtcAlive received from Pxeboot network with uptime:12 ; "
                          "seq:5000 ; state change",
                          "worker-0 pxeboot mtcAlive received before a ready event ; "
                          "monitoring pxeboot"]
    assert host.availability is Availability.ONLINE


def test_a_pxeboot_mtcalive_before_any_ready_event_starts_pxeboot_monitoring():
    host = make()
    assert not host.pxeboot_supported
    host.on_mtcalive(Net.MGMT, 1, 0, 12, T0)
    assert not host.pxeboot_supported, "mgmt says nothing about the pxeboot feature"
    host.on_mtcalive(Net.PXEBOOT, 7, 0, 12, T0)
    assert host.pxeboot_supported and host.pxeboot_monitored
    assert host.net_state(Net.PXEBOOT).value == "ok"


def test_wrap_is_in_order():
    host = make()
    host.on_mtcalive(Net.MGMT, 4294967294, 0, 12, T0)
    for seq in (4294967295, 0, 1, 2):
        assert host.on_mtcalive(Net.MGMT, seq, 0, 12, T0) == ()
    n = host.nets[Net.MGMT]
    assert (n.last_seq, n.missed, n.out_of_sequence) == (2, 0, 0)


# -- issue 23 item 10: one sequence rule for the fast and the slow path ---------------------

class SlowPathHost(HostMonitor):
    """A host that never takes the fast path of `on_mtcalive` (never "steady")."""

    @property
    def _steady(self):
        return False

    @_steady.setter
    def _steady(self, value):
        pass


def _seq_view(host):
    return [(n.last_seq, n.missed, n.out_of_sequence, n.unlogged, n.unlogged_missed,
             n.unlogged_oos) for n in host.nets]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("gap_rate", [0.02, 0.6])
def test_fast_and_slow_path_count_the_same_on_random_sequences(seed, gap_rate):
    """Issue 23 item 10, docs/contract.md §8 "Counters", docs/protocol.md §6 (when `last` is
    zeroed): the hot path of a steady host and the full path must agree on every counter, with the
    sequence-log budget spent (gap_rate 0.6: dozens of events a minute) and not (0.02). The
    peer's sequences are random (in order, gaps, duplicates, client restarts, wrap); the
    agent zeroes the pxeboot number at each monitor START (an operator unlock, a loss), after
    which the first number is not a gap however large."""
    import random
    rng = random.Random(seed)
    fast, slow = monitored(T0), SlowPathHost(entry(), Settings(), T0, pxeboot_ip=PXE_IP)
    online(slow, T0, seqs=(1, 1), nets=(Net.MGMT, Net.CLSTR))
    slow.on_ready(FEATURES, T0)
    seq = {net: 1 for net in Net}
    seq[Net.PXEBOOT] = 4294967200 if seed % 2 else 0              # odd seeds wrap
    for step in range(1, 1500):
        now = T0 + step * 0.5
        for net in Net:
            roll = rng.random()
            if roll < gap_rate:
                seq[net] = (seq[net] + rng.randint(2, 40)) & agent_seqs.SEQ_MASK
            elif roll < gap_rate + 0.01:
                seq[net] = rng.randint(1, 2)                       # the client restarted
            elif roll < gap_rate + 0.02:
                pass                                              # a duplicate
            else:
                seq[net] = (seq[net] + 1) & agent_seqs.SEQ_MASK
            for h in (fast, slow):
                h.on_mtcalive(net, seq[net], 0, 12, now)
        if step % 97 == 0:                                        # an operator lock, unlock
            for h in (fast, slow):
                h.set_admin(Admin.LOCKED, now, "operator")
                h.set_admin(Admin.UNLOCKED, now, "operator")
        for h in (fast, slow):
            h.audit(now)
        assert _seq_view(fast) == _seq_view(slow), (step, seq)
    assert fast.nets[Net.PXEBOOT].missed < 60 * 1500, "no jump by a whole sequence number"


def test_after_a_monitor_start_with_the_budget_spent_missed_does_not_jump():
    """Issue 23 item 10 as an operator sees it: a peer with a gap every second spends the
    pxeboot log budget; an unlock restarts the pxeboot monitor (START zeroes `last`); the
    next pxeboot mtcAlive, seq 5000, adds nothing to `missed` (docs/protocol.md §6: last == 0 is a
    restart, not a gap)."""
    host = monitored()
    host.audit(T0)
    seq = 4000
    host.on_mtcalive(Net.PXEBOOT, seq, 0, 12, T0)
    for i in range(30):                                  # 30 gaps of 1 in 30 s: budget spent
        seq += 2
        host.on_mtcalive(Net.PXEBOOT, seq, 0, 12, T0 + i)
        host.on_mtcalive(Net.MGMT, 2 + i, 0, 12, T0 + i)
    pxe = host.nets[Net.PXEBOOT]
    assert pxe.unlogged and pxe.missed == 30
    host.set_admin(Admin.LOCKED, T0 + 30, "operator")
    host.set_admin(Admin.UNLOCKED, T0 + 30, "operator")
    host.audit(T0 + 30)
    assert pxe.last_seq == 0 and host._steady
    host.on_mtcalive(Net.PXEBOOT, 5000, 0, 12, T0 + 31)
    assert (pxe.last_seq, pxe.missed) == (5000, 30)
