"""A token bucket: how many log lines a kind of cause may still write. Pure (no I/O, no
clock of its own: `now` comes in), so that agent_host.py can use it as logs.py does."""

from __future__ import annotations


class Budget:
    """A token bucket shared by the throttles of one kind of cause: `burst` lines at once,
    then `per_minute` more a minute. Pure: `now` comes from the caller's clock.

    Per-key throttling alone does not bound a log: causes keyed on what a sender chooses
    (addresses, hosts, codes, reasons) multiply. The budget bounds the sum.
    """

    def __init__(self, burst: int, per_minute: float):
        if burst < 1 or per_minute <= 0:
            raise ValueError("a log budget needs a burst of 1 or more and a positive rate")
        self.burst, self.rate_s = float(burst), per_minute / 60.0
        self._tokens = float(burst)
        self._at: float | None = None

    def take(self, now: float) -> bool:
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
