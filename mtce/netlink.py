"""Netlink through pyroute2: the interfaces and addresses of this host as `NetlinkLinks`
(from the kernel, or a recorded dump for tests), and `NetlinkWatcher` for the link and
address events both daemons react to. pyroute2 is imported lazily (only here).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

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
    """What netlink says about one link (docs/design.md "pyroute2 for links")."""

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
