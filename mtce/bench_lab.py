"""`mtce bench`'s cluster: the files of the agent, the client and the simulated hosts
(one temporary directory), and what the bench reads of the processes it runs (CPU from
/proc, RSS, kernel drops, the agent's log time stamps)."""

from __future__ import annotations

import os
import random
import re
import shlex
import socket
import struct
import sys
import time
import zipfile
from dataclasses import dataclass

from mtce import agent_decisions, alive
from mtce.states import Net

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)   # Linux value; Python exposes it from 3.12
PARM3_OFFSET = alive.HEADER.size - 2 * 4            # parm[3]: the per-network sequence number
_SEQ = struct.Struct("<I")
_SEQ_KEY = b'"sequence":'
TICK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
AGENT_HOST = "controller-0"
CLIENT_HOST = "bench-client"
AGENT_PORT, AGENT_PXEBOOT_PORT = 2101, 2102
METRICS_PORT = 9479               # the agent's metrics endpoint in the bench
_NET_ORDER = (Net.PXEBOOT, Net.MGMT, Net.CLSTR)     # the client's order within one tick


class BenchError(Exception):
    """The benchmark could not measure something; the text says what and where to look."""


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of one run. `FULL` is `make bench`; `QUICK` is for the test."""

    hosts: int                  # simulated hosts (each on mgmt, cluster-host and pxeboot)
    period_s: float             # their mtcAlive period (the client's mtcalive_period)
    online_period_s: float      # agent timers, short enough to bound the detection phase
    offline_period_ms: int
    offline_threshold: int
    pxeboot_window_s: float     # > period_s: every window holds a pxeboot mtcAlive
    sustained_rate: int
    sustained_s: float
    capacity_s: float
    pyz_runs: int
    baseline_s: float = 20.0    # the bare loop at the sustained rate (its cost per datagram)
    scrape_every_s: float = 15.0    # the metrics endpoint is scraped this often, steady phase
    ready_every: int = 12       # ready event every 12 periods (60 s at 5 s), as the client


FULL = Plan(hosts=2000, period_s=5.0, online_period_s=7.0, offline_period_ms=100,
            offline_threshold=20, pxeboot_window_s=6.0, sustained_rate=20000, sustained_s=60.0,
            capacity_s=10.0, pyz_runs=7)
QUICK = Plan(hosts=200, period_s=0.5, online_period_s=2.0, offline_period_ms=100,
             offline_threshold=5, pxeboot_window_s=0.6, sustained_rate=20000, sustained_s=1.5,
             capacity_s=1.5, pyz_runs=3, baseline_s=1.5, scrape_every_s=1.0)


# -- addresses and files -----------------------------------------------------------------------

def host_addresses(i: int) -> tuple[str, str, str]:
    """Simulated host i's mgmt, cluster-host and pxeboot addresses (up to 62,500 hosts)."""
    b, c = divmod(i, 250)
    return f"127.252.{b}.{c + 1}", f"127.253.{b}.{c + 1}", f"127.254.{b}.{c + 1}"


def host_mac(i: int) -> str:
    return "02:00:be:%02x:%02x:%02x" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)


def _write(path: str, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _ini_text(sections: dict) -> str:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {v}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)


HARMLESS = {"reboot": "true", "reset": "true", "lazy_reboot": "true", "failsafe": "true",
            "wipedisk": "true", "alarm": "true"}


