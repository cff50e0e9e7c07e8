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

from harness.env import need
from harness.sweep import namespace_name


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


# -- the netns lab of test_netns_*.py: controller-0 and workers on three bridges ---------------

M, C, P = "198.18.204.", "198.18.206.", "198.18.202."
M6, C6 = "fd00:204::", "fd00:206::"          # unique local: only inside these namespaces


def addresses(workers: int, v6: bool = False) -> dict:
    m, c = (M6, C6) if v6 else (M, C)
    addrs = {"controllers": {"controller": m + "1", "c_mgmt": [m + "2", m + "3"],
                             "c_clstr": [c + "4", c + "5"], "c_pxeboot": [P + "6", P + "7"]},
             "controller-0": {"mgmt": m + "2", "clstr": c + "4", "pxeboot": P + "6"}}
    for i in range(workers + 1):
        addrs[f"worker-{i}"] = {"mgmt": m + str(10 + i), "clstr": c + str(20 + i),
                                "pxeboot": P + str(30 + i)}
    return addrs


def netlab_maker(tmp_path, daemons):
    """The `netlab` fixture (conftest.py): `make(workers=2, start=True, extra_hosts=0, v6=False)`
    builds controller-0 and the workers, each with mgmt, cluster-host and pxeboot links into
    one bridge per network, and starts the agent and clients in their namespaces."""
    from harness.cluster import Cluster
    require_netns()
    topo = Topology()
    made = []

    def make(workers=2, start=True, extra_hosts=0, v6=False):
        c = Cluster(tmp_path / "cluster", workers=workers + extra_hosts,
                    addrs=addresses(workers + extra_hosts, v6))
        plen = "/64" if v6 else "/24"
        sw = Switch(topo)
        c.ns = {}
        for i, (name, h) in enumerate(c.hosts.items()):
            ns = topo.ns(name.replace("controller", "c").replace("worker", "w"))
            c.ns[name] = ns
            sw.plug(ns, "eth0", "mgmt", mac=h.mac)
            sw.plug(ns, "eth1", "clstr")
            sw.plug(ns, "eth2", "pxe")
            topo.addr(ns, "eth0", h.mgmt_ip + plen)
            topo.addr(ns, "eth1", h.cluster_host_ip + plen)
            # The pxeboot address is the mgmt interface's `:2` in StarlingX; on its own
            # link here, so that pxeboot can fail while mgmt stays up.
            topo.addr(ns, "eth2", h.pxeboot_ip + "/24")
            if name == "controller-0":
                topo.addr(ns, "eth0", h.controller + plen)
            h.write_lease("eth0:2", h.pxeboot_ip)
            h.values["client"].update({"mgmt_ip": "", "cluster_host_ip": ""})
            h.values["paths"]["sys_class_net"] = "/sys/class/net"
            h.write_platform(subfunction="controller" if i == 0 else "worker",
                             management_interface="eth0", cluster_host_interface="eth1")
            h.write_ini()
        c.agent = daemons("agent", c.agent_ini, name="agent",
                          prefix=topo.exec_prefix(c.ns["controller-0"]))
        c.clients = {}
        c.agent.wait_log("Listening On: 'mtc client receive' socket", count=3)
        if start:
            for name in c.names[:workers + 1]:
                c.clients[name] = daemons("client", c.hosts[name].ini, name=name,
                                          prefix=topo.exec_prefix(c.ns[name]))
        c.topo = topo
        made.append(c)
        return c

    yield make
    for c in made:
        for d in [c.agent] + list(c.clients.values()):
            d.stop()
    topo.close()
