"""Command line: `mtce <command> [-c FILE] ...` (docs/contract.md §1).

Parses argv and dispatches; each command's module is imported only when that command runs,
so `mtce --version` stays fast. Exit codes: 0 ok, 1 runtime failure, 2 usage or config error.
"""

from __future__ import annotations

import argparse
import os
import sys

from mtce import __version__
from mtce.states import MAX_WAIT_S

DEFAULT_CONFIG = "/etc/mtc.ini"
WAIT_DEFAULT_S = 60.0           # `--wait` without SECONDS (docs/contract.md §1)
MIN_INTERVAL_S = 0.1            # the shortest `--watch` and `--wait`
MAX_WATCH_S = 86400.0           # the longest `--watch` interval: a day


class UsageError(Exception):
    """A command line that does not parse: one line, exit 2 (docs/contract.md §1)."""


class OutputError(Exception):
    """Standard output cannot be written (a full disk, an I/O error): one line, exit 1."""


def to_devnull(out) -> None:
    """What is left in `out`'s buffer goes nowhere: Python's flush at exit must not report a
    BrokenPipeError once the reader of a pipe has gone (nor fail again on a full disk)."""
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def say(text: str = "", out=None, end: str = "\n") -> None:
    """Write `text` to standard output and flush it. A reader gone (`| head`, `| grep -q`)
    ends the output quietly: the rest goes nowhere and the command keeps its own exit
    status. Any other write error (ENOSPC on /dev/full, EIO) raises OutputError."""
    out = out or sys.stdout
    try:
        out.write(text + end)
        out.flush()
    except BrokenPipeError:
        to_devnull(out)
    except OSError as err:
        to_devnull(out)
        raise OutputError(f"cannot write the output: {err.strerror or err}") from None


class _Parser(argparse.ArgumentParser):
    """argparse, its errors one line (UsageError) and its own output (`--help`, `--version`)
    through `say`."""

    def error(self, message):
        raise UsageError(_usage_line(self.prog, message))

    def _print_message(self, message, file=None):
        if not message:
            return
        if file is sys.stdout:
            say(message, end="")
            return
        try:
            (file or sys.stderr).write(message)
        except OSError:
            pass


def _usage_line(prog: str, message: str) -> str:
    """`mtce: hosts: unrecognized arguments: x (mtce hosts --help)`."""
    command = prog.split(" ", 1)[1] + ": " if " " in prog else ""
    return f"mtce: {command}{message} ({prog} --help)"