class Layout:
    """Every address and file of one run, under `root`.

    The controllers use 127.251.B.x, B chosen free for this run: floating mgmt .1, unit mgmt
    .2/.3, cluster-host .4/.5, pxeboot .6/.7; the client .10/.11/.12. Simulated hosts use
    127.252-254.x.y (`host_addresses`): they are only ever sources, never bound.
    """

    def __init__(self, root: str, plan: Plan):
        self.root = root
        self.plan = plan
        self.block = _free_block()
        b = self.block
        self.float_ip, self.c0_mgmt, self.c1_mgmt = b + "1", b + "2", b + "3"
        self.c0_clstr, self.c1_clstr, self.c0_pxeboot, self.c1_pxeboot = \
            b + "4", b + "5", b + "6", b + "7"
        self.client_ips = (b + "10", b + "11", b + "12")
        self.metrics_at = f"{self.c0_mgmt}:{METRICS_PORT}"     # the agent's [metrics] listen
        self.client_mac = "02:00:be:ff:00:01"
        self.names = [f"worker-{i}" for i in range(plan.hosts)]
        self.agent_dir = os.path.join(root, "agent")
        self.client_dir = os.path.join(root, "client")
        self.agent_ini = self._host_files(self.agent_dir, AGENT_HOST, "controller")
        self.client_ini = self._host_files(self.client_dir, CLIENT_HOST, "worker")
        self.agent_socket = os.path.join(self.agent_dir, "run", "mtce", "agent.sock")
        self.agent_log = os.path.join(root, "agent.stderr")
        self.client_log = os.path.join(root, "client.stderr")
        self.agent_rx = {Net.MGMT: (self.float_ip, AGENT_PORT),
                         Net.CLSTR: (self.c0_clstr, AGENT_PORT),
                         Net.PXEBOOT: (self.c0_pxeboot, AGENT_PXEBOOT_PORT)}

    def settings(self) -> agent_decisions.Settings:
        p = self.plan
        return agent_decisions.Settings(online_period_s=p.online_period_s,
                                        offline_period_s=p.offline_period_ms / 1000.0,
                                        offline_threshold=p.offline_threshold,
                                        pxeboot_window_s=p.pxeboot_window_s)

    def _paths(self, d: str) -> dict:
        rel = {"platform_conf": "platform/platform.conf", "platform_dir": "platform",
               "hosts_file": "hosts", "hostname_file": "hostname", "build_info": "build.info",
               "dnsmasq_hosts": "config/dnsmasq.hosts", "dhcp_leases_dir": "dhcp",
               "ifcfg_dir": "interfaces.d", "sys_class_net": "sys/class/net", "run_dir": "run",
               "persist_dir": "persist", "state_dir": "state", "pid_dir": "pid",
               "log_dir": "log", "agent_socket": "run/mtce/agent.sock"}
        return {k: os.path.join(d, v) for k, v in rel.items()}

    def _host_files(self, d: str, hostname: str, nodetype: str) -> str:
        paths = self._paths(d)
        for key in ("platform_dir", "dhcp_leases_dir", "ifcfg_dir", "run_dir", "persist_dir",
                    "state_dir", "pid_dir", "log_dir"):
            os.makedirs(paths[key], exist_ok=True)
        _write(paths["hostname_file"], hostname + "\n")
        _write(paths["build_info"], 'SW_VERSION="bench"\n')
        _write(paths["hosts_file"], "".join(f"{ip} {name}\n" for ip, name in (
            (self.float_ip, "controller"), (self.c0_mgmt, "controller-0"),
            (self.c1_mgmt, "controller-1"), (self.c0_clstr, "controller-0-cluster-host"),
            (self.c1_clstr, "controller-1-cluster-host"))))
        _write(paths["platform_conf"], "".join(f"{k}={v}\n" for k, v in (
            ("nodetype", nodetype), ("subfunction", nodetype), ("system_type", "Standard"),
            ("system_mode", "duplex"), ("management_interface", "lab0"),
            ("cluster_host_interface", "lab1"))))
        mac = self.client_mac if hostname == CLIENT_HOST else host_mac(0xfffff0)
        _write(os.path.join(paths["sys_class_net"], "lab0", "address"), mac + "\n")
        _write(os.path.join(paths["sys_class_net"], "lab0", "uevent"), "INTERFACE=lab0\n")
        p = self.plan
        values = {"paths": paths, "actions": dict(HARMLESS)}
        if hostname == CLIENT_HOST:
            mgmt, clstr, pxeboot = self.client_ips
            _write(os.path.join(paths["dhcp_leases_dir"], "dhclient.lab0:2.leases"),
                   f'lease {{\n  interface "lab0:2";\n  fixed-address {pxeboot};\n}}\n')
            values["client"] = {"mgmt_ip": mgmt, "cluster_host_ip": clstr,
                                "mtcalive_period": p.period_s}
        else:
            values["agent"] = {"mtc_agent_port": AGENT_PORT,
                               "mtc_rx_pxeboot_port": AGENT_PXEBOOT_PORT,
                               "offline_period": p.offline_period_ms,
                               "offline_threshold": p.offline_threshold,
                               "inventory": os.path.join(d, "inventory.ini"),
                               "mgmt_ip": self.float_ip, "cluster_host_ip": self.c0_clstr,
                               "pxeboot_ip": self.c0_pxeboot}
            values["timeouts"] = {"online_period": p.online_period_s,
                                  "pxeboot_mtcalive_window": p.pxeboot_window_s}
            values["metrics"] = {"listen": self.metrics_at}
            self._inventory(os.path.join(d, "inventory.ini"), paths["dnsmasq_hosts"], mac)
        return _write(os.path.join(d, "mtc.ini"), _ini_text(values))

    def _inventory(self, path: str, dnsmasq: str, own_mac: str) -> None:
        entries = [(AGENT_HOST, "controller", own_mac, self.c0_mgmt, self.c0_clstr,
                    self.c0_pxeboot),
                   (CLIENT_HOST, "worker", self.client_mac) + self.client_ips]
        entries += [(name, "worker", host_mac(i)) + host_addresses(i)
                    for i, name in enumerate(self.names)]
        inv, dns = [], [f"pxecontroller,{self.c0_pxeboot}"]
        for n, (name, personality, mac, mgmt, clstr, pxeboot) in enumerate(entries):
            inv += [f"[{name}]", f"personality = {personality}", f"mgmt_mac = {mac}",
                    f"mgmt_ip = {mgmt}", f"cluster_host_ip = {clstr}",
                    "administrative = unlocked", ""]
            dns.append(f"{mac},pxeboot-{n},{pxeboot},1d")
        _write(path, "\n".join(inv))
        _write(dnsmasq, "\n".join(dns) + "\n")


