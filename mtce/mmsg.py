"""recvmmsg(2) through ctypes: up to a batch of datagrams a system call, into buffers,
address buffers and headers made once, with each datagram's kernel arrival time (`SO_TIMESTAMP`,
issue 25). Loaded only by a receiver that uses it (the agent): the client and the tools do
without ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import sys
import time

from mtce.transport import RETRY_ERRNOS, RX_BUFFER

# One control message per datagram: struct cmsghdr, then struct timeval (CMSG_SPACE of it).
_SIZE_T = ctypes.sizeof(ctypes.c_size_t)
_LONG = ctypes.sizeof(ctypes.c_long)


def _align(n: int) -> int:
    return (n + _SIZE_T - 1) & ~(_SIZE_T - 1)


_CMSG_HDR = _align(_SIZE_T + 8)                 # cmsg_len, cmsg_level, cmsg_type
CONTROL_SIZE = _CMSG_HDR + _align(2 * _LONG)    # + tv_sec, tv_usec
SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29)


def enable_stamps(sock) -> bool:
    """Ask the kernel for each datagram's arrival time (SO_TIMESTAMP); False if it refused."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
    except OSError:
        return False
    return True


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_Iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


_NAME_SIZE = {socket.AF_INET: 16, socket.AF_INET6: 28}    # struct sockaddr_in, sockaddr_in6
MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
_libc_recvmmsg = None


def available() -> bool:
    return _recvmmsg() is not None


def _recvmmsg():
    global _libc_recvmmsg
    if _libc_recvmmsg is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).recvmmsg
        except (OSError, AttributeError):
            fn = False
        else:
            fn.argtypes = [ctypes.c_int, ctypes.POINTER(_Mmsghdr), ctypes.c_uint, ctypes.c_int,
                           ctypes.c_void_p]
            fn.restype = ctypes.c_int
        _libc_recvmmsg = fn
    return _libc_recvmmsg or None


