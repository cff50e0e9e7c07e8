"""The client's sockets and what it sends through them (docs/protocol.md §4):
where each socket is bound, where mtcAlive, the ready event and ACKs go, and the original's
log lines for each. Socket life (fault insertion, recovery, netlink, receive errors) is
netsocks.SocketSet's; the addresses are client_addrs.AddressBook's.
"""

from __future__ import annotations

import socket

from mtce import netsocks, transport
from mtce.netsocks import Slot
from mtce.states import Net

RX_BATCH = 10                  # datagrams read per socket per loop turn
SLOTS = (
    Slot("pxeboot_rx", Net.PXEBOOT, True, "pxeboot_rxsock", None, "pxeboot_rx"),
    Slot("pxeboot_tx", Net.PXEBOOT, False, "pxeboot_txsock", None, "pxeboot_tx"),
    Slot("mgmt_rx", Net.MGMT, True, "mgmnt_rxsock",
         "failed to init 'management rx' socket (rc:1)", "mgmt_rx"),
    Slot("mgmt_tx", Net.MGMT, False, "mgmnt_txsock",
         "failed to init 'management tx' socket (rc:1)", "mgmt_tx"),
    Slot("clstr_rx", Net.CLSTR, True, "clstr_rxsock",
         "failed to init 'cluster-host rx' socket (rc:1)", "clstr_rx"),
    Slot("clstr_tx", Net.CLSTR, False, "clstr_txsock", None, "clstr_tx_sockets"),
)
SETUP_ORDER = ("pxeboot_rx", "pxeboot_tx", "mgmt_rx", "mgmt_tx", "clstr_rx", "clstr_tx")
RECOVERY_ORDER = ("mgmt_rx", "mgmt_tx", "pxeboot_rx", "pxeboot_tx", "clstr_rx", "clstr_tx")


