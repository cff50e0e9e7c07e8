"""`mtce lab`: an agent and N clients on this machine with a live table (interface.md §6).

Generates one directory per host under a temporary directory (platform.conf, hosts, hostname,
build.info, inventory, dnsmasq.hosts, a DHCP lease and an mtc.ini whose every [paths] key points
into it and whose [actions] never touch this machine), starts the real daemons in the
foreground as child processes (`mtce agent -f`, `mtce client -f`), watches the agent over its
control socket, and plays an optional fault scenario. Loopback addresses by default (no root);
`--netns` (root) puts each host in a network namespace behind veth links.

Nothing outlives the lab: children get SIGKILL when the lab dies (PR_SET_PDEATHSIG), and a
guardian process removes the processes, namespaces and directory if the lab itself is killed.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass

from mtce import config, ctl
from mtce.hosts import PXEBOOT_LOSS_THRESHOLD, PXEBOOT_MISS_THRESHOLD

# -- the lab's timers: minutes of protocol in seconds (printed in the header) ----------------
MTCALIVE_PERIOD_S = 1          # [client] mtcalive_period
ONLINE_PERIOD_S = 2            # [timeouts] online_period
PXEBOOT_WINDOW_S = 2           # [timeouts] pxeboot_mtcalive_window
OFFLINE_PERIOD_MS = 100        # [agent] offline_period
OFFLINE_THRESHOLD = 20         # [agent] offline_threshold
PXEBOOT_ALARM_S = PXEBOOT_WINDOW_S * PXEBOOT_MISS_THRESHOLD * PXEBOOT_LOSS_THRESHOLD
PXEBOOT_CLEAR_S = PXEBOOT_WINDOW_S * (PXEBOOT_MISS_THRESHOLD + 1)
OFFLINE_AFTER_S = ONLINE_PERIOD_S + OFFLINE_PERIOD_MS * OFFLINE_THRESHOLD / 1000.0

REBOOT_DOWN_S = 6.0            # a "rebooted" host's client stays down this long (goes offline)
STEADY_S = 3.0                 # every host ok this long before a scenario starts
RESTART_DEADLINE_S = 10.0      # restart: pxeboot ok again within this
BURST_COUNT, BURST_RATE, BURST_MIN_RATE = 5000, 1000.0, 500.0
BURST_LOG_BUDGET = 30          # agent log lines a burst may add
POLL_S, REFRESH_S, TICK_S = 0.5, 1.0, 0.1
RECENT_LINES = 10
AGENT_START_S = 20.0           # the agent's control socket must answer within this
STOP_GRACE_S = 3.0

MAX_HOSTS = 100
SUN_PATH_MAX = 107             # sockaddr_un.sun_path, NUL excluded
DEFAULT_BLOCK = "127.42"       # loopback: 127.42.204.0/24 mgmt, .206 cluster-host, .202 pxeboot
NETNS_BLOCK = "198.18"         # --netns: the same layout in 198.18.0.0/15, inside namespaces
NET_OCTET = {"mgmt": 204, "cluster-host": 206, "pxeboot": 202}
NETS = ("mgmt", "cluster-host", "pxeboot")
SCENARIOS = ("none", "pxeboot-loss", "restart", "burst")
REBOOT_KINDS = ("reboot", "reset", "lazy_reboot", "wipedisk")
ENV_TAG = "MTCE_LAB_ID"        # every process the lab starts carries this (the cleanup sweep)
MOVED_OCTET = 251              # pxeboot-loss (loopback): the address the lease moves to

PORT = {k: config.OPTION_INDEX[k].default for k in (
    ("agent", "mtc_agent_port"), ("agent", "mtc_rx_pxeboot_port"),
    ("client", "mtc_rx_mgmnt_port"), ("client", "mtc_rx_clstr_port"),
    ("client", "mtc_rx_pxeboot_port"))}


class LabError(Exception):
    """A failure that ends the lab with one line (exit 1)."""


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP: stop now, clean up."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


# == the generated cluster =====================================================================

@dataclass
class HostPlan:
    """One host: its addresses and the directory that holds everything its daemon reads."""

    name: str
    personality: str            # controller | worker
    mac: str
    mgmt_ip: str
    clstr_ip: str               # "" for the burst host
    pxeboot_ip: str             # "" for the burst host
    root: str
    ns: str = ""                # --netns: its namespace
    client: bool = True         # False: no mtcClient (the burst host)

    @property
    def ini(self) -> str:
        return os.path.join(self.root, "mtc.ini")

    def path(self, *rel: str) -> str:
        return os.path.join(self.root, *rel)

    @property
    def run_dir(self) -> str:
        return self.path("run")

    @property
    def client_log(self) -> str:
        return self.path("log", "mtcClient.log")


class Plan:
    """Every file of an N-host lab under `root`: controller-0 (agent and client) + workers.

    Addresses, per network a /24 of `block`: mgmt .204, cluster-host .206, pxeboot .202;
    .1 the floating mgmt address, .2 controller-0, .3 controller-1 (named in the hosts file
    only), .10+k worker-k, .250 the burst host (mgmt only).
    """

    def __init__(self, root: str, hosts: int = 3, *, netns: bool = False,
                 block: str = DEFAULT_BLOCK, burst: bool = False, ns_prefix: str = ""):
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"hosts must be 1 to {MAX_HOSTS}")
        self.root = os.path.abspath(root)
        if len(os.fsencode(self.agent_socket)) > SUN_PATH_MAX:
            raise LabError(f"{self.agent_socket}: too long for a Unix socket path (the agent's "
                           f"control socket); use a shorter TMPDIR, e.g. TMPDIR=/tmp")
        self.netns = netns
        self.block = NETNS_BLOCK if netns else block
        self.ns_prefix = ns_prefix
        self.net = {n: f"{self.block}.{o}." for n, o in NET_OCTET.items()}
        self.floating = self.net["mgmt"] + "1"
        self.ifaces = ("eth0", "eth1", "eth2") if netns else ("lab0", "lab1", "")
        self.inventory = os.path.join(self.root, "inventory.ini")
        self.requests = os.path.join(self.root, "requests")
        self.alarm_log = os.path.join(self.root, "alarm-hook.log")
        self.hosts: list[HostPlan] = []
        for i in range(hosts):
            name = "controller-0" if i == 0 else f"worker-{i - 1}"
            octet = 2 if i == 0 else 9 + i
            self.hosts.append(self._host(name, "controller" if i == 0 else "worker", i, octet))
        if burst:
            h = self._host("burst-0", "worker", hosts, 250)
            h.clstr_ip = h.pxeboot_ip = ""
            h.client = False
            self.hosts.append(h)

    def _host(self, name: str, personality: str, index: int, octet: int) -> HostPlan:
        short = name.replace("controller-", "c").replace("worker-", "w").replace("burst-", "b")
        return HostPlan(name, personality, f"08:00:27:1a:{index // 256:02x}:{index % 256:02x}",
                        self.net["mgmt"] + str(octet), self.net["cluster-host"] + str(octet),
                        self.net["pxeboot"] + str(octet), os.path.join(self.root, name),
                        ns=f"{self.ns_prefix}{short}" if self.netns else "")

    # -- views ----------------------------------------------------------------------------------
    @property
    def controller(self) -> HostPlan:
        return self.hosts[0]

    @property
    def agent_ini(self) -> str:
        return self.controller.ini

    @property
    def lab_ini(self) -> str:
        """What the lab tells operators to use: a link to controller-0's (the agent's) ini."""
        return os.path.join(self.root, "mtc.ini")

    @property
    def agent_socket(self) -> str:
        return os.path.join(self.root, "agent.sock")

    @property
    def agent_log(self) -> str:
        return self.controller.path("log", "mtcAgent.log")

    def host(self, name: str) -> HostPlan:
        return next(h for h in self.hosts if h.name == name)

    @property
    def clients(self) -> list[HostPlan]:
        return [h for h in self.hosts if h.client]

    @property
    def workers(self) -> list[HostPlan]:
        return [h for h in self.clients if h.personality == "worker"]

    def inis(self) -> list[str]:
        return [h.ini for h in self.hosts if h.client]

    def moved_pxeboot_ip(self) -> str:
        return self.net["pxeboot"] + str(MOVED_OCTET)

    def lease_key(self) -> str:
        return f"{self.ifaces[0]}:2"

    def lease_path(self, host: HostPlan) -> str:
        return host.path("dhcp", f"dhclient.{self.lease_key()}.leases")

    def bind_points(self) -> list[tuple[str, int, str]]:
        """(address, port, who) for every UDP port the daemons bind (loopback lab)."""
        c = self.controller
        out = [(self.floating, PORT["agent", "mtc_agent_port"], "the agent (mgmt)"),
               (c.clstr_ip, PORT["agent", "mtc_agent_port"], "the agent (cluster-host)"),
               (c.pxeboot_ip, PORT["agent", "mtc_rx_pxeboot_port"], "the agent (pxeboot)")]
        for h in self.clients:
            out += [(h.mgmt_ip, PORT["client", "mtc_rx_mgmnt_port"], f"{h.name}'s client"),
                    (h.clstr_ip, PORT["client", "mtc_rx_clstr_port"], f"{h.name}'s client"),
                    (h.pxeboot_ip, PORT["client", "mtc_rx_pxeboot_port"], f"{h.name}'s client")]
        if len(self.workers):
            out.append((self.moved_pxeboot_ip(), PORT["client", "mtc_rx_pxeboot_port"],
                        "the pxeboot-loss scenario"))
        return out

    # -- writing ---------------------------------------------------------------------------------
    def write(self) -> None:
        os.makedirs(self.requests, exist_ok=True)
        for h in self.hosts:
            if h.client:
                self._write_host(h)
        self._write(self.inventory, self._inventory_text())
        self._write(self.controller.path("config", "dnsmasq.hosts"), self._dnsmasq_text())
        if not os.path.lexists(self.lab_ini):
            os.symlink(os.path.relpath(self.agent_ini, self.root), self.lab_ini)

    @staticmethod
    def _write(path: str, text: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    def hosts_text(self) -> str:
        m, c = self.net["mgmt"], self.net["cluster-host"]
        lines = [f"{self.floating} controller", f"{m}2 controller-0", f"{m}3 controller-1",
                 f"{c}2 controller-0-cluster-host", f"{c}3 controller-1-cluster-host"]
        for h in self.hosts[1:]:
            lines.append(f"{h.mgmt_ip} {h.name}")
            if h.clstr_ip:
                lines.append(f"{h.clstr_ip} {h.name}-cluster-host")
        return "\n".join(lines) + "\n"

    def _write_host(self, h: HostPlan) -> None:
        for d in ("platform", "dhcp", "interfaces.d", "run", "persist", "state", "pid", "log",
                  "config"):
            os.makedirs(h.path(d), exist_ok=True)
        mgmt_if, clstr_if = self.ifaces[0], self.ifaces[1]
        self._write(h.path("hostname"), h.name + "\n")
        self._write(h.path("build.info"), 'SW_VERSION="lab"\n')
        self._write(h.path("hosts"), self.hosts_text())
        self._write(h.path("platform", "platform.conf"), "".join(f"{k}={v}\n" for k, v in (
            ("nodetype", h.personality), ("subfunction", h.personality),
            ("system_type", "Standard"), ("system_mode", "duplex"),
            ("management_interface", mgmt_if), ("cluster_host_interface", clstr_if))))
        if not self.netns:
            # The interface facts netlink cannot give for a made-up interface.
            sysnet = h.path("sys", "class", "net", mgmt_if)
            self._write(os.path.join(sysnet, "address"), h.mac + "\n")
            self._write(os.path.join(sysnet, "uevent"), f"INTERFACE={mgmt_if}\n")
        self.write_lease(h, h.pxeboot_ip)
        self._write(h.ini, self._ini_text(h))

    def write_lease(self, h: HostPlan, address: str) -> None:
        key = self.lease_key()
        self._write(self.lease_path(h), f'lease {{\n  interface "{key}";\n'
                                        f"  fixed-address {address};\n}}\n")

    def _ini_text(self, h: HostPlan) -> str:
        c = self.controller
        req = shlex.quote(self.requests)
        paths = {"platform_conf": h.path("platform", "platform.conf"),
                 "platform_dir": h.path("platform"), "hosts_file": h.path("hosts"),
                 "hostname_file": h.path("hostname"), "build_info": h.path("build.info"),
                 "dnsmasq_hosts": h.path("config", "dnsmasq.hosts"),
                 "dhcp_leases_dir": h.path("dhcp"), "ifcfg_dir": h.path("interfaces.d"),
                 "sys_class_net": "/sys/class/net" if self.netns else h.path("sys", "class",
                                                                             "net"),
                 "run_dir": h.run_dir, "persist_dir": h.path("persist"),
                 "state_dir": h.path("state"), "pid_dir": h.path("pid"),
                 "log_dir": h.path("log"), "agent_socket": self.agent_socket}
        out = ["; Generated by `mtce lab` for " + h.name + ": every [paths] key points into",
               "; this directory, and no [actions] command touches this machine.", ""]
        if h is c:
            out += ["[agent]", f"mgmt_ip = {'' if self.netns else self.floating}",
                    f"cluster_host_ip = {'' if self.netns else c.clstr_ip}",
                    f"inventory = {self.inventory}",
                    f"offline_period = {OFFLINE_PERIOD_MS}",
                    f"offline_threshold = {OFFLINE_THRESHOLD}", ""]
        out += ["[client]", f"mtcalive_period = {MTCALIVE_PERIOD_S}"]
        if not self.netns:      # loopback: the addresses as is; netns: read over netlink
            out += [f"mgmt_ip = {h.mgmt_ip}", f"cluster_host_ip = {h.clstr_ip}"]
        out += ["", "[timeouts]", f"online_period = {ONLINE_PERIOD_S}",
                f"pxeboot_mtcalive_window = {PXEBOOT_WINDOW_S}", "", "[paths]"]
        out += [f"{k} = {v}" for k, v in paths.items()]
        out += ["", "[actions]",
                "; reboot, reset, lazy reboot and wipedisk ask the lab to restart this host's",
                "; client (a simulated reboot; nothing is wiped); no failsafe process is started."]
        for kind in REBOOT_KINDS:
            out.append(f"{kind} = echo {kind} > {req}/{h.name}.{kind}")
        out.append("failsafe =")
        if h is c:
            log = shlex.quote(self.alarm_log)
            out.append(f"alarm = cat >> {log}; echo >> {log}")
        return "\n".join(out) + "\n"

    def _inventory_text(self) -> str:
        out = ["; The hosts the lab's agent maintains (generated by mtce lab).", ""]
        for h in self.hosts:
            out += [f"[{h.name}]", f"personality = {h.personality}", f"mgmt_mac = {h.mac}",
                    f"mgmt_ip = {h.mgmt_ip}"]
            if h.clstr_ip:
                out.append(f"cluster_host_ip = {h.clstr_ip}")
            out += ["administrative = unlocked", ""]
        return "\n".join(out)

    def _dnsmasq_text(self) -> str:
        lines = [f"pxecontroller,{self.controller.pxeboot_ip}"]
        for i, h in enumerate(self.hosts):
            if h.pxeboot_ip:
                lines.append(f"{h.mac},pxeboot-{i + 1},{h.pxeboot_ip},1d")
        return "\n".join(lines) + "\n"


# == ports ===================================================================================

def check_ports(plan: Plan) -> None:
    """Bind every address:port the lab's daemons will bind (no SO_REUSEADDR, so a socket
    that another lab or agent holds, even with SO_REUSEADDR, makes this fail)."""
    for addr, port, who in plan.bind_points():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((addr, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise LabError(
                    f"{addr}:{port}/udp (for {who}) is already in use, probably by another "
                    f"mtce lab or agent on {plan.block}.x; stop it, or run this lab on a free "
                    f"block: {_free_block_hint(plan)}") from None
            raise LabError(f"cannot bind {addr}:{port}/udp for {who} ({err.strerror}); this "
                           f"machine's loopback must cover 127.0.0.0/8 (as Linux's does), or "
                           f"use --netns as root") from None
        finally:
            sock.close()


def _free_block_hint(plan: Plan) -> str:
    first, second = plan.block.split(".")[:2]
    for n in list(range(int(second) + 1, 255)) + list(range(10, int(second))):
        probe = Plan(plan.root, len(plan.clients), block=f"{first}.{n}",
                     burst=any(not h.client for h in plan.hosts))
        try:
            check_ports(probe)
        except LabError:
            continue
        typed = " ".join(shlex.quote(a) for a in sys.argv[1:]) if "lab" in sys.argv[1:] \
            else "lab"
        return f"MTCE_LAB_BLOCK={first}.{n} {_cli_hint()} {typed}"
    return "MTCE_LAB_BLOCK=127.<n> (no free block found)"


# == processes ===============================================================================

PR_SET_PDEATHSIG = 1
_LIBC = None
_LAB_PID = 0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PENDING: list[int] = []       # stop signals received (a raise can be swallowed, see below)


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


def check_stop() -> None:
    """Raise Interrupted for a stop signal whose raise was swallowed somewhere."""
    if _PENDING:
        raise Interrupted(_PENDING[0])


def _load_libc() -> None:
    global _LIBC
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


def _program() -> list[str]:
    """The argv prefix that runs this same mtce (source tree, zipapp or /usr/bin/mtce)."""
    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if argv0 and os.path.isfile(argv0) and (
            os.path.basename(argv0) in ("mtce.py", "mtce") or zipfile.is_zipfile(argv0)):
        return [sys.executable, argv0]
    return [sys.executable, "-c", "import sys; sys.path.insert(0, %r); from mtce.cli import "
            "main; sys.exit(main())" % _package_root()]


def _package_root() -> str:
    import mtce
    return os.path.dirname(os.path.dirname(os.path.abspath(mtce.__file__)))


def _cli_hint() -> str:
    """How the person who started the lab runs mtce, for the commands the lab prints."""
    argv0 = sys.argv[0] if sys.argv else "mtce"
    if os.path.basename(argv0) == "mtce" and not argv0.endswith(".py"):
        return "mtce" if shutil.which("mtce") == os.path.abspath(argv0) else argv0
    py = sys.executable
    found = shutil.which("python3")
    if found and os.path.realpath(found) == os.path.realpath(py) and \
            _same_env(found, py):
        py = "python3"
    else:
        rel = os.path.relpath(py)
        py = rel if not rel.startswith("..") and len(rel) < len(py) else py
    if os.path.basename(argv0) == "mtce.py" or zipfile.is_zipfile(argv0 or "/dev/null"):
        return f"{py} {argv0}"
    return "mtce"


def _same_env(a: str, b: str) -> bool:
    # A venv's python is a symlink to the system one but has other packages: compare prefixes.
    return os.path.dirname(os.path.abspath(a)) == os.path.dirname(os.path.abspath(b))


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


# == network namespaces (--netns) ============================================================

def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["ip"] + (["-n", ns] if ns else []) + list(args)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {r.stderr.strip() or 'failed'}")
    return r


def list_namespaces(prefix: str) -> list[str]:
    if not shutil.which("ip"):
        return []
    r = _ip("netns", "list", check=False)
    return [line.split()[0] for line in r.stdout.splitlines()
            if line.split() and line.split()[0].startswith(prefix)]


def delete_namespace(ns: str) -> None:
    r = _ip("netns", "pids", ns, check=False)
    for pid in r.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    _ip("netns", "del", ns, check=False)


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
    _ip("netns", "add", sw)
    for br in ("mgmt", "clstr", "pxe"):
        _ip("link", "add", f"br-{br}", "type", "bridge", ns=sw)
        _ip("link", "set", f"br-{br}", "up", ns=sw)
    for i, h in enumerate(plan.hosts):
        check_stop()
        _ip("netns", "add", h.ns)
        _ip("link", "set", "lo", "up", ns=h.ns)
        links = [("eth0", "mgmt", h.mgmt_ip, h.mac), ("eth1", "clstr", h.clstr_ip, None),
                 ("eth2", "pxe", h.pxeboot_ip, None)]
        for ifname, br, addr, mac in links:
            if not addr:
                continue
            peer = f"p{i}{br[0]}"
            _ip("link", "add", ifname, *(["address", mac] if mac else []), "type", "veth",
                "peer", "name", peer, "netns", sw, ns=h.ns)
            _ip("link", "set", peer, "master", f"br-{br}", "up", ns=sw)
            _ip("link", "set", ifname, "up", ns=h.ns)
            _ip("addr", "add", f"{addr}/24", "dev", ifname, ns=h.ns)
        if h is plan.controller:
            _ip("addr", "add", f"{plan.floating}/24", "dev", "eth0", ns=h.ns)


# == what the agent says =====================================================================

class View:
    """The agent's host table and alarms, as of the last poll, plus what was ever seen."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.hosts: dict[str, dict] = {}
        self.order: list[str] = []
        self.alarms: list[dict] = []
        self.error = "not polled yet"
        self.polled_at = 0.0
        self.expected = [h.name for h in plan.clients]
        self.ok_seen = {n: set() for n in self.expected}
        self.online_seen: set[str] = set()
        self.all_ok_since: float | None = None
        self.first_all_ok: float | None = None

    def poll(self, now: float) -> bool:
        try:
            hosts = ctl.request(self.plan.agent_socket, {"cmd": "hosts"}, timeout=2.0)
            alarms = ctl.request(self.plan.agent_socket, {"cmd": "alarms"}, timeout=2.0)
        except ctl.CtlError as err:
            self.error = str(err)
            self.all_ok_since = None
            return False
        if not hosts.get("ok") or not alarms.get("ok"):
            self.error = hosts.get("error") or alarms.get("error") or "agent refused"
            return False
        self.error = ""
        self.polled_at = now
        self.order = [h["hostname"] for h in hosts["hosts"]]
        self.hosts = {h["hostname"]: h for h in hosts["hosts"]}
        self.alarms = alarms["alarms"]
        for name in self.expected:
            h = self.hosts.get(name)
            if not h:
                continue
            if h.get("availability") == "online":
                self.online_seen.add(name)
            for net in NETS:
                if self.net_state(name, net) == "ok":
                    self.ok_seen[name].add(net)
        if self.all_ok_now():
            if self.all_ok_since is None:
                self.all_ok_since = now
            if self.first_all_ok is None:
                self.first_all_ok = now
        else:
            self.all_ok_since = None
        return True

    def net(self, name: str, net: str) -> dict:
        return ((self.hosts.get(name) or {}).get("networks") or {}).get(net) or {}

    def net_state(self, name: str, net: str) -> str:
        return self.net(name, net).get("state", "?")

    def host_ok(self, name: str) -> bool:
        h = self.hosts.get(name)
        return bool(h) and h.get("availability") == "online" and all(
            self.net_state(name, n) == "ok" for n in NETS)

    def all_ok_now(self) -> bool:
        return all(self.host_ok(n) for n in self.expected)

    def steady_for(self, now: float) -> float:
        return 0.0 if self.all_ok_since is None else now - self.all_ok_since

    def alarm_for(self, name: str) -> dict | None:
        return next((a for a in self.alarms if a.get("host") == name), None)

    def missing(self) -> list[str]:
        """What never came up: 'worker-1 never online', 'worker-0 never ok on pxeboot'."""
        out = []
        for name in self.expected:
            if name not in self.online_seen:
                out.append(f"{name} never online")
                continue
            lacking = [n for n in NETS if n not in self.ok_seen[name]]
            if lacking:
                out.append(f"{name} never ok on {', '.join(lacking)}")
        return out


