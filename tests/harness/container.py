"""A booted Debian 12 with systemd as PID 1, for `make test-systemd` (issue 24).

The root is made once with debootstrap (minbase + systemd and what a host has) and cached
under `build/systemd/base` while its recipe is unchanged; each run boots a fresh copy of it
with `systemd-nspawn --register=no --keep-unit -b` (no machined: PID 1 here need not be
systemd), on a private network (loopback only: nothing it sends leaves it), with two
directories bound in: `/debs` (read-only: the packages to install) and `/results` (what the
harmless `[actions]` record). Commands run inside with `nsenter` into the container's PID 1.
Nothing here reboots anything: the container is stopped by signalling systemd-nspawn.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import signal
import subprocess
import time

SUITE = "bookworm"
# What a Debian host that runs mtce has: systemd as init, the journal, logrotate, python3
# (the package's one dependency), and the tools the tests read the host with.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "logrotate", "python3", "procps",
            "iproute2")
RECIPE = f"debootstrap --variant=minbase {SUITE} + {','.join(PACKAGES)} (1)"
BOOT_TIMEOUT_S = 90.0
ENV = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root", "TERM=dumb",
       "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "DEBIAN_FRONTEND=noninteractive"]


class ContainerError(Exception):
    pass


def run_host(argv, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def base_root(cache: str, mirror: str) -> str:
    """The cached root (built now if missing or made by another recipe)."""
    base = os.path.join(cache, "base")
    stamp = os.path.join(cache, "base.recipe")
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(stamp, encoding="utf-8") as f:
                if f.read() == RECIPE and os.path.isfile(os.path.join(base, "sbin", "init")):
                    return base
        except FileNotFoundError:
            pass
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stamp)
        for d in (base, base + ".tmp"):
            if os.path.exists(d):
                run_host(["rm", "-rf", "--one-file-system", d])
        log = os.path.join(cache, "debootstrap.log")
        with open(log, "w") as out:
            r = subprocess.run(["debootstrap", "--variant=minbase",
                                "--include=" + ",".join(PACKAGES), SUITE, base + ".tmp",
                                mirror], stdout=out, stderr=subprocess.STDOUT, timeout=1200)
        if r.returncode:
            with open(log, encoding="utf-8", errors="replace") as f:
                tail = f.read()[-3000:]
            raise ContainerError(f"debootstrap failed ({log}):\n{tail}")
        # A machine of its own: no machine-id yet (systemd makes one at its first boot).
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(base + ".tmp", "etc", "machine-id"))
        os.rename(base + ".tmp", base)
        with open(stamp, "w", encoding="utf-8") as f:
            f.write(RECIPE)
        return base


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _ns_pid_one(pid: int) -> bool:
    """True when `pid` is PID 1 of its own PID namespace."""
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("NSpid:"):
                ids = line.split()[1:]
                return len(ids) > 1 and ids[-1] == "1"
    return False


class Container:
    """One booted container; `sh(script)` runs a shell script inside it as root."""

    def __init__(self, cache: str, mirror: str, name: str = "mtce-systemd-test"):
        self.cache = cache
        self.mirror = mirror
        self.name = name
        self.root = os.path.join(cache, "root")
        self.results = os.path.join(cache, "results")
        self.debs = os.path.join(cache, "debs")
        self.console = os.path.join(cache, "console.log")
        self.proc: subprocess.Popen | None = None
        self.pid1: int | None = None

    # -- life -----------------------------------------------------------------------------------
    def prepare(self, hostname: str) -> None:
        """A fresh copy of the cached root, named `hostname` (a container a killed run left
        on the same root is stopped first)."""
        self._stop_leftovers()
        base = base_root(self.cache, self.mirror)
        for d in (self.root, self.results, self.debs):
            if os.path.exists(d):
                run_host(["rm", "-rf", "--one-file-system", d])
        r = run_host(["cp", "-a", "--reflink=auto", base, self.root])
        if r.returncode:
            raise ContainerError(f"cannot copy {base}: {r.stderr}")
        os.makedirs(self.results)
        os.makedirs(self.debs)
        with open(os.path.join(self.root, "etc", "hostname"), "w") as f:
            f.write(hostname + "\n")
        # Its one link is loopback, which systemd-networkd does not manage: its wait-online
        # would hold network-online.target (and the units ordered after it) for 2 minutes.
        os.symlink("/dev/null", os.path.join(self.root, "etc", "systemd", "system",
                                             "systemd-networkd-wait-online.service"))

    def boot(self) -> None:
        out = open(self.console, "wb")
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--register=no", "--keep-unit", "-b", "-q", "-D", self.root,
             "-M", self.name, "--private-network", "--console=read-only",
             f"--bind-ro={self.debs}:/debs", f"--bind={self.results}:/results"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        out.close()
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while self.pid1 is None:
            if self.proc.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited ({self.proc.returncode}):\n"
                                     + self.console_text())
            if time.monotonic() > deadline:
                raise ContainerError("no PID 1 in the container:\n" + self.console_text())
            self.pid1 = self._find_pid1()
            time.sleep(0.1)
        while True:
            r = self.sh("systemctl is-system-running --wait", check=False, timeout=60)
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                break
            if time.monotonic() > deadline:
                raise ContainerError(f"the container did not boot: {state!r} {r.stderr}\n"
                                     + self.console_text())
            time.sleep(0.5)

    def _stop_leftovers(self) -> None:
        mine = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        argv = f.read().split(b"\0")
                except OSError:
                    continue
                if argv and argv[0].endswith(b"systemd-nspawn") and \
                        os.fsencode(self.root) in argv:
                    mine.append(int(entry))
        for pid in mine:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 45
        while mine and time.monotonic() < deadline:
            mine = [p for p in mine if os.path.exists(f"/proc/{p}")]
            time.sleep(0.2)
        for pid in mine:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _find_pid1(self) -> int | None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                if not _ns_pid_one(pid):
                    continue
                p = pid
                for _ in range(8):
                    p = _parent(p)
                    if p == self.proc.pid:
                        return pid
                    if p <= 1:
                        break
            except (OSError, ValueError, IndexError):
                continue
        return None

    def stop(self) -> None:
        """systemd-nspawn on SIGTERM asks the container's systemd to halt it; then SIGKILL."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(45)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(15)
        self.proc = None
        self.pid1 = None

    def console_text(self) -> str:
        try:
            with open(self.console, encoding="utf-8", errors="replace") as f:
                return f.read()[-4000:]
        except FileNotFoundError:
            return ""

    # -- inside ---------------------------------------------------------------------------------
    def sh(self, script: str, check: bool = True, timeout: float = 120,
           input: str | None = None) -> subprocess.CompletedProcess:
        if self.pid1 is None:
            raise ContainerError("the container is not running")
        argv = ["nsenter", "-t", str(self.pid1), "-m", "-u", "-i", "-n", "-p", "-C", "-r",
                "-w", "--", "/usr/bin/env", "-i", *ENV, "/bin/sh", "-c", script]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and r.returncode:
            raise ContainerError(f"in the container: {script}\nexit {r.returncode}\n"
                                 f"{r.stdout[-3000:]}{r.stderr[-3000:]}")
        return r

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file inside the container (as its root sees it)."""
        self.sh(f"mkdir -p {shlex.quote(os.path.dirname(path))} && cat > {shlex.quote(path)} "
                f"&& chmod {mode:o} {shlex.quote(path)}", input=text)

    def read(self, path: str) -> str:
        return self.sh(f"cat {shlex.quote(path)}").stdout

    def add_deb(self, path: str, name: str | None = None) -> str:
        """Put a package where the container sees it; its path inside."""
        name = name or os.path.basename(path)
        shutil.copy(path, os.path.join(self.debs, name))
        return "/debs/" + name

    def result(self, name: str) -> str:
        try:
            with open(os.path.join(self.results, name), encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return ""
