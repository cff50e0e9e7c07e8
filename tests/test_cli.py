"""The command line as a user meets it first: `python3 mtce.py` from a fresh clone."""

from __future__ import annotations

import os
import subprocess
import signal
import sys

import pytest

from conftest import PROGRAM, REPO


def test_item11_without_the_venv_one_line_says_what_to_run(tmp_path):
    """Issue 11 item 11, docs/contract.md §1: plain `python3 mtce.py ...` without the dependencies
    (here: a Python that sees no site-packages) prints one line saying what to run, exit 2,
    no traceback. Run against an installed zipapp (MTCE_BIN), which bundles them, the same
    command gives its one-line config error instead."""
    source = os.path.join(REPO, "mtce.py")
    target = source if PROGRAM[-1:] == [source] or not os.environ.get("MTCE_BIN") \
        else PROGRAM[-1]
    ini = tmp_path / "mtc.ini"
    ini.write_text("[agent]\noffline_threshold = 0\n")      # typed by configobj: refused
    r = subprocess.run([sys.executable, "-S", "-E", target, "agent", "-c", str(ini)],
                       capture_output=True, text=True, timeout=30, cwd=str(tmp_path))
    assert r.returncode == 2, r
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    if target == source:
        assert "make venv" in r.stderr and ".venv/bin/python mtce.py" in r.stderr
        assert "python3 dist/mtce.pyz" in r.stderr
    else:
        assert f"{ini}:2: [agent] offline_threshold:" in r.stderr
    version = subprocess.run([sys.executable, "-S", "-E", target, "--version"],
                             capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("mtce "), version


@pytest.mark.loopback
@pytest.mark.parametrize("mode,foreground,inside", [
    ("agent", True, "absolute"), ("agent", False, "absolute"), ("client", True, "absolute"),
    ("client", False, "absolute"), ("agent", False, "relative"), ("client", True, "relative")])
def test_item23_2_relative_paths_are_taken_from_the_start_directory_for_every_reload(
        tmp_path, mtce_cmd, mode, foreground, inside):
    """Issue 23 item 2, docs/contract.md §1: `mtce agent -c ag/mtc.ini` (and the client, with and
    without -f) started in a directory, the paths inside the file absolute or relative
    too: the daemon (whose working directory is `/` once it runs) still reads the same files
    on SIGHUP, twice, and the ctl commands started there find its socket."""
    from cluster import Cluster
    from conftest import assert_harmless, wait_until
    c = Cluster(tmp_path / "ag", workers=1)
    host = c.controller if mode == "agent" else c.host("worker-0")
    if inside == "relative":
        host.values["paths"] = {k: os.path.relpath(v, tmp_path) for k, v in host.paths.items()}
        if mode == "agent":
            host.values["agent"]["inventory"] = os.path.relpath(c.inventory, tmp_path)
        host.write_ini()
    assert_harmless(host.ini)
    ini = os.path.relpath(host.ini, tmp_path)
    program = "mtcAgent" if mode == "agent" else "mtcClient"
    argv = mtce_cmd + [mode, "-c", ini] + (["-f"] if foreground else [])
    stderr = tmp_path / "stderr"
    log = stderr if foreground else os.path.join(host.paths["log_dir"], f"{program}.log")
    pidfile = os.path.join(host.paths["pid_dir"], f"{program}.pid")
    ready = "Listening On: 'mtc client receive' socket" if mode == "agent" else "Identity    :"
    reloaded = ("inventory reloaded: 0 added, 0 removed, 0 changed" if mode == "agent"
                else "reload: configuration unchanged")

    def text():
        try:
            with open(log, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    with open(stderr, "wb") as err:
        proc = subprocess.Popen(argv, cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                                stdout=err, stderr=subprocess.STDOUT)
    pid = None
    try:
        if not foreground:
            assert proc.wait(20) == 0, stderr.read_text()
        pid = int(wait_until(lambda: os.path.exists(pidfile) and open(pidfile).read().strip(),
                             10, what="the pidfile"))
        wait_until(lambda: ready in text(), 15, what="the daemon up")
        for n in (1, 2):
            os.kill(pid, signal.SIGHUP)
            wait_until(lambda: text().count(reloaded) >= n or "reload failed" in text(), 10,
                       what="the reload")
            assert "reload failed" not in text(), text()[-2000:]
        assert f"starting (config {host.ini})" in text()     # the log names the file read
        if mode == "agent":
            r = subprocess.run(mtce_cmd + ["hosts", "--json", "-c", ini], cwd=str(tmp_path),
                               capture_output=True, text=True, timeout=20)
            assert r.returncode == 0, r.stderr
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if not foreground:      # not our child: gone from /proc once it has exited
                wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 10,
                           what="the daemon gone")
        try:
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


# Every command of docs/contract.md §1's table, with arguments it accepts.
EVERY_COMMAND = [["client"], ["agent", "-f"], ["hosts"], ["hosts", "--json"],
                 ["hosts", "--watch", "1"], ["lock", "worker-0"], ["unlock", "worker-0"],
                 ["reboot", "worker-0"], ["reset", "worker-0", "-c", "mtc.ini"],
                 ["alive", "worker-0"], ["alarms", "--json"], ["lab", "--duration", "2"],
                 ["bench", "--quick", "--json"]]


def python_without_the_dependencies() -> list[str]:
    """Debian's python3 as a fresh clone meets it, when it is 3.9+ and lacks the packages;
    else this interpreter without site-packages."""
    plain = "/usr/bin/python3"
    probe = ("import importlib.util, sys; sys.exit(0 if sys.version_info >= (3, 9) and "
             "importlib.util.find_spec('configobj') is None else 1)")
    if os.path.exists(plain) and subprocess.run([plain, "-c", probe], capture_output=True,
                                                timeout=30).returncode == 0:
        return [plain]
    return [sys.executable, "-S", "-E"]


@pytest.mark.parametrize("argv", EVERY_COMMAND, ids=[" ".join(a) for a in EVERY_COMMAND])
def test_item23_6_every_command_without_the_dependencies_says_what_to_run(tmp_path, argv):
    """Issue 23 item 6, docs/contract.md §1: plain `python3 mtce.py ARGS` from the source tree
    without the dependencies (a Python that sees no site-packages, as Debian's python3 without the
    venv) prints one line saying what to run and exits 2, for every command, before it
    starts anything (today `lab` prints its header and exits 1); `--version` still works."""
    (tmp_path / "mtc.ini").write_text("[client]\nmtcalive_period = 1\n")
    python = python_without_the_dependencies()
    r = subprocess.run(python + [os.path.join(REPO, "mtce.py")] + argv,
                       capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert r.returncode == 2, r
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1, r
    assert "make venv" in r.stderr and "python3 dist/mtce.pyz" in r.stderr, r.stderr
    version = subprocess.run(python + [os.path.join(REPO, "mtce.py"), "--version"],
                             capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("mtce "), version


def test_item23_19_daemon_info_is_internal_and_answers(tmp_path):
    """Issue 23 item 19, docs/design.md: `mtce daemon-info` (for the init scripts and the OCF
    agent) is not in `mtce --help` (docs/contract.md §1's table is the interface); it prints
    the [paths] mtce resolves and exits 3 when no daemon runs, 2 for an ini it cannot read."""
    ini = tmp_path / "mtc.ini"
    ini.write_text(f"[paths]\npid_dir: {tmp_path}/pid\n", encoding="utf-8")
    top = subprocess.run(PROGRAM + ["--help"], capture_output=True, text=True, timeout=60)
    assert "daemon-info" not in top.stdout
    r = subprocess.run(PROGRAM + ["daemon-info", "client", "-c", str(ini)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    assert f"pidfile={tmp_path}/pid/mtcClient.pid" in r.stdout.splitlines()
    assert "pid=" in r.stdout.splitlines()
    ini.write_bytes(b"[paths]\npid_dir = /caf\xe9\n")
    r = subprocess.run(PROGRAM + ["daemon-info", "agent", "-c", str(ini)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not UTF-8" in r.stderr
