"""Tests for mtce.netif: interface chain (sysfs and netlink), address files, parsers, resolve."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from mtce import netif, netlink
from mtce.netif import NetlinkLinks
from harness.sysnet import NICS, bond, build_netlink, build_sysfs, vlan

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sysfs", "netlink"])
def build(request, tmp_path):
    builder = build_sysfs if request.param == "sysfs" else build_netlink

    def make(topo):
        return builder(tmp_path / "sys", topo)
    return make


def I(text):  # noqa: E743 - short names keep the expected log tables readable
    return ("info", text)


def W(text):
    return ("warning", text)


def D(text):
    return ("debug", text)


def E(text):
    return ("error", text)


# --------------------------------------------------------------------------------------------
# Interface chain: every case of docs/protocol.md §5.6, over sysfs and over netlink


def test_chain_ethernet(build):
    sys_dir, links = build(dict(NICS))
    info = netif.get_iface_info("enp0s8", sys_dir, links)
    assert (info.rc, info.ok, info.type, info.parent, info.chain) == (
        0, True, "ethernet", "enp0s8", "enp0s8")
    assert info.logs == [I("Pxeboot network enp0s8 parent: enp0s8"),
                         I("Interface Chain: enp0s8")]
    assert netif.iface_summary(info) == [
        I("...        Type: ethernet"), I("...      Parent: enp0s8"),
        I("Pxeboot IF Name: enp0s8")]


def test_chain_vlan_over_nic(build):
    sys_dir, links = build({**NICS, "vlan123": vlan(2)})
    info = netif.get_iface_info("vlan123", sys_dir, links)
    assert (info.rc, info.type, info.parent, info.chain) == (0, "vlan", "enp0s8",
                                                             "vlan123 -> enp0s8")
    assert info.logs == [I("Pxeboot network vlan123 parent: enp0s8"),
                         W("Pxeboot network iface: vlan123"),
                         I("Interface Chain: vlan123 -> enp0s8")]
    assert netif.iface_summary(info) == [
        I("...        Type: vlan"), I("...      Parent: enp0s8"), I("Pxeboot IF Name: enp0s8")]


def test_chain_bond_two_slaves(build):
    sys_dir, links = build({**NICS, "pxeboot0": bond()})
    info = netif.get_iface_info("pxeboot0", sys_dir, links)
    assert (info.rc, info.type, info.parent, info.slave1, info.slave2, info.bond_mode) == (
        0, "bond", "pxeboot0", "enp0s8", "enp0s9", "802.3ad 4")
    assert info.chain == "pxeboot0 (802.3ad 4) -> enp0s8 and enp0s9"
    assert info.logs == [
        I("Pxeboot network pxeboot0"),
        I("Pxeboot network pxeboot0 mode: 802.3ad 4"),
        D("Pxeboot network pxeboot0 slaves: enp0s8 enp0s9"),
        I("Pxeboot network pxeboot0 slaves: enp0s8 and enp0s9"),
        I("Interface Chain: pxeboot0 (802.3ad 4) -> enp0s8 and enp0s9")]
    assert netif.iface_summary(info) == [
        I("...        Type: bond"), I("...      Parent: pxeboot0"),
        I("... Bond Slaves: enp0s8 and enp0s9"), I("...   Bond Mode: 802.3ad 4"),
        I("Pxeboot IF Name: pxeboot0")]


def test_chain_bond_one_slave(build):
    sys_dir, links = build({**NICS, "pxeboot0": bond(["enp0s8"])})
    info = netif.get_iface_info("pxeboot0", sys_dir, links)
    assert info.rc == 0
    assert info.chain == "pxeboot0 (802.3ad 4) -> enp0s8 and "
    assert I("Pxeboot network pxeboot0 slaves: enp0s8 and ") in info.logs
    assert I("... Bond Slaves: enp0s8 and none") in netif.iface_summary(info)


def test_chain_bond_no_slaves(build):
    sys_dir, links = build({**NICS, "pxeboot0": bond([])})
    info = netif.get_iface_info("pxeboot0", sys_dir, links)
    assert info.rc == 0 and info.ok
    assert info.chain == "pxeboot0 (802.3ad 4) ->  and "
    assert info.logs == [
        I("Pxeboot network pxeboot0"),
        I("Pxeboot network pxeboot0 mode: 802.3ad 4"),
        I("Pxeboot network pxeboot0 slaves:  and "),
        I("Interface Chain: pxeboot0 (802.3ad 4) ->  and ")]
    assert I("... Bond Slaves: none and none") in netif.iface_summary(info)


def test_chain_bond_more_than_two_slaves(build):
    sys_dir, links = build({**NICS, "pxeboot0": bond(["enp0s8", "enp0s9", "enp0s10"])})
    info = netif.get_iface_info("pxeboot0", sys_dir, links)
    assert info.chain == "pxeboot0 (802.3ad 4) -> enp0s8 and enp0s9"
    assert D("Pxeboot network pxeboot0 slaves: enp0s8 enp0s9 enp0s10") in info.logs


def test_chain_vlan_over_bond(build):
    sys_dir, links = build({**NICS, "pxeboot0": bond(), "vlan123": vlan(4)})
    info = netif.get_iface_info("vlan123", sys_dir, links)
    assert (info.rc, info.type, info.parent) == (0, "bond", "pxeboot0")
    assert info.chain == "vlan123 -> pxeboot0 (802.3ad 4) -> enp0s8 and enp0s9"
    assert info.logs == [
        I("Pxeboot network vlan123 parent: pxeboot0"),
        I("Pxeboot network pxeboot0 mode: 802.3ad 4"),
        D("Mgmnt network pxeboot0 slaves: enp0s8 enp0s9"),  # the C code's label
        I("Pxeboot network pxeboot0 slaves: enp0s8 and enp0s9"),
        I("Interface Chain: vlan123 -> pxeboot0 (802.3ad 4) -> enp0s8 and enp0s9")]


def test_chain_missing_mode_file(build):
    sys_dir, links = build({**NICS, "pxeboot0": bond(mode=None)})
    info = netif.get_iface_info("pxeboot0", sys_dir, links)
    path = os.path.join(sys_dir, "pxeboot0", "bonding", "mode")
    assert info.rc == 0
    assert info.chain == "pxeboot0 () -> enp0s8 and enp0s9"
    assert info.logs[:2] == [I("Pxeboot network pxeboot0"),
                             W(f"Failed to find bonding mode file: {path}")]
    assert I("...   Bond Mode: unknown") in netif.iface_summary(info)


def test_chain_vlan_over_bond_missing_mode_file(build):
    sys_dir, links = build({**NICS, "pxeboot0": bond(mode=None), "vlan123": vlan(4)})
    info = netif.get_iface_info("vlan123", sys_dir, links)
    assert info.rc == 0
    assert info.chain == "vlan123 -> pxeboot0 () -> enp0s8 and enp0s9"


def test_chain_missing_uevent(build):
    sys_dir, links = build(dict(NICS))
    info = netif.get_iface_info("vlan123", sys_dir, links)
    path = os.path.join(sys_dir, "vlan123", "uevent")
    assert (info.rc, info.ok, info.chain) == (104, False, "")
    assert info.logs == [W(f"Failed to find file: {path}"),
                         W("failed to get interface type from iface: vlan123")]


def test_chain_vlan_parent_uevent_missing(build):
    sys_dir, links = build({"enp0s8": {"index": 2, "uevent": False}, "vlan123": vlan(2)})
    info = netif.get_iface_info("vlan123", sys_dir, links)
    path = os.path.join(sys_dir, "enp0s8", "uevent")
    assert info.rc == 75
    assert info.logs == [
        I("Pxeboot network vlan123 parent: enp0s8"),
        W(f"Failed to find file: {path}"),
        W("failed to get Pxeboot network interface type from iface: enp0s8 ; rc:104")]


@pytest.mark.parametrize("iflink", ["missing", "dir"])
def test_chain_unreadable_iflink(build, iflink):
    sys_dir, links = build({**NICS, "vlan123": vlan(2, iflink=iflink)})
    info = netif.get_iface_info("vlan123", sys_dir, links)
    path = os.path.join(sys_dir, "vlan123", "iflink")
    assert (info.rc, info.chain) == (104, "")
    assert info.logs == [W(f"failed to open {path}"),
                         W("failed to get parent interface from vlan123 ; rc:104")]


def test_chain_unknown_parent_index(build):
    sys_dir, links = build({**NICS, "vlan123": vlan(99)})
    info = netif.get_iface_info("vlan123", sys_dir, links)
    assert info.rc == 75
    assert info.logs == [W("Mgmnt network parent interface not found for ifname:vlan123"),
                         W("failed to get parent interface from vlan123 ; rc:75")]


def test_chain_network_label_is_a_parameter(build):
    sys_dir, links = build({**NICS, "pxeboot0": bond()})
    info = netif.get_iface_info("pxeboot0", sys_dir, links, network="Mgmnt")
    assert info.logs[0] == I("Mgmnt network pxeboot0")
    assert I("Mgmnt network pxeboot0 slaves: enp0s8 and enp0s9") in info.logs


# Sources that differ between sysfs and netlink


def test_sysfs_missing_slaves_file_fails(tmp_path):
    sys_dir, links = build_sysfs(tmp_path / "sys", {**NICS, "pxeboot0": bond(slaves=None)})
    info = netif.get_iface_info("pxeboot0", sys_dir, links)
    path = os.path.join(sys_dir, "pxeboot0", "bonding", "slaves")
    assert (info.rc, info.ok, info.chain) == (75, False, "pxeboot0 (802.3ad 4)")
    assert info.logs == [
        I("Pxeboot network pxeboot0"),
        I("Pxeboot network pxeboot0 mode: 802.3ad 4"),
        W(f"failed to open file: {path}"),
        W("failed to get slaves from bond: pxeboot0 ; rc:104"),
        I("Interface Chain: pxeboot0 (802.3ad 4)")]


def test_sysfs_vlan_over_bond_missing_slaves_file(tmp_path):
    topo = {**NICS, "pxeboot0": bond(slaves=None), "vlan123": vlan(4)}
    sys_dir, links = build_sysfs(tmp_path / "sys", topo)
    info = netif.get_iface_info("vlan123", sys_dir, links)
    assert (info.rc, info.chain) == (75, "vlan123 -> pxeboot0 (802.3ad 4)")
    assert info.logs[-2:] == [W("failed to get slaves from bond: pxeboot0 ; rc:104"),
                              I("Interface Chain: vlan123 -> pxeboot0 (802.3ad 4)")]


def test_netlink_bond_needs_no_slaves_file(tmp_path):
    # netlink knows the bond: its ports come from IFLA_MASTER, the slaves file is not read
    sys_dir, links = build_netlink(tmp_path / "sys", {**NICS, "pxeboot0": bond()})
    assert not os.path.exists(os.path.join(sys_dir, "pxeboot0", "bonding", "slaves"))
    assert not os.path.exists(os.path.join(sys_dir, "pxeboot0", "uevent"))
    info = netif.get_iface_info("pxeboot0", sys_dir, links)
    assert (info.rc, info.chain) == (0, "pxeboot0 (802.3ad 4) -> enp0s8 and enp0s9")


def test_netlink_wins_over_sysfs(tmp_path):
    # sysfs says ethernet with other slaves; netlink says bond: netlink decides type and slaves
    sys_dir, _ = build_sysfs(tmp_path / "sys", {"pxeboot0": bond(["ethX", "ethY"])})
    (tmp_path / "sys" / "pxeboot0" / "uevent").write_text("INTERFACE=pxeboot0\n")
    _, links = build_netlink(tmp_path / "other", {**NICS, "pxeboot0": bond()})
    info = netif.get_iface_info("pxeboot0", sys_dir, links)
    assert info.chain == "pxeboot0 (802.3ad 4) -> enp0s8 and enp0s9"


def test_netlink_slaves_in_ifindex_order(tmp_path):
    msgs = []
    for index, name, master in [(9, "eth9", 4), (7, "eth7", 4), (4, "bond0", None)]:
        m = ifinfmsg()
        m["index"] = index
        m["attrs"] = [("IFLA_IFNAME", name)] + ([("IFLA_MASTER", master)] if master else [])
        msgs.append(m)
    assert NetlinkLinks(msgs).slaves_of("bond0") == ["eth7", "eth9"]
    assert NetlinkLinks(msgs).slaves_of("nope") == []


def test_sysfs_iflink_last_line_and_garbage(tmp_path):
    sys_dir, links = build_sysfs(tmp_path / "sys", {**NICS, "vlan123": vlan(2, iflink="9\n3\n")})
    assert netif.get_iface_info("vlan123", sys_dir, links).parent == "enp0s9"
    (tmp_path / "sys" / "vlan123" / "iflink").write_text("garbage\n")
    info = netif.get_iface_info("vlan123", sys_dir, links)
    assert info.rc == 75 and info.parent == ""


def test_sysfs_uevent_other_devtype_is_ethernet(tmp_path):
    sys_dir, links = build_sysfs(tmp_path / "sys", {"br0": {"index": 7}})
    (tmp_path / "sys" / "br0" / "uevent").write_text("DEVTYPE=bridge\nINTERFACE=br0\n")
    info = netif.get_iface_info("br0", sys_dir, links)
    assert (info.type, info.chain) == ("ethernet", "br0")


def test_empty_netlink_is_valid(tmp_path):
    links = NetlinkLinks([])
    assert len(links) == 0
    assert links.get("eth0") is None and links.by_index(1) is None
    assert links.addresses("eth0", socket.AF_INET) == []
    assert links.address_by_label("eth0:2") == ""
    info = netif.get_iface_info("eth0", str(tmp_path), None)
    assert info.rc == 104


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
    assert links.get("vlan123") == netif.LinkFacts(
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
    info = netif.get_iface_info("vlan123", str(sys_dir), links)
    assert info.chain == "vlan123 -> pxeboot0 (802.3ad 4) -> enp0s8 and enp0s9"
    assert netif.iface_master("enp0s8", str(sys_dir), links) == "pxeboot0"


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
    code = ("import sys; from mtce import netif\n"
            "links = netif.NetlinkLinks.from_kernel()\n"
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


# --------------------------------------------------------------------------------------------
# iface_master and iface_mac


def test_iface_master(tmp_path):
    sys_dir = tmp_path / "sys"
    (sys_dir / "enp0s8" / "master").mkdir(parents=True)
    (sys_dir / "enp0s8" / "master" / "uevent").write_text(
        "DEVTYPE=bond\nINTERFACE=pxeboot0\nIFINDEX=4\n")
    assert netif.iface_master("enp0s8", str(sys_dir)) == "pxeboot0"
    assert netif.iface_master("enp0s3", str(sys_dir)) == "enp0s3"
    _, links = build_netlink(tmp_path / "nl", {**NICS, "pxeboot0": bond(["enp0s9"])})
    assert netif.iface_master("enp0s9", str(tmp_path / "nl"), links) == "pxeboot0"
    assert netif.iface_master("enp0s8", str(tmp_path / "nl"), links) == "enp0s8"


def test_iface_mac(tmp_path):
    _, links = build_netlink(tmp_path / "nl", dict(NICS))
    assert netif.iface_mac("enp0s8", links, str(tmp_path / "nl")) == "08:00:27:aa:00:02"
    sys_dir = tmp_path / "sys"
    (sys_dir / "eth1").mkdir(parents=True)
    (sys_dir / "eth1" / "address").write_text("08:00:27:AB:CD:EF\n")
    (sys_dir / "eth2").mkdir()
    (sys_dir / "eth2" / "address").write_bytes(b"\xff\xfe garbage\n")
    assert netif.iface_mac("eth1", NetlinkLinks([]), str(sys_dir)) == "08:00:27:ab:cd:ef"
    assert netif.iface_mac("eth1", None, str(sys_dir)) == "08:00:27:ab:cd:ef"
    assert netif.iface_mac("eth2", None, str(sys_dir)) == ""
    assert netif.iface_mac("eth9", None, str(sys_dir)) == ""


# --------------------------------------------------------------------------------------------
# DHCP lease files


LEASE = """lease {{
  interface "enp0s8:2";
  fixed-address {addr};
  option subnet-mask 255.255.255.0;
  renew 2 2024/03/12 10:00:00;
}}
"""


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


def test_lease_single_block(tmp_path):
    write(tmp_path / "dhclient.enp0s8:2.leases", LEASE.format(addr="169.254.202.159"))
    addr, logs = netif.dhcp_lease_address(str(tmp_path), "enp0s8:2")
    assert addr == "169.254.202.159"
    assert logs == [D("learning pxeboot address ..."),
                    D(f"pxeboot dhcp lease file: {tmp_path}/dhclient.enp0s8:2.leases")]


def test_lease_last_block_wins(tmp_path):
    text = "".join(LEASE.format(addr=a) for a in ("169.254.202.10", "169.254.202.11"))
    write(tmp_path / "dhclient.enp0s8:2.leases", text)
    assert netif.dhcp_lease_address(str(tmp_path), "enp0s8:2")[0] == "169.254.202.11"


def test_lease_last_block_without_address(tmp_path):
    text = LEASE.format(addr="169.254.202.10") + 'lease {\n  interface "enp0s8:2";\n}\n'
    write(tmp_path / "dhclient.enp0s8:2.leases", text)
    addr, logs = netif.dhcp_lease_address(str(tmp_path), "enp0s8:2")
    assert addr == ""
    assert [lvl for lvl, _ in logs] == ["debug", "debug"]  # silently empty, as the original


def test_lease_several_matching_files_last_sorted_wins(tmp_path):
    write(tmp_path / "dhclient.enp0s8:2.leases", LEASE.format(addr="169.254.202.10"))
    write(tmp_path / "dhclient6.enp0s8:2.leases", LEASE.format(addr="169.254.202.20"))
    write(tmp_path / "dhclient.enp0s8.leases", LEASE.format(addr="169.254.202.30"))
    write(tmp_path / "zz.enp0s3:2.leases", LEASE.format(addr="169.254.202.40"))
    addr, logs = netif.dhcp_lease_address(str(tmp_path), "enp0s8:2")
    assert addr == "169.254.202.20"
    assert D(f"pxeboot dhcp lease file: {tmp_path}/dhclient6.enp0s8:2.leases") in logs


def test_lease_no_dir_and_no_file(tmp_path):
    addr, logs = netif.dhcp_lease_address(str(tmp_path / "nope"), "enp0s8:2")
    assert (addr, logs[-1]) == ("", I("no dhcp leases"))
    write(tmp_path / "dhclient.enp0s3.leases", LEASE.format(addr="169.254.202.40"))
    addr, logs = netif.dhcp_lease_address(str(tmp_path), "enp0s8:2")
    assert (addr, logs[-1]) == ("", I(f"dhcp lease file {tmp_path}/enp0s8:2 not found"))


@pytest.mark.parametrize("data", [
    bytes(range(256)) * 4,
    b"lease {\n  fixed-address 169.254.202.9;\n\xff\xfe\n}\n",
    b"\x00\x00\x00\x00",
])
def test_lease_garbage_bytes(tmp_path, data):
    write(tmp_path / "dhclient.enp0s8:2.leases", data)
    addr, logs = netif.dhcp_lease_address(str(tmp_path), "enp0s8:2")
    assert addr == ""
    assert logs[-1] == W(f"dhcp lease file {tmp_path}/dhclient.enp0s8:2.leases is not a text "
                         "file ; ignored")


def test_lease_truncated(tmp_path):
    path = write(tmp_path / "dhclient.enp0s8:2.leases", "lease {\n  fixed-address 169.254.202.9")
    assert netif.dhcp_lease_address(str(tmp_path), "enp0s8:2")[0] == "169.254.202.9"
    path.write_text("lease {\n  fixed-address 169.254.2")
    addr, logs = netif.dhcp_lease_address(str(tmp_path), "enp0s8:2")
    assert addr == ""
    assert logs[-1] == W(f"invalid fixed-address '169.254.2' in dhcp lease file: {path}")


def test_lease_directory_instead_of_file(tmp_path):
    (tmp_path / "dhclient.enp0s8:2.leases").mkdir()
    addr, logs = netif.dhcp_lease_address(str(tmp_path), "enp0s8:2")
    assert (addr, logs[-1]) == (
        "", W(f"unable to open dhcp lease file: {tmp_path}/dhclient.enp0s8:2.leases"))


def test_lease_permission_denied(tmp_path):
    if os.geteuid() == 0:
        # The child below runs as nobody: the directory must be reachable for it.
        import tempfile
        tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="mtce-perm-", dir="/tmp"))
        tmp_path.chmod(0o755)
    path = write(tmp_path / "dhclient.enp0s8:2.leases", LEASE.format(addr="169.254.202.9"))
    path.chmod(0)
    if os.geteuid() != 0:
        result = netif.dhcp_lease_address(str(tmp_path), "enp0s8:2")
    else:
        # root reads mode 000 files: look as an unprivileged user, in a child process.
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            try:
                os.setgid(65534)
                os.setuid(65534)
                out = repr(netif.dhcp_lease_address(str(tmp_path), "enp0s8:2")).encode()
            except BaseException as err:  # report anything to the parent
                out = repr(("error", repr(err))).encode()
            os.write(write_fd, out)
            os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as f:
            data = f.read()
        os.waitpid(pid, 0)
        import ast
        result = ast.literal_eval(data.decode())
        import shutil
        shutil.rmtree(tmp_path)
    addr, logs = result
    assert (addr, tuple(logs[-1])) == ("", W(f"unable to open dhcp lease file: {path}"))


# --------------------------------------------------------------------------------------------
# Static ifcfg files


def test_ifcfg_column0_last_wins(tmp_path):
    path = write(tmp_path / "ifcfg-enp0s8:2", "iface enp0s8:2 inet static\n"
                 "address 169.254.202.3\n    address 169.254.202.99\nnetmask 255.255.255.0\n"
                 "address 169.254.202.4\n")
    addr, logs = netif.static_ifcfg_address(str(tmp_path), "enp0s8:2")
    assert addr == "169.254.202.4"
    assert logs == [I(f"found pxeboot address in {path}")] * 2


def test_ifcfg_indented_only(tmp_path):
    write(tmp_path / "ifcfg-enp0s8:2", "iface enp0s8:2 inet static\n  address 169.254.202.3\n")
    assert netif.static_ifcfg_address(str(tmp_path), "enp0s8:2") == ("", [])


def test_ifcfg_missing_and_bad(tmp_path):
    path = tmp_path / "ifcfg-enp0s8:2"
    assert netif.static_ifcfg_address(str(tmp_path), "enp0s8:2") == (
        "", [I(f"no {path} file present")])
    path.mkdir()
    assert netif.static_ifcfg_address(str(tmp_path), "enp0s8:2") == (
        "", [W(f"unable to open {path} file for interface:enp0s8:2")])
    path.rmdir()
    write(path, b"address \xff\xfe\n")
    addr, logs = netif.static_ifcfg_address(str(tmp_path), "enp0s8:2")
    assert (addr, logs) == ("", [W(f"{path} is not a text file ; ignored")])
    write(path, "address 169.254.202.3;\n")  # no ';' stripping here, so not an address
    addr, logs = netif.static_ifcfg_address(str(tmp_path), "enp0s8:2")
    assert addr == "" and logs[-1] == W(f"invalid address '169.254.202.3;' in {path}")


# --------------------------------------------------------------------------------------------
# learn_pxeboot_address (docs/protocol.md §5.2)


@pytest.fixture
def host(tmp_path):
    """A vlan-over-bond host: vlan123 -> pxeboot0 -> enp0s8, enp0s9."""
    sys_dir, links = build_sysfs(tmp_path / "sys", {**NICS, "pxeboot0": bond(),
                                                    "vlan123": vlan(4)})
    leases = tmp_path / "dhcp"
    ifcfg = tmp_path / "ifcfg"
    leases.mkdir()
    ifcfg.mkdir()
    return sys_dir, str(leases), str(ifcfg), links


def test_learn_dhcp_full_block(host):
    sys_dir, leases, ifcfg, links = host
    write(Path(leases) / "dhclient.pxeboot0:2.leases", LEASE.format(addr="169.254.202.50"))
    res = netif.learn_pxeboot_address("vlan123", False, sys_dir, leases, ifcfg, links)
    assert res.addr == "169.254.202.50" and res.info.ok
    assert [t for lvl, t in res.logs if lvl != "debug"] == [
        "Pxeboot network vlan123 parent: pxeboot0",
        "Pxeboot network pxeboot0 mode: 802.3ad 4",
        "Pxeboot network pxeboot0 slaves: enp0s8 and enp0s9",
        "Interface Chain: vlan123 -> pxeboot0 (802.3ad 4) -> enp0s8 and enp0s9",
        "...        Type: bond",
        "...      Parent: pxeboot0",
        "... Bond Slaves: enp0s8 and enp0s9",
        "...   Bond Mode: 802.3ad 4",
        "Pxeboot IF Name: pxeboot0",
        "pxeboot dhcp lease address: 169.254.202.50 ; initial",
        "Pxeboot IP: 169.254.202.50",
    ]


def test_learn_controller_static_only_when_no_dhcp(host):
    sys_dir, leases, ifcfg, links = host
    write(Path(ifcfg) / "ifcfg-pxeboot0:2", "address 169.254.202.3\n")
    res = netif.learn_pxeboot_address("vlan123", True, sys_dir, leases, ifcfg, links)
    assert res.addr == "169.254.202.3"
    assert res.logs[-4:] == [
        I(f"dhcp lease file {leases}/pxeboot0:2 not found"),
        I(f"found pxeboot address in {ifcfg}/ifcfg-pxeboot0:2"),
        I("pxeboot static address: 169.254.202.3"),
        I("Pxeboot IP: 169.254.202.3")]
    # a DHCP lease wins over the static file
    write(Path(leases) / "dhclient.pxeboot0:2.leases", LEASE.format(addr="169.254.202.60"))
    res = netif.learn_pxeboot_address("vlan123", True, sys_dir, leases, ifcfg, links)
    assert res.addr == "169.254.202.60"
    assert not any(t.startswith(("pxeboot static", "found pxeboot", "no ")) for _, t in res.logs)


def test_learn_worker_never_reads_ifcfg(host):
    sys_dir, leases, ifcfg, links = host
    write(Path(ifcfg) / "ifcfg-pxeboot0:2", "address 169.254.202.3\n")
    res = netif.learn_pxeboot_address("vlan123", False, sys_dir, leases, ifcfg, links)
    assert res.addr == ""
    assert res.logs[-2:] == [I(f"dhcp lease file {leases}/pxeboot0:2 not found"),
                             E("failed to get pxeboot address")]


def test_learn_controller_nothing_found(host):
    sys_dir, leases, ifcfg, links = host
    res = netif.learn_pxeboot_address("vlan123", True, sys_dir, leases, ifcfg, links)
    assert res.addr == ""
    assert res.logs[-2:] == [I(f"no {ifcfg}/ifcfg-pxeboot0:2 file present"),
                             E("failed to get pxeboot address")]


def test_learn_chain_failure_keeps_old_value(host, tmp_path):
    sys_dir, leases, ifcfg, links = host
    os.remove(os.path.join(sys_dir, "pxeboot0", "bonding", "slaves"))
    write(Path(leases) / "dhclient.pxeboot0:2.leases", LEASE.format(addr="169.254.202.50"))
    res = netif.learn_pxeboot_address("vlan123", True, sys_dir, leases, ifcfg, links)
    assert res.addr is None and res.info.rc == 75
    assert res.logs[-1] == E("failed to get interface info ; rc:75")
    assert not any(t.startswith("...") for _, t in res.logs)


def test_learn_ethernet_key_uses_parent(tmp_path):
    sys_dir, links = build_netlink(tmp_path / "sys", dict(NICS))
    write(tmp_path / "dhcp" / "dhclient.enp0s8:2.leases", LEASE.format(addr="169.254.202.7"))
    write(tmp_path / "dhcp" / "dhclient.enp0s8.leases", LEASE.format(addr="169.254.202.8"))
    res = netif.learn_pxeboot_address("enp0s8", False, sys_dir, str(tmp_path / "dhcp"),
                                      str(tmp_path / "ifcfg"), links)
    assert res.addr == "169.254.202.7"


# --------------------------------------------------------------------------------------------
# dnsmasq.hosts (docs/protocol.md §5.2)


DNSMASQ = (
    "pxecontroller,169.254.202.1\n"
    "08:00:27:AA:BB:01,pxeboot-1,169.254.202.2,1d\n"
    "08:00:27:aa:bb:02,pxeboot-2,169.254.202.3,1d\n"
    "# a comment\n"
    "\n"
    "08:00:27:aa:bb:03,pxeboot-3,169.254.202.50,1d\r\n"
    "08:00:27:aa:bb:04,pxeboot-4\n"
    "zz:00:27:aa:bb:05,pxeboot-5,169.254.202.51,1d\n"
    "08:00:27:aa:bb:06,pxeboot-6,169.254.202.300,1d\n"
    "08:00:27:aa:bb:07,pxeboot-7,\n"
    "08:00:27:aa:bb:08,pxeboot-8,[fd00::8],1d\n"
)


def test_parse_dnsmasq_hosts():
    entries, problems = netif.parse_dnsmasq_hosts(DNSMASQ)
    assert entries == [
        netif.DnsmasqEntry("08:00:27:aa:bb:01", "pxeboot-1", "169.254.202.2", 2),
        netif.DnsmasqEntry("08:00:27:aa:bb:02", "pxeboot-2", "169.254.202.3", 3),
        netif.DnsmasqEntry("08:00:27:aa:bb:03", "pxeboot-3", "169.254.202.50", 6),
        netif.DnsmasqEntry("08:00:27:aa:bb:07", "pxeboot-7", "", 10),
    ]
    assert [n for n, _ in problems] == [7, 8, 9, 11]
    assert "fewer than 3 fields" in problems[0][1]
    assert "bad MAC address" in problems[1][1]
    assert "bad IPv4 address" in problems[2][1] and "bad IPv4" in problems[3][1]


def test_parse_dnsmasq_hosts_garbage_never_raises():
    entries, problems = netif.parse_dnsmasq_hosts("\x00\ufffd,,,\n,,\n" + "a" * 10000)
    assert entries == [] and len(problems) == 3


def test_read_dnsmasq_hosts(tmp_path):
    path = tmp_path / "dnsmasq.hosts"
    assert netif.read_dnsmasq_hosts(str(path)) == ([], [], f"{path} file not present")
    path.mkdir()
    assert netif.read_dnsmasq_hosts(str(path))[2] == (
        f"failed to open seemingly present {path} file")
    path.rmdir()
    write(path, DNSMASQ.encode() + b"08:00:27:aa:bb:09,pxeboot-\xff,169.254.202.9\n")
    entries, problems, error = netif.read_dnsmasq_hosts(str(path))
    assert error is None and len(entries) == 5 and len(problems) == 4
    assert entries[-1].mac == "08:00:27:aa:bb:09" and entries[-1].lineno == 12


# --------------------------------------------------------------------------------------------
# hosts file and resolve


HOSTS = """# comment line
127.0.0.1   localhost
::1         localhost ip6-localhost   # trailing comment
192.168.204.2  controller  Controller-Floating
fd00:204::2    controller
192.168.204.3  controller-0
not-an-ip      bogus
192.168.206.3  controller-0-cluster-host
"""


def test_parse_hosts_file():
    table = netif.parse_hosts_file(HOSTS)
    assert table["localhost"] == ["127.0.0.1", "::1"]
    assert table["ip6-localhost"] == ["::1"]
    assert table["controller"] == ["192.168.204.2", "fd00:204::2"]
    assert table["controller-floating"] == ["192.168.204.2"]
    assert "bogus" not in table and "comment" not in table


def test_resolve_hosts_file_ipv6_first(tmp_path, monkeypatch):
    def no_dns(*args, **kwargs):
        raise AssertionError("getaddrinfo must not be asked")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    hosts = write(tmp_path / "hosts", HOSTS)
    assert netif.resolve("controller", str(hosts)) == [
        (socket.AF_INET6, "fd00:204::2"), (socket.AF_INET, "192.168.204.2")]
    assert netif.resolve("CONTROLLER-0", str(hosts)) == [(socket.AF_INET, "192.168.204.3")]


def test_resolve_falls_back_to_getaddrinfo(tmp_path, monkeypatch):
    calls = []

    def fake(name, port, family=0, type=0, *rest):
        calls.append((name, family, type))
        if name == "worker-9":
            return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("10.0.0.9", 0)),
                    (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("fd00::9", 0, 0, 0)),
                    (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("10.0.0.9", 0))]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    hosts = write(tmp_path / "hosts", HOSTS)
    assert netif.resolve("worker-9", str(hosts)) == [
        (socket.AF_INET6, "fd00::9"), (socket.AF_INET, "10.0.0.9")]
    assert calls == [("worker-9", socket.AF_UNSPEC, socket.SOCK_DGRAM)]
    assert netif.resolve("nowhere", str(hosts)) == []
    assert netif.resolve("nowhere", str(tmp_path / "missing")) == []
    assert netif.resolve("", str(hosts)) == []


def test_resolve_unencodable_name():
    assert netif.resolve("a" * 300 + ".\udcff", None) == []


# --------------------------------------------------------------------------------------------
# platform.conf


PLATFORM = """# platform.conf
nodetype=controller
subfunction = controller,worker
system_type="All-in-one"
system_mode=duplex
management_interface=vlan123
system_mode=duplex-direct
sw_version='24.09'
broken line
"""


def test_parse_platform_conf():
    conf = netif.parse_platform_conf(PLATFORM)
    assert conf == {"nodetype": "controller", "subfunction": "controller,worker",
                    "system_type": "All-in-one", "system_mode": "duplex-direct",
                    "management_interface": "vlan123", "sw_version": "24.09"}


@pytest.mark.parametrize("conf, mode", [
    ({"system_type": "Standard", "system_mode": "simplex"}, "standard"),
    ({"system_type": "All-in-one", "system_mode": "duplex"}, "duplex"),
    ({"system_type": "All-in-one", "system_mode": "Duplex-Direct"}, "duplex-direct"),
    ({"system_type": "All-in-one", "system_mode": "simplex"}, "simplex"),
    ({"system_type": "All-in-one", "system_mode": "weird"}, "simplex"),
    ({"system_type": "All-in-one"}, "simplex"),
    ({}, "simplex"),
])
def test_system_mode(conf, mode):
    assert netif.system_mode(conf) == mode


def test_iface_addresses_prefer_the_interface_own_address_and_skip_link_local():
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    link = ifinfmsg()
    link["index"] = 2
    link["attrs"] = [("IFLA_IFNAME", "eth0")]

    def addr(family, address, label=None):
        m = ifaddrmsg()
        m["index"], m["family"] = 2, family
        m["attrs"] = [("IFA_ADDRESS", address)] + ([("IFA_LABEL", label)] if label else [])
        return m

    links = NetlinkLinks([link, addr(socket.AF_INET, "10.0.2.30", "eth0:2"),
                          addr(socket.AF_INET, "10.0.0.10", "eth0"),
                          addr(socket.AF_INET6, "fe80::1"), addr(socket.AF_INET6, "fd00::10")])
    assert netif.iface_addresses("eth0", links, socket.AF_INET) == ["10.0.0.10", "10.0.2.30"]
    assert netif.iface_addresses("eth0", links, socket.AF_INET6) == ["fd00::10"]
