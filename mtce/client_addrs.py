"""A client's addresses: its own on mgmt, cluster-host and pxeboot, its mgmt MAC, and the
controllers' by name, as one frozen value (`OwnAddresses`). `AddressBook` finds them (the
hosts file, netlink through pyroute2, `[paths] sys_class_net`, the DHCP lease and ifcfg
files: docs/protocol.md §5.2, §5.6) and logs what the original logs; the client compares two
values to know what to set up again.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass

from mtce import alive, ifchain, logs, netif, netlink, transport
from mtce.client_core import Gates


@dataclass(frozen=True)
class OwnAddresses:
    mgmt_ip: str = ""
    mgmt_mac: str = ""
    mgmt_master: str = ""
    mgmt_family: int = socket.AF_INET
    clstr_ip: str = ""
    pxeboot_ip: str = ""
    pxeboot_iface: str = ""
    controller: str = ""                 # the floating mgmt address (`controller`)
    c_mgmt: frozenset = frozenset()      # controller, controller-0, controller-1 on mgmt
    clstr_dests: tuple = ()              # (controller-N, its cluster-host address)

    def identity(self, hostname: str, personality: str, clstr: bool) -> alive.Identity:
        """The mtcAlive identity (docs/protocol.md §3), rebuilt when an address changes."""
        return alive.Identity(hostname, personality, self.pxeboot_ip, self.mgmt_ip,
                              self.clstr_ip if clstr else "", self.mgmt_mac.lower())


def file_stamp(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


class AddressBook:
    """Finds a client's addresses; `own` is the current value."""

    def __init__(self, cfg, log: logging.Logger, throttle, links_factory):
        self.cfg, self.log, self.throttle = cfg, log, throttle
        self.links_factory = links_factory
        self.own = OwnAddresses()
        self.gates = None                # client_core.Gates once platform.conf is read
        self._names_stamp = None
        self._learn_outcome = None
        self._lease_seen = None

    def reconfigure(self, cfg) -> None:
        self.cfg = cfg
        self._names_stamp = None         # names resolved again with the new hosts file

    def update(self, **changes) -> None:
        """A new `own` value with `changes` (what the client's set-up decided)."""
        self.own = dataclasses.replace(self.own, **changes)

    def links(self):
        try:
            return self.links_factory()
        except Exception as err:   # noqa: BLE001 - netlink unavailable: learn from files only
            self.throttle.warning(("netlink",), "netlink dump failed (%s) ; using %s only",
                                  err, self.cfg.paths.sys_class_net)
            return netlink.NetlinkLinks([])

    def resolve(self, name: str, family: int | None = None) -> str:
        """An address for `name`: hosts file first, IPv6 first (or the given family)."""
        for fam, addr in netif.resolve(name, self.cfg.paths.hosts_file):
            if family is None or fam == family:
                return addr
        return ""

    # -- the controllers, by name ------------------------------------------------------------
    def names_changed(self) -> bool:
        """At each tick: has the hosts file changed since the names were resolved?"""
        return file_stamp(self.cfg.paths.hosts_file) != self._names_stamp

    def resolve_controllers(self) -> None:
        """The controllers' addresses by name (hosts file first): where mtcAlive and ACKs go
        and who may send commands. At socket set-up and whenever the hosts file changes, so
        that a swact or a readdress is followed at the next tick."""
        c, own, g = self.cfg.client, self.own, self.gates
        self._names_stamp = file_stamp(self.cfg.paths.hosts_file)
        family, controller = own.mgmt_family, ""
        if c.mgmt_ip:
            family = transport.family_of(c.mgmt_ip)
            controller = self.resolve("controller", family)
        else:
            found = netif.resolve("controller", self.cfg.paths.hosts_file)
            if found:
                family, controller = found[0]
        if own.controller and controller and own.controller != controller:
            self.log.info("Controller  : %s ; was %s", controller, own.controller)
        c_mgmt = frozenset(a for a in (controller, self.resolve("controller-0", family),
                                       self.resolve("controller-1", family)) if a)
        dests = own.clstr_dests
        if g is not None and g.clstr:
            found = netif.resolve("controller-0-cluster-host", self.cfg.paths.hosts_file)
            cfamily = (transport.family_of(c.cluster_host_ip) if c.cluster_host_ip
                       else found[0][0] if found else family)
            dests = []
            for ctl in g.controllers:
                addr = self.resolve(f"{ctl}-cluster-host", cfamily)
                if addr:
                    dests.append((ctl, addr))
                else:
                    self.throttle.warning(("resolve", ctl), "Unable to get ip address list for "
                                          "'%s-cluster-host', retrying ...", ctl)
            dests = tuple(dests)
        self.update(mgmt_family=family, controller=controller, c_mgmt=c_mgmt, clstr_dests=dests)

    # -- own mgmt and cluster-host addresses -------------------------------------------------
    def iface_address(self, iface: str, family: int, exclude: str = "") -> str:
        """The interface's (or its master's) address of `family`; never `exclude`: on the
        active controller the floating `controller` address sits on the mgmt interface too,
        and with IPv6 (no primary address) it may be listed first."""
        links = self.links()
        master = ifchain.iface_master(iface, self.cfg.paths.sys_class_net, links)
        skip = ipaddress.ip_address(exclude) if exclude else None
        for name in dict.fromkeys((master, iface)):
            addrs = [a for a in netif.iface_addresses(name, links, family)
                     if ipaddress.ip_address(a.split("%")[0]) != skip]
            if addrs:
                return addrs[0]
        return ""

    def update_mgmt(self, first: bool) -> bool:
        """Own mgmt address, MAC and the floating controller address. True when all known."""
        c, g = self.cfg.client, self.gates
        self.resolve_controllers()
        own = self.own
        if not own.controller:
            self.throttle.warning(("resolve", "controller"),
                                  "Unable to get ip address list for 'controller', retrying ...")
        else:
            if self.throttle.active(("resolve", "controller")) or first:
                self.log.info("Controller  : %s", own.controller)
            self.throttle.clear(("resolve", "controller"))
        mgmt_iface = g.mgmt_iface if g is not None else ""
        ip = own.mgmt_ip
        if c.mgmt_ip:
            ip = c.mgmt_ip
        elif mgmt_iface:
            ip = self.iface_address(mgmt_iface, own.mgmt_family, exclude=own.controller)
            if not ip:
                self.throttle.warning(("noaddr", mgmt_iface), "%s has no IP address (rc=%d), "
                                      "retrying ...", mgmt_iface, 1)
            else:
                self.throttle.clear(("noaddr", mgmt_iface))
        master, mac = own.mgmt_master, own.mgmt_mac
        if mgmt_iface:
            links = self.links()
            sys_net = self.cfg.paths.sys_class_net
            master = ifchain.iface_master(mgmt_iface, sys_net, links)
            found = netif.iface_mac(master, links, sys_net) or \
                netif.iface_mac(mgmt_iface, links, sys_net)
            if found and found != mac:
                self.log.info("Mac Address : %s", found)
            mac = found or mac
        self.update(mgmt_ip=ip, mgmt_master=master, mgmt_mac=mac)
        return bool(ip and own.controller)

    def update_clstr(self) -> bool:
        c, g = self.cfg.client, self.gates
        self.resolve_controllers()
        ip = c.cluster_host_ip
        if not ip:
            found = netif.resolve("controller-0-cluster-host", self.cfg.paths.hosts_file)
            family = found[0][0] if found else self.own.mgmt_family
            ip = self.iface_address(g.clstr_iface, family)
            if not ip:
                self.throttle.warning(("noaddr", g.clstr_iface), "%s has no IP address (rc=%d), "
                                      "retrying ...", g.clstr_iface, 1)
            else:
                self.throttle.clear(("noaddr", g.clstr_iface))
        self.update(clstr_ip=ip)
        return bool(ip and self.own.clstr_dests)

    # -- own pxeboot address (docs/protocol.md §5.2) -----------------------------------------
    def learn_pxeboot(self) -> bool:
        """Own pxeboot address from the lease or ifcfg file; True when it changed.

        The chain and learning lines are logged when the outcome differs from the last one,
        so a failure that repeats every tick is logged once a minute, not a dozen lines each
        time."""
        g = self.gates
        if g is None or not g.pxeboot:
            return False
        p, own = self.cfg.paths, self.own
        is_controller = "controller" in g.personality.split(",")
        result = ifchain.learn_pxeboot_address(own.pxeboot_iface or g.mgmt_iface, is_controller,
                                             p.sys_class_net, p.dhcp_leases_dir, p.ifcfg_dir,
                                             self.links())
        outcome = (result.addr, result.info.chain if result.info else None)
        if outcome != self._learn_outcome:
            for level, text in result.logs:
                self.log.log(logs.LEVELS.get(level, logging.INFO), "%s", text)
            if result.addr is None:
                self.log.warning("failed to learn my pxeboot address ; rc:%s",
                                 result.info.rc if result.info else "?")
            self.throttle.clear(("learn",))
        elif not result.addr:
            self.throttle.warning(("learn",), "pxeboot address still not learned (%s)",
                                  "interface info failed" if result.addr is None
                                  else "no lease or ifcfg address")
        self._learn_outcome = outcome
        changed = result.addr is not None and result.addr != own.pxeboot_ip
        if changed and own.pxeboot_ip:
            self.log.info("pxeboot address changed from %s to %s", own.pxeboot_ip,
                          result.addr or "none")
        iface = own.pxeboot_iface
        if result.info is not None and result.info.ok and result.info.parent:
            iface = result.info.parent
        self.update(pxeboot_ip=own.pxeboot_ip if result.addr is None else result.addr,
                  pxeboot_iface=iface)
        return changed

    def lease_stamp(self) -> tuple:
        """What the own-address files look like now (names, times, sizes), cheaply."""
        key = f"{self.own.pxeboot_iface or self.gates.mgmt_iface}:2"
        stamp = []
        try:
            for entry in os.scandir(self.cfg.paths.dhcp_leases_dir):
                if key in entry.name:
                    st = entry.stat()
                    stamp.append((entry.name, st.st_mtime_ns, st.st_size))
        except OSError:
            pass
        try:
            st = os.stat(os.path.join(self.cfg.paths.ifcfg_dir, f"ifcfg-{key}"))
            stamp.append(("ifcfg", st.st_mtime_ns, st.st_size))
        except OSError:
            pass
        return tuple(sorted(stamp))

    def note_lease(self) -> None:
        """The files as they are now count as seen (after a re-learn)."""
        self._lease_seen = self.lease_stamp()

    def lease_changed(self) -> bool:
        """A lease or ifcfg file changed since it was last seen (the first look only notes
        them): the client re-learns at the next tick (the original waits for a restart)."""
        stamp = self.lease_stamp()
        if stamp == self._lease_seen:
            return False
        first, self._lease_seen = self._lease_seen is None, stamp
        return not first

    def our_interfaces(self, with_links: bool) -> set:
        """The interfaces whose netlink events concern this client."""
        g, own = self.gates, self.own
        ours = {own.pxeboot_iface, own.mgmt_master}
        if g is not None:
            ours |= {g.mgmt_iface, g.clstr_iface}
        if with_links:
            links = self.links()
            ours |= {links.owner_of(a) for a in (own.mgmt_ip, own.clstr_ip, own.pxeboot_ip)
                     if a}
        return ours - {""}


def read_platform(path: str, throttle) -> dict | None:
    """platform.conf's facts, or None (logged through `throttle`, retried at the next tick)
    while it cannot be read or lacks the management interface or the subfunction."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            conf = netif.parse_platform_conf(f.read())
    except OSError as err:
        throttle.warning(("platform", "read"), "cannot read %s (%s) ; retrying ...", path,
                         err.strerror)
        return None
    missing = [k for k in ("management_interface", "subfunction") if not conf.get(k)]
    if missing:
        throttle.warning(("platform", "keys"), "%s lacks %s ; retrying ...", path,
                         " and ".join(missing))
        return None
    throttle.clear(("platform", "read"))
    throttle.clear(("platform", "keys"))
    return conf


def gates_of(conf: dict, platform_dir: str) -> Gates:
    """The client's gates (docs/protocol.md §4.1) from platform.conf's facts and the
    first-install flags under `platform_dir`."""
    return Gates(conf["management_interface"], conf.get("cluster_host_interface", ""),
                 netif.system_mode(conf), conf["subfunction"],
                 first_install=(os.path.exists(os.path.join(platform_dir, ".first_controller"))
                                and not os.path.exists(os.path.join(
                                    platform_dir, ".initial_config_complete"))))
