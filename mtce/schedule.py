"""The client's pure decisions: what each command code does, who may send commands, and what
an mtcAlive request's pxebootInfo teaches.

No I/O: `client.py` carries out the rows (files, ACK sends, `[actions]`) and logs. The rows
follow `M/mtcCompMsg.cpp:245-745` (client.md §5.2): which codes are ACKed and how, what each
logs, and whether its action comes before the ACK (the locked files) or after it (reboot,
reset, wipedisk). Imports only `states`.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

from mtce.states import CONTROLLERS, ENHANCED_HOST_SERVICES, Cmd, Net

FAIL_FIT = 254                  # returnCodes.h FAIL_FIT: the host-services fit failure
HOST_SERVICES_NUM = 2           # a host-services ACK carries num 2: parm[0] rc, parm[1] flag


class Ack(enum.Enum):
    NONE = "none"                   # not ACKed (mtcAlive request, info, sync, subf failed)
    ECHO = "echo"                   # the 100-byte echo, signature rewritten
    HOST_SERVICES = "host services"  # the echo with num 2, parm[0] rc, parm[1] 0x1B0000B1


class Do(enum.Enum):
    """What the client does for a command (carried out by client.py / actions.py)."""
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
    name); None: nothing is logged on receipt (the locked message logs the file it makes). `log_ack`: whether the
    ACK's send is logged too (the original does not log the locked ACK).
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
    """(num, parm) of the ACK: the command's own, or the host-services form (client.md §5.2,
    `M/mtcCompMsg.cpp:461-464`)."""
    if row.ack is Ack.HOST_SERVICES:
        return HOST_SERVICES_NUM, (rc, ENHANCED_HOST_SERVICES) + tuple(parm[2:])
    return num, tuple(parm)


# -- who may send commands ----------------------------------------------------------------

@dataclass(frozen=True)
class Sources:
    """Where commands may come from, per network (README, Security).

    mgmt: the `controller`, `controller-0` and `controller-1` addresses; cluster-host: the
    `controller-N-cluster-host` addresses (both from the hosts file, then the resolver);
    pxeboot: the controllers' addresses of the latest valid pxebootInfo and the source of the
    latest mtcAlive request that carried one; `own`: this host's own mgmt and cluster-host
    addresses (the original's "self").
    """
    own: frozenset = field(default_factory=frozenset)
    mgmt: frozenset = field(default_factory=frozenset)
    clstr: frozenset = field(default_factory=frozenset)
    pxeboot: frozenset = field(default_factory=frozenset)

    def of(self, net: Net) -> frozenset:
        return (self.mgmt, self.clstr, self.pxeboot)[net]


def may_command(sources: Sources, src: str, net: Net, tagged: bool) -> bool:
    """Whether a command from `src` on `net` is carried out.

    With message authentication a valid tag is what decides, whatever the source (a
    controller that moved is still believed). Without one, only the controllers' addresses
    (or this host itself) are.
    """
    return tagged or src in sources.own or src in sources.of(net)


TRUST_STALE_S = 180.0       # pxeboot trust this old (3 ready-event periods) may be replaced


def may_teach(cmd: int, net: Net, sources: Sources, quiet_s: float) -> bool:
    """Whether an mtcAlive request over pxeboot from an address not trusted yet is taken,
    teaching the controllers' pxeboot addresses (client.md §2.6): before any is known (the
    first request, trust on first use), or when no trusted one has come for TRUST_STALE_S
    (`quiet_s`): a live agent sends one at every ready event (about every 60 s), so only a
    readdressed or replaced controller pair is silent that long, never a running one."""
    return (cmd == Cmd.REQ_MTCALIVE and net is Net.PXEBOOT
            and (not sources.pxeboot or quiet_s > TRUST_STALE_S))


# -- learning the controllers' pxeboot addresses -------------------------------------------

PXEBOOT_KEYS = ("controller",) + CONTROLLERS


def _ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


@dataclass(frozen=True)
class Lesson:
    """What one pxebootInfo changes: the new addresses and the lines to log.

    `lines` are (kind, level, text): kind "change" for an address learned or moved (logged
    once, it is a state change), "fault" for a repeatable problem (throttled), "debug".
    """
    addresses: dict
    lines: tuple


def learn_pxeboot_info(stored: dict, info: dict, text: str) -> Lesson:
    """client.md §2.6 (`load_pxebootInfo_msg`): the active `controller` address is replaced
    by any value, empty included; `controller-0`/`controller-1` only by a non-empty valid one
    (an empty value keeps the stored address and warns, as the original)."""
    new = dict(stored)
    lines = []
    active = info.get("controller")
    if active is not None and active != stored.get("controller", "") and \
            (not active or _ipv4(active)):
        old = stored.get("controller", "")
        lines.append(("change", "info", f"controller pxeboot address: {active}"
                      + (f" ; was {old}" if old else "")))
        new["controller"] = active
    for ctl in CONTROLLERS:
        value, old = info.get(ctl), stored.get(ctl, "")
        if value is None or (value and not _ipv4(value)):
            lines.append(("fault", "warning",
                          f"Failed to parse {ctl} pxeboot ip from 'pxebootInfo' : {text}"))
        elif not value:
            if old:
                lines.append(("fault", "warning", f"{ctl} pxeboot address now null ; was {old}"))
        elif not old:
            lines.append(("change", "info", f"{ctl} pxeboot ip: {value}"))
            new[ctl] = value
        elif value != old:
            lines.append(("change", "info", f"{ctl} pxeboot ip: {value} ; change from {old}"))
            new[ctl] = value
        else:
            lines.append(("debug", "debug", f"{ctl} pxeboot ip {value} ; unchanged"))
    return Lesson(new, tuple(lines))
