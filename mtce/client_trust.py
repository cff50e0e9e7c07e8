"""Who may command a client (docs/contract.md §8, README "Security"), and what a pxebootInfo teaches
it (docs/protocol.md §5.2). Pure: addresses and `now` in, decisions and log lines out; the kept set
of confirmed addresses comes in and goes out as text (client.py reads and writes the file).
Imports `states` only.

Keys off, mgmt and cluster-host commands come from the controllers' names (hosts file, then
the resolver). pxeboot has no names: the client learns its controllers from the agent's
mtcAlive requests, into three slots (`controller`, the active one; `controller-0`,
`controller-1`, where pxeboot mtcAlive go). Any request is answered and fills an empty slot;
it replaces a filled one only from a trusted address, or after TRUST_STALE_S without one. The
trusted pxeboot addresses are the *confirmed* ones once a pxebootInfo has come over mgmt or
cluster-host from a controller (the mtce agent sends one beside every pxeboot request; kept
in `persist_dir`); before that, as the original, whatever the pxeboot requests taught (trust
on first use).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field

from mtce.states import CONTROLLERS, Net

PXEBOOT_KEYS = ("controller",) + CONTROLLERS
TRUST_STALE_S = 180.0       # pxeboot trust this old (3 ready-event periods) may be replaced
CONFIRMED_FILE = "pxeboot_controllers.json"     # under [paths] persist_dir


@dataclass(frozen=True)
class Sources:
    """Where commands may come from, per network.

    mgmt: the `controller`, `controller-0` and `controller-1` addresses; cluster-host: the
    `controller-N-cluster-host` addresses (both from the hosts file, then the resolver);
    pxeboot: `PxebootTrust.trusted()`. The host's own addresses are not among them: any
    process on the host can send from those (the original's "self" only skips the target-MAC
    check, docs/protocol.md §1.2); on a controller its own address is `controller-N` anyway.
    """
    mgmt: frozenset = field(default_factory=frozenset)
    clstr: frozenset = field(default_factory=frozenset)
    pxeboot: frozenset = field(default_factory=frozenset)

    def of(self, net: Net) -> frozenset:
        return (self.mgmt, self.clstr, self.pxeboot)[net]


def may_command(sources: Sources, src: str, net: Net, tagged: bool) -> bool:
    """Whether a command from `src` on `net` is carried out.

    With message authentication a valid tag is what decides, whatever the source (a
    controller that moved is still believed). Without one, only the controllers' addresses
    are.
    """
    return tagged or src in sources.of(net)


# -- learning the controllers' pxeboot addresses -------------------------------------------

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


def learn_pxeboot_info(stored: dict, info: dict, text: str, fill_only: bool = False) -> Lesson:
    """docs/protocol.md §5.2 (`load_pxebootInfo_msg`): the active `controller` address is replaced
    by any value, empty included; `controller-0`/`controller-1` only by a non-empty valid one
    (an empty value keeps the stored address and warns, as the original). `fill_only`: only
    empty slots take a value (a request from an address not trusted, docs/contract.md §8)."""
    new = dict(stored)
    lines = []
    active, old = info.get("controller"), stored.get("controller", "")
    if active is not None and active != old and (not active or _ipv4(active)) and \
            not (fill_only and (old or not active)):
        lines.append(("change", "info", f"controller pxeboot address: {active}"
                      + (f" ; was {old}" if old else "")))
        new["controller"] = active
    for ctl in CONTROLLERS:
        value, old = info.get(ctl), stored.get(ctl, "")
        if value is None or (value and not _ipv4(value)):
            lines.append(("fault", "warning",
                          f"Failed to parse {ctl} pxeboot ip from 'pxebootInfo' : {text}"))
        elif fill_only and old:
            continue
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


# -- the confirmed addresses, kept in persist_dir --------------------------------------------

def parse_confirmed(text: str) -> dict:
    """The kept set: a JSON object of PXEBOOT_KEYS to IPv4 addresses (or ""), naming one at
    least. Anything else raises ValueError: the caller refuses pxeboot commands until the
    agent confirms again, rather than reopening them to the first request (fail closed)."""
    obj = json.loads(text)
    if not isinstance(obj, dict) or not obj or set(obj) - set(PXEBOOT_KEYS):
        raise ValueError(f"not an object of {', '.join(PXEBOOT_KEYS)}")
    for key, value in obj.items():
        if not isinstance(value, str) or (value and not _ipv4(value)):
            raise ValueError(f"{key}: {value!r} is not an IPv4 address")
    if not any(obj.values()):
        raise ValueError("no address")
    return obj


def confirmed_text(confirmed: dict) -> str:
    return json.dumps({k: confirmed[k] for k in PXEBOOT_KEYS if k in confirmed},
                      separators=(",", ":")) + "\n"


# -- the pxeboot slots and who may change them ---------------------------------------------------

class PxebootTrust:
    """The controllers' pxeboot slots, the confirmed addresses, and whom they make trusted.

    `confirmed` is None until a pxebootInfo arrives over mgmt or cluster-host from a
    controller (then the client is in "confirmed" mode for good, across restarts); `{}` when
    the kept file could not be read (confirmed, nothing trusted yet: fail closed). Before
    that, `taught` holds what the original's rule trusts: the source of the first request
    (trust on first use), then of each request taken from a trusted address, and the
    addresses it named. A slot filled by anyone else (an empty slot takes any request's
    value) makes its sender a destination of pxeboot mtcAlive, never a trusted address.
    """

    def __init__(self, now: float):
        self.slots = {k: "" for k in PXEBOOT_KEYS}
        self.confirmed: dict | None = None
        self.taught: frozenset = frozenset()
        self.trust_at = now         # when a trusted request last came

    def trusted(self) -> frozenset:
        """The pxeboot addresses commands are carried out from."""
        if self.confirmed is not None:
            return frozenset(a for a in self.confirmed.values() if a)
        return self.taught

    def on_request(self, info: dict, text: str, src: str, vouched: bool, now: float
                   ) -> tuple[list, bool]:
        """An mtcAlive request over pxeboot (answered by the caller whatever this says):
        (lines, refused). `vouched`: a valid tag. Empty slots are filled from anyone; filled
        ones replaced only from an address trusted before this request (or the first
        request of a client that trusts none yet), or after TRUST_STALE_S without a trusted
        request. A request taken from a trusted address also clears a slot it leaves empty
        that holds an address nobody trusted (a stranger's fill), where the original keeps
        a stored address on an empty value."""
        before = self.trusted()
        trusted = vouched or src in before or (self.confirmed is None and not before)
        quiet_s = now - self.trust_at
        if not trusted and quiet_s <= TRUST_STALE_S:
            fill = learn_pxeboot_info(self.slots, info, text, fill_only=True)
            self.slots = fill.addresses
            refused = learn_pxeboot_info(self.slots, info, text).addresses != self.slots
            lines = list(fill.lines)
            if refused:
                what = "confirmed controller" if self.confirmed is not None else "controller"
                lines.append(("refused", "warning", f"pxebootInfo from {src} on Pxeboot network "
                                                    f"not taken: not a {what} address"))
            return lines, refused
        lines = []
        if not trusted and before:
            lines.append(("log", "warning", f"pxeboot mtcAlive request from {src}, no request "
                                            f"from the known controllers for {quiet_s:.0f} "
                                            f"secs ; following it"))
        lesson = learn_pxeboot_info(self.slots, info, text)
        self.slots = lesson.addresses
        self.trust_at = now
        lines += lesson.lines
        if self.confirmed is None:
            self.taught = frozenset([src] + [info[k] for k in PXEBOOT_KEYS
                                             if _ipv4(info.get(k) or "")])
        good = self.trusted()
        for ctl in CONTROLLERS:
            old = self.slots[ctl]
            if old and old not in good and info.get(ctl) == "":
                self.slots[ctl] = ""
                lines.append(("change", "info", f"{ctl} pxeboot address {old} is not a "
                                                f"controller's ; cleared"))
        return lines, False

    def on_confirm(self, info: dict, iface: str, now: float) -> tuple[list, bool]:
        """A pxebootInfo over mgmt or cluster-host from a controller: (lines, changed). Its
        addresses become the confirmed ones, slot by slot (an empty value keeps the slot, as
        learning does); a message naming none changes nothing."""
        named = {k: info[k] for k in PXEBOOT_KEYS if _ipv4(info.get(k) or "")}
        if not named:
            return [], False
        self.trust_at = now
        new = {**(self.confirmed or {}), **named}
        if new == self.confirmed:
            return [], False
        first = not self.confirmed
        self.confirmed = new
        addresses = " ".join(sorted(self.trusted()))
        return [("change", "info", f"controller pxeboot addresses confirmed over {iface} "
                                   f"network: {addresses}" + (" ; pxeboot commands are taken "
                                                             "only from them" if first else ""))
                ], True
