"""The agent's per-host x per-network mtcAlive state, as pure state machines.

Events plus `now` (monotonic seconds) in, actions out: `Send`, `RaiseAlarm`, `ClearAlarm`, `Log`,
carried out by the wiring (agent.py). Here: sequence counters (interface.md §8, agent.md §6),
online/offline and the offline audit (agent.md §4.3), per-network ok/lost, the pxeboot mtcAlive
monitor (agent.md §5) and the locked/unlocked correction (agent.md §7.3). No socket, select, time,
os or subprocess: the clock comes in as `now`.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, NamedTuple, Union

from mtce.budget import Budget
from mtce.states import (
    ALARM_MTCALIVE, FEATURE_PXEBOOT_MTCALIVE, PARM_LOCK_PERSIST, Admin, Availability, Cmd, Flag,
    Net, NetState,
)

if TYPE_CHECKING:   # config reads files; only its types are needed here
    from mtce.config import HostEntry, Inventory

INF = float("inf")
SEQ_MASK = 0xFFFFFFFF           # parm[3] is a C unsigned int: compare modulo 2^32
SEQ_HALF = 1 << 31              # serial-number arithmetic: ahead by less than half the space
RESTART_SEQ_MAX = 2             # agent.md §6: seq <= 2 out of order = mtcClient restart
PXEBOOT_MISS_THRESHOLD = 6      # PXEBOOT_MTCALIVE_LOSS_THRESHOLD (C/nodeClass.h:344)
PXEBOOT_LOSS_THRESHOLD = 2      # PXEBOOT_MTCALIVE_LOSS_ALARM_THRESHOLD (C/nodeClass.h:345)
PXEBOOT_LOG_THROTTLE = 60       # lost / not-seen-yet logs: 1 in 60 CHECKs (C/nodeClass.h:346)
WARN_THROTTLE_S = 60.0          # other per-host warnings: first, then one a minute per cause
# Sequence events (gaps, out-of-sequence) are each logged, as the original logs each, up to
# SEQ_LOG_BUDGET a SEQ_LOG_WINDOW_S per host and network; beyond it they are counted and
# one summary line tells how many were not logged.
SEQ_LOG_BUDGET = 10
SEQ_LOG_WINDOW_S = 60.0
# ... and all hosts together SEQ_TABLE_BURST, then SEQ_TABLE_PER_MIN a minute: when every host
# has gaps at once (the agent's own receive buffer overflowed) the log gets a few lines and
# one line of totals, not ten per host and network.
SEQ_TABLE_BURST, SEQ_TABLE_PER_MIN = 100, 100
ALARM_SEVERITY = "minor"
_LOCKED_BIT = int(Flag.I_AM_LOCKED)   # plain int: IntFlag arithmetic is slow on the hot path
_NO_ACTIONS: tuple = ()


# -- actions ---------------------------------------------------------------------------------

class Send(NamedTuple):
    """Send command `cmd` to `host` over `net` (the wiring picks address, port and MAC)."""
    host: str
    net: Net
    cmd: Cmd
    num: int = 0
    parm: tuple = ()


class RaiseAlarm(NamedTuple):
    host: str
    alarm_id: str
    severity: str
    reason: str


class ClearAlarm(NamedTuple):
    host: str
    alarm_id: str


class Log(NamedTuple):
    level: str          # "debug", "info", "warning"
    text: str


Action = Union[Send, RaiseAlarm, ClearAlarm, Log]


# -- settings and the pure timing arithmetic -------------------------------------------------

class Facts:
    """Facts about the agent's own host that can change while it runs, shared by every host
    and refreshed by the wiring (hosts.py reads no files): `still_simplex` is the
    `<platform_dir>/simplex` file, which the original checks at each locked correction
    (no pxeboot send and no LOCK_PERSIST while it exists, agent.md §7.3)."""

    __slots__ = ("still_simplex", "seq_budget")

    def __init__(self, still_simplex: bool = False):
        self.still_simplex = still_simplex
        self.seq_budget = Budget(SEQ_TABLE_BURST, SEQ_TABLE_PER_MIN)   # sequence lines, all


@dataclass(frozen=True)
class Settings:
    """Agent timers and facts about the agent itself, converted once to seconds."""
    online_period_s: float = 7.0
    offline_period_s: float = 0.1
    offline_threshold: int = 90
    pxeboot_window_s: float = 10.0
    simplex: bool = False
    pxeboot_provisioned: bool = True    # the agent's own pxeboot network
    lost_windows: int = 3               # interface.md §8: mgmt/cluster-host lost after 3 windows
    debug: bool = False                 # emit the original's clog/alog detail as debug Logs

    def __post_init__(self):
        for name in ("online_period_s", "offline_period_s", "pxeboot_window_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be above 0")
        if self.offline_threshold < 1 or self.lost_windows < 1:
            raise ValueError("offline_threshold and lost_windows must be 1 or more")

    @classmethod
    def from_config(cls, config, *, simplex: bool, pxeboot_provisioned: bool) -> "Settings":
        """From a `config.Config` (interface.md §2 keys), unclamped (interface.md §8)."""
        return cls(online_period_s=float(config.get("timeouts", "online_period")),
                   offline_period_s=config.offline_period_s,
                   offline_threshold=int(config.get("agent", "offline_threshold")),
                   pxeboot_window_s=float(config.get("timeouts", "pxeboot_mtcalive_window")),
                   simplex=simplex, pxeboot_provisioned=pxeboot_provisioned and not simplex)


def offline_after_s(s: Settings) -> float:
    """Seconds from a host's last mtcAlive to `offline` with a timely audit (contract §8)."""
    return s.online_period_s + s.offline_period_s * s.offline_threshold


def lost_after_s(s: Settings) -> float:
    """Seconds without mtcAlive on mgmt/cluster-host, host online, before that net is lost."""
    return s.online_period_s * s.lost_windows


def pxeboot_alarm_after_s(s: Settings) -> float:
    """Seconds of total pxeboot loss, from a clean monitor start, to 200.003 (agent.md §5.3)."""
    return s.pxeboot_window_s * PXEBOOT_MISS_THRESHOLD * PXEBOOT_LOSS_THRESHOLD


class SeqResult(enum.Enum):
    FIRST = "first"                  # first since agent start / offline: nothing counted
    IN_ORDER = "in-order"
    GAP = "gap"                      # ahead of last+1: `missed` += the gap
    OUT_OF_SEQUENCE = "out-of-sequence"
    RESTART = "restart"              # seq <= 2 out of order: mtcClient restart, not counted