class LogTail:
    """New lines of a log file since the last read (daemon logs the lab shows or checks)."""

    def __init__(self, path: str, from_end: bool = False):
        self.path = path
        self.offset = 0
        self.partial = b""
        if from_end:
            try:
                self.offset = os.path.getsize(path)
            except OSError:
                pass

    def read(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(1 << 20)
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        return [line.decode("utf-8", "replace") for line in lines]


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT(\d\d:\d\d:\d\d)\.\d+ \[[^\]]*\] \S+ \S+ \S+ "
                       r"\S+:\s+(Info|Warn|Error|Fatal|Debug)\s*: (.*)$")


def parse_log_line(line: str) -> tuple[str, str, str] | None:
    """(HH:MM:SS, level, text) of a daemon log line, None for anything else."""
    m = _LOG_LINE.match(line)
    return (m.group(1), m.group(2), m.group(3)) if m else None


# == scenarios ===============================================================================

class Scenario:
    """A fault played out once every host is steady; `done` or `failed` says how it ended."""

    name = "none"
    needs_workers = 0
    about_s = 0.0             # how long it takes once every host is steady

    def __init__(self, lab: "Lab"):
        self.lab = lab
        self.state = "waiting"
        self.done = False
        self.failed = ""
        self.summary = ""
        self.started_at: float | None = None

    def status(self) -> str:
        return ""

    def step(self, now: float, view: View) -> None:
        if view.first_all_ok is not None:
            self.done = True

    def finish(self, summary: str) -> None:
        self.done, self.summary, self.state = True, summary, "done"
        self.lab.event(f"scenario {self.name}: done: {summary}")

    def fail(self, why: str) -> None:
        self.failed, self.state = why, "failed"
        self.lab.event(f"scenario {self.name}: FAILED: {why}")

    def stop(self) -> None:
        """Undo the fault (the lab is stopping)."""


