"""A test agent: binds where mtcAgent would, checks every datagram a client sends against the
reference layout (independently of mtce.alive), and sends commands like mtcAgent does.

Checks follow docs/protocol.md §1-§3 byte by byte: header signature and zero padding, ver/rev/res,
cmd/num/parm, the sent length (100 + strlen + 1, or exactly 100 for an ACK), JSON key order,
`sequence` == parm[3], the `interface` of the network it arrived on, and per-socket sequence
numbers that go up by exactly one.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from dataclasses import dataclass, field

HEADER = struct.Struct("<64sHHIII5I")
MTCALIVE_KEYS = ["hostname", "personality", "pxeboot_ip", "mgmt_ip", "cluster_host_ip",
                 "mgmt_mac", "interface", "sequence"]
READY_KEYS = ["hostname", "service", "active_controller_pxeboot_address", "features"]
IFACE = {"mgmt": "Mgmnt", "cluster-host": "Clstr", "pxeboot": "Pxeboot"}


@dataclass
class Received:
    net: str
    where: str          # which peer socket: "mgmt", "clstr-c0", "pxeboot-c1", ...
    src: tuple
    data: bytes
    kind: str           # "mtcalive", "ready", "ack", "other"
    cmd: int
    parm: tuple
    body: dict = field(default_factory=dict)
    at: float = 0.0


class AgentPeer:
    def __init__(self, host, agent_port: int = 2101, pxeboot_port: int = 2102,
                 client_ports=(2118, 2115, 2119), controller1: bool = True,
                 authenticator=None):
        self.host = host
        self.auth = authenticator          # mtce.auth.Authenticator: sign and verify
        self.rejected: list[str] = []
        self._checkers: dict = {}          # one replay memory per receiving socket, as two
                                           # controllers each have their own
        self.client_ports = dict(zip(("mgmt", "cluster-host", "pxeboot"), client_ports))
        self.socks: dict[str, tuple[str, socket.socket]] = {}
        binds = [("mgmt", "mgmt", host.controller, agent_port),
                 ("clstr-c0", "cluster-host", host.c_clstr[0], agent_port),
                 ("pxeboot-c0", "pxeboot", host.c_pxeboot[0], pxeboot_port)]
        if controller1:
            binds += [("clstr-c1", "cluster-host", host.c_clstr[1], agent_port),
                      ("pxeboot-c1", "pxeboot", host.c_pxeboot[1], pxeboot_port)]
        for where, net, addr, port in binds:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, port))
            s.setblocking(False)
            self.socks[where] = (net, s)
            if authenticator is not None:        # from now on: it refuses what came before
                from mtce import auth
                self._checkers[where] = auth.Authenticator(
                    authenticator.keys, authenticator.require, authenticator.wall,
                    authenticator.mono)
        self.received: list[Received] = []
        self.errors: list[str] = []
        self._last_seq: dict[str, int] = {}

    def close(self) -> None:
        for _, s in self.socks.values():
            s.close()

    # -- receiving and checking --------------------------------------------------------------
    def poll(self, timeout: float = 0.05) -> int:
        fds = {s: (where, net) for where, (net, s) in self.socks.items()}
        ready, _, _ = select.select(list(fds), [], [], timeout)
        n = 0
        for s in ready:
            where, net = fds[s]
            while True:
                try:
                    data, src = s.recvfrom(4096)
                except BlockingIOError:
                    break
                if self.auth is not None:
                    payload, why = self._checkers[where].check(data)
                    if payload is None:
                        self.rejected.append(why)
                        continue
                    data = payload
                self._check(where, net, src, data)
                n += 1
        return n

    def _err(self, text: str) -> None:
        self.errors.append(text)

    def _check(self, where, net, src, data) -> None:
        if len(data) < 100 or len(data) > 1060:
            self._err(f"{where}: datagram of {len(data)} bytes")
            return
        hdr, ver, rev, res, cmd, num, *parm = HEADER.unpack_from(data)
        sig = hdr[:17]
        rec = Received(net, where, src, data, "other", cmd, tuple(parm), at=time.monotonic())
        if sig == b"cgts mtc message:" and cmd == 5:
            rec.kind = "mtcalive"
            self._check_text_message(rec, hdr, ver, rev, res, num, parm, MTCALIVE_KEYS)
            body = rec.body
            if num != 4 or parm[4] != 0:
                self._err(f"{where}: mtcAlive num {num} parm {parm}")
            if body.get("sequence") != parm[3]:
                self._err(f"{where}: JSON sequence {body.get('sequence')} != parm[3] {parm[3]}")
            if body.get("interface") != IFACE[net]:
                self._err(f"{where}: interface {body.get('interface')} on {net}")
            last = self._last_seq.get(where)
            if last is not None and parm[3] != last + 1:
                self._err(f"{where}: sequence {parm[3]} after {last}")
            self._last_seq[where] = parm[3]
        elif sig == b"mtce event msg  :" and cmd == 0xF0F0F0F0:
            rec.kind = "ready"
            self._check_text_message(rec, hdr, ver, rev, res, num, parm, READY_KEYS)
            if num != 0 or any(parm):
                self._err(f"{where}: ready event num {num} parm {parm}")
            if rec.body.get("features") != ["pxeboot_mtcAlive"] or \
                    rec.body.get("service") != "mtcClient":
                self._err(f"{where}: ready event body {rec.body}")
        elif sig == b"cgts mtc cmd rsp:":
            rec.kind = "ack"
            if len(data) != 100:
                self._err(f"{where}: ACK of {len(data)} bytes")
            if hdr[17] != 0:
                self._err(f"{where}: ACK hdr[17] is not NUL")
        else:
            self._err(f"{where}: unexpected signature {sig!r} cmd {cmd}")
        self.received.append(rec)

    def _check_text_message(self, rec, hdr, ver, rev, res, num, parm, keys) -> None:
        where = rec.where
        if hdr[17:] != b"\0" * 47:
            self._err(f"{where}: header not zero-padded after the signature")
        if (ver, rev, res) != (0, 0, 0):
            self._err(f"{where}: ver/rev/res {(ver, rev, res)}")
        buf = rec.data[100:]
        if not buf.endswith(b"\0") or b"\0" in buf[:-1]:
            self._err(f"{where}: text not NUL-terminated exactly at the end (len {len(buf)})")
            return
        try:
            rec.body = json.loads(buf[:-1].decode("utf-8"))
        except ValueError as err:
            self._err(f"{where}: bad JSON {err}")
            return
        if list(rec.body) != keys:
            self._err(f"{where}: keys {list(rec.body)} != {keys}")
        if buf[:-1] != json.dumps(rec.body, separators=(",", ":")).encode():
            self._err(f"{where}: JSON not compact")

    def of(self, kind: str, net: str | None = None, where: str | None = None) -> list[Received]:
        return [r for r in self.received if r.kind == kind and (net is None or r.net == net)
                and (where is None or r.where == where)]

    def wait_for(self, predicate, timeout: float = 10.0, what: str = ""):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll(0.05)
            value = predicate()
            if value:
                return value
        raise AssertionError(f"peer: timed out waiting for {what or predicate}; "
                             f"received {[(r.kind, r.net, r.cmd) for r in self.received[-20:]]}"
                             f" errors {self.errors[:5]}")

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.poll(0.05)

    # -- sending -----------------------------------------------------------------------------
    def command_bytes(self, cmd: int, data: str, mac: str | None = None, num: int = 0,
                      parm=(0, 0, 0, 0, 0), ver: int = 1) -> bytes:
        """Built by hand from docs/protocol.md §1.2: signature, then the MAC text at hdr[17]."""
        mac = self.host.mac if mac is None else mac
        hdr = (b"cgts mtc cmd req:" + mac.encode()).ljust(64, b"\0")
        parm = tuple(parm) + (0,) * (5 - len(parm))
        return HEADER.pack(hdr, ver, 0, 0, cmd, num, *parm) + data.encode() + b"\0"

    def send(self, net: str, data: bytes, where: str | None = None) -> None:
        """Send to the client's receive port on `net` from the matching peer socket."""
        sock_name = where or {"mgmt": "mgmt", "cluster-host": "clstr-c0",
                              "pxeboot": "pxeboot-c0"}[net]
        dest = {"mgmt": self.host.mgmt_ip, "cluster-host": self.host.cluster_host_ip,
                "pxeboot": self.host.pxeboot_ip}[net]
        if self.auth is not None:
            data = self.auth.sign(data)
        self.socks[sock_name][1].sendto(data, (dest, self.client_ports[net]))

    def command(self, net: str, cmd: int, data: str | None = None, **kw) -> bytes:
        if data is None:
            data = json.dumps({"address": self.host.controller, "interface": IFACE[net]},
                              separators=(",", ":"))
        raw = self.command_bytes(cmd, data, **kw)
        self.send(net, raw)
        return raw

    def request_mtcalive(self, c0: str | None = None, c1: str | None = None,
                         active: str | None = None) -> bytes:
        c0 = self.host.c_pxeboot[0] if c0 is None else c0
        c1 = self.host.c_pxeboot[1] if c1 is None else c1
        active = c0 if active is None else active
        info = json.dumps({"pxebootInfo": {"controller": active, "controller-0": c0,
                                           "controller-1": c1}}, separators=(",", ":"))
        return self.command("pxeboot", 6, info)


