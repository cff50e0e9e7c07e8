"""The soak fuzzer: random and mutated datagrams against a running mtcAgent and mtcClient.

Datagrams are grown from valid seeds (mtcAlive, ready event, commands, ACKs, pxebootInfo
requests) with the mutations of issue 8: flipped bytes, truncation, oversize, another
signature/version/command, huge or negative numbers, invalid UTF-8 and invalid JSON; some are
plain random bytes. They go to every receive address of the target (mgmt, cluster-host,
pxeboot), paced at `rate` per second, from two kinds of source address on 127.x:

* unknown addresses (no host owns them): anything goes. The agent must count and drop them
  (no host is created or moved from the network) and the client must refuse every command.
* the real hosts' own addresses (for the client: the controllers' and its own), spoofed.
  From there a well-formed message is legitimately believed: a valid mtcAlive with a garbage
  sequence number moves `missed`/`out_of_sequence`, a ready event changes the pxeboot
  monitoring, an ACK is the host's word, a command to the client is obeyed. So this part only
  sends what must change nothing whatever its source: datagrams that do not decode, an
  mtcAlive whose JSON does not parse or has no valid personality (docs/contract.md §8), a
  ready event that does not parse, messages a daemon does not handle, and to a client commands for
  another MAC and the commands it only ACKs (loopback, goEnabled requests, host services,
  unsupported codes) or only logs (info, sync). `agent_safe_from_host` and
  `client_safe_from_trusted` make that choice, message by message.

"Host states unchanged" is then checked by the caller's `probe`: a snapshot (availability,
administrative state, addresses, per-network state, missed, out_of_sequence, the pxeboot
monitor, alarms, the client's actions and lock files) taken before and after; `last_seq` and
`last_seen_s` move with the real traffic and are not part of it. One change is not the fuzz's
doing but the flood's: a real mtcAlive that the kernel dropped from a full receive queue adds
one to that host's `missed` (README: availability against a flood is not protected); up to the
socket's own drop count (/proc/net/udp) such changes are reported as excused, not as state
changes.

    python3 tests/harness/soak.py --agent 127.1.2.1:2101:mgmt ... --count 100000   (see --help)

sends to daemons that are already running (the lab, say) and checks what it can from pids,
logs and the agent's control socket; the tests start theirs through the `daemons` fixture.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

if __name__ == "__main__":     # imported by the tests, conftest has chosen which mtce
    sys.path.insert(0, os.environ.get("MTCE_PATH", os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))))

from mtce import alive  # noqa: E402
from mtce.states import EVENT_MONITOR_READY, Cmd, Net  # noqa: E402

# Issue 11: any mix of hostile datagrams gives at most this many log lines per daemon (the
# noise budget of agent.py and client.py, plus the once-a-minute summaries).
LOG_BOUND = 60
# Commands a client only ACKs, or only logs: from a controller's address with the right MAC
# they are obeyed, and obeying them changes nothing (docs/protocol.md §2).
ACK_ONLY = (Cmd.LOOPBACK, Cmd.REQ_MAIN_GOENABLED, Cmd.REQ_SUBF_GOENABLED,
            Cmd.STOP_CONTROL_SVCS, Cmd.STOP_WORKER_SVCS, Cmd.STOP_STORAGE_SVCS,
            Cmd.START_CONTROL_SVCS, Cmd.START_WORKER_SVCS, Cmd.START_STORAGE_SVCS,
            Cmd.HOST_SVCS_RESULT, Cmd.NONE, Cmd.LAST, 26, 99, 0xDEAD, 0xFFFFFFFF)
LOG_ONLY = (Cmd.INFO, Cmd.SYNC)
NET_NAMES = {"mgmt": Net.MGMT, "cluster-host": Net.CLSTR, "pxeboot": Net.PXEBOOT}

# -- targets and results ----------------------------------------------------------------------

@dataclass
class HostInfo:
    """A real host as the fuzzer imitates it."""
    name: str
    mac: str
    mgmt: str
    clstr: str = ""
    pxeboot: str = ""
    personality: str = "worker"


@dataclass
class Target:
    """A running daemon: where it listens, who it believes, how to look at it."""
    name: str                               # "agent", "client worker-0"
    kind: str                               # "agent" | "client"
    pid: int
    dests: list                             # [(ip, port, "mgmt"|"cluster-host"|"pxeboot")]
    seeds: list                             # valid datagrams to mutate
    unknown_sources: list                   # addresses no host owns
    known_sources: list                     # real addresses, spoofed (safe datagrams only)
    log_path: str | None = None
    probe: Callable[[], dict] | None = None     # state snapshot; compared before/after
    counters: Callable[[], dict] | None = None  # the agent's `status` counters
    mac: str = ""                           # client: its mgmt MAC (target-MAC check)
    own: tuple = ()                         # client: its mgmt and cluster-host addresses


@dataclass
class Result:
    target: str
    datagrams: int = 0
    from_host_addresses: int = 0
    send_errors: int = 0
    crashes: int = 0
    state_changes: int = 0
    changes: list = field(default_factory=list)
    excused: list = field(default_factory=list)     # `missed` the kernel's drops explain
    log_lines: int = 0
    log_bound: int = 0
    repeated_causes: list = field(default_factory=list)
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    kernel_drops: int = 0
    seconds: float = 0.0
    received: dict = field(default_factory=dict)
    tried: dict = field(default_factory=dict)
    alive: bool = True

    @property
    def rss_growth_pct(self) -> float:
        """RSS growth after the warm-up (nan when the pid is not known)."""
        if not self.rss_before_kib:
            return float("nan")
        return 100.0 * (self.rss_after_kib - self.rss_before_kib) / self.rss_before_kib

    def summary(self) -> str:
        per_s = self.datagrams / max(self.seconds, 1e-9)
        extra = f"{self.target}: {self.seconds:.1f} s, {per_s:.0f}/s"
        extra += f", {self.from_host_addresses} from real hosts' addresses"
        extra += f", {self.kernel_drops} kernel drops"
        if self.excused:
            extra += f", {len(self.excused)} missed-counter changes from kernel drops"
        if self.send_errors:
            extra += f", {self.send_errors} send errors"
        return (f"fuzz: {self.datagrams} datagrams, {self.crashes} crashes, "
                f"{self.state_changes} state changes, {self.log_lines} log lines, "
                f"rss {self.rss_growth_pct:+.1f}% [{extra}]")

    def details(self) -> str:
        tried = " ".join(f"{k}:{v}" for k, v in sorted(self.tried.items()))
        got = " ".join(f"{k}:{v}" for k, v in self.received.items())
        line = f"soak: {self.target} tried (mutations, 1-3 each) {tried}"
        if got:
            line += f" ; daemon counted {got}"
        line += (f" ; rss {self.rss_before_kib} -> {self.rss_after_kib} KiB ; log bound "
                 f"{self.log_bound}")
        if self.changes:
            line += f" ; changes: {self.changes[:5]}"
        if self.excused:
            line += f" ; excused by kernel drops: {self.excused[:5]}"
        if self.repeated_causes:
            line += f" ; repeated: {self.repeated_causes[:3]}"
        return line


# -- seeds ------------------------------------------------------------------------------------

def agent_seeds(hosts: list[HostInfo], controller_pxeboot: str = "") -> list[bytes]:
    """What an agent receives: mtcAlive on each network, ready events, ACKs, and the rest."""
    out = []
    for h in hosts:
        ident = alive.Identity(h.name, h.personality, h.pxeboot, h.mgmt, h.clstr, h.mac)
        for net in Net:
            out.append(alive.mtcalive(ident, net, 1000, uptime=3600, health=1, flags=0x5))
        out.append(alive.ready_event(h.name, controller_pxeboot))
        for cmd in (Cmd.REBOOT, Cmd.RESET, Cmd.LAZY_REBOOT, Cmd.LOCKED, Cmd.UNLOCKED):
            out.append(alive.ack(alive.decode(alive.command(cmd, h.mac, "{}"))))
        out.append(alive.pack(alive.SIG_MESSAGE, cmd=Cmd.MAIN_GOENABLED,
                              text=alive.json_text({"hostname": h.name})))
    h = hosts[0]
    out.append(alive.command(Cmd.REQ_MTCALIVE, h.mac, alive.pxeboot_info(
        controller_pxeboot, controller_pxeboot, "")))
    out.append(alive.pack(alive.SIG_LOOPBACK, text="{}"))
    return out


def client_seeds(h: HostInfo, controller: str, c_pxeboot: tuple = ("", "")) -> list[bytes]:
    """What a client receives: every command for its MAC, pxebootInfo requests, and the rest."""
    out = []
    for net in Net:
        data = alive.default_data(controller, net)
        for cmd in (Cmd.REBOOT, Cmd.RESET, Cmd.LOCKED, Cmd.UNLOCKED, Cmd.WIPEDISK, Cmd.LOOPBACK,
                    Cmd.INFO, Cmd.SUBF_GOENABLED_FAILED, Cmd.REQ_MAIN_GOENABLED):
            out.append(alive.command(cmd, h.mac, data))
        out.append(alive.command(Cmd.LAZY_REBOOT, h.mac, data, num=1, parm=(15,)))
        out.append(alive.command(Cmd.LOCKED, h.mac, data, num=1, parm=(1,)))
        for cmd in ACK_ONLY + LOG_ONLY:
            out.append(alive.command(cmd, h.mac, data, num=2, parm=(7, 9)))
    out.append(alive.command(Cmd.REQ_MTCALIVE, h.mac, alive.pxeboot_info(
        c_pxeboot[0], c_pxeboot[0], c_pxeboot[1])))
    out.append(alive.command(Cmd.REQ_MTCALIVE, h.mac, alive.pxeboot_info("", "", "")))
    out.append(alive.ack(alive.decode(alive.command(Cmd.REBOOT, h.mac, "{}"))))
    ident = alive.Identity(h.name, h.personality, h.pxeboot, h.mgmt, h.clstr, h.mac)
    out.append(alive.mtcalive(ident, Net.MGMT, 7))
    out.append(alive.ready_event(h.name, c_pxeboot[0]))
    out.append(alive.pack(alive.SIG_REP_MSG, cmd=Cmd.MAIN_GOENABLED, text="{}"))
    return out


# -- mutations --------------------------------------------------------------------------------

_NUMBERS = (b"-1", b"-2147483649", b"4294967296", b"18446744073709551616", b"1e309", b"-1e309",
            b"NaN", b"Infinity", b"1.5", b"-0", b'"12"', b"null", b"[]", b"9" * 400)
_BAD_UTF8 = (b"\xff", b"\xfe\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc3",
             b"\xe2\x82")
_BAD_JSON = (b"{", b"}", b"[" * 950, b"{" * 400, b'{"hostname":', b"{'hostname':'x'}",
             b'{"hostname":"x","hostname":5}', b'{"hostname":5}', b'{"features":"x"}',
             b"null", b"[1,2]", b'"string"', b"", b"\x00", b'{"pxebootInfo":[]}',
             b'{"pxebootInfo":{"controller":5}}', b'{"a":1e999999}')
_FIELDS = ((64, 2), (66, 2), (68, 4), (72, 4), (76, 4), (80, 4), (84, 4), (88, 4), (92, 4),
           (96, 4))
_SEQ_RE = re.compile(rb'"(sequence|hostname|interface|address|controller)":("[^"]*"|-?\d+)')


class Mutator:
    """Seeded datagram factory: `next()` gives (kind, datagram)."""

    def __init__(self, seeds: list[bytes], rng: random.Random):
        self.seeds = [bytes(s) for s in seeds]
        self.rng = rng
        self.pool = rng.randbytes(1 << 16)
        self.ops = (self.flip, self.truncate, self.oversize, self.signature, self.version,
                    self.command, self.numbers, self.utf8, self.json, self.nul, self.mac)

    def _random(self, n: int) -> bytes:
        start = self.rng.randrange(0, len(self.pool) - n) if n < len(self.pool) else 0
        return self.pool[start:start + n]

    def next(self) -> tuple[str, bytes]:
        rng = self.rng
        if rng.random() < 0.08:
            n = rng.choice((rng.randrange(0, 100), rng.randrange(100, 1061),
                            rng.randrange(1061, 2100), rng.randrange(2100, 9000)))
            return "random", self._random(n)
        data = bytearray(rng.choice(self.seeds))
        kinds = []
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            op = rng.choice(self.ops)
            op(data)
            kinds.append(op.__name__)
        return "+".join(sorted(set(kinds))), bytes(data)

    # Each mutation edits the datagram in place.
    def flip(self, d: bytearray) -> None:
        for _ in range(self.rng.choice((1, 1, 2, 4, 16))):
            if d:
                d[self.rng.randrange(len(d))] ^= self.rng.randrange(1, 256)

    def truncate(self, d: bytearray) -> None:
        r = self.rng
        cut = r.choice((r.randrange(0, 100), 99, 100, 101, r.randrange(0, len(d) + 1),
                        len(d) - 1))
        del d[max(0, cut):]

    def oversize(self, d: bytearray) -> None:
        r = self.rng
        want = r.choice((1061, 1062, r.randrange(1061, 2048), 2048, 2049,
                         r.randrange(2049, 9000)))
        if len(d) < want:
            d += self._random(want - len(d))

    def signature(self, d: bytearray) -> None:
        r = self.rng
        if len(d) < 17:
            return
        sig = r.choice(alive.SIGNATURES)
        how = r.randrange(3)
        if how == 0:
            d[0:17] = sig
        elif how == 1:
            near = bytearray(sig)
            near[r.randrange(17)] ^= 1 << r.randrange(8)
            d[0:17] = near
        else:
            d[0:17] = self._random(17)

    def _field(self, d: bytearray, off: int, size: int, value: int) -> None:
        if len(d) >= off + size:
            d[off:off + size] = (value % (1 << (8 * size))).to_bytes(size, "little")

    def version(self, d: bytearray) -> None:
        self._field(d, 64, 2, self.rng.choice((0, 1, 2, 0x7FFF, 0xFFFF)))
        if self.rng.random() < 0.3:
            self._field(d, 66, 2, self.rng.randrange(1 << 16))

    def command(self, d: bytearray) -> None:
        r = self.rng
        self._field(d, 72, 4, r.choice((r.randrange(0, int(Cmd.LAST) + 2), EVENT_MONITOR_READY,
                                        0xFFFFFFFF, 0x80000000, r.randrange(1 << 32))))

    def numbers(self, d: bytearray) -> None:
        r = self.rng
        if r.random() < 0.5:
            off, size = r.choice(_FIELDS)
            self._field(d, off, size, r.choice((0, 1, (1 << 31) - 1, 1 << 31, (1 << 32) - 1,
                                                -1, r.randrange(1 << 32))))
            return
        text = bytes(d[100:])
        m = _SEQ_RE.search(text, r.randrange(0, max(1, len(text) // 2)))
        if m:
            start, end = 100 + m.start(2), 100 + m.end(2)
            d[start:end] = r.choice(_NUMBERS)

    def utf8(self, d: bytearray) -> None:
        if len(d) > 100:
            i = self.rng.randrange(100, len(d) + 1)
            bad = self.rng.choice(_BAD_UTF8)
            if self.rng.random() < 0.5:
                d[i:i] = bad
            else:
                d[i:i + len(bad)] = bad

    def json(self, d: bytearray) -> None:
        r = self.rng
        if len(d) < 100:
            return
        how = r.randrange(3)
        if how == 0:
            d[100:] = r.choice(_BAD_JSON) + b"\0"
        elif how == 1:                         # the JSON cut short (the NUL may stay)
            end = d.find(b"\0", 100)
            end = len(d) if end < 0 else end
            if end > 100:
                del d[r.randrange(100, end):end]
        else:                                  # braces and quotes swapped around
            for _ in range(4):
                if len(d) > 101:
                    d[r.randrange(100, len(d))] = r.choice(b'{}[]",:\\')

    def nul(self, d: bytearray) -> None:
        if len(d) > 100:
            r = self.rng
            if r.random() < 0.5 and d[-1:] == b"\0":
                del d[-1]                      # no terminating NUL
            else:
                d.insert(r.randrange(100, len(d) + 1), 0)

    def mac(self, d: bytearray) -> None:
        if len(d) >= 34:
            r = self.rng
            i = r.randrange(17, 34)
            d[i] = r.choice(b"0123456789abcdefABCDEF:\0 ")


# -- what may come from a real host's address -------------------------------------------------

def agent_safe_from_host(data: bytes) -> bool:
    """True if the agent must drop `data` even from a host's own address (module docstring)."""
    msg, _ = alive.try_decode(data)
    if msg is None:
        return True
    if msg.sig == alive.SIG_MESSAGE:
        if msg.cmd != Cmd.MTCALIVE:
            return True                        # goEnabled and co: not handled by mtce
        try:                                   # docs/contract.md §8: only a valid mtcAlive counts
            alive.parse_mtcalive(msg.buf)
        except alive.DecodeError:
            return True
        return False
    if msg.sig == alive.SIG_EVENT:
        if msg.cmd != EVENT_MONITOR_READY:
            return True
        try:
            alive.parse_ready_event(msg)
        except alive.DecodeError:
            return True
        return False                           # a ready event changes pxeboot monitoring
    return msg.sig != alive.SIG_CMD_RSP        # an ACK is the host's word


