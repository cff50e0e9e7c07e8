"""An in-memory UDP network for tests: the daemons run on it in one process, unchanged.

`FakeNetwork` is a `transport.Sockets`: the daemons open their sockets through it and cannot
tell its `FakeSocket` from a kernel socket. Each socket's readiness is the read end of an
AF_UNIX socketpair (one byte per queued datagram), so the real `selectors` loop runs unchanged
(the shape of pyroute2's `IPEngine` mock). What the test machines lack is added here: any
source address (spoofing), a datagram dropped or an address taken away, send and receive
errors, all decided by the test, and every datagram recorded. Stdlib only, no timers: time is
the test's FakeClock.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections import deque
from typing import Callable, NamedTuple

from mtce.transport import Sockets

EPHEMERAL_FIRST = 40000


class Datagram(NamedTuple):
    src: tuple          # (address, port)
    dst: tuple          # (address, port)
    data: bytes


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class FakeSocket:
    """A UDP socket of a FakeNetwork: bind, sendto, recvfrom_into, fileno, close."""

    def __init__(self, net: "FakeNetwork", family: int):
        self.net, self.family = net, family
        self.addr: tuple | None = None
        self.queue: deque = deque()
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self.closed = False
        self.recv_error: OSError | None = None     # raised by the next recvfrom_into
        self.rcvbuf = 212992
        self.max_queue = 4096                       # datagrams; more are dropped
        self.drops = 0

    # -- the socket API the daemons use ----------------------------------------------------
    def fileno(self) -> int:
        return self._r.fileno()

    def setblocking(self, flag: bool) -> None:
        pass

    def setsockopt(self, level, name, value) -> None:
        if name == socket.SO_RCVBUF:
            self.rcvbuf = int(value)

    def getsockopt(self, level, name, size=None):
        if name == socket.SO_RCVBUF:
            return self.rcvbuf
        raise _oserror(errno.ENOPROTOOPT)

    def bind(self, address: tuple) -> None:
        self.net._bind(self, address[0], address[1])

    def getsockname(self) -> tuple:
        if self.closed:
            raise _oserror(errno.EBADF)
        return self.addr or (("::" if self.family == socket.AF_INET6 else "0.0.0.0"), 0)

    def sendto(self, data, address: tuple) -> int:
        if self.closed:
            raise _oserror(errno.EBADF)
        return self.net._send(self, bytes(data), (address[0], int(address[1])))

    def recvfrom_into(self, buffer) -> tuple[int, tuple]:
        if self.closed:
            raise _oserror(errno.EBADF)
        if self.recv_error is not None:
            err, self.recv_error = self.recv_error, None
            raise err
        if not self.queue:
            raise BlockingIOError(errno.EAGAIN, "no datagram")
        data, src = self.queue.popleft()
        if not self.queue:
            self._unsignal()
        n = min(len(data), len(buffer))
        buffer[:n] = data[:n]
        return n, src

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.net._unbind(self)
        self._r.close()
        self._w.close()

    # -- test side -------------------------------------------------------------------------
    def deliver(self, data: bytes, src: tuple) -> bool:
        if self.closed or len(self.queue) >= self.max_queue:
            self.drops += 1
            return False
        self.queue.append((data, src))
        if len(self.queue) == 1:
            self._signal()
        return True

    # Readiness is level-triggered: one byte in the socketpair while the queue holds
    # anything (a byte per datagram would fill the socketpair past a few hundred and lose
    # the readiness of the rest).
    def _signal(self) -> None:
        try:
            self._w.send(b"\0")
        except BlockingIOError:
            pass

    def _unsignal(self) -> None:
        try:
            while self._r.recv(64):
                pass
        except BlockingIOError:
            pass


class FakeNetwork(Sockets):
    """Every FakeSocket of a test, by bound address. Faults are plain attributes:

    - `down`: addresses no longer on this "host" (a bind fails, `is_local` says no, and
      datagrams to or from them are lost);
    - `drop(datagram) -> bool`: lose a datagram in flight;
    - `send_error`: an OSError every `sendto` raises;
    - `send_errors`: an OSError each `sendto` to that destination address raises.

    `sent` records every datagram that reached a bound socket (`lost` the others).
    """

    def __init__(self, default_source: str = "127.0.0.1"):
        self.bound: dict[tuple, FakeSocket] = {}
        self.sockets: list[FakeSocket] = []
        self.down: set[str] = set()
        self.drop: Callable[[Datagram], bool] | None = None
        self.send_error: OSError | None = None
        self.send_errors: dict[str, OSError] = {}
        self.default_source = default_source
        self.sent: list[Datagram] = []
        self.lost: list[Datagram] = []
        self.record = True
        self._next_port = EPHEMERAL_FIRST

    # -- transport.Sockets -----------------------------------------------------------------
    def udp(self, address: str | None = None, port: int = 0, *, family: int | None = None,
            rcvbuf: int | None = None, reuseaddr: bool = False,
            nonblocking: bool = True) -> FakeSocket:
        if family is None:
            family = socket.AF_INET6 if address and ":" in address else socket.AF_INET
        sock = FakeSocket(self, family)
        if rcvbuf:
            sock.rcvbuf = rcvbuf
        if address:
            try:
                sock.bind((address, port))
            except OSError:
                sock.close()
                raise
        self.sockets.append(sock)
        return sock

    def is_local(self, address: str) -> bool:
        return address not in self.down

    def drops(self, sock) -> int | None:
        return getattr(sock, "drops", None)

    # -- internals -------------------------------------------------------------------------
    def _bind(self, sock: FakeSocket, address: str, port: int) -> None:
        address = str(ipaddress.ip_address(address)) if address else "0.0.0.0"
        if address in self.down:
            raise _oserror(errno.EADDRNOTAVAIL)
        if sock.addr is not None:
            raise _oserror(errno.EINVAL)
        if not port:
            port = self._ephemeral()
        if (address, port) in self.bound:
            raise _oserror(errno.EADDRINUSE)
        sock.addr = (address, port)
        self.bound[sock.addr] = sock

    def _ephemeral(self) -> int:
        self._next_port += 1
        return self._next_port

    def _unbind(self, sock: FakeSocket) -> None:
        if sock.addr is not None and self.bound.get(sock.addr) is sock:
            del self.bound[sock.addr]

    def _send(self, sock: FakeSocket, data: bytes, dst: tuple) -> int:
        if self.send_error is not None:
            raise self.send_error
        if dst[0] in self.send_errors:
            raise self.send_errors[dst[0]]
        if sock.addr is None:
            sock.bind((self.default_source, 0))
        if sock.addr[0] in self.down:
            raise _oserror(errno.EADDRNOTAVAIL)
        self.transmit(data, sock.addr, dst)
        return len(data)

    def transmit(self, data: bytes, src: tuple, dst: tuple) -> bool:
        """Carry one datagram from `src` to `dst` (the test's way to send as anyone)."""
        dgram = Datagram(tuple(src), (str(ipaddress.ip_address(dst[0])), int(dst[1])), data)
        target = self.bound.get(dgram.dst)
        if target is None or dgram.dst[0] in self.down or (self.drop and self.drop(dgram)):
            if self.record:
                self.lost.append(dgram)
            return False
        if self.record:
            self.sent.append(dgram)
        return target.deliver(data, dgram.src)

    def to(self, address: str, port: int) -> list[Datagram]:
        """Datagrams delivered to `address:port`."""
        return [d for d in self.sent if d.dst == (address, port)]

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
