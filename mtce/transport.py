"""UDP sockets as the daemons use them.

Receive sockets are non-blocking and drained in bounded batches: with `recvmmsg(2)` (through
ctypes: one system call for up to a batch of datagrams, into buffers and headers made once)
where the C library has it, else one `recvfrom_into` per datagram into one reused buffer; both
give the handler the same bytes and source. A datagram longer than the 1060-byte struct is
seen as such (the buffers are larger) so that it can be rejected rather than silently
truncated.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import socket
import time
import struct
from dataclasses import dataclass

from mtce.alive import MSG_SIZE
from mtce.decisions import Log

RX_BUFFER = 2048                # > MSG_SIZE: an oversize datagram shows its excess
AGENT_RCVBUF = 500 * 1024       # MTC_AGENT_RX_BUFF_SIZE (docs/protocol.md §4), asked of the kernel
# The agent's receive buffers follow its inventory (as upstream 2b9bc75 raises them towards
# rmem_max): a takeover makes every host answer at once, one datagram per host on each
# network's socket. The kernel charges a datagram its truesize (2,304 bytes for an mtcAlive
# on loopback, a page or more from many NICs): a page per host, twice over.
RCVBUF_PER_HOST = 2 * 4096
DATAGRAM_TRUESIZE = 2304
# The agent reads on a 100 ms grid (mtce/agent_pacing.py), and a load step from idle arrives while
# it pauses a whole tick: one socket must hold 100 ms of the fastest flood the bench makes
# (~140,000/s) at loopback's truesize: 32 MiB (issue 25, found by an attack).
TICK_RCVBUF = 32 * 1024 * 1024
RCVBUF_MAX = 64 * 1024 * 1024
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)     # Linux; CAP_NET_ADMIN
RMEM_MAX = "/proc/sys/net/core/rmem_max"


def family_of(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def udp_socket(address: str | None = None, port: int = 0, *, family: int | None = None,
               reuseaddr: bool = False, rcvbuf: int | None = None,
               nonblocking: bool = True) -> socket.socket:
    """A UDP socket, bound when `address` is given, with a receive buffer of `rcvbuf` bytes
    as the kernel counts them (see `size_rcvbuf`). Raises OSError (closed on failure)."""
    if family is None:
        family = family_of(address) if address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuseaddr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            size_rcvbuf(sock, rcvbuf)
        sock.setblocking(not nonblocking)
        if address:
            sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


def address_is_local(address: str) -> bool:
    """Whether `address` is configured on this host (a throw-away bind to it succeeds)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.bind((address, 0))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def rcvbuf_size(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def agent_rcvbuf(hosts: int) -> int:
    """The receive buffer each of the agent's sockets wants for `hosts` hosts, as the kernel
    counts it (what SO_RCVBUF reads back): a takeover's answer from every host, and never less
    than a tick of the audit grid at the highest rate the agent is measured at (TICK_RCVBUF),
    which is well above the original's 500 KiB. The kernel takes the memory only while
    datagrams wait in it."""
    return min(max(TICK_RCVBUF, hosts * RCVBUF_PER_HOST), RCVBUF_MAX)


def read_rmem_max() -> int:
    """net.core.rmem_max: the most SO_RCVBUF may ask without privilege (0: unknown)."""
    try:
        with open(RMEM_MAX, encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def size_rcvbuf(sock, wanted: int, rmem_max: int | None = None) -> int:
    """Give `sock` a receive buffer of `wanted` bytes; returns what the kernel gave.

    The kernel doubles what it is asked (its bookkeeping), so half is asked. Beyond
    net.core.rmem_max only SO_RCVBUFFORCE (root, CAP_NET_ADMIN) gets it; without that the
    buffer stops at twice rmem_max, and the caller says so.
    """
    ask = (wanted + 1) // 2
    limit = read_rmem_max() if rmem_max is None else rmem_max
    if limit and ask > limit:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, ask)
            return rcvbuf_size(sock)
        except OSError:
            pass
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, ask)
    return rcvbuf_size(sock)


class Sockets:
    """The daemons' one seam to the operating system's UDP: open a socket, ask whether an
    address is still on this host, read a socket's kernel drops. `SYSTEM` is the real one;
    `mtce.fakenet.FakeNetwork` is the in-memory one tests run the daemons on."""

    def udp(self, address: str | None = None, port: int = 0, *, family: int | None = None,
            rcvbuf: int | None = None, reuseaddr: bool = False, nonblocking: bool = True):
        return udp_socket(address, port, family=family, rcvbuf=rcvbuf, reuseaddr=reuseaddr,
                          nonblocking=nonblocking)

    def is_local(self, address: str) -> bool:
        return address_is_local(address)

    def drops(self, sock) -> int | None:
        return kernel_drops(sock)

    def vanished(self, sock) -> str:
        """The address `sock` is bound to when it is no longer on this host, else ""."""
        try:
            addr = sock.getsockname()[0]
        except OSError:
            return ""
        if addr and addr not in ("0.0.0.0", "::") and not self.is_local(addr):
            return addr
        return ""


