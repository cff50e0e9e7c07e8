"""Per-host, per-network mtcAlive sequence numbers (docs/contract.md §8, docs/protocol.md §6): the
classification of each number against the last, the counters, and the sequence-event log
budget (each event logged, SEQ_LOG_BUDGET a window per host and network, then counted for one
summary line). Pure: `now` comes in.
"""

from __future__ import annotations

import enum

from mtce.agent_decisions import INF
from mtce.decisions import Log
from mtce.states import Net, NetState

SEQ_MASK = 0xFFFFFFFF           # parm[3] is a C unsigned int: compare modulo 2^32
SEQ_HALF = 1 << 31              # serial-number arithmetic: ahead by less than half the space
RESTART_SEQ_MAX = 2             # docs/protocol.md §6: seq <= 2 out of order = mtcClient restart
SEQ_LOG_BUDGET = 10
SEQ_LOG_WINDOW_S = 60.0


class SeqResult(enum.Enum):
    FIRST = "first"                  # first since agent start / offline: nothing counted
    IN_ORDER = "in-order"
    GAP = "gap"                      # ahead of last+1: `missed` += the gap
    OUT_OF_SEQUENCE = "out-of-sequence"
    RESTART = "restart"              # seq <= 2 out of order: mtcClient restart, not counted


def classify_seq(last: int, seq: int, first: bool) -> tuple[SeqResult, int]:
    """(result, missed) for `seq` after `last` (docs/contract.md §8, docs/protocol.md §6).

    Modulo 2^32: 4294967295 -> 0 -> 1 is in order, and "ahead" means ahead by less than 2^31
    (a jump further ahead is taken as going backwards). The restart rule is checked before the
    modular distance, so after a very long run (last near 2^32) seq 1 or 2 still reads as a
    client restart rather than a wrap with a gap. A `last` of 0 was zeroed (agent start,
    offline, a pxeboot monitor START): as the original, what follows is not a gap.
    """
    if first:
        return SeqResult.FIRST, 0
    expect = (last + 1) & SEQ_MASK
    if seq == expect:
        return SeqResult.IN_ORDER, 0
    if last == 0:
        return SeqResult.FIRST, 0
    if seq <= RESTART_SEQ_MAX:
        return SeqResult.RESTART, 0
    ahead = (seq - expect) & SEQ_MASK
    if ahead < SEQ_HALF:
        return SeqResult.GAP, ahead
    return SeqResult.OUT_OF_SEQUENCE, 0


