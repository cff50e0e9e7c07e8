"""mtce/loop.py with real sockets and the real clock: what ends the agent's pause between two
reads of its receive sockets (issue 25: at light load it reads once a second)."""

import socket
import time

import pytest

from mtce.clock import Clock
from mtce.loop import Loop

LONG_PAUSE_S = 30.0


@pytest.fixture
def loop():
    lp = Loop(Clock())
    yield lp
    lp.close()


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_a_control_request_ends_the_pause_at_once(loop, pair):
    """`mtce hosts` during a long pause is answered now, not when the sockets are next read."""
    ready, peer = pair
    seen = []
    loop.add_reader(ready, lambda s: seen.append(s.recv(64)))
    loop.pause_hint = lambda: LONG_PAUSE_S
    loop.call_later(LONG_PAUSE_S, lambda: None)
    peer.send(b"hosts")
    t0 = time.monotonic()
    loop.run_once(None)
    assert seen == [b"hosts"]
    assert time.monotonic() - t0 < LONG_PAUSE_S / 3


def test_a_signal_ends_the_pause(loop):
    import signal
    got = []
    loop.install_signals([signal.SIGUSR1])
    loop.on_signal = got.append
    loop.pause_hint = lambda: LONG_PAUSE_S
    loop.call_later(LONG_PAUSE_S, lambda: None)
    signal.raise_signal(signal.SIGUSR1)
    t0 = time.monotonic()
    loop.run_once(None)
    assert got == [signal.SIGUSR1]
    assert time.monotonic() - t0 < LONG_PAUSE_S / 3


def test_a_batched_socket_is_read_after_the_pause_not_woken_for(loop, pair):
    """A datagram on a receive socket waits for the pause to end: that is what batches them."""
    ready, peer = pair
    seen = []
    loop.add_reader(ready, lambda s: seen.append(s.recv(64)), batched=True)
    loop.pause_hint = lambda: 0.2
    peer.send(b"mtcAlive")
    t0 = time.monotonic()
    loop.run_once(None)
    assert seen == [b"mtcAlive"]
    assert time.monotonic() - t0 >= 0.2


def test_a_removed_reader_no_longer_ends_a_pause(loop, pair):
    ready, peer = pair
    loop.add_reader(ready, lambda s: None)
    loop.remove_reader(ready)
    assert not loop.urgent.get_map() and not loop.selector.get_map()