def client_safe_from_trusted(data: bytes, src: str, own: tuple, mac: str) -> bool:
    """True if obeying `data` changes nothing on the client, even from a controller's or its
    own address: it is dropped, or it is a command the client only ACKs or logs."""
    msg, _ = alive.try_decode(data)
    if msg is None:
        return True
    if src not in own and msg.ver >= 1 and msg.mac.lower() != mac.lower():
        return True                            # a command for another host
    if msg.sig == alive.SIG_CMD_REQ:
        return msg.cmd in ACK_ONLY or msg.cmd in LOG_ONLY
    return msg.sig != alive.SIG_REP_MSG


# -- /proc ------------------------------------------------------------------------------------

def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _hex_addr(ip: str, port: int) -> str:
    return f"{int.from_bytes(socket.inet_aton(ip), 'little'):08X}:{port:04X}"


def udp_sockets(dests) -> dict:
    """(rx_queue bytes, drops) of the sockets bound to each (ip, port), from /proc/net/udp."""
    want = {_hex_addr(ip, port): (ip, port) for ip, port, _ in dests}
    out = {}
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1] in want:
                    rx = int(parts[4].split(":")[1], 16)
                    out[want[parts[1]]] = (rx, int(parts[-1]))
    except OSError:
        pass
    return out


