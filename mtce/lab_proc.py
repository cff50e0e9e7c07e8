"""`mtce lab`'s processes: the daemons it starts (which die with it), their stop, the sweep of
anything left behind and the guardian that sweeps if the lab itself is killed, and the network
namespaces of `--netns`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time

from mtce.cli_screen import Interrupted
from mtce.lab_plan import ENV_TAG, STOP_GRACE_S, LabError, Plan

# == processes ===============================================================================

PR_SET_PDEATHSIG = 1
_LIBC = None
_LAB_PID = 0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PENDING_SIGNALS: list[int] = []       # stop signals received (a raise can be swallowed, see below)


@contextlib.contextmanager
def signals_held():
    """Hold the stop signals around a fork: the handler raises, and a raise inside
    subprocess or os.fork internals (their at-fork hooks swallow it: "Exception ignored")
    could lose the signal or the child's handle. Released, a held signal raises here."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def on_stop_signal(signum, frame):
    """The labs' handler of the stop signals: remember it, raise Interrupted."""
    PENDING_SIGNALS.append(signum)
    raise Interrupted(signum)


def ignore_stop_signals() -> None:
    """From here on (clean-up) a second Ctrl-C must not cut the clean-up short."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def check_stop() -> None:
    """Raise Interrupted for a stop signal whose raise was swallowed somewhere."""
    if PENDING_SIGNALS:
        raise Interrupted(PENDING_SIGNALS[0])


def init_process(lab_pid: int) -> None:
    """In the lab's process: its pid (children die with it) and libc for prctl."""
    global _LAB_PID
    _LAB_PID = lab_pid
    _load_libc()


def _load_libc() -> None:
    global _LIBC  # noqa: PLW0603 - one per process
    if sys.platform.startswith("linux"):
        try:
            _LIBC = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _LIBC = None


