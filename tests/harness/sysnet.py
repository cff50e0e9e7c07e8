"""Interface topologies for tests (bond and vlan cannot be made on the test machines):
rendered as a sysfs tree alone (no netlink), or as netlink messages plus the sysfs files
netlink lacks (bonding/mode). Used by test_netif and the in-process client tests."""

from __future__ import annotations

from pathlib import Path

from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from mtce.netlink import NetlinkLinks

# --------------------------------------------------------------------------------------------
# Topologies, rendered either as a sysfs tree (no netlink) or as netlink messages plus a sysfs
# tree that holds only what netlink lacks (bonding/mode).
#
# Per interface: index, kind ("vlan"/"bond"/""), link (vlan lower ifindex), mode (None: no
# file), slaves (None: no file), uevent (False: sysfs has no uevent and netlink does not know
# it), iflink ("auto", "missing", "dir").

NICS = {"enp0s8": {"index": 2}, "enp0s9": {"index": 3}, "enp0s10": {"index": 6}}


def write(path: Path, data) -> Path:
    """`data` (text or bytes) into `path`, its directories made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


def bond(slaves=("enp0s8", "enp0s9"), mode="802.3ad 4", **extra):
    return {"index": 4, "kind": "bond", "mode": mode,
            "slaves": None if slaves is None else list(slaves), **extra}


def vlan(link, **extra):
    return {"index": 5, "kind": "vlan", "link": link, **extra}


def build_sysfs(root: Path, topo: dict) -> tuple[str, NetlinkLinks]:
    for name, spec in topo.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "ifindex").write_text(f"{spec['index']}\n")
        if spec.get("uevent", True):
            devtype = {"vlan": "DEVTYPE=vlan\n", "bond": "DEVTYPE=bond\n"}.get(
                spec.get("kind", ""), "")
            (d / "uevent").write_text(f"{devtype}INTERFACE={name}\nIFINDEX={spec['index']}\n")
        iflink = spec.get("iflink", "auto")
        if spec.get("kind") == "vlan" and iflink == "auto":
            (d / "iflink").write_text(f"{spec['link']}\n")
        elif iflink == "dir":
            (d / "iflink").mkdir()
        elif iflink not in ("auto", "missing"):
            (d / "iflink").write_text(iflink)
        if spec.get("kind") == "bond":
            (d / "bonding").mkdir()
            if spec.get("mode") is not None:
                (d / "bonding" / "mode").write_text(spec["mode"] + "\n")
            if spec.get("slaves") is not None:
                (d / "bonding" / "slaves").write_text(" ".join(spec["slaves"]) + "\n")
    return str(root), NetlinkLinks([])


def build_netlink(root: Path, topo: dict) -> tuple[str, NetlinkLinks]:
    root.mkdir(parents=True, exist_ok=True)
    masters = {}
    for name, spec in topo.items():
        for slave in spec.get("slaves") or ():
            masters[slave] = spec["index"]
    msgs = []
    for name, spec in topo.items():
        if not spec.get("uevent", True):
            # unknown to netlink: sysfs names its index, nothing more
            (root / name).mkdir()
            (root / name / "ifindex").write_text(f"{spec['index']}\n")
            continue
        m = ifinfmsg()
        m["index"] = spec["index"]
        attrs = [("IFLA_IFNAME", name), ("IFLA_OPERSTATE", "UP"),
                 ("IFLA_ADDRESS", f"08:00:27:AA:00:{spec['index']:02X}")]
        if spec.get("kind") == "vlan" and spec.get("iflink", "auto") == "auto":
            attrs.append(("IFLA_LINK", spec["link"]))
        if name in masters:
            attrs.append(("IFLA_MASTER", masters[name]))
        if spec.get("kind"):
            attrs.append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", spec["kind"])]}))
        m["attrs"] = attrs
        msgs.append(m)
        if spec.get("kind") == "bond" and spec.get("mode") is not None:
            (root / name / "bonding").mkdir(parents=True)
            (root / name / "bonding" / "mode").write_text(spec["mode"] + "\n")
    return str(root), NetlinkLinks(msgs)


# The management interface kinds of the original's test plan (14bb677): name -> (the mgmt
# interface, its sysfs topology, the pxeboot parent whose lease is read, the chain line).
MGMT_KINDS = {
    "ethernet": ("enp0s8", dict(NICS), "enp0s8", "Interface Chain: enp0s8"),
    "vlan": ("vlan123", {**NICS, "vlan123": vlan(2)}, "enp0s8",
             "Interface Chain: vlan123 -> enp0s8"),
    "bond": ("pxeboot0", {**NICS, "pxeboot0": bond()}, "pxeboot0",
             "Interface Chain: pxeboot0 (802.3ad 4) -> enp0s8 and enp0s9"),
    "vlan over bond": ("vlan123", {**NICS, "pxeboot0": bond(), "vlan123": vlan(4)}, "pxeboot0",
                       "Interface Chain: vlan123 -> pxeboot0 (802.3ad 4) -> enp0s8 and enp0s9"),
    "bond, 1 slave": ("pxeboot0", {**NICS, "pxeboot0": bond(slaves=("enp0s8",))}, "pxeboot0",
                      "Interface Chain: pxeboot0 (802.3ad 4) -> enp0s8 and "),
    "bond, 0 slaves": ("pxeboot0", {**NICS, "pxeboot0": bond(slaves=())}, "pxeboot0",
                       "Interface Chain: pxeboot0 (802.3ad 4) ->  and "),
}


def dress(host, kind: str, **platform) -> tuple[str, str]:
    """Give a FakeHost the management interface `kind` (MGMT_KINDS): its sysfs tree, its
    platform.conf (with `platform` keys) and its pxeboot lease on the parent, in place of the
    plain one. Returns (the pxeboot parent, the chain line the client must log)."""
    mgmt, topo, parent, chain = MGMT_KINDS[kind]
    old = Path(host.paths["dhcp_leases_dir"], f"dhclient.{host.mgmt_iface}:2.leases")
    if old.exists():
        old.unlink()
    host.mgmt_iface = mgmt
    host.write_platform(**platform)
    build_sysfs(Path(host.paths["sys_class_net"]), topo)
    Path(host.paths["sys_class_net"], mgmt, "address").write_text(host.mac + "\n")
    if host.pxeboot_ip:
        host.write_lease(f"{parent}:2", host.pxeboot_ip)
    return parent, chain