def classify_seq(last: int, seq: int, first: bool) -> tuple[SeqResult, int]:
    """(result, missed) for `seq` after `last` (interface.md §8, agent.md §6).

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


# -- the pxeboot monitor stages --------------------------------------------------------------

class PxeStage(str, enum.Enum):
    START = "start"
    SEND = "send"
    MONITOR = "monitor"
    WAIT = "wait"
    CHECK = "check"
    FAIL = "fail"

    @property
    def label(self) -> str:
        """The original's stage name (`CC/nodeBase.cpp:533-539`), for debug logs."""
        return "mtcAlive-" + self.value.capitalize()


# agent.md §5.1. Every stage may go back to START: blocking, support or address changes.
PXE_TRANSITIONS = {
    PxeStage.START: frozenset({PxeStage.SEND}),
    PxeStage.SEND: frozenset({PxeStage.MONITOR, PxeStage.START}),
    PxeStage.MONITOR: frozenset({PxeStage.WAIT, PxeStage.START}),
    PxeStage.WAIT: frozenset({PxeStage.CHECK, PxeStage.START}),
    PxeStage.CHECK: frozenset({PxeStage.MONITOR, PxeStage.SEND, PxeStage.FAIL, PxeStage.START}),
    PxeStage.FAIL: frozenset({PxeStage.START}),
}


class TransitionError(RuntimeError):
    """A pxeboot monitor stage change that PXE_TRANSITIONS does not allow (a bug)."""


class _Check(enum.Enum):
    GOOD = 1
    MISS = 2
    OUT_OF_SEQUENCE = 3


# -- one host ---------------------------------------------------------------------------------

class NetTrack:
    """What the agent knows about one host on one network."""

    __slots__ = ("net", "last_seq", "missed", "out_of_sequence", "last_seen", "received",
                 "state", "count", "ok", "text_prefix", "log_from", "logged", "unlogged",
                 "unlogged_missed", "unlogged_oos")

    def __init__(self, net: Net):
        self.net = net
        self.last_seq = 0            # 0: none since agent start or offline
        self.missed = 0
        self.out_of_sequence = 0
        self.last_seen: float | None = None
        self.received = False        # seen since agent start / offline (agent.md §6 seen-flag)
        self.state = NetState.LOST   # stored ok/lost; JSON derives unprovisioned
        self.count = 0               # mtcAlive received, ever
        self.ok = False              # received and state ok: the hot path tests one attribute
        # The text of the last valid mtcAlive up to its sequence number: a next one that
        # matches it byte for byte is valid without a JSON parse (agent.on_datagram).
        self.text_prefix: bytes | None = None
        # the sequence-event log budget (SEQ_LOG_BUDGET per SEQ_LOG_WINDOW_S)
        self.log_from = -INF
        self.logged = 0
        self.unlogged = 0
        self.unlogged_missed = 0
        self.unlogged_oos = 0


