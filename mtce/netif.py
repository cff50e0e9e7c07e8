"""Interface facts and address sources for mtcClient/mtcAgent (client.md §2-§3, agent.md §2).

Interface chain (ethernet, vlan, bond, vlan over bond) from netlink plus `[paths] sys_class_net`,
the own pxeboot address from DHCP lease / ifcfg files, dnsmasq.hosts, hosts-file and platform.conf
parsing, and name resolution.  Nothing here logs: functions return `(level, text)` lines so that
callers can throttle them.  pyroute2 is imported lazily (only `NetlinkLinks.from_kernel`).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import socket
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

PASS = 0
FAIL_NOT_FOUND = 75  # returnCodes.h
FAIL_FILE_OPEN = 104

ETHERNET = "ethernet"
VLAN = "vlan"
BOND = "bond"

LogLine = tuple[str, str]  # (level, text); level is "info", "warning", "error" or "debug"

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_HWADDR_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2})*$")
_STRTOL_RE = re.compile(r"^\s*([+-]?\d+)")


# --------------------------------------------------------------------------------------------
# Small file helpers (never raise)


def _read_text(path: str) -> str | None:
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


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Netlink seam


def _nla(msg: Any, name: str) -> Any:
    """First attribute `name` of a pyroute2 message, NLA, or plain `{"attrs": [...]}` dict."""
    if msg is None:
        return None
    if hasattr(msg, "get_attr"):
        return msg.get_attr(name)
    if isinstance(msg, Mapping):
        for item in msg.get("attrs") or ():
            if len(item) >= 2 and item[0] == name:
                return item[1]
    return None


def _attr_names(msg: Any) -> list[str]:
    try:
        return [item[0] for item in msg.get("attrs") or () if item]
    except (AttributeError, TypeError):
        return []


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class LinkFacts:
    """What netlink says about one link (anchors.md §D.7)."""

    name: str
    index: int
    kind: str = ""  # IFLA_INFO_KIND: "vlan", "bond", "veth", ... ("" for a plain NIC)
    link: int | None = None  # IFLA_LINK: the lower device's ifindex on a vlan
    master: int | None = None  # IFLA_MASTER: the bond (or bridge) ifindex of a port
    mac: str = ""  # IFLA_ADDRESS, lower case
    operstate: str = ""  # IFLA_OPERSTATE: "UP", "DOWN", ...


class _Addr(NamedTuple):
    index: int
    family: int
    addr: str
    label: str


class NetlinkLinks:
    """Links and addresses from one netlink dump (RTM_NEWLINK and RTM_NEWADDR messages).

    Takes pyroute2 `ifinfmsg`/`ifaddrmsg` messages, fabricated ones (`msg['attrs'] = [...]`),
    `ifinfmsg().load(dict)` ones, or plain dicts of the same shape (`{"index": 3, "attrs":
    [["IFLA_IFNAME", "vlan123"], ...]}`); nested NLAs may be objects or `{"attrs": [...]}`
    dicts.  A message is a link if its attributes are `IFLA_*`, an address if `IFA_*`; anything
    else is ignored.  `NetlinkLinks([])` is a host where netlink knows nothing.
    """

    def __init__(self, messages: Iterable[Any]) -> None:
        self._by_name: dict[str, LinkFacts] = {}
        self._by_index: dict[int, LinkFacts] = {}
        self._addrs: list[_Addr] = []
        for msg in messages:
            names = list(_attr_names(msg))
            if any(n.startswith("IFLA_") for n in names):
                self._add_link(msg)
            elif any(n.startswith("IFA_") for n in names):
                self._add_addr(msg)

    def _add_link(self, msg: Any) -> None:
        name = _nla(msg, "IFLA_IFNAME")
        index = _as_int(msg.get("index"))
        if not name or index is None:
            return
        linkinfo = _nla(msg, "IFLA_LINKINFO")
        link = _as_int(_nla(msg, "IFLA_LINK"))
        master = _as_int(_nla(msg, "IFLA_MASTER"))
        facts = LinkFacts(
            name=str(name),
            index=index,
            kind=str(_nla(linkinfo, "IFLA_INFO_KIND") or ""),
            link=link or None,  # 0 means "no lower device"
            master=master or None,
            mac=str(_nla(msg, "IFLA_ADDRESS") or "").lower(),
            operstate=str(_nla(msg, "IFLA_OPERSTATE") or ""),
        )
        old = self._by_name.get(facts.name)
        if old is not None:
            self._by_index.pop(old.index, None)
        self._by_name[facts.name] = facts
        self._by_index[facts.index] = facts

    def _add_addr(self, msg: Any) -> None:
        index = _as_int(msg.get("index"))
        family = _as_int(msg.get("family"))
        if index is None or family is None:
            return
        # ifaddrmsg.py: IFA_LOCAL is the own address; IFA_ADDRESS is the peer on p2p links.
        addr = _nla(msg, "IFA_LOCAL") if family == socket.AF_INET else None
        addr = addr or _nla(msg, "IFA_ADDRESS")
        if addr:
            self._addrs.append(_Addr(index, family, str(addr), str(_nla(msg, "IFA_LABEL") or "")))

    @classmethod
    def from_kernel(cls) -> NetlinkLinks:
        """Dump links and addresses from the running kernel; the socket is closed afterwards.

        Raises OSError when netlink is unavailable (callers decide how to log it).
        """
        IPRoute = iproute_class()

        ipr = IPRoute()
        try:
            messages = list(ipr.get_links()) + list(ipr.get_addr())
        finally:
            ipr.close()
        return cls(messages)

    @classmethod
    def from_json(cls, path: str) -> NetlinkLinks:
        """A recorded dump: a JSON list of `msg.dump()` dicts (links and addresses)."""
        with open(path, encoding="utf-8") as handle:
            return cls(json.load(handle))

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> LinkFacts | None:
        return self._by_name.get(name)

    def by_index(self, index: int) -> LinkFacts | None:
        return self._by_index.get(index)

    def slaves_of(self, name: str) -> list[str]:
        """Names of the links whose IFLA_MASTER is `name`, in ifindex order."""
        master = self._by_name.get(name)
        if master is None:
            return []
        ports = [f for f in self._by_index.values() if f.master == master.index]
        return [f.name for f in sorted(ports, key=lambda f: f.index)]

    def addresses(self, name: str, family: int = socket.AF_INET) -> list[tuple[str, str]]:
        """(address, label) pairs of `name` in dump order; IPv6 addresses have label ""."""
        facts = self._by_name.get(name)
        if facts is None:
            return []
        return [(a.addr, a.label) for a in self._addrs
                if a.index == facts.index and a.family == family]

    def owner_of(self, address: str) -> str:
        """The name of the interface that holds `address`, or ""."""
        for a in self._addrs:
            if a.addr == address:
                facts = self._by_index.get(a.index)
                return facts.name if facts else ""
        return ""

    def address_by_label(self, label: str) -> str:
        """The first address whose IFA_LABEL is `label` (e.g. `enp0s8:2`), or ""."""
        for a in self._addrs:
            if a.label == label:
                return a.addr
        return ""


# --------------------------------------------------------------------------------------------
# Interface chain (client.md §3; nodeUtil.cpp get_iface_info)


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


def _sys_path(sys_class_net: str, ifname: str, *parts: str) -> str:
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
    path = _sys_path(sys_class_net, ifname, "uevent")
    text = _read_text(path)
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
        text = _read_text(_sys_path(sys_class_net, name, "ifindex"))
        if text is not None and _as_int(text.strip()) == index:
            return name
    return ""


def _iface_parent(ifname: str, sys_class_net: str, links: NetlinkLinks,
                  logs: list[LogLine]) -> tuple[str, int]:
    facts = links.get(ifname)
    index = facts.link if facts is not None else None
    if index is None:
        path = _sys_path(sys_class_net, ifname, "iflink")
        text = _read_text(path)
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
    path = _sys_path(sys_class_net, bond, "bonding", "mode")
    text = _read_text(path)
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
        path = _sys_path(sys_class_net, bond, "bonding", "slaves")
        text = _read_text(path)
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

    Reproduces nodeUtil.cpp `get_iface_info` (client.md §3): same cases, return codes (0, 75
    FAIL_NOT_FOUND, 104 FAIL_FILE_OPEN), chain text and log lines; `network` is the label the
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
    text = _read_text(_sys_path(sys_class_net, ifname, "master", "uevent"))
    for line in (text or "").split("\n"):
        if line.startswith("INTERFACE="):
            token = line[len("INTERFACE="):].split()
            if token:
                return token[0]
    return ifname


# --------------------------------------------------------------------------------------------
# Own pxeboot address (client.md §2.2-§2.4)


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
    if address and not _is_ipv4(address):
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
    if address and not _is_ipv4(address):
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
    """learn_my_pxeboot_address (client.md §2.2).

    `mgmt_iface` is the interface to resolve: the raw `management_interface` at start, the
    learned parent on a re-learn (§3.2).  The lookup key is always `<parent>:2`; the DHCP lease
    is tried first on every node type, the static ifcfg file only on controllers and only if
    DHCP gave nothing.
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


