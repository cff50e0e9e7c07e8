"""`mtce bench`'s load: the generator processes that send every simulated host's mtcAlive
from its own address (IP_PKTINFO, all of 127/8 is local), each stream's sequence number
patched in place, at a steady period, a fixed rate or as fast as they can; and the baseline,
a bare `recvfrom_into` loop on the agent's addresses."""

from __future__ import annotations

import multiprocessing
import os
import resource
import selectors
import signal
import socket
import struct
import time

from mtce import alive, transport
from mtce.bench_lab import (
    BenchError, IP_PKTINFO, Layout, MIB, PARM3_OFFSET, Plan, _NET_ORDER, _SEQ, _SEQ_KEY,
    host_addresses, host_mac,
)
from mtce.states import Net

# -- the load generator ------------------------------------------------------------------------

class Stream:
    """One simulated host's mtcAlive on one network: a reused buffer, patched per send."""

    __slots__ = ("host", "net", "identity", "dest", "anc", "seq", "buf", "at", "width",
                 "silent", "muted", "last_sent")

    def __init__(self, host: int, net: Net, identity: alive.Identity, source: str, dest):
        self.host, self.net, self.identity, self.dest = host, net, identity, dest
        self.anc = [(socket.IPPROTO_IP, IP_PKTINFO,
                     struct.pack("=I4s4s", 0, socket.inet_aton(source), bytes(4)))]
        self.seq = 0
        self.width = 0
        self.silent = False             # this host's stream stopped for good (a victim)
        self.muted = False              # the whole network stopped for a while (`mute`)
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

    def mute(self, net: int, on: bool) -> int:
        """Every host's stream on `net` stops (`on`) or starts again: the network fails at
        the agent's end; the streams muted now."""
        for st in self.streams:
            if st.net == net:
                st.muted = on
        return sum(st.muted for st in self.streams)

    def answer(self, conn, cmd) -> None:
        conn.send(self.silence(cmd[1], cmd[2]) if cmd[0] == "silence" else
                  self.mute(cmd[1], cmd[2]))

    def steady(self, conn, period: float, ready_every: int, agent_rx: dict) -> tuple:
        """Each host's tick once a period (spread evenly), until a command other than
        "silence" or "mute" arrives; returns (stats, that command)."""
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
                    if cmd[0] not in ("silence", "mute"):
                        return {"sent": self.sent - sent0, "elapsed": time.monotonic() - t0,
                                "cpu_s": _own_cpu() - cpu0, "max_late_s": late}, cmd
                    self.answer(conn, cmd)
                continue
            late = max(late, now - due)
            _, _, streams, ready, ready_anc = order[j]
            wall = time.time()
            if cycle:                   # as the client: the ready event first, a tick later
                for st in streams:      # the mtcAlive, and ready again every minute
                    if not st.silent and not st.muted and self.send(st):
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

    def burst(self) -> dict:
        """Every live stream's next datagram once, as fast as possible: every host answering
        a new agent's mtcAlive request at once (a takeover)."""
        sent0, errors0, cpu0 = self.sent, self.errors, _own_cpu()
        t0 = time.monotonic()
        send = self.send
        for st in self.streams:
            if not st.silent:
                send(st)
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
        elif cmd[0] == "burst":
            conn.send(sender.burst())
        elif cmd[0] == "seqs":
            conn.send(sender.seqs())
        elif cmd[0] in ("silence", "mute"):     # while idle
            sender.answer(conn, cmd)
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

    def mute(self, net: Net, on: bool) -> int:
        """Every host's `net` stops (`on`), or starts again; the streams muted now."""
        return sum(self._all(("mute", int(net), on), 10))

    def pause(self) -> dict:
        return _merge(self._all(("pause",), 10))

    def rate(self, total_rate: float, duration: float) -> dict:
        share = total_rate / len(self.workers) if total_rate else 0
        return _merge(self._all(("rate", share, duration), duration + 30))

    def burst(self) -> dict:
        """Every live stream once, all processes at the same time (see _Sender.burst)."""
        return _merge(self._all(("burst",), 30))

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

def _bare_sockets(addrs: list, rcvbuf: int, cpus) -> list:
    """A bare receiver's start (the baseline's, the floor's): on the agent's CPUs, its
    addresses bound with its receive buffer; ^C is the bench's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cpus:
        os.sched_setaffinity(0, cpus)
    return [transport.udp_socket(ip, port, reuseaddr=reuse, rcvbuf=rcvbuf)
            for (ip, port), reuse in addrs]


def _baseline_main(conn, addrs: list, rcvbuf: int, cpus) -> None:
    sel = selectors.DefaultSelector()
    for s in _bare_sockets(addrs, rcvbuf, cpus):
        sel.register(s, selectors.EVENT_READ)
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




# -- the floor: recvmmsg(2) through ctypes on the audit grid -------------------------------------

FLOOR_TICK_S = 0.1              # the sockets are read this often
FLOOR_CALL = 256                # datagrams a recvmmsg call reads


def _floor_main(conn, addrs: list, rcvbuf: int, cpus) -> None:
    """The cheapest pure-Python receiver (issue 25's floor): every FLOOR_TICK_S each socket is
    read to empty with recvmmsg, FLOOR_CALL a call, into buffers made once; it only counts."""
    socks = _bare_sockets(addrs, rcvbuf, cpus)
    from mtce import mmsg
    batch = mmsg.Batch(FLOOR_CALL, socket.AF_INET)
    call, headers, flags = batch.call, batch.headers, mmsg.MSG_DONTWAIT
    fds = [s.fileno() for s in socks]
    count = 0
    conn.send("ready")
    cpu0 = _own_cpu()
    tick = time.monotonic()
    while True:
        tick += FLOOR_TICK_S
        if conn.poll(max(0.0, tick - time.monotonic())):
            conn.recv()
            conn.send({"received": count, "cpu_s": _own_cpu() - cpu0})
            return
        for fd in fds:
            while True:
                got = call(fd, headers, FLOOR_CALL, flags, None)
                if got <= 0:
                    break
                count += got
                if got < FLOOR_CALL:
                    break