class ClientNet:
    """The six sockets of a client: built from the AddressBook, sent through the Wire."""

    def __init__(self, cfg, loop, log, throttle, noise, sockets, wire, book, counters,
                 on_datagram, watcher_factory=None):
        self.cfg, self.log, self.throttle, self.noise = cfg, log, throttle, noise
        self.wire, self.book, self.counters = wire, book, counters
        self.set = netsocks.SocketSet(SLOTS, sockets, loop, log, throttle,
                                      lambda: self.cfg.paths.run_dir, on_datagram, RX_BATCH,
                                      watcher_factory)
        self.sockets = sockets

    def reconfigure(self, cfg) -> None:
        self.cfg = cfg

    def __getitem__(self, name: str):
        return self.set[name]

    def build(self, name: str, first: bool = False):
        """The socket of slot `name`, bound where the original binds it (None: logged why)."""
        return getattr(self, f"_setup_{name}")(first)

    def open(self, name: str, first: bool = False) -> bool:
        return self.set.open(name, lambda: self.build(name, first))

    # -- building ----------------------------------------------------------------------------
    def _bind_rx(self, name: str, ip: str, port: int, family=None):
        """A receive socket bound to ip:port, or None after the original's throttled
        `failed to bind` line."""
        try:
            return self.sockets.udp(ip, port, family=family)
        except OSError as err:
            self.throttle.error(("setup", name), "failed to bind %s:%d to socket (%s)", ip,
                                port, transport.describe_error(err))
            return None

    def _setup_pxeboot_rx(self, first=False):
        port = self.cfg.client.mtc_rx_pxeboot_port
        own = self.book.own
        if not own.pxeboot_ip:
            self.throttle.warning(("setup", "pxeboot_rx"), "cannot setup pxeboot receive "
                                  "socket socket on %s port %d with no pxeboot address",
                                  own.pxeboot_iface, port)
            return None
        sock = self._bind_rx("pxeboot_rx", own.pxeboot_ip, port, socket.AF_INET)
        if sock is None:
            return None
        self.log.info("setup pxeboot receive socket on %s:%s:%d", own.pxeboot_iface,
                      own.pxeboot_ip, port)
        return sock

    def _setup_pxeboot_tx(self, first=False):
        # Deviation (docs/design.md): bound to the own pxeboot address when it is known, so
        # that the agent sees that address as the source.
        sock = self.sockets.udp(None, family=socket.AF_INET)
        addr = self.book.own.pxeboot_ip
        if addr:
            try:
                sock.bind((addr, 0))
            except OSError as err:
                self.throttle.warning(("bind", "pxeboot_tx"), "pxeboot transmit socket not "
                                      "bound to %s (%s) ; the kernel picks the source", addr,
                                      transport.describe_error(err))
        self.log.info("setup of pxeboot transmit socket")
        return sock

    def _mgmt_iface(self) -> str:
        g = self.book.gates
        return (g.mgmt_iface if g is not None else "") or "mgmt"

    def _setup_mgmt_rx(self, first=False):
        if not self.book.update_mgmt(first) and not self.book.own.mgmt_ip:
            return None
        port, ip = self.cfg.client.mtc_rx_mgmnt_port, self.book.own.mgmt_ip
        self.log.info("Creating %s socket on port %d with address: %s", self._mgmt_iface(),
                      port, ip)
        return self._bind_rx("mgmt_rx", ip, port)

    def _setup_mgmt_tx(self, first=False):
        if not self.book.update_mgmt(first):
            return None
        self.log.info("setup of Mgmt network transmit socket")
        self.log.info("Creating %s socket on port %d with address: controller",
                      self._mgmt_iface(), self.cfg.agent.mtc_agent_port)
        return self.sockets.udp(self.book.own.mgmt_ip, 0)

    def _setup_clstr_rx(self, first=False):
        if not self.book.update_clstr() and not self.book.own.clstr_ip:
            return None
        port, ip = self.cfg.client.mtc_rx_clstr_port, self.book.own.clstr_ip
        self.log.info("setup of cluster-host receive socket")
        self.log.info("Cluster-host iface : %s", self.book.gates.clstr_iface)
        self.log.info("Cluster-host addr  : %s", ip)
        return self._bind_rx("clstr_rx", ip, port)

    def _setup_clstr_tx(self, first=False):
        if not self.book.update_clstr():
            return None
        self.log.info("setup of controller-0-cluster-host transmit sockets")
        return self.sockets.udp(self.book.own.clstr_ip, 0)

    # -- sending -----------------------------------------------------------------------------
    def send(self, net: Net, sock_name: str, data: bytes, addr: str, port: int,
             not_ok: str) -> bool:
        """An mtcAlive on mgmt or cluster-host; its failures counted and throttled."""
        sock = self.set[sock_name]
        if sock is None or not addr:
            self.counters.tx_errors += 1
            self.counters.tx_errors_net[net] += 1
            self.throttle.error(("notok", sock_name), "%s", not_ok)
            return False
        err = self.wire.send(sock, data, addr, port)
        if err is not None:
            self.counters.tx_errors += 1
            self.counters.tx_errors_net[net] += 1
            self.throttle.error(("send", sock_name, err.errno), "message send failed on %s "
                                "network to %s:%d (%s)", net.iface, addr, port,
                                transport.describe_error(err))
            return False
        self.counters.tx += 1
        self.counters.tx_net[net] += 1
        self.throttle.clear(("notok", sock_name))
        self.throttle.clear(("send", sock_name, None))
        return True

    def send_pxeboot(self, ctl: str, addr: str, data: bytes) -> bool:
        port = self.cfg.agent.mtc_rx_pxeboot_port
        sock = self.set["pxeboot_tx"]
        if sock is None:
            self.counters.tx_errors_net[Net.PXEBOOT] += 1
            self.throttle.error(("notok", "pxeboot_tx"), "pxeboot_tx_socket not ok (0)")
            return False
        err = self.wire.send(sock, data, addr, port)
        if err is not None:
            self.counters.tx_errors += 1
            self.counters.tx_errors_net[Net.PXEBOOT] += 1
            self.throttle.error(("send", "pxeboot", ctl, err.errno), "failed to send mtcAlive "
                                "to %s using %s:%d (pxeboot) (rc:-1) (%s)", ctl, addr, port,
                                transport.describe_error(err))
            return False
        self.counters.tx += 1
        self.counters.tx_net[Net.PXEBOOT] += 1
        return True

    def send_ready(self, data: bytes, active: str) -> None:
        """Over mgmt to `controller`, and over pxeboot to the active controller if known."""
        controller, port = self.book.own.controller, self.cfg.agent.mtc_agent_port
        if self.set["mgmt_tx"] is not None and controller:
            err = self.wire.send(self.set["mgmt_tx"], data, controller, port)
            if err is not None:
                self.throttle.error(("ready", "mgmt"), "message send failed. (%s) message: %d "
                                    "bytes to %s:%d", transport.describe_error(err), len(data),
                                    controller, port)
        else:
            self.throttle.error(("ready", "mgmt"), "cannot send to null or failed management "
                                "network socket (Mgmnt)")
        if self.set["pxeboot_tx"] is not None and active:
            port = self.cfg.agent.mtc_rx_pxeboot_port
            err = self.wire.send(self.set["pxeboot_tx"], data, active, port)
            if err is not None:
                self.throttle.error(("ready", "pxeboot"), "failed to send monitor ready event "
                                    "to %s:%d on Pxeboot network (rc:-1) (%s)", active, port,
                                    transport.describe_error(err))

    def send_ack(self, data: bytes, name: str, src: str, net: Net, log_ack: bool) -> None:
        """To where the original sends ACKs (docs/protocol.md §4): on pxeboot the command's
        source :2102, on mgmt `controller`:2101, on cluster-host both controllers :2101."""
        port = self.cfg.agent.mtc_agent_port
        if net == Net.PXEBOOT:
            sock = self.set["pxeboot_tx"]
            port = self.cfg.agent.mtc_rx_pxeboot_port
            if sock is None:
                self.noise.error(("notok", "pxeboot_tx"), "pxeboot_tx_socket not ok (0)")
                return
            if log_ack:
                self.log.info("sending %s ack to %s over Pxeboot network", name, src)
            err = self.wire.send(sock, data, src, port)
            if err is not None:
                self.noise.error(("ack", net, err.errno), "failed to send %s ack to %s:%d on "
                                 "Pxeboot network (rc:-1) (%s)", name, src, port,
                                 transport.describe_error(err))
            return
        if net == Net.MGMT:
            targets, sock = [self.book.own.controller], self.set["mgmt_tx"]
        else:
            targets, sock = [a for _, a in self.book.own.clstr_dests], self.set["clstr_tx"]
        if sock is None:
            if net == Net.MGMT:
                self.noise.error(("ack", net, "null"), "cannot send to null or failed socket "
                                 "(%s)", net.iface)
            return
        for addr in targets:
            if not addr:
                continue
            err = self.wire.send(sock, data, addr, port)
            if err is None:
                if log_ack:
                    self.log.info("%s reply send (%s)", name, net.iface)
            else:
                self.noise.error(("ack", net, err.errno), "%s reply send failed (%s) (%s)",
                                 name, net.iface, transport.describe_error(err))