class PxebootLoss(Scenario):
    """One worker's pxeboot mtcAlive stop reaching the agent until 200.003 is raised; then
    they flow again until it clears. Only pxeboot is touched: mgmt and cluster-host stay ok.

    --netns: the worker's pxeboot link (eth2) goes down, and up again: a real link loss.
    Loopback: there is no link to take down (and no way to drop packets without root), so
    the worker's DHCP lease moves to an address that dnsmasq.hosts does not list, as after a
    bad re-lease. The client re-learns its pxeboot address on its socket-recovery path
    (`client.Client.tick`: a re-created pxeboot socket triggers learning), which the
    fault-insertion file `fit/pxeboot_txsock` sets off for one tick; from then on its
    pxeboot sockets are bound to the new address: its mtcAlive leave from an address the
    agent cannot attribute to the host (dropped as unknown), and the agent's pxeboot
    requests go to the old address where nothing listens. Restoring the lease (and one
    more socket recovery) makes it re-learn the listed address, and the mtcAlive count again.
    """

    name = "pxeboot-loss"
    needs_workers = 1
    about_s = PXEBOOT_ALARM_S + PXEBOOT_CLEAR_S + 5

    def __init__(self, lab: "Lab"):
        super().__init__(lab)
        self.target = lab.plan.workers[0] if lab.plan.workers else None
        self.down_at = self.alarm_at = self.up_at = None
        self.relearn: str | None = None      # the address the client must log, then no fit
        self.fit_since = 0.0
        self.tail: LogTail | None = None
        self.collateral: list[str] = []

    def status(self) -> str:
        t = self.target.name if self.target else "?"
        now = time.monotonic()
        if self.state == "waiting":
            return f"pxeboot-loss: {t} loses pxeboot once every host is ok for {STEADY_S:g} s"
        if self.state == "down":
            return (f"pxeboot-loss: {t} pxeboot down for {now - self.down_at:.0f} s ; the alarm "
                    f"comes after ~{PXEBOOT_ALARM_S:g} s")
        if self.state == "recovering":
            return (f"pxeboot-loss: {t} pxeboot back for {now - self.up_at:.0f} s ; the alarm "
                    f"clears after ~{PXEBOOT_CLEAR_S:g} s")
        return f"pxeboot-loss: {self.state}" + (f": {self.summary}" if self.summary else "")

    def _fit(self, on: bool) -> None:
        fit = os.path.join(self.target.run_dir, "fit", "pxeboot_txsock")
        if on:
            os.makedirs(os.path.dirname(fit), exist_ok=True)
            with open(fit, "w"):
                pass
        elif os.path.exists(fit):
            os.unlink(fit)

    def _move_lease(self, address: str, why: str) -> None:
        self.lab.plan.write_lease(self.target, address)
        self.tail = LogTail(self.target.client_log, from_end=True)
        self.relearn, self.fit_since = address, time.monotonic()
        self._fit(True)
        self.lab.event(f"{self.target.name}: DHCP lease now gives pxeboot {address} {why}")

    def _watch_relearn(self, now: float) -> None:
        """The client logs `Pxeboot IP: <address>` when it re-learned it: from then on its
        pxeboot sockets use that address (the loss or the recovery starts), and the fault
        file goes (it served only to set off one socket recovery)."""
        if not self.relearn or not self.tail:
            return
        if any(f"Pxeboot IP: {self.relearn}" in line for line in self.tail.read()):
            self.lab.event(f"{self.target.name}: client re-learned its pxeboot address "
                           f"{self.relearn} ; its pxeboot sockets use it now")
            if self.state == "down":
                self.down_at = now
            elif self.state == "recovering":
                self.up_at = now
        elif now - self.fit_since < 5 * MTCALIVE_PERIOD_S:
            return
        else:
            self.lab.event(f"{self.target.name}: client did not log re-learning "
                           f"{self.relearn} ; fault file removed anyway")
        self._fit(False)
        self.relearn = None

    def _down(self) -> None:
        t = self.target
        if self.lab.plan.netns:
            _ip("link", "set", "eth2", "down", ns=t.ns)
            self.lab.event(f"{t.name}: pxeboot link eth2 set down (ip -n {t.ns} link set eth2 "
                           f"down)")
        else:
            self._move_lease(self.lab.plan.moved_pxeboot_ip(), "(not in dnsmasq.hosts)")

    def _up(self) -> None:
        t = self.target
        if self.lab.plan.netns:
            _ip("link", "set", "eth2", "up", ns=t.ns)
            self.lab.event(f"{t.name}: pxeboot link eth2 set up")
        else:
            self._move_lease(t.pxeboot_ip, "again (the one in dnsmasq.hosts)")

    def step(self, now: float, view: View) -> None:
        t = self.target
        if self.state == "waiting":
            if view.steady_for(now) >= STEADY_S:
                self.started_at = self.down_at = now
                self._down()
                self.state = "down"
            return
        self._watch_relearn(now)
        if self.state == "down":
            h = view.hosts.get(t.name) or {}
            for net in ("mgmt", "cluster-host"):
                if view.net_state(t.name, net) != "ok" and net not in self.collateral:
                    self.collateral.append(net)
            if h and h.get("availability") != "online" and "availability" not in \
                    self.collateral:
                self.collateral.append("availability")
            if view.alarm_for(t.name):
                self.alarm_at = now
                self.lab.event(f"{t.name}: alarm 200.003 raised {now - self.down_at:.1f} s "
                               f"after its pxeboot loss")
                self.up_at = now
                self._up()
                self.state = "recovering"
            elif now - self.down_at > PXEBOOT_ALARM_S + 20:
                self.fail(f"no 200.003 alarm for {t.name} within "
                          f"{now - self.down_at:.0f} s of its pxeboot loss")
            return
        if self.state == "recovering":
            if not view.alarm_for(t.name) and view.net_state(t.name, "pxeboot") == "ok":
                if self.collateral:
                    self.fail(f"{t.name} {', '.join(self.collateral)} not ok during the "
                              f"pxeboot loss")
                    return
                self.finish(f"{t.name} pxeboot loss: alarm after "
                            f"{self.alarm_at - self.down_at:.1f} s, clear "
                            f"{now - self.up_at:.1f} s after recovery ; mgmt, cluster-host ok")
            elif now - self.up_at > PXEBOOT_CLEAR_S + 20:
                self.fail(f"200.003 for {t.name} not cleared {now - self.up_at:.0f} s after "
                          f"its pxeboot recovered")

    def stop(self) -> None:
        if self.state in ("down", "recovering") and self.target and not self.lab.plan.netns:
            self._fit(False)


