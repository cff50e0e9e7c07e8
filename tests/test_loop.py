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


def test_a_reader_removed_earlier_in_the_same_turn_is_not_called(loop):
    """Two readers ready in one turn; the first one's callback removes and closes the second
    (the agent answering a parked `--wait` request whose client also hung up: issue 26's
    attack found `ValueError: file descriptor cannot be a negative integer` from its stale
    read). The second one's callback must not run on a closed socket."""
    pairs = [socket.socketpair() for _ in range(2)]
    (a, a_peer), (b, b_peer) = pairs
    calls = []

    def first(s):
        calls.append("first")
        s.recv(1)
        if b.fileno() != -1:
            loop.remove_reader(b)
            b.close()

    def second(s):
        calls.append("second")
        s.recv(1)                       # what a stale call would do: on fd -1, it raises

    loop.add_reader(a, first)
    loop.add_reader(b, second)
    a_peer.send(b"x")
    b_peer.send(b"y")
    for _ in range(2):
        loop.run_once(0.5)
    assert calls in (["first"], ["second", "first"]), calls
    assert "first" in calls
    for s in (a, a_peer, b_peer):
        s.close()
