"""One request and one reply per connection, on a listening stream socket, served from the
daemon's loop: the control socket (ctl.py) and the metrics endpoint (metrics.py).

Everything is non-blocking and bounded, so that no client, slow or hostile, can block or slow
the loop: at most `max_connections` at once (more are closed at once), a request of at most
`max_request` bytes that must be whole within `idle_s`, a reply written as the reader takes it
and dropped after `reply_timeout_s`. Subclasses say when a request is whole and what the reply
is; a request that is too large or too slow gets `too_large()` or nothing.
"""

from __future__ import annotations

import logging


class StreamServer:
    max_request = 64 * 1024
    idle_s = 5.0
    reply_timeout_s = 10.0
    max_connections = 16
    what = "stream"                 # in log lines

    def __init__(self, sock, loop, log: logging.Logger, clock):
        from mtce import logs
        self.sock, self.loop, self.log, self.clock = sock, loop, log, clock
        self.throttle = logs.Throttle(log, clock)
        sock.setblocking(False)
        self.conns: dict = {}                       # conn -> [request bytes, idle timer]
        self._writing: dict = {}                    # conn -> [memoryview left, timer]
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

    # -- the loop's side -----------------------------------------------------------------------
    def _accept(self, sock) -> None:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:           # EMFILE and the like: the listener stays
            self.throttle.warning((self.what, "accept"), "%s: accept failed (%s)", self.what,
                                  err.strerror or err)
            return
        conn.setblocking(False)
        if len(self.conns) + len(self._writing) >= self.max_connections:
            self.throttle.warning((self.what, "busy"), "%s request refused: %d connections "
                                  "already open", self.what, self.max_connections)
            conn.close()
            return
        if not self.accepted(conn):
            return
        self.conns[conn] = [bytearray(), self.loop.call_later(self.idle_s,
                                                              lambda: self._drop(conn))]
        self.loop.add_reader(conn, self._read)

    def _drop(self, conn) -> None:
        entry = self.conns.pop(conn, None)
        if entry is not None:
            entry[1].cancel()
            self.loop.remove_reader(conn)
            conn.close()

    def _read(self, conn) -> None:
        buf = self.conns[conn][0]
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
        entry = self.conns.pop(conn)
        entry[1].cancel()
        self.loop.remove_reader(conn)
        if large:
            self.reply(conn, self.too_large())
        else:
            self.respond(conn, bytes(buf))

    def respond(self, conn, raw: bytes) -> None:
        """Answer one whole request; a subclass may keep `conn` and `reply` later."""
        self.reply(conn, self.answer(raw))

    def reply(self, conn, data: bytes) -> None:
        """Send what the socket takes now; the rest is written from the loop as the reader
        reads it: the daemon never waits for a reader."""
        self._writing[conn] = [memoryview(data), self.loop.call_later(
            self.reply_timeout_s, lambda: self._finish(conn))]
        self._write(conn)
        if conn in self._writing:
            self.loop.add_writer(conn, self._write)

    def _write(self, conn) -> None:
        entry = self._writing.get(conn)
        if entry is None:
            return
        try:
            while entry[0]:
                entry[0] = entry[0][conn.send(entry[0][:1 << 16]):]
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._finish(conn)

    def _finish(self, conn) -> None:
        entry = self._writing.pop(conn, None)
        if entry is None:
            return
        entry[1].cancel()
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
        return sum(len(e[0]) for e in self._writing.values())

    def close(self) -> None:
        for conn in list(self.conns):
            self._drop(conn)
        for conn in list(self._writing):
            self._finish(conn)
        self.loop.remove_reader(self.sock)
        self.sock.close()