class NetTrack:
    """What the agent knows about one host on one network."""

    __slots__ = ("net", "last_seq", "missed", "out_of_sequence", "last_seen", "received",
                 "state", "count", "ok", "text_prefix", "log_from", "logged", "unlogged",
                 "unlogged_missed", "unlogged_oos", "went_lost", "went_ok")

    def __init__(self, net: Net):
        self.net = net
        self.last_seq = 0            # 0: none since agent start or offline
        self.missed = 0
        self.out_of_sequence = 0
        self.last_seen: float | None = None
        self.received = False        # seen since agent start / offline (docs/protocol.md §6)
        self.state = NetState.LOST   # stored ok/lost; JSON derives unprovisioned
        self.count = 0               # mtcAlive received, ever
        self.ok = False              # received and state ok: the hot path tests one attribute
        self.went_lost = 0           # ok -> lost changes (agent_presence), and back (`back_ok`)
        self.went_ok = 0
        # The text of the last valid mtcAlive up to its sequence number: a next one that
        # matches it byte for byte is valid without a JSON parse (Inbox.on_raw).
        self.text_prefix: bytes | None = None
        # the sequence-event log budget (SEQ_LOG_BUDGET per SEQ_LOG_WINDOW_S)
        self.log_from = -INF
        self.logged = 0
        self.unlogged = 0
        self.unlogged_missed = 0
        self.unlogged_oos = 0

    def take(self, seq: int, uptime: int, now: float, hostname: str, budget, debug: bool,
             out: list) -> bool:
        """A valid mtcAlive's sequence number, off the hot path: counted, logged as the
        original logs it (docs/protocol.md §6: state change, missed, out-of-sequence, a client
        restart at debug), then adopted. True when it is the window's first event not logged
        (the table then remembers to summarise it)."""
        first = not self.received
        result, gap = classify_seq(self.last_seq, seq, first)
        if result is SeqResult.GAP:
            self.missed += gap
        elif result is SeqResult.OUT_OF_SEQUENCE:
            self.out_of_sequence += 1
        head = f"{hostname} mtcAlive received from {self.net.iface} network with uptime:{uptime}"
        expect = (self.last_seq + 1) & SEQ_MASK
        pending = False
        if first or self.state is not NetState.OK:
            out.append(Log("info", f"{head} ; seq:{seq} ; state change"))
        elif result is SeqResult.GAP:
            pending = self.event(now, budget, f"{head} ; missed {gap} mtcAlive msgs ; "
                                 f"expect:{expect} detect:{seq} ; correcting", gap, 0, out,
                                 hostname)
        elif result is SeqResult.OUT_OF_SEQUENCE:
            pending = self.event(now, budget, f"{head} ; out-of-sequence ; expect:{expect} "
                                 f"detect:{seq} ; correcting", 0, 1, out, hostname)
        elif result is SeqResult.RESTART and debug:
            out.append(Log("debug", f"{head} ; seq:{seq} ; mtcClient restart"))
        self.last_seq = seq
        self.received = True
        self.state = NetState.OK
        self.ok = True
        return pending

    def back_ok(self) -> None:
        """`ok` again after a counted loss (the first mtcAlive ever is no return)."""
        if self.went_ok < self.went_lost:
            self.went_ok += 1

    def reset(self) -> None:
        """The network's address changed: its counters start again."""
        self.last_seq = self.missed = self.out_of_sequence = 0
        self.last_seen = None
        self.received = self.ok = False
        self.state = NetState.LOST

    def counted_gap(self, seq: int, now: float) -> bool:
        """The hot path of a gap while this window's log budget is spent (an overload drops
        many): counted by the slow path's rule (`classify_seq`: a zeroed `last` is a restart,
        not a gap). False: take the slow path."""
        if not self.unlogged or now - self.log_from >= SEQ_LOG_WINDOW_S:
            return False
        result, gap = classify_seq(self.last_seq, seq, False)
        if result is not SeqResult.GAP:
            return False
        self.missed += gap
        self.unlogged += 1
        self.unlogged_missed += gap
        self.last_seq = seq
        return True

    def event(self, now: float, budget, text: str, missed: int, oos: int, out: list,
              hostname: str) -> bool:
        """Each gap and out-of-sequence is logged (docs/protocol.md §6), SEQ_LOG_BUDGET a window on
        this network and within the table's `budget`; past it, counted for the window's
        summary. True when this is the window's first event not logged (the table then
        remembers to summarise it)."""
        if now - self.log_from >= SEQ_LOG_WINDOW_S:
            self.summary(hostname, now, out)
            self.log_from, self.logged = now, 0
        if self.logged < SEQ_LOG_BUDGET and budget.take(now):
            self.logged += 1
            out.append(Log("warning", text))
            return False
        first = not self.unlogged
        self.unlogged += 1
        self.unlogged_missed += missed
        self.unlogged_oos += oos
        return first

    def summary(self, hostname: str, now: float, out: list, budget=None,
                totals: list | None = None) -> None:
        """The window's summary line; past the table's `budget`, added to `totals` (events,
        missed, out-of-sequence, host-networks) for one line of all hosts instead."""
        if not self.unlogged:
            return
        if totals is None or budget.take(now):
            out.append(Log("warning", f"{hostname} mtcAlive received from {self.net.iface} "
                                      f"network ; {self.unlogged} more sequence events in "
                                      f"{SEQ_LOG_WINDOW_S:g} secs not logged (missed "
                                      f"{self.unlogged_missed} mtcAlive msgs ; "
                                      f"{self.unlogged_oos} out-of-sequence)"))
        else:
            totals[0] += self.unlogged
            totals[1] += self.unlogged_missed
            totals[2] += self.unlogged_oos
            totals[3] += 1
        self.unlogged = self.unlogged_missed = self.unlogged_oos = 0

    def window_summary(self, hostname: str, now: float, out: list, budget,
                       totals: list) -> bool:
        """The summary of an ended window; True while this one is still open."""
        if not self.unlogged:
            return False
        if now - self.log_from < SEQ_LOG_WINDOW_S:
            return True
        self.summary(hostname, now, out, budget, totals)
        self.log_from, self.logged = -INF, 0
        return False
