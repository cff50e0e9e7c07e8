"""Time, injected: `Clock` for the daemons, `FakeClock` for tests.

`now()` is monotonic seconds for every interval and deadline; `wall()` is for display only
(ISO times, log stamps). Stdlib only, no I/O.
"""

import time


class Clock:
    """The real clocks."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def uptime(self) -> int:
        """Seconds since boot (CLOCK_MONOTONIC, as the original's mtcAlive parm[0])."""
        return int(time.monotonic())

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait(self, selector, seconds: float) -> None:
        """Sleep up to `seconds`, less if a file of `selector` is ready first (a selector
        with nothing registered is a plain sleep)."""
        if selector.get_map():
            selector.select(seconds)
        else:
            time.sleep(seconds)


class FakeClock(Clock):
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1_780_000_000.0):
        self._now = float(start)
        self._wall_offset = wall_start - start

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def uptime(self) -> int:
        return int(self._now)

    def sleep(self, seconds: float) -> None:
        """A test's sleep is the clock moving on."""
        self.advance(seconds)

    def wait(self, selector, seconds: float) -> None:
        """A test's pause is the whole pause: the clock moves on."""
        self.advance(seconds)

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        self._now += seconds
        return self._now