class Batch:
    """Up to `size` datagrams per recvmmsg(2) call on sockets of one address family: the
    buffers, iovecs, address buffers and headers are made once, and so is where each
    datagram's length and source address lie in them. Sources are turned into text once per
    distinct address (a bounded cache keyed by the raw address: an IPv4 one is a word of the
    address buffer), so the handler gets what recvfrom would give: `"192.0.2.1"`,
    `"2001:db8::1"`, `"fe80::1%eth0"`, `"::ffff:192.0.2.1"`.

    With each datagram comes when it arrived, on the caller's clock: the kernel's time stamp
    (a socket with `enable_stamps`) turned into an age and taken from `now`; `now` itself
    when the datagram has no stamp. A time before `since` (the previous read of the socket,
    which left nothing queued) is `since`, one after `now` is `now`; the caller gives
    `since` = `now` when the wall clock the kernel stamps on was stepped since that read
    (transport.Receiver)."""

    MAX_NAMES = 65536

    def __init__(self, size: int, family: int = socket.AF_INET):
        self.size, self.family = size, family
        name_size = _NAME_SIZE.get(family, 28)
        self.buffers = bytearray(RX_BUFFER * size)
        self.names = ctypes.create_string_buffer(name_size * size)
        self.names_view = memoryview(self.names).cast("B")
        self.iovecs = (_Iovec * size)()
        self.headers = (_Mmsghdr * size)()
        self.control = ctypes.create_string_buffer(CONTROL_SIZE * size)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.buffers))
        names = ctypes.addressof(self.names)
        control = ctypes.addressof(self.control)
        for i in range(size):
            self.iovecs[i].iov_base = base + i * RX_BUFFER
            self.iovecs[i].iov_len = RX_BUFFER
            h = self.headers[i].msg_hdr
            h.msg_name = names + i * name_size
            h.msg_iov = ctypes.pointer(self.iovecs[i])
            h.msg_iovlen = 1
            h.msg_namelen = name_size
            h.msg_control = control + i * CONTROL_SIZE
            h.msg_controllen = CONTROL_SIZE
        self.call = _recvmmsg()
        self.text: dict = {}
        # The headers as 32-bit words; per datagram: (where its data starts, the word of its
        # length, the word of its IPv4 address or the byte offset of its address).
        self.words = memoryview(self.headers).cast("B").cast("I")
        self.name_words = self.names_view.cast("I")
        # ... and of its control length (size_t) and stamp (two longs after the cmsghdr).
        self.sizes = memoryview(self.headers).cast("B").cast("N")
        self.longs = memoryview(self.control).cast("B").cast("l")
        stride = ctypes.sizeof(_Mmsghdr)
        at_ctl = _Mmsghdr.msg_hdr.offset + _Msghdr.msg_controllen.offset
        self.ipv4 = family == socket.AF_INET
        self.slots = [(i * RX_BUFFER, (i * stride + _Mmsghdr.msg_len.offset) // 4,
                       (i * name_size) // 4 + 1 if self.ipv4 else i * name_size,
                       (i * stride + at_ctl) // _SIZE_T,
                       (i * CONTROL_SIZE + _CMSG_HDR) // _LONG)
                      for i in range(size)]
        self.name_size = name_size

    def drain(self, sock, handler, limit: int, tag=None, now: float = 0.0,
              since: float = 0.0) -> int:
        """Up to `limit` datagrams from `sock`, `size` a system call, each to
        `handler(buffers, start, size, source, tag, arrived)`, `arrived` on the clock of
        `now`. It stops when a handler closed the socket (its descriptor may be another
        socket's by then)."""
        count = 0
        fd = sock.fileno()
        headers, words, names, slots = self.headers, self.words, self.name_words, self.slots
        text, call, size, buffers, ipv4 = self.text, self.call, self.size, self.buffers, self.ipv4
        sizes, longs = self.sizes, self.longs
        base = now - time.time()                 # a stamp on the wall clock, to `now`'s clock
        while count < limit:
            want = min(size, limit - count)
            got = call(fd, headers, want, MSG_DONTWAIT, None)
            if got < 0:
                err = ctypes.get_errno()
                if err in RETRY_ERRNOS:
                    continue
                if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    break
                raise OSError(err, os.strerror(err))
            for start, at_len, at_name, at_ctl, at_sec in slots[:got]:
                key = names[at_name] if ipv4 else self._key(at_name)
                source = text.get(key)
                if source is None:
                    source = self._source(key, at_name)
                if sizes[at_ctl] == CONTROL_SIZE:
                    arrived = base + longs[at_sec] + longs[at_sec + 1] * 1e-6
                    if arrived > now:
                        arrived = now
                    elif arrived < since:
                        arrived = since
                else:                           # no stamp (or a truncated one): now
                    arrived = now
                    sizes[at_ctl] = CONTROL_SIZE
                handler(buffers, start, words[at_len], source, tag, arrived)
            count += got
            if got < want or sock.fileno() != fd:
                break
        return count

    def _key(self, at: int) -> bytes:
        """The cache key of an IPv6 source: its address bytes without the port."""
        raw = self.names_view[at:at + self.name_size]
        return bytes(raw[:2]) + bytes(raw[4:])

    def _source(self, key, at_name: int) -> str:
        """A source address as recvfrom gives it, kept under `key`."""
        if self.ipv4:
            raw = self.names_view[at_name * 4 - 4:at_name * 4 + 12]
        else:
            raw = self.names_view[at_name:at_name + self.name_size]
        family = int.from_bytes(raw[:2], sys.byteorder)
        if family == socket.AF_INET:
            text = socket.inet_ntop(socket.AF_INET, bytes(raw[4:8]))
        elif family == socket.AF_INET6:
            text = socket.inet_ntop(socket.AF_INET6, bytes(raw[8:24]))
            scope = int.from_bytes(raw[24:28], sys.byteorder)
            if scope:
                try:
                    text += "%" + socket.if_indextoname(scope)
                except OSError:
                    text += f"%{scope}"
        else:
            text = ""
        if len(self.text) >= self.MAX_NAMES:
            self.text.clear()
        self.text[key] = text
        return text
