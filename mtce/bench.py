"""`mtce bench`: the performance benchmark of interface.md §7, on loopback, in bounded time.

Everything measured is a real process: the agent (`mtce agent -f`) with an inventory of
simulated hosts, a real `mtce client`, a load generator of several forked processes, and a
bare `recvfrom_into` loop as the baseline. Every file lives in one temporary directory, removed
at the end; every `[actions]` command is `true`; traffic goes only to 127.x addresses.

The generator gives each simulated host its own mgmt, cluster-host and pxeboot address
(127.252/253/254.x.y) and sends from them without binding one socket per address: `sendmsg`
with an IP_PKTINFO source, which Linux accepts for any local address, and all of 127/8 is
local. Each (host, network) stream keeps one datagram built by `alive.mtcalive` and patches
its sequence number (parm[3] and the JSON "sequence") in place, so per-host sequence numbers
increase by one and the agent's `missed` counters prove any loss.

Phases, in this order (docs/bench.md explains how to read the results):
  zipapp start-up; client start to first mtcAlive; warm-up of all hosts; steady realistic
  load (every host, every network, every period) with one host going silent (offline) and
  one host's pxeboot going silent (200.003), while the client idles; sustained fixed rate;
  capacity (the generator as fast as it can) against the agent, then against the baseline.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import resource
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass

from mtce import alive, ctl, hosts, transport
from mtce.states import Net

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)   # Linux value; Python exposes it from 3.12
PARM3_OFFSET = alive.HEADER.size - 2 * 4            # parm[3]: the per-network sequence number
_SEQ = struct.Struct("<I")
_SEQ_KEY = b'"sequence":'
TICK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
BUSY_WARN_PCT = 20.0            # other processes' share of the agent's core worth a warning
AGENT_HOST = "controller-0"
CLIENT_HOST = "bench-client"
AGENT_PORT, AGENT_PXEBOOT_PORT = 2101, 2102
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
    ready_every: int = 12       # ready event every 12 periods (60 s at 5 s), as the client


FULL = Plan(hosts=2000, period_s=5.0, online_period_s=7.0, offline_period_ms=100,
            offline_threshold=20, pxeboot_window_s=6.0, sustained_rate=20000, sustained_s=60.0,
            capacity_s=10.0, pyz_runs=7)
QUICK = Plan(hosts=200, period_s=0.5, online_period_s=2.0, offline_period_ms=100,
             offline_threshold=5, pxeboot_window_s=0.75, sustained_rate=20000, sustained_s=2.0,
             capacity_s=2.0, pyz_runs=3)


# -- targets (issue 7) -------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    key: str
    figure: str
    target: str
    met: object                 # callable(result) -> bool


TARGETS = (
    Target("agent_rate", "agent mtcAlive fully processed /s", ">= 50,000/s",
           lambda r: r["agent_rate"] >= 50000),
    Target("ratio", "agent / bare recvfrom_into loop", ">= 50%",
           lambda r: r["ratio"] >= 0.5),
    Target("lost", "lost at sustained rate (sequence numbers)", "0",
           lambda r: r["lost"] == 0 and r["sustained_offered_rate"] >= 0.98 * r["sustained_rate"]),
    Target("kernel_drops", "kernel receive-buffer drops, same phase", "0",
           lambda r: r["kernel_drops"] == 0),
    Target("cpu_pct_2000_hosts", "agent CPU at steady load", "< 3% of a core",
           lambda r: r["cpu_pct_2000_hosts"] < 3.0),
    Target("offline_detect_error", "offline detection, measured - configured",
           "within one audit period", lambda r: abs(r["offline_detect_error"])
           <= r["offline_audit_period"]),
    Target("pxeboot_detect_error", "pxeboot loss (200.003), measured - configured",
           "within one audit period", lambda r: abs(r["pxeboot_detect_error"])
           <= r["pxeboot_audit_period"]),
    Target("false_offline", "hosts falsely declared offline", "0",
           lambda r: r["false_offline"] == 0),
    Target("client_rss_mib", "client RSS", "< 25 MiB", lambda r: r["client_rss_mib"] < 25),
    Target("client_idle_cpu_pct", "client idle CPU", "< 0.1% of a core",
           lambda r: r["client_idle_cpu_pct"] < 0.1),
    Target("first_mtcalive", "client start to first mtcAlive", "<= 1.2 s",
           lambda r: r["first_mtcalive"] <= 1.2),
    Target("pyz_startup", "zipapp `--version`", "< 150 ms",
           lambda r: r["pyz_startup"] is not None and r["pyz_startup"] < 0.150),
)


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

    def settings(self) -> hosts.Settings:
        p = self.plan
        return hosts.Settings(online_period_s=p.online_period_s,
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


# -- the load generator ------------------------------------------------------------------------

class Stream:
    """One simulated host's mtcAlive on one network: a reused buffer, patched per send."""

    __slots__ = ("host", "net", "identity", "dest", "anc", "seq", "buf", "at", "width",
                 "silent", "last_sent")

    def __init__(self, host: int, net: Net, identity: alive.Identity, source: str, dest):
        self.host, self.net, self.identity, self.dest = host, net, identity, dest
        self.anc = [(socket.IPPROTO_IP, IP_PKTINFO,
                     struct.pack("=I4s4s", 0, socket.inet_aton(source), bytes(4)))]
        self.seq = 0
        self.width = 0
        self.silent = False
        self.last_sent = 0.0            # wall time of the last datagram sent

    def _build(self, seq: int) -> None:
        data = alive.mtcalive(self.identity, self.net, seq, uptime=3600)
        digits = b"%d" % seq
        self.at = data.rindex(_SEQ_KEY + digits) + len(_SEQ_KEY)
        self.width = len(digits)
        self.buf = bytearray(data)

    def next(self) -> bytearray:
        """The next datagram: sequence number + 1, in parm[3] and in the JSON text."""
        seq = self.seq + 1
        digits = b"%d" % seq
        if len(digits) != self.width:
            self._build(seq)            # 9 -> 10, 99 -> 100, ...: the text grows by a byte
        else:
            _SEQ.pack_into(self.buf, PARM3_OFFSET, seq)
            self.buf[self.at:self.at + self.width] = digits
        self.seq = seq
        return self.buf