# --------------------------------------------------------------------------------------------
# dnsmasq.hosts (agent.md §2)


class DnsmasqEntry(NamedTuple):
    """One `mac,hostname,ip[,lease]` line; `mac` lower case, `ip` may be "" (no address)."""

    mac: str
    name: str
    ip: str
    lineno: int


def parse_dnsmasq_hosts(text: str) -> tuple[list[DnsmasqEntry], list[tuple[int, str]]]:
    """Entries and `(lineno, reason)` problems of a dnsmasq.hosts text; never raises.

    Only the first three comma-separated fields are used; lines starting with `pxecontroller`,
    blank lines and `#` comments are skipped.  Unlike the C loader, fields are stripped of
    surrounding white space (CR included) and the MAC is lower-cased, so the agent compares
    MACs case-insensitively.  An empty IP field is kept (ip ""), as the original keeps the line
    and leaves the stored address unchanged.
    """
    entries: list[DnsmasqEntry] = []
    problems: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or line.startswith("pxecontroller"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 3:
            problems.append((lineno, f"fewer than 3 fields: {stripped!r}"))
            continue
        mac, name, ip = fields[0].lower(), fields[1], fields[2]
        if not _MAC_RE.match(mac):
            problems.append((lineno, f"bad MAC address: {fields[0]!r}"))
        elif ip and not _is_ipv4(ip):
            problems.append((lineno, f"bad IPv4 address: {ip!r}"))
        else:
            entries.append(DnsmasqEntry(mac, name, ip, lineno))
    return entries, problems


def read_dnsmasq_hosts(path: str) -> tuple[list[DnsmasqEntry], list[tuple[int, str]],
                                           str | None]:
    """`parse_dnsmasq_hosts` of a file, plus the original's error text when it is unusable."""
    if not os.path.exists(path):
        return [], [], f"{path} file not present"
    text = _read_text(path)
    if text is None:
        return [], [], f"failed to open seemingly present {path} file"
    entries, problems = parse_dnsmasq_hosts(text)
    return entries, problems, None


# --------------------------------------------------------------------------------------------
# Names and addresses


def _ip_family(text: str) -> int | None:
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    return socket.AF_INET6 if addr.version == 6 else socket.AF_INET


def parse_hosts_file(text: str) -> dict[str, list[str]]:
    """/etc/hosts: `address name [alias...]`, `#` comments.  Names are lower case (lookups are
    case-insensitive); addresses keep file order; lines with a bad address are ignored."""
    table: dict[str, list[str]] = {}
    for line in text.split("\n"):
        tokens = line.split("#", 1)[0].split()
        if len(tokens) < 2 or _ip_family(tokens[0]) is None:
            continue
        for name in tokens[1:]:
            addrs = table.setdefault(name.lower(), [])
            if tokens[0] not in addrs:
                addrs.append(tokens[0])
    return table


def _ipv6_first(pairs: list[tuple[int, str]]) -> list[tuple[int, str]]:
    return sorted(pairs, key=lambda p: 0 if p[0] == socket.AF_INET6 else 1)


def resolve(name: str, hosts_file: str | None = None) -> list[tuple[int, str]]:
    """(family, address) pairs for `name`, IPv6 first then IPv4 (as the original).

    The hosts file wins when it names `name`; otherwise `socket.getaddrinfo` (UDP) is asked.
    Unresolvable gives []; never raises.  getaddrinfo may block on DNS: callers that cannot
    wait should use the hosts file or resolve outside the loop.
    """
    if not name:
        return []
    if hosts_file:
        text = _read_text(hosts_file)
        addrs = parse_hosts_file(text or "").get(name.lower(), [])
        if addrs:
            return _ipv6_first([(_ip_family(a) or socket.AF_INET, a) for a in addrs])
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_UNSPEC, socket.SOCK_DGRAM)
    except (OSError, UnicodeError, ValueError):
        return []
    pairs: list[tuple[int, str]] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            pair = (int(family), str(sockaddr[0]))
            if pair not in pairs:
                pairs.append(pair)
    return _ipv6_first(pairs)