def _wait(predicate, timeout: float, interval: float = 0.05):
    try:
        from harness.env import wait_until
    except ImportError:                        # run by hand outside the tests directory
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            time.sleep(interval)
        return predicate()
    try:
        return wait_until(predicate, timeout, interval)
    except AssertionError:
        return None


def _drained(target: Target):
    """True once the target's receive queues are empty (it has read everything sent)."""
    qs = udp_sockets(target.dests)
    return all(rx == 0 for rx, _ in qs.values())


def _log_size(path: str | None) -> int:
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def _log_since(path: str | None, offset: int) -> list[str]:
    if not path:
        return []
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace").splitlines()


_NORMALIZE = re.compile(r"\d+")
_PREFIX = re.compile(r"^\S+ \[[\d.]+\] ")


def _cause(line: str) -> str:
    return _NORMALIZE.sub("#", _PREFIX.sub("", line))


_MISSED = re.compile(r"^/hosts/[^/]+/networks/([^/]+)/missed: (\d+) -> (\d+)$")


def excuse_drops(changes: list[str], drops_by_net: dict) -> tuple[list, list]:
    """(changes, excused): a real mtcAlive the kernel dropped from a flooded receive queue
    adds one to `missed`, which is the documented limit (README, Security: "availability
    against a flood that fills the receive buffers"), not a decoding fault. Per network, up
    to that socket's drops are excused; anything else stays a change."""
    budget = dict(drops_by_net)
    kept, excused = [], []
    for change in changes:
        m = _MISSED.match(change)
        if m and 0 < int(m[3]) - int(m[2]) <= budget.get(m[1], 0):
            budget[m[1]] -= int(m[3]) - int(m[2])
            excused.append(change)
        else:
            kept.append(change)
    return kept, excused


