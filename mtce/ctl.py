"""The agent's control socket: one JSON request and one JSON reply per connection.

Server side: a Unix socket (`[paths] agent_socket`, mode 0600) served from the agent's loop;
only root or the agent's own user may talk to it (SO_PEERCRED). Client side: `mtce hosts`,
`alarms`, `lock`, `unlock`, `reboot`, `reset`, `alive`, with the table an operator reads.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import struct
import sys

MAX_REQUEST = 64 * 1024
IDLE_S = 5.0
REPLY_TIMEOUT_S = 10.0          # a reader that takes longer for its reply is dropped
MAX_CONNECTIONS = 16            # more at once are refused (the loop serves them all)
NETS = ("mgmt", "cluster-host", "pxeboot")


class Server:
    def __init__(self, path: str, loop, handler, log: logging.Logger, clock):
        from mtce import logs
        self.path, self.loop, self.handler, self.log, self.clock = path, loop, handler, log, \
            clock
        self.throttle = logs.Throttle(log, clock)
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
        sock.listen(16)
        sock.setblocking(False)
        self.sock = sock
        self.conns: dict = {}
        self._writing: dict = {}                    # conn -> [memoryview left, timer]
        loop.add_reader(sock, self._accept)

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

    def _accept(self, sock) -> None:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        if len(self.conns) + len(self._writing) >= MAX_CONNECTIONS:
            self.throttle.warning(("ctl", "busy"), "control request refused: %d connections "
                                  "already open", MAX_CONNECTIONS)
            conn.close()
            return
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", creds)
        if uid not in (0, os.getuid()):
            self.throttle.warning(("ctl", "uid", uid), "control request from uid %d (pid %d) "
                                  "refused: root only", uid, pid)
            self._reply(conn, {"ok": False, "error": "permission denied: root only"})
            return
        self.conns[conn] = [bytearray(), self.loop.call_later(IDLE_S, lambda: self._drop(conn))]
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
        if chunk and b"\n" not in chunk and len(buf) <= MAX_REQUEST:
            return
        entry = self.conns.pop(conn)
        entry[1].cancel()
        self.loop.remove_reader(conn)
        self._reply(conn, self._answer(bytes(buf)))

    def _answer(self, raw: bytes) -> dict:
        if len(raw) > MAX_REQUEST:
            return self._bad("request too large")
        try:
            req = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return self._bad("not a JSON request")
        if not isinstance(req, dict):
            return self._bad("a request is a JSON object")
        try:
            return self.handler(req)
        except Exception:   # noqa: BLE001 - one bad request must not stop the agent
            self.log.exception("control request %r failed", req)
            return {"ok": False, "error": "internal error (see the agent's log)"}

    def _bad(self, why: str) -> dict:
        self.throttle.warning(("ctl", why), "bad control request: %s", why)
        return {"ok": False, "error": f"bad request: {why}"}

    def _reply(self, conn, reply: dict) -> None:
        """Send what the socket takes now; the rest is written from the loop as the reader
        reads it (a 2,000-host table is about 1 MB): the agent never waits for a reader."""
        data = memoryview(json.dumps(reply).encode() + b"\n")
        self._writing[conn] = [data, self.loop.call_later(REPLY_TIMEOUT_S,
                                                          lambda: self._finish(conn))]
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
        try:
            os.unlink(self.path)
        except OSError:
            pass


class CtlError(Exception):
    pass


def request(path: str, req: dict, timeout: float = 10.0) -> dict:
    """Send one request to the agent; raises CtlError with an operator-readable text."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(json.dumps(req).encode() + b"\n")
        data = bytearray()
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except FileNotFoundError:
        raise CtlError(f"the agent is not running (no control socket {path})") from None
    except ConnectionRefusedError:
        raise CtlError(f"the agent is not running (nothing listens on {path})") from None
    except PermissionError:
        raise CtlError(f"permission denied on {path}: run as root") from None
    except socket.timeout:
        raise CtlError(f"the agent did not answer within {timeout:g} s ({path})") from None
    except OSError as err:
        raise CtlError(f"cannot talk to the agent at {path}: {err.strerror or err}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CtlError("the agent's reply is not JSON") from None
    if not isinstance(reply, dict):
        raise CtlError("the agent's reply is not a JSON object")
    return reply


def _age(value) -> str:
    if value is None:
        return "-"
    if value < 100:
        return f"{value:.1f}s"
    if value < 6000:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.0f}h"


def format_hosts(hosts: list, compact: bool = False) -> str:
    """The operator's table: one line per host; each network cell reads
    `state last-seq/missed age` (`-`: the host has no address on that network).
    `compact` packs the cells and columns for a narrow terminal (the lab)."""
    head = ["HOST", "PERSONALITY", "ADMIN", "AVAIL"] + [n.upper() for n in NETS]
    rows = []
    by_operator = False
    for h in hosts:
        admin = h.get("administrative", "")
        if h.get("administrative_source") == "operator":
            admin += "*"
            by_operator = True
        row = [h.get("hostname", "?"), h.get("personality", ""), admin,
               h.get("availability", "")]
        for net in NETS:
            n = (h.get("networks") or {}).get(net) or {}
            state, seq, missed = n.get("state", "?"), n.get("last_seq", 0), n.get("missed", 0)
            age = n.get("last_seen_s")
            if state == "unprovisioned":
                row.append("-")
            elif compact:
                row.append(f"{state} {seq}/{missed} "
                           f"{'-' if age is None else format(age, '.0f') + 's'}")
            else:
                row.append(f"{state:<4} {seq:>5}/{missed:<3} {_age(age):>5}")
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    gap = " " if compact else "  "
    table = "\n".join(gap.join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
                      for r in [head] + rows)
    if by_operator:
        table += "\n* set by mtce lock/unlock (kept in state_dir ; the inventory's " \
                 "administrative applies again when it changes)"
    return table


def format_alarms(alarms: list) -> str:
    if not alarms:
        return "no active alarms"
    return "\n".join(f"{a.get('id')}  {a.get('severity'):<8} {a.get('host'):<16} "
                     f"{a.get('raised_at')}  {a.get('reason')}" for a in alarms)


def cli(args, cfg) -> int:
    """`mtce hosts|alarms|lock|unlock|reboot|reset|alive`: exit 0, or 1 with one line."""
    req = {"cmd": "lazy-reboot" if getattr(args, "lazy", False) else args.command}
    if getattr(args, "host", None):
        req["host"] = args.host
    try:
        reply = request(cfg.paths.agent_socket, req)
    except CtlError as err:
        print(f"mtce: {err}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"mtce: {reply.get('error', 'the agent refused the request')}", file=sys.stderr)
        return 1
    if args.command == "hosts":
        print(json.dumps(reply["hosts"], indent=2) if args.json else
              format_hosts(reply["hosts"]))
    elif args.command == "alarms":
        print(json.dumps(reply["alarms"], indent=2) if args.json else
              format_alarms(reply["alarms"]))
    else:
        print(reply.get("message", "ok"))
    return 0