def iface_addresses(ifname: str, links: NetlinkLinks | None,
                    family: int = socket.AF_INET) -> list[str]:
    """Addresses of `ifname` of `family` a daemon may bind, best first ([] if unknown).

    IPv4: the interface's own addresses (label == name, as the original's SIOCGIFADDR on the
    name) before aliases such as the pxeboot `<if>:2`; IPv6: link-local (fe80::/10) left
    out, since a daemon's address must be reachable beyond the link.
    """
    if links is None:
        return []
    pairs = links.addresses(ifname, family)
    if family == socket.AF_INET6:
        return [a for a, _ in pairs if not ipaddress.ip_address(a.split("%")[0]).is_link_local]
    own = [a for a, label in pairs if label in ("", ifname)]
    return own + [a for a, label in pairs if label not in ("", ifname)]


def iface_mac(ifname: str, links: NetlinkLinks | None, sys_class_net: str) -> str:
    """MAC of `ifname` in lower case: netlink IFLA_ADDRESS, else sysfs `<if>/address`, else ""."""
    facts = links.get(ifname) if links is not None else None
    if facts is not None and facts.mac:
        return facts.mac
    text = _read_text(_sys_path(sys_class_net, ifname, "address"))
    mac = (text or "").strip().lower()
    return mac if _HWADDR_RE.match(mac) else ""