def _diff(before, after, path="") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for k in sorted(set(before) | set(after), key=str):
            out += _diff(before.get(k), after.get(k), f"{path}/{k}")
        return out
    return [] if before == after else [f"{path}: {before!r} -> {after!r}"]


# -- the fuzzer -------------------------------------------------------------------------------

def _sockets(addresses) -> dict:
    socks = {}
    for addr in dict.fromkeys(addresses):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((addr, 0))
        except OSError:
            s.close()
            continue
        socks[addr] = s
    return socks


def blast(target: Target, count: int, rng: random.Random, rate: float, result: Result,
          host_share: float = 0.3) -> None:
    """Send `count` datagrams to `target`, paced at `rate` per second. Bounded: it gives up
    (and the result shows fewer datagrams) after twice the planned time plus 30 s."""
    mut = Mutator(target.seeds, rng)
    unknown = _sockets(target.unknown_sources)
    known = _sockets(target.known_sources)
    if not unknown:
        raise RuntimeError(f"cannot bind any of {target.unknown_sources}")
    unknown_list, known_list = list(unknown.items()), list(known.items())
    dests = [(ip, port) for ip, port, _ in target.dests]
    is_agent = target.kind == "agent"
    tried = result.tried
    t0 = time.monotonic()
    give_up_at = t0 + 2 * count / rate + 30
    sent = 0
    try:
        while sent < count:
            kind, data = mut.next()
            from_host = known_list and rng.random() < host_share
            src, sock = rng.choice(known_list if from_host else unknown_list)
            if from_host:
                safe = agent_safe_from_host(data) if is_agent else \
                    client_safe_from_trusted(data, src, target.own, target.mac)
                if not safe:
                    src, sock = rng.choice(unknown_list)
                    from_host = False
            try:
                sock.sendto(data, rng.choice(dests))
            except OSError:
                result.send_errors += 1
            sent += 1
            result.from_host_addresses += bool(from_host)
            for k in kind.split("+"):
                tried[k] = tried.get(k, 0) + 1
            if not sent & 63:
                now = time.monotonic()
                ahead = t0 + sent / rate - now
                if ahead > 0:
                    time.sleep(ahead)          # pacing, not waiting for a condition
                elif ahead < -0.005:
                    t0 = now - sent / rate     # late (descheduled): no catch-up burst
                if now > give_up_at:
                    break
    finally:
        for s in list(unknown.values()) + list(known.values()):
            s.close()
    result.datagrams += sent