class Restart(Scenario):
    """A client is killed (SIGKILL, like a crash) and started again: within 10 s the agent
    must see that host's pxeboot mtcAlive again, numbered from 1 (it re-learned its own
    pxeboot address from its lease and the controller's from the agent's request)."""

    name = "restart"
    about_s = 5.0

    def __init__(self, lab: "Lab"):
        super().__init__(lab)
        workers = lab.plan.workers
        self.target = workers[-1] if workers else lab.plan.controller
        self.restart_at = None
        self.seq_before = self.count_before = 0
        self.tail: LogTail | None = None

    def status(self) -> str:
        t = self.target.name
        if self.state == "waiting":
            return f"restart: {t}'s client is killed once every host is ok for {STEADY_S:g} s"
        if self.state == "restarted":
            return (f"restart: {t}'s client restarted {time.monotonic() - self.restart_at:.1f} "
                    f"s ago ; waiting for its pxeboot mtcAlive")
        return f"restart: {self.state}" + (f": {self.summary}" if self.summary else "")

    def step(self, now: float, view: View) -> None:
        t = self.target
        if self.state == "waiting":
            if view.steady_for(now) < STEADY_S:
                return
            self.started_at = now
            proc = self.lab.clients[t.name]
            proc.expected_exit = True
            proc.signal(signal.SIGKILL)
            try:
                proc.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
            view.poll(time.monotonic())        # the counters after the last old mtcAlive
            pxe = view.net(t.name, "pxeboot")
            self.seq_before, self.count_before = pxe.get("last_seq", 0), pxe.get("received", 0)
            self.tail = LogTail(t.client_log, from_end=True)
            self.lab.event(f"{t.name}: client killed (SIGKILL) at pxeboot seq "
                           f"{self.seq_before} ; starting it again")
            self.lab.start_client(t)
            self.restart_at = time.monotonic()
            self.state = "restarted"
            return
        if self.state == "restarted":
            pxe = view.net(t.name, "pxeboot")
            if (view.polled_at > self.restart_at and pxe.get("state") == "ok"
                    and pxe.get("received", 0) > self.count_before
                    and pxe.get("last_seq", 0) < self.seq_before):
                took = now - self.restart_at
                learned = [line for line in (self.tail.read() if self.tail else [])
                           if "Pxeboot IP: " in line]
                addr = learned[-1].split("Pxeboot IP: ")[-1] if learned else "?"
                if took > RESTART_DEADLINE_S:
                    self.fail(f"{t.name} pxeboot ok again only after {took:.1f} s")
                elif addr != t.pxeboot_ip:
                    self.fail(f"{t.name}'s restarted client did not log re-learning "
                              f"{t.pxeboot_ip} (saw {addr})")
                else:
                    self.finish(f"{t.name} pxeboot ok again {took:.1f} s after the restart, "
                                f"seq {pxe.get('last_seq')} (was {self.seq_before}), "
                                f"pxeboot address {addr} re-learned")
            elif now - self.restart_at > RESTART_DEADLINE_S:
                self.fail(f"{t.name} pxeboot not ok again within {RESTART_DEADLINE_S:g} s of "
                          f"the restart (state {pxe.get('state')}, seq {pxe.get('last_seq')}, "
                          f"was {self.seq_before})")


