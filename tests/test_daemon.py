"""Which process a pidfile names (issue 23 item 19; README "Where each file lives", docs/ha.md):
`mtce/daemon.py` and the init scripts under `debian/init.d/` take a pidfile's pid for the
daemon only while the daemon holds its lock on the file (or, for a daemon that holds none, while
that pid runs `mtce <mode>` and started before the file was written). A pid the kernel has
given to an unrelated process since the daemon died (`kill -9`) is never taken for the daemon:
nothing signals it, and a new daemon starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, need, wait_until
from mtce import daemon


@pytest.fixture
def stranger():
    """An unrelated live process (the kind that gets a dead daemon's pid)."""
    p = subprocess.Popen(["sleep", "300"])
    yield p
    p.kill()
    p.wait(10)


def write_pid(path: str, pid: int) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(f"{pid}\n")


def test_a_pidfile_naming_an_unrelated_live_process_is_stale(tmp_path, stranger):
    """kill(pid, 0) succeeds for the stranger; it is still not the daemon."""
    path = str(tmp_path / "mtcClient.pid")
    write_pid(path, stranger.pid)
    assert daemon.running_pid(path, "client") is None
    assert daemon.clear_stale_pidfile(path, "client") is True
    assert not os.path.exists(path)
    assert stranger.poll() is None


def test_a_dead_pid_or_garbage_is_stale(tmp_path):
    path = str(tmp_path / "mtcAgent.pid")
    dead = subprocess.Popen(["true"])
    dead.wait(10)
    for text in (f"{dead.pid}\n", "", "garbage\n", "-5\n"):
        with open(path, "w", encoding="ascii") as f:
            f.write(text)
        assert daemon.running_pid(path, "agent") is None, text


def test_the_pidfile_appears_locked_and_whole(tmp_path):
    """The pidfile is written under another name, locked, then linked into place: a reader
    never sees it empty or unlocked while its writer lives; a second writer is refused."""
    path = str(tmp_path / "mtcAgent.pid")
    pf = daemon.held_pidfile_class()(path)
    pf.acquire()
    try:
        assert open(path, encoding="ascii").read() == f"{os.getpid()}\n"
        with open(path, encoding="ascii") as f:
            with pytest.raises(BlockingIOError):
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        assert daemon.running_pid(path, "agent") == os.getpid()
        import lockfile
        with pytest.raises(lockfile.AlreadyLocked):
            daemon.held_pidfile_class()(path).acquire()
        assert os.listdir(tmp_path) == ["mtcAgent.pid"]
    finally:
        pf.release()
    assert not os.path.exists(path)


@pytest.fixture
def older_mtce():
    """Start a process whose command line is an mtce daemon's (`... /usr/bin/mtce MODE`),
    detached from this test (init reaps it, as it would a daemon); returns its pid."""
    pids = []

    def start(mode: str) -> int:
        code = "import time; time.sleep(300)"
        out = subprocess.run(["sh", "-c", f'"$0" -c "{code}" /usr/bin/mtce {mode} '
                              '-c /etc/mtc.ini >/dev/null 2>&1 & echo $!', sys.executable],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        pid = int(out)
        pids.append(pid)
        wait_until(lambda: "/usr/bin/mtce" in open(f"/proc/{pid}/cmdline").read(), 10)
        return pid

    yield start
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_an_unlocked_pidfile_of_an_mtce_daemon_is_known_by_cmdline_and_start_time(tmp_path,
                                                                                  older_mtce):
    """A daemon that holds no lock (one of an older mtce) is still recognised, so that a stop
    never reports 'not running' for a daemon that runs; a process started after the pidfile
    was written cannot have written it (its pid was reused), whatever its command line."""
    path = str(tmp_path / "mtcClient.pid")
    pid = older_mtce("client")
    write_pid(path, pid)
    assert daemon.running_pid(path, "client") == pid
    assert daemon.running_pid(path, "agent") is None, "another mode is another daemon"
    old = time.time() - 30
    os.utime(path, (old, old))           # written well before this process started
    assert daemon.running_pid(path, "client") is None


@pytest.mark.loopback
def test_a_client_starts_over_a_pidfile_naming_an_unrelated_process(fakehost, daemons,
                                                                     stranger):
    """README "Where each file lives": a stale pidfile is replaced; here its pid is alive but
    another program's (before: `already running (pid N)`, exit 1)."""
    host = fakehost()
    pidfile = os.path.join(host.paths["pid_dir"], "mtcClient.pid")
    write_pid(pidfile, stranger.pid)
    client = daemons("client", host.ini)
    client.wait_log("removed stale pidfile")
    wait_until(lambda: open(pidfile).read().strip() == str(client.proc.pid), 10,
               what="the pidfile names the new client")
    assert stranger.poll() is None


# -- the init scripts (debian/init.d), run for real on a copy pointed at this test's files ------

def init_script(tmp_path, name: str, ini: str, mtce_cmd) -> str:
    missing = [t for t in ("start-stop-daemon", "flock") if shutil.which(t) is None]
    if not os.path.exists("/lib/lsb/init-functions"):
        missing.append("/lib/lsb/init-functions")
    need(not missing, f"the init scripts need {', '.join(missing)} (dpkg, util-linux, "
                      "sysvinit-utils: essential on Debian 12)")
    wrapper = tmp_path / "mtce-wrapper"
    wrapper.write_text("#!/bin/sh\nexec " + " ".join(mtce_cmd) + ' "$@"\n')
    wrapper.chmod(0o755)
    # The tree's script, or the installed one where the suite runs against the .deb.
    source = next((p for p in (os.path.join(REPO, "debian", "init.d", name),
                               os.path.join("/etc/init.d", name)) if os.path.exists(p)), None)
    need(source is not None, f"no {name} init script (debian/init.d or /etc/init.d)")
    text = open(source, encoding="utf-8").read()
    text = text.replace("DAEMON=/usr/bin/mtce\n", f"DAEMON={wrapper}\n", 1)
    text = text.replace("MTCE_CONFIG=/etc/mtc.ini\n", f"MTCE_CONFIG={ini}\n", 1)
    text = text.replace("[ -r /etc/default/mtce ] && . /etc/default/mtce", ": ", 1)
    script = tmp_path / name
    script.write_text(text)
    script.chmod(0o755)
    return str(script)


def run_init(script: str, action: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", script, action], capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.mark.loopback
def test_init_script_status_stop_start_over_a_reused_pid(tmp_path, fakehost, mtce_cmd,
                                                        stranger):
    """LSB status: 1 'dead and pidfile exists' for a pid another process now has (before:
    0 'running', as `status_of_proc` only asks kill -0); stop leaves that process alone;
    start starts the daemon; status then says 0 and stop stops it."""
    host = fakehost()
    script = init_script(tmp_path, "mtcClient", host.ini, mtce_cmd)
    pidfile = os.path.join(host.paths["pid_dir"], "mtcClient.pid")
    write_pid(pidfile, stranger.pid)
    r = run_init(script, "status")
    assert r.returncode == 1, r.stdout + r.stderr
    assert run_init(script, "stop").returncode == 0
    assert stranger.poll() is None
    try:
        r = run_init(script, "start")
        assert r.returncode == 0, r.stdout + r.stderr
        pid = daemon.read_pid(pidfile)
        assert pid and pid != stranger.pid
        assert run_init(script, "status").returncode == 0
        assert run_init(script, "reload").returncode == 0
    finally:
        r = run_init(script, "stop")
        pid = daemon.read_pid(pidfile)
        if pid and pid != stranger.pid and daemon.running_pid(pidfile, "client"):
            os.kill(pid, signal.SIGKILL)            # leave no daemon behind on a failure
    assert r.returncode == 0, r.stdout + r.stderr
    assert run_init(script, "status").returncode == 3
    assert stranger.poll() is None


@pytest.mark.loopback
def test_init_script_knows_an_unlocked_mtce_daemon_by_cmdline_and_start_time(
        tmp_path, fakehost, mtce_cmd, older_mtce):
    """The shell side of the rule for a daemon that holds no lock: `mtce client` started
    before its pidfile was written is running (and stop ends it); the same file older than
    the process is stale."""
    host = fakehost()
    script = init_script(tmp_path, "mtcClient", host.ini, mtce_cmd)
    pidfile = os.path.join(host.paths["pid_dir"], "mtcClient.pid")
    pid = older_mtce("client")
    write_pid(pidfile, pid)
    assert run_init(script, "status").returncode == 0
    old = time.time() - 30
    os.utime(pidfile, (old, old))
    assert run_init(script, "status").returncode == 1
    os.utime(pidfile)
    assert run_init(script, "stop").returncode == 0
    wait_until(lambda: gone(pid), 10, what="the daemon ended")
    assert run_init(script, "status").returncode == 3