class PxebootMonitor:
    """One host's pxeboot mtcAlive monitor (agent.md §5.1-5.6): stages, miss/loss, 200.003.

    Pure FSM; its owner `HostMonitor` decides when it may run (§5.0 gating) and hands it the
    pxeboot `NetTrack` to judge. Stage changes go through `stage_to`, which enforces
    PXE_TRANSITIONS.
    """

    def __init__(self, hostname: str, settings: Settings, now: float):
        self.hostname = hostname
        self.settings = settings
        self.stage = PxeStage.START
        self.miss = 0
        self.loss = 0
        self.alarm = False
        self.start_at = now                  # when START was entered: due from then on
        self.timer = INF                     # the WAIT deadline
        self._save: int | None = None        # seq at the last CHECK; None: none since START
        self._count_saved = 0                # pxeboot count at START / the last CHECK
        self._lost_logs = 0                  # the two 1-in-60 throttles
        self._not_seen_logs = 0

    @property
    def in_loss(self) -> bool:
        return self.loss > 0 or self.alarm

    def stage_to(self, new: PxeStage) -> None:
        if new not in PXE_TRANSITIONS[self.stage]:
            raise TransitionError(f"{self.hostname} pxeboot monitor: illegal stage change "
                                  f"{self.stage.label} -> {new.label}")
        self.stage = new

    def to_start(self, now: float) -> None:
        """Back to START (blocked, restarted): the next run begins with a request."""
        if self.stage is not PxeStage.START:
            self.stage_to(PxeStage.START)
        self.start_at = now
        self.timer = INF

    def deadline(self) -> float:
        return self.timer if self.stage is PxeStage.WAIT else self.start_at

    def restart_window(self, now: float) -> None:
        """After a loop stall: the window in progress starts again from `now`."""
        if self.stage is PxeStage.WAIT:
            self.timer = now + self.settings.pxeboot_window_s

    def restore(self) -> None:
        """200.003 found active at agent start: the loss state (agent.md §5.3)."""
        self.alarm = True
        self.loss = PXEBOOT_LOSS_THRESHOLD
        self.miss = PXEBOOT_MISS_THRESHOLD

    def run(self, now: float, pxe: NetTrack, out: list) -> None:
        """Pass through the stages until the monitor waits (one window) again."""
        debug = self.settings.debug
        while True:
            stage = self.stage
            if stage is PxeStage.WAIT:
                if now < self.timer:
                    return
                self.stage_to(PxeStage.CHECK)
                self._check(pxe, out)
            elif stage is PxeStage.START:
                # agent.md §6 "When last is zeroed": every START, pxeboot only. The next
                # pxeboot mtcAlive is then not a gap (a restart, an unlock, a re-learn).
                pxe.last_seq = 0
                self._save = None
                self._count_saved = pxe.count
                self.timer = INF
                self.stage_to(PxeStage.SEND)
            elif stage is PxeStage.SEND:
                out.append(Send(self.hostname, Net.PXEBOOT, Cmd.REQ_MTCALIVE))
                self.stage_to(PxeStage.MONITOR)
            elif stage is PxeStage.MONITOR:
                self.timer = now + self.settings.pxeboot_window_s
                self.stage_to(PxeStage.WAIT)
            elif stage is PxeStage.FAIL:
                self._fail(out)
                self.to_start(now)
            else:   # CHECK never rests: _check always leaves it
                raise TransitionError(f"{self.hostname} pxeboot monitor resting in {stage}")
            if debug:
                out.append(Log("debug", f"{self.hostname} stage {stage.label} -> "
                                        f"{self.stage.label}"))

    def _check(self, pxe: NetTrack, out: list) -> None:
        h = self.hostname
        save = self._save
        if pxe.count == self._count_saved:
            result, cur = _Check.MISS, save
        else:
            cur = pxe.last_seq
            if save is None:
                result = _Check.GOOD              # START zeroed both: anything is newer
            else:
                ahead = (cur - save) & SEQ_MASK
                result = (_Check.MISS if ahead == 0 else
                          _Check.GOOD if ahead < SEQ_HALF else _Check.OUT_OF_SEQUENCE)
        self._count_saved = pxe.count
        if result is _Check.GOOD:
            if self.miss > 0:
                if not self.alarm and self.loss > 0:
                    # Recovering from loss 1: start the debounce over (agent.md §5.3).
                    self.miss = PXEBOOT_MISS_THRESHOLD
                    self.loss = 0
                tail = "; alarm clear when 0 " if self.alarm else ""
                out.append(Log("info", f"{h} pxeboot mtcAlive miss count {self.miss} ; "
                                       f"decrement {tail}; recovery"))
                self.miss -= 1
            else:
                self.loss = 0
                self.clear_alarm(out)
            self._lost_logs = self._not_seen_logs = 0
            self.stage_to(PxeStage.MONITOR)
        elif result is _Check.OUT_OF_SEQUENCE:
            # The mtcClient restarted (its sequence went back): one miss and a request.
            self.miss += 1
            out.append(Log("warning", f"{h} pxeboot mtcAlive miss count {self.miss} ; loss "
                                      f"count {self.loss} ; out-of-sequence ; this:{cur}  "
                                      f"last:{save}"))
            self.stage_to(PxeStage.SEND if self.miss < PXEBOOT_MISS_THRESHOLD
                          else PxeStage.FAIL)
        else:
            self.miss += 1
            if self.miss < PXEBOOT_MISS_THRESHOLD:
                out.append(Log("warning", f"{h} pxeboot mtcAlive miss count {self.miss} ; "
                                          f"loss count {self.loss} ; sending request"))
                self.stage_to(PxeStage.SEND)
            else:
                if pxe.received:
                    self._lost_logs += 1
                    if self._lost_logs == 1:
                        out.append(Log("warning", f"{h} pxeboot mtcAlive lost ; missed: "
                                                  f"{self.miss} ; last: count:{pxe.count} "
                                                  f"seq: {pxe.last_seq} ; sending request"))
                    if self._lost_logs >= PXEBOOT_LOG_THROTTLE:
                        self._lost_logs = 0
                else:
                    self._not_seen_logs += 1
                    if self._not_seen_logs == 1:
                        out.append(Log("info", f"{h} pxeboot mtcAlive not seen yet ; "
                                               f"sending request"))
                    if self._not_seen_logs >= PXEBOOT_LOG_THROTTLE:
                        self._not_seen_logs = 0
                self.stage_to(PxeStage.FAIL)
        if self.miss > PXEBOOT_MISS_THRESHOLD:
            self.miss = PXEBOOT_MISS_THRESHOLD
        self._save = cur
        if self.settings.debug and (self.miss or self.loss):
            out.append(Log("debug", f"{h} pxeboot mtcAlive: Miss: {self.miss} of "
                                    f"{PXEBOOT_MISS_THRESHOLD}  ,  Loss: {self.loss} of "
                                    f"{PXEBOOT_LOSS_THRESHOLD}"))

    def _fail(self, out: list) -> None:
        if self.alarm:
            return                       # already asserted: counters stay, START re-requests
        self.loss += 1
        h = self.hostname
        if self.loss < PXEBOOT_LOSS_THRESHOLD:
            out.append(Log("warning", f"{h} pxeboot mtcAlive lost ; "
                                      f"{PXEBOOT_LOSS_THRESHOLD - self.loss} more loss "
                                      f"before alarm assertion"))
            self.miss = 0
        else:
            out.append(Log("info", f"{h} pxeboot mtcAlive alarm assert ({self.loss})"))
            self.raise_alarm(out)

    def raise_alarm(self, out: list) -> None:
        if self.alarm:
            return
        h = self.hostname
        self.alarm = True
        out.append(Log("warning", f"{h} {ALARM_SEVERITY} Pxeboot mtcAlive messaging failure"))
        out.append(Log("info", f"{h} setting {ALARM_SEVERITY} 'mtcAlive' failure alarm "
                               f"({ALARM_MTCALIVE} )"))
        out.append(RaiseAlarm(h, ALARM_MTCALIVE, ALARM_SEVERITY,
                              f"{h} pxeboot network communication failure"))

    def clear_alarm(self, out: list) -> None:
        if not self.alarm:
            return
        h = self.hostname
        self.alarm = False
        self.loss = 0
        # agent.md §5.6: the clear logs the raise's text, at info (a copy-paste kept on purpose).
        out.append(Log("info", f"{h} {ALARM_SEVERITY} Pxeboot mtcAlive messaging failure"))
        out.append(Log("info", f"{h} clearing 'mtcAlive' alarm ({ALARM_MTCALIVE})"))
        out.append(ClearAlarm(h, ALARM_MTCALIVE))

    def to_json(self) -> dict:
        return {"stage": self.stage.value, "miss": self.miss, "loss": self.loss}


