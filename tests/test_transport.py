"""Socket helpers: the receive drain and the kernel's drop counter."""

from __future__ import annotations

import select
import socket
import time

import pytest

from mtce import transport
from mtce.clock import FakeClock


def test_kernel_drops_counts_what_a_full_buffer_dropped():
    rx = transport.udp_socket("127.0.0.1", 0, rcvbuf=4096)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert transport.kernel_drops(rx) == 0
        for _ in range(300):
            tx.sendto(b"x" * 300, rx.getsockname())
        drops = transport.kernel_drops(rx)
        received = transport.Receiver(batch=1000).drain(rx, lambda *datagram: None)
        assert drops > 0 and drops + received == 300
    finally:
        rx.close()
        tx.close()


def test_drain_is_bounded_by_its_limit_and_reports_oversize_lengths():
    """Both ways of reading (recvmmsg in calls of 16, recvfrom_into): at most `limit` a drain,
    the rest left for the next; a datagram longer than the 1060-byte struct keeps its length."""
    for mmsg in (True, False):
        rx = transport.udp_socket("127.0.0.1", 0)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for size in (10, 1100, 1500):
                tx.sendto(b"y" * size, rx.getsockname())
            for _ in range(60):
                tx.sendto(b"z", rx.getsockname())
            sizes: list = []
            receiver = transport.Receiver(batch=16, limit=50, mmsg=mmsg)
            assert receiver.mmsg == mmsg
            assert receiver.drain(rx, lambda b, at, n, src, tag, arrived: sizes.append(n)) == 50
            assert sizes[:3] == [10, 1100, 1500], "longer than 1060 is seen, not truncated"
            assert receiver.drain(rx, lambda b, at, n, src, tag, arrived: sizes.append(n)) == 13
            assert receiver.drain(rx, lambda b, at, n, src, tag, arrived: sizes.append(n)) == 0
            assert sizes[3:] == [1] * 60
        finally:
            rx.close()
            tx.close()


def _both_ways(family: int, address: str, sends) -> tuple[list, list]:
    """The same datagrams into two sockets, one drained with recvmmsg, one with recvfrom_into:
    what each handler saw (bytes, source)."""
    seen = {True: [], False: []}
    for mmsg in (True, False):
        rx = transport.udp_socket(address, 0)
        txs = {}
        try:
            for src, payload in sends:
                tx = txs.get(src)
                if tx is None:
                    tx = txs[src] = socket.socket(family, socket.SOCK_DGRAM)
                    tx.bind((src, 0))
                tx.sendto(payload, rx.getsockname())
            receiver = transport.Receiver(batch=7, mmsg=mmsg)
            assert receiver.mmsg == mmsg
            for _ in range(len(sends)):
                if not receiver.drain(rx, lambda b, at, n, s, tag, arrived, out=seen[mmsg]:
                                      out.append((bytes(b[at:at + n]), s))):
                    break
        finally:
            rx.close()
            for tx in txs.values():
                tx.close()
    return seen[True], seen[False]


def test_recvmmsg_and_recvfrom_give_the_handler_the_same_datagrams_and_sources():
    """Issue 25 item 1: the batched read (recvmmsg through ctypes) and the fallback decide
    identically: same bytes (empty, short, the 1060-byte struct, oversize), same source text,
    same order, across several calls of a small batch."""
    import random
    rng = random.Random(25)
    sizes = [0, 1, 100, 1060, 1061, 1500, 2048, 3000] + [rng.randrange(0, 2100) for _ in range(40)]
    sends = [(f"127.0.0.{1 + i % 5}", bytes(rng.randrange(256) for _ in range(n)))
             for i, n in enumerate(sizes)]
    batched, plain = _both_ways(socket.AF_INET, "127.0.0.1", sends)
    assert batched == plain
    assert len(plain) == len(sends)
    assert [len(d) for d, _ in plain][:8] == [0, 1, 100, 1060, 1061, 1500, 2048, 2048]
    assert {s for _, s in plain} == {f"127.0.0.{k}" for k in range(1, 6)}


def test_recvmmsg_gives_ipv6_sources_as_recvfrom_does():
    from harness.env import need
    try:
        transport.udp_socket("::1", 0).close()
        ipv6 = True
    except OSError:
        ipv6 = False
    need(ipv6, "no IPv6 loopback here")
    sends = [("::1", b"six" * k) for k in range(12)]
    batched, plain = _both_ways(socket.AF_INET6, "::1", sends)
    assert batched == plain and {s for _, s in plain} == {"::1"}