class _Sender:
    """One generator process's hosts and socket (runs in the forked worker)."""

    def __init__(self, hosts_spec: list, agent_rx: dict):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MIB)
        self.hosts = []                 # (index, offset fraction, [streams], ready, ready anc)
        self.streams: list[Stream] = []
        for index, name, frac in hosts_spec:
            mgmt, clstr, pxeboot = host_addresses(index)
            ident = alive.Identity(name, "worker", pxeboot, mgmt, clstr, host_mac(index))
            source = {Net.MGMT: mgmt, Net.CLSTR: clstr, Net.PXEBOOT: pxeboot}
            streams = [Stream(index, net, ident, source[net], agent_rx[net])
                       for net in _NET_ORDER]
            ready = alive.ready_event(name, "")
            self.hosts.append((index, frac, streams, ready, streams[1].anc))
            self.streams += streams
        self.sent = self.errors = 0

    def send(self, st: Stream) -> bool:
        buf = st.next()
        try:
            self.sock.sendmsg((buf,), st.anc, 0, st.dest)
        except OSError:
            st.seq -= 1                 # not sent: the next datagram reuses the number
            self.errors += 1
            return False
        self.sent += 1
        return True

    def silence(self, index: int, nets) -> dict:
        out = {}
        for st in self.streams:
            if st.host == index and st.net in nets:
                st.silent = True
                out[int(st.net)] = st.last_sent
        return out

    def steady(self, conn, period: float, ready_every: int, agent_rx: dict) -> tuple:
        """Each host's tick once a period (spread evenly), until a command other than
        "silence" arrives; returns (stats, that command)."""
        t0 = time.monotonic()
        sent0, cpu0 = self.sent, _own_cpu()
        ready_dest = agent_rx[Net.MGMT]
        cycle, j, late = 0, 0, 0.0
        order = sorted(self.hosts, key=lambda h: h[1])
        while True:
            due = t0 + (cycle + order[j][1]) * period if order else t0 + 3600
            now = time.monotonic()
            if due > now or conn.poll(0):
                if conn.poll(max(0.0, min(due - now, 0.05))):
                    cmd = conn.recv()
                    if cmd[0] != "silence":
                        return {"sent": self.sent - sent0, "elapsed": time.monotonic() - t0,
                                "cpu_s": _own_cpu() - cpu0, "max_late_s": late}, cmd
                    conn.send(self.silence(cmd[1], cmd[2]))
                continue
            late = max(late, now - due)
            _, _, streams, ready, ready_anc = order[j]
            wall = time.time()
            if cycle:                   # as the client: the ready event first, a tick later
                for st in streams:      # the mtcAlive, and ready again every minute
                    if not st.silent and self.send(st):
                        st.last_sent = wall
            if cycle % ready_every == 0 and not all(st.silent for st in streams):
                try:
                    self.sock.sendmsg((ready,), ready_anc, 0, ready_dest)
                except OSError:
                    self.errors += 1
            j += 1
            if j == len(order):
                j, cycle = 0, cycle + 1

    def rate(self, rate: float, duration: float) -> dict:
        """Round-robin over every live stream at `rate`/s (0: as fast as possible)."""
        streams = [st for st in self.streams if not st.silent]
        n = len(streams)
        sent0, errors0, cpu0 = self.sent, self.errors, _own_cpu()
        t0 = time.monotonic()
        end = t0 + duration
        i = 0
        attempted = 0
        send = self.send
        while True:
            now = time.monotonic()
            if now >= end or not n:
                break
            if rate:
                due = min(int(rate * (now - t0)) + 1 - attempted, 2000)
                if due <= 0:
                    time.sleep(0.0005)
                    continue
            else:
                due = 500
            for _ in range(due):
                send(streams[i])
                i = i + 1 if i + 1 < n else 0
            attempted += due
        return {"sent": self.sent - sent0, "errors": self.errors - errors0,
                "elapsed": time.monotonic() - t0, "cpu_s": _own_cpu() - cpu0}

    def seqs(self) -> dict:
        return {(st.host, int(st.net)): st.seq for st in self.streams}