class Burst(Scenario):
    """A stress sender speaks for `burst-0` (in the inventory, no client): BURST_COUNT
    mtcAlive at BURST_RATE a second on mgmt. The agent's counters for burst-0 must account
    for every one (last_seq = count, missed 0, out-of-sequence 0) and its log must stay
    short (no line per message)."""

    name = "burst"
    about_s = BURST_COUNT / BURST_RATE + 5

    def __init__(self, lab: "Lab"):
        super().__init__(lab)
        self.host = next(h for h in lab.plan.hosts if not h.client)
        self.proc: Proc | None = None
        self.result: dict = {}
        self.log_lines_before = 0
        self.check_at = None

    def status(self) -> str:
        if self.state == "waiting":
            return (f"burst: {BURST_COUNT} mtcAlive at {BURST_RATE:g}/s for burst-0 once every "
                    f"host is ok for {STEADY_S:g} s")
        if self.state == "sending":
            return f"burst: sending {BURST_COUNT} mtcAlive at {BURST_RATE:g}/s as burst-0"
        return f"burst: {self.state}" + (f": {self.summary}" if self.summary else "")

    def step(self, now: float, view: View) -> None:
        if self.state == "waiting":
            if view.steady_for(now) < STEADY_S:
                return
            self.started_at = now
            self.log_lines_before = _count_lines(self.lab.plan.agent_log)
            self.proc = self.lab.start_loadgen(self.host)
            self.lab.event(f"burst-0: sending {BURST_COUNT} mtcAlive at {BURST_RATE:g}/s from "
                           f"{self.host.mgmt_ip} to the agent")
            self.state = "sending"
            return
        if self.state == "sending":
            rc = self.proc.returncode()
            if rc is None:
                return
            self.proc.expected_exit = True
            out = _last_json_line(self.proc.log_path)
            if rc != 0 or "sent" not in out:
                self.fail(f"the sender failed (status {rc}): {out.get('error') or out}")
                return
            self.result = out
            self.lab.event(f"burst-0: sent {out['sent']} in {out['seconds']:.2f} s "
                           f"({out['rate']:.0f}/s)")
            self.check_at = now
            self.state = "checking"
            view.poll(time.monotonic())
        if self.state == "checking":
            mgmt = view.net(self.host.name, "mgmt")
            sent = self.result["sent"]
            if mgmt.get("last_seq") == self.result["last_seq"] and \
                    mgmt.get("received", 0) >= sent:
                added = _count_lines(self.lab.plan.agent_log) - self.log_lines_before
                problems = []
                if mgmt.get("missed") or mgmt.get("out_of_sequence"):
                    problems.append(f"missed {mgmt.get('missed')}, out-of-sequence "
                                    f"{mgmt.get('out_of_sequence')}")
                if mgmt.get("received") != sent:
                    problems.append(f"agent counted {mgmt.get('received')} of {sent}")
                if self.result["rate"] < BURST_MIN_RATE:
                    problems.append(f"the sender reached only {self.result['rate']:.0f}/s "
                                    f"(< {BURST_MIN_RATE:g}/s)")
                if added > BURST_LOG_BUDGET:
                    problems.append(f"the agent logged {added} lines during the burst")
                if problems:
                    self.fail("; ".join(problems))
                else:
                    self.finish(f"{sent} mtcAlive at {self.result['rate']:.0f}/s all processed "
                                f"(burst-0 mgmt last_seq {mgmt.get('last_seq')}, received "
                                f"{mgmt.get('received')}, missed 0, out-of-sequence 0) ; "
                                f"{added} agent log lines")
            elif now - self.check_at > 5.0:
                self.fail(f"the agent counted burst-0 mgmt last_seq {mgmt.get('last_seq')}, "
                          f"received {mgmt.get('received')} of {sent} sent")

    def stop(self) -> None:
        if self.proc:
            stop_all([self.proc], 1.0)


