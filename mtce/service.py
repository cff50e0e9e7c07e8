"""Running mtcAgent/mtcClient as daemons (style P8), in this order:

1. the configuration has been parsed (a bad one already exited 2);
2. a stale pidfile (it names no running daemon: see `running_pid`) is broken; a live one, or
   one locked by any process, ends this start with exit 1;
3. `DaemonContext.open()`: double fork unless `-f` (or when systemd starts us, which
   python-daemon detects), close inherited files, take the lockfile-based pidfile and hold an
   flock on it for as long as the process lives;
4. only then the log handler, sockets and netlink are created (they would be closed by 3);
5. the loop runs until SIGTERM/SIGINT; the pidfile is removed on the way out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import sys
import time


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


# -- which process is the daemon (issue 23 item 19) ----------------------------------------------
# kill(pid, 0) is not enough: after `kill -9` the pidfile stays, and the kernel may give its pid
# to any process; and anyone may rewrite the file. The daemon holds an flock on its pidfile for
# as long as it runs (the kernel drops it when the process dies, however it dies), so a held
# lock is the proof, and its holder, not the pid written in the file, is the daemon: the
# kernel names it in /proc/locks (F_GETLK does not see flock locks), checked against the
# files that process has open. A pidfile that is not held names the daemon only if that pid
# runs `mtce <mode>` with this configuration and started before the file was written (a
# daemon of an mtce that took no lock; never a pid reused since, nor another instance's
# daemon). Without a pidfile that names it, the agent is the server of its control socket
# (SO_PEERCRED) if that runs `mtce agent` with this configuration. debian/ocf/mtcAgent and
# debian/init.d/* ask `mtce daemon-info` (`find_daemon`), so that this is the one rule.

MTCE_PROGRAMS = ("mtce", "mtce.py", "mtce.pyz")
DEFAULT_CONFIG = "/etc/mtc.ini"     # cli.DEFAULT_CONFIG: what a command line without -c uses
START_SLACK_S = 1.0        # the clocks' granularity between a start time and a file's mtime


class Unidentified(Exception):
    """The pidfile is locked by a process that cannot be identified as the daemon."""


def pidfile_held(path: str) -> bool:
    """Whether some process holds the flock on the file (False if it cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)            # also drops the shared lock just taken
    return False


def has_open(pid: int, st: os.stat_result) -> bool:
    """Whether process `pid` has the file (device and inode of `st`) open."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for name in names:
        try:
            fd_st = os.stat(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if (fd_st.st_dev, fd_st.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def lock_holder(path: str) -> int | None:
    """The pid holding an flock on the file: a FLOCK entry of /proc/locks on its inode
    (`N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF`) whose process has the file open (the
    pid recorded there is the locker's, which may since have died and been reused)."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            table = f.read()
    except OSError:
        return None
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":      # `->` lines are waiters
            continue
        try:
            pid, ino = int(fields[4]), int(fields[5].rsplit(":", 1)[1])
        except (ValueError, IndexError):
            continue
        if ino == st.st_ino and pid > 0 and has_open(pid, st):
            return pid
    return None


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return []


def mtce_command(argv: list[str]) -> tuple[str, str] | None:
    """(command, configuration file) of an mtce command line (`... mtce[.py|.pyz] [-c FILE]
    COMMAND [-c FILE] ...`), None if it is not one."""
    for i, arg in enumerate(argv):
        if os.path.basename(arg) in MTCE_PROGRAMS:
            break
    else:
        return None
    command, config = None, DEFAULT_CONFIG
    args = iter(argv[i + 1:])
    for arg in args:
        if arg == "-c":
            config = next(args, "")
        elif arg.startswith("-c"):
            config = arg[2:]
        elif not arg.startswith("-") and command is None:
            command = arg
    return (command, config) if command else None


def same_config(theirs: str, ours: str) -> bool:
    """A relative path on a daemon's command line was taken from a directory we cannot know
    (its working directory is / now): it matches nothing."""
    return os.path.isabs(theirs) and os.path.realpath(theirs) == os.path.realpath(ours)


def runs_mtce(pid: int, mode: str, config: str | None = None) -> bool:
    """Whether /proc/PID/cmdline is `mtce <mode>`, with `config` (absolute) if given."""
    found = mtce_command(cmdline(pid))
    return found is not None and found[0] == mode and (
        config is None or same_config(found[1], config))


def start_ticks(pid: int) -> int | None:
    """When the process started: /proc/PID/stat field 22, in clock ticks after boot."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def started_at(pid: int) -> float | None:
    """The wall time at which the process started: `start_ticks` against /proc/uptime, both
    on the kernel's boot clock."""
    ticks = start_ticks(pid)
    try:
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if ticks is None:
        return None
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


def running_pid(path: str, mode: str, config: str) -> int | None:
    """The pid of the `mtce <mode>` daemon that the pidfile `path` names, None if it names
    none now; raises Unidentified if it is locked by a process that is not `mtce <mode>`."""
    if pidfile_held(path):
        holder = lock_holder(path)
        if holder is None or not runs_mtce(holder, mode):
            who = f"pid {holder}" if holder else "a process that cannot be identified"
            raise Unidentified(f"{path} is locked by {who}, not mtce {mode}")
        theirs = mtce_command(cmdline(holder))[1]
        if os.path.isabs(theirs) and not same_config(theirs, config):
            return None      # another configuration's daemon (a shared pid_dir): not ours
        return holder
    pid = read_pid(path)
    if pid is None or not pid_alive(pid) or not runs_mtce(pid, mode, config):
        return None
    start = started_at(pid)
    try:
        written = os.stat(path).st_mtime
    except OSError:
        return None
    return pid if start is not None and start <= written + START_SLACK_S else None


def socket_server(path: str) -> int | None:
    """The pid of the process serving the Unix stream socket `path` (SO_PEERCRED)."""
    import struct
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2.0)
    try:
        sock.connect(path)
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    finally:
        sock.close()
    pid = struct.unpack("3i", creds)[0]
    return pid if pid > 0 else None


