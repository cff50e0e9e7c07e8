"""The agent's control socket, server side: what a request means (`answer`), and the server:
one JSON request and one JSON reply per connection, on a Unix socket (`[paths] agent_socket`,
mode 0600) served from the agent's loop; only root or the agent's own user may talk to it
(SO_PEERCRED). The command line's side
(`mtce hosts`, `alarms`, `lock`, ...) is cli_ctl.py.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import select
import socket
import struct

from mtce.states import MAX_WAIT_S
from mtce.streams import StreamServer

MAX_REQUEST = 64 * 1024
IDLE_S = 5.0
REPLY_TIMEOUT_S = 10.0          # a reader that takes longer for its reply is dropped
MAX_CONNECTIONS = 16            # at once: a new one replaces the oldest unfinished
MAX_WAITING = 16                # `--wait` requests waiting for their outcome at once


class Wait:
    """A handler's answer to a request that waits (`"wait": SECONDS`): its reply is sent
    later, by `Server.tell(watch, reply)`, or when the agent stops."""

    __slots__ = ("watch",)

    def __init__(self, watch: int):
        self.watch = watch


def wait_seconds(req: dict) -> tuple[float | None, str | None]:
    """(the request's `wait`, None), (None, None) without one, or (None, why it is bad)."""
    value = req.get("wait")
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not 0 < value <= MAX_WAIT_S:
        return None, f"bad request: wait is seconds above 0, at most {MAX_WAIT_S:g}"
    return float(value), None


def answer(req: dict, table, alarms, outbox, status, now: float):
    """What a control request means (docs/contract.md §5): its JSON reply from the agent's
    `table`, `alarms` store, `status()`, or, for a command, what the `outbox` made of it; an
    accepted command with `wait` is a `Wait` for its outcome (`outcome_reply`)."""
    cmd = req.get("cmd")
    if cmd == "hosts":
        return {"ok": True, "hosts": table.to_json(now)}
    if cmd == "alarms":
        return {"ok": True, "alarms": alarms.to_json()}
    if cmd == "status":
        return {"ok": True, **status()}
    if cmd in ("lock", "unlock", "reboot", "reset", "lazy-reboot", "alive"):
        host = req.get("host")
        if not isinstance(host, str) or not host:
            return {"ok": False, "error": "a host name is required"}
        wait, bad = wait_seconds(req)
        if bad:
            return {"ok": False, "error": bad}
        ok, message = outbox.operator(cmd, host)
        if ok and wait is not None:
            return Wait(outbox.watch(cmd, host, wait))
        return {"ok": ok, "message" if ok else "error": message}
    return {"ok": False, "error": f"unknown request {cmd!r}"}


def outcome_reply(outcome) -> dict:
    """The reply a `--wait` request gets: its command's outcome (agent_commands.Outcome)."""
    return {"ok": outcome.ok, "outcome": outcome.text(), "result": outcome.result,
            "attempts": outcome.attempts, "acked": [n.key for n in outcome.nets]}


class Server(StreamServer):
    """The agent's control socket: a JSON object per line in, a JSON object out."""

    max_request, idle_s, reply_timeout_s, max_connections = (
        MAX_REQUEST, IDLE_S, REPLY_TIMEOUT_S, MAX_CONNECTIONS)
    what = "control"

    def __init__(self, path: str, loop, handler, log: logging.Logger, clock, forget=None):
        self.path, self.handler = path, handler
        # Connections whose request waits for its outcome (`--wait`), by watch id: at most
        # MAX_WAITING; one whose client goes away is closed, and `forget(watch)` told.
        self.waiting: dict[int, object] = {}
        self.forget = forget
        if len(os.fsencode(path)) > 107:
            raise OSError(errno.ENAMETOOLONG, f"a Unix socket path has at most 107 bytes; "
                                              f"this one has {len(os.fsencode(path))}")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(self.backlog)
        super().__init__(sock, loop, log, clock)

    def _remove_stale(self) -> None:
        if not os.path.exists(self.path):
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.path)
        except OSError as err:
            if err.errno in (errno.ECONNREFUSED, errno.ENOTSOCK, errno.ENOENT):
                os.unlink(self.path)
                return
            raise
        finally:
            probe.close()
        raise OSError(errno.EADDRINUSE, f"another agent is serving {self.path}")

    def accepted(self, conn) -> bool:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", creds)
        if uid not in (0, os.getuid()):
            self.throttle.warning(("ctl", "uid", uid), "control request from uid %d (pid %d) "
                                  "refused: root only", uid, pid)
            self.reply(conn, _encode({"ok": False, "error": "permission denied: root only"}))
            return False
        return True

    def complete(self, buf: bytearray, chunk: bytes) -> bool:
        return b"\n" in chunk

    def answer(self, raw: bytes) -> bytes:
        return _encode(self._answer(raw, may_wait=False))

    def respond(self, conn, raw: bytes, entry=None) -> None:
        reply = self._answer(raw, may_wait=len(self.waiting) < MAX_WAITING)
        if not isinstance(reply, Wait):
            self.reply(conn, _encode(reply), entry)
            return
        self.waiting[reply.watch] = conn
        # Readable while waiting means the client closed (or sent more than its request):
        # the loop never blocks on it, and a gone client is forgotten at once.
        self.loop.add_reader(conn, lambda c, watch=reply.watch: self._waiter_read(watch, c))

    def _waiter_read(self, watch: int, conn) -> None:
        if self.waiting.get(watch) is not conn:
            return                      # told or replaced already: not parked any more
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            return                      # beyond the request: ignored, as by _finish
        if not _hung_up(conn):          # only its sending side shut (`nc -U`): it still
            self.loop.remove_reader(conn)       # reads; the outcome or the deadline comes
            return
        self.waiting.pop(watch, None)
        self.loop.remove_reader(conn)
        conn.close()
        if self.forget is not None:
            self.forget(watch)

    def tell(self, watch: int, reply: dict) -> None:
        """The outcome a waiting request was waiting for (nothing if its client is gone)."""
        conn = self.waiting.pop(watch, None)
        if conn is None:
            return
        self.loop.remove_reader(conn)
        self.reply(conn, _encode(reply))

    def too_large(self) -> bytes:
        return _encode(self._bad("request too large"))

    def _answer(self, raw: bytes, may_wait: bool = True):
        if len(raw) > MAX_REQUEST:
            return self._bad("request too large")
        try:
            req = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return self._bad("not a JSON request")
        if not isinstance(req, dict):
            return self._bad("a request is a JSON object")
        if req.get("wait") is not None and not may_wait:
            self.throttle.warning(("ctl", "waiting"), "control request refused: %d requests "
                                  "already wait for their outcome", MAX_WAITING)
            return {"ok": False, "error": f"{MAX_WAITING} commands already wait for their "
                    f"outcome ; nothing sent (try again later, or without --wait)"}
        try:
            return self.handler(req)
        except Exception:   # noqa: BLE001 - one bad request must not stop the agent
            self.log.exception("control request %r failed", req)
            return {"ok": False, "error": "internal error (see the agent's log)"}

    def _bad(self, why: str) -> dict:
        self.throttle.warning(("ctl", why), "bad control request: %s", why)
        return {"ok": False, "error": f"bad request: {why}"}

    def close(self) -> None:
        for watch in list(self.waiting):
            self.tell(watch, {"ok": False, "error": "the agent stopped before the outcome"})
        super().close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _hung_up(conn) -> bool:
    """Whether the peer closed the connection, not just its sending side (both read as
    end-of-file; only a close sets POLLHUP on a Unix stream socket)."""
    poller = select.poll()
    poller.register(conn, select.POLLHUP)
    return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


def _encode(reply: dict) -> bytes:
    return json.dumps(reply).encode() + b"\n"
