"""The client's pure core: its gates, the tick and ready-event cadence, which network gets
an mtcAlive, what each command code does, who may send commands, what a pxebootInfo teaches.

Events and `now` in, actions out (`SendAlive`, `SendAck`, `RunAction`, `SaveConfirmed`, `Log`), as
agent_host.py is for the agent; `client.py` carries them out (sockets, files, `[actions]`, logs).
The command rows follow `M/mtcCompMsg.cpp:245-745` (docs/protocol.md §2): which codes are ACKed and
how, what each logs, and whether its action comes before the ACK (the locked files) or after
it (reboot, reset, wipedisk). No I/O: what only files can tell (a lock file there, a fit file)
comes in through a `facts` object; who may command is client_trust's. Imports `states`, `alive`
and `client_trust`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from mtce import alive
from mtce.client_trust import PxebootTrust, Sources, may_command
from mtce.decisions import Log
from mtce.states import CONTROLLERS, ENHANCED_HOST_SERVICES, Cmd, Net, cmd_name

FAIL_FIT = 254                  # returnCodes.h FAIL_FIT: the host-services fit failure
HOST_SERVICES_NUM = 2           # a host-services ACK carries num 2: parm[0] rc, parm[1] flag


class Ack(enum.Enum):
    NONE = "none"                   # not ACKed (mtcAlive request, info, sync, subf failed)
    ECHO = "echo"                   # the 100-byte echo, signature rewritten
    HOST_SERVICES = "host services"  # the echo with num 2, parm[0] rc, parm[1] 0x1B0000B1


class Do(enum.Enum):
    """What the client does for a command (carried out by client.py / client_actions.py)."""
    NOTHING = "nothing"
    PXEBOOT_INFO = "pxebootInfo"    # learn the controllers' pxeboot addresses, answer at once
    SYNC = "sync"
    LOCK = "lock"
    UNLOCK = "unlock"
    SUBF_FAILED = "subf failed"     # goenabled_subf removed, goenabled_subf_failed written
    REBOOT = "reboot"
    LAZY_REBOOT = "lazy reboot"
    RESET = "reset"
    WIPEDISK = "wipedisk"
    HOST_SERVICES = "host services"


# Actions that run after the ACK is sent (the original ACKs, then reboots).
AFTER_ACK = frozenset({Do.REBOOT, Do.LAZY_REBOOT, Do.RESET, Do.WIPEDISK})


@dataclass(frozen=True)
class Row:
    """One command code: its ACK, its action, and the line it logs when received.

    `text` is formatted with `iface` (the network's name), `delay` (a lazy reboot's parm[0]),
    `code`, `size` (bytes received), `name` (the code's log name) and `host` (this host's
    name); None: nothing is logged on receipt (the locked message logs the file it makes).
    `log_ack`: whether the ACK's send is logged too (the original does not log the locked ACK).
    """
    ack: Ack
    do: Do
    text: str | None
    level: str = "info"
    log_ack: bool = True


_HS = Row(Ack.HOST_SERVICES, Do.HOST_SERVICES, "{name} request from {iface} network")

COMMANDS: dict[int, Row] = {
    Cmd.REQ_MTCALIVE: Row(Ack.NONE, Do.PXEBOOT_INFO,
                          "mtcAlive request received from {iface} network", "debug"),
    Cmd.INFO: Row(Ack.NONE, Do.NOTHING, "mtc 'info' message received from {iface} network",
                  "debug"),
    Cmd.SYNC: Row(Ack.NONE, Do.SYNC, "mtc 'sync' message received from {iface} network"),
    Cmd.LOCKED: Row(Ack.ECHO, Do.LOCK, None, log_ack=False),
    Cmd.UNLOCKED: Row(Ack.ECHO, Do.UNLOCK, "{host} unlocked received from {iface} network"),
    Cmd.SUBF_GOENABLED_FAILED: Row(Ack.NONE, Do.SUBF_FAILED,
                                   "goEnabled subf failed message received from {iface} "
                                   "network"),
    # mtce runs no goEnabled tests: the request is ACKed as the original does, nothing posted.
    Cmd.REQ_MAIN_GOENABLED: Row(Ack.ECHO, Do.NOTHING, "{name} received from {iface} network "
                                "; goEnabled tests are not run by mtce"),
    Cmd.REQ_SUBF_GOENABLED: Row(Ack.ECHO, Do.NOTHING, "{name} received from {iface} network "
                                "; goEnabled tests are not run by mtce"),
    Cmd.REBOOT: Row(Ack.ECHO, Do.REBOOT, "reboot command received from {iface} network"),
    Cmd.LAZY_REBOOT: Row(Ack.ECHO, Do.LAZY_REBOOT, "lazy reboot command received from {iface} "
                         "network ; delay:{delay} seconds"),
    Cmd.STOP_CONTROL_SVCS: _HS,
    Cmd.STOP_WORKER_SVCS: _HS,
    Cmd.STOP_STORAGE_SVCS: _HS,
    Cmd.START_CONTROL_SVCS: _HS,
    Cmd.START_WORKER_SVCS: _HS,
    Cmd.START_STORAGE_SVCS: _HS,
    Cmd.WIPEDISK: Row(Ack.ECHO, Do.WIPEDISK, "Reload command received from {iface} network"),
    Cmd.RESET: Row(Ack.ECHO, Do.RESET, "Reset command received from {iface} network"),
    Cmd.LOOPBACK: Row(Ack.ECHO, Do.NOTHING, "Loopback command received from {iface} network"),
}

# Any other code: still ACKed, as the original does (its rc is not put in the ACK).
UNSUPPORTED = Row(Ack.ECHO, Do.NOTHING, "Unsupported maintenance command ({code}) with {size} "
                  "bytes received from {iface} network", "warning")


def row_for(code: int) -> Row:
    return COMMANDS.get(code, UNSUPPORTED)


def ack_fields(row: Row, num: int, parm: tuple, rc: int) -> tuple[int, tuple]:
    """(num, parm) of the ACK: the command's own, or the host-services form (docs/protocol.md §2,
    `M/mtcCompMsg.cpp:461-464`)."""
    if row.ack is Ack.HOST_SERVICES:
        return HOST_SERVICES_NUM, (rc, ENHANCED_HOST_SERVICES) + tuple(parm[2:])
    return num, tuple(parm)


# -- the gates (docs/protocol.md §4.1) ---------------------------------------------------------

SYSTEM_TYPES = {"standard": "Standard System", "duplex": "All-in-one Duplex",
                "duplex-direct": "All-in-one Duplex Direct Connect",
                "simplex": "All-in-one Simplex "}


@dataclass(frozen=True)
class Gates:
    """What platform.conf and `<platform_dir>` decide, once per process: pxeboot is
    provisioned unless the mgmt interface is `lo`, controller-0's first install is not over
    (`.first_controller` without `.initial_config_complete`) or the system is simplex;
    cluster-host unless its interface is absent or the mgmt one (`M/mtcNodeComp.cpp:1305-1336`).
    """
    mgmt_iface: str
    clstr_iface: str
    system_mode: str
    personality: str
    first_install: bool = False

    @property
    def simplex(self) -> bool:
        return self.system_mode == "simplex"

    @property
    def pxeboot(self) -> bool:
        return self.mgmt_iface != "lo" and not self.first_install and not self.simplex

    @property
    def clstr(self) -> bool:
        return bool(self.clstr_iface) and self.clstr_iface != self.mgmt_iface

    @property
    def controllers(self) -> tuple:
        """Where cluster-host and pxeboot mtcAlive go: controller-1 is skipped on simplex."""
        return CONTROLLERS[:1] if self.simplex else CONTROLLERS

    def lines(self) -> list[tuple[str, str]]:
        """(level, text) the original logs for these gates."""
        out = [("info", f"System Type : {SYSTEM_TYPES[self.system_mode]}"),
               ("info", f"Node Type   : {self.personality}")]
        if self.mgmt_iface == "lo":
            return out
        if self.first_install:
            return out + [("debug", "pxeboot network not provisionable yet")]
        out.append(("info", f"Mgmnt iface : {self.mgmt_iface}"))
        if self.simplex:
            out.append(("info", "Simplex Mode: Pxeboot network not provisioned"))
        return out


# -- actions of the core -----------------------------------------------------------------------

class SendAlive(NamedTuple):
    """Build the network's next mtcAlive (a sequence number is consumed) and send it; over
    pxeboot to each controller of `to` ((name, learned address or ""), in order), and tell
    `pxeboot_sent` what became of each."""
    net: Net
    to: tuple = ()


class SendAck(NamedTuple):
    """The ACK of `msg` on `net`; `log`: its send line is logged only if the command's own
    line just before it was (a command and its ACK are told together, or not at all)."""
    msg: alive.Message
    src: str
    net: Net
    num: int
    parm: tuple
    log: bool


class SaveConfirmed(NamedTuple):
    """Keep the confirmed pxeboot controller addresses in `persist_dir` (docs/contract.md §8)."""
    addresses: dict


class RunAction(NamedTuple):
    do: Do
    net: Net
    num: int
    parm: tuple


class Facts(Protocol):
    """What the core asks of the host (client.py answers from files)."""

    hostname: str

    def would_change(self, kind: str, num: int, parm: tuple, net: Net) -> bool: ...

    def fit(self, name: str) -> bool: ...


READY_EVERY_S = 60.0           # MTC_MINS_1: the ready event about once a minute


class ClientCore:
    """One client's decisions across time (no I/O): call `tick_nets`, then `tick_done`, each
    tick; `on_command` for each command that passed the MAC check; `set_names` when the
    controllers' names resolve to new addresses."""

    def __init__(self, period_s: float, now: float, counters):
        self.counters = counters          # rx_bad, commands, refused (transport.Counters)
        self.gates: Gates | None = None
        self.period_s = period_s
        self.ticks = 0
        self.trust = PxebootTrust(now)
        self._announced = {c: True for c in CONTROLLERS}    # the learned-flag logs
        self._names = Sources()
        self.sources = Sources()

    def reconfigure(self, period_s: float) -> None:
        self.period_s = period_s

    @property
    def ctrl_pxeboot(self) -> dict:
        """The controllers' pxeboot addresses: where pxeboot mtcAlive and ready events go."""
        return self.trust.slots

    @ctrl_pxeboot.setter
    def ctrl_pxeboot(self, slots: dict) -> None:
        self.trust.slots = dict(slots)
        self._update_sources()

    @property
    def confirmed(self) -> dict | None:
        return self.trust.confirmed

    def load_confirmed(self, addresses: dict | None) -> None:
        """At start, before any datagram: the kept set (None: none kept; {}: unreadable)."""
        self.trust.confirmed = addresses
        self._update_sources()

    # -- the tick ---------------------------------------------------------------------------
    def tick_nets(self, mgmt_ready: bool, clstr_rx_ok: bool) -> list[SendAlive]:
        """The mtcAlive of this tick, in the original's order (docs/protocol.md §5.1): pxeboot if
        provisioned, mgmt, cluster-host if provisioned and its receive socket is up."""
        g = self.gates
        out = []
        if g is not None and g.pxeboot:
            out.append(self.send_pxeboot())
        if mgmt_ready:
            out.append(SendAlive(Net.MGMT))
        if g is not None and g.clstr and clstr_rx_ok:
            out.append(SendAlive(Net.CLSTR))
        return out

    def tick_done(self) -> bool:
        """Count the tick; True when the ready event is due (every 12 ticks of 5 s)."""
        self.ticks += 1
        if self.ticks >= max(1, round(READY_EVERY_S / self.period_s)):
            self.ticks = 0
            return True
        return False

    def send_pxeboot(self) -> SendAlive:
        """A pxeboot mtcAlive to each controller, at its learned address ("" if none)."""
        ctls = self.gates.controllers if self.gates is not None else CONTROLLERS
        return SendAlive(Net.PXEBOOT, tuple((ctl, self.ctrl_pxeboot.get(ctl, ""))
                                            for ctl in ctls))

    def pxeboot_sent(self, results, port: int) -> list[Log]:
        """What became of a pxeboot `SendAlive`: (controller, address, sent) of each of its
        `to`. The lines of `M/mtcCompMsg.cpp:1192-1212`, each once per transition: 'not
        learned' while a controller has no address, 'sending ... to' at the first send
        after that (and not at all if the address was learned before the first tick)."""
        out = []
        for ctl, addr, sent in results:
            if not addr and self._announced[ctl]:
                self._announced[ctl] = False
                out.append(Log("warning", f"{ctl} pxeboot address not learned ; unable to "
                               f"send pxeboot mtcAlive", "log", ("pxeboot", ctl)))
            elif addr and sent and not self._announced[ctl]:
                self._announced[ctl] = True
                out.append(Log("info", f"sending pxeboot network mtcAlive msg on port {port} "
                               f"to {ctl} at {addr}", "log", ("pxeboot", ctl)))
        return out

    # -- who may command ----------------------------------------------------------------------
    def set_names(self, mgmt=(), clstr=()) -> None:
        """The controllers' addresses by name (hosts file, resolver)."""
        self._names = Sources(frozenset(mgmt), frozenset(clstr))
        self._update_sources()

    def _update_sources(self) -> None:
        n = self._names
        self.sources = Sources(n.mgmt, n.clstr, self.trust.trusted())

    # -- what arrives ------------------------------------------------------------------------
    def on_undecodable(self, reason: str, src: str, net: Net) -> list:
        self.counters.rx_bad += 1
        kind = reason.split(" (")[0]
        if kind == "unknown header signature":
            return [Log("warning", f"unsupported message from {src} from {net.iface} network",
                        "noise", ("unsupported", net))]
        return [Log("warning", f"malformed message from {src} from {net.iface} network "
                               f"({reason}) ; dropping", "noise", ("malformed", net, kind))]

    def on_message(self, msg: alive.Message, src: str, net: Net, tagged: bool, now: float,
                   facts: Facts, own_ips: tuple, own_mac: str) -> list:
        """A decoded datagram: the target-MAC check (docs/protocol.md §1.2; a message from this
        host's own mgmt or cluster-host address is "self"), then by signature."""
        if src not in own_ips and msg.ver >= 1:
            mine, theirs = own_mac.lower(), msg.mac
            if theirs.lower() != mine or not mine:
                self.counters.rx_bad += 1
                return [Log("warning", f"{cmd_name(msg.cmd)} req command "
                            f"from {net.iface} network not for this host (exp:{mine} "
                            f"det:{theirs}) ; ignoring ...", "noise", ("mac", net))]
        if msg.sig == alive.SIG_CMD_REQ:
            self.counters.commands += 1
            return self.on_command(msg, src, net, tagged, now, facts)
        if msg.sig == alive.SIG_REP_MSG:
            which = "main function" if msg.cmd == Cmd.MAIN_GOENABLED else "sub-function"
            return [Log("info", f"{which} goEnabled results "
                        f"acknowledged from {net.iface} network", "noise", ("rep", net))]
        self.counters.rx_bad += 1
        if msg.sig == alive.SIG_MESSAGE:
            return [Log("warning", f"unexpected mtcAlive message "
                        f"from {src} from {net.iface} network ; WARNING: mtcClient is receiving "
                        f"mtcAgent bound mtcAlive messages", "noise", ("unexpected", net))]
        return [Log("warning", f"unsupported message from {src} from {net.iface} network",
                    "noise", ("unsupported", net))]

    # -- commands ----------------------------------------------------------------------------
    def on_command(self, msg: alive.Message, src: str, net: Net, tagged: bool, now: float,
                   facts: Facts) -> list:
        """Trusted? Look the code up, act before or after the ACK as its row says, ACK.

        An mtcAlive request over pxeboot is answered from anyone (docs/contract.md §8: it only makes
        the client send mtcAlive to the learned controllers); what its pxebootInfo may
        change is client_trust's."""
        cmd = msg.cmd
        out: list = []
        trusted = may_command(self.sources, src, net, tagged)
        if not trusted and not (cmd == Cmd.REQ_MTCALIVE and net is Net.PXEBOOT):
            self.counters.refused += 1
            return [Log("warning", f"{cmd_name(cmd)} command "
                        f"from {src} on {net.iface} network refused: not a controller "
                        f"address", "noise", ("refused", net))]
        row = row_for(cmd)
        changes = facts.would_change(row.do.value, msg.num, msg.parm, net)
        if row.text is not None:
            text = row.text.format(iface=net.iface, delay=msg.parm[0] if msg.num >= 1 else 0,
                                   code=cmd, size=msg.size, name=cmd_name(cmd),
                                   host=facts.hostname)
            out.append(Log(row.level, text, "change" if changes else "noise",
                           ("command", row.do.value, net)))
        if row.do is Do.PXEBOOT_INFO:
            if net is Net.PXEBOOT:
                out += self.learn(msg.buf, src, tagged, now)
                out.append(self.send_pxeboot())
            else:
                out += self.confirm(msg.buf, net, now)
            return out
        rc = 0
        if row.do is Do.HOST_SERVICES:
            if facts.fit("host_services"):
                rc = FAIL_FIT
                out.append(Log("warning", f"{cmd_name(cmd)} Start Services - fit failure "
                                          f"({net.iface})", "noise", ("command", "hs fit", net)))
            if facts.fit("no_hs_ack"):
                out.append(Log("warning", f"{cmd_name(cmd)} Start Services - fit no ACK "
                                          f"({net.iface})", "noise", ("command", "hs no ack", net)))
                return out
        elif row.do not in AFTER_ACK and row.do is not Do.NOTHING:
            out.append(RunAction(row.do, net, msg.num, msg.parm))
        if row.ack is not Ack.NONE:
            num, parm = ack_fields(row, msg.num, msg.parm, rc)
            out.append(SendAck(msg, src, net, num, parm, row.text is not None and row.log_ack))
        if row.do in AFTER_ACK:
            out.append(RunAction(row.do, net, msg.num, msg.parm))
        return out

    def learn(self, buf: bytes, src: str, vouched: bool, now: float) -> list:
        """An mtcAlive request's pxebootInfo over pxeboot (docs/protocol.md §5.2,
        docs/contract.md §8)."""
        try:
            info = alive.parse_pxeboot_info(buf)
        except alive.DecodeError as err:
            return [Log("error", f"{err.reason}: {buf[:200].decode('utf-8', 'replace')}",
                        "noise", ("pxebootInfo", err.reason))]
        lines, refused = self.trust.on_request(info, buf[:200].decode("utf-8", "replace"), src,
                                               vouched, now)
        if refused:
            self.counters.refused += 1
        self._update_sources()
        return [self._said(kind, level, line, Net.PXEBOOT) for kind, level, line in lines]

    def confirm(self, buf: bytes, net: Net, now: float) -> list:
        """A pxebootInfo over mgmt or cluster-host from a controller (only the mtce agent
        sends one; a C agent's request there carries none and teaches nothing, quietly)."""
        try:
            info = alive.parse_pxeboot_info(buf)
        except alive.DecodeError:
            return []
        lines, changed = self.trust.on_confirm(info, net.iface, now)
        self._update_sources()
        out: list = [self._said(kind, level, line, net) for kind, level, line in lines]
        if changed:
            out.append(SaveConfirmed(dict(self.trust.confirmed)))
        return out

    @staticmethod
    def _said(kind: str, level: str, line: str, net: Net) -> Log:
        if kind == "refused":
            return Log(level, line, "noise", ("refused", net))
        key = ("pxebootInfo", line.split(" ")[0]) + (("fault",) if kind == "fault" else ())
        return Log(level, line, {"change": "change", "fault": "noise"}.get(kind, "log"), key)
