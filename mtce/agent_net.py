"""The agent's sockets and how a command leaves through them (docs/protocol.md §4): the
receive sockets where the original binds them, the transmit sockets on the agent's own
addresses, a socket that cannot be had now retried every SOCKET_RETRY_S, the agent's own
fault-insertion files. Socket life is netsocks.SocketSet's.
"""

from __future__ import annotations

import socket

from mtce import netif, netsocks, transport
from mtce.netsocks import Slot
from mtce.states import Net, cmd_name

RX_CALL = 256                   # datagrams a recvmmsg(2) call reads
RX_LIMIT = 4096                 # datagrams a socket's drain reads in one loop turn (the
                                # original's MAX_RX_MSG_BATCH is 50: docs/protocol.md §5.4
                                # "Batches"); a full one means more is queued: no pause
SOCKET_RETRY_S = 5.0            # a socket that could not be had is retried this often
FIT_CHECK_S = 1.0


def _slot(name: str, net: Net, rx: bool, fit: str) -> Slot:
    return Slot(name, net, rx, fit, f"failed to init '{name}' socket (rc:1) (fit/{fit})", name)


# The client's fault-insertion files, `agent_` in front (docs/design.md).
SLOTS = (_slot("mgmt_rx", Net.MGMT, True, "agent_mgmnt_rxsock"),
         _slot("clstr_rx", Net.CLSTR, True, "agent_clstr_rxsock"),
         _slot("pxeboot_rx", Net.PXEBOOT, True, "agent_pxeboot_rxsock"),
         _slot("mgmt_tx", Net.MGMT, False, "agent_mgmnt_txsock"),
         _slot("clstr_tx", Net.CLSTR, False, "agent_clstr_txsock"),
         _slot("pxeboot_tx", Net.PXEBOOT, False, "agent_pxeboot_txsock"))
RX_OF = {Net.MGMT: "mgmt_rx", Net.CLSTR: "clstr_rx", Net.PXEBOOT: "pxeboot_rx"}
TX_OF = {Net.MGMT: "mgmt_tx", Net.CLSTR: "clstr_tx", Net.PXEBOOT: "pxeboot_tx"}


