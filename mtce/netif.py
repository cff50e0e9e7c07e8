"""Address sources for mtcClient/mtcAgent (docs/protocol.md §5.2): dnsmasq.hosts, the
hosts file and name resolution (hosts file first, IPv6 first), an interface's addresses and
MAC, platform.conf and the hostname. The interface chain and the own pxeboot address are
ifchain.py's, netlink netlink.py's. Nothing here logs.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from typing import NamedTuple

from mtce.ifchain import HWADDR_RE, MAC_RE, is_ipv4, read_text, sys_path
from mtce.netlink import NetlinkLinks

# --------------------------------------------------------------------------------------------
# dnsmasq.hosts (docs/protocol.md §5.2)


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
        if not MAC_RE.match(mac):
            problems.append((lineno, f"bad MAC address: {fields[0]!r}"))
        elif ip and not is_ipv4(ip):
            problems.append((lineno, f"bad IPv4 address: {ip!r}"))
        else:
            entries.append(DnsmasqEntry(mac, name, ip, lineno))
    return entries, problems


def read_dnsmasq_hosts(path: str) -> tuple[list[DnsmasqEntry], list[tuple[int, str]],
                                           str | None]:
    """`parse_dnsmasq_hosts` of a file, plus the original's error text when it is unusable."""
    if not os.path.exists(path):
        return [], [], f"{path} file not present"
    text = read_text(path)
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
        text = read_text(hosts_file)
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
    text = read_text(sys_path(sys_class_net, ifname, "address"))
    mac = (text or "").strip().lower()
    return mac if HWADDR_RE.match(mac) else ""


# --------------------------------------------------------------------------------------------
# platform.conf (docs/protocol.md §4.1)


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


