"""Network namespaces joined by veth links, for tests that need a real topology.

Every namespace gets a unique name and is deleted (with its veths) at cleanup. Sockets for a
test peer are opened inside a namespace with pyroute2's pushns/popns, so the test process
itself never leaves the root namespace for longer than a socket() call.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess

from conftest import need
from sweep import namespace_name


def require_netns() -> None:
    need(os.geteuid() == 0, "needs root for network namespaces")
    need(shutil.which("ip") is not None, "needs iproute2 (ip)")
    probe = namespace_name("probe", str(random.randint(0, 99999)))
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                       timeout=20)
    need(r.returncode == 0, f"ip netns add failed: {r.stderr.strip()}")
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=20)


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["ip"] + (["-n", ns] if ns else []) + list(args)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")
    return r


class Topology:
    """Namespaces and veth pairs; `close()` removes them all."""

    def __init__(self):
        self.tag = f"{os.getpid() % 10000}{random.randint(0, 999):03d}"
        self.namespaces: list[str] = []

    def ns(self, short: str) -> str:
        name = namespace_name(short, self.tag)
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("link", "set", "lo", "up", ns=name)
        return name

    def veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str, mac_a: str | None = None) -> None:
        tmp_a, tmp_b = f"va{self.tag}{len(self.namespaces)}", f"vb{self.tag}"
        tmp_a = tmp_a[:15]
        tmp_b = (tmp_b + if_b)[:15]
        ip("link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
        ip("link", "set", tmp_a, "netns", ns_a, "name", if_a)
        ip("link", "set", tmp_b, "netns", ns_b, "name", if_b)
        if mac_a:
            ip("link", "set", if_a, "address", mac_a, ns=ns_a)
        ip("link", "set", if_a, "up", ns=ns_a)
        ip("link", "set", if_b, "up", ns=ns_b)

    def addr(self, ns: str, ifname: str, cidr: str, label: str | None = None) -> None:
        # IPv6 addresses skip duplicate address detection: usable at once, not "tentative".
        extra = ["nodad"] if ":" in cidr.split("/")[0] else []
        ip("addr", "add", cidr, "dev", ifname, *(["label", label] if label else []), *extra,
           ns=ns)

    def del_addr(self, ns: str, ifname: str, cidr: str) -> None:
        ip("addr", "del", cidr, "dev", ifname, ns=ns)

    def link(self, ns: str, ifname: str, state: str) -> None:
        ip("link", "set", ifname, state, ns=ns)

    def exec_prefix(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    @contextlib.contextmanager
    def inside(self, ns: str):
        """Run the block in `ns` (sockets made here stay in it)."""
        from pyroute2.netns import popns, pushns
        pushns(ns)
        try:
            yield
        finally:
            popns()

    def close(self) -> None:
        for name in reversed(self.namespaces):
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                  text=True, timeout=20).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            ip("netns", "del", name, check=False)
        self.namespaces.clear()


class Switch:
    """One bridge per network in a namespace of its own; hosts plug veths into it."""

    def __init__(self, topo: Topology, networks=("mgmt", "clstr", "pxe")):
        self.topo = topo
        self.ns = topo.ns("sw")
        self.count = 0
        for net in networks:
            ip("link", "add", f"br-{net}", "type", "bridge", ns=self.ns)
            ip("link", "set", f"br-{net}", "up", ns=self.ns)

    def plug(self, host_ns: str, ifname: str, net: str, mac: str | None = None) -> None:
        self.count += 1
        port = f"p{self.count}-{net}"[:15]
        self.topo.veth(host_ns, ifname, self.ns, port, mac_a=mac)
        ip("link", "set", port, "master", f"br-{net}", ns=self.ns)
