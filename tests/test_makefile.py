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
import tempfile

import pytest

from conftest import REPO, need

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


def test_item23_5_make_lab_as_a_normal_user_checks_only_what_the_demo_needs(fake_python):
    """Issue 23 item 5, docs/contract.md §1 and §6: `make lab` as a normal user, with the venv made,
    runs the demo: it does not ask for the test suite's packages (here one that exists
    nowhere), and does not look for tools with a PATH that lacks /usr/sbin. `make bench` is
    the same."""
    for target in ("lab", "bench"):
        r = as_nobody(target, f"VPY={fake_python}", f"TEST_DEPS={NO_SUCH}")
        assert r.returncode == 0, r
        assert f"fake python: mtce.py {target}" in r.stdout, r
        assert "needs" not in r.stdout + r.stderr, r


def test_item23_5_the_test_check_finds_tools_in_sbin_and_still_names_what_is_missing():
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
