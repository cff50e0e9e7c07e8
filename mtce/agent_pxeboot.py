"""One host's pxeboot mtcAlive monitor (docs/protocol.md §5.5): the stages with an enforced
transition table, the miss and loss counters, alarm 200.003. Pure: `now` comes in, actions
(`Send`, `Log`, `RaiseAlarm`, `ClearAlarm`) go out.
"""

from __future__ import annotations

import enum
from typing import Callable

from mtce.agent_decisions import ALARM_SEVERITY, INF, ClearAlarm, RaiseAlarm, Send, Settings
from mtce.agent_seqs import SEQ_HALF, SEQ_MASK, NetTrack
from mtce.decisions import Log
from mtce.states import ALARM_MTCALIVE, Cmd, Net

PXEBOOT_MISS_THRESHOLD = 6      # PXEBOOT_MTCALIVE_LOSS_THRESHOLD (C/nodeClass.h:344)
PXEBOOT_LOSS_THRESHOLD = 2      # PXEBOOT_MTCALIVE_LOSS_ALARM_THRESHOLD (C/nodeClass.h:345)
PXEBOOT_LOG_THROTTLE = 60       # lost / not-seen-yet logs: 1 in 60 CHECKs (C/nodeClass.h:346)


def pxeboot_alarm_after_s(s: Settings) -> float:
    """Seconds of total pxeboot loss, from a clean monitor start, to 200.003
    (docs/protocol.md §5.5)."""
    return s.pxeboot_window_s * PXEBOOT_MISS_THRESHOLD * PXEBOOT_LOSS_THRESHOLD


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


# docs/protocol.md §5.5. Every stage may go back to START: blocking, support or address changes.
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