def find_daemon(mode: str, config: str, paths: dict) -> int | None:
    """The running `mtce <mode>` daemon of the configuration file `config` (absolute), whose
    [paths] are `paths`: the pidfile's (`running_pid`), else for the agent the server of its
    control socket if that runs `mtce agent` with this configuration. Raises Unidentified."""
    pid = running_pid(pidfile_path(paths["pid_dir"], f"mtc{mode.capitalize()}"), mode, config)
    if pid is None and mode == "agent":
        server = socket_server(paths["agent_socket"])
        if server is not None and runs_mtce(server, mode, config):
            pid = server
    return pid


def info(mode: str, config_path: str, out=None) -> int:
    """`mtce daemon-info MODE` (internal, for debian/init.d/* and debian/ocf/mtcAgent: one
    reading of the ini, one rule for which process is the daemon): prints `config=`,
    `pidfile=`, every [paths] key, `pid=` and `pid_start=` (its start in clock ticks after
    boot: with the pid, the process itself, not a later one with its pid) as `key=value`
    lines. Exit 0: the daemon runs (pid= its pid); 3: it does not (pid= empty); 4: its
    pidfile is locked by a process that is not it (nothing may be signalled or replaced); a
    ConfigError (exit 2) is raised."""
    from mtce import config
    path, paths = config.load_paths(config_path)
    out = out or sys.stdout
    program = f"mtc{mode.capitalize()}"
    rc = 0
    try:
        pid = find_daemon(mode, path, paths)
    except Unidentified as err:
        print(f"mtce: {program}: {err}", file=sys.stderr)
        pid, rc = None, 4
    lines = [f"config={path}", f"pidfile={pidfile_path(paths['pid_dir'], program)}"]
    lines += [f"{k}={v}" for k, v in paths.items()]
    lines.append(f"pid={pid or ''}")
    lines.append(f"pid_start={start_ticks(pid) if pid else ''}")
    out.write("\n".join(lines) + "\n")
    return rc if rc else 0 if pid else 3


class AlreadyRunning(Exception):
    pass


def clear_stale_pidfile(path: str, mode: str, config: str) -> bool:
    """Remove a pidfile that names no running `mtce <mode>`; raise AlreadyRunning if it does,
    or if it is locked at all (a file some process holds is never removed).

    Returns True when a stale file was removed.
    """
    if not os.path.exists(path):
        return False
    try:
        pid = running_pid(path, mode, config)
    except Unidentified as err:
        raise AlreadyRunning(f"cannot start: {err}") from None
    if pid is None and pidfile_held(path):
        holder = lock_holder(path)
        raise AlreadyRunning(f"cannot start: {path} is held by pid {holder}, mtce {mode} of "
                             f"another configuration (give each its own [paths] pid_dir)")
    if pid is not None and pid != os.getpid():
        raise AlreadyRunning(f"already running (pid {pid}, pidfile {path})")
    from lockfile.pidlockfile import PIDLockFile
    PIDLockFile(path).break_lock()
    if os.path.exists(path):
        os.unlink(path)
    return True