def test_recvmmsg_gives_ipv4_mapped_sources_as_recvfrom_does():
    """An agent bound on an IPv6 wildcard receives IPv4 senders as `::ffff:a.b.c.d`; both ways
    of reading say so, and the cache keyed by raw address never mixes two senders."""
    from harness.env import need
    seen = {}
    for mmsg in (True, False):
        try:
            rx = transport.udp_socket("::", 0, family=socket.AF_INET6)
        except OSError:
            need(False, "no IPv6 here")
        txs = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
        try:
            for i, tx in enumerate(txs):
                tx.bind((f"127.0.0.{i + 1}", 0))
                tx.sendto(b"v4-%d" % i, ("127.0.0.1", rx.getsockname()[1]))
            out: list = []
            receiver = transport.Receiver(batch=8, mmsg=mmsg)
            receiver.drain(rx, lambda b, at, n, src, tag, arrived:
                           out.append((bytes(b[at:at + n]), src)))
            seen[mmsg] = out
        finally:
            rx.close()
            for tx in txs:
                tx.close()
    assert seen[True] == seen[False] == [(b"v4-%d" % i, f"::ffff:127.0.0.{i + 1}")
                                         for i in range(3)]


def test_a_drain_stops_when_a_handler_closes_the_socket():
    """Attack on issue 25: recvmmsg reads by descriptor; a handler that closes the socket (and
    may make another that gets the same number) ends the drain with what was read, in both
    ways of reading: the datagrams queued behind are not taken from whatever has that
    number now."""
    for mmsg in (True, False):
        rx = transport.udp_socket("127.0.0.1", 0)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other = None
        try:
            for i in range(20):
                tx.sendto(b"%d" % i, rx.getsockname())
            seen = []

            def handler(b, at, n, src, tag, arrived):
                nonlocal other
                seen.append(bytes(b[at:at + n]))
                if len(seen) == 3:
                    rx.close()
                    other = transport.udp_socket("127.0.0.1", 0)   # often the same number
                    tx.sendto(b"stranger", other.getsockname())
            count = transport.Receiver(batch=2, limit=50, mmsg=mmsg).drain(rx, handler)
            assert b"stranger" not in seen
            assert seen[:3] == [b"0", b"1", b"2"] and count == len(seen) <= 4
        finally:
            tx.close()
            if other is not None:
                other.close()
            rx.close()


