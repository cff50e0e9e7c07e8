"""Running mtcAgent/mtcClient as daemons (style P8), in this order:

1. the configuration has been parsed (a bad one already exited 2);
2. a stale pidfile (its pid is dead) is broken; a live one ends this start with exit 1;
3. `DaemonContext.open()`: double fork unless `-f` (or when systemd starts us, which
   python-daemon detects), close inherited files, take the lockfile-based pidfile;
4. only then the log handler, sockets and netlink are created (they would be closed by 3);
5. the loop runs until SIGTERM/SIGINT; the pidfile is removed on the way out.
"""

from __future__ import annotations

import errno
import os
import socket
import sys


def pidfile_path(pid_dir: str, program: str) -> str:
    return os.path.join(pid_dir, f"{program}.pid")


def read_pid(path: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(64).strip()
    except OSError:
        return None
    try:
        pid = int(text.split()[0]) if text else 0
    except ValueError:
        return None
    return pid if pid > 0 else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM
    return True


class AlreadyRunning(Exception):
    pass


def clear_stale_pidfile(path: str) -> bool:
    """Remove a pidfile whose process is gone; raise AlreadyRunning if it is alive.

    Returns True when a stale file was removed.
    """
    if not os.path.exists(path):
        return False
    pid = read_pid(path)
    if pid is not None and pid != os.getpid() and pid_alive(pid):
        raise AlreadyRunning(f"already running (pid {pid}, pidfile {path})")
    from lockfile.pidlockfile import PIDLockFile
    PIDLockFile(path).break_lock()
    if os.path.exists(path):
        os.unlink(path)
    return True


def context(pidfile: str, foreground: bool):
    """The DaemonContext: no signal handling of its own (the loop installs ours, P7)."""
    import daemon
    import daemon.pidfile

    return daemon.DaemonContext(
        detach_process=False if foreground else None,
        pidfile=daemon.pidfile.TimeoutPIDLockFile(pidfile, acquire_timeout=0),
        signal_map={},
        working_directory="/",
        umask=0o022,
        stdout=sys.stdout if foreground else None,
        stderr=sys.stderr if foreground else None,
        prevent_core=False,
    )


def run(program: str, pid_dir: str, foreground: bool, main) -> int:
    """Steps 2-5 around `main()` (which sets up logging, sockets and the loop)."""
    import lockfile

    path = pidfile_path(pid_dir, program)
    try:
        os.makedirs(pid_dir, exist_ok=True)
        stale = clear_stale_pidfile(path)
    except AlreadyRunning as err:
        print(f"mtce: {program} {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"mtce: {program}: cannot use pid directory {pid_dir}: {err.strerror}",
              file=sys.stderr)
        return 1
    ctx = context(path, foreground)
    try:
        ctx.open()
    except (lockfile.AlreadyLocked, lockfile.LockTimeout):
        pid = read_pid(path)
        print(f"mtce: {program} already running (pid {pid}, pidfile {path})", file=sys.stderr)
        return 1
    except lockfile.LockFailed as err:
        print(f"mtce: {program}: cannot write pidfile {path}: {err}", file=sys.stderr)
        return 1
    try:
        return main(stale_pidfile=path if stale else None)
    finally:
        ctx.close()


def sd_notify(state: str) -> bool:
    """Tell systemd (Type=notify) about our state; a no-op without $NOTIFY_SOCKET."""
    where = os.environ.get("NOTIFY_SOCKET")
    if not where:
        return False
    if where.startswith("@"):
        where = "\0" + where[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(where)
            s.sendall(state.encode("ascii"))
    except OSError:
        return False
    return True


def serve(program: str, cfg, foreground: bool, build) -> int:
    """Run a daemon: `build(cfg, loop, clock, log)` returns an object with `start()`,
    `reload()` and `stop()`; SIGTERM/SIGINT stop the loop, SIGHUP reloads (style P7)."""
    import signal

    from mtce import __version__, logs, netif
    from mtce.clock import Clock
    from mtce.loop import Loop

    def main(stale_pidfile=None) -> int:
        clock = Clock()
        hostname = netif.read_hostname(cfg.paths.hostname_file)
        log = logs.setup(program, foreground=foreground, log_dir=cfg.paths.log_dir,
                         hostname=hostname)
        log.info("mtce %s %s starting (config %s)", __version__, program, cfg.path)
        if stale_pidfile:
            log.info("removed stale pidfile %s", stale_pidfile)
        for warning in cfg.warnings:
            log.warning("%s", warning)
        loop = Loop(clock, log)
        app = build(cfg, loop, clock, log)

        def on_signal(signum):
            if signum == signal.SIGHUP:
                log.info("SIGHUP: reloading")
                app.reload()
            else:
                log.info("%s: exiting", signal.Signals(signum).name)
                loop.stop()

        loop.on_signal = on_signal
        loop.install_signals((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
        try:
            app.start()
            sd_notify("READY=1")
            loop.run()
        finally:
            app.stop()
            loop.close()
            log.info("%s stopped", program)
        return 0

    return run(program, cfg.paths.pid_dir, foreground, main)
