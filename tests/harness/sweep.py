"""Remove what an earlier, killed test run left behind: its namespaces and its daemons.

Run once at session start (conftest). Only what is provably stale is touched, so a demo or a
second test run on the same machine is left alone:
  - a test namespace is named `mtce-t<pid>-...` after the pytest process that made it; it is
    stale when that process is gone;
  - a lab namespace is named after its lab (`mtce-lab-XXXX-...`); it is stale when no process
    carries that lab's MTCE_LAB_ID any more;
  - a daemon is stale when it runs on a config under a pytest temporary directory
    (`/pytest-of-`) and has been orphaned (its parent is gone: pid 1 adopted it).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess

TEST_NS = re.compile(r"^mtce-t(\d+)-")
LAB_NS = "mtce-lab-"
LAB_TAG = b"MTCE_LAB_ID="


def namespace_name(short: str, tag: str) -> str:
    """The name of a namespace this test process makes (see the module rule)."""
    return f"mtce-t{os.getpid()}-{short}-{tag}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _processes():
    """(pid, ppid, argv, environ bytes) of every process we may read."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except (OSError, ValueError, IndexError):
            continue
        yield int(entry), ppid, argv, env


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)


def stale_namespaces(names: list[str], live_lab_tags: set[str]) -> list[str]:
    """Which of `names` are stale (pure: the rule of the module docstring)."""
    stale = []
    for name in names:
        m = TEST_NS.match(name)
        if m:
            if not _alive(int(m.group(1))):
                stale.append(name)
        elif name.startswith(LAB_NS):
            if not any(name.startswith(tag + "-") for tag in live_lab_tags):
                stale.append(name)
    return stale


def stale_daemon(ppid: int, argv: list[str]) -> bool:
    """An orphaned mtce process whose config lies in a pytest temporary directory."""
    if ppid != 1 or not any("mtce" in a for a in argv[:3]):
        return False
    configs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-c"]
    return any("/pytest-of-" in c for c in configs)


def sweep() -> list[str]:
    """Remove the stale namespaces and daemons; returns what was removed, for the log."""
    removed = []
    me = os.getpid()
    lab_tags = set()
    for pid, ppid, argv, env in _processes():
        if pid == me:
            continue
        for var in env.split(b"\0"):
            if var.startswith(LAB_TAG):
                lab_tags.add(var[len(LAB_TAG):].decode(errors="replace"))
        if stale_daemon(ppid, argv):
            try:
                os.kill(pid, signal.SIGKILL)
                removed.append(f"process {pid} ({' '.join(argv)[:80]})")
            except OSError:
                pass
    if os.geteuid() == 0 and shutil.which("ip"):
        names = [ln.split()[0] for ln in _ip("netns", "list").stdout.splitlines()
                 if ln.split()]
        for name in stale_namespaces(names, lab_tags):
            for pid in _ip("netns", "pids", name).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            _ip("netns", "del", name)
            removed.append(f"namespace {name}")
    return removed