class HostMonitor:
    """One host: availability, per-network tracking, the offline audit, the lock correction,
    and the gate of its pxeboot monitor (`self.pxe`).

    Every event method takes `now` and returns a list of actions, or an empty tuple.
    """

    def __init__(self, entry: "HostEntry", settings: Settings, now: float,
                 pxeboot_ip: str = "", facts: Facts | None = None):
        self.entry = entry
        self.hostname: str = entry.hostname
        self.settings = settings
        self.facts = facts or Facts()
        self.admin = Admin(entry.administrative)
        self.admin_source = "inventory"          # or "operator" (mtce lock/unlock, kept)
        self.learned_clstr_ip = ""               # from mtcAlive, when the inventory has none
        self.reported_personality = ""           # of the last valid mtcAlive
        self.availability = Availability.OFFLINE
        self.pxeboot_ip = pxeboot_ip or ""
        self.pxeboot_supported = False
        self.client_ready = False
        self.last_ack: dict = {}                 # (cmd, net) -> now of the last ACK
        self.nets = tuple(NetTrack(n) for n in Net)
        self.pxe = PxebootMonitor(self.hostname, settings, now)
        # online/offline (agent.md §4.3, interface.md §8)
        self._window_from = now                  # windows never start before this (stalls)
        self._audit_start: float | None = None   # offline audit running since
        self._audit_sends = 0
        self._audit_slot = 0
        self._audit_send_at = INF
        self._offline_at = INF
        # locked/unlocked correction (agent.md §7.3)
        self._lock_bit = _LOCKED_BIT if self.admin is Admin.LOCKED else 0
        self._correcting: Cmd | None = None
        self._correction_at = -INF
        self._steady = False
        self._throttle: dict = {}
        # HostTable scheduling: a callback for "my deadline may be earlier now"
        self._waker: Callable[["HostMonitor"], None] | None = None
        self._auditing: set | None = None        # the table's set of hosts in offline audit
        self._seq_pending: set | None = None     # the table's hosts with unlogged events
        self._sched_tok = -1
        self._sched_at = INF

    # -- derived state ---------------------------------------------------------------------

    @property
    def pxeboot_monitored(self) -> bool:
        """Whether the pxeboot monitor applies at all (agent.md §5.0, §8 simplex)."""
        s = self.settings
        return (self.pxeboot_supported and bool(self.pxeboot_ip) and s.pxeboot_provisioned
                and not s.simplex)

    @property
    def clstr_ip(self) -> str:
        """The inventory's cluster-host address, or the one the host's mtcAlive reported."""
        return self.entry.cluster_host_ip or self.learned_clstr_ip

    def _provisioned(self, net: Net) -> bool:
        if net is Net.CLSTR:
            return bool(self.clstr_ip)
        if net is Net.PXEBOOT:
            return self.pxeboot_monitored
        return True

    def net_state(self, net: Net) -> NetState:
        """ok / lost / unprovisioned as `mtce hosts --json` shows it (interface.md §8)."""
        net = Net(net)
        if not self._provisioned(net):
            return NetState.UNPROVISIONED
        if net is Net.PXEBOOT:
            # The monitor decides: lost while in loss or alarmed, ok once seen.
            if self.pxe.in_loss or not self.nets[net].received:
                return NetState.LOST
            return NetState.OK
        return self.nets[net].state

    def _update_steady(self) -> None:
        self._steady = (self.availability is Availability.ONLINE and self._audit_start is None
                        and self._correcting is None)

    def _wake(self) -> None:
        if self._waker is not None:
            self._waker(self)

    def _throttled(self, key, now: float, level: str, text: str, out: list) -> None:
        entry = self._throttle.get(key)
        if entry is not None and now - entry[0] < WARN_THROTTLE_S:
            entry[1] += 1
            return
        if entry is not None and entry[1]:
            text += f" ({entry[1]} similar suppressed)"
        self._throttle[key] = [now, 0]
        out.append(Log(level, text))

    # -- mtcAlive -----------------------------------------------------------------------------

    def on_mtcalive(self, net: Net, seq: int, flags: int, uptime: int, now: float):
        """One valid mtcAlive from this host on `net` (parm[3] seq, parm[2] flags, parm[0]).

        The in-order message of a steady host returns the empty tuple without building
        anything: this is the 50,000 messages a second path.
        """
        n = self.nets[net]
        n.last_seen = now
        n.count += 1
        if n.ok and self._steady and (flags & _LOCKED_BIT) == self._lock_bit:
            ahead = (seq - n.last_seq) & SEQ_MASK
            if ahead == 1:
                n.last_seq = seq
                return _NO_ACTIONS
            if n.unlogged and 1 < ahead < SEQ_HALF and seq > RESTART_SEQ_MAX and \
                    now - n.log_from < SEQ_LOG_WINDOW_S:
                # A gap while this window's log budget is spent (an overload drops many):
                # counted here as the slow path would count it, without building a list.
                n.missed += ahead - 1
                n.unlogged += 1
                n.unlogged_missed += ahead - 1
                n.last_seq = seq
                return _NO_ACTIONS
        return self._mtcalive_slow(n, seq, flags, uptime, now)

    def _mtcalive_slow(self, n: NetTrack, seq: int, flags: int, uptime: int, now: float) -> list:
        out: list = []
        h = self.hostname
        iface = n.net.iface
        wake = False
        if self.availability is Availability.OFFLINE:
            self.availability = Availability.ONLINE
            self._window_from = now
            out.append(Log("info", f"{h} mtcAlive ; going 'online'"))
            wake = True                          # the pxeboot monitor is no longer held
        if self._audit_start is not None:
            out.append(Log("info", f"{h} still seeing mtcAlive ({iface} seq:{seq}) after "
                                   f"{self._audit_sends} of {self.settings.offline_threshold} "
                                   f"offline audits ; exiting offline handling"))
            self._end_audit()
            self._audit_send_at = self._offline_at = INF
        first = not n.received
        result, gap = classify_seq(n.last_seq, seq, first)
        if result is SeqResult.GAP:
            n.missed += gap
        elif result is SeqResult.OUT_OF_SEQUENCE:
            n.out_of_sequence += 1
        if first or n.state is not NetState.OK:
            out.append(Log("info", f"{h} mtcAlive received from {iface} network with "
                                   f"uptime:{uptime} ; seq:{seq} ; state change"))
        elif result is SeqResult.GAP:
            expect = (n.last_seq + 1) & SEQ_MASK
            self._seq_event(n, now, out, gap, 0,
                            f"{h} mtcAlive received from {iface} network with uptime:{uptime} ; "
                            f"missed {gap} mtcAlive msgs ; expect:{expect} detect:{seq} ; "
                            f"correcting")
        elif result is SeqResult.OUT_OF_SEQUENCE:
            expect = (n.last_seq + 1) & SEQ_MASK
            self._seq_event(n, now, out, 0, 1,
                            f"{h} mtcAlive received from {iface} network with uptime:{uptime} ; "
                            f"out-of-sequence ; expect:{expect} detect:{seq} ; correcting")
        elif result is SeqResult.RESTART and self.settings.debug:
            out.append(Log("debug", f"{h} mtcAlive received from {iface} network with "
                                    f"uptime:{uptime} ; seq:{seq} ; mtcClient restart"))
        n.last_seq = seq
        n.received = True
        n.state = NetState.OK
        n.ok = True
        if n.net is Net.PXEBOOT and not self.pxeboot_supported:
            # Only a client with the feature sends pxeboot mtcAlive: after an agent restart
            # it is monitored from its first one, not ~60 s later at its next ready event
            # (the original waits for the ready event).
            self.pxeboot_supported = True
            self.pxe.to_start(now)
            out.append(Log("info", f"{h} pxeboot mtcAlive received before a ready event ; "
                                   f"monitoring pxeboot"))
            wake = True
        self._correct_lock_flags(flags, now, out)
        self._update_steady()
        if wake:
            self._wake()
        return out

    def _seq_event(self, n: NetTrack, now: float, out: list, missed: int, oos: int,
                   text: str) -> None:
        """Each gap and out-of-sequence is logged (agent.md §6), SEQ_LOG_BUDGET a window per
        host and network; past it, counted for the window's summary line."""
        if now - n.log_from >= SEQ_LOG_WINDOW_S:
            self._seq_summary(n, now, out)
            n.log_from, n.logged = now, 0
        if n.logged < SEQ_LOG_BUDGET and self.facts.seq_budget.take(now):
            n.logged += 1
            out.append(Log("warning", text))
            return
        if not n.unlogged and self._seq_pending is not None:
            self._seq_pending.add(self)
        n.unlogged += 1
        n.unlogged_missed += missed
        n.unlogged_oos += oos

    def _seq_summary(self, n: NetTrack, now: float, out: list, totals: list | None = None):
        """The window's summary line; past the table's budget, added to `totals` (events,
        missed, out-of-sequence, host-networks) for one line of all hosts instead."""
        if not n.unlogged:
            return
        if totals is None or self.facts.seq_budget.take(now):
            out.append(Log("warning", f"{self.hostname} mtcAlive received from {n.net.iface} "
                                      f"network ; {n.unlogged} more sequence events in "
                                      f"{SEQ_LOG_WINDOW_S:g} secs not logged (missed "
                                      f"{n.unlogged_missed} mtcAlive msgs ; {n.unlogged_oos} "
                                      f"out-of-sequence)"))
        else:
            totals[0] += n.unlogged
            totals[1] += n.unlogged_missed
            totals[2] += n.unlogged_oos
            totals[3] += 1
        n.unlogged = n.unlogged_missed = n.unlogged_oos = 0

    def sequence_summaries(self, now: float, out: list, totals: list | None = None) -> bool:
        """The summary of every window that has ended; True while one is still open."""
        pending = False
        for n in self.nets:
            if n.unlogged:
                if now - n.log_from >= SEQ_LOG_WINDOW_S:
                    self._seq_summary(n, now, out, totals)
                    n.log_from, n.logged = -INF, 0
                else:
                    pending = True
        return pending

    def on_identity(self, personality: str, cluster_host_ip: str | None, now: float) -> list:
        """What a valid mtcAlive says of the host (agent.md §4.1): its personality, and, where
        the agent has a cluster-host network, its cluster-host address, learned when the
        inventory has none (the original's `set_clstr_hostaddr`). Only when the text
        changed: the hot path does not come here."""
        out: list = []
        h = self.hostname
        if personality != self.reported_personality:
            self.reported_personality = personality
            if personality != self.entry.personality:
                self._throttled(("personality",), now, "info",
                                f"{h} mtcAlive reports personality '{personality}' ; the "
                                f"inventory says '{self.entry.personality}'", out)
        ip = cluster_host_ip or ""
        if not ip or ip == "none" or ip == self.clstr_ip:
            return out
        if self.entry.cluster_host_ip:
            self._throttled(("clstr-ip",), now, "warning",
                            f"{h} mtcAlive reports cluster_host_ip {ip} ; keeping the "
                            f"inventory's {self.entry.cluster_host_ip}", out)
            return out
        out.append(Log("info", f"{h} cluster address provision change from "
                               f"{self.learned_clstr_ip or 'none'} to {ip}"))
        self.learned_clstr_ip = ip
        self._reset_net(Net.CLSTR)
        self._wake()
        return out

    def _correct_lock_flags(self, flags: int, now: float, out: list) -> None:
        """agent.md §7.3: tell a client whose I_AM_LOCKED flag disagrees with inventory.

        The original re-sends on every mtcAlive (3 networks x every 5 s); we send the same
        correction at most once per online_period and log it once per episode.
        """
        reports_locked = bool(flags & _LOCKED_BIT)
        if self.admin is Admin.LOCKED and not reports_locked:
            want = Cmd.LOCKED
        elif self.admin is Admin.UNLOCKED and reports_locked:
            want = Cmd.UNLOCKED
        else:
            self._correcting = None
            return
        new_episode = self._correcting is not want
        if not new_episode and now - self._correction_at < self.settings.online_period_s:
            return
        self._correcting = want
        self._correction_at = now
        h, s = self.hostname, self.settings
        clstr = bool(self.clstr_ip)
        if want is Cmd.UNLOCKED:
            if new_episode:
                self._throttled(("correct", want), now, "warning",
                                f"{h} mtcAlive reporting locked while unlocked ; correcting",
                                out)
            out.append(Send(h, Net.MGMT, Cmd.UNLOCKED))
            if clstr:
                out.append(Send(h, Net.CLSTR, Cmd.UNLOCKED))
            return
        if self.facts.still_simplex:
            # /etc/platform/simplex present: no warning, no pxeboot, no persist flag.
            num, parm = 0, ()
        else:
            num, parm = 1, _LOCK_PERSIST_PARM
            if new_episode:
                self._throttled(("correct", want), now, "warning",
                                f"{h} mtcAlive reporting unlocked while locked ; correcting",
                                out)
            if s.pxeboot_provisioned and self.pxeboot_ip:
                out.append(Send(h, Net.PXEBOOT, Cmd.LOCKED, num, parm))
        out.append(Send(h, Net.MGMT, Cmd.LOCKED, num, parm))
        if clstr:
            out.append(Send(h, Net.CLSTR, Cmd.LOCKED, num, parm))

    # -- other events ---------------------------------------------------------------------------

    def on_ready(self, features: list | None, now: float):
        """The mtcClient ready event; `features` None for an older client (agent.md §5.7)."""
        out: list = []
        h, s = self.hostname, self.settings
        supported = features is not None and FEATURE_PXEBOOT_MTCALIVE in features
        if not self.client_ready:
            self.client_ready = True
            out.append(Log("info", f"{h} mtcClient ready"
                                   + (" ; with pxeboot mtcAlive support" if supported else "")))
        if supported and not self.pxeboot_supported:
            self.pxeboot_supported = True
            self.pxe.to_start(now)
            self._wake()
        elif not supported:
            # Unlike the original's sticky flag: a client that no longer offers the feature
            # (downgrade) is no longer monitored, and its alarm could never clear: clear it.
            self.pxeboot_supported = False
            self.pxe.to_start(now)
            self.pxe.clear_alarm(out)
        if supported and s.pxeboot_provisioned and not s.simplex and self.pxeboot_ip:
            out.append(Send(h, Net.PXEBOOT, Cmd.REQ_MTCALIVE))
        return out

    def on_ack(self, cmd: int, net: Net, now: float):
        """A command ACK from this host; kept for the command retry logic elsewhere."""
        self.last_ack[(cmd, net)] = now
        return _NO_ACTIONS

    def set_admin(self, state: Admin | str, now: float, source: str = "inventory"):
        """Lock or unlock, by the inventory or by the operator (`source`). Locking clears
        200.003 and holds the monitor."""
        state = Admin(state)
        self.admin_source = source
        if state is self.admin:
            return _NO_ACTIONS
        out = [Log("info", f"{self.hostname} administrative state {self.admin.value} -> "
                           f"{state.value} ({source})")]
        self.admin = state
        self._lock_bit = _LOCKED_BIT if state is Admin.LOCKED else 0
        self._correcting = None
        self.pxe.to_start(now)
        if state is Admin.LOCKED:
            self.pxe.clear_alarm(out)        # agent.md §5.5: no 200.003 on a locked host
        else:
            self._wake()
        self._update_steady()
        return out

    def set_pxeboot_ip(self, ip: str | None, now: float):
        """The host's pxeboot address from dnsmasq.hosts (or learned); "" or None: none."""
        ip = ip or ""
        old = self.pxeboot_ip
        if ip == old:
            return _NO_ACTIONS
        h = self.hostname
        self.pxeboot_ip = ip
        if not old:
            out = [Log("info", f"{h} pxeboot ip set to {ip}")]
        elif not ip:
            out = [Log("info", f"{h} pxeboot ip removed (was {old})")]
        else:
            out = [Log("info", f"{h} pxeboot ip changed from {old} to {ip}")]
            self._reset_net(Net.PXEBOOT)
        self.pxe.to_start(now)
        self._wake()
        return out

    def update_entry(self, entry: "HostEntry", now: float):
        """A changed inventory entry. Counters stay unless that network's address changed."""
        old, self.entry = self.entry, entry
        out: list = []
        if entry.mgmt_ip != old.mgmt_ip:
            self._reset_net(Net.MGMT)
        if entry.cluster_host_ip != old.cluster_host_ip:
            self._reset_net(Net.CLSTR)
            self.learned_clstr_ip = ""
        if entry.administrative != old.administrative:
            # contract §4: the file's value applies when that field itself changes; another
            # key's change leaves an operator's lock or unlock alone.
            out.extend(self.set_admin(entry.administrative, now, "inventory"))
        self._wake()
        return out

    def _reset_net(self, net: Net) -> None:
        n = self.nets[net]
        n.last_seq = n.missed = n.out_of_sequence = 0
        n.last_seen = None
        n.received = n.ok = False
        n.state = NetState.LOST

    def restore_alarm(self, now: float):
        """200.003 found active at agent start: resume in the loss state (agent.md §5.3)."""
        h, s = self.hostname, self.settings
        self.pxe.restore()
        out = [Log("info", f"{h} found mtcAlive alarm ; loaded {ALARM_SEVERITY}")]
        if s.simplex or not s.pxeboot_provisioned or self.admin is Admin.LOCKED:
            # The monitor never runs here (simplex, no pxeboot), or locked hosts carry no
            # 200.003 (agent.md §5.5): clear now rather than keep a stale alarm.
            self.pxe.clear_alarm(out)
        self._wake()
        return out

    def note_stall(self, now: float) -> None:
        """The loop was stalled: give every window a fresh start instead of blaming the host."""
        self._window_from = now
        if self._audit_start is not None:
            self._end_audit()
            self._audit_send_at = self._offline_at = INF
            self._update_steady()
        self.pxe.restart_window(now)

    # -- audit ----------------------------------------------------------------------------------

    def audit(self, now: float):
        """Run whatever is due at `now`: offline audit, lost windows, the pxeboot monitor."""
        out: list = []
        if self.availability is Availability.ONLINE:
            self._audit_availability(now, out)
        self._audit_pxeboot(now, out)
        return out if out else _NO_ACTIONS

    def _last_heard(self) -> float:
        last = self._window_from
        for n in self.nets:
            if n.last_seen is not None and n.last_seen > last:
                last = n.last_seen
        return last

    def _audit_availability(self, now: float, out: list) -> None:
        s = self.settings
        h = self.hostname
        lost_s = lost_after_s(s)
        for net in (Net.MGMT, Net.CLSTR):
            n = self.nets[net]
            if n.state is NetState.OK and self._provisioned(net):
                if now >= max(n.last_seen, self._window_from) + lost_s:
                    n.state = NetState.LOST
                    n.ok = False
                    out.append(Log("info", f"{h} {n.net.iface} network mtcAlive lost ; none for "
                                           f"{s.lost_windows} x {s.online_period_s:g} secs"))
        if self._audit_start is None:
            silent_until = self._last_heard() + s.online_period_s
            if now < silent_until:
                return
            # contract §8: one silent online_period on every network starts the offline audit.
            # It starts when that period ended, not when this audit call noticed it (at most one
            # offline_period earlier, in case this call is late), so the audit tick's
            # granularity is not counted twice in the time to offline.
            start = max(silent_until, now - s.offline_period_s)
            self._audit_start = start
            if self._auditing is not None:
                self._auditing.add(self)
            self._audit_sends = self._audit_slot = 0
            self._audit_send_at = start
            self._offline_at = start + s.offline_period_s * s.offline_threshold
            self._update_steady()
            out.append(Log("info", f"{h} starting {_ms(s.offline_period_s)} msec offline audit "
                                   f"({self.admin.value}-{self.availability.value})"))
        if now >= self._offline_at:
            self._declare_offline(out)
            return
        if now >= self._audit_send_at:
            out.append(Send(h, Net.MGMT, Cmd.REQ_MTCALIVE))
            if self.clstr_ip:
                out.append(Send(h, Net.CLSTR, Cmd.REQ_MTCALIVE))
            self._audit_sends += 1
            # Slots are start + k * period (no drift); a late loop skips slots, not bursts.
            late = int((now - self._audit_start) / s.offline_period_s) + 1
            self._audit_slot = max(self._audit_slot + 1, late)
            self._audit_send_at = self._audit_start + self._audit_slot * s.offline_period_s

    def _end_audit(self) -> None:
        self._audit_start = None
        if self._auditing is not None:
            self._auditing.discard(self)

    def _declare_offline(self, out: list) -> None:
        s = self.settings
        self.availability = Availability.OFFLINE
        self._end_audit()
        self._audit_send_at = self._offline_at = INF
        self.client_ready = False
        for n in self.nets:               # agent.md §4.3: sequence numbers reset on offline
            n.last_seq = 0
            n.received = n.ok = False
            n.state = NetState.LOST
        self._correcting = None
        self._update_steady()
        out.append(Log("info", f"{self.hostname} going offline ; (threshold "
                               f"({_ms(s.offline_period_s)} msec * {s.offline_threshold})"))

    # -- the pxeboot monitor's gate (agent.md §5.0) --------------------------------------

    def _held(self) -> bool:
        # Locked or disabled (offline here) holds the monitor in START; counters stay.
        return self.admin is Admin.LOCKED or self.availability is Availability.OFFLINE

    def _audit_pxeboot(self, now: float, out: list) -> None:
        pxe = self.pxe
        if not self.pxeboot_monitored or self._held():
            if self.admin is Admin.LOCKED:
                pxe.clear_alarm(out)
            if pxe.stage is not PxeStage.START:
                pxe.to_start(now)
            return
        pxe.run(now, self.nets[Net.PXEBOOT], out)

    # -- compatibility views of the monitor, for callers and the JSON ----------------------

    @property
    def alarm(self) -> bool:
        return self.pxe.alarm

    @property
    def stage(self) -> PxeStage:
        return self.pxe.stage

    @property
    def pxe_miss(self) -> int:
        return self.pxe.miss

    @property
    def pxe_loss(self) -> int:
        return self.pxe.loss

    # -- scheduling and reporting -------------------------------------------------------------

    def next_deadline(self) -> float:
        """The earliest `now` at which `audit` has something to do (INF: nothing until an event)."""
        s = self.settings
        at = INF
        if self.availability is Availability.ONLINE:
            if self._audit_start is not None:
                at = min(self._audit_send_at, self._offline_at)
            else:
                at = self._last_heard() + s.online_period_s
            lost_s = lost_after_s(s)
            for net in (Net.MGMT, Net.CLSTR):
                n = self.nets[net]
                if n.state is NetState.OK and self._provisioned(net):
                    at = min(at, max(n.last_seen, self._window_from) + lost_s)
        if self.pxeboot_monitored and not self._held():
            at = min(at, self.pxe.deadline())
        elif self.pxe.alarm and self.admin is Admin.LOCKED:
            at = min(at, self.pxe.start_at)
        return at

    def to_json(self, now: float) -> dict:
        """The contract §5 host object, plus `pxeboot_monitor`, `alarm`, `client_ready`."""
        e = self.entry
        networks = {}
        for n in self.nets:
            networks[n.net.key] = {
                "state": self.net_state(n.net).value,
                "last_seq": n.last_seq,
                "missed": n.missed,
                "out_of_sequence": n.out_of_sequence,
                "last_seen_s": None if n.last_seen is None else round(now - n.last_seen, 3),
                "received": n.count,
            }
        audit = None
        if self._audit_start is not None:
            audit = {"sends": self._audit_sends, "threshold": self.settings.offline_threshold}
        return {
            "hostname": self.hostname,
            "personality": e.personality,
            "administrative": self.admin.value,
            "administrative_source": self.admin_source,
            "availability": self.availability.value,
            "mgmt_ip": e.mgmt_ip,
            "cluster_host_ip": self.clstr_ip,
            "cluster_host_ip_source": ("inventory" if e.cluster_host_ip else
                                       "mtcAlive" if self.learned_clstr_ip else None),
            "reported_personality": self.reported_personality or None,
            "pxeboot_ip": self.pxeboot_ip,
            "networks": networks,
            "pxeboot_monitor": {"monitored": self.pxeboot_monitored,
                                "supported": self.pxeboot_supported,
                                **self.pxe.to_json()},
            "alarm": ALARM_SEVERITY if self.pxe.alarm else None,
            "client_ready": self.client_ready,
            "offline_audit": audit,
        }


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


