"""When the agent reads its sockets (docs/bench.md, issue 13): the cost at a steady load is
per wake-up as much as per datagram, so datagrams are let gather and read in batches.

Pure: the clock's `now` comes in. At light load every socket is read once a tick of the audit
grid (the `offline_period`, or the largest fraction of it not above COALESCE_MAX_S), and the
audit that runs on the same tick sees what gathered before it decides; a datagram waits at most
one tick. When nothing needs the fine grid (`long`: every datagram comes with its kernel
arrival time, no host is in an offline audit, no command waits for its ACK) the grid is
`long_s()`, at most LONG_TICK_S (issue 25 item 3). At a
higher rate the pause is the time `max_pile` datagrams take to arrive (half of
what the smallest receive buffer holds, so a pause never overflows one); after a full batch,
or when that time is under COALESCE_MIN_S, there is none.
"""

from __future__ import annotations

import math

COALESCE_MAX_S = 0.1            # at light load, sockets are read on a grid this fine at most
COALESCE_MAX_PILE = 256         # a pause never lets more pile up until the agent has said
                                # how much its receive buffers hold (`max_pile`)
COALESCE_MIN_S = 0.005          # no shorter pause: above 51,200/s the agent is busy anyway,
                                # and a pause would only cost it reading time
RATE_SAMPLE_S = 0.5             # the recent receive rate is measured over at least this long
LONG_TICK_S = 1.0               # the grid when nothing needs the fine one: no longer than
                                # half an offline audit, and a whole number of fine ticks


def _whole(x: float) -> bool:
    return abs(x - round(x)) < 1e-6


class Pacer:
    def __init__(self, period_s: float, now: float, audit_s: float = math.inf,
                 window_s: float = 0.0):
        self.period_s = period_s
        self.audit_s = audit_s          # how long an offline audit lasts
        self.window_s = window_s        # the pxeboot window: a whole number of long ticks
        self.long = False               # on the long grid (the agent decides at each audit)
        self.saturated = False          # a drain of this turn read a full batch
        self.rate = 0.0                 # datagrams a second, recently
        self._mark = (now, 0)
        self.max_pile = COALESCE_MAX_PILE
        self._turn = (now, 0)           # when the last pause was asked, datagrams read since

    def reconfigure(self, period_s: float, audit_s: float = math.inf,
                    window_s: float = 0.0) -> None:
        """A reload's offline_period (the audit already scheduled keeps its time)."""
        self.period_s, self.audit_s, self.window_s = period_s, audit_s, window_s

    def tick_s(self) -> float:
        """The grid: the offline audit period, or its largest fraction not above
        COALESCE_MAX_S, so that the audit is on the grid too."""
        return self.period_s / math.ceil(self.period_s / COALESCE_MAX_S - 1e-9)

    def long_s(self) -> float:
        """The long grid: LONG_TICK_S, or less to fit half an offline audit, in fine ticks,
        and a divisor of the pxeboot window, whose ends are then points of the grid (a
        window judged at the read after its end would be up to a tick longer)."""
        tick = self.tick_s()
        ticks = max(1, math.floor(min(LONG_TICK_S, self.audit_s / 2) / tick + 1e-9))
        window = self.window_s / tick
        while ticks > 1 and window and not _whole(window / ticks):
            ticks -= 1
        return tick * ticks

    def next_tick(self, now: float) -> float:
        tick = self.long_s() if self.long else self.tick_s()
        return (math.floor(now / tick + 1e-9) + 1) * tick

    def count(self, now: float, received: int) -> None:
        """The receive counter, at each audit: the recent rate."""
        then, before = self._mark
        if now - then >= RATE_SAMPLE_S:
            self.rate = (received - before) / (now - then)
            self._mark = (now, received)

    def read(self, count: int) -> None:
        """Datagrams a drain read (the rate of the last turn, for the next pause)."""
        at, read = self._turn
        self._turn = (at, read + count)

    def pause(self, now: float) -> float:
        """Seconds the loop may sleep before its next wait: to the next tick, or as long as
        `max_pile` datagrams take at the recent rate or the last turn's, whichever is higher
        (a step from idle is seen at once, not at the next rate sample)."""
        at, read = self._turn
        self._turn = (now, 0)
        rate = self.rate
        if now > at and read / (now - at) > rate:
            rate = read / (now - at)
        if self.saturated:
            self.saturated = False
            return 0.0
        pause = self.next_tick(now) - now
        if rate * pause > self.max_pile:
            pause = self.max_pile / rate
        return pause if pause >= COALESCE_MIN_S else 0.0
