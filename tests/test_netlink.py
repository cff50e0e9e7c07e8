"""mtce/netlink.py: a recorded netlink dump read as the kernel gives it, from_kernel, and
pyroute2 loaded only when needed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from mtce import ifchain, netif, netlink
from mtce.netlink import NetlinkLinks

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------
# Recorded dump (tests/data/netlink): plain JSON and ifinfmsg().load()


def dump_messages():
    out = []
    for d in json.loads((DATA / "netlink" / "vlan_over_bond.json").read_text()):
        is_link = any(a[0].startswith("IFLA_") for a in d["attrs"])
        out.append((ifinfmsg() if is_link else ifaddrmsg()).load(d))
    return out


@pytest.mark.parametrize("loader", ["json", "load"])
def test_recorded_dump(tmp_path, loader):
    if loader == "json":
        links = NetlinkLinks.from_json(str(DATA / "netlink" / "vlan_over_bond.json"))
    else:
        links = NetlinkLinks(dump_messages())
    assert links.get("vlan123") == netlink.LinkFacts(
        name="vlan123", index=6, kind="vlan", link=5, master=None,
        mac="08:00:27:10:00:08", operstate="UP")
    assert links.get("enp0s8").master == 5 and links.get("enp0s8").kind == ""
    assert links.slaves_of("pxeboot0") == ["enp0s8", "enp0s9"]
    assert links.addresses("vlan123", socket.AF_INET) == [("192.168.204.50", "vlan123")]
    assert links.addresses("vlan123", socket.AF_INET6) == [("fd00:204::50", "")]
    assert links.address_by_label("pxeboot0:2") == "169.254.202.50"
    sys_dir = tmp_path / "sys"
    (sys_dir / "pxeboot0" / "bonding").mkdir(parents=True)
    (sys_dir / "pxeboot0" / "bonding" / "mode").write_text("802.3ad 4\n")
    info = ifchain.get_iface_info("vlan123", str(sys_dir), links)
    assert info.chain == "vlan123 -> pxeboot0 (802.3ad 4) -> enp0s8 and enp0s9"
    assert ifchain.iface_master("enp0s8", str(sys_dir), links) == "pxeboot0"


def test_ifaddrmsg_prefers_local_for_ipv4():
    a = ifaddrmsg()
    a["family"], a["index"] = socket.AF_INET, 2
    a["attrs"] = [("IFA_ADDRESS", "10.0.0.2"), ("IFA_LOCAL", "10.0.0.1"), ("IFA_LABEL", "ppp0")]
    m = ifinfmsg()
    m["index"] = 2
    m["attrs"] = [("IFLA_IFNAME", "ppp0")]
    links = NetlinkLinks([m, a])
    assert netif.iface_addresses("ppp0", links, socket.AF_INET) == ["10.0.0.1"]
    assert netif.iface_addresses("ppp0", links, socket.AF_INET6) == []
    assert netif.iface_addresses("ppp0", None) == []


# --------------------------------------------------------------------------------------------
# from_kernel


class FakeIPRoute:
    instances: list = []
    fail = False

    def __init__(self):
        self.closed = False
        FakeIPRoute.instances.append(self)

    def get_links(self):
        if FakeIPRoute.fail:
            raise OSError("boom")
        m = ifinfmsg()
        m["index"] = 1
        m["attrs"] = [("IFLA_IFNAME", "lo")]
        return (m,)

    def get_addr(self):
        return ()

    def close(self):
        self.closed = True


def test_from_kernel_closes_socket(monkeypatch):
    monkeypatch.setattr(netlink, "iproute_class", lambda: FakeIPRoute)
    FakeIPRoute.instances, FakeIPRoute.fail = [], False
    links = NetlinkLinks.from_kernel()
    assert links.get("lo").index == 1
    assert FakeIPRoute.instances[0].closed
    FakeIPRoute.fail = True
    with pytest.raises(OSError):
        NetlinkLinks.from_kernel()
    assert FakeIPRoute.instances[1].closed


def test_from_kernel_live():
    links = NetlinkLinks.from_kernel()
    lo = links.get("lo")
    assert lo is not None and lo.index >= 1
    assert "127.0.0.1" in netif.iface_addresses("lo", links, socket.AF_INET)


def test_iproute_without_the_package_init_in_a_fresh_process():
    code = ("import sys; from mtce import netlink\n"
            "links = netlink.NetlinkLinks.from_kernel()\n"
            "print(links.get('lo') is not None, 'pyroute2.ndb' in sys.modules, "
            "'sqlite3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": ":".join(sys.path)}, timeout=60)
    assert out.stdout.split() == ["True", "False", "False"], out.stderr


def test_import_does_not_load_pyroute2():
    code = "import sys, mtce.netif; print('pyroute2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"