class AgentNet:
    """The agent's six sockets and its own addresses on each network."""

    def __init__(self, cfg, loop, log, throttle, sockets, wire, counters, on_datagram,
                 hostname: str, own_mgmt_ip: str, pxeboot_provisioned: bool,
                 watcher_factory=None):
        self.cfg, self.loop, self.log, self.throttle = cfg, loop, log, throttle
        self.sockets, self.wire, self.counters = sockets, wire, counters
        self.hostname, self.own_mgmt_ip = hostname, own_mgmt_ip
        self.pxeboot_provisioned = pxeboot_provisioned
        self.set = netsocks.SocketSet(SLOTS, sockets, loop, log, throttle,
                                      lambda: self.cfg.paths.run_dir, on_datagram, RX_CALL,
                                      watcher_factory, limit=RX_LIMIT, raw=True,
                                      mmsg=True, clock=loop.clock)
        self.set.on_lost = lambda name: self.setup()
        self.float_ip = ""
        self.clstr_ip = ""
        self.pxeboot_ip = cfg.agent.pxeboot_ip
        self.pxeboot_note = ""              # why there is no pxeboot address (for its log)
        self._retry_timer = None
        self.host_count = lambda: 0         # the inventory's size (the agent sets it)
        self._rx_wanted = 0                 # the receive buffer size last asked for

    def reconfigure(self, cfg) -> None:
        self.cfg = cfg

    def __getitem__(self, name: str):
        return self.set[name]

    def watch(self) -> None:
        """After `setup`: netlink events, and the fault-insertion files every second."""
        self.set.watch(self.on_network_change, None,
                       f"retrying sockets every {SOCKET_RETRY_S:g} s")
        self.loop.call_later(FIT_CHECK_S, self.fit_tick)

    def _resolve(self, name: str) -> str:
        found = netif.resolve(name, self.cfg.paths.hosts_file)
        return found[0][1] if found else ""

    def wanted(self, name: str) -> bool:
        if name == "pxeboot_rx":
            return self.pxeboot_provisioned and bool(self.pxeboot_ip)
        if name == "pxeboot_tx":
            return self.pxeboot_provisioned
        if name == "clstr_rx":
            return bool(self.clstr_ip)
        return True

    def setup(self) -> None:
        """Receive sockets where the original binds them (docs/protocol.md §4); any that cannot be
        bound now is retried every SOCKET_RETRY_S (the original exits or gives up)."""
        a, s = self.cfg.agent, self.set
        if s["mgmt_rx"] is None:
            self.float_ip = a.mgmt_ip or self._resolve("controller")
            s.open("mgmt_rx", lambda: self._bind_rx("mgmt_rx", self.float_ip,
                                                    a.mtc_agent_port, "controller"))
        if s["clstr_rx"] is None:
            name = f"{self.hostname}-cluster-host"
            self.clstr_ip = a.cluster_host_ip or self._resolve(name)
            if self.clstr_ip:
                s.open("clstr_rx", lambda: self._bind_rx("clstr_rx", self.clstr_ip,
                                                         a.mtc_agent_port, name))
        if self.pxeboot_provisioned and s["pxeboot_rx"] is None:
            if self.pxeboot_ip:
                self.log.info("Creating pxeboot receive socket on %s:%d", self.pxeboot_ip,
                              a.mtc_rx_pxeboot_port)
                s.open("pxeboot_rx", lambda: self._bind_rx("pxeboot_rx", self.pxeboot_ip,
                                                           a.mtc_rx_pxeboot_port, "pxeboot"))
            else:
                self.throttle.warning(("bind", "pxeboot_rx"), "cannot create pxeboot receive "
                                      "socket: %s", self.pxeboot_note)
        for name, addr in (("mgmt_tx", self.own_mgmt_ip), ("clstr_tx", self.clstr_ip),
                           ("pxeboot_tx", self.pxeboot_ip)):
            if s[name] is None and (name != "pxeboot_tx" or self.pxeboot_provisioned):
                s.open(name, lambda name=name, addr=addr: self._tx_socket(name, addr))
        if s.missing(self.wanted) and self._retry_timer is None:
            self._retry_timer = self.loop.call_later(SOCKET_RETRY_S, self._retry)

    def _retry(self) -> None:
        self._retry_timer = None
        self.setup()

    def _bind_rx(self, name: str, addr: str, port: int, what: str):
        if not addr:
            self.throttle.error(("bind", name), "Unable to get ip address list for '%s', "
                                "retrying ...", what)
            return None
        hosts = self.host_count()
        wanted = self._rx_wanted = transport.agent_rcvbuf(hosts)
        try:
            # No SO_REUSEADDR (the original sets it): a second agent on the same address
            # must fail to bind, not silently share the traffic.
            sock = self.sockets.udp(addr, port, rcvbuf=wanted)
        except OSError as err:
            self.throttle.error(("bind", name), "failed to bind %s:%d to socket (%s)", addr,
                                port, transport.describe_error(err))
            return None
        self.throttle.clear(("bind", name))
        got = transport.rcvbuf_size(sock)
        self.log.info("Listening On: 'mtc client receive' socket %s:%d (%d rx bytes - "
                      "req:%d) (%s)", addr, port, got, wanted, self.set.slots[name].net.iface)
        report_rcvbuf(self.log, self.throttle, name, got, wanted, hosts,
                      transport.read_rmem_max())
        return sock

    def rx_room(self) -> int:
        """Datagrams the smallest open receive buffer holds (the kernel charges each its
        truesize, transport.DATAGRAM_TRUESIZE); 0 with no receive socket."""
        sizes = [transport.rcvbuf_size(self.set[name]) for name in RX_OF.values()
                 if self.set[name] is not None]
        return min(sizes) // transport.DATAGRAM_TRUESIZE if sizes else 0

    def resize_rx(self) -> None:
        """The inventory changed size (SIGHUP): the receive buffers follow it, when what they
        want changed (a buffer the kernel keeps smaller is not asked again at every reload)."""
        hosts = self.host_count()
        wanted = transport.agent_rcvbuf(hosts)
        if wanted == self._rx_wanted:
            return
        self._rx_wanted = wanted
        for name in RX_OF.values():
            sock = self.set[name]
            if sock is None or transport.rcvbuf_size(sock) >= wanted:
                continue
            try:
                got = transport.size_rcvbuf(sock, wanted)
            except OSError as err:
                self.log.warning("%s receive buffer not resized (%s)", name,
                                 transport.describe_error(err))
                continue
            self.log.info("%s receive buffer %d bytes for %d hosts (req:%d)", name, got,
                          hosts, wanted)
            report_rcvbuf(self.log, self.throttle, name, got, wanted, hosts,
                          transport.read_rmem_max())

    def _tx_socket(self, name: str, addr: str):
        """Transmit sockets bound to the agent's own address on that network when it has
        one, so that clients see it as the source (pxeboot ACKs go back to it)."""
        family = transport.family_of(addr) if addr else socket.AF_INET
        try:
            sock = self.sockets.udp(None, family=family)
        except OSError as err:
            self.log.error("failed to create %s socket (%s)", name,
                           transport.describe_error(err))
            return None
        if addr:
            try:
                sock.bind((addr, 0))
            except OSError as err:
                self.log.warning("%s socket not bound to %s (%s) ; the kernel picks the "
                                 "source", name, addr, transport.describe_error(err))
        return sock

    # -- faults and address changes ------------------------------------------------------------
    def fit_tick(self) -> None:
        """`<run_dir>/fit/agent_<socket>` closes that socket while it exists."""
        self.loop.call_later(FIT_CHECK_S, self.fit_tick)
        if self.set.fit_check() and self._retry_timer is None:
            self._retry_timer = self.loop.call_later(SOCKET_RETRY_S, self._retry)

    def on_network_change(self) -> None:
        """An address came or went (a floating address moving, a link restarted): close
        receive sockets whose address is gone and bind the missing ones now."""
        self.set.close_vanished()
        self.setup()

    def own_pxeboot_ip(self, ip: str) -> None:
        """The agent's own pxeboot address from dnsmasq.hosts: a new one rebinds."""
        if self.pxeboot_ip and ip != self.pxeboot_ip:
            self.log.warning("own pxeboot ip changed from %s to %s ; receive socket rebound",
                             self.pxeboot_ip, ip)
            self.set.close("pxeboot_rx")
            self.set.close("pxeboot_tx")
        self.pxeboot_ip = ip

    # -- sending a command -----------------------------------------------------------------------
    def port_of(self, net: Net) -> int:
        c = self.cfg.client
        return {Net.MGMT: c.mtc_rx_mgmnt_port, Net.CLSTR: c.mtc_rx_clstr_port,
                Net.PXEBOOT: c.mtc_rx_pxeboot_port}[net]

    def send(self, hostname: str, net: Net, cmd: int, dest: str, data: bytes) -> bool:
        sock, port = self.set[TX_OF[net]], self.port_of(net)
        if sock is None:
            self.throttle.warning(("notsent", net, cmd), "%s to %s network not sent",
                                  cmd_name(cmd), net.iface)
            return False
        err = self.wire.send(sock, data, dest, port)
        if err is not None:
            self.counters.tx_errors += 1
            self.throttle.error(("send", net, err.errno), "%s failed to send %d:%s command to "
                                "%s:%d (%s) (%s)", hostname, cmd, cmd_name(cmd), dest, port,
                                net.iface, transport.describe_error(err))
            return False
        self.counters.tx += 1
        return True


def report_rcvbuf(log, throttle, name: str, got: int, wanted: int, hosts: int,
                  rmem_max: int) -> None:
    """One clear line (for all three sockets) when the kernel gave a receive buffer smaller
    than the agent wants: a takeover (every host answering at once) or a flood's first tick
    may then lose datagrams to a full buffer."""
    if got >= wanted:
        return
    throttle.warning(("rcvbuf",), "%s receive buffer is %d bytes, %d wanted (a takeover's "
                     "answer from %d hosts, or 100 ms of a flood) ; without CAP_NET_ADMIN the "
                     "kernel allows %d (net.core.rmem_max %d): give the agent CAP_NET_ADMIN or "
                     "sysctl -w net.core.rmem_max=%d", name, got, wanted, hosts, 2 * rmem_max,
                     rmem_max, (wanted + 1) // 2)