def soak_one(target: Target, count: int, seed: int, rate: float,
             warmup: int | None = None) -> Result:
    """Warm-up, measure, fuzz, measure again: one target's Result. The warm-up (a
    twentieth, at most 50,000) is part of `count`; RSS growth is measured after it, log
    lines and state from before it."""
    result = Result(target.name)
    rng = random.Random(f"{seed}:{target.name}")
    warmup = min(max(count // 20, 2000), 50_000) if warmup is None else warmup
    drops0 = udp_sockets(target.dests)
    before = target.probe() if target.probe else {}
    counters0 = target.counters() if target.counters else {}
    log0 = _log_size(target.log_path)
    t0 = time.monotonic()
    blast(target, warmup, rng, rate, result)
    _wait(lambda: _drained(target), 30)
    result.rss_before_kib = rss_kib(target.pid)
    blast(target, max(0, count - warmup), rng, rate, result)
    _wait(lambda: _drained(target), 60)
    result.seconds = time.monotonic() - t0
    result.rss_after_kib = rss_kib(target.pid)
    result.alive = running(target.pid) if target.pid else True     # by hand: pid unknown
    drops1 = udp_sockets(target.dests)
    drops_by_net = {net: drops1.get((ip, port), (0, 0))[1] - drops0.get((ip, port), (0, 0))[1]
                    for ip, port, net in target.dests}
    result.kernel_drops = sum(drops_by_net.values())
    if target.counters and result.alive:
        counters1 = target.counters()
        result.received = {k: counters1.get(k, 0) - counters0.get(k, 0) for k in counters1
                           if isinstance(counters1.get(k), int)}
    after = target.probe() if (target.probe and result.alive) else {}
    result.changes, result.excused = excuse_drops(
        _diff(before, after) if target.probe else [], drops_by_net)
    result.state_changes = len(result.changes)
    lines = _log_since(target.log_path, log0)
    result.log_lines = len(lines)
    result.crashes = (not result.alive) + sum(1 for line in lines if line.startswith(
        "Traceback (most recent call last)"))
    windows = math.ceil(result.seconds / 60.0) + 1
    result.log_bound = LOG_BOUND
    causes: dict = {}
    for line in lines:
        if line[:1].isdigit():                 # a log line, not a traceback's continuation
            c = _cause(line)
            causes[c] = causes.get(c, 0) + 1
    # Throttle causes are per network; a line that does not name its network (the client's
    # "WARNING: mtcClient is receiving mtcAgent bound mtcAlive messages") may come 3 times.
    result.repeated_causes = [f"{n}x {c[:120]}" for c, n in causes.items()
                              if n > windows * len(NET_NAMES)]
    return result


def run(agent_targets, client_targets, count: int, seed: int = 1, rate: float = 25_000,
        out=print) -> list[Result]:
    """Soak every target in turn with `count` datagrams each; print two lines per target."""
    results = []
    for target in list(agent_targets) + list(client_targets):
        result = soak_one(target, count, seed, rate)
        if out:
            out(result.details())
            out(result.summary())
        results.append(result)
    return results


def problems(result: Result, rss_limit_pct: float = 5.0) -> list[str]:
    """What a result breaks of issue 8's properties (empty: all hold)."""
    out = []
    if not result.alive:
        out.append("the daemon is not running")
    if result.crashes:
        out.append(f"{result.crashes} crashes (tracebacks or exit)")
    if result.state_changes:
        out.append(f"state changed: {result.changes}")
    if result.log_lines > result.log_bound:
        out.append(f"{result.log_lines} log lines > bound {result.log_bound}")
    if result.repeated_causes:
        out.append(f"a cause logged more than once a minute: {result.repeated_causes[:3]}")
    if result.rss_before_kib and not result.rss_growth_pct < rss_limit_pct:
        out.append(f"rss grew {result.rss_growth_pct:+.1f}% ({result.rss_before_kib} -> "
                   f"{result.rss_after_kib} KiB)")
    return out


# -- by hand ----------------------------------------------------------------------------------

def _dest(text: str):
    ip, port, net = text.split(":")
    if net not in NET_NAMES:
        raise argparse.ArgumentTypeError(f"network must be one of {', '.join(NET_NAMES)}")
    return ip, int(port), net


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Fuzz already-running mtce daemons on 127.x.")
    p.add_argument("--agent", type=_dest, action="append", default=[],
                   metavar="IP:PORT:NET", help="an agent receive address (repeat)")
    p.add_argument("--agent-pid", type=int)
    p.add_argument("--agent-log")
    p.add_argument("--agent-socket", help="the agent's control socket, for its state")
    p.add_argument("--client", type=_dest, action="append", default=[], metavar="IP:PORT:NET")
    p.add_argument("--client-pid", type=int)
    p.add_argument("--client-log")
    p.add_argument("--client-mac", default="08:00:27:5e:00:02")
    p.add_argument("--hostname", default="worker-0", help="the client's host name")
    p.add_argument("--unknown", action="append", default=[], metavar="IP",
                   help="a source address no host owns (default: .99 of the first target)")
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--rate", type=float, default=25_000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    for ip in [d[0] for d in args.agent + args.client] + args.unknown:
        if not ip.startswith("127."):
            p.error(f"{ip}: only 127.x addresses")
    first = (args.agent + args.client)[0][0] if (args.agent or args.client) else None
    if first is None:
        p.error("give --agent and/or --client addresses")
    unknown = args.unknown or [first.rsplit(".", 1)[0] + ".99"]
    host = HostInfo(args.hostname, args.client_mac, args.client[0][0] if args.client else "")
    agents, clients = [], []
    if args.agent:
        def probe(path=args.agent_socket):
            from mtce import cli_ctl
            reply = cli_ctl.request(path, {"cmd": "hosts"})
            return {h["hostname"]: {k: v for k, v in h.items() if k != "networks"}
                    for h in reply.get("hosts", [])}

        def counters(path=args.agent_socket):
            from mtce import cli_ctl
            return cli_ctl.request(path, {"cmd": "status"}).get("counters", {})
        agents.append(Target("agent", "agent", args.agent_pid or 0, args.agent,
                             agent_seeds([host]), unknown, [], args.agent_log,
                             probe if args.agent_socket else None,
                             counters if args.agent_socket else None))
    if args.client:
        clients.append(Target(f"client {args.hostname}", "client", args.client_pid or 0,
                              args.client, client_seeds(host, ""), unknown, [], args.client_log,
                              mac=args.client_mac))
    results = run(agents, clients, args.count, args.seed, args.rate)
    return 1 if any(problems(r) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
