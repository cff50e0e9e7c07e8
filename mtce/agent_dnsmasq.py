"""The hosts' pxeboot addresses from dnsmasq.hosts, by mgmt MAC (docs/protocol.md §5.2): read
where the original reads it, applied to the host table, the agent's own line rebinding its pxeboot
sockets. The parsing is netif.read_dnsmasq_hosts'; when to parse again is `dnsmasq_stamp`'s.
"""

from __future__ import annotations

import os

from mtce import netif


class PxebootAddresses:
    """Its collaborators: the host `table`, the agent's sockets (`net`: its own pxeboot address
    and the pxeboot sockets), the `loop` (its turns), the `clock`, the `log` and a `throttle`;
    `run` carries out the table's actions. `own_mac` finds this controller's own line;
    `reconfigure(cfg, path)` takes a reloaded config and the file's expanded path."""

    def __init__(self, table, net, loop, clock, log, throttle, run, own_mac: str,
                 pxeboot_provisioned: bool, cfg, path: str):
        self.table, self.net, self.loop, self.clock = table, net, loop, clock
        self.log, self.throttle, self.run = log, throttle, run
        self.own_mac, self.pxeboot_provisioned = own_mac, pxeboot_provisioned
        self.reconfigure(cfg, path)
        self._stamp = None
        self._turn = -1                       # the loop turn of the last look at the file

    def reconfigure(self, cfg, path: str) -> None:
        self.path = path
        self.configured_ip = cfg.agent.pxeboot_ip     # set: this controller's own line is not read

    def load(self, force: bool = False) -> None:
        """pxeboot addresses by mgmt MAC (docs/protocol.md §5.2), read where the original reads
        them: before every pxeboot mtcAlive request and on every ready event; looked at once
        a loop turn (a turn reads a second's worth of ready events at light load), parsed
        again only when it may have changed (`dnsmasq_stamp`)."""
        if not self.pxeboot_provisioned:
            return
        turn = self.loop.turns
        if turn == self._turn and not force:
            return
        self._turn = turn
        stamp, settled = dnsmasq_stamp(self.path, self.clock.wall())
        if stamp == self._stamp and settled and not force:
            return
        self._stamp = stamp
        entries, problems, error = netif.read_dnsmasq_hosts(self.path)
        if error:
            self.throttle.info(("dnsmasq", "error"), "%s", error)
            return
        self.throttle.clear(("dnsmasq", "error"))
        for lineno, why in problems:
            self.throttle.warning(("dnsmasq", lineno, why), "%s:%d: %s ; line ignored",
                                  self.path, lineno, why)
        by_mac = {h.entry.mgmt_mac: h for h in self.table}
        now = self.clock.now()
        for e in entries:
            host = by_mac.get(e.mac)
            if e.mac == self.own_mac and not self.configured_ip and e.ip:
                self.net.own_pxeboot_ip(e.ip)
            if host is None:
                self.throttle.warning(("dnsmasq", "nomac", e.mac), "no host found matching "
                                      "mac address:%s", e.mac)
                continue
            if not e.ip:
                self.throttle.warning(("dnsmasq", "noip", e.mac), "failed to lookup pxeboot "
                                      "ip from mac %s", e.mac)
                continue
            if e.ip != host.pxeboot_ip and not host.pxeboot_ip:
                self.log.info("%s pxeboot hostname: %s has pxeboot ip: %s", host.hostname,
                              e.name, e.ip)
            self.run(self.table.set_pxeboot_ip(host.hostname, e.ip, now))
        socks = self.net.set.socks
        if self.pxeboot_provisioned and socks["pxeboot_rx"] is None and self.net.pxeboot_ip \
                and socks["mgmt_rx"] is not None:
            self.net.setup()


def dnsmasq_stamp(path: str, wall: float) -> tuple[tuple | None, bool]:
    """(stamp, settled) of dnsmasq.hosts: it is parsed again when its inode, size, mtime or
    ctime changed, or while its ctime is under 2 s old (a change within the same timestamp
    tick could hide; ctime cannot be set back, unlike mtime)."""
    try:
        st = os.stat(path)
    except OSError:
        return None, True
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns), \
        wall - st.st_ctime_ns / 1e9 > 2.0
