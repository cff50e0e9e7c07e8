"""The hosts' pxeboot addresses from dnsmasq.hosts, by mgmt MAC (docs/protocol.md §5.2): read
where the original reads it, applied to the host table, the agent's own line rebinding its pxeboot
sockets. The parsing is netif.read_dnsmasq_hosts'; when to parse again agent_net.dnsmasq_stamp's.
"""

from __future__ import annotations

from mtce import agent_net, netif


class PxebootAddresses:
    def __init__(self, agent):
        self.agent = agent
        self._stamp = None
        self._turn = -1                       # the loop turn of the last look at the file

    def load(self, force: bool = False) -> None:
        """pxeboot addresses by mgmt MAC (docs/protocol.md §5.2), read where the original reads
        them: before every pxeboot mtcAlive request and on every ready event; looked at once
        a loop turn (a turn reads a second's worth of ready events at light load), parsed
        again only when it may have changed (agent_net.dnsmasq_stamp)."""
        a = self.agent
        if not a.pxeboot_provisioned:
            return
        turn = a.loop.turns
        if turn == self._turn and not force:
            return
        self._turn = turn
        stamp, settled = agent_net.dnsmasq_stamp(a.dnsmasq_path, a.clock.wall())
        if stamp == self._stamp and settled and not force:
            return
        self._stamp = stamp
        entries, problems, error = netif.read_dnsmasq_hosts(a.dnsmasq_path)
        if error:
            a.throttle.info(("dnsmasq", "error"), "%s", error)
            return
        a.throttle.clear(("dnsmasq", "error"))
        for lineno, why in problems:
            a.throttle.warning(("dnsmasq", lineno, why), "%s:%d: %s ; line ignored",
                               a.dnsmasq_path, lineno, why)
        by_mac = {h.entry.mgmt_mac: h for h in a.table}
        now = a.clock.now()
        for e in entries:
            host = by_mac.get(e.mac)
            if e.mac == a.own_mac and not a.cfg.agent.pxeboot_ip and e.ip:
                a.net.own_pxeboot_ip(e.ip)
            if host is None:
                a.throttle.warning(("dnsmasq", "nomac", e.mac), "no host found matching mac "
                                   "address:%s", e.mac)
                continue
            if not e.ip:
                a.throttle.warning(("dnsmasq", "noip", e.mac), "failed to lookup pxeboot ip "
                                   "from mac %s", e.mac)
                continue
            if e.ip != host.pxeboot_ip and not host.pxeboot_ip:
                a.log.info("%s pxeboot hostname: %s has pxeboot ip: %s", host.hostname,
                           e.name, e.ip)
            a.run(a.table.set_pxeboot_ip(host.hostname, e.ip, now))
        if a.pxeboot_provisioned and a.socks["pxeboot_rx"] is None and a.pxeboot_ip \
                and a.socks["mgmt_rx"] is not None:
            a.net.setup()
