"""One request and one reply per connection, on a listening stream socket, served from the
daemon's loop: the control socket (agent_ctl.py) and the metrics endpoint (metrics.py).

Everything is non-blocking and bounded, so that no client, slow or hostile, can block or slow
the loop, nor keep others out: at most `max_connections` at once and `max_per_source` from one
address; a connection must send its first byte within `first_byte_s` and its whole request (at
most `max_request` bytes) within `idle_s`; a reply is written as the reader takes it and
dropped after `reply_timeout_s`. Each loop turn accepts what the listen queue holds (at most
`accepts_per_turn`; more left: the next turn comes without the loop's pause), and a new
connection is read at once: a request sent with the connection is answered in the turn it
arrives. A new connection that finds the table full, or its address at
its limit, takes the place of the oldest one there whose request is unfinished (whatever it has
sent), else of the oldest reply still being written; the one that gives way is read a last time
first, and answered if its request has come. So whatever strangers hold open or keep sending,
from other addresses or from its own, a client that sends its request at once is served.
Subclasses say when a request is whole and what the reply is; a request that is too large or
too slow gets `too_large()` or nothing.
"""

from __future__ import annotations

import logging


class _Conn:
    """One accepted connection: where it comes from, its request so far, its reply's rest."""

    __slots__ = ("sock", "source", "opened_at", "buf", "timer", "out")

    def __init__(self, sock, source, opened_at: float):
        self.sock, self.source, self.opened_at = sock, source, opened_at
        self.buf = bytearray()
        self.timer = None
        self.out: memoryview | None = None


