"""The one socket set both daemons use (netsocks.SocketSet), in-process: a FakeNetwork for the
sockets, a FakeClock loop, a fake netlink watcher. Each test names the reference rule it
proves (docs/protocol.md §5.7: socket recovery, cbcb194, and the fault-insertion files)."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from harness.sim import daemon_logger

from mtce import logs, netsocks
from mtce.clock import FakeClock
from mtce.fakenet import FakeNetwork
from mtce.loop import Loop
from mtce.netsocks import Slot
from mtce.states import Net

SETUP_FAIL = "failed to init 'management rx' socket (rc:1) (fit/mgmnt_rxsock)"
SLOTS = (
    Slot("mgmt_rx", Net.MGMT, True, "mgmnt_rxsock", SETUP_FAIL, "mgmt_rx"),
    Slot("mgmt_tx", Net.MGMT, False, "mgmnt_txsock", None, "mgmt_tx"),
    Slot("pxeboot_rx", Net.PXEBOOT, True, "pxeboot_rxsock", None, "pxeboot_rx"),
    Slot("pxeboot_tx", Net.PXEBOOT, False, "pxeboot_txsock", None, "pxeboot_tx"),
)
PORT = {"mgmt_rx": 2118, "pxeboot_rx": 2118}
ADDR = {"mgmt_rx": "127.9.0.10", "mgmt_tx": "127.9.0.10", "pxeboot_rx": "127.9.2.10",
        "pxeboot_tx": "127.9.2.10"}


class FakeWatcher:
    """A netlink watcher: readable when events are queued (a socketpair byte)."""

    def __init__(self):
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self.events: list = []
        self.closed = False

    def fileno(self):
        return self._r.fileno()

    def push(self, *events):
        self.events.extend(events)
        self._w.send(b"\0")

    def drain(self):
        try:
            self._r.recv(4096)
        except BlockingIOError:
            pass
        events, self.events = self.events, []
        return events

    def close(self):
        self.closed = True
        self._r.close()
        self._w.close()


class Rig:
    def __init__(self, tmp_path, watcher=None):
        self.clock = FakeClock()
        self.net = FakeNetwork()
        self.log, self.capture = daemon_logger("netsocks", logging.DEBUG)
        self.loop = Loop(self.clock, self.log)
        self.run_dir = str(tmp_path / "run")
        os.makedirs(self.run_dir)
        self.got: list = []
        self.watcher = watcher
        self.set = netsocks.SocketSet(
            SLOTS, self.net, self.loop, self.log, logs.Throttle(self.log, self.clock),
            lambda: self.run_dir, lambda data, src, net: self.got.append((bytes(data), src,
                                                                          net)),
            batch=50, watcher_factory=(lambda: watcher) if watcher else None)
        self.built: list[str] = []

    def build(self, name):
        self.built.append(name)
        return self.net.udp(ADDR[name], PORT.get(name, 0))

    def open_all(self):
        for slot in SLOTS:
            assert self.set.open(slot.name, lambda n=slot.name: self.build(n))

    def fit(self, fname, present=True):
        path = os.path.join(self.run_dir, "fit", fname)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if present:
            open(path, "w").close()
        else:
            os.unlink(path)

    def settle(self):
        for _ in range(1000):
            if not self.loop.run_once(0):
                return
        raise AssertionError("the loop did not settle")

    def close(self):
        self.set.close_all()
        self.loop.close()
        self.net.close()


@pytest.fixture
def rig(tmp_path):
    made = []

    def make(**kw):
        r = Rig(tmp_path / str(len(made)), **kw)
        made.append(r)
        return r
    yield make
    for r in made:
        r.close()


def test_a_datagram_to_a_receive_slot_reaches_the_daemon_with_its_network(rig):
    r = rig()
    r.open_all()
    r.net.transmit(b"hello", ("127.9.2.1", 2101), ("127.9.2.10", 2118))
    r.net.transmit(b"mgmt", ("127.9.0.1", 2101), ("127.9.0.10", 2118))
    r.settle()
    assert sorted(r.got, key=lambda g: g[2].value) == sorted(
        [(b"hello", "127.9.2.1", Net.PXEBOOT), (b"mgmt", "127.9.0.1", Net.MGMT)],
        key=lambda g: g[2].value)
    assert r.set.last_count == 1


def test_fit_file_closes_its_socket_while_it_exists_and_recovery_reopens_it(rig):
    """docs/protocol.md §5.7: `pxeboot_rxsock` closes the pxeboot receive socket; the next tick's
    recovery re-binds it (`calling setup_pxeboot_rx_socket (auto-recovery)`) and the end of
    that tick closes it again, so pxeboot reception is dead while the file exists."""
    r = rig()
    r.open_all()
    r.fit("pxeboot_rxsock")
    for _ in range(3):                      # three ticks with the file present
        assert r.set.fit_check() == ["pxeboot_rx"]
        assert r.set["pxeboot_rx"] is None and r.set["mgmt_rx"] is not None
        r.net.transmit(b"lost", ("127.9.2.1", 2101), ("127.9.2.10", 2118))
        r.settle()
        assert r.set.recover([s.name for s in SLOTS], lambda n: True, r.build) == {"pxeboot_rx"}
    assert r.got == []
    assert r.capture.count("fault insertion: closing pxeboot_rx socket (fit/pxeboot_rxsock)") \
        == 1, "throttled: one line, not one a tick"
    # Each successful re-bind ends the cause, so each tick's attempt is announced, as the
    # original's is (docs/protocol.md §5.7: "on every tick").
    assert r.capture.count("calling setup_pxeboot_rx_socket (auto-recovery)") == 3
    r.fit("pxeboot_rxsock", present=False)
    assert r.set.fit_check() == []
    r.net.transmit(b"back", ("127.9.2.1", 2101), ("127.9.2.10", 2118))
    r.settle()
    assert r.got == [(b"back", "127.9.2.1", Net.PXEBOOT)]


def test_a_setup_fit_file_fails_the_open_with_the_originals_words(rig):
    """docs/protocol.md §5.7: `mgmnt_rxsock` at setup forces `failed to init 'management rx' socket
    (rc:1)`; the socket is not built at all while the file exists."""
    r = rig()
    r.fit("mgmnt_rxsock")
    assert r.set.open("mgmt_rx", lambda: r.build("mgmt_rx")) is False
    assert r.built == [] and r.set["mgmt_rx"] is None
    assert SETUP_FAIL in r.capture.text()
    r.fit("mgmnt_rxsock", present=False)
    assert r.set.open("mgmt_rx", lambda: r.build("mgmt_rx")) is True
    assert r.built == ["mgmt_rx"]


def test_recovery_tries_every_missing_slot_in_order_not_only_the_first(rig):
    """cbcb194 (docs/protocol.md §5.7): one recovery attempt for every failed socket, in order."""
    r = rig()
    r.net.down.add("127.9.0.10")           # mgmt's address is not on the host yet
    order = [s.name for s in SLOTS]
    retried = r.set.recover(order, lambda n: n != "pxeboot_tx", r.build)
    assert retried == {"mgmt_rx", "mgmt_tx", "pxeboot_rx"}
    assert r.built == ["mgmt_rx", "mgmt_tx", "pxeboot_rx"], "in order, the unwanted skipped"
    assert r.set["pxeboot_rx"] is not None and r.set["mgmt_rx"] is None
    assert "mgmt_rx socket set-up failed (99:Cannot assign requested address)" in r.capture.text()
    assert r.set.missing(lambda n: True, order) == ["mgmt_rx", "mgmt_tx", "pxeboot_tx"]
    r.net.down.clear()
    assert r.set.recover(order, lambda n: True, r.build) == {"mgmt_rx", "mgmt_tx",
                                                             "pxeboot_tx"}
    assert r.set.missing(lambda n: True, order) == []


def test_a_failing_build_is_logged_once_per_cause_not_per_attempt(rig):
    r = rig()
    r.net.down.add("127.9.0.10")
    for _ in range(50):
        r.set.recover(["mgmt_rx"], lambda n: True, r.build, announce=False)
    assert r.capture.count("mgmt_rx socket set-up failed") == 1
    assert len(r.built) == 50


def test_a_receive_error_closes_the_socket_and_tells_the_daemon(rig):
    r = rig()
    r.open_all()
    lost = []
    r.set.on_lost = lost.append
    r.set["mgmt_rx"].recv_error = OSError(9, "Bad file descriptor")
    r.net.transmit(b"x", ("127.9.0.1", 2101), ("127.9.0.10", 2118))
    r.settle()
    assert lost == ["mgmt_rx"] and r.set["mgmt_rx"] is None
    assert "Mgmnt receive failed (9:Bad file descriptor) ; socket re-created" \
        in r.capture.text()


def test_kernel_drops_are_logged_once_per_increase_with_the_totals(rig):
    r = rig()
    r.open_all()
    assert r.set.check_drops() == 0
    r.set["mgmt_rx"].drops = 700
    assert r.set.check_drops() == 700
    assert r.set.check_drops() == 700
    r.set["mgmt_rx"].drops = 750
    assert r.set.check_drops() == 750
    lines = [ln for ln in r.capture.lines(logging.WARNING) if "overflowed" in ln]
    assert len(lines) == 2
    assert "the kernel dropped 700 datagrams (700 in all)" in lines[0]
    assert "the kernel dropped 50 datagrams (750 in all)" in lines[1]


def test_a_burst_of_netlink_events_is_one_recheck_after_the_settle_time(rig):
    watcher = FakeWatcher()
    r = rig(watcher=watcher)
    changes = []
    assert r.set.watch(lambda: changes.append(r.clock.now()),
                       relevant=lambda events: "addr" in events)
    watcher.push("link")                     # not relevant
    r.settle()
    r.clock.advance(1)
    r.settle()
    assert changes == []
    first = r.clock.now()
    step = netsocks.NETLINK_SETTLE_S / 20
    for i in range(100):                     # 5 settle times in small steps
        if i < 10:
            watcher.push("addr")             # a burst over half the settle time
        r.settle()
        r.clock.advance(step)
    r.settle()
    assert len(changes) == 1, "the burst is one re-check"
    assert netsocks.NETLINK_SETTLE_S <= changes[0] - first <= netsocks.NETLINK_SETTLE_S + step
    r.set.close_all()
    assert watcher.closed


def test_without_netlink_the_set_says_so_and_the_daemon_polls(rig):
    r = rig()
    assert r.set.watch(lambda: None) is False

    def broken():
        raise OSError("netlink refused")
    r.set.watcher_factory = broken
    assert r.set.watch(lambda: None, no_watch_note="addresses polled every tick") is False
    assert "netlink events unavailable (netlink refused) ; addresses polled every tick" \
        in r.capture.text()


def test_a_socket_whose_address_vanished_is_closed_until_it_returns(rig):
    r = rig()
    r.open_all()
    r.net.down.add("127.9.2.10")
    assert sorted(r.set.close_vanished()) == ["pxeboot_rx", "pxeboot_tx"]
    assert "127.9.2.10 is gone from this host ; pxeboot_rx socket closed until it returns" \
        in r.capture.text()
    assert r.set.recover(["pxeboot_rx"], lambda n: True, r.build) == {"pxeboot_rx"}
    assert r.set["pxeboot_rx"] is None, "not re-bound while the address is away"
    r.net.down.clear()
    assert r.set.recover(["pxeboot_rx"], lambda n: True, r.build) == {"pxeboot_rx"}
    assert r.set["pxeboot_rx"] is not None
