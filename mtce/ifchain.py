"""The pxeboot interface chain (ethernet, vlan, bond, vlan over bond: docs/protocol.md §5.6) from
netlink plus `[paths] sys_class_net`, and the client's own pxeboot address from its DHCP
lease or static ifcfg file (docs/protocol.md §5.2). Nothing here logs: functions return `(level,
text)` lines so that callers can throttle them.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field

from mtce.netlink import NetlinkLinks, _as_int

PASS = 0
FAIL_NOT_FOUND = 75  # returnCodes.h
FAIL_FILE_OPEN = 104

ETHERNET = "ethernet"
VLAN = "vlan"
BOND = "bond"

LogLine = tuple[str, str]  # (level, text); level is "info", "warning", "error" or "debug"

MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
HWADDR_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2})*$")
_STRTOL_RE = re.compile(r"^\s*([+-]?\d+)")


# --------------------------------------------------------------------------------------------
# Small file helpers (never raise)


def read_text(path: str) -> str | None:
    """Whole file as text (undecodable bytes replaced), or None if it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return None


def _read_strict(path: str) -> tuple[str | None, str]:
    """(text, "") for a readable UTF-8 text file, else (None, why) with why "open" or "text"."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except (OSError, ValueError):
        return None, "open"
    if b"\0" in data:
        return None, "text"
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError:
        return None, "text"


def _first_line(text: str) -> str:
    """std::getline: the text up to the first newline."""
    return text.split("\n", 1)[0]


def is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Interface chain (docs/protocol.md §5.6; nodeUtil.cpp get_iface_info)


@dataclass
class IfaceInfo:
    """Result of `get_iface_info`: the C `iface_info_type` plus the rc and the log lines."""

    name: str
    type: str = ETHERNET
    parent: str = ""
    slave1: str = ""
    slave2: str = ""
    bond_mode: str = ""
    chain: str = ""
    rc: int = PASS
    logs: list[LogLine] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rc == PASS


def sys_path(sys_class_net: str, ifname: str, *parts: str) -> str:
    return os.path.join(sys_class_net, ifname, *parts)


def _kind_type(kind: str, current: str) -> str:
    """Netlink kind as the C DEVTYPE rule: vlan, bond, else unchanged (a NIC has no DEVTYPE)."""
    if kind == VLAN:
        return VLAN
    if kind == BOND:
        return BOND
    return current


def _iface_type(ifname: str, current: str, sys_class_net: str, links: NetlinkLinks,
                logs: list[LogLine]) -> tuple[str, int]:
    facts = links.get(ifname)
    if facts is not None:
        return _kind_type(facts.kind, current), PASS
    path = sys_path(sys_class_net, ifname, "uevent")
    text = read_text(path)
    if text is None:
        logs.append(("warning", f"Failed to find file: {path}"))
        return current, FAIL_FILE_OPEN
    for line in text.split("\n"):
        if line.startswith("DEVTYPE"):
            if "=vlan" in line:
                return VLAN, PASS
            if "=bond" in line:
                return BOND, PASS
            return ETHERNET, PASS
    return current, PASS


def _name_of_index(index: int, sys_class_net: str, links: NetlinkLinks) -> str:
    """if_indextoname(): netlink first, then the `ifindex` files under sys_class_net."""
    if index <= 0:
        return ""
    facts = links.by_index(index)
    if facts is not None:
        return facts.name
    try:
        names = sorted(os.listdir(sys_class_net))
    except OSError:
        return ""
    for name in names:
        text = read_text(sys_path(sys_class_net, name, "ifindex"))
        if text is not None and _as_int(text.strip()) == index:
            return name
    return ""


def _iface_parent(ifname: str, sys_class_net: str, links: NetlinkLinks,
                  logs: list[LogLine]) -> tuple[str, int]:
    facts = links.get(ifname)
    index = facts.link if facts is not None else None
    if index is None:
        path = sys_path(sys_class_net, ifname, "iflink")
        text = read_text(path)
        if text is None:
            logs.append(("warning", f"failed to open {path}"))
            return "", FAIL_FILE_OPEN
        index = -1
        for line in text.splitlines():  # strtol() of the last line; no digits gives 0
            match = _STRTOL_RE.match(line)
            index = int(match.group(1)) if match else 0
    parent = _name_of_index(index, sys_class_net, links)
    if not parent:
        # get_iface_parent is always called with MGMNT_INTERFACE: the label says Mgmnt.
        logs.append(("warning", f"Mgmnt network parent interface not found for ifname:{ifname}"))
        return "", FAIL_NOT_FOUND
    return parent, PASS


def _bond_mode(bond: str, network: str, sys_class_net: str, logs: list[LogLine]) -> str:
    path = sys_path(sys_class_net, bond, "bonding", "mode")
    text = read_text(path)
    if text is None:
        logs.append(("warning", f"Failed to find bonding mode file: {path}"))
        return ""
    mode = _first_line(text)
    if mode:
        logs.append(("info", f"{network} network {bond} mode: {mode}"))
    return mode


def _bond_slaves(bond: str, network: str, sys_class_net: str, links: NetlinkLinks,
                 logs: list[LogLine]) -> tuple[str, str, int]:
    if links.get(bond) is not None:
        line = " ".join(links.slaves_of(bond))
    else:
        path = sys_path(sys_class_net, bond, "bonding", "slaves")
        text = read_text(path)
        if text is None:
            logs.append(("warning", f"failed to open file: {path}"))
            return "", "", FAIL_FILE_OPEN
        line = _first_line(text)
    if not line:
        return "", "", PASS
    logs.append(("debug", f"{network} network {bond} slaves: {line}"))
    tokens = [t for t in line.split(" ") if t]  # strtok(" ")
    return (tokens[0] if tokens else ""), (tokens[1] if len(tokens) > 1 else ""), PASS


def get_iface_info(ifname: str, sys_class_net: str, links: NetlinkLinks | None = None,
                   network: str = "Pxeboot") -> IfaceInfo:
    """Resolve `ifname` to its chain (ethernet, vlan -> NIC, bond -> slaves, vlan -> bond).

    Reproduces nodeUtil.cpp `get_iface_info` (docs/protocol.md §5.6): same cases, return codes
    (0, 75 FAIL_NOT_FOUND, 104 FAIL_FILE_OPEN), chain text and log lines; `network` is the label the
    original prints (`Pxeboot`).  Sources, per fact:

    - type: netlink IFLA_INFO_KIND when netlink knows the interface (`vlan`/`bond`; any other
      kind counts as a uevent without DEVTYPE), else the sysfs `uevent` DEVTYPE line;
    - vlan parent: netlink IFLA_LINK, else the sysfs `iflink`; the index is named by netlink,
      else by the `ifindex` files under `sys_class_net` (if_indextoname of that tree);
    - bond slaves: the links whose IFLA_MASTER is the bond (ifindex order) when netlink knows
      the bond, else the first line of sysfs `bonding/slaves`.  So a missing slaves *file*
      only fails (rc 75) when netlink does not know the bond;
    - bond mode: always sysfs `bonding/mode` (netlink has only the number, not `802.3ad 4`).

    Where the original prints `/sys/class/net` this prints `sys_class_net`.
    """
    links = links if links is not None else NetlinkLinks([])
    info = IfaceInfo(name=ifname)
    logs = info.logs
    info.type, rc = _iface_type(ifname, ETHERNET, sys_class_net, links, logs)
    if rc != PASS:
        logs.append(("warning", f"failed to get interface type from iface: {ifname}"))
        info.rc = rc
        return info

    if info.type == ETHERNET:
        info.parent = ifname
        logs.append(("info", f"{network} network {ifname} parent: {ifname}"))
        info.chain = ifname
    elif info.type == VLAN:
        info.parent, rc = _iface_parent(ifname, sys_class_net, links, logs)
        if rc != PASS:
            logs.append(("warning", f"failed to get parent interface from {ifname} ; rc:{rc}"))
        else:
            logs.append(("info", f"{network} network {ifname} parent: {info.parent}"))
            info.type, rc = _iface_type(info.parent, info.type, sys_class_net, links, logs)
            if rc != PASS:
                logs.append(("warning", f"failed to get {network} network interface type from "
                             f"iface: {info.parent} ; rc:{rc}"))
                rc = FAIL_NOT_FOUND
            elif info.type == BOND:
                info.bond_mode = _bond_mode(info.parent, network, sys_class_net, logs)
                info.chain = f"{ifname} -> {info.parent} ({info.bond_mode})"
                # the C code reads the slaves of a vlan's bond with the MGMNT label
                rc = _fill_slaves(info, info.parent, network, "Mgmnt", sys_class_net, links)
            else:
                logs.append(("warning", f"{network} network iface: {ifname}"))
                info.chain = f"{ifname} -> {info.parent}"
    else:
        info.parent = ifname
        logs.append(("info", f"{network} network {ifname}"))
        info.bond_mode = _bond_mode(ifname, network, sys_class_net, logs)
        info.chain = f"{ifname} ({info.bond_mode})"
        rc = _fill_slaves(info, ifname, network, network, sys_class_net, links)

    if info.chain:
        logs.append(("info", f"Interface Chain: {info.chain}"))
    info.rc = rc
    return info


def _fill_slaves(info: IfaceInfo, bond: str, network: str, debug_label: str,
                 sys_class_net: str, links: NetlinkLinks) -> int:
    info.slave1, info.slave2, rc = _bond_slaves(bond, debug_label, sys_class_net, links,
                                                info.logs)
    if rc != PASS:
        info.logs.append(("warning", f"failed to get slaves from bond: {bond} ; rc:{rc}"))
        return FAIL_NOT_FOUND
    info.chain += f" -> {info.slave1} and {info.slave2}"
    info.logs.append(("info", f"{network} network {bond} slaves: {info.slave1} and {info.slave2}"))
    return PASS


def iface_summary(info: IfaceInfo) -> list[LogLine]:
    """The `...        Type:` block learn_my_pxeboot_address logs after a good chain."""
    logs: list[LogLine] = [
        ("info", f"...        Type: {info.type}"),
        ("info", f"...      Parent: {info.parent or 'none'}"),
    ]
    if info.type == BOND:
        logs.append(("info", f"... Bond Slaves: {info.slave1 or 'none'} and "
                     f"{info.slave2 or 'none'}"))
        logs.append(("info", f"...   Bond Mode: {info.bond_mode or 'unknown'}"))
    logs.append(("info", f"Pxeboot IF Name: {info.parent}"))
    return logs


def iface_master(ifname: str, sys_class_net: str, links: NetlinkLinks | None = None) -> str:
    """The master (bond) of `ifname`, else `ifname` (daemon_get_iface_master).

    Netlink IFLA_MASTER first, then the `INTERFACE=` line of `<if>/master/uevent`.
    """
    facts = links.get(ifname) if links is not None else None
    if facts is not None and facts.master is not None:
        master = links.by_index(facts.master)
        if master is not None:
            return master.name
    text = read_text(sys_path(sys_class_net, ifname, "master", "uevent"))
    for line in (text or "").split("\n"):
        if line.startswith("INTERFACE="):
            token = line[len("INTERFACE="):].split()
            if token:
                return token[0]
    return ifname


# --------------------------------------------------------------------------------------------
# Own pxeboot address (docs/protocol.md §5.2)


def dhcp_lease_address(leases_dir: str, key: str) -> tuple[str, list[LogLine]]:
    """The pxeboot address from the DHCP lease file whose name contains `key` (`<parent>:2`).

    Of the matching directory entries the last in *sorted* order wins (the C code takes the
    last in readdir order, which is unspecified).  In that file every line containing `lease {`
    starts a new lease, and a line containing `fixed-address` sets its address to the second
    token with one trailing `;` removed; the result is the last lease's address, "" if that
    lease has none.  A file that cannot be read, is not text or yields no IPv4 address gives
    "" and a warning.
    """
    logs: list[LogLine] = [("debug", "learning pxeboot address ...")]
    try:
        names = sorted(os.listdir(leases_dir))
    except (OSError, ValueError):
        logs.append(("info", "no dhcp leases"))
        return "", logs
    matches = [n for n in names if key in n]
    if not matches:
        logs.append(("info", f"dhcp lease file {os.path.join(leases_dir, key)} not found"))
        return "", logs
    path = os.path.join(leases_dir, matches[-1])
    logs.append(("debug", f"pxeboot dhcp lease file: {path}"))
    text, why = _read_strict(path)
    if text is None:
        if why == "text":
            logs.append(("warning", f"dhcp lease file {path} is not a text file ; ignored"))
        else:
            logs.append(("warning", f"unable to open dhcp lease file: {path}"))
        return "", logs
    address = ""
    for line in text.split("\n"):
        if "lease {" in line:
            address = ""
        if "fixed-address" in line:
            tokens = line.split()
            if len(tokens) > 1:  # like `stream >> s`: no token leaves the value unchanged
                address = tokens[1][:-1] if tokens[1].endswith(";") else tokens[1]
    if address and not is_ipv4(address):
        logs.append(("warning", f"invalid fixed-address '{address}' in dhcp lease file: {path}"))
        return "", logs
    return address, logs


def static_ifcfg_address(ifcfg_dir: str, key: str) -> tuple[str, list[LogLine]]:
    """The pxeboot address from `<ifcfg_dir>/ifcfg-<key>` (controllers, after unlock).

    Every line that starts at column 0 with `address` gives its second token (no `;`
    stripping); the last wins.  Indented lines do not count.  An unreadable or non-text file,
    or a last value that is not an IPv4 address, gives "" and a warning.
    """
    logs: list[LogLine] = []
    path = os.path.join(ifcfg_dir, f"ifcfg-{key}")
    try:
        os.stat(path)
    except (OSError, ValueError):
        logs.append(("info", f"no {path} file present"))
        return "", logs
    text, why = _read_strict(path)
    if text is None:
        if why == "text":
            logs.append(("warning", f"{path} is not a text file ; ignored"))
        else:
            logs.append(("warning", f"unable to open {path} file for interface:{key}"))
        return "", logs
    address = ""
    for line in text.split("\n"):
        if line.startswith("address"):
            tokens = line.split()
            if len(tokens) > 1:
                address = tokens[1]
            logs.append(("info", f"found pxeboot address in {path}"))
    if address and not is_ipv4(address):
        logs.append(("warning", f"invalid address '{address}' in {path}"))
        return "", logs
    return address, logs


@dataclass
class PxebootLearn:
    """Outcome of `learn_pxeboot_address`.

    addr: None when the interface chain failed (the caller keeps its old value), "" when the
    chain is good but no address was found (the caller clears its value, as the C code does),
    else the IPv4 address.
    """

    addr: str | None
    info: IfaceInfo
    logs: list[LogLine] = field(default_factory=list)


def learn_pxeboot_address(mgmt_iface: str, is_controller: bool, sys_class_net: str,
                          leases_dir: str, ifcfg_dir: str,
                          links: NetlinkLinks | None = None) -> PxebootLearn:
    """learn_my_pxeboot_address (docs/protocol.md §5.2).

    `mgmt_iface` is the interface to resolve: the raw `management_interface` at start, the
    learned parent on a re-learn (docs/protocol.md §5.6).  The lookup key is always
    `<parent>:2`; the DHCP lease is tried first on every node type, the static ifcfg file only
    on controllers and only if DHCP gave nothing.
    """
    info = get_iface_info(mgmt_iface, sys_class_net, links)
    logs = list(info.logs)
    if not info.ok:
        logs.append(("error", f"failed to get interface info ; rc:{info.rc}"))
        return PxebootLearn(None, info, logs)
    logs += iface_summary(info)
    key = f"{info.parent}:2"  # ed3bde2: pxeboot interface configs always use label :2
    addr, more = dhcp_lease_address(leases_dir, key)
    logs += more
    if addr:
        logs.append(("info", f"pxeboot dhcp lease address: {addr} ; initial"))
    elif is_controller:
        addr, more = static_ifcfg_address(ifcfg_dir, key)
        logs += more
        if addr:
            logs.append(("info", f"pxeboot static address: {addr}"))
    if addr:
        logs.append(("info", f"Pxeboot IP: {addr}"))
    else:
        logs.append(("error", "failed to get pxeboot address"))
    return PxebootLearn(addr, info, logs)