# parm[] of a LOCKED command that asks the client to persist the lock (M/mtcCtrlMsg.cpp:814-838)
_LOCK_PERSIST_PARM = tuple(int(i == PARM_LOCK_PERSIST) for i in range(PARM_LOCK_PERSIST + 1))


# -- all hosts -----------------------------------------------------------------------------

_INVENTORY_FIELDS = ("personality", "mgmt_mac", "mgmt_ip", "cluster_host_ip", "administrative")


class HostTable:
    """Every maintained host, by name and by address, audited from a heap of deadlines.

    Hosts tell the table when their deadline may have moved earlier (going online, unlock,
    ready...), so `audit` only visits hosts that are due. Later-moving deadlines need no
    notice: a stale heap entry just costs one idle `audit` call (lazy invalidation).
    """

    def __init__(self, settings: Settings,
                 host_factory: Callable[..., HostMonitor] = HostMonitor):
        self.settings = settings
        self.hosts: dict[str, HostMonitor] = {}
        self._factory = host_factory
        self._by_addr: dict[str, HostMonitor] = {}
        self._claims: dict[str, list[HostMonitor]] = {}
        self._heap: list = []
        self._tok = itertools.count()
        self._woken: list[HostMonitor] = []
        self._auditing: set[HostMonitor] = set()     # hosts in an offline audit (few)
        self._seq_pending: set[HostMonitor] = set()  # hosts with sequence events not logged
        self.facts = Facts()

    def __len__(self) -> int:
        return len(self.hosts)

    def __iter__(self):
        return iter(self.hosts.values())

    def __contains__(self, hostname: str) -> bool:
        return hostname in self.hosts

    def get(self, hostname: str) -> HostMonitor | None:
        return self.hosts.get(hostname)

    def lookup(self, addr: str) -> HostMonitor | None:
        """The host owning a source address (mgmt, cluster-host or pxeboot)."""
        host = self._by_addr.get(addr)
        if host is None and ("%" in addr or addr.startswith("::ffff:")):
            host = self._by_addr.get(addr.split("%", 1)[0].removeprefix("::ffff:"))
        return host

    # -- address index: first claimant wins, later ones are remembered for when it leaves --

    def _claim(self, addr: str, host: HostMonitor, out: list) -> None:
        if not addr:
            return
        claims = self._claims.setdefault(addr, [])
        if host in claims:
            return
        if claims:
            out.append(Log("warning", f"{host.hostname} address {addr} is also "
                                      f"{claims[0].hostname}'s ; keeping {claims[0].hostname}"))
        claims.append(host)
        self._by_addr[addr] = claims[0]

    def _unclaim(self, addr: str, host: HostMonitor) -> None:
        claims = self._claims.get(addr)
        if not addr or not claims or host not in claims:
            return
        claims.remove(host)
        if claims:
            self._by_addr[addr] = claims[0]
        else:
            del self._claims[addr]
            del self._by_addr[addr]

    @staticmethod
    def _addrs(host: HostMonitor) -> tuple:
        return (host.entry.mgmt_ip, host.clstr_ip, host.pxeboot_ip)

    # -- inventory ----------------------------------------------------------------------------

    def apply_inventory(self, inventory: "Inventory", now: float) -> tuple[list, list, list, list]:
        """Make the table match `inventory`: (added, removed, changed, actions)."""
        added, removed, changed, out = [], [], [], []
        initial = not self.hosts
        new = inventory.hosts
        for name in [n for n in self.hosts if n not in new]:
            host = self.hosts.pop(name)
            for addr in self._addrs(host):
                self._unclaim(addr, host)
            host._waker = None
            host._end_audit()
            host._auditing = None
            host._seq_pending = None
            self._seq_pending.discard(host)
            host._sched_tok = -1
            removed.append(name)
            out.append(Log("info", f"{name} removed from inventory"))
            host.pxe.clear_alarm(out)
        for name, entry in new.items():
            host = self.hosts.get(name)
            if host is None:
                host = self._factory(entry, self.settings, now)
                host.facts = self.facts
                self.hosts[name] = host
                host._waker = self._woken.append
                host._auditing = self._auditing
                host._seq_pending = self._seq_pending
                self._woken.append(host)
                for addr in self._addrs(host):
                    self._claim(addr, host, out)
                added.append(name)
                if not initial:
                    out.append(Log("info", f"{name} added to inventory ({entry.personality})"))
                continue
            old = host.entry
            diffs = [f"{k} {getattr(old, k) or 'none'} -> {getattr(entry, k) or 'none'}"
                     for k in _INVENTORY_FIELDS if getattr(old, k) != getattr(entry, k)]
            if not diffs:
                continue
            changed.append(name)
            out.append(Log("info", f"{name} inventory change: " + ", ".join(diffs)))
            for addr in self._addrs(host):
                self._unclaim(addr, host)
            out.extend(host.update_entry(entry, now))
            for n in host.nets:
                n.text_prefix = None
            for addr in self._addrs(host):
                self._claim(addr, host, out)
        if initial and added:
            out.append(Log("info", f"inventory: {len(added)} hosts"))
        return added, removed, changed, out

    def on_identity(self, host: HostMonitor, personality: str, cluster_host_ip: str | None,
                    now: float) -> list:
        """A valid mtcAlive's personality and cluster-host address (HostMonitor.on_identity);
        a learned cluster-host address joins the address index."""
        old = host.clstr_ip
        out = host.on_identity(personality, cluster_host_ip, now)
        if host.clstr_ip != old:
            self._unclaim(old, host)
            self._claim(host.clstr_ip, host, out)
        return out

    def sequence_summaries(self, now: float) -> list:
        """The summary lines of sequence-event windows that ended (the agent asks once a
        minute, so that no count waits for a next event to be told)."""
        out: list = []
        totals = [0, 0, 0, 0]
        for host in list(self._seq_pending):
            if not host.sequence_summaries(now, out, totals):
                self._seq_pending.discard(host)
        if totals[0]:
            out.append(Log("warning", f"{totals[0]} more sequence events of {totals[3]} host "
                                      f"networks not logged in {SEQ_LOG_WINDOW_S:g} secs "
                                      f"(missed {totals[1]} mtcAlive msgs ; {totals[2]} "
                                      f"out-of-sequence) ; counts in mtce hosts"))
        return out

    def forget_texts(self) -> None:
        """A reload may change what makes an mtcAlive valid: every text is parsed again."""
        for host in self.hosts.values():
            for n in host.nets:
                n.text_prefix = None

    def set_pxeboot_ip(self, hostname: str, ip: str | None, now: float):
        """A host's pxeboot address from dnsmasq.hosts; unknown hosts are ignored."""
        host = self.hosts.get(hostname)
        if host is None or (ip or "") == host.pxeboot_ip:
            return _NO_ACTIONS
        out: list = []
        self._unclaim(host.pxeboot_ip, host)
        out.extend(host.set_pxeboot_ip(ip, now))
        self._claim(host.pxeboot_ip, host, out)
        return out

    def restore_alarms(self, hostnames: Iterable[str], now: float) -> list:
        """Active 200.003 alarms found at start; one for a host no longer listed is cleared."""
        out: list = []
        for name in hostnames:
            host = self.hosts.get(name)
            if host is None:
                out.append(Log("info", f"{name} not in inventory ; clearing 'mtcAlive' alarm "
                                       f"({ALARM_MTCALIVE})"))
                out.append(ClearAlarm(name, ALARM_MTCALIVE))
            else:
                out.extend(host.restore_alarm(now))
        return out

    def apply_settings(self, settings: Settings, now: float) -> None:
        """New timers after a reload; every host is rescheduled."""
        self.settings = settings
        for host in self.hosts.values():
            host.settings = host.pxe.settings = settings
            self._woken.append(host)

    # -- scheduling ---------------------------------------------------------------------------

    def _schedule(self, host: HostMonitor) -> None:
        at = host.next_deadline()
        if at < host._sched_at:
            tok = next(self._tok)
            host._sched_tok, host._sched_at = tok, at
            heapq.heappush(self._heap, (at, tok, host))

    def _drain_woken(self) -> None:
        woken = self._woken
        while woken:
            host = woken.pop()
            if host._waker is not None:
                self._schedule(host)

    def next_offline_at(self) -> float:
        """The earliest moment a host in an offline audit is due to go offline (INF: none).

        The agent audits on an offline_period grid; it also wakes at this moment, so that
        offline is declared on time and not up to one grid step late."""
        return min((h._offline_at for h in self._auditing), default=INF)

    def next_deadline(self) -> float:
        """When `audit` next has work (INF: none until an event)."""
        self._drain_woken()
        heap = self._heap
        while heap and heap[0][1] != heap[0][2]._sched_tok:
            heapq.heappop(heap)
        return heap[0][0] if heap else INF

    def audit(self, now: float) -> list:
        """Audit the hosts that are due at `now`; actions of all of them."""
        self._drain_woken()
        heap = self._heap
        out: list = []
        due: list[HostMonitor] = []
        while heap and heap[0][0] <= now:
            _, tok, host = heapq.heappop(heap)
            if tok != host._sched_tok:
                continue                       # superseded or removed
            host._sched_tok, host._sched_at = -1, INF
            actions = host.audit(now)
            if actions:
                out.extend(actions)
            due.append(host)
        for host in due:                       # after the loop: a host is audited once per call
            self._schedule(host)
        self._drain_woken()
        return out

    def note_stall(self, gap_s: float, now: float) -> list:
        """The loop noticed it was stalled `gap_s` seconds: fresh windows for every host."""
        for host in self.hosts.values():
            host.note_stall(now)
            self._woken.append(host)
        return [Log("warning", f"main loop stalled for {gap_s:.1f} secs ; restarting the "
                               f"mtcAlive audit windows of {len(self.hosts)} hosts")]

    def to_json(self, now: float) -> list:
        return [host.to_json(now) for host in self.hosts.values()]