def _own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _generator_main(conn, hosts_spec: list, agent_rx: dict, cpus) -> None:
    """A generator process: builds its streams, then obeys commands from the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cpus:
        os.sched_setaffinity(0, cpus)
    sender = _Sender(hosts_spec, agent_rx)
    conn.send("ready")
    try:
        _obey(conn, sender, agent_rx)
    except (EOFError, OSError):
        pass                            # the bench went away: so does its generator


def _obey(conn, sender: _Sender, agent_rx: dict) -> None:
    cmd = conn.recv()
    while True:
        if cmd[0] == "steady":
            stats, cmd = sender.steady(conn, cmd[1], cmd[2], agent_rx)
            if cmd[0] == "pause":
                conn.send(stats)
                cmd = conn.recv()
            continue
        if cmd[0] == "rate":
            conn.send(sender.rate(cmd[1], cmd[2]))
        elif cmd[0] == "seqs":
            conn.send(sender.seqs())
        elif cmd[0] == "silence":       # while idle
            conn.send(sender.silence(cmd[1], cmd[2]))
        else:
            return
        cmd = conn.recv()


class Generator:
    """Several generator processes, each owning an interleaved share of the hosts."""

    def __init__(self, layout: Layout, processes: int, cpus):
        ctx = multiprocessing.get_context("fork")
        n = layout.plan.hosts
        self.owner = {}
        self.workers = []
        for w in range(processes):
            spec = [(i, layout.names[i], (i + 0.5) / n) for i in range(w, n, processes)]
            for i, _, _ in spec:
                self.owner[i] = w
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_generator_main, args=(child, spec, layout.agent_rx, cpus),
                               daemon=True, name=f"mtce-bench-gen{w}")
            proc.start()
            child.close()
            self.workers.append((proc, parent))
        for _proc, conn in self.workers:
            if not conn.poll(60) or conn.recv() != "ready":
                raise BenchError("a generator process did not start")

    def _all(self, cmd, timeout: float) -> list:
        for _, conn in self.workers:
            conn.send(cmd)
        out = []
        for proc, conn in self.workers:
            if not conn.poll(timeout):
                raise BenchError(f"generator {proc.name} did not answer {cmd[0]!r}")
            out.append(conn.recv())
        return out

    def steady(self, plan: Plan) -> None:
        for _, conn in self.workers:
            conn.send(("steady", plan.period_s, plan.ready_every))

    def silence(self, index: int, nets) -> dict:
        """Stop one host's streams on `nets`; returns {net: wall time of its last send}."""
        _, conn = self.workers[self.owner[index]]
        conn.send(("silence", index, [int(n) for n in nets]))
        if not conn.poll(10):
            raise BenchError("generator did not answer 'silence'")
        return {Net(k): v for k, v in conn.recv().items()}

    def pause(self) -> dict:
        return _merge(self._all(("pause",), 10))

    def rate(self, total_rate: float, duration: float) -> dict:
        share = total_rate / len(self.workers) if total_rate else 0
        return _merge(self._all(("rate", share, duration), duration + 30))

    def seqs(self) -> dict:
        out = {}
        for part in self._all(("seqs",), 10):
            out.update(part)
        return out

    def close(self) -> None:
        for _proc, conn in self.workers:
            try:
                conn.send(("stop",))
            except OSError:
                pass
        for proc, _ in self.workers:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def _merge(parts: list) -> dict:
    """Sum the counts of the generator processes; times are the slowest one's."""
    out = {"sent": 0, "errors": 0, "elapsed": 0.0, "cpu_s": 0.0, "max_late_s": 0.0,
           "processes": len(parts)}
    for p in parts:
        out["sent"] += p["sent"]
        out["errors"] += p.get("errors", 0)
        out["cpu_s"] += p["cpu_s"]
        out["elapsed"] = max(out["elapsed"], p["elapsed"])
        out["max_late_s"] = max(out["max_late_s"], p.get("max_late_s", 0.0))
    return out


# -- the baseline: a bare recvfrom_into loop on the agent's sockets -----------------------------

def _baseline_main(conn, addrs: list, rcvbuf: int, cpus) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cpus:
        os.sched_setaffinity(0, cpus)
    sel = selectors.DefaultSelector()
    socks = []
    for (ip, port), reuse in addrs:
        s = transport.udp_socket(ip, port, reuseaddr=reuse, rcvbuf=rcvbuf)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    sel.register(conn, selectors.EVENT_READ)
    buf = bytearray(transport.RX_BUFFER)
    count = 0
    conn.send("ready")
    cpu0 = _own_cpu()
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            if sock is conn:
                conn.recv()
                conn.send({"received": count, "cpu_s": _own_cpu() - cpu0})
                return
            recv = sock.recvfrom_into
            while True:
                try:
                    recv(buf)
                except BlockingIOError:
                    break
                count += 1


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


def udp_drops(addrs) -> int:
    """Sum of the kernel's per-socket receive drops (/proc/net/udp) for (ip, port) pairs."""
    wanted = {"%08X:%04X" % (struct.unpack("<I", socket.inet_aton(ip))[0], port)
              for ip, port in addrs}
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


