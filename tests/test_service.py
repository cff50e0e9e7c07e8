"""Which process a pidfile names (issue 23 item 19; README "Where each file lives", docs/ha.md):
`mtce/service.py` and the init scripts under `debian/init.d/` take a pidfile's pid for the
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

from harness.cluster import Cluster
from harness.env import REPO, gone, need, wait_until
from harness.fakehost import inih_style
from mtce import service


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
    assert service.running_pid(path, "client", "/etc/mtc.ini") is None
    assert service.clear_stale_pidfile(path, "client", "/etc/mtc.ini") is True
    assert not os.path.exists(path)
    assert stranger.poll() is None


def test_a_dead_pid_or_garbage_is_stale(tmp_path):
    path = str(tmp_path / "mtcAgent.pid")
    dead = subprocess.Popen(["true"])
    dead.wait(10)
    for text in (f"{dead.pid}\n", "", "garbage\n", "-5\n"):
        with open(path, "w", encoding="ascii") as f:
            f.write(text)
        assert service.running_pid(path, "agent", "/etc/mtc.ini") is None, text


def test_the_pidfile_appears_locked_and_whole(tmp_path):
    """The pidfile is written under another name, locked, then linked into place: a reader
    never sees it empty or unlocked while its writer lives; a second writer is refused."""
    path = str(tmp_path / "mtcAgent.pid")
    pf = service.held_pidfile_class()(path)
    pf.acquire()
    try:
        assert open(path, encoding="ascii").read() == f"{os.getpid()}\n"
        with open(path, encoding="ascii") as f:
            with pytest.raises(BlockingIOError):
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        assert service.lock_holder(path) == os.getpid()
        import lockfile
        with pytest.raises(lockfile.AlreadyLocked):
            service.held_pidfile_class()(path).acquire()
        assert os.listdir(tmp_path) == ["mtcAgent.pid"]
    finally:
        pf.release()
    assert not os.path.exists(path)


@pytest.fixture
def older_mtce():
    """Start a process whose command line is an mtce daemon's (`... /usr/bin/mtce MODE -c
    CONFIG`), detached from this test (init reaps it, as it would a daemon); returns its pid.
    With `lock`, it holds an flock on that file, as a running daemon does on its pidfile."""
    pids = []

    def start(mode: str, config: str = "/etc/mtc.ini", lock: str | None = None) -> int:
        code = "import time; time.sleep(300)"
        if lock:
            code = (f"import fcntl, os, time; fd = os.open({lock!r}, os.O_RDONLY); "
                    "fcntl.flock(fd, fcntl.LOCK_EX); time.sleep(300)")
        out = subprocess.run(["sh", "-c", f'"$0" -c "{code}" /usr/bin/mtce {mode} '
                              f'-c "$1" >/dev/null 2>&1 & echo $!', sys.executable, config],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        pid = int(out)
        pids.append(pid)
        wait_until(lambda: "/usr/bin/mtce" in open(f"/proc/{pid}/cmdline").read(), 10)
        if lock:
            wait_until(lambda: service.pidfile_held(lock), 10, what="the lock taken")
        return pid

    yield start
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_an_unlocked_pidfile_of_an_mtce_daemon_is_known_by_cmdline_and_start_time(tmp_path,
                                                                                  older_mtce):
    """A daemon that holds no lock (one of an older mtce) is still recognised, so that a stop
    never reports 'not running' for a daemon that runs; a process started after the pidfile
    was written cannot have written it (its pid was reused), whatever its command line."""
    path = str(tmp_path / "mtcClient.pid")
    ini = str(tmp_path / "mtc.ini")
    pid = older_mtce("client", ini)
    write_pid(path, pid)
    assert service.running_pid(path, "client", ini) == pid
    assert service.running_pid(path, "agent", ini) is None, "another mode is another daemon"
    old = time.time() - 30
    os.utime(path, (old, old))           # written well before this process started
    assert service.running_pid(path, "client", ini) is None


def test_an_unlocked_pidfile_naming_another_configurations_daemon_is_stale(tmp_path,
                                                                           older_mtce):
    """Issue 23 item 19, README "Where each file lives": several clients on one machine (the
    lab, containers) each have their configuration; a pidfile that names `mtce client` of
    ANOTHER configuration is not this one's daemon (before: the mode alone was compared, and
    worker-1's `stop` signalled worker-0's client). The configuration is compared as an
    absolute path, symlinks resolved."""
    ours, theirs = str(tmp_path / "worker-1.ini"), str(tmp_path / "worker-0.ini")
    for ini in (ours, theirs):
        open(ini, "w").close()
    path = str(tmp_path / "mtcClient.pid")
    pid = older_mtce("client", theirs)
    write_pid(path, pid)
    assert service.running_pid(path, "client", theirs) == pid
    assert service.running_pid(path, "client", ours) is None
    os.symlink(theirs, str(tmp_path / "link.ini"))
    assert service.running_pid(path, "client", str(tmp_path / "link.ini")) == pid
    relative = older_mtce("client", "worker-0.ini")     # from a directory unknown now
    write_pid(path, relative)
    assert service.running_pid(path, "client", theirs) is None


def test_a_held_pidfile_names_its_lock_holder_not_what_it_says(tmp_path, older_mtce,
                                                              stranger):
    """Issue 23 item 19: while the daemon holds the lock, the pid written in the file is not
    trusted (anyone may rewrite it): the daemon is the process the kernel names as the lock's
    holder (/proc/locks, checked against the files it has open) that runs `mtce <mode>`. A
    lock held by anything else is a daemon nobody can identify: nothing is signalled, the
    file is not replaced."""
    path = str(tmp_path / "mtcClient.pid")
    write_pid(path, 1)
    holder = older_mtce("client", lock=path)
    write_pid(path, stranger.pid)                       # the same file, rewritten
    assert service.running_pid(path, "client", "/etc/mtc.ini") == holder
    with pytest.raises(service.AlreadyRunning, match=str(holder)):
        service.clear_stale_pidfile(path, "client", "/etc/mtc.ini")
    os.kill(holder, signal.SIGKILL)
    wait_until(lambda: not service.pidfile_held(path), 10, what="the lock dropped")
    with open(path) as f:                               # a lock, but not an mtce daemon's
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        with pytest.raises(service.Unidentified):
            service.running_pid(path, "client", "/etc/mtc.ini")
        with pytest.raises(service.AlreadyRunning):
            service.clear_stale_pidfile(path, "client", "/etc/mtc.ini")
        assert os.path.exists(path)
    assert stranger.poll() is None


def test_a_pidfile_held_by_another_configurations_daemon_names_none_of_ours(tmp_path,
                                                                          older_mtce):
    """docs/ha.md (`stop`: "0 only once no agent of this configuration runs"): two
    configurations that share `pid_dir` (both left at /var/run) share the pidfile's name; the
    lock holder runs `mtce agent` of the other one. To this configuration nothing runs (the
    OCF agent's monitor said 1 and its stop SIGTERMed the other agent, issue 23 review, second
    round), and the file, held, is still never replaced. A holder whose configuration was
    given relative (from a directory unknown now) is taken as ours, as before."""
    ours, theirs = str(tmp_path / "b.ini"), str(tmp_path / "a.ini")
    for ini in (ours, theirs):
        open(ini, "w").close()
    path = str(tmp_path / "mtcAgent.pid")
    write_pid(path, 1)
    holder = older_mtce("agent", theirs, lock=path)
    assert service.running_pid(path, "agent", theirs) == holder
    assert service.running_pid(path, "agent", ours) is None
    with pytest.raises(service.AlreadyRunning, match=str(holder)):
        service.clear_stale_pidfile(path, "agent", ours)
    assert os.path.exists(path)


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
    missing = [t for t in ("start-stop-daemon",) if shutil.which(t) is None]
    if not os.path.exists("/lib/lsb/init-functions"):
        missing.append("/lib/lsb/init-functions")
    need(not missing, f"the init scripts need {', '.join(missing)} (dpkg, "
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
        pid = service.read_pid(pidfile)
        assert pid and pid != stranger.pid
        assert run_init(script, "status").returncode == 0
        assert run_init(script, "reload").returncode == 0
    finally:
        r = run_init(script, "stop")
        pid = service.read_pid(pidfile)
        if pid and pid != stranger.pid and service.lock_holder(pidfile) == pid:
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
    pid = older_mtce("client", host.ini)
    write_pid(pidfile, pid)
    assert run_init(script, "status").returncode == 0
    old = time.time() - 30
    os.utime(pidfile, (old, old))
    assert run_init(script, "status").returncode == 1
    os.utime(pidfile)
    assert run_init(script, "stop").returncode == 0
    wait_until(lambda: gone(pid), 10, what="the daemon ended")
    assert run_init(script, "status").returncode == 3


def kill_mtce(pidfile: str) -> None:
    """Cleanup after a failure: SIGKILL the mtce process a pidfile names, if it is one."""
    pid = service.read_pid(pidfile)
    with contextlib.suppress(OSError):
        if pid and "mtce" in open(f"/proc/{pid}/cmdline").read():
            os.kill(pid, signal.SIGKILL)


@pytest.mark.loopback
def test_init_scripts_read_the_ini_as_mtce_does(tmp_path, fakehost, mtce_cmd):
    """Issue 23 item 19: the init script finds the pidfile where mtce puts it whatever inih
    syntax the ini uses (`key: value`, a BOM, a `;` comment after a tab; docs/contract.md §2),
    as mtce itself tells it (before: it read only `key = value`, waited for
    /var/run/mtcClient.pid, said 1 and left the client it had started running)."""
    host = fakehost()
    inih_style(host.ini)
    script = init_script(tmp_path, "mtcClient", host.ini, mtce_cmd)
    pidfile = os.path.join(host.paths["pid_dir"], "mtcClient.pid")
    try:
        r = run_init(script, "start")
        assert r.returncode == 0, r.stdout + r.stderr
        pid = service.read_pid(pidfile)
        assert run_init(script, "status").returncode == 0
        r = run_init(script, "stop")
        assert r.returncode == 0, r.stdout + r.stderr
        assert gone(pid)
        assert run_init(script, "status").returncode == 3
    finally:
        kill_mtce(pidfile)


def test_init_script_says_so_when_mtce_cannot_read_the_ini(tmp_path, fakehost, mtce_cmd):
    """LSB: an ini mtce refuses (not UTF-8) is 6 'not configured' for start and stop, 4
    'unknown' for status, with mtce's own line naming the file; never a guess at the default
    /var/run (before: status 3 and stop 0, from /var/run/mtcClient.pid)."""
    host = fakehost()
    with open(host.ini, "ab") as f:
        f.write(b"; caf\xe9\n")
    script = init_script(tmp_path, "mtcClient", host.ini, mtce_cmd)
    r = run_init(script, "status")
    assert r.returncode == 4, r.stdout + r.stderr
    assert host.ini in r.stdout + r.stderr
    assert run_init(script, "stop").returncode == 6
    assert run_init(script, "start").returncode == 6


@pytest.mark.loopback
def test_init_script_stop_signals_the_lock_holder_not_the_pid_in_the_file(
        tmp_path, fakehost, mtce_cmd, stranger):
    """Issue 23 item 19: a pidfile rewritten while its daemon runs (it stays locked) does not
    make stop signal the pid written in it: the daemon is the lock's holder (before: stop
    killed that process and said 1, the daemon running on)."""
    host = fakehost()
    script = init_script(tmp_path, "mtcClient", host.ini, mtce_cmd)
    pidfile = os.path.join(host.paths["pid_dir"], "mtcClient.pid")
    assert run_init(script, "start").returncode == 0
    pid = service.read_pid(pidfile)
    try:
        write_pid(pidfile, stranger.pid)
        assert run_init(script, "status").returncode == 0
        r = run_init(script, "stop")
        assert stranger.poll() is None, "stop signalled the pid written in the pidfile"
        assert r.returncode == 0, r.stdout + r.stderr
        assert gone(pid)
    finally:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.loopback
def test_init_script_leaves_another_configurations_client_alone(tmp_path, fakehost, mtce_cmd,
                                                                daemons):
    """Issue 23 item 19: two clients on one machine (the lab), each with its ini. worker-1's
    pidfile, unlocked, naming worker-0's running client (started before the file was written)
    is stale for worker-1: status 1, and stop does not signal worker-0's client (before:
    status 0, and stop SIGTERMed it)."""
    w0, w1 = fakehost("worker-0"), fakehost("worker-1", hostname="worker-1")
    client0 = daemons("client", w0.ini)
    wait_until(lambda: service.read_pid(os.path.join(w0.paths["pid_dir"], "mtcClient.pid"))
               == client0.proc.pid, 20, what="worker-0's client runs")
    script = init_script(tmp_path, "mtcClient", w1.ini, mtce_cmd)
    write_pid(os.path.join(w1.paths["pid_dir"], "mtcClient.pid"), client0.proc.pid)
    assert run_init(script, "status").returncode == 1
    assert run_init(script, "stop").returncode == 0
    assert client0.proc.poll() is None, "worker-1's stop signalled worker-0's client"


@pytest.mark.loopback
def test_init_script_stops_an_agent_whose_pidfile_was_removed(tmp_path, mtce_cmd):
    """Issue 23 item 19: without its pidfile the agent is still found, as the server of its
    control socket (SO_PEERCRED) running `mtce agent` with this ini: status 0, and stop stops
    it (before: status 3 and stop 0, the agent running on)."""
    c = Cluster(tmp_path / "c", workers=0)
    script = init_script(tmp_path, "mtcAgent", c.agent_ini, mtce_cmd)
    pidfile = os.path.join(c.controller.paths["pid_dir"], "mtcAgent.pid")
    r = run_init(script, "start")
    assert r.returncode == 0, r.stdout + r.stderr
    pid = service.read_pid(pidfile)
    try:
        wait_until(lambda: os.path.exists(c.controller.paths["agent_socket"]), 20,
                   what="the control socket")
        os.unlink(pidfile)
        assert run_init(script, "status").returncode == 0
        r = run_init(script, "stop")
        assert r.returncode == 0, r.stdout + r.stderr
        assert gone(pid), "stop said 0 and the agent runs on"
        assert run_init(script, "status").returncode == 3
    finally:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.loopback
def test_a_daemon_systemd_started_logs_to_its_journal_stream_and_its_file(tmp_path, fakehost,
                                                                         mtce_cmd):
    """Issue 24 item 5: under systemd the daemon's stderr is its journal stream
    ($JOURNAL_STREAM names it, systemd.exec(5)); the daemon (not `-f`) kept logging only to
    log_dir, so `journalctl -u mtcclient` had nothing from it. Now each line goes to the file
    and to the stream, there with its syslog priority (`<6>`, sd-daemon(3)) and without the
    timestamp the journal adds; with any other stderr the daemon still closes it."""
    host = fakehost()
    pidfile = os.path.join(host.paths["pid_dir"], "mtcClient.pid")
    stream = tmp_path / "journal-stream"
    for journal in (True, False):
        stream.write_bytes(b"")
        with open(stream, "ab") as err:
            st = os.fstat(err.fileno())
            env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino + (not journal)}")
            r = subprocess.run(mtce_cmd + ["client", "-c", host.ini], stderr=err,
                               stdout=subprocess.DEVNULL, env=env, timeout=30)
        try:
            assert r.returncode == 0, r
            wait_until(lambda: "starting" in host.log_text(), 30, what="the client's start")
            pid = service.read_pid(pidfile)
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: gone(pid), 30, what="its stop")
            assert "mtcClient stopped" in host.log_text()
        finally:
            kill_mtce(pidfile)
        lines = stream.read_text().splitlines()
        if not journal:
            assert lines == []
            continue
        starting = [line for line in lines if "mtcClient starting" in line]
        assert len(starting) == 1 and starting[0].startswith("<6>["), lines
        assert "] worker-0 mtcClient " in starting[0]
        assert any(line.startswith("<6>") and "mtcClient stopped" in line for line in lines)
        # the same lines, stamped, in the file
        assert starting[0][3:] in host.log_text()
        os.unlink(os.path.join(host.paths["log_dir"], "mtcClient.log"))


def test_the_log_file_is_made_as_logrotate_makes_the_next_one(tmp_path):
    """debian/mtce.logrotate creates each new log `0640 root adm`; the daemon made the first
    one (and one after it was moved away) 0644 from its umask, readable by every user until
    the first rotation (attack on issue 24)."""
    import grp
    from mtce import logs
    old = os.umask(0o022)
    try:
        log = logs.setup("mtcClient", foreground=False, log_dir=str(tmp_path),
                         hostname="worker-0")
        path = tmp_path / "mtcClient.log"
        for _ in range(2):
            log.info("a line")
            st = os.stat(path)
            assert st.st_mode & 0o777 == 0o640
            try:
                adm = grp.getgrnam("adm").gr_gid
            except KeyError:
                adm = None
            if os.geteuid() == 0 and adm is not None:
                assert st.st_gid == adm
            os.rename(path, tmp_path / "mtcClient.log.1")   # as logrotate moves it
        assert "a line" in (tmp_path / "mtcClient.log.1").read_text()
    finally:
        os.umask(old)
        for h in list(logs.get().handlers):
            logs.get().removeHandler(h)
            h.close()