SCENARIO_CLASSES = {c.name: c for c in (Scenario, PxebootLoss, Restart, Burst)}


def _count_lines(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 16), b""))
    except OSError:
        return 0


def _last_json_line(path: str) -> dict:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line for line in f.read().splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}


# == display =================================================================================

_COLOURS = [(re.compile(r"(?<![\w-])(lost|offline|FAILED)(?![\w-])"), "\x1b[31m"),
            (re.compile(r"(?<![\w-])(locked)(?![\w-])"), "\x1b[33m"),
            (re.compile(r"(?<![\w-])(ok|online)(?![\w-])"), "\x1b[32m")]


def _colour(line: str) -> str:
    for pattern, code in _COLOURS:
        line = pattern.sub(lambda m, code=code: f"{code}{m.group(1)}\x1b[0m", line)
    return line


class Screen:
    """The live block on a terminal: redrawn in place (cursor up, rewrite each line, clear to
    its end) in one write, so nothing flickers; lines fit the terminal's width and height."""

    def __init__(self, out):
        self.out = out
        self.drawn = 0

    def draw(self, lines: list[str]) -> None:
        size = shutil.get_terminal_size((120, 40))
        lines = lines[:max(3, size.lines - 1)]
        buf = [f"\x1b[{self.drawn}A\r" if self.drawn else "\r"]
        for line in lines:
            buf.append(_colour(line[:max(10, size.columns - 1)]) + "\x1b[K\n")
        buf.append("\x1b[J")
        self.out.write("".join(buf))
        self.out.flush()
        self.drawn = len(lines)

    def hide_cursor(self) -> None:
        self.out.write("\x1b[?25l")
        self.out.flush()

    def restore(self) -> None:
        self.out.write("\x1b[0m\x1b[?25h")
        self.out.flush()


# == the lab =================================================================================