# --------------------------------------------------------------------------------------------
# platform.conf (client.md §1.1)


def parse_platform_conf(text: str) -> dict[str, str]:
    """`key=value` lines; `#` comments; white space and one pair of quotes stripped; last wins."""
    conf: dict[str, str] = {}
    for line in text.split("\n"):
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if key:
            conf[key] = value
    return conf


def system_mode(conf: Mapping[str, str]) -> str:
    """"standard", "duplex", "duplex-direct" or "simplex" (daemon_system_type).

    `system_type=standard` (any case) is a standard system; otherwise `system_mode` decides,
    and a missing or unknown mode means simplex.
    """
    if conf.get("system_type", "").strip().lower() == "standard":
        return "standard"
    mode = conf.get("system_mode", "").strip().lower()
    return mode if mode in ("duplex", "duplex-direct", "simplex") else "simplex"


def read_hostname(hostname_file: str) -> str:
    """This host's short name: the first line of `hostname_file`, else the kernel's."""
    try:
        with open(hostname_file, encoding="utf-8", errors="replace") as f:
            name = f.readline().strip()
    except OSError:
        name = ""
    if not name:
        name = socket.gethostname()
    return name.split(".")[0][:64]


def iproute_class():
    """pyroute2's IPRoute, imported lazily (`mtce --version` stays fast) and without running
    the package's `__init__`, which imports every pyroute2 module (NDB and sqlite3, IPDB,
    nftables...): each daemon stays ~9 MiB smaller. A fully imported pyroute2 is used as is.
    """
    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is not None and spec.submodule_search_locations is not None:
            sys.modules["pyroute2"] = importlib.util.module_from_spec(spec)
    # pyroute2 pulls in asyncio, which loads the ssl module (OpenSSL, ~4 MiB) when it can;
    # netlink needs no TLS, so ssl reads as absent while pyroute2 is imported (asyncio then
    # runs without TLS support) and is importable again afterwards.
    blocked = "ssl" not in sys.modules
    if blocked:
        sys.modules["ssl"] = None
    try:
        from pyroute2.iproute.linux import IPRoute
    finally:
        if blocked and sys.modules.get("ssl", 0) is None:
            del sys.modules["ssl"]
    return IPRoute


class NetlinkWatcher:
    """Link and address changes from the kernel (RTM_NEWLINK/DELLINK/NEWADDR/DELADDR), so the
    daemons react within a moment instead of at their next 5 s tick. Selectable: `fileno()`.
    """

    def __init__(self):
        IPRoute = iproute_class()
        from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK
        self.ipr = IPRoute()
        try:
            self.ipr.bind(groups=RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)
        except Exception:
            self.ipr.close()
            raise

    def fileno(self) -> int:
        return self.ipr.fileno()

    def drain(self) -> list[tuple[str, str]]:
        """(event, interface or address label) for what one read brought; never raises."""
        try:
            msgs = self.ipr.get()
        except Exception:       # noqa: BLE001 - a bad netlink read: the 5 s poll still runs
            return [("error", "")]
        out = []
        for m in msgs:
            name = m.get_attr("IFLA_IFNAME") or m.get_attr("IFA_LABEL") or ""
            out.append((m.get("event", ""), name))
        return out

    def close(self) -> None:
        self.ipr.close()