class StreamServer:
    max_request = 64 * 1024
    first_byte_s = 2.0
    idle_s = 5.0
    reply_timeout_s = 10.0
    max_connections = 16
    max_per_source = 4              # per peer address (TCP); a Unix socket's peers are one
    backlog = 1024                  # the listen queue: a burst of connections waits there
    accepts_per_turn = 64           # taken from it a turn (more left: the next turn at once)
    what = "stream"                 # in log lines

    def __init__(self, sock, loop, log: logging.Logger, clock):
        from mtce import logs
        self.sock, self.loop, self.log, self.clock = sock, loop, log, clock
        self.throttle = logs.Throttle(log, clock)
        sock.setblocking(False)
        self.conns: dict = {}                       # socket -> _Conn, reading its request
        self._writing: dict = {}                    # socket -> _Conn, writing its reply
        loop.add_reader(sock, self._accept)

    # -- what subclasses say -------------------------------------------------------------------
    def accepted(self, conn) -> bool:
        """A new connection: False if it was answered (or closed) already."""
        return True

    def complete(self, buf: bytearray, chunk: bytes) -> bool:
        """Whether the request in `buf` is whole (`chunk`: what was just read)."""
        raise NotImplementedError

    def answer(self, raw: bytes) -> bytes:
        """The reply to one whole request (at most `max_request` bytes); never raises."""
        raise NotImplementedError

    def too_large(self) -> bytes:
        return b""

    # -- who gives way to a new connection -----------------------------------------------------
    def _victim(self, source) -> _Conn | None:
        """The connection a new one from `source` replaces, or None if there is room: at its
        address's limit, the oldest from that address; in a full table, the oldest of all. The
        oldest with its request unfinished (what it has sent does not matter: a stranger
        trickling bytes ranks as one that sends nothing), else the oldest reply being written;
        never the new one, which is the youngest."""
        table = list(self.conns.values()) + list(self._writing.values())
        if source is not None and self.max_per_source:
            mine = [c for c in table if c.source == source]
            if len(mine) >= self.max_per_source:
                return self._oldest(mine)
        if len(table) >= self.max_connections:
            return self._oldest(table)
        return None

    def _oldest(self, entries: list) -> _Conn:
        reading = [c for c in entries if c.sock in self.conns]
        return min(reading or entries, key=lambda c: c.opened_at)

    def _make_room(self, source) -> None:
        """Close who gives way to a new connection from `source` (`_victim`). One still reading
        is read a last time first: a request already whole is answered, not closed unanswered
        (then the next in line gives way). Bounded: each pass answers or closes one."""
        for _ in range(len(self.conns) + len(self._writing) + 1):
            victim = self._victim(source)
            if victim is None:
                return
            if victim.sock in self.conns:
                self._read(victim.sock)
                if victim.sock not in self.conns:
                    continue
            mine = source is not None and victim.source == source
            self.throttle.warning((self.what, "evict"), "%s: %d connections open%s ; closed "
                                  "the oldest (from %s) for a new one", self.what,
                                  len(self.conns) + len(self._writing),
                                  f", {self.max_per_source} from {source}" if mine else "",
                                  victim.source or "a local peer")
            self._close(victim)

    # -- the loop's side -----------------------------------------------------------------------
    def _accept(self, sock) -> None:
        """What the listen queue holds, at most `accepts_per_turn`, each read at once; after a
        full batch the loop turns again without its pause: a connect flood is drained as fast
        as the loop turns, and a burst waits in the queue (`backlog`) instead of having the
        handshakes that come with it, a scrape's among them, dropped."""
        for _ in range(self.accepts_per_turn):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:       # EMFILE and the like: the listener stays
                self.throttle.warning((self.what, "accept"), "%s: accept failed (%s)",
                                      self.what, err.strerror or err)
                return
            self._take(conn, addr)
        self.loop.hurry = True

    def _take(self, conn, addr) -> None:
        conn.setblocking(False)
        source = addr[0] if isinstance(addr, tuple) and addr else None
        self._make_room(source)
        if not self.accepted(conn):
            return
        entry = _Conn(conn, source, self.clock.now())
        entry.timer = self.loop.call_later(self.first_byte_s, lambda: self._deadline(conn))
        self.conns[conn] = entry
        self.loop.add_reader(conn, self._read)
        self._read(conn)                 # a request sent with the connection: answered now

    def _deadline(self, conn) -> None:
        """No byte by `first_byte_s`: closed; a request begun has until `idle_s` in all."""
        entry = self.conns.get(conn)
        if entry is None:
            return
        left = entry.opened_at + self.idle_s - self.clock.now()
        if entry.buf and left > 0:
            entry.timer = self.loop.call_later(left, lambda: self._deadline(conn))
            return
        self._drop(conn)

    def _close(self, entry: _Conn) -> None:
        if entry.sock in self.conns:
            self._drop(entry.sock)
        else:
            self._finish(entry.sock)

    def _drop(self, conn) -> None:
        entry = self.conns.pop(conn, None)
        if entry is not None:
            entry.timer.cancel()
            self.loop.remove_reader(conn)
            conn.close()

    def _read(self, conn) -> None:
        entry = self.conns.get(conn)
        if entry is None:               # closed earlier in this turn (given way)
            return
        buf = entry.buf
        try:
            chunk = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        buf += chunk
        large = len(buf) > self.max_request
        if chunk and not large and not self.complete(buf, chunk):
            return
        del self.conns[conn]
        entry.timer.cancel()
        self.loop.remove_reader(conn)
        if large:
            self.reply(conn, self.too_large(), entry)
        else:
            self.respond(conn, bytes(buf), entry)

    def respond(self, conn, raw: bytes, entry: _Conn | None = None) -> None:
        """Answer one whole request; a subclass may keep `conn` and `reply` later."""
        self.reply(conn, self.answer(raw), entry)

    def reply(self, conn, data: bytes, entry: _Conn | None = None) -> None:
        """Send what the socket takes now; the rest is written from the loop as the reader
        reads it: the daemon never waits for a reader."""
        if entry is None:
            entry = _Conn(conn, None, self.clock.now())
        entry.out = memoryview(data)
        entry.timer = self.loop.call_later(self.reply_timeout_s, lambda: self._finish(conn))
        self._writing[conn] = entry
        self._write(conn)
        if conn in self._writing:
            self.loop.add_writer(conn, self._write)

    def _write(self, conn) -> None:
        entry = self._writing.get(conn)
        if entry is None:
            return
        try:
            while entry.out:
                entry.out = entry.out[conn.send(entry.out[:1 << 16]):]
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._finish(conn)

    def _finish(self, conn) -> None:
        entry = self._writing.pop(conn, None)
        if entry is None:
            return
        entry.timer.cancel()
        self.loop.remove_writer(conn)
        try:                 # what the client sent beyond the request: read, so that closing
            for _ in range(16):           # does not reset the connection under the reply
                if not conn.recv(65536):
                    break
        except OSError:
            pass
        conn.close()

    def pending_bytes(self) -> int:
        """Reply bytes still waiting for their readers."""
        return sum(len(e.out) for e in self._writing.values())

    def close(self) -> None:
        for conn in list(self.conns):
            self._drop(conn)
        for conn in list(self._writing):
            self._finish(conn)
        self.loop.remove_reader(self.sock)
        self.sock.close()

