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
import select
import socket
import struct
import sys
import time

from mtce.cli import MAX_WAIT_S, OutputError, say, to_devnull
from mtce.streams import StreamServer

MAX_REQUEST = 64 * 1024
IDLE_S = 5.0
REPLY_TIMEOUT_S = 10.0          # a reader that takes longer for its reply is dropped
MAX_CONNECTIONS = 16            # at once: a new one replaces the oldest unfinished
MAX_WAITING = 16                # `--wait` requests waiting for their outcome at once
CONNECT_PAUSE_S = (0.005, 0.1)  # a full backlog: the first and the longest pause before
                                # the client tries again (within its timeout)
WAIT_MARGIN_S = 10.0            # the CLI waits this much longer than the agent's deadline
NETS = ("mgmt", "cluster-host", "pxeboot")


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


class CtlError(Exception):
    pass


def _connect(path: str, timeout: float) -> socket.socket:
    """A socket connected to the agent. A burst of commands at once fills the listen
    backlog, and connect() on a timed (non-blocking) socket then fails with EAGAIN at once:
    tried again after a pause (5 ms, doubling up to 100 ms) until `timeout`."""
    deadline = time.monotonic() + timeout
    pause = CONNECT_PAUSE_S[0]
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            return sock
        except BlockingIOError:
            sock.close()
        except BaseException:
            sock.close()
            raise
        left = deadline - time.monotonic()
        if left <= 0:
            raise CtlError(f"the agent did not take the connection within {timeout:g} s "
                           f"({path}: too many commands at once ; try again)")
        time.sleep(min(pause, left))
        pause = min(2 * pause, CONNECT_PAUSE_S[1])


def request(path: str, req: dict, timeout: float = 10.0) -> dict:
    """Send one request to the agent; raises CtlError with an operator-readable text."""
    sock = None
    data = bytearray()
    try:
        sock = _connect(path, timeout)
        sock.sendall(json.dumps(req).encode() + b"\n")
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
    except ConnectionResetError:        # it went with our request unread: killed
        pass
    except OSError as err:
        raise CtlError(f"cannot talk to the agent at {path}: {err.strerror or err}") from None
    finally:
        if sock is not None:
            sock.close()
    # Every reply ends with a newline: without one, the agent went before its end (kill -9;
    # a SIGTERM'd agent still answers "the agent stopped before the outcome").
    if not data:
        raise CtlError("the agent closed the connection without answering (stopped or "
                       "killed)")
    if not data.endswith(b"\n"):
        raise CtlError("the agent closed the connection in the middle of its reply (stopped "
                       "or killed)")
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


def format_hosts(hosts: list, compact: int = 0) -> str:
    """The operator's table: one line per host; each network cell reads
    `state last-seq/missed age` (`-`: the host has no address on that network).
    `compact`, for a narrow terminal (`fit_hosts`): 1 packs the cells and columns, 2 also
    leaves PERSONALITY out, 3 shows each network's state alone."""
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
            elif compact >= 3:
                row.append(state)
            elif compact:
                row.append(f"{state} {seq}/{missed} "
                           f"{'-' if age is None else format(age, '.0f') + 's'}")
            else:
                row.append(f"{state:<4} {seq:>5}/{missed:<3} {_age(age):>5}")
        rows.append(row)
    if compact >= 2:
        head, rows = head[:1] + head[2:], [r[:1] + r[2:] for r in rows]
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    gap = " " if compact else "  "
    table = "\n".join(gap.join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
                      for r in [head] + rows)
    if by_operator:
        table += "\n* set by mtce lock/unlock (kept in state_dir ; the inventory's " \
                 "administrative applies again when it changes)"
    return table


LEGENDS = {1: "(per network: state last_seq/missed age)",
           3: "(per network: state ; mtce hosts --json has the counters)"}


def fit_hosts(hosts: list, width: int) -> str:
    """The host table in the widest form whose rows fit in `width` characters (a
    terminal's), with a line telling how a packed form's cells read; the narrowest form when
    none fits (mtce lab and `mtce hosts --watch`)."""
    for form in range(4):
        table = format_hosts(hosts, form)
        if max(len(row) for row in table.splitlines()[:len(hosts) + 1]) <= width:
            break
    if form:
        table += "\n" + LEGENDS[1 if form < 3 else 3]
    return table


def fit_lines(lines: list, width: int) -> list:
    """`lines` with each one longer than `width` wrapped (nothing is cut off)."""
    import textwrap
    out = []
    for line in lines:
        if len(line) <= width:
            out.append(line)
        else:
            out += textwrap.wrap(line, width, subsequent_indent="  ", break_on_hyphens=False)
    return out