def _die_with_lab() -> None:
    """preexec_fn: SIGKILL when the lab dies (even by SIGKILL); gone already: exit now.
    The stop signals, held by the lab around the fork, are released for the daemon."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != _LAB_PID:
        os._exit(1)










class Proc:
    """A child process of the lab: own session, dies with the lab, output to a log file."""

    def __init__(self, label: str, argv: list[str], log_path: str, env: dict):
        self.label, self.argv, self.log_path, self.env = label, argv, log_path, env
        self.popen: subprocess.Popen | None = None
        self.expected_exit = False

    def start(self) -> "Proc":
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        with open(self.log_path, "ab") as log, signals_held():
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env=self.env,
                                          start_new_session=True, preexec_fn=_die_with_lab)
        self.expected_exit = False
        return self

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def returncode(self):
        return None if self.popen is None else self.popen.poll()

    def signal(self, signum: int) -> None:
        if self.running():
            try:
                self.popen.send_signal(signum)
            except ProcessLookupError:
                pass

    def tail(self, lines: int = 8) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - 8192))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def stop_all(procs: list[Proc], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM (daemons exit cleanly), then SIGKILL whatever is left after `grace`."""
    live = [p for p in procs if p.running()]
    for p in live:
        p.expected_exit = True
        p.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in live:
        try:
            p.popen.wait(max(0.05, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.signal(signal.SIGKILL)
            try:
                p.popen.wait(2)
            except subprocess.TimeoutExpired:
                pass


def tagged_pids(tag: str) -> list[int]:
    """Processes carrying `MTCE_LAB_ID=<tag>` in their environment: every process the lab
    started and their children (action shells), and nothing else."""
    needle = f"{ENV_TAG}={tag}".encode() + b"\0"
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in env or env.startswith(needle):
            found.append(int(entry))
    return found


def sweep(tag: str, root: str | None, ns_prefix: str | None) -> None:
    """Remove everything a lab may have left: tagged processes, its namespaces, its
    directory. Idempotent; used by the lab on exit and by the guardian after a kill."""
    for pid in tagged_pids(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if ns_prefix:
        for ns in list_namespaces(ns_prefix):
            delete_namespace(ns)
    if root:
        shutil.rmtree(root, ignore_errors=True)


def start_guardian(tag: str, root: str, ns_prefix: str | None) -> tuple[int, int]:
    """Fork a process that waits for the lab to end (its pipe closes, however the lab ends)
    and then sweeps. The lab writes b"d" after its own clean-up; the sweep then finds
    nothing. Returns (write end, guardian pid)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # the guardian
        try:
            os.close(w)
            os.setsid()
            for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGTSTP):
                signal.signal(s, signal.SIG_IGN)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, r)
            os.closerange(r + 1, 1024)
            while True:
                try:
                    os.read(r, 1)
                    break
                except InterruptedError:
                    continue
            sweep(tag, root, ns_prefix)
        finally:
            os._exit(0)
    os.close(r)
    return w, pid


def stop_guardian(guardian: tuple[int, int] | None) -> None:
    """After the lab's own clean-up: tell the guardian (b"d"), wait for it to sweep and end."""
    if not guardian:
        return
    w, pid = guardian
    try:
        os.write(w, b"d")
        os.close(w)
    except OSError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


# == network namespaces (--netns) ============================================================

def ip_cmd(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["ip"] + (["-n", ns] if ns else []) + list(args)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {r.stderr.strip() or 'failed'}")
    return r


def list_namespaces(prefix: str) -> list[str]:
    if not shutil.which("ip"):
        return []
    r = ip_cmd("netns", "list", check=False)
    return [line.split()[0] for line in r.stdout.splitlines()
            if line.split() and line.split()[0].startswith(prefix)]


def delete_namespace(ns: str) -> None:
    r = ip_cmd("netns", "pids", ns, check=False)
    for pid in r.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    ip_cmd("netns", "del", ns, check=False)


def netns_problem() -> str | None:
    """Why --netns cannot run here, or None."""
    if os.geteuid() != 0:
        return ("--netns needs root (it creates network namespaces and veth links); run it "
                "as root, or without --netns for the loopback lab")
    if not shutil.which("ip"):
        return "--netns needs iproute2's `ip` (apt-get install iproute2)"
    return None


def build_topology(plan: Plan) -> None:
    """A switch namespace with one bridge per network; each host's namespace gets a veth
    into each bridge: eth0 mgmt (the inventory MAC), eth1 cluster-host, eth2 pxeboot (a link
    of its own, so that pxeboot can fail while mgmt stays up)."""
    sw = plan.ns_prefix + "sw"
    ip_cmd("netns", "add", sw)
    for br in ("mgmt", "clstr", "pxe"):
        ip_cmd("link", "add", f"br-{br}", "type", "bridge", ns=sw)
        ip_cmd("link", "set", f"br-{br}", "up", ns=sw)
    for i, h in enumerate(plan.hosts):
        check_stop()
        ip_cmd("netns", "add", h.ns)
        ip_cmd("link", "set", "lo", "up", ns=h.ns)
        links = [("eth0", "mgmt", h.mgmt_ip, h.mac), ("eth1", "clstr", h.clstr_ip, None),
                 ("eth2", "pxe", h.pxeboot_ip, None)]
        for ifname, br, addr, mac in links:
            if not addr:
                continue
            peer = f"p{i}{br[0]}"
            ip_cmd("link", "add", ifname, *(["address", mac] if mac else []), "type", "veth",
                "peer", "name", peer, "netns", sw, ns=h.ns)
            ip_cmd("link", "set", peer, "master", f"br-{br}", "up", ns=sw)
            ip_cmd("link", "set", ifname, "up", ns=h.ns)
            ip_cmd("addr", "add", f"{addr}/24", "dev", ifname, ns=h.ns)
        if h is plan.controller and not plan.ha:     # --ha: Pacemaker's IPaddr2 adds it
            ip_cmd("addr", "add", f"{plan.floating}/24", "dev", "eth0", ns=h.ns)


