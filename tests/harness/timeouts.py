"""The per-test time limit (conftest.py's hooks): no test phase may hang the suite. A phase that
runs past `test_timeout` (pytest.ini) or its own `@pytest.mark.timeout(s)` gets TestTimedOut
from SIGALRM, with every thread's traceback on stderr."""

from __future__ import annotations

import contextlib
import signal
import sys


class TestTimedOut(Exception):
    """A test phase ran past its limit (raised from SIGALRM in the main thread)."""


def _limit(item) -> float:
    mark = item.get_closest_marker("timeout")
    if mark:
        return float(mark.args[0])
    return float(item.config.getini("test_timeout"))


@contextlib.contextmanager
def time_limit(item, phase: str):
    """Raise TestTimedOut in the main thread once `item`'s `phase` ran past its limit."""
    limit = _limit(item)

    def expire(signum, frame):
        import faulthandler
        faulthandler.dump_traceback(sys.stderr, all_threads=True)
        raise TestTimedOut(f"{item.nodeid}: {phase} ran past {limit:g} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