class Bench:
    def __init__(self, plan: Plan, root: str):
        self.plan = plan
        self.root = root
        self.prog = program()
        self.layout = Layout(root, plan)
        self.settings = self.layout.settings()
        cpus = sorted(os.sched_getaffinity(0))
        self.cpus = len(cpus)
        self.agent_cpus = {cpus[-1]}
        self.gen_cpus = set(cpus[:-1]) or set(cpus)
        self.gen_processes = max(2, len(self.gen_cpus))
        if len(cpus) > 1:               # this process and the client stay off the agent's core
            os.sched_setaffinity(0, self.gen_cpus)
        self.r: dict = {}
        self.procs: list[subprocess.Popen] = []
        self.gen: Generator | None = None
        self.agent: subprocess.Popen | None = None
        self.log = AgentLog(self.layout.agent_log)

    # -- processes ------------------------------------------------------------------------
    def _spawn(self, mode: str, ini: str, log: str) -> subprocess.Popen:
        argv = self.prog + [mode, "-c", ini, "-f"]
        profile_dir = os.environ.get("MTCE_BENCH_PROFILE")
        if profile_dir and len(self.prog) == 2 and self.prog[1].endswith((".py", ".pyz")):
            # docs/bench.md: the daemons under cProfile (slower: figures are not comparable)
            argv = [self.prog[0], "-m", "cProfile", "-o",
                    os.path.join(os.path.abspath(profile_dir), f"{mode}.prof")] + argv[1:]
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def _stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def _ctl(self, cmd: str) -> dict:
        if self.agent is not None and self.agent.poll() is not None:
            raise BenchError(f"the agent exited ({self.agent.returncode}); see its log:\n"
                             + _tail(self.layout.agent_log))
        reply = ctl.request(self.layout.agent_socket, {"cmd": cmd}, timeout=30)
        if not reply.get("ok"):
            raise BenchError(f"agent refused {cmd!r}: {reply.get('error')}")
        return reply

    def _processed(self) -> int:
        return self._ctl("status")["counters"]["mtcalive"]

    def _hosts(self) -> dict:
        return {h["hostname"]: h for h in self._ctl("hosts")["hosts"]}

    def _drained(self, timeout: float = 5.0) -> int:
        """The agent's mtcAlive count once it stops moving (the socket backlog is done)."""
        last = self._processed()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self._processed()
            if now == last:
                return now
            last = now
        return last

    def close(self) -> None:
        if self.gen is not None:
            self.gen.close()
        for proc in self.procs:
            self._stop(proc)

    # -- phases -----------------------------------------------------------------------------
    def run(self) -> dict:
        t0 = time.monotonic()
        p, r = self.plan, self.r
        r["hosts"] = p.hosts
        r["period_s"] = p.period_s
        r["cpus"] = self.cpus
        r["python"] = sys.version.split()[0]
        self.pyz_startup()
        self.start_agent()
        self.client_start()
        self.warm_up()
        self.steady()
        self.sustained()
        self.capacity()
        r["duration"] = round(time.monotonic() - t0, 1)
        return r

    def pyz_startup(self) -> None:
        """`python3 mtce.pyz --version`, median of several runs after one warm-up run."""
        r = self.r
        pyz, note = self._find_pyz()
        r["pyz_startup"] = None
        r["pyz_startup_note"] = note
        argv = [sys.executable, "-c", "pass"]
        r["python_startup"] = _median_run(argv, self.plan.pyz_runs)
        if pyz is None:
            return
        _say(f"timing {pyz} --version")
        r["pyz_startup"] = _median_run([sys.executable, pyz, "--version"], self.plan.pyz_runs)
        r["pyz_startup_note"] = (f"{os.path.basename(sys.executable)} {pyz} --version, median "
                                 f"of {self.plan.pyz_runs}")

    def _find_pyz(self) -> tuple[str | None, str]:
        for arg in self.prog:
            if arg.endswith(".pyz") and os.path.isfile(arg):
                return arg, ""
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if os.path.isfile(here) and zipfile.is_zipfile(here):
            return here, ""
        built = os.path.join(here, "dist", "mtce.pyz")
        if os.path.isfile(built):
            return built, ""
        tool = os.path.join(here, "tools", "build_pyz.py")
        if not os.path.isfile(tool):
            return None, "no dist/mtce.pyz and no tools/build_pyz.py to build it"
        out = os.path.join(self.root, "mtce.pyz")
        _say("building a zipapp with tools/build_pyz.py")
        try:
            proc = subprocess.run([sys.executable, tool, "-o", out], capture_output=True,
                                  text=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            return None, "tools/build_pyz.py did not finish in 300 s"
        if proc.returncode != 0 or not os.path.isfile(out):
            why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"tools/build_pyz.py failed: {why}"
        return out, ""

    def start_agent(self) -> None:
        _say(f"starting the agent with {self.plan.hosts} simulated hosts "
             f"({' '.join(self.prog)})")
        self.agent = self._spawn("agent", self.layout.agent_ini, self.layout.agent_log)
        os.sched_setaffinity(self.agent.pid, self.agent_cpus)
        deadline = time.monotonic() + 60
        while True:
            try:
                self._ctl("status")
                break
            except ctl.CtlError:
                if time.monotonic() > deadline:
                    raise BenchError("the agent did not answer within 60 s:\n"
                                     + _tail(self.layout.agent_log)) from None
                time.sleep(0.1)
        self.r["agent_rss_start_mib"] = round(proc_status_mib(self.agent.pid), 1)

    def client_start(self) -> None:
        """A real client on an idle machine: start to first mtcAlive at the agent."""
        _say("starting a client")
        mark = self.log.mark()
        started = time.time()
        self.client = self._spawn("client", self.layout.client_ini, self.layout.client_log)
        first: dict[str, float] = {}
        deadline = time.monotonic() + 15
        while len(first) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            self.log.poll()
            for t, m in self.log.find(rf"({re.escape(CLIENT_HOST)}) mtcAlive received from "
                                      r"(\w+) network", mark):
                first.setdefault(m.group(2), t - started)
        if not first:
            raise BenchError("the client's first mtcAlive never reached the agent:\n"
                             + _tail(self.layout.client_log))
        r = self.r
        r["first_mtcalive"] = round(min(first.values()), 3)
        r["first_mtcalive_by_network"] = {k: round(v, 3) for k, v in sorted(first.items())}
        self.client_first_at = time.monotonic()

    def warm_up(self) -> None:
        """Generator processes start their hosts (ready event, then every period); wait until
        the agent has every host online and ok on all three networks."""
        p = self.plan
        _say(f"{self.gen_processes} generator processes, {p.hosts} hosts x 3 networks every "
             f"{p.period_s:g} s")
        self.gen = Generator(self.layout, self.gen_processes, self.gen_cpus)
        self.gen.steady(p)
        self.steady_running = True
        deadline = time.monotonic() + 3 * p.period_s + 2 * p.pxeboot_window_s + 30
        time.sleep(2 * p.period_s + 0.5)
        while True:
            table = self._hosts()
            ready = [n for n in self.layout.names if _all_ok(table.get(n))]
            if len(ready) == p.hosts:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"only {len(ready)} of {p.hosts} hosts came online on every "
                                 f"network; agent log:\n" + _tail(self.layout.agent_log))
            time.sleep(0.5)
        # One more window so that every pxeboot monitor has had a good check.
        time.sleep(p.pxeboot_window_s)

    def steady(self) -> None:
        """Realistic load: CPU, and the two detections against their configured times."""
        p, r, s = self.plan, self.r, self.settings
        names = self.layout.names
        gone, pxe_gone = p.hosts // 3, (2 * p.hosts) // 3
        offline_cfg = hosts.offline_after_s(s)
        pxeboot_cfg = hosts.pxeboot_alarm_after_s(s)
        _say(f"steady load: {names[gone]} goes silent (offline expected after "
             f"{offline_cfg:g} s), {names[pxe_gone]} stops pxeboot (200.003 expected after "
             f"{pxeboot_cfg:g} s)")
        pid = self.agent.pid
        count0, cpu0, wall0 = self._processed(), proc_cpu_s(pid), time.monotonic()
        core = CoreMeter(min(self.agent_cpus))
        client_cpu0, client_t0 = proc_cpu_s(self.client.pid), time.monotonic()
        mark = self.log.mark()
        last_gone = max(self.gen.silence(gone, list(Net)).values())
        last_pxe = self.gen.silence(pxe_gone, [Net.PXEBOOT])[Net.PXEBOOT]
        off_rx = rf"{re.escape(names[gone])} going offline"
        alarm_rx = rf"{re.escape(names[pxe_gone])} setting \S+ 'mtcAlive' failure alarm"
        deadline = time.monotonic() + max(offline_cfg, pxeboot_cfg) + 2 * p.pxeboot_window_s + 10
        off = alarm = None
        while (off is None or alarm is None) and time.monotonic() < deadline:
            time.sleep(0.1)
            self.log.poll()
            off = off or next(iter(self.log.find(off_rx, mark)), None)
            alarm = alarm or next(iter(self.log.find(alarm_rx, mark)), None)
            if self.agent.poll() is not None:
                raise BenchError("the agent exited:\n" + _tail(self.layout.agent_log))
        wall = time.monotonic() - wall0
        cpu = proc_cpu_s(pid) - cpu0
        r["steady_others_pct"] = round(max(0.0, 100.0 * (core.busy_s() - cpu) / wall), 1)
        count = self._processed() - count0
        client_wall = time.monotonic() - client_t0
        client_cpu = proc_cpu_s(self.client.pid) - client_cpu0
        r["client_rss_mib"] = round(proc_status_mib(self.client.pid), 2)
        r["client_rss_peak_mib"] = round(proc_status_mib(self.client.pid, "VmHWM"), 2)
        r["client_idle_cpu_pct"] = round(100.0 * client_cpu / client_wall, 4)
        r["client_idle_sample_s"] = round(client_wall, 1)
        r["client_cpu_s_10min"] = round(client_cpu * 600.0 / client_wall, 3)
        r["steady_offered_rate"] = round(3 * p.hosts / p.period_s, 1)
        r["steady_window_s"] = round(wall, 1)
        r["steady_processed"] = count
        r["cpu_pct_2000_hosts"] = round(100.0 * cpu / wall, 3)
        r["cpu_s_per_1000"] = round(cpu / (count / 1000.0), 5) if count else None
        r["agent_rss_mib"] = round(proc_status_mib(pid), 1)
        r["offline_configured"] = offline_cfg
        r["offline_audit_period"] = s.offline_period_s
        r["pxeboot_configured"] = pxeboot_cfg
        r["pxeboot_audit_period"] = s.pxeboot_window_s
        if off is None or alarm is None:
            raise BenchError("no detection within the time allowed: "
                             f"offline {'seen' if off else 'not seen'}, pxeboot alarm "
                             f"{'seen' if alarm else 'not seen'}; agent log:\n"
                             + _tail(self.layout.agent_log))
        r["offline_detect"] = round(off[0] - last_gone, 3)
        r["offline_detect_error"] = round(off[0] - last_gone - offline_cfg, 3)
        r["pxeboot_detect"] = round(alarm[0] - last_pxe, 3)
        r["pxeboot_detect_error"] = round(alarm[0] - last_pxe - pxeboot_cfg, 3)
        table = self._hosts()
        alarms = self._ctl("alarms")["alarms"]
        victim, pxe_victim = table[names[gone]], table[names[pxe_gone]]
        r["offline_confirmed"] = victim["availability"] == "offline"
        r["pxeboot_confirmed"] = (pxe_victim["networks"]["pxeboot"]["state"] == "lost" and any(
            a["id"] == "200.003" and a["host"] == names[pxe_gone] for a in alarms))
        self.victims = {gone, pxe_gone}
        self.silenced = {(gone, int(n)) for n in Net} | {(pxe_gone, int(Net.PXEBOOT))}
        false_off = {n for n in names if n not in (names[gone],)
                     and table[n]["availability"] != "online"}
        r["false_pxeboot_loss"] = sum(
            1 for n in names if n not in (names[gone], names[pxe_gone]) and
            table[n]["networks"]["pxeboot"]["state"] != "ok")
        self.false_offline = false_off
        self._stop(self.client)

    def _seq_totals(self, table: dict) -> tuple[int, dict]:
        missed, last = 0, {}
        for i, name in enumerate(self.layout.names):
            nets = table[name]["networks"]
            for net in Net:
                missed += nets[net.key]["missed"]
                last[(i, int(net))] = nets[net.key]["last_seq"]
        return missed, last

    def _rate_phase(self, rate: float, duration: float) -> dict:
        """One fixed-rate (or as-fast-as-possible) phase against the agent, fully accounted."""
        pid = self.agent.pid
        rx = list(self.layout.agent_rx.values())
        missed0, _ = self._seq_totals(self._hosts())
        if self.steady_running:         # the steady schedule runs until the last moment
            self.steady_running = False
            late = self.gen.pause()["max_late_s"]
            self.r["generator_max_late_s"] = round(late, 3)
        count0, drops0, cpu0 = self._drained(), udp_drops(rx), proc_cpu_s(pid)
        core = CoreMeter(min(self.agent_cpus))
        gen = self.gen.rate(rate, duration)
        cpu = proc_cpu_s(pid) - cpu0
        others = core.busy_s() - cpu
        count = self._drained() - count0
        drops = udp_drops(rx) - drops0
        missed1, last = self._seq_totals(self._hosts())
        sent_last = self.gen.seqs()
        tail = sum(max(0, seq - last.get(key, 0)) for key, seq in sent_last.items()
                   if key not in self.silenced)
        elapsed = gen["elapsed"]
        return {"sent": gen["sent"], "errors": gen["errors"], "elapsed": elapsed,
                "gen_cpu_s": gen["cpu_s"], "processed": count, "lost": gen["sent"] - count,
                "lost_by_seq": missed1 - missed0 + tail, "kernel_drops": drops,
                "agent_cpu_s": cpu, "others_pct": round(max(0.0, 100.0 * others / elapsed), 1)}

    def sustained(self) -> None:
        p, r = self.plan, self.r
        _say(f"sustained: {p.sustained_rate:,}/s for {p.sustained_s:g} s")
        ph = self._rate_phase(p.sustained_rate, p.sustained_s)
        r["sustained_rate"] = p.sustained_rate
        r["sustained_s"] = round(ph["elapsed"], 2)
        r["sustained_sent"] = ph["sent"]
        r["sustained_processed"] = ph["processed"]
        r["sustained_offered_rate"] = round(ph["sent"] / ph["elapsed"], 1)
        r["lost"] = ph["lost"]
        r["lost_by_seq"] = ph["lost_by_seq"]
        r["kernel_drops"] = ph["kernel_drops"]
        r["sustained_cpu_pct"] = round(100.0 * ph["agent_cpu_s"] / ph["elapsed"], 1)
        r["sustained_others_pct"] = ph["others_pct"]
        r["sustained_generator_cpu_pct"] = round(100.0 * ph["gen_cpu_s"] / ph["elapsed"], 1)
        self._check_false_offline()

    def _check_false_offline(self) -> None:
        table = self._hosts()
        names = self.layout.names
        victims = {names[i] for i in self.victims}
        self.false_offline |= {n for n in names if n not in victims
                               and table[n]["availability"] != "online"}
        self.log.poll()
        self.false_offline |= {m.group(1) for _, m in self.log.find(r"(\S+) going offline")
                               if m.group(1) in table and m.group(1) not in victims
                               and m.group(1) not in (CLIENT_HOST, AGENT_HOST)}
        self.r["false_offline"] = len(self.false_offline)

    def capacity(self) -> None:
        """The generator as fast as it can, at the agent, then at the bare loop."""
        p, r = self.plan, self.r
        _say(f"capacity: agent, {p.capacity_s:g} s")
        ph = self._rate_phase(0, p.capacity_s)
        self._check_false_offline()
        r["offered_rate"] = round(ph["sent"] / ph["elapsed"], 1)
        r["agent_rate"] = round(ph["processed"] / ph["elapsed"], 1)
        r["capacity_s"] = round(ph["elapsed"], 2)
        r["capacity_sent"] = ph["sent"]
        r["capacity_processed"] = ph["processed"]
        r["capacity_lost"] = ph["lost"]
        r["capacity_lost_by_seq"] = ph["lost_by_seq"]
        r["capacity_kernel_drops"] = ph["kernel_drops"]
        r["capacity_agent_cpu_pct"] = round(100.0 * ph["agent_cpu_s"] / ph["elapsed"], 1)
        r["agent_rate_per_cpu_s"] = round(ph["processed"] / ph["agent_cpu_s"], 1) \
            if ph["agent_cpu_s"] else None
        r["capacity_others_pct"] = ph["others_pct"]
        r["capacity_generator_cpu_pct"] = round(100.0 * ph["gen_cpu_s"] / ph["elapsed"], 1)
        self._stop(self.agent)
        _say(f"capacity: bare recvfrom_into loop, {p.capacity_s:g} s")
        base = self._baseline(p.capacity_s)
        r["baseline_offered_rate"] = round(base["sent"] / base["elapsed"], 1)
        r["baseline_rate"] = round(base["received"] / base["elapsed"], 1)
        r["baseline_lost"] = base["sent"] - base["received"]
        r["baseline_cpu_pct"] = round(100.0 * base["cpu_s"] / base["elapsed"], 1)
        r["baseline_others_pct"] = round(max(0.0, 100.0 * (base["core_busy_s"] - base["cpu_s"])
                                             / base["elapsed"]), 1)
        r["baseline_rate_per_cpu_s"] = round(base["received"] / base["cpu_s"], 1) \
            if base["cpu_s"] else None
        r["ratio"] = round(r["agent_rate"] / r["baseline_rate"], 4) if r["baseline_rate"] else 0.0

    def _baseline(self, duration: float) -> dict:
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe()
        rx = self.layout.agent_rx
        addrs = [(rx[net], net != Net.PXEBOOT) for net in Net]
        proc = ctx.Process(target=_baseline_main, daemon=True, name="mtce-bench-baseline",
                           args=(child, addrs, transport.AGENT_RCVBUF, self.agent_cpus))
        proc.start()
        child.close()
        try:
            if not parent.poll(10) or parent.recv() != "ready":
                raise BenchError("the baseline loop did not start")
            core = CoreMeter(min(self.agent_cpus))
            gen = self.gen.rate(0, duration)
            busy = core.busy_s()
            time.sleep(0.5)
            parent.send("stop")
            if not parent.poll(10):
                raise BenchError("the baseline loop did not answer")
            got = parent.recv()
        finally:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        return {"sent": gen["sent"], "elapsed": gen["elapsed"], "core_busy_s": busy, **got}


