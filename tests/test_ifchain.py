"""mtce/ifchain.py: the interface chain (sysfs and netlink, docs/protocol.md §5.6), DHCP lease and
static ifcfg files, learning the own pxeboot address (docs/protocol.md §5.2)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from mtce import ifchain
from mtce.netlink import NetlinkLinks
from harness.sysnet import NICS, bond, build_netlink, build_sysfs, vlan, write

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
    info = ifchain.get_iface_info("enp0s8", sys_dir, links)
    assert (info.rc, info.ok, info.type, info.parent, info.chain) == (
        0, True, "ethernet", "enp0s8", "enp0s8")
    assert info.logs == [I("Pxeboot network enp0s8 parent: enp0s8"),
                         I("Interface Chain: enp0s8")]
    assert ifchain.iface_summary(info) == [
        I("...        Type: ethernet"), I("...      Parent: enp0s8"),
        I("Pxeboot IF Name: enp0s8")]


def test_chain_vlan_over_nic(build):
    sys_dir, links = build({**NICS, "vlan123": vlan(2)})
    info = ifchain.get_iface_info("vlan123", sys_dir, links)
    assert (info.rc, info.type, info.parent, info.chain) == (0, "vlan", "enp0s8",
                                                             "vlan123 -> enp0s8")
    assert info.logs == [I("Pxeboot network vlan123 parent: enp0s8"),
                         W("Pxeboot network iface: vlan123"),
                         I("Interface Chain: vlan123 -> enp0s8")]
    assert ifchain.iface_summary(info) == [
        I("...        Type: vlan"), I("...      Parent: enp0s8"), I("Pxeboot IF Name: enp0s8")]


def test_chain_bond_two_slaves(build):
    sys_dir, links = build({**NICS, "pxeboot0": bond()})
    info = ifchain.get_iface_info("pxeboot0", sys_dir, links)
    assert (info.rc, info.type, info.parent, info.slave1, info.slave2, info.bond_mode) == (
        0, "bond", "pxeboot0", "enp0s8", "enp0s9", "802.3ad 4")
    assert info.chain == "pxeboot0 (802.3ad 4) -> enp0s8 and enp0s9"
    assert info.logs == [
        I("Pxeboot network pxeboot0"),
        I("Pxeboot network pxeboot0 mode: 802.3ad 4"),
        D("Pxeboot network pxeboot0 slaves: enp0s8 enp0s9"),
        I("Pxeboot network pxeboot0 slaves: enp0s8 and enp0s9"),
        I("Interface Chain: pxeboot0 (802.3ad 4) -> enp0s8 and enp0s9")]
    assert ifchain.iface_summary(info) == [
        I("...        Type: bond"), I("...      Parent: pxeboot0"),
        I("... Bond Slaves: enp0s8 and enp0s9"), I("...   Bond Mode: 802.3ad 4"),
        I("Pxeboot IF Name: pxeboot0")]


def test_chain_bond_one_slave(build):
    sys_dir, links = build({**NICS, "pxeboot0": bond(["enp0s8"])})
    info = ifchain.get_iface_info("pxeboot0", sys_dir, links)
    assert info.rc == 0
    assert info.chain == "pxeboot0 (802.3ad 4) -> enp0s8 and "
    assert I("Pxeboot network pxeboot0 slaves: enp0s8 and ") in info.logs
    assert I("... Bond Slaves: enp0s8 and none") in ifchain.iface_summary(info)


def test_chain_bond_no_slaves(build):
    sys_dir, links = build({**NICS, "pxeboot0": bond([])})
    info = ifchain.get_iface_info("pxeboot0", sys_dir, links)
    assert info.rc == 0 and info.ok
    assert info.chain == "pxeboot0 (802.3ad 4) ->  and "
    assert info.logs == [
        I("Pxeboot network pxeboot0"),
        I("Pxeboot network pxeboot0 mode: 802.3ad 4"),
        I("Pxeboot network pxeboot0 slaves:  and "),
        I("Interface Chain: pxeboot0 (802.3ad 4) ->  and ")]
    assert I("... Bond Slaves: none and none") in ifchain.iface_summary(info)


def test_chain_bond_more_than_two_slaves(build):
    sys_dir, links = build({**NICS, "pxeboot0": bond(["enp0s8", "enp0s9", "enp0s10"])})
    info = ifchain.get_iface_info("pxeboot0", sys_dir, links)
    assert info.chain == "pxeboot0 (802.3ad 4) -> enp0s8 and enp0s9"
    assert D("Pxeboot network pxeboot0 slaves: enp0s8 enp0s9 enp0s10") in info.logs


def test_chain_vlan_over_bond(build):
    sys_dir, links = build({**NICS, "pxeboot0": bond(), "vlan123": vlan(4)})
    info = ifchain.get_iface_info("vlan123", sys_dir, links)
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
    info = ifchain.get_iface_info("pxeboot0", sys_dir, links)
    path = os.path.join(sys_dir, "pxeboot0", "bonding", "mode")
    assert info.rc == 0
    assert info.chain == "pxeboot0 () -> enp0s8 and enp0s9"
    assert info.logs[:2] == [I("Pxeboot network pxeboot0"),
                             W(f"Failed to find bonding mode file: {path}")]
    assert I("...   Bond Mode: unknown") in ifchain.iface_summary(info)


def test_chain_vlan_over_bond_missing_mode_file(build):
    sys_dir, links = build({**NICS, "pxeboot0": bond(mode=None), "vlan123": vlan(4)})
    info = ifchain.get_iface_info("vlan123", sys_dir, links)
    assert info.rc == 0
    assert info.chain == "vlan123 -> pxeboot0 () -> enp0s8 and enp0s9"


def test_chain_missing_uevent(build):
    sys_dir, links = build(dict(NICS))
    info = ifchain.get_iface_info("vlan123", sys_dir, links)
    path = os.path.join(sys_dir, "vlan123", "uevent")
    assert (info.rc, info.ok, info.chain) == (104, False, "")
    assert info.logs == [W(f"Failed to find file: {path}"),
                         W("failed to get interface type from iface: vlan123")]


def test_chain_vlan_parent_uevent_missing(build):
    sys_dir, links = build({"enp0s8": {"index": 2, "uevent": False}, "vlan123": vlan(2)})
    info = ifchain.get_iface_info("vlan123", sys_dir, links)
    path = os.path.join(sys_dir, "enp0s8", "uevent")
    assert info.rc == 75
    assert info.logs == [
        I("Pxeboot network vlan123 parent: enp0s8"),
        W(f"Failed to find file: {path}"),
        W("failed to get Pxeboot network interface type from iface: enp0s8 ; rc:104")]


@pytest.mark.parametrize("iflink", ["missing", "dir"])
def test_chain_unreadable_iflink(build, iflink):
    sys_dir, links = build({**NICS, "vlan123": vlan(2, iflink=iflink)})
    info = ifchain.get_iface_info("vlan123", sys_dir, links)
    path = os.path.join(sys_dir, "vlan123", "iflink")
    assert (info.rc, info.chain) == (104, "")
    assert info.logs == [W(f"failed to open {path}"),
                         W("failed to get parent interface from vlan123 ; rc:104")]


def test_chain_unknown_parent_index(build):
    sys_dir, links = build({**NICS, "vlan123": vlan(99)})
    info = ifchain.get_iface_info("vlan123", sys_dir, links)
    assert info.rc == 75
    assert info.logs == [W("Mgmnt network parent interface not found for ifname:vlan123"),
                         W("failed to get parent interface from vlan123 ; rc:75")]


def test_chain_network_label_is_a_parameter(build):
    sys_dir, links = build({**NICS, "pxeboot0": bond()})
    info = ifchain.get_iface_info("pxeboot0", sys_dir, links, network="Mgmnt")
    assert info.logs[0] == I("Mgmnt network pxeboot0")
    assert I("Mgmnt network pxeboot0 slaves: enp0s8 and enp0s9") in info.logs


# Sources that differ between sysfs and netlink


def test_sysfs_missing_slaves_file_fails(tmp_path):
    sys_dir, links = build_sysfs(tmp_path / "sys", {**NICS, "pxeboot0": bond(slaves=None)})
    info = ifchain.get_iface_info("pxeboot0", sys_dir, links)
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
    info = ifchain.get_iface_info("vlan123", sys_dir, links)
    assert (info.rc, info.chain) == (75, "vlan123 -> pxeboot0 (802.3ad 4)")
    assert info.logs[-2:] == [W("failed to get slaves from bond: pxeboot0 ; rc:104"),
                              I("Interface Chain: vlan123 -> pxeboot0 (802.3ad 4)")]


def test_netlink_bond_needs_no_slaves_file(tmp_path):
    # netlink knows the bond: its ports come from IFLA_MASTER, the slaves file is not read
    sys_dir, links = build_netlink(tmp_path / "sys", {**NICS, "pxeboot0": bond()})
    assert not os.path.exists(os.path.join(sys_dir, "pxeboot0", "bonding", "slaves"))
    assert not os.path.exists(os.path.join(sys_dir, "pxeboot0", "uevent"))
    info = ifchain.get_iface_info("pxeboot0", sys_dir, links)
    assert (info.rc, info.chain) == (0, "pxeboot0 (802.3ad 4) -> enp0s8 and enp0s9")


def test_netlink_wins_over_sysfs(tmp_path):
    # sysfs says ethernet with other slaves; netlink says bond: netlink decides type and slaves
    sys_dir, _ = build_sysfs(tmp_path / "sys", {"pxeboot0": bond(["ethX", "ethY"])})
    (tmp_path / "sys" / "pxeboot0" / "uevent").write_text("INTERFACE=pxeboot0\n")
    _, links = build_netlink(tmp_path / "other", {**NICS, "pxeboot0": bond()})
    info = ifchain.get_iface_info("pxeboot0", sys_dir, links)
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
    assert ifchain.get_iface_info("vlan123", sys_dir, links).parent == "enp0s9"
    (tmp_path / "sys" / "vlan123" / "iflink").write_text("garbage\n")
    info = ifchain.get_iface_info("vlan123", sys_dir, links)
    assert info.rc == 75 and info.parent == ""


def test_sysfs_uevent_other_devtype_is_ethernet(tmp_path):
    sys_dir, links = build_sysfs(tmp_path / "sys", {"br0": {"index": 7}})
    (tmp_path / "sys" / "br0" / "uevent").write_text("DEVTYPE=bridge\nINTERFACE=br0\n")
    info = ifchain.get_iface_info("br0", sys_dir, links)
    assert (info.type, info.chain) == ("ethernet", "br0")


def test_empty_netlink_is_valid(tmp_path):
    links = NetlinkLinks([])
    assert len(links) == 0
    assert links.get("eth0") is None and links.by_index(1) is None
    assert links.addresses("eth0", socket.AF_INET) == []
    assert links.address_by_label("eth0:2") == ""
    info = ifchain.get_iface_info("eth0", str(tmp_path), None)
    assert info.rc == 104


# --------------------------------------------------------------------------------------------
# iface_master


def test_iface_master(tmp_path):
    sys_dir = tmp_path / "sys"
    (sys_dir / "enp0s8" / "master").mkdir(parents=True)
    (sys_dir / "enp0s8" / "master" / "uevent").write_text(
        "DEVTYPE=bond\nINTERFACE=pxeboot0\nIFINDEX=4\n")
    assert ifchain.iface_master("enp0s8", str(sys_dir)) == "pxeboot0"
    assert ifchain.iface_master("enp0s3", str(sys_dir)) == "enp0s3"
    _, links = build_netlink(tmp_path / "nl", {**NICS, "pxeboot0": bond(["enp0s9"])})
    assert ifchain.iface_master("enp0s9", str(tmp_path / "nl"), links) == "pxeboot0"
    assert ifchain.iface_master("enp0s8", str(tmp_path / "nl"), links) == "enp0s8"

# --------------------------------------------------------------------------------------------
# DHCP lease files


LEASE = """lease {{
  interface "enp0s8:2";
  fixed-address {addr};
  option subnet-mask 255.255.255.0;
  renew 2 2024/03/12 10:00:00;
}}
"""


def test_lease_single_block(tmp_path):
    write(tmp_path / "dhclient.enp0s8:2.leases", LEASE.format(addr="169.254.202.159"))
    addr, logs = ifchain.dhcp_lease_address(str(tmp_path), "enp0s8:2")
    assert addr == "169.254.202.159"
    assert logs == [D("learning pxeboot address ..."),
                    D(f"pxeboot dhcp lease file: {tmp_path}/dhclient.enp0s8:2.leases")]


def test_lease_last_block_wins(tmp_path):
    text = "".join(LEASE.format(addr=a) for a in ("169.254.202.10", "169.254.202.11"))
    write(tmp_path / "dhclient.enp0s8:2.leases", text)
    assert ifchain.dhcp_lease_address(str(tmp_path), "enp0s8:2")[0] == "169.254.202.11"


def test_lease_last_block_without_address(tmp_path):
    text = LEASE.format(addr="169.254.202.10") + 'lease {\n  interface "enp0s8:2";\n}\n'
    write(tmp_path / "dhclient.enp0s8:2.leases", text)
    addr, logs = ifchain.dhcp_lease_address(str(tmp_path), "enp0s8:2")
    assert addr == ""
    assert [lvl for lvl, _ in logs] == ["debug", "debug"]  # silently empty, as the original


def test_lease_several_matching_files_last_sorted_wins(tmp_path):
    write(tmp_path / "dhclient.enp0s8:2.leases", LEASE.format(addr="169.254.202.10"))
    write(tmp_path / "dhclient6.enp0s8:2.leases", LEASE.format(addr="169.254.202.20"))
    write(tmp_path / "dhclient.enp0s8.leases", LEASE.format(addr="169.254.202.30"))
    write(tmp_path / "zz.enp0s3:2.leases", LEASE.format(addr="169.254.202.40"))
    addr, logs = ifchain.dhcp_lease_address(str(tmp_path), "enp0s8:2")
    assert addr == "169.254.202.20"
    assert D(f"pxeboot dhcp lease file: {tmp_path}/dhclient6.enp0s8:2.leases") in logs


def test_lease_no_dir_and_no_file(tmp_path):
    addr, logs = ifchain.dhcp_lease_address(str(tmp_path / "nope"), "enp0s8:2")
    assert (addr, logs[-1]) == ("", I("no dhcp leases"))
    write(tmp_path / "dhclient.enp0s3.leases", LEASE.format(addr="169.254.202.40"))
    addr, logs = ifchain.dhcp_lease_address(str(tmp_path), "enp0s8:2")
    assert (addr, logs[-1]) == ("", I(f"dhcp lease file {tmp_path}/enp0s8:2 not found"))


@pytest.mark.parametrize("data", [
    bytes(range(256)) * 4,
    b"lease {\n  fixed-address 169.254.202.9;\n\xff\xfe\n}\n",
    b"\x00\x00\x00\x00",
])
def test_lease_garbage_bytes(tmp_path, data):
    write(tmp_path / "dhclient.enp0s8:2.leases", data)
    addr, logs = ifchain.dhcp_lease_address(str(tmp_path), "enp0s8:2")
    assert addr == ""
    assert logs[-1] == W(f"dhcp lease file {tmp_path}/dhclient.enp0s8:2.leases is not a text "
                         "file ; ignored")


def test_lease_truncated(tmp_path):
    path = write(tmp_path / "dhclient.enp0s8:2.leases", "lease {\n  fixed-address 169.254.202.9")
    assert ifchain.dhcp_lease_address(str(tmp_path), "enp0s8:2")[0] == "169.254.202.9"
    path.write_text("lease {\n  fixed-address 169.254.2")
    addr, logs = ifchain.dhcp_lease_address(str(tmp_path), "enp0s8:2")
    assert addr == ""
    assert logs[-1] == W(f"invalid fixed-address '169.254.2' in dhcp lease file: {path}")


def test_lease_directory_instead_of_file(tmp_path):
    (tmp_path / "dhclient.enp0s8:2.leases").mkdir()
    addr, logs = ifchain.dhcp_lease_address(str(tmp_path), "enp0s8:2")
    assert (addr, logs[-1]) == (
        "", W(f"unable to open dhcp lease file: {tmp_path}/dhclient.enp0s8:2.leases"))


def test_lease_permission_denied(tmp_path):
    if os.geteuid() == 0:
        # The child below runs as nobody: the directory must be reachable for it.
        import tempfile
        tmp_path = Path(tempfile.mkdtemp(prefix="mtce-perm-", dir="/tmp"))
        tmp_path.chmod(0o755)
    path = write(tmp_path / "dhclient.enp0s8:2.leases", LEASE.format(addr="169.254.202.9"))
    path.chmod(0)
    if os.geteuid() != 0:
        result = ifchain.dhcp_lease_address(str(tmp_path), "enp0s8:2")
    else:
        # root reads mode 000 files: look as an unprivileged user, in a child process.
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            try:
                os.setgid(65534)
                os.setuid(65534)
                out = repr(ifchain.dhcp_lease_address(str(tmp_path), "enp0s8:2")).encode()
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
    addr, logs = ifchain.static_ifcfg_address(str(tmp_path), "enp0s8:2")
    assert addr == "169.254.202.4"
    assert logs == [I(f"found pxeboot address in {path}")] * 2


def test_ifcfg_indented_only(tmp_path):
    write(tmp_path / "ifcfg-enp0s8:2", "iface enp0s8:2 inet static\n  address 169.254.202.3\n")
    assert ifchain.static_ifcfg_address(str(tmp_path), "enp0s8:2") == ("", [])


def test_ifcfg_missing_and_bad(tmp_path):
    path = tmp_path / "ifcfg-enp0s8:2"
    assert ifchain.static_ifcfg_address(str(tmp_path), "enp0s8:2") == (
        "", [I(f"no {path} file present")])
    path.mkdir()
    assert ifchain.static_ifcfg_address(str(tmp_path), "enp0s8:2") == (
        "", [W(f"unable to open {path} file for interface:enp0s8:2")])
    path.rmdir()
    write(path, b"address \xff\xfe\n")
    addr, logs = ifchain.static_ifcfg_address(str(tmp_path), "enp0s8:2")
    assert (addr, logs) == ("", [W(f"{path} is not a text file ; ignored")])
    write(path, "address 169.254.202.3;\n")  # no ';' stripping here, so not an address
    addr, logs = ifchain.static_ifcfg_address(str(tmp_path), "enp0s8:2")
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
    res = ifchain.learn_pxeboot_address("vlan123", False, sys_dir, leases, ifcfg, links)
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
    res = ifchain.learn_pxeboot_address("vlan123", True, sys_dir, leases, ifcfg, links)
    assert res.addr == "169.254.202.3"
    assert res.logs[-4:] == [
        I(f"dhcp lease file {leases}/pxeboot0:2 not found"),
        I(f"found pxeboot address in {ifcfg}/ifcfg-pxeboot0:2"),
        I("pxeboot static address: 169.254.202.3"),
        I("Pxeboot IP: 169.254.202.3")]
    # a DHCP lease wins over the static file
    write(Path(leases) / "dhclient.pxeboot0:2.leases", LEASE.format(addr="169.254.202.60"))
    res = ifchain.learn_pxeboot_address("vlan123", True, sys_dir, leases, ifcfg, links)
    assert res.addr == "169.254.202.60"
    assert not any(t.startswith(("pxeboot static", "found pxeboot", "no ")) for _, t in res.logs)


def test_learn_worker_never_reads_ifcfg(host):
    sys_dir, leases, ifcfg, links = host
    write(Path(ifcfg) / "ifcfg-pxeboot0:2", "address 169.254.202.3\n")
    res = ifchain.learn_pxeboot_address("vlan123", False, sys_dir, leases, ifcfg, links)
    assert res.addr == ""
    assert res.logs[-2:] == [I(f"dhcp lease file {leases}/pxeboot0:2 not found"),
                             E("failed to get pxeboot address")]


def test_learn_controller_nothing_found(host):
    sys_dir, leases, ifcfg, links = host
    res = ifchain.learn_pxeboot_address("vlan123", True, sys_dir, leases, ifcfg, links)
    assert res.addr == ""
    assert res.logs[-2:] == [I(f"no {ifcfg}/ifcfg-pxeboot0:2 file present"),
                             E("failed to get pxeboot address")]


def test_learn_chain_failure_keeps_old_value(host, tmp_path):
    sys_dir, leases, ifcfg, links = host
    os.remove(os.path.join(sys_dir, "pxeboot0", "bonding", "slaves"))
    write(Path(leases) / "dhclient.pxeboot0:2.leases", LEASE.format(addr="169.254.202.50"))
    res = ifchain.learn_pxeboot_address("vlan123", True, sys_dir, leases, ifcfg, links)
    assert res.addr is None and res.info.rc == 75
    assert res.logs[-1] == E("failed to get interface info ; rc:75")
    assert not any(t.startswith("...") for _, t in res.logs)


def test_learn_ethernet_key_uses_parent(tmp_path):
    sys_dir, links = build_netlink(tmp_path / "sys", dict(NICS))
    write(tmp_path / "dhcp" / "dhclient.enp0s8:2.leases", LEASE.format(addr="169.254.202.7"))
    write(tmp_path / "dhcp" / "dhclient.enp0s8.leases", LEASE.format(addr="169.254.202.8"))
    res = ifchain.learn_pxeboot_address("enp0s8", False, sys_dir, str(tmp_path / "dhcp"),
                                      str(tmp_path / "ifcfg"), links)
    assert res.addr == "169.254.202.7"

