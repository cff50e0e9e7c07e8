"""`mtce hosts`, `alarms`, `lock`, `unlock`, `reboot`, `reset`, `alive`: the command line's side
of the agent's control socket (agent_ctl.py), with the table an operator reads and its live
`--watch` screen.
"""

from __future__ import annotations

import json
import socket
import sys
import time

from mtce.cli import OutputError, say, to_devnull
from mtce.states import NET_KEYS

CONNECT_PAUSE_S = (0.005, 0.1)  # a full backlog: the first and the longest pause before
                                # the client tries again (within its timeout)
WAIT_MARGIN_S = 10.0            # the CLI waits this much longer than the agent's deadline


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


SHOWN_HOSTS = 5                 # an mtce.mnfa alarm's hosts `mtce alarms` names


def format_hosts(hosts: list, compact: int = 0) -> str:
    """The operator's table: one line per host; each network cell reads
    `state last-seq/missed age` (`-`: the host has no address on that network).
    `compact`, for a narrow terminal (`fit_hosts`): 1 packs the cells and columns, 2 also
    leaves PERSONALITY out, 3 shows each network's state alone."""
    head = ["HOST", "PERSONALITY", "ADMIN", "AVAIL"] + [n.upper() for n in NET_KEYS]
    rows = []
    by_operator = held = False
    for h in hosts:
        admin = h.get("administrative", "")
        if h.get("administrative_source") == "operator":
            admin += "*"
            by_operator = True
        row = [h.get("hostname", "?"), h.get("personality", ""), admin,
               h.get("availability", "")]
        for net in NET_KEYS:
            n = (h.get("networks") or {}).get(net) or {}
            state, seq, missed = n.get("state", "?"), n.get("last_seq", 0), n.get("missed", 0)
            age = n.get("last_seen_s")
            if net in (h.get("mnfa") or ()):
                state += "^"
                held = True
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
    if held:
        table += "\n^ held by a multi-node failure: one mtce.mnfa alarm for the network, no " \
                 "200.003 for its hosts (mtce alarms)"
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
                     f"{a.get('raised_at')}  {a.get('reason')}{_held_hosts(a)}" for a in alarms)


def _held_hosts(alarm: dict) -> str:
    """A multi-node failure's network and hosts (the first few by name)."""
    hosts = alarm.get("hosts")
    if not alarm.get("network") or not isinstance(hosts, list):
        return ""
    shown = ", ".join(map(str, hosts[:SHOWN_HOSTS])) + (", ..." if len(hosts) > SHOWN_HOSTS
                                                        else "")
    return f" ; {alarm['network']}: {len(hosts)} hosts ({shown})"


def watch(path: str, interval: float, out=None, ask=None, sleep=None, turns=None) -> int:
    """`mtce hosts --watch [SECONDS]`: the host table and the alarms under it, again every
    `interval` seconds until Ctrl-C (exit 0). On a terminal the block is redrawn in place,
    fitted to its width (`fit_hosts`); on a pipe one block per interval, each under a time
    stamp, until the reader goes (`| head`: exit 0, quietly). An agent that does not answer
    is said in the block, and asked again at the next interval."""
    import shutil
    import time

    from mtce.cli_screen import Interrupted, Output, Screen
    out = out or sys.stdout
    ask = ask or (lambda req: request(path, req))
    sleep = sleep or time.sleep
    screen = lines_out = None
    if out.isatty():
        screen = Screen(out)
        screen.hide_cursor()
    else:
        lines_out = Output(out)
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
