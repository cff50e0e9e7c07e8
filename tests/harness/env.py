"""Where the tests run and what they run: the program under test (`MTCE_BIN`, default this
tree's `python3 mtce.py`; a zipapp is put on sys.path so that unit tests import the installed
package from it), the source tree or the installed package (`SOURCE_TREE`, `shipped`), and the
helpers every kind of test waits and decides with (`need`, `wait_until`, `gone`,
`loopback_block`). Imported by conftest.py first: it sets sys.path and PATH for the session.
"""

from __future__ import annotations

import os
import random
import shlex
import sys
import time
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS = os.path.join(REPO, "tests")
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)


def _program() -> list[str]:
    env = os.environ.get("MTCE_BIN")
    if env:
        return shlex.split(env)
    return [sys.executable, os.path.join(REPO, "mtce.py")]


PROGRAM = _program()
_zip = next((p for p in PROGRAM if os.path.isfile(p) and zipfile.is_zipfile(p)), None)
if _zip:
    sys.path.insert(0, _zip)
elif REPO not in sys.path:
    sys.path.insert(0, REPO)

# Programs the tests start buffer their output as in a user's shell: a PYTHONUNBUFFERED in the
# developer's environment once hid an exit 120 that CI's clean one showed.
os.environ.pop("PYTHONUNBUFFERED", None)

# The suite runs from the source tree, or (make test-chroot) as tests/ alone against the
# installed package: then what the package installs is what the tests read.
SOURCE_TREE = os.path.isfile(os.path.join(REPO, "mtce.py"))


def shipped(source: str, installed: str) -> str:
    """The file under test: `source` (relative to the tree) there, else the installed copy."""
    return os.path.join(REPO, source) if SOURCE_TREE else installed


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Debian installs some of the suite's tools (ocf-tester, crm_simulate, start-stop-daemon, ip)
# in /usr/sbin and /sbin, which a normal user's PATH lacks: without them here a normal user's
# run would say "not installed" of tools that are (issue 23 review). Programs the tests start
# inherit the same PATH.
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
_path = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
os.environ["PATH"] = os.pathsep.join(_path + [d for d in SBIN_DIRS if d not in _path])


def need(condition: bool, why: str) -> None:
    """Skip when a test cannot run here, except under CI=true where that is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"cannot run under CI: {why}")
    pytest.skip(why)


def gone(pid: int) -> bool:
    """The process has ended (or is a zombie nobody has reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = ""):
    """Poll `predicate` until it returns a true value (returned) or `timeout` passes (fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


# 127.<a>: what the labs use while tests may run (mtce lab's default 127.42, tools/ci_lab.sh's
# lanes 127.61-80); `mtce bench` takes 127.251-254, above the range.
LAB_BLOCKS = frozenset({42, *range(61, 81)})


def loopback_block() -> str:
    """A random 127.a.b. prefix so concurrent tests and labs never share an address."""
    a = random.choice([a for a in range(10, 251) if a not in LAB_BLOCKS])
    return f"127.{a}.{random.randint(0, 250)}."