def held_pidfile_class():
    """The pidfile class, built on first use (python-daemon is imported lazily)."""
    import daemon.pidfile
    import lockfile

    class Held(daemon.pidfile.TimeoutPIDLockFile):
        """A lockfile pidfile that is never seen empty or unlocked: written under a temporary
        name, flock()ed, then linked to its name (the link fails if the name exists, like
        lockfile's O_EXCL). The lock lives as long as this process, or until release()."""

        held_fd: int | None = None

        def acquire(self, timeout=None):
            tmp = f"{self.path}.{os.getpid()}.new"
            fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, f"{os.getpid()}\n".encode("ascii"))
                os.link(tmp, self.path)
            except FileExistsError:
                os.close(fd)
                raise lockfile.AlreadyLocked(f"{self.path} is already locked") from None
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EPERM, errno.EOPNOTSUPP):
                    raise lockfile.LockFailed(f"failed to create {self.path}: {err}") from None
                # No hard links on this filesystem: lockfile's O_EXCL, then the lock.
                super().acquire(timeout)
                fd = os.open(self.path, os.O_RDONLY)
                fcntl.flock(fd, fcntl.LOCK_EX)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            self.held_fd = fd

        def release(self):
            try:
                super().release()
            finally:
                if self.held_fd is not None:
                    os.close(self.held_fd)
                    self.held_fd = None

    return Held


def context(pidfile: str, foreground: bool, journal: bool = False):
    """The DaemonContext: no signal handling of its own (the loop installs ours, P7). With
    `journal` (systemd started us, stderr is our journal stream) stderr is kept."""
    import daemon

    return daemon.DaemonContext(
        detach_process=False if foreground else None,
        pidfile=held_pidfile_class()(pidfile, acquire_timeout=0),
        signal_map={},
        working_directory="/",
        umask=0o022,
        stdout=sys.stdout if foreground else None,
        stderr=sys.stderr if foreground or journal else None,
        prevent_core=False,
    )


def run(program: str, pid_dir: str, foreground: bool, main, config: str = DEFAULT_CONFIG,
        journal: bool = False) -> int:
    """Steps 2-5 around `main()` (which sets up logging, sockets and the loop); `config` is
    the configuration file (absolute) the daemon runs with; `journal`: stderr is our journal
    stream, kept open."""
    import lockfile

    path = pidfile_path(pid_dir, program)
    try:
        os.makedirs(pid_dir, exist_ok=True)
        stale = clear_stale_pidfile(path, program[len("mtc"):].lower(), config)
    except AlreadyRunning as err:
        print(f"mtce: {program} {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"mtce: {program}: cannot use pid directory {pid_dir}: {err.strerror}",
              file=sys.stderr)
        return 1
    ctx = context(path, foreground, journal=journal)
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

    journal = logs.journal_stream()     # before the context closes or keeps stderr

    def main(stale_pidfile=None) -> int:
        clock = Clock()
        hostname = netif.read_hostname(cfg.paths.hostname_file)
        log = logs.setup(program, foreground=foreground, log_dir=cfg.paths.log_dir,
                         hostname=hostname, journal=journal)
        # The signals are the loop's before the daemon says it is starting: a SIGTERM from
        # then on (a stop right after a start) ends it through its loop, with its `stopped`
        # line, not through the daemon library's default handler.
        loop = Loop(clock, log)
        loop.install_signals((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
        log.info("mtce %s %s starting (config %s)", __version__, program, cfg.path)
        if stale_pidfile:
            log.info("removed stale pidfile %s", stale_pidfile)
        for warning in cfg.warnings:
            log.warning("%s", warning)
        app = build(cfg, loop, clock, log)

        def on_signal(signum):
            if signum == signal.SIGHUP:
                log.info("SIGHUP: reloading")
                app.reload()
            else:
                log.info("%s: exiting", signal.Signals(signum).name)
                loop.stop()

        loop.on_signal = on_signal
        try:
            app.start()
            sd_notify("READY=1")
            loop.run()
        finally:
            app.stop()
            loop.close()
            log.info("%s stopped", program)
        return 0

    return run(program, cfg.paths.pid_dir, foreground, main, cfg.path, journal)