def _all_ok(h: dict | None) -> bool:
    return bool(h) and h["availability"] == "online" and all(
        n["state"] == "ok" for n in h["networks"].values())


def _median_run(argv: list, runs: int) -> float:
    subprocess.run(argv, capture_output=True, timeout=30, check=False)   # warm the caches
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, capture_output=True, timeout=30, check=True)
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 4)


def _tail(path: str, lines: int = 25) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


# -- report -----------------------------------------------------------------------------------

CONTRACT_KEYS = ("agent_rate", "baseline_rate", "ratio", "offered_rate", "lost", "kernel_drops",
                 "cpu_pct_2000_hosts", "offline_detect_error", "pxeboot_detect_error",
                 "false_offline", "client_rss_mib", "client_idle_cpu_pct", "first_mtcalive",
                 "pyz_startup", "duration")


def met(r: dict) -> dict:
    return {t.key: bool(t.met(r)) for t in TARGETS}


def _measured(key: str, r: dict) -> str:
    if key == "agent_rate":
        return (f"{r['agent_rate']:,.0f}/s of {r['offered_rate']:,.0f}/s offered "
                f"({_bound(r['capacity_lost'])}; agent CPU {r['capacity_agent_cpu_pct']:.0f}%, "
                f"{r['agent_rate_per_cpu_s'] or 0:,.0f} per CPU-second)")
    if key == "ratio":
        return (f"{100 * r['ratio']:.0f}% (bare loop {r['baseline_rate']:,.0f}/s of "
                f"{r['baseline_offered_rate']:,.0f}/s offered, {_bound(r['baseline_lost'])}; "
                f"its CPU {r['baseline_cpu_pct']:.0f}%, "
                f"{r['baseline_rate_per_cpu_s'] or 0:,.0f} per CPU-second)")
    if key == "lost":
        return (f"{r['lost']:,} (by sequence {r['lost_by_seq']:,}) of {r['sustained_sent']:,} at "
                f"{r['sustained_offered_rate']:,.0f}/s for {r['sustained_s']:g} s")
    if key == "kernel_drops":
        return f"{r['kernel_drops']:,}"
    if key == "cpu_pct_2000_hosts":
        return (f"{r['cpu_pct_2000_hosts']:.2f}% ({r['cpu_s_per_1000']} CPU-s per 1,000 over "
                f"{r['steady_window_s']:g} s, {r['hosts']} hosts x 3 every {r['period_s']:g} s)")
    if key == "offline_detect_error":
        return (f"{r['offline_detect_error']:+.3f} s ({r['offline_detect']:.3f} vs "
                f"{r['offline_configured']:g}; audit {r['offline_audit_period']:g} s)")
    if key == "pxeboot_detect_error":
        return (f"{r['pxeboot_detect_error']:+.3f} s ({r['pxeboot_detect']:.3f} vs "
                f"{r['pxeboot_configured']:g}; window {r['pxeboot_audit_period']:g} s)")
    if key == "false_offline":
        return f"{r['false_offline']} (false pxeboot loss {r['false_pxeboot_loss']})"
    if key == "client_rss_mib":
        return f"{r['client_rss_mib']:.1f} MiB (peak {r['client_rss_peak_mib']:.1f})"
    if key == "client_idle_cpu_pct":
        return (f"{r['client_idle_cpu_pct']:.3f}% ({r['client_cpu_s_10min']:.2f} CPU-s per 10 "
                f"min, from a {r['client_idle_sample_s']:g} s sample)")
    if key == "first_mtcalive":
        nets = ", ".join(f"{k} {v:.2f}" for k, v in r["first_mtcalive_by_network"].items())
        return f"{r['first_mtcalive']:.3f} s (first per network: {nets})"
    if key == "pyz_startup":
        if r["pyz_startup"] is None:
            return f"n/a: {r['pyz_startup_note']}"
        return (f"{1000 * r['pyz_startup']:.0f} ms (bare python "
                f"{1000 * r['python_startup']:.0f} ms)")
    return str(r.get(key))