def _seconds(low: float, high: float):
    """argparse type: SECONDS, finite, from `low` to `high` (a NaN, an infinity, 1e-300 or
    1e300 would crash `time.sleep` or busy-loop the agent)."""
    def seconds(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not low <= value <= high:            # a NaN is refused too
            raise argparse.ArgumentTypeError(f"SECONDS is from {low:g} to {high:g} "
                                             f"(not {text})")
        return value
    return seconds


def _parser() -> argparse.ArgumentParser:
    top = _Parser(
        prog="mtce", description="StarlingX maintenance mtcAlive messaging: mtcAgent, "
        "mtcClient and their operator commands.")
    top.add_argument("--version", action="version", version=f"mtce {__version__}")
    top.add_argument("-c", dest="config", metavar="FILE", default=DEFAULT_CONFIG,
                     help=f"configuration file (default {DEFAULT_CONFIG})")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        # -c is accepted after the command too; SUPPRESS keeps a -c given before it.
        p.add_argument("-c", dest="config", metavar="FILE", default=argparse.SUPPRESS,
                       help=f"configuration file (default {DEFAULT_CONFIG})")
        return p

    for name, what in (("client", "the per-host daemon (mtcClient)"),
                       ("agent", "the controller daemon (mtcAgent)")):
        p = command(name, what)
        p.add_argument("-f", dest="foreground", action="store_true",
                       help="stay in the foreground and log to stderr")
    p = command("hosts", "the running agent's host table")
    p.add_argument("--json", action="store_true", help="print JSON (docs/contract.md §5)")
    p.add_argument("--watch", nargs="?", type=_seconds(MIN_INTERVAL_S, MAX_WATCH_S), const=2.0,
                   default=None, metavar="SECONDS", help="redraw the table (and the alarms) "
                   "every SECONDS (default 2; 0.1 to 86400) until Ctrl-C")
    p = command("alarms", "active alarms held by the running agent")
    p.add_argument("--json", action="store_true", help="print JSON")
    for name, what in (("lock", "lock a host"), ("unlock", "unlock a host"),
                       ("reboot", "reboot a host"), ("reset", "reset a host"),
                       ("alive", "send an mtcAlive request to a host on pxeboot")):
        p = command(name, what)
        p.add_argument("host", metavar="HOST")
        if name == "reboot":
            p.add_argument("--lazy", action="store_true",
                           help="lazy reboot: the host waits [agent] lazy_reboot_delay seconds")
        p.add_argument("--wait", nargs="?", type=_seconds(MIN_INTERVAL_S, MAX_WAIT_S),
                       const=WAIT_DEFAULT_S, default=None, metavar="SECONDS",
                       help="wait (default 60 s; 0.1 to 3600) for the host's ACK or the "
                       "agent's give-up: exit 0 on the ACK (the networks printed), 1 otherwise")
    p = command("lab", "a controller and N workers on this machine, with a live table")
    p.add_argument("--hosts", type=int, default=None, metavar="N",
                   help="number of hosts, the controllers included (default 3; 4 with --ha)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="exit after S seconds: 0 if every host came online on every network")
    p.add_argument("--netns", action="store_true",
                   help="(root) hosts in network namespaces joined by veth links")
    p.add_argument("--ha", action="store_true",
                   help="(root) two controllers under corosync and Pacemaker, the agent a "
                   "cluster resource (docs/ha.md)")
    p.add_argument("--scenario", choices=("none", "pxeboot-loss", "controller-link", "restart",
                                          "burst", "agent-kill", "node-kill", "swact", "split"),
                   default="none", help="a fault to play out while the lab runs (the last "
                   "four with --ha)")
    # Internal, not in --help (docs/design.md, the man page's notes): how the init scripts
    # and the OCF agent learn the [paths] and which process is the daemon, from mtce itself.
    p = sub.add_parser("daemon-info")
    p.add_argument("-c", dest="config", metavar="FILE", default=argparse.SUPPRESS)
    p.add_argument("mode", choices=("agent", "client"))
    p = command("bench", "the performance benchmark (loopback only, bounded time)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="shorter runs (for tests)")
    p.add_argument("--scale", action="store_true", help="only the agent's steady cost at "
                   "500, 2,000 and 10,000 hosts (docs/bench.md)")
    return top


def _load_config(path: str):
    from mtce import config
    return config.load(path)


# What the zipapp bundles and the source tree takes from .venv (requirements.txt).
BUNDLED = {"configobj": "configobj", "validate": "configobj", "daemon": "python-daemon",
           "lockfile": "lockfile", "pyroute2": "pyroute2"}


def _say_missing(packages) -> int:
    names = ", ".join(repr(p) for p in packages)
    what = f"the Python package {names} is" if len(packages) == 1 else \
        f"the Python packages {names} are"
    print(f"mtce: {what} missing: run `make venv`, then `.venv/bin/python mtce.py ...`, or run "
          f"the zipapp: `python3 dist/mtce.pyz ...` (`make pyz` builds it)", file=sys.stderr)
    return 2


def missing_packages() -> list[str]:
    """The bundled packages this interpreter cannot import (found, not imported)."""
    import importlib.util
    return sorted({pkg for mod, pkg in BUNDLED.items() if importlib.util.find_spec(mod) is None})


def main(argv=None) -> int:
    try:
        status = _main(argv)
        say("", end="")                 # what is still buffered: its failure is the command's
        return status
    except ModuleNotFoundError as err:
        top = (err.name or "").split(".")[0]
        if top not in BUNDLED:
            raise
        return _say_missing([BUNDLED[top]])
    except OutputError as err:
        # Whichever path failed (the lab's view, a watch, a reply), what stdout still holds
        # must not fail again at exit (status 120 and a traceback from Python's last flush).
        to_devnull(sys.stdout)
        print(f"mtce: {err}", file=sys.stderr)
        return 1


def _wait_first(argv: list) -> list:
    """`mtce reboot --wait HOST`: a `--wait` not followed by a number takes its default
    (argparse would take HOST for SECONDS)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--wait":
            try:
                float(out[i + 1])
            except (IndexError, ValueError):
                out[i] = f"--wait={WAIT_DEFAULT_S:g}"
    return out


def parse(argv: list):
    """The command line's arguments; UsageError (its one line) when it does not parse;
    SystemExit(0) once `--help` or `--version` is printed."""
    top = _parser()
    args, extra = top.parse_known_args(_wait_first(argv))
    if extra:               # a command's stray argument: that command's error, not the top's
        command = getattr(args, "command", None)
        prog = f"mtce {command}" if command else "mtce"
        raise UsageError(_usage_line(prog, f"unrecognized arguments: {' '.join(extra)}"))
    if not args.command:
        raise UsageError("mtce: a command is required (mtce --help)")
    return args


def _main(argv=None) -> int:
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
    except UsageError as err:
        print(err, file=sys.stderr)
        return 2
    except SystemExit as done:          # --help, --version: printed
        return done.code if isinstance(done.code, int) else 0
    # Every command needs them (the lab and the bench through the daemons they start): say
    # so before anything starts, not after a lab's header (docs/contract.md §1: one line, exit 2).
    missing = missing_packages()
    if missing:
        return _say_missing(missing)
    from mtce.config import ConfigError
    try:
        if args.command == "client":
            from mtce import client
            return client.main(_load_config(args.config), args.foreground)
        if args.command == "agent":
            from mtce import agent
            return agent.main(_load_config(args.config), args.foreground)
        if args.command in ("hosts", "alarms", "lock", "unlock", "reboot", "reset", "alive"):
            from mtce import cli_ctl
            return cli_ctl.cli(args, _load_config(args.config))
        if args.command == "lab":
            if args.ha:
                from mtce import lab_ha
                return lab_ha.main(args)
            from mtce import lab
            return lab.main(args)
        if args.command == "daemon-info":
            from mtce import service
            return service.info(args.mode, args.config)
        if args.command == "bench":
            from mtce import bench
            return bench.main(args)
    except ConfigError as err:
        print(f"mtce: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2