class PxebootMonitor:
    """One host's pxeboot mtcAlive monitor (docs/protocol.md §5.5): stages, miss/loss, 200.003.

    Pure FSM; its owner `HostMonitor` decides when it may run (its gate) and hands it the
    pxeboot `NetTrack` to judge. Stage changes go through `stage_to`, which enforces
    PXE_TRANSITIONS.
    """

    def __init__(self, hostname: str, settings: Settings, now: float, facts=None):
        self.hostname = hostname
        self.settings = settings
        self.facts = facts                   # its `grid_s`: where a window may end
        self.stage = PxeStage.START
        self.miss = 0
        self.loss = 0
        self.alarm = False
        # docs/contract.md §8 "Network state": pxeboot is `lost` from a declared loss (FAIL) to the
        # next good window; any other return to START withdraws the declaration.
        self.lost = False
        # 200.003 only for a client that announced the feature (docs/contract.md §8 "Revision"); its
        # owner sets this from the ready events.
        self.may_alarm = False
        self.mnfa_held = False               # in a multi-node failure (agent_mnfa): no 200.003
        self.clean = False                   # the last window was good with no miss to work off
        self.went_lost = self.went_ok = 0    # declared losses, and returns from one
        # Told of each declared loss before its 200.003 is decided (now, out): the table's
        # MNFA may hold the host (`mnfa_held`), agent_pxeboot_gate.
        self.on_loss: Callable[[float, list], None] | None = None
        self.start_at = now                  # when START was entered: due from then on
        self.timer = INF                     # the WAIT deadline
        self._save: int | None = None        # seq at the last CHECK; None: none since START
        self._count_saved = 0                # pxeboot count at START / the last CHECK
        self._lost_logs = 0                  # the two 1-in-60 throttles
        self._not_seen_logs = 0

    def stage_to(self, new: PxeStage) -> None:
        if new not in PXE_TRANSITIONS[self.stage]:
            raise TransitionError(f"{self.hostname} pxeboot monitor: illegal stage change "
                                  f"{self.stage.label} -> {new.label}")
        self.stage = new

    def to_start(self, now: float) -> None:
        """Back to START (blocked, restarted): the next run begins with a request; a declared
        loss is withdrawn."""
        self._restart(now)
        self._not_lost()

    def _restart(self, now: float) -> None:
        if self.stage is not PxeStage.START:
            self.stage_to(PxeStage.START)
        self.start_at = now
        self.timer = INF
        self.clean = False

    def _not_lost(self) -> None:
        if self.lost:
            self.lost = False
            self.went_ok += 1

    def debounce(self) -> None:
        """Held by an MNFA found at start: its return counts after 200.003's clear debounce
        (7 good windows), as the agent before this one would have counted it."""
        if not self.alarm:
            self.miss = PXEBOOT_MISS_THRESHOLD

    def loss_begins(self) -> None:
        """A multi-node failure that held this host timed out (agent_mnfa): its loss is
        handled from now on as if it began now (the miss and loss counts start again)."""
        self.miss = self.loss = 0

    def deadline(self) -> float:
        return self.timer if self.stage is PxeStage.WAIT else self.start_at

    def restart_window(self, now: float) -> None:
        """After a loop stall: the window in progress starts again from `now`."""
        if self.stage is PxeStage.WAIT:
            self.timer = now + self.settings.pxeboot_window_s

    def restore(self) -> None:
        """200.003 found active at agent start: the loss state (docs/protocol.md §5.5)."""
        self.alarm = True
        self.loss = PXEBOOT_LOSS_THRESHOLD
        self.miss = PXEBOOT_MISS_THRESHOLD

    def run(self, now: float, pxe: NetTrack, out: list) -> None:
        """Pass through the stages until the monitor waits (one window) again."""
        if self.stage is PxeStage.WAIT:
            if now < self.timer:
                return
            if self._good_quiet_window(now, pxe):
                return
        debug = self.settings.debug
        while True:
            stage = self.stage
            if stage is PxeStage.WAIT:
                if now < self.timer:
                    return
                self.stage_to(PxeStage.CHECK)
                self._check(pxe, out)
            elif stage is PxeStage.START:
                # docs/protocol.md §6: `last` is zeroed at every START, pxeboot only. The next
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
                self.timer = self._window_end(now)
                self.stage_to(PxeStage.WAIT)
            elif stage is PxeStage.FAIL:
                if not self.lost:
                    self.lost = True
                    self.went_lost += 1
                    if self.on_loss is not None:
                        self.on_loss(now, out)
                self._fail(out)
                self._restart(now)
            else:   # CHECK never rests: _check always leaves it
                raise TransitionError(f"{self.hostname} pxeboot monitor resting in {stage}")
            if debug:
                out.append(Log("debug", f"{self.hostname} stage {stage.label} -> "
                                        f"{self.stage.label}"))

    def _good_quiet_window(self, now: float, pxe: NetTrack) -> bool:
        """The common CHECK in one step: the window held a newer pxeboot mtcAlive and there
        is no miss, loss, alarm or debug line to tell; WAIT -> CHECK -> MONITOR -> WAIT as
        the stages below would go, with nothing to say (a 2,000-host agent does this 200
        times a second)."""
        save = self._save
        if save is None or self.miss or self.loss or self.alarm or self.lost or \
                self.settings.debug or pxe.count == self._count_saved:
            return False
        cur = pxe.last_seq
        if not 0 < ((cur - save) & SEQ_MASK) < SEQ_HALF:
            return False
        self._count_saved = pxe.count
        self._save = cur
        self._lost_logs = self._not_seen_logs = 0
        self.timer = self._window_end(now)
        self.clean = True
        return True

    def _window_end(self, now: float) -> float:
        """One window from `now`; on the agent's long read grid (issue 25), at the point of the
        grid nearest to that: the agent reads and judges the window there, neither a tick
        later (a longer window each time: 200.003 late) nor counting past its end."""
        end = now + self.settings.pxeboot_window_s
        grid = self.facts.grid_s if self.facts is not None else 0.0
        return round(end / grid) * grid if grid else end

    def _check(self, pxe: NetTrack, out: list) -> None:
        """A window ended: classify what it saw, then handle that (docs/protocol.md §5.5)."""
        result, cur, save = self._classify(pxe)
        if result is _Check.GOOD:
            self._on_good(out)
        elif result is _Check.OUT_OF_SEQUENCE:
            self._on_out_of_sequence(cur, save, out)
        else:
            self._on_miss(pxe, out)
        if self.miss > PXEBOOT_MISS_THRESHOLD:
            self.miss = PXEBOOT_MISS_THRESHOLD
        self._save = cur
        if self.settings.debug and (self.miss or self.loss):
            out.append(Log("debug", f"{self.hostname} pxeboot mtcAlive: Miss: {self.miss} of "
                                    f"{PXEBOOT_MISS_THRESHOLD}  ,  Loss: {self.loss} of "
                                    f"{PXEBOOT_LOSS_THRESHOLD}"))

    def _classify(self, pxe: NetTrack) -> tuple:
        """(GOOD, MISS or OUT_OF_SEQUENCE, this window's sequence number, the last window's):
        nothing received is a miss, a sequence number not past the last one too, one that went
        back is a client restart."""
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
        return result, cur, save

    def _on_good(self, out: list) -> None:
        self.clean = self.miss == 0
        if self.miss > 0:
            if not self.alarm and self.loss > 0:
                # Recovering from loss 1: start the debounce over (docs/protocol.md §5.5).
                self.miss = PXEBOOT_MISS_THRESHOLD
                self.loss = 0
            tail = "; alarm clear when 0 " if self.alarm else ""
            out.append(Log("info", f"{self.hostname} pxeboot mtcAlive miss count {self.miss} ; "
                                   f"decrement {tail}; recovery"))
            self.miss -= 1
        else:
            self.loss = 0
            self.clear_alarm(out)
        self._lost_logs = self._not_seen_logs = 0
        self._not_lost()
        self.stage_to(PxeStage.MONITOR)

    def _on_out_of_sequence(self, cur: int, save: int, out: list) -> None:
        # The mtcClient restarted (its sequence went back): one miss and a request.
        self.clean = False
        self.miss += 1
        out.append(Log("warning", f"{self.hostname} pxeboot mtcAlive miss count {self.miss} ; "
                                  f"loss count {self.loss} ; out-of-sequence ; this:{cur}  "
                                  f"last:{save}"))
        self.stage_to(PxeStage.SEND if self.miss < PXEBOOT_MISS_THRESHOLD else PxeStage.FAIL)

    def _on_miss(self, pxe: NetTrack, out: list) -> None:
        h = self.hostname
        self.clean = False
        self.miss += 1
        if self.miss < PXEBOOT_MISS_THRESHOLD:
            out.append(Log("warning", f"{h} pxeboot mtcAlive miss count {self.miss} ; "
                                      f"loss count {self.loss} ; sending request"))
            self.stage_to(PxeStage.SEND)
            return
        if pxe.received:
            self._lost_logs += 1
            if self._lost_logs == 1:
                out.append(Log("warning", f"{h} pxeboot mtcAlive lost ; missed: {self.miss} ; "
                                          f"last: count:{pxe.count} seq: {pxe.last_seq} ; "
                                          f"sending request"))
            if self._lost_logs >= PXEBOOT_LOG_THROTTLE:
                self._lost_logs = 0
        else:
            self._not_seen_logs += 1
            if self._not_seen_logs == 1:
                out.append(Log("info", f"{h} pxeboot mtcAlive not seen yet ; sending request"))
            if self._not_seen_logs >= PXEBOOT_LOG_THROTTLE:
                self._not_seen_logs = 0
        self.stage_to(PxeStage.FAIL)

    def _fail(self, out: list) -> None:
        if self.alarm:
            return                       # already asserted: counters stay, START re-requests
        held = self.loss >= PXEBOOT_LOSS_THRESHOLD
        self.loss = min(self.loss + 1, PXEBOOT_LOSS_THRESHOLD)
        h = self.hostname
        if self.loss < PXEBOOT_LOSS_THRESHOLD:
            out.append(Log("warning", f"{h} pxeboot mtcAlive lost ; "
                                      f"{PXEBOOT_LOSS_THRESHOLD - self.loss} more loss "
                                      f"before alarm assertion"))
            self.miss = 0
        elif self.mnfa_held:
            pass                         # one fault of many (agent_mnfa): its alarm is mtce.mnfa
        elif not self.may_alarm:
            # Held as if asserted (counters stay, each window re-requests); the next loss
            # after the client announces the feature raises it.
            if not held:
                out.append(Log("warning", f"{h} pxeboot mtcAlive lost ({self.loss}) ; no "
                                          f"{ALARM_MTCALIVE} until its mtcClient announces the "
                                          f"pxeboot_mtcAlive feature"))
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
        # docs/protocol.md §5.5: the clear logs the raise's text, at info (a copy-paste kept on
        # purpose).
        out.append(Log("info", f"{h} {ALARM_SEVERITY} Pxeboot mtcAlive messaging failure"))
        out.append(Log("info", f"{h} clearing 'mtcAlive' alarm ({ALARM_MTCALIVE})"))
        out.append(ClearAlarm(h, ALARM_MTCALIVE))

    def to_json(self) -> dict:
        return {"stage": self.stage.value, "miss": self.miss, "loss": self.loss}

    def network_json(self) -> dict:
        """The monitor's own view beside the pxeboot state (docs/contract.md §8 "Network state")."""
        return {"misses": self.miss, "losses": self.loss, "alarm": self.alarm}