def _bound(lost: int) -> str:
    """Who set the pace: a receiver that lost nothing was held back by the generator."""
    return f"lost {lost:,}: receiver-bound" if lost else "lost 0: generator-bound"


def table(r: dict) -> str:
    ok = met(r)
    rows = [("figure", "target", "measured", "met")]
    for t in TARGETS:
        rows.append((t.figure, t.target, _measured(t.key, r), "yes" if ok[t.key] else "NO"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [(f"mtce bench: {r['hosts']} simulated hosts, {r['cpus']} CPUs, Python "
              f"{r['python']}, run took {r['duration']:g} s")]
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[3])
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ---")
    lines.append(f"generator: {r['sustained_generator_cpu_pct']:.0f}% CPU at "
                 f"{r['sustained_rate']:,}/s, {r['capacity_generator_cpu_pct']:.0f}% flat out "
                 f"({r['offered_rate']:,.0f}/s); steady schedule at most "
                 f"{1000 * r['generator_max_late_s']:.0f} ms late")
    lines.append(f"other processes on the agent's core: steady {r['steady_others_pct']:.0f}%, "
                 f"sustained {r['sustained_others_pct']:.0f}%, capacity "
                 f"{r['capacity_others_pct']:.0f}%, bare loop {r['baseline_others_pct']:.0f}%")
    busiest = max(r[k] for k in ("steady_others_pct", "sustained_others_pct",
                                  "capacity_others_pct", "baseline_others_pct"))
    if busiest > BUSY_WARN_PCT:
        lines.append(f"WARNING: other processes took up to {busiest:.0f}% of the agent's core: "
                     f"rates, losses and times above are not the agent's own")
    return "\n".join(lines)


def main(args) -> int:
    plan = QUICK if getattr(args, "quick", False) else FULL
    root = tempfile.mkdtemp(prefix="mtce-bench-")
    bench = None
    try:
        bench = Bench(plan, root)
        result = bench.run()
    except (BenchError, ctl.CtlError) as err:
        print(f"mtce bench: {err}", file=sys.stderr)
        return 1
    finally:
        if bench is not None:
            bench.close()
        shutil.rmtree(root, ignore_errors=True)
    result["met"] = met(result)
    if args.json:
        print(table(result), file=sys.stderr)   # the same run, for a human reading along
        print(json.dumps(result, indent=1))
    else:
        print(table(result))
    return 0