def main(argv=None) -> int:
    """`python3 tests/harness/peer.py [DIR]`: a host's files in DIR and a test agent for it.

    Prints the command that starts a client for that host, then one line per datagram the
    client sends, each checked against the reference layout; it answers the first ready event
    with an mtcAlive request over pxeboot, as the agent does, so pxeboot mtcAlive flows too.
    """
    import argparse
    import os
    import sys
    import tempfile

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # tests/
    from harness.fakehost import FakeHost

    p = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    p.add_argument("dir", nargs="?", help="where to write the host's files (default: a "
                   "new temporary directory)")
    args = p.parse_args(argv)
    root = args.dir or tempfile.mkdtemp(prefix="mtce-peer-")
    os.makedirs(root, exist_ok=True)
    host = FakeHost(root)
    peer = AgentPeer(host)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(f"host files in {root} ; in another terminal run:\n"
          f"  {sys.executable} {repo}/mtce.py client -c {host.ini} -f\n"
          f"checking every datagram; Ctrl-C to stop", flush=True)
    requested = False
    seen = 0
    try:
        while True:
            peer.poll(0.5)
            for r in peer.received[seen:]:
                body = r.body
                what = {"mtcalive": f"mtcAlive seq {r.parm[3]} flags 0x{r.parm[2]:x}",
                        "ready": f"ready event, features {body.get('features')}",
                        "ack": f"ACK of cmd {r.cmd}"}.get(r.kind, r.kind)
                print(f"{r.where:<11} {what:<40} from {r.src[0]} ({len(r.data)} bytes)",
                      flush=True)
                if r.kind == "ready" and not requested:
                    requested = True
                    peer.request_mtcalive()
                    print("            -> mtcAlive request sent over pxeboot", flush=True)
            seen = len(peer.received)
            for err in peer.errors:
                print(f"LAYOUT ERROR: {err}", flush=True)
            peer.errors.clear()
    except KeyboardInterrupt:
        return 0
    finally:
        peer.close()


if __name__ == "__main__":
    raise SystemExit(main())