def test_the_client_reads_without_loading_ctypes():
    """Issue 25: recvmmsg through ctypes is the agent's (mtce/mmsg.py); the client's receiver
    reads with recvfrom_into, and its process does not carry ctypes (RSS, docs/bench.md)."""
    import subprocess
    import sys
    from harness.env import REPO
    code = ("import sys; from mtce import client, client_net, transport; "
            "transport.Receiver(client_net.RX_BATCH); print('ctypes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.strip() == "False"


def test_without_ctypes_the_agent_reads_with_recvfrom_into():
    """A Python built without ctypes (the module missing): the agent's receiver falls back to
    recvfrom_into instead of failing to start."""
    import subprocess
    import sys
    from harness.env import REPO
    code = ("import sys; sys.modules['ctypes'] = None; import socket; "
            "from mtce import transport; r = transport.Receiver(256, 4096, mmsg=True); "
            "rx = transport.udp_socket('127.0.0.1', 0); "
            "tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "tx.sendto(b'x', rx.getsockname()); import select; select.select([rx], [], [], 5); "
            "print(r.mmsg, r.drain(rx, lambda *d: None))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.split() == ["False", "1"]


def test_an_address_lookup_error_is_told_in_its_own_words():
    """Attack on issue 25 (also before it): a getaddrinfo error's code is not an errno;
    `(-9:Unknown error -9)` became the lookup's own text."""
    err = socket.gaierror(socket.EAI_ADDRFAMILY, "Address family for hostname not supported")
    assert transport.describe_error(err) == \
        f"{socket.EAI_ADDRFAMILY}:Address family for hostname not supported"
    assert transport.describe_error(OSError(111, "x")) == "111:Connection refused"


def _stamped_pair(stamps: bool):
    rx = transport.udp_socket("127.0.0.1", 0)
    tx = transport.udp_socket("127.0.0.1", 0)
    receiver = transport.Receiver(batch=8, limit=64, mmsg=True, clock=FakeClock(1000.0))
    if stamps:
        assert receiver.prepare(rx)
        _stamping(rx, tx, receiver)
    return rx, tx, receiver


def _stamping(rx, tx, receiver) -> None:
    """Until the kernel stamps: it turns time stamping on for the whole host a moment after the
    first socket asks (a deferred static key); until then a datagram is stamped when read."""
    stamped = []
    for _ in range(100):                     # bounded: milliseconds in practice
        tx.sendto(b"probe", rx.getsockname())
        time.sleep(0.01)
        receiver.read_at.clear()             # the fake clock stands: no previous read to bound
        receiver.drain(rx, lambda b, at, n, src, tag, arrived: stamped.append(
            arrived < receiver.clock.now()))
        if any(stamped):
            receiver.read_at.clear()
            return
    raise AssertionError("the kernel never stamped a datagram")


def _arrivals(rx, receiver) -> dict:
    got = {}
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        select.select([rx], [], [], 1)
        receiver.drain(rx, lambda b, at, n, src, tag, arrived: got.update(
            {bytes(b[at:at + n]): arrived}))
    return got


def test_each_datagram_comes_with_its_kernel_arrival_time_on_the_agents_clock():
    """Issue 25 item 3: read once a second at light load, a datagram still counts from when it
    arrived (SO_TIMESTAMP), not from when the agent read it: the earlier one is older by the
    time between the two sends, on the receiver's own clock (here a fake one at 1000)."""
    rx, tx, receiver = _stamped_pair(stamps=True)
    with rx, tx:
        tx.sendto(b"first", rx.getsockname())
        time.sleep(0.3)                      # a real gap between two real arrivals
        tx.sendto(b"second", rx.getsockname())
        time.sleep(0.05)
        got = _arrivals(rx, receiver)
    assert set(got) == {b"first", b"second"}
    assert 1000.0 - 5 < got[b"first"] <= got[b"second"] - 0.25, got
    assert got[b"second"] <= 1000.0, "never later than the clock's now"


def test_without_a_stamp_a_datagram_arrived_when_it_is_read():
    rx, tx, receiver = _stamped_pair(stamps=False)
    with rx, tx:
        tx.sendto(b"first", rx.getsockname())
        tx.sendto(b"second", rx.getsockname())
        got = _arrivals(rx, receiver)
    assert got == {b"first": 1000.0, b"second": 1000.0}


class _SteppedWall:
    """time as the mmsg and transport modules see it, its wall clock stepped by `step_s` (an
    NTP step, `date -s`)."""

    def __init__(self, step_s: float):
        self.step_s = step_s

    def time(self) -> float:
        return time.time() + self.step_s

    def monotonic(self) -> float:
        return time.monotonic()


@pytest.mark.parametrize("quiet_s", [1.0, 9.0])
@pytest.mark.parametrize("step_s", [120.0, -120.0, 0.5])
def test_a_wall_clock_step_between_arrival_and_reading_makes_a_datagram_arrive_when_read(
        monkeypatch, step_s, quiet_s):
    """The kernel stamps on the wall clock; NTP or `date -s` may step it while a datagram waits
    to be read. Stepped forward, the datagram would look older by the step (a healthy host
    silent, offline; issue 25 attack, on a socket read last 9 s before); it is taken as
    arrived when read, never earlier than the socket's previous read nor after now."""
    from mtce import mmsg
    clock = FakeClock(1000.0)
    rx, tx, receiver = _stamped_pair(stamps=True)
    receiver.clock = clock
    with rx, tx:
        assert receiver.drain(rx, lambda *d: None) == 0      # the previous read, at 1000
        clock.advance(quiet_s)
        tx.sendto(b"first", rx.getsockname())
        tx.sendto(b"second", rx.getsockname())
        time.sleep(0.05)
        monkeypatch.setattr(mmsg, "time", _SteppedWall(step_s))
        monkeypatch.setattr(transport, "time", _SteppedWall(step_s))
        got = _arrivals(rx, receiver)
    assert got == {b"first": 1000.0 + quiet_s, b"second": 1000.0 + quiet_s}
