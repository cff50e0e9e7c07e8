"""One socket set for both daemons: slots by name (`mgmt_rx`, `pxeboot_tx`, ...), opened
through the `transport.Sockets` seam, with the life every socket shares: the fault-insertion
files that close or fail one, recovery in a given order, the netlink watch with its settle
time, closing a socket whose address vanished, a receive error, kernel drops.

The daemons keep what differs: how a slot's socket is built (`build()` returns a socket or
None, logging why) and which slots they want now. Received datagrams go to `on_datagram(data,
source, net)`, `data` a memoryview valid during the call; with `raw`, to `on_datagram(buf,
start, size, source, net)` as transport.Receiver reads them (the agent's hot path).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

from mtce import transport
from mtce.states import Net

NETLINK_SETTLE_S = 0.2          # a burst of netlink events is one re-check, this much later


@dataclass(frozen=True)
class Slot:
    """One socket of a daemon. `fit`: the `<run_dir>/fit/` file that closes it at run time;
    `fit_at_setup`: the text of the set-up failure that file also forces (None: it does not);
    `label`: its name in the original's recovery log (`calling setup_<label>_socket`)."""
    name: str
    net: Net
    rx: bool
    fit: str
    fit_at_setup: str | None = None
    label: str = ""


class SocketSet:
    def __init__(self, slots: tuple, sockets: transport.Sockets, loop, log: logging.Logger,
                 throttle, run_dir: Callable[[], str], on_datagram, batch: int,
                 watcher_factory=None, limit: int | None = None, raw: bool = False,
                 mmsg: bool = False, clock=None):
        self.slots = {s.name: s for s in slots}
        self.socks: dict = {s.name: None for s in slots}
        self.sockets, self.loop, self.log, self.throttle = sockets, loop, log, throttle
        self.run_dir = run_dir
        self.on_datagram = on_datagram
        self.on_lost: Callable[[str], None] | None = None     # after a receive error
        self.after_drain: Callable[[Net, int], None] | None = None   # (net, datagrams read)
        self.receiver = transport.Receiver(batch, limit, mmsg, clock)
        self._stamped: set[str] = set()     # receive sockets whose datagrams carry a time
        if raw:
            self._handler = on_datagram
        else:
            self._handler = lambda buf, at, size, src, net, arrived: on_datagram(
                memoryview(buf)[at:at + size], src, net)
        self.watcher_factory = watcher_factory
        self.watcher = None
        self._settle_timer = None
        self._drops: dict[str, int] = {}
        self.kernel_drops = 0
        self.last_count = 0                    # datagrams of the last drain
        self.recoveries = 0                    # sockets recover() set up again

    # -- slots ---------------------------------------------------------------------------------
    def __getitem__(self, name: str):
        return self.socks[name]

    def get(self, name: str):
        return self.socks.get(name)

    def fit_path(self, fname: str) -> str:
        return os.path.join(self.run_dir(), "fit", fname)

    def open(self, name: str, build: Callable[[], object]) -> bool:
        """(Re)create one slot's socket; False (logged by `build` or here) when it cannot be
        had now. A set-up fault-insertion file fails it as the original's does."""
        self.close(name)
        slot = self.slots[name]
        if slot.fit_at_setup and os.path.exists(self.fit_path(slot.fit)):
            self.throttle.error(("setup", name), "%s", slot.fit_at_setup)
            return False
        try:
            sock = build()
        except OSError as err:
            self.throttle.error(("setup", name, "oserror"), "%s socket set-up failed (%s)",
                                name, transport.describe_error(err))
            return False
        if sock is None:
            return False
        self.socks[name] = sock
        self.throttle.clear(("setup", name))
        if slot.rx:
            if self.receiver.prepare(sock):
                self._stamped.add(name)
            else:
                self._stamped.discard(name)
            self.loop.add_reader(sock, self._readable, batched=True)
        return True

    @property
    def stamped(self) -> bool:
        """Every open receive socket gives each datagram's kernel arrival time (and one is
        open): the agent may then read them late (issue 25 item 3)."""
        rx = [n for n, s in self.slots.items() if s.rx and self.socks[n] is not None]
        return bool(rx) and all(n in self._stamped for n in rx)

    def close(self, name: str) -> None:
        sock = self.socks.get(name)
        if sock is not None:
            if self.slots[name].rx:
                self.loop.remove_reader(sock)
            sock.close()
        self.socks[name] = None

    def close_all(self) -> None:
        for name in self.socks:
            self.close(name)
        if self.watcher is not None:
            self.loop.remove_reader(self.watcher)
            self.watcher.close()
            self.watcher = None

    def missing(self, wanted: Callable[[str], bool], order=None) -> list[str]:
        return [n for n in (order or self.socks) if self.socks[n] is None and wanted(n)]

    def recover(self, order, wanted: Callable[[str], bool], build: Callable[[str], object],
                announce: bool = True) -> set:
        """One attempt for every missing slot, in `order` (cbcb194: all of them, not the first
        only); with `announce`, the original's `calling setup_<x>_socket (auto-recovery)`."""
        retried = set()
        for name in self.missing(wanted, order):
            retried.add(name)
            if announce:
                self.throttle.warning(("recover", name), "calling setup_%s_socket "
                                      "(auto-recovery)", self.slots[name].label or name)
            if self.open(name, lambda name=name: build(name)):
                self.recoveries += 1
                if announce:
                    self.throttle.clear(("recover", name))
        return retried

    # -- fault insertion -------------------------------------------------------------------------
    def fit_check(self) -> list[str]:
        """`<run_dir>/fit/<slot's file>` closes that socket while the file exists."""
        if not os.path.isdir(os.path.join(self.run_dir(), "fit")):
            return []
        closed = []
        for name, slot in self.slots.items():
            if self.socks[name] is not None and os.path.exists(self.fit_path(slot.fit)):
                self.throttle.warning(("fit", name), "fault insertion: closing %s socket "
                                      "(fit/%s)", name, slot.fit)
                self.close(name)
                closed.append(name)
        return closed

    # -- receiving -------------------------------------------------------------------------------
    def read_all(self) -> None:
        """Read every socket now, as if each were readable (what is queued, up to the
        receiver's limit; an empty socket costs one system call)."""
        for name, slot in self.slots.items():
            sock = self.socks.get(name)
            if slot.rx and sock is not None:
                self._readable(sock)

    def _readable(self, sock) -> None:
        name = next((n for n, s in self.socks.items() if s is sock), None)
        if name is None:
            return
        net = self.slots[name].net
        try:
            self.last_count = self.receiver.drain(sock, self._handler, net)
        except OSError as err:
            # Not a queued ICMP report (Receiver skips those): the socket's own failure.
            self.last_count = 0
            self.throttle.error(("recv", name), "%s receive failed (%s) ; socket re-created",
                                net.iface, transport.describe_error(err))
            self.close(name)
            if self.on_lost is not None:
                self.on_lost(name)
            return
        if self.after_drain is not None:
            self.after_drain(net, self.last_count)

    def check_drops(self) -> int:
        """Datagrams the kernel dropped on full receive buffers: logged once per increase
        (a burst or a stall), never per datagram. Returns the total."""
        for name, slot in self.slots.items():
            sock = self.socks[name]
            if not slot.rx or sock is None:
                continue
            drops = self.sockets.drops(sock)
            if drops is None:
                continue
            last = self._drops.get(name, 0)
            if drops > last:
                self.log.warning("%s receive buffer overflowed: the kernel dropped %d "
                                 "datagrams (%d in all)", slot.net.iface, drops - last, drops)
            self._drops[name] = drops
        self.kernel_drops = sum(self._drops.values())
        return self.kernel_drops

    def drops_by_net(self) -> list[int]:
        """Kernel drops of the receive sockets, per network (as of the last check)."""
        out = [0, 0, 0]
        for name, drops in self._drops.items():
            out[self.slots[name].net] += drops
        return out

    # -- addresses coming and going ------------------------------------------------------------
    def watch(self, on_change: Callable[[], None], relevant=None, no_watch_note: str = "") -> bool:
        """Netlink link/address events, `relevant(events)` (default: any), coalesced for
        NETLINK_SETTLE_S, then `on_change()`. False when netlink is not available."""
        if self.watcher_factory is None:
            return False
        try:
            self.watcher = self.watcher_factory()
        except Exception as err:   # noqa: BLE001 - netlink is an accelerator, not a need
            self.log.warning("netlink events unavailable (%s) ; %s", err, no_watch_note)
            return False

        def readable(watcher):
            events = watcher.drain()
            if events and (relevant is None or relevant(events)) and self._settle_timer is None:
                self._settle_timer = self.loop.call_later(NETLINK_SETTLE_S, changed)

        def changed():
            self._settle_timer = None
            on_change()

        self.loop.add_reader(self.watcher, readable)
        return True

    def close_vanished(self) -> list[str]:
        """Close every socket bound to an address that is no longer on this host."""
        closed = []
        for name, sock in list(self.socks.items()):
            addr = self.sockets.vanished(sock) if sock is not None else ""
            if addr:
                self.log.info("%s is gone from this host ; %s socket closed until it returns",
                              addr, name)
                self.close(name)
                closed.append(name)
        return closed