class Lab:
    def __init__(self, args, out=None):
        self.args = args
        self.out = out or sys.stdout
        self.tty = self.out.isatty() and os.environ.get("TERM", "") not in ("", "dumb")
        self.hosts = args.hosts
        self.duration = args.duration
        self.netns = args.netns
        self.block = getattr(args, "block", None) or os.environ.get("MTCE_LAB_BLOCK") or \
            DEFAULT_BLOCK
        self.scenario_name = args.scenario
        self.t0 = time.monotonic()
        self.root: str | None = None
        self.tag = ""
        self.plan: Plan | None = None
        self.agent: Proc | None = None
        self.clients: dict[str, Proc] = {}
        self.extra: list[Proc] = []
        self.reboots: dict[str, tuple[float, str]] = {}   # host -> (restart at, kind)
        self.recent: collections.deque = collections.deque(maxlen=60)
        self.crashed: list[str] = []
        self.crash_logs: list[str] = []
        self.view: View | None = None
        self.scenario: Scenario | None = None
        self.screen = Screen(self.out) if self.tty else None
        self.agent_tail: LogTail | None = None
        self.program = _program()
        self._last_seen_states: dict = {}
        self._came_up: set = set()
        self._alarms_seen: dict = {}
        self._guardian: tuple[int, int] | None = None
        self.hint = ""
        self.out_broken = False

    # -- output ----------------------------------------------------------------------------------
    def elapsed(self, now: float | None = None) -> float:
        return (now or time.monotonic()) - self.t0

    def say(self, text: str = "") -> None:
        if self.out_broken:
            return
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except BrokenPipeError:
            # `mtce lab | head`: the reader is gone; stop as for Ctrl-C.
            self.out_broken = True
            raise Interrupted(signal.SIGPIPE) from None

    def event(self, text: str) -> None:
        t = self.elapsed()
        self.recent.append(f"{time.strftime('%H:%M:%S')} lab    {text}")
        if not self.tty:
            self.say(f"{t:7.1f}s  {text}")

    # -- start-up --------------------------------------------------------------------------------
    def validate(self) -> str | None:
        """A usage problem (exit 2), or None."""
        if not 1 <= self.hosts <= MAX_HOSTS:
            return f"--hosts must be between 1 and {MAX_HOSTS} (controller-0 included)"
        if self.duration is not None and self.duration <= 0:
            return "--duration must be more than 0 seconds"
        cls = SCENARIO_CLASSES.get(self.scenario_name)
        if cls is None:
            return f"unknown scenario {self.scenario_name!r} (one of {', '.join(SCENARIOS)})"
        if cls.needs_workers and self.hosts - 1 < cls.needs_workers:
            return f"--scenario {self.scenario_name} needs a worker: use --hosts 2 or more"
        if self.netns:
            return netns_problem()
        if not re.fullmatch(r"127\.\d{1,3}", self.block) or int(self.block.split(".")[1]) > 255:
            return f"MTCE_LAB_BLOCK={self.block}: expected 127.<0-255>"
        return None

    def setup(self) -> None:
        global _LAB_PID
        _LAB_PID = os.getpid()
        _load_libc()
        burst = self.scenario_name == "burst"
        if not self.netns:     # the addresses only: nothing is written before the check
            check_ports(Plan(tempfile.gettempdir(), self.hosts, block=self.block, burst=burst))
        # Signals wait until the directory and its guardian both exist (then they clean up).
        with signals_held():
            self.root = tempfile.mkdtemp(prefix="mtce-lab-")
            self.tag = os.path.basename(self.root)
            # PR_SET_PDEATHSIG covers the children; the guardian files and namespaces.
            self._guardian = start_guardian(self.tag, self.root,
                                            self.tag + "-" if self.netns else None)
        ns_prefix = self.tag + "-" if self.netns else ""
        self.plan = Plan(self.root, self.hosts, netns=self.netns, block=self.block,
                         burst=burst, ns_prefix=ns_prefix)
        self.plan.write()
        if self.netns:
            build_topology(self.plan)
            check_stop()
        self.view = View(self.plan)
        self.scenario = SCENARIO_CLASSES[self.scenario_name](self)
        self.header()
        self.start_agent()
        for h in self.plan.clients:
            check_stop()
            self.start_client(h)
        self.event(f"started the agent and {len(self.plan.clients)} clients")

    def _env(self) -> dict:
        env = dict(os.environ)
        env[ENV_TAG] = self.tag
        env.pop("NOTIFY_SOCKET", None)
        return env

    def _prefix(self, h: HostPlan) -> list[str]:
        return ["ip", "netns", "exec", h.ns] if self.netns else []

    def start_agent(self) -> None:
        c = self.plan.controller
        # Registered before it starts, so that a stop signal at any moment finds it.
        self.agent = Proc("agent", self._prefix(c) + self.program +
                          ["agent", "-c", c.ini, "-f"], self.plan.agent_log, self._env())
        self.agent.start()
        self.agent_tail = LogTail(self.plan.agent_log)
        deadline = time.monotonic() + AGENT_START_S
        while True:
            check_stop()
            if self.view.poll(time.monotonic()):
                return
            if not self.agent.running():
                raise LabError(f"the agent exited with status {self.agent.returncode()} at "
                               f"start:\n{self.agent.tail(12)}")
            if time.monotonic() > deadline:
                raise LabError(f"the agent did not answer on {self.plan.agent_socket} within "
                               f"{AGENT_START_S:g} s: {self.view.error}\n{self.agent.tail(12)}")
            time.sleep(0.05)

    def start_client(self, h: HostPlan) -> Proc:
        proc = Proc(h.name, self._prefix(h) + self.program + ["client", "-c", h.ini, "-f"],
                    h.client_log, self._env())
        self.clients[h.name] = proc
        return proc.start()

    def start_loadgen(self, h: HostPlan) -> Proc:
        code = ("import sys; sys.path.insert(0, %r); from mtce import loadgen; "
                "sys.exit(loadgen.main(sys.argv[1:]))" % _package_root())
        argv = self._prefix(h) + [sys.executable, "-c", code, "--src", h.mgmt_ip,
                                  "--dst", self.plan.floating,
                                  "--port", str(PORT["agent", "mtc_agent_port"]),
                                  "--host", h.name, "--mac", h.mac,
                                  "--count", str(BURST_COUNT), "--rate", str(BURST_RATE),
                                  "--lab", self.root]
        proc = Proc("loadgen", argv, os.path.join(self.root, "loadgen.out"), self._env())
        self.extra.append(proc)
        return proc.start()

    def header(self) -> None:
        p = self.plan
        cli = _cli_hint()
        where = (f"in network namespaces {p.ns_prefix}* (veth links, a bridge per network)"
                 if self.netns else "on loopback")
        n = len(p.clients)
        self.say(f"mtce lab: {n} host{'s' if n > 1 else ''} {where} ; controller-0 runs the "
                 f"agent and a client")
        self.say(f"  networks: mgmt {p.net['mgmt']}0/24, cluster-host "
                 f"{p.net['cluster-host']}0/24, pxeboot {p.net['pxeboot']}0/24")
        self.say(f"  timers: mtcAlive every {MTCALIVE_PERIOD_S} s, online_period "
                 f"{ONLINE_PERIOD_S} s, pxeboot window {PXEBOOT_WINDOW_S} s: a pxeboot loss is "
                 f"alarmed")
        self.say(f"          after {PXEBOOT_ALARM_S} s and cleared ~{PXEBOOT_CLEAR_S} s after it "
                 f"ends ; a silent host is offline after ~{OFFLINE_AFTER_S:g} s")
        if self.scenario_name != "none":
            self.say(f"  scenario: {self.scenario.status()}")
        self.say(f"  files: {p.root} (removed on exit) ; daemon logs in */log/")
        self.hint = f"{cli} -c {p.lab_ini} hosts"
        self.say(f"  second terminal: {self.hint}")
        self.say("    (or alarms, lock HOST, unlock HOST, reboot HOST, reset HOST, alive HOST ; "
                 "reboot and reset restart that host's client)")
        self.say("  " + (f"runs {self.duration:g} s" if self.duration else
                         "Ctrl-C stops the lab and removes everything"))
        self.say()

    # -- running ---------------------------------------------------------------------------------
    def run(self) -> None:
        end = None if self.duration is None else self.t0 + self.duration
        next_poll = next_draw = 0.0
        while True:
            check_stop()
            now = time.monotonic()
            if end is not None and now >= end:
                break
            self.check_processes(now)
            self.check_requests(now)
            polled = False
            if now >= next_poll:
                next_poll = now + POLL_S
                polled = self.view.poll(now)
                if polled:
                    self.note_changes(now)
                if not self.scenario.done and not self.scenario.failed:
                    self.scenario.step(now, self.view)
            self.read_agent_log()
            # Once a second, and at once when the first full table is there.
            if self.tty and (now >= next_draw or (polled and self.view.first_all_ok == now)):
                next_draw = now + REFRESH_S
                self.screen.draw(self.frame(now))
            time.sleep(TICK_S)

    def check_processes(self, now: float) -> None:
        procs = [("agent", self.agent)] + list(self.clients.items())
        for name, proc in procs:
            if proc is None or proc.running() or proc.expected_exit:
                continue
            proc.expected_exit = True
            what = "the agent" if proc is self.agent else f"{name}'s client"
            self.crashed.append(f"{what} exited with status {proc.returncode()}")
            tail = proc.tail(10)
            self.crash_logs.append(f"-- the last lines {what} logged:\n{tail}")
            last = parse_log_line(tail.splitlines()[-1]) if tail else None
            self.event(f"{what} exited unexpectedly (status {proc.returncode()})"
                       + (f" ; its last log line: {last[2]}" if last else ""))

    def check_requests(self, now: float) -> None:
        """[actions] reboot/reset/lazy_reboot of a host write `requests/<host>.<kind>`: the lab
        stops that client, clears what a reboot clears, and starts it again later."""
        try:
            names = sorted(os.listdir(self.plan.requests))
        except OSError:
            names = []
        for fname in names:
            os.unlink(os.path.join(self.plan.requests, fname))
            host, _, kind = fname.partition(".")
            proc = self.clients.get(host)
            if proc is None or host in self.reboots or kind not in REBOOT_KINDS:
                continue
            proc.expected_exit = True
            # A reset is a power cut; a reboot stops the services first.
            proc.signal(signal.SIGKILL if kind == "reset" else signal.SIGTERM)
            try:
                proc.popen.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.signal(signal.SIGKILL)
                proc.popen.wait(2)
            self._clear_volatile(self.plan.host(host))
            self.reboots[host] = (now + REBOOT_DOWN_S, kind)
            self.event(f"{host}: [actions] {kind} ran: client stopped ; simulated {kind}, "
                       f"back in {REBOOT_DOWN_S:g} s")
        for host, (at, kind) in list(self.reboots.items()):
            if now >= at:
                del self.reboots[host]
                self.start_client(self.plan.host(host))
                self.event(f"{host}: client started again after the simulated {kind}")

    @staticmethod
    def _clear_volatile(h: HostPlan) -> None:
        """A reboot empties /var/run (.node_reset, .node_locked, fit/): without this the new
        client would find .node_reset and 'reboot' again. persist_dir survives."""
        for entry in os.listdir(h.run_dir):
            path = os.path.join(h.run_dir, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def read_agent_log(self) -> None:
        for line in self.agent_tail.read():
            parsed = parse_log_line(line)
            if parsed:
                if parsed[1] != "Debug":
                    self.recent.append(f"{parsed[0]} agent  {parsed[2]}")
            elif line.strip():         # a traceback, a message before logging was set up
                self.recent.append(f"{'':8} agent  {line.strip()}")

    def note_changes(self, now: float) -> None:
        """One event per change of availability, admin, network state, pxeboot loss, alarm.

        Until a host is first ok on every network only that moment is told, not each step
        of its start-up."""
        v = self.view
        for name in v.order:
            h = v.hosts[name]
            state = {"availability": h.get("availability"), "admin": h.get("administrative")}
            for net in NETS:
                state[net] = v.net_state(name, net)
            mon = h.get("pxeboot_monitor") or {}
            state["loss"] = mon.get("loss", 0)
            old = self._last_seen_states.get(name)
            self._last_seen_states[name] = state
            if name not in self._came_up:
                if v.host_ok(name):
                    self._came_up.add(name)
                    self.event(f"{name} online ; ok on mgmt, cluster-host and pxeboot")
                elif name not in v.expected and old is not None and \
                        old.get("availability") != state["availability"]:
                    self.event(f"{name} {state['availability']}")
                continue
            for key, value in state.items():
                if old is None or old.get(key) == value:
                    continue
                if key == "loss":
                    if value:
                        self.event(f"{name} pxeboot monitor: loss {value} of "
                                   f"{PXEBOOT_LOSS_THRESHOLD}")
                elif key in NETS:
                    self.event(f"{name} {key} {old.get(key)} -> {value}")
                else:
                    self.event(f"{name} {value}")
        if v.first_all_ok == now:
            who = f"all {len(v.expected)} hosts" if len(v.expected) > 1 else "the host"
            self.event(f"{who} online on every network {self.elapsed(now):.1f} s after start")
            if not self.tty:
                self.say(ctl.format_hosts([v.hosts[n] for n in v.order]))
        alarms = {(a.get("id"), a.get("host")): a for a in v.alarms}
        for key, a in alarms.items():
            if key not in self._alarms_seen:
                self.event(f"alarm raised: {a.get('id')} {a.get('severity')} {a.get('host')}: "
                           f"{a.get('reason')}")
        for key, a in self._alarms_seen.items():
            if key not in alarms:
                self.event(f"alarm cleared: {a.get('id')} {a.get('host')}")
        self._alarms_seen = alarms

    def frame(self, now: float) -> list[str]:
        v = self.view
        left = f" ; {max(0.0, self.t0 + self.duration - now):.0f} s left" if self.duration \
            else " ; Ctrl-C to stop"
        lines = [f"mtce lab  {time.strftime('%H:%M:%S')}  up {self.elapsed(now):.0f} s{left}"]
        if self.scenario_name != "none":
            lines.append("scenario " + self.scenario.status())
        lines.append("")
        if v.error:
            lines.append(f"agent: {v.error}")
        hosts = [v.hosts[n] for n in v.order]
        height = shutil.get_terminal_size((120, 40)).lines - 1
        room = max(3, height - len(lines) - 12)
        more = 0
        if len(hosts) > room:
            # Hosts that are not ok first; the rest is counted (mtce hosts lists them all).
            hosts = sorted(hosts, key=lambda h: v.host_ok(h["hostname"]))
            more, hosts = len(hosts) - (room - 1), hosts[:room - 1]
        table = ctl.format_hosts(hosts)
        width = shutil.get_terminal_size((120, 40)).columns
        if max(len(line) for line in table.splitlines()) >= width:
            table = ctl.format_hosts(hosts, compact=True) + \
                "\n(per network: state last_seq/missed age)"
        lines += table.splitlines()
        if more:
            lines.append(f"... and {more} more hosts (mtce hosts lists them all)")
        for name in v.order:
            if name in self.reboots:
                lines.append(f"  ({name} is rebooting: its client starts again in "
                             f"{self.reboots[name][0] - now:.0f} s)")
        lines.append("")
        if v.alarms:
            lines += ["alarms:"] + ["  " + a for a in ctl.format_alarms(v.alarms).splitlines()]
        else:
            lines.append("alarms: none")
        monitors = []
        for name in v.order:
            mon = v.hosts[name].get("pxeboot_monitor") or {}
            if mon.get("miss") or mon.get("loss"):
                monitors.append(f"{name} miss {mon.get('miss')} of {PXEBOOT_MISS_THRESHOLD}, "
                                f"loss {mon.get('loss')} of {PXEBOOT_LOSS_THRESHOLD}")
        if monitors:
            lines.append("pxeboot monitor: " + " ; ".join(monitors))
        lines += ["", "recent (lab events and the agent's log):"]
        height = shutil.get_terminal_size((120, 40)).lines - 1
        room = max(3, min(RECENT_LINES, height - len(lines) - 3))
        lines += ["  " + r for r in list(self.recent)[-room:]]
        lines += ["", f"second terminal: {self.hint}",
                  "  (or alarms, lock HOST, unlock HOST, reboot HOST, reset HOST, alive HOST)"]
        return lines

    # -- the end ---------------------------------------------------------------------------------
    def verdict(self) -> tuple[bool, str]:
        v = self.view
        problems = v.missing() + self.crashed
        s = self.scenario
        if s.failed:
            problems.append(f"scenario {s.name}: {s.failed}")
        elif not s.done and s.name != "none":
            need = 5 + STEADY_S + s.about_s + 10       # start-up, steady, scenario, margin
            problems.append(f"scenario {s.name} did not reach its end ({s.status()}) ; it "
                            f"needs about --duration {need:.0f}")
        if problems:
            return False, "FAILED: " + " ; ".join(problems)
        n = len(v.expected)
        when = (f"{v.first_all_ok - self.t0:.1f} s after start" if v.first_all_ok is not None
                else "(never all at the same time)")
        text = (f"ok: {n} host{'s' if n > 1 else ''} online on every network (mgmt, "
                f"cluster-host, pxeboot) {when}")
        if s.name != "none":
            text += f" ; scenario {s.name}: {s.summary}"
        return True, text

    def cleanup(self) -> None:
        _ignore_signals()
        if self.scenario is not None:
            try:
                self.scenario.stop()
            except (OSError, LabError):
                pass
        procs = list(self.extra) + list(self.clients.values()) + \
            ([self.agent] if self.agent else [])
        stop_all([p for p in procs if p is not None])
        if self.tag:
            sweep(self.tag, self.root, self.tag + "-" if self.netns else None)
        if self._guardian:
            w, pid = self._guardian
            try:
                os.write(w, b"d")
                os.close(w)
            except OSError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _on_signal(signum, frame):
    _PENDING.append(signum)
    raise Interrupted(signum)


def _ignore_signals() -> None:
    """From here on (clean-up) a second Ctrl-C must not cut the clean-up short."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def main(args) -> int:
    """`mtce lab`: exit 0 (Ctrl-C, or --duration and everything came up), 1 (it did not,
    or a runtime failure), 2 (usage)."""
    lab = Lab(args)
    problem = lab.validate()
    if problem:
        print(f"mtce lab: {problem}", file=sys.stderr)
        return 2
    _PENDING.clear()
    old = {s: signal.signal(s, _on_signal) for s in STOP_SIGNALS}
    interrupted = None
    failure = ""
    ok, text = False, ""
    try:
        try:
            if lab.screen:
                lab.screen.hide_cursor()
            lab.setup()
            lab.run()
            ok, text = lab.verdict()
        except Interrupted as sig:
            interrupted = sig.signum
        except KeyboardInterrupt:
            interrupted = signal.SIGINT
        except LabError as err:
            failure = str(err)
        finally:
            _ignore_signals()
            if lab.screen:
                if lab.view is not None and lab.plan is not None and interrupted is None:
                    try:
                        lab.screen.draw(lab.frame(time.monotonic()))
                    except OSError:
                        pass
                lab.screen.restore()
            lab.cleanup()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if interrupted is not None:
        name = signal.Signals(interrupted).name
        if not lab.tty and lab.view is not None and lab.view.hosts:
            lab.say(ctl.format_hosts([lab.view.hosts[n] for n in lab.view.order]))
        what = "process, namespace and file" if lab.netns else "process and file"
        lab.say(f"mtce lab: stopped ({name}) ; every {what} of the lab removed")
        return 0 if lab.duration is None else 128 + interrupted
    if failure:
        print(f"mtce lab: {failure}", file=sys.stderr)
        return 1
    if not lab.tty and lab.view is not None and lab.view.hosts:
        lab.say(ctl.format_hosts([lab.view.hosts[n] for n in lab.view.order]))
        if lab.view.alarms:
            lab.say(ctl.format_alarms(lab.view.alarms))
    for log in lab.crash_logs:
        lab.say(log)
    lab.say(f"mtce lab: {text}")
    return 0 if ok else 1
