"""`mtce lab`'s plan: the timers, addresses and ports of a generated cluster, and every file
of its hosts (platform.conf, hosts, hostname, build.info, inventory, dnsmasq.hosts, a DHCP
lease and an mtc.ini whose every [paths] key points into the lab's directory and whose
[actions] never touch this machine).
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import socket
import sys
import zipfile
from dataclasses import dataclass

from mtce import config
from mtce.agent_pxeboot import PXEBOOT_LOSS_THRESHOLD, PXEBOOT_MISS_THRESHOLD

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

SCENARIOS = ("none", "pxeboot-loss", "controller-link", "restart", "burst")
HA_SCENARIOS = ("none", "agent-kill", "node-kill", "swact", "split")   # with --ha
REBOOT_KINDS = ("reboot", "reset", "lazy_reboot", "wipedisk")
ENV_TAG = "MTCE_LAB_ID"        # every process the lab starts carries this (the cleanup sweep)
MOVED_OCTET = 251              # pxeboot-loss (loopback): the address the lease moves to

PORT = {k: config.OPTION_INDEX[k].default for k in (
    ("agent", "mtc_agent_port"), ("agent", "mtc_rx_pxeboot_port"),
    ("client", "mtc_rx_mgmnt_port"), ("client", "mtc_rx_clstr_port"),
    ("client", "mtc_rx_pxeboot_port"))}


class LabError(Exception):
    """A failure that ends the lab with one line (exit 1)."""


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
    .1 the floating mgmt address, .2 controller-0, .3 controller-1 (a host with `ha`, else
    named in the hosts file only), .10+k worker-k, .250 the burst host (mgmt only).

    `ha` (mtce lab --ha): two controllers, each with the agent's configuration; their
    state_dir is one path (`state`, where Pacemaker mounts the shared directory) and each has
    its own control socket.
    """

    def __init__(self, root: str, hosts: int = 3, *, netns: bool = False,
                 block: str = DEFAULT_BLOCK, burst: bool = False, ns_prefix: str = "",
                 ha: bool = False, pxeboot_window: int = PXEBOOT_WINDOW_S):
        if not 1 + ha <= hosts <= MAX_HOSTS:
            raise ValueError(f"hosts must be {1 + ha} to {MAX_HOSTS}")
        self.root = os.path.abspath(root)
        self.ha = ha
        self.pxeboot_window = pxeboot_window
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
        controllers = 2 if ha else 1
        for i in range(hosts):
            if i < controllers:
                self.hosts.append(self._host(f"controller-{i}", "controller", i, 2 + i))
            else:
                k = i - controllers
                self.hosts.append(self._host(f"worker-{k}", "worker", i, 10 + k))
        if burst:
            h = self._host("burst-0", "worker", hosts, 250)
            h.clstr_ip = h.pxeboot_ip = ""
            h.client = False
            self.hosts.append(h)
        for h in self.controllers:
            if len(os.fsencode(self.socket_of(h))) > SUN_PATH_MAX:
                raise LabError(f"{self.socket_of(h)}: too long for a Unix socket path (the "
                               f"agent's control socket); use a shorter TMPDIR, e.g. TMPDIR=/tmp")

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
        return self.socket_of(self.controller)

    def socket_of(self, h: HostPlan) -> str:
        """The control socket of the agent that `h` runs: one per controller with `ha`."""
        return h.path("agent.sock") if self.ha else os.path.join(self.root, "agent.sock")

    @property
    def controllers(self) -> list[HostPlan]:
        return [h for h in self.hosts if h.personality == "controller"]

    def runs_agent(self, h: HostPlan) -> bool:
        return h is self.controller or (self.ha and h.personality == "controller")

    @property
    def state_dir(self) -> str:
        """--ha: the controllers' state_dir, where Pacemaker mounts the shared directory."""
        return os.path.join(self.root, "state")

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
        for h in self.hosts:
            if self.runs_agent(h):
                self._write(h.path("config", "dnsmasq.hosts"), self._dnsmasq_text())
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
        for h in self.hosts:
            if h.personality == "controller":
                continue
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
        req = shlex.quote(self.requests)
        paths = {"platform_conf": h.path("platform", "platform.conf"),
                 "platform_dir": h.path("platform"), "hosts_file": h.path("hosts"),
                 "hostname_file": h.path("hostname"), "build_info": h.path("build.info"),
                 "dnsmasq_hosts": h.path("config", "dnsmasq.hosts"),
                 "dhcp_leases_dir": h.path("dhcp"), "ifcfg_dir": h.path("interfaces.d"),
                 "sys_class_net": "/sys/class/net" if self.netns else h.path("sys", "class",
                                                                             "net"),
                 "run_dir": h.run_dir, "persist_dir": h.path("persist"),
                 "state_dir": self.state_dir if self.runs_agent(h) and self.ha else
                 h.path("state"), "pid_dir": h.path("pid"),
                 "log_dir": h.path("log"), "agent_socket": self.socket_of(h)}
        out = ["; Generated by `mtce lab` for " + h.name + ": every [paths] key points into",
               "; this directory, and no [actions] command touches this machine.", ""]
        if self.runs_agent(h):
            out += ["[agent]", f"mgmt_ip = {'' if self.netns else self.floating}",
                    f"cluster_host_ip = {'' if self.netns else h.clstr_ip}",
                    f"inventory = {self.inventory}",
                    f"offline_period = {OFFLINE_PERIOD_MS}",
                    f"offline_threshold = {OFFLINE_THRESHOLD}", ""]
        out += ["[client]", f"mtcalive_period = {MTCALIVE_PERIOD_S}"]
        if not self.netns:      # loopback: the addresses as is; netns: read over netlink
            out += [f"mgmt_ip = {h.mgmt_ip}", f"cluster_host_ip = {h.clstr_ip}"]
        out += ["", "[timeouts]", f"online_period = {ONLINE_PERIOD_S}",
                f"pxeboot_mtcalive_window = {self.pxeboot_window}", "", "[paths]"]
        out += [f"{k} = {v}" for k, v in paths.items()]
        out += ["", "[actions]",
                "; reboot, reset, lazy reboot and wipedisk ask the lab to restart this host's",
                "; client (a simulated reboot; nothing is wiped); no failsafe process is started."]
        for kind in REBOOT_KINDS:
            out.append(f"{kind} = echo {kind} > {req}/{h.name}.{kind}")
        out.append("failsafe =")
        if self.runs_agent(h):
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
        return f"MTCE_LAB_BLOCK={first}.{n} {cli_hint()} {typed}"
    return "MTCE_LAB_BLOCK=127.<n> (no free block found)"

def program() -> list[str]:
    """The argv prefix that runs this same mtce (source tree, zipapp or /usr/bin/mtce)."""
    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if argv0 and os.path.isfile(argv0) and (
            os.path.basename(argv0) in ("mtce.py", "mtce") or zipfile.is_zipfile(argv0)):
        return [sys.executable, argv0]
    return [sys.executable, "-c", "import sys; sys.path.insert(0, %r); from mtce.cli import "
            "main; sys.exit(main())" % package_root()]

def package_root() -> str:
    import mtce
    return os.path.dirname(os.path.dirname(os.path.abspath(mtce.__file__)))

def cli_hint() -> str:
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