def format_alarms(alarms: list) -> str:
    if not alarms:
        return "no active alarms"
    return "\n".join(f"{a.get('id')}  {a.get('severity'):<8} {a.get('host'):<16} "
                     f"{a.get('raised_at')}  {a.get('reason')}" for a in alarms)


def watch(path: str, interval: float, out=None, ask=None, sleep=None, turns=None) -> int:
    """`mtce hosts --watch [SECONDS]`: the host table and the alarms under it, again every
    `interval` seconds until Ctrl-C (exit 0). On a terminal the block is redrawn in place,
    fitted to its width (`fit_hosts`); on a pipe one block per interval, each under a time
    stamp, until the reader goes (`| head`: exit 0, quietly). An agent that does not answer
    is said in the block, and asked again at the next interval."""
    import shutil
    import time

    from mtce.labplan import Interrupted
    from mtce.labview import Lines, Screen
    out = out or sys.stdout
    ask = ask or (lambda req: request(path, req))
    sleep = sleep or time.sleep
    screen = lines_out = None
    if out.isatty():
        screen = Screen(out)
        screen.hide_cursor()
    else:
        lines_out = Lines(out)
    try:
        n = 0
        while turns is None or n < turns:
            n += 1
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            width = shutil.get_terminal_size((120, 40)).columns - 1 if screen else 0
            try:
                hosts, alarms = ask({"cmd": "hosts"}), ask({"cmd": "alarms"})
                if not hosts.get("ok") or not alarms.get("ok"):
                    raise CtlError(hosts.get("error") or alarms.get("error") or "refused")
                table = fit_hosts(hosts["hosts"], width) if screen else \
                    format_hosts(hosts["hosts"])
                body = table + "\n\nalarms:\n" + format_alarms(alarms["alarms"])
            except CtlError as err:
                body = f"mtce: {err} ; asking again in {interval:g} s"
            lines = [f"mtce hosts --watch {interval:g}   {stamp}   (Ctrl-C to stop)", ""] + \
                body.splitlines()
            if screen is not None:
                screen.draw(fit_lines(lines, width))
            else:
                lines_out.say("\n".join(lines) + "\n")
            if turns is None or n < turns:
                sleep(interval)
    except KeyboardInterrupt:
        pass
    except Interrupted:                 # the pipe's reader is gone
        to_devnull(out)
    except OSError as err:              # a full disk, a terminal gone (EIO)
        to_devnull(out)
        raise OutputError(f"cannot write the output: {err.strerror or err}") from None
    finally:
        if screen is not None:
            screen.restore()
    return 0


def cli(args, cfg, ask=None) -> int:
    """`mtce hosts|alarms|lock|unlock|reboot|reset|alive`: exit 0, or 1 with one line.
    With `--wait`: 0 once the host ACKed (the networks printed), 1 on give-up or timeout.
    `--watch` and `--wait` SECONDS were checked by the parser (cli.py). The output's reader
    gone, the status stays; the output not written: OutputError (cli.main: exit 1)."""
    if args.command == "hosts" and getattr(args, "watch", None) is not None:
        return watch(cfg.paths.agent_socket, args.watch)
    ask = ask or (lambda req, timeout: request(cfg.paths.agent_socket, req, timeout))
    req = {"cmd": "lazy-reboot" if getattr(args, "lazy", False) else args.command}
    if getattr(args, "host", None):
        req["host"] = args.host
    timeout = 10.0
    wait = getattr(args, "wait", None)
    if wait is not None:
        req["wait"] = wait
        timeout = wait + WAIT_MARGIN_S
    try:
        reply = ask(req, timeout)
    except CtlError as err:
        print(f"mtce: {err}", file=sys.stderr)
        return 1
    if "outcome" in reply:              # --wait: the ACK, the give-up or the timeout
        if not reply.get("ok"):
            print(reply["outcome"], file=sys.stderr)
            return 1
        say(reply["outcome"])
        return 0
    if not reply.get("ok"):
        print(f"mtce: {reply.get('error', 'the agent refused the request')}", file=sys.stderr)
        return 1
    if args.command == "hosts":
        say(json.dumps(reply["hosts"], indent=2) if args.json else format_hosts(reply["hosts"]))
    elif args.command == "alarms":
        say(json.dumps(reply["alarms"], indent=2) if args.json else
            format_alarms(reply["alarms"]))
    else:
        say(reply.get("message", "ok"))
    return 0