def _free_block() -> str:
    """A 127.251.B. block whose agent and client ports are free (concurrent runs differ)."""
    for _ in range(50):
        block = f"127.251.{random.randint(0, 249)}."
        probes = []
        try:
            for last, port in (("1", AGENT_PORT), ("4", AGENT_PORT), ("6", AGENT_PXEBOOT_PORT),
                               ("10", 2118), ("11", 2115), ("12", 2119)):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                probes.append(s)
                s.bind((block + last, port))
            return block
        except OSError:
            continue
        finally:
            for s in probes:
                s.close()
    raise BenchError("no free 127.251.x block for the agent's ports")


# -- observing processes --------------------------------------------------------------------

def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_status_mib(pid: int, key: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise BenchError(f"no {key} for pid {pid}")


def _udp_key(ip: str, port: int) -> str:
    return "%08X:%04X" % (struct.unpack("<I", socket.inet_aton(ip))[0], port)


def udp_bound(addrs) -> int:
    """How many of the (ip, port) pairs a UDP socket is bound to now (/proc/net/udp)."""
    wanted = {_udp_key(ip, port) for ip, port in addrs}
    with open("/proc/net/udp", encoding="ascii") as f:
        next(f)
        return len(wanted & {line.split()[1] for line in f})


def udp_drops(addrs) -> int:
    """Sum of the kernel's per-socket receive drops (/proc/net/udp) for (ip, port) pairs."""
    wanted = {_udp_key(ip, port) for ip, port in addrs}
    total = 0
    with open("/proc/net/udp", encoding="ascii") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] in wanted:
                total += int(fields[-1])
    return total


class CoreMeter:
    """Busy time of one CPU (/proc/stat), to tell how much of the agent's core other
    processes of this machine took while a phase ran."""

    def __init__(self, cpu: int):
        self.name = f"cpu{cpu}"
        self.start = self._busy()

    def _busy(self) -> float:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                fields = line.split()
                if fields[0] == self.name:
                    values = [int(v) for v in fields[1:9]]
                    return (sum(values) - values[3] - values[4]) / TICK
        raise BenchError(f"no {self.name} in /proc/stat")

    def busy_s(self) -> float:
        return self._busy() - self.start


_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3}) ")


class AgentLog:
    """Reads the agent's stderr as it grows; events are (wall time, message text)."""

    def __init__(self, path: str):
        self.path = path
        self.offset = 0
        self.messages: list[tuple[float, str]] = []

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self.offset += end
        for raw in data[:end].decode("utf-8", "replace").splitlines():
            m = _LINE.match(raw)
            if not m or " : " not in raw:
                continue
            stamp = time.mktime(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
            self.messages.append((stamp + int(m.group(2)) / 1000.0, raw.split(" : ", 1)[1]))

    def mark(self) -> int:
        """An index for `find(start=...)`: only messages logged after this call."""
        self.poll()
        return len(self.messages)

    def find(self, pattern: str, start: int = 0) -> list[tuple[float, re.Match]]:
        rx = re.compile(pattern)
        return [(t, m) for t, text in self.messages[start:] for m in [rx.match(text)] if m]


# -- the run ----------------------------------------------------------------------------------

def program() -> list[str]:
    """The mtce under test: $MTCE_BIN, else the zipapp running this, else this tree's mtce.py."""
    env = os.environ.get("MTCE_BIN")
    if env:
        return shlex.split(env)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(here) and zipfile.is_zipfile(here):
        return [sys.executable, here]
    return [sys.executable, os.path.join(here, "mtce.py")]


def _say(text: str) -> None:
    print(f"mtce bench: {text}", file=sys.stderr, flush=True)


def _tail(path: str, lines: int = 25) -> str:
    """The end of a log, for an error that sends the reader there."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"
