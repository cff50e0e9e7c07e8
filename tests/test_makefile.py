"""The Makefile's system checks as a normal user meets them (issue 23 item 5).

Run as `nobody` with a normal user's PATH (no /usr/sbin, no /sbin), through setpriv: root is
needed to become another user, and every make call is a dry check or a fake program, so the
file takes about a second.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from harness.env import REPO, need

pytestmark = pytest.mark.source_tree

USER_PATH = "/usr/local/bin:/usr/bin:/bin"
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
NO_SUCH = "mtce-no-such-package:mtce-no-such-tool"
# The test suite's tools that Debian installs under /usr/sbin, by package.
SBIN_TOOLS = {"resource-agents": "ocf-tester", "pacemaker-cli-utils": "crm_simulate",
              "corosync": "corosync", "pacemaker": "pacemakerd", "kmod": "modprobe"}


def as_nobody(*args: str) -> subprocess.CompletedProcess:
    need(os.geteuid() == 0 and shutil.which("setpriv") is not None,
         "needs root and setpriv to run make as nobody")
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           "env", "-i", f"PATH={USER_PATH}", "HOME=/nonexistent", "LC_ALL=C",
                           "make", "--no-print-directory", "-s", "-C", REPO, *args],
                          capture_output=True, text=True, timeout=60, cwd="/")


def needs(r: subprocess.CompletedProcess) -> set[str]:
    """The packages a `make: needs ... (run as root to install)` line names."""
    m = re.search(r"needs (.*?) \(run as root", r.stdout + r.stderr)
    return set(m.group(1).split()) if m else set()


@pytest.fixture
def fake_python():
    """A stand-in for .venv/bin/python that says how it was run (readable by nobody, newer
    than requirements.txt so that make does not rebuild it)."""
    d = tempfile.mkdtemp(prefix="mtce-make-")
    try:
        os.chmod(d, 0o755)
        path = os.path.join(d, "python")
        with open(path, "w") as f:
            f.write('#!/bin/sh\necho "fake python: $*"\n')
        os.chmod(path, 0o755)
        yield path
    finally:
        shutil.rmtree(d)


def test_make_lab_as_a_normal_user_checks_only_what_the_demo_needs(fake_python):
    """Issue 23 item 5, docs/contract.md §1 and §6: `make lab` as a normal user, with the venv made,
    runs the demo: it does not ask for the test suite's packages (here one that exists
    nowhere), and does not look for tools with a PATH that lacks /usr/sbin. `make bench` is
    the same."""
    for target in ("lab", "bench"):
        r = as_nobody(target, f"VPY={fake_python}", f"TEST_DEPS={NO_SUCH}")
        assert r.returncode == 0, r
        assert f"fake python: mtce.py {target}" in r.stdout, r
        assert "needs" not in r.stdout + r.stderr, r


def test_the_test_check_finds_tools_in_sbin_and_still_names_what_is_missing():
    """Issue 23 item 5: the test suite's check (`make test` runs it, and installs as root)
    finds the tools Debian puts in /usr/sbin for a user whose PATH lacks it, and still names
    a missing package (and, as a normal user, does not try to install it)."""
    present = {pkg for pkg, tool in SBIN_TOOLS.items()
               if shutil.which(tool, path=SBIN) and not shutil.which(tool, path=USER_PATH)}
    need(bool(present), "none of the suite's /usr/sbin tools is installed here")
    r = as_nobody("sysdeps")
    assert not needs(r) & present, r
    r = as_nobody("sysdeps", f"TEST_DEPS={NO_SUCH}")
    assert r.returncode != 0 and needs(r) == {"mtce-no-such-package"}, r


@pytest.fixture
def open_tmp():
    """A temporary directory nobody may enter (pytest's own are root's, mode 0700)."""
    d = tempfile.mkdtemp(prefix="mtce-make-")
    os.chmod(d, 0o755)
    try:
        yield __import__("pathlib").Path(d)
    finally:
        shutil.rmtree(d)


def test_make_lab_on_a_fresh_clone_as_a_normal_user_builds_the_venv_once(open_tmp):
    """docs/contract.md §1: `make lab` on a fresh clone does its set-up. As a normal user (the
    attack session of issue 23: `make lab` as nobody always failed) the venv's interpreter is
    a symlink to the system's python, which `touch` cannot change: the recipe must not touch
    it (as root it changed the system interpreter's mtime), and a second `make` must find the
    venv made. A stand-in PYTHON makes the venv (a symlinked interpreter and a pip that
    records its call), so nothing is downloaded."""
    need(os.geteuid() == 0 and shutil.which("setpriv") is not None,
         "needs root and setpriv to run make as nobody")
    tmp_path = open_tmp
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt"):
        shutil.copy(os.path.join(REPO, name), tree / name)
    shutil.copytree(os.path.join(REPO, "mk"), tree / "mk")
    (tree / "mtce.py").write_text("")
    interpreter = tmp_path / "system-python"     # root's, like /usr/bin/python3
    interpreter.write_text('#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = pip ]; then\n'
                           '  echo pip >> "$PIP_LOG"; exit 0; fi\necho "python: $*"\n')
    interpreter.chmod(0o755)
    maker = tmp_path / "make-python"
    maker.write_text('#!/bin/sh\n'
                     'case "$*" in\n'
                     '  "-c "*) exit 0 ;;\n'
                     '  "-m venv "*) mkdir -p "$3/bin" && ln -sf "$SYSTEM_PY" "$3/bin/python" ;;\n'
                     'esac\n')
    maker.chmod(0o755)
    before = os.stat(interpreter).st_mtime_ns
    os.utime(interpreter, ns=(before - 10**12, before - 10**12))   # older than the clone
    before = os.stat(interpreter).st_mtime_ns
    subprocess.run(["chown", "-R", "65534:65534", str(tree)], check=True, timeout=10)
    log = tree / "pip.log"

    def make(*args):
        return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               "env", "-i", f"PATH={USER_PATH}", "HOME=/nonexistent",
                               "LC_ALL=C", f"SYSTEM_PY={interpreter}", f"PIP_LOG={log}",
                               "make", "--no-print-directory", "-s", "-C", str(tree),
                               f"PYTHON={maker}", *args],
                              capture_output=True, text=True, timeout=60, cwd="/")
    r = make("lab")
    assert r.returncode == 0, r
    assert "python: mtce.py lab" in r.stdout, r
    r = make("lab")
    assert r.returncode == 0, r
    assert log.read_text().count("pip") == 1, "the second make found the venv made"
    assert os.stat(interpreter).st_mtime_ns == before, "the system's interpreter untouched"


@pytest.mark.slow                   # it collects the whole suite twice: not in the loop it checks
def test_make_test_fast_runs_the_in_process_tests_and_no_real_daemon_or_namespace():
    """Issue 26 item 4: `make test-fast` is the edit-run loop. What it selects must not start
    real daemons, namespaces, containers or the soak (their markers), and must still be most
    of the suite; what it leaves out, `make test` runs."""
    dry = subprocess.run(["make", "--no-print-directory", "-n", "-C", REPO, "test-fast",
                          "VPY=python"], capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    markers = re.search(r'-m "([^"]+)"', dry.stdout).group(1)
    for marker in ("loopback", "netns", "slow", "soak", "systemd", "prometheus", "ha"):
        assert f"not {marker}" in markers, f"make test-fast runs {marker} tests"

    def collected(*args) -> list[str]:
        r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                            "-p", "no:cacheprovider", *args, "tests/"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
        return [line for line in r.stdout.splitlines() if "::" in line]

    fast = collected("-m", markers)
    everything = collected("-m", "not soak and not systemd")
    assert not [t for t in fast if "test_loopback_" in t or "test_netns_" in t], fast
    assert len(fast) > len(everything) // 2, (len(fast), len(everything))