SYSTEM = Sockets()


def mmsg_available() -> bool:
    """Whether recvmmsg(2) can be called here (mtce/mmsg.py; ctypes is loaded only then, and a
    Python without ctypes reads with recvfrom_into)."""
    try:
        from mtce import mmsg
    except ImportError:
        return False
    return mmsg.available()


# How far back a datagram's kernel time stamp is believed on a socket not read before (later:
# back to its previous read; mtce/mmsg.py).
STAMP_HORIZON_S = 10.0
# The kernel stamps on the wall clock: when it moved against the monotonic clock by more than
# this since a socket's previous read (an NTP step, `date -s`), that read's stamps are not
# believed and its datagrams arrived when read.
WALL_STEP_S = 0.05


def wall_offset() -> float:
    return time.time() - time.monotonic()

RETRY_ERRNOS = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)


class Receiver:
    """Drains a non-blocking socket into `handler(buf, start, size, source_ip, tag, arrived)`:
    the datagram is `buf[start:start + size]`, `buf` a reused bytearray valid only during the
    call, `tag` what the caller passed (the agent's network), `arrived` when it arrived on
    `clock` (None: not known, it is now). At most `limit` datagrams a drain, read `batch` at a
    time.

    With `mmsg`, a real socket is read with recvmmsg(2) when the C library has it (a
    `mmsg.Batch` per address family), with the kernel's arrival time of each datagram when
    the socket was `prepare`d (True: its datagrams come with their arrival time); anything
    else (a fake socket, no recvmmsg, the client) with one recvfrom_into per datagram. Both
    give the handler the same bytes and source."""

    def __init__(self, batch: int = 50, limit: int | None = None, mmsg: bool = False,
                 clock=None):
        self.batch = batch
        self.limit = limit or batch
        self.buffer = bytearray(RX_BUFFER)
        self.mmsg = mmsg and mmsg_available()
        self.clock = clock
        self.batches: dict = {}
        # descriptor -> (when it was last read to empty, the wall clock's offset then)
        self.read_at: dict = {}
        self._offset0 = wall_offset()

    def prepare(self, sock) -> bool:
        """A new socket this receiver will read: True when its datagrams will come with the
        kernel's arrival time (a real socket read with recvmmsg, a clock to put it on)."""
        if self.mmsg and self.clock is not None and type(sock) is socket.socket:
            from mtce.mmsg import enable_stamps
            return enable_stamps(sock)
        return False

    def drain(self, sock, handler, tag=None) -> int:
        """Returns the number of datagrams handled; socket errors end the batch quietly."""
        if self.mmsg and type(sock) is socket.socket:
            batch = self.batches.get(sock.family)
            if batch is None:
                from mtce.mmsg import Batch
                batch = self.batches[sock.family] = Batch(self.batch, sock.family)
            now = self.clock.now() if self.clock is not None else time.monotonic()
            fd = sock.fileno()
            offset = wall_offset()
            since, before = self.read_at.get(fd, (now - STAMP_HORIZON_S, self._offset0))
            if abs(offset - before) > WALL_STEP_S:
                since = now                     # stepped: every stamp of this read is `now`
            count = batch.drain(sock, handler, self.limit, tag, now, since)
            if count < self.limit or fd not in self.read_at:
                self.read_at[fd] = (now, offset)
            return count
        count = 0
        recv = sock.recvfrom_into
        buf = self.buffer
        fd = sock.fileno()
        while count < self.limit and sock.fileno() == fd:   # a handler may close it
            try:
                n, source = recv(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:
                if err.errno in RETRY_ERRNOS:
                    continue    # a queued ICMP error for an earlier send; not a datagram
                raise
            count += 1
            handler(buf, 0, n, source[0], tag, None)
        return count


def sendto(sock: socket.socket | None, data: bytes, address: str, port: int) -> OSError | None:
    """Send one datagram; returns the error instead of raising."""
    if sock is None:
        return OSError(errno.EBADF, os.strerror(errno.EBADF))
    try:
        sock.sendto(data, (address, port))
    except OSError as err:
        return err
    return None


# Why an authentication check dropped a datagram (auth.Authenticator.verify's reasons), as the
# metrics' `reason` label; anything else a daemon drops is "invalid".
AUTH_DROP_REASONS = (("no authentication tag", "untagged"),
                     ("malformed authentication tag", "malformed_tag"),
                     ("unknown key id", "unknown_key"),
                     ("authentication tag does not verify", "bad_tag"),
                     ("time ", "stale"),
                     ("replayed", "replayed"))
AUTH_REASONS = tuple(name for _, name in AUTH_DROP_REASONS) + ("other",)


def auth_reason(why: str) -> str:
    """The `reason` label of an authentication drop (`other` for a text not in the table)."""
    for prefix, name in AUTH_DROP_REASONS:
        if why.startswith(prefix):
            return name
    return "other"


@dataclass
class Counters:
    """What a daemon counts of its traffic (the agent's `status`, `mtce bench`): one typed
    object, written only by the daemon that owns it and its Wire."""
    rx: int = 0                  # datagrams received
    rx_bad: int = 0              # dropped: undecodable, not authentic, not for this host
    unknown_source: int = 0      # agent: from an address no host owns
    mtcalive: int = 0            # agent: valid mtcAlive taken
    acks: int = 0
    events: int = 0
    tx: int = 0
    tx_errors: int = 0
    kernel_drops: int = 0
    commands: int = 0            # client: commands that passed the MAC check
    refused: int = 0             # client: commands from an address it does not trust
    acks_sent: int = 0           # client: ACKs sent
    stalls: int = 0              # agent: loop stalls noticed
    # per network (index Net): for the metrics endpoint
    rx_net: list = dataclasses.field(default_factory=lambda: [0, 0, 0])
    bad_net: list = dataclasses.field(default_factory=lambda: [0, 0, 0])
    unknown_net: list = dataclasses.field(default_factory=lambda: [0, 0, 0])
    drops_net: list = dataclasses.field(default_factory=lambda: [0, 0, 0])
    tx_net: list = dataclasses.field(default_factory=lambda: [0, 0, 0])
    tx_errors_net: list = dataclasses.field(default_factory=lambda: [0, 0, 0])
    # authentication drops (also in rx_bad) by network, then by AUTH_REASONS
    auth_net: list = dataclasses.field(
        default_factory=lambda: [dict.fromkeys(AUTH_REASONS, 0) for _ in range(3)])

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Wire:
    """Every datagram into and out of a daemon: tagged and checked when `[security]` has keys
    (mtce.auth), as is otherwise. One place for what agent and client both need."""

    def __init__(self, authenticator, warnings, log, say, counters: Counters):
        """`say`: how a decided line is logged (logs.Lines.say); a drop is noise."""
        self.log, self.say, self.counters = log, say, counters
        self.auth = self._kept = None
        self.use(authenticator, warnings)
        if authenticator is not None:
            log.info("message authentication on: %d key(s), signing with %s ; require %s",
                     len(authenticator.keys), authenticator.keys[0][0],
                     "yes" if authenticator.require else "no")

    def use(self, authenticator, warnings=()) -> None:
        """Start-up or a reload: new keys keep the memory of accepted tags (no replays), also
        after a reload that turned the keys off for a while."""
        from mtce.auth import carry_over
        for warning in warnings:
            self.log.warning("%s", warning)
        self.auth = carry_over(self.auth or self._kept, authenticator)
        self._kept = self.auth or self._kept

    def send(self, sock: socket.socket | None, data: bytes, address: str,
             port: int) -> OSError | None:
        if self.auth is not None:
            data = self.auth.sign(data)
        return sendto(sock, data, address, port)

    def admit(self, data, src: str, net):
        """(the datagram as the original sent it, whether a valid tag vouched for it), or
        (None, False) for a datagram to drop (counted, logged throttled)."""
        if self.auth is None:
            return data, False
        payload, why, tagged = self.auth.verify(data)
        if payload is None:
            self.counters.rx_bad += 1
            self.counters.auth_net[net][auth_reason(why)] += 1
            self.say(Log("warning", f"dropping datagram from {src} on {net.iface} network: "
                                    f"{why}", "noise", ("auth", net, why.split(" ")[0])))
        return payload, tagged


def describe_error(err: OSError) -> str:
    """`<errno>:<text>` as the original prints `(%d:%m)`; an address lookup's error with
    its own text (its codes are not errno's)."""
    code = err.errno or 0
    if isinstance(err, socket.gaierror) and err.strerror:
        return f"{code}:{err.strerror}"
    return f"{code}:{os.strerror(code) if code else err}"


assert RX_BUFFER > MSG_SIZE


SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)      # Linux 4.5+: struct sk_meminfo
SK_MEMINFO_DROPS = 8                                 # u32 index of sk_drops in it


def kernel_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped on this socket's full receive buffer.

    SO_MEMINFO reads the one counter in O(1); /proc/net/udp (a line per UDP socket of the
    namespace, thousands on a busy host) is only the fallback.
    """
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * (SK_MEMINFO_DROPS + 1))
        return struct.unpack_from(f"{SK_MEMINFO_DROPS + 1}I", raw)[SK_MEMINFO_DROPS]
    except (OSError, struct.error):
        pass
    try:
        inode = os.fstat(sock.fileno()).st_ino
    except OSError:
        return None
    table = "/proc/net/udp6" if sock.family == socket.AF_INET6 else "/proc/net/udp"
    try:
        with open(table, encoding="ascii", errors="replace") as f:
            next(f, None)
            for line in f:
                fields = line.split()
                if len(fields) >= 13 and fields[9] == str(inode):
                    return int(fields[12])
    except (OSError, ValueError):
        return None
    return None
