"""The agent's operator commands (`mtce lock`, `reboot`, ...) waiting for their ACK: sent again
every CMD_RETRY_S until a host ACKs on any network, CMD_ATTEMPTS times at most (docs/protocol.md
§5.4, §8: `MTC_CMD_RSP_TIMEOUT` 10 s, `RESET_PROG_MAX_REBOOTS_B4_RESET` 5). `alive` (an mtcAlive
request on pxeboot) follows the same rule; a client does not ACK that request, its answer is the
host's next pxeboot mtcAlive (docs/protocol.md §2).

Waiters (`mtce reboot HOST --wait`) each get one `Outcome`: ACKed, with every network that
ACKed within ACK_FORGET_S of the first; given up; their own deadline passed; or the host left
the inventory. A new command for the same host and code replaces the pending one (its attempts
start over) and its waiters join it; if the one it replaces was ACKed already, they are told so.

Pure: `now` in; out come the attempts to make (`Attempt`), the lines to log and the outcomes.
The agent sends each attempt over the networks it picks and arms one timer at `next_deadline()`.
"""

from __future__ import annotations

from typing import NamedTuple

from mtce.states import Cmd, Net, cmd_name

CMD_RETRY_S = 10.0              # MTC_CMD_RSP_TIMEOUT: wait for an ACK before resending
CMD_ATTEMPTS = 5                # attempts before giving up
ACK_FORGET_S = 1.0              # an ACKed command is kept this long for its other ACKs
INF = float("inf")

ACKED, GAVE_UP, TIMEOUT, FORGOTTEN = "acked", "gave up", "timeout", "forgotten"
REPLACED = "replaced"
# A lock and an unlock of one host undo each other: the later one ends the earlier's retries.
OPPOSITE = {Cmd.LOCKED: Cmd.UNLOCKED, Cmd.UNLOCKED: Cmd.LOCKED}
# The operator's word for each command (`mtce <word> HOST`), in the outcome's text.
WORDS = {Cmd.LOCKED: "lock", Cmd.UNLOCKED: "unlock", Cmd.REBOOT: "reboot",
         Cmd.RESET: "reset", Cmd.LAZY_REBOOT: "lazy reboot", Cmd.REQ_MTCALIVE: "alive"}


class Attempt(NamedTuple):
    host: str
    cmd: Cmd
    num: int
    parm: tuple
    attempt: int                # 1 .. CMD_ATTEMPTS


class Outcome(NamedTuple):
    """What one waiter is told."""
    watch: int
    host: str
    cmd: Cmd
    result: str                 # ACKED, GAVE_UP, TIMEOUT, FORGOTTEN or REPLACED
    nets: tuple                 # the networks that ACKed (answered), first first
    attempts: int
    waited_s: float

    @property
    def ok(self) -> bool:
        return self.result == ACKED

    def text(self) -> str:
        word = WORDS.get(self.cmd, cmd_name(self.cmd))
        what = "pxeboot mtcAlive" if self.cmd == Cmd.REQ_MTCALIVE else "ACK"
        if self.ok:
            verb = "answered" if self.cmd == Cmd.REQ_MTCALIVE else "ACKed"
            return f"{self.host} {word} {verb} on {','.join(n.key for n in self.nets)}"
        # A lock or unlock is recorded before it is sent: not lost for want of an ACK, the
        # locked correction tells the host when its mtcAlive next arrives (docs/protocol.md
        # §5.4 "Locked correction").
        kept = f" ; the agent keeps {self.host} {word}ed (state_dir) and tells it again " \
               f"when it is heard" if self.cmd in (Cmd.LOCKED, Cmd.UNLOCKED) else ""
        if self.result == GAVE_UP:
            return f"{self.host} {word}: no {what} after {self.attempts} attempts " \
                   f"(gave up){kept}"
        if self.result == TIMEOUT:
            return (f"{self.host} {word}: no {what} within {self.waited_s:g} s (attempt "
                    f"{self.attempts} of {CMD_ATTEMPTS} ; the agent keeps trying){kept}")
        if self.result == REPLACED:
            return (f"{self.host} {word}: replaced by a later "
                    f"{WORDS[OPPOSITE[self.cmd]]} before an {what}")
        return f"{self.host} {word}: the host left the inventory before an {what}"


class Due(NamedTuple):
    attempts: list
    lines: list
    outcomes: list


class Pending:
    """One command to one host, waiting for its ACK."""

    __slots__ = ("host", "cmd", "num", "parm", "attempts", "due_at", "acked")

    def __init__(self, host: str, cmd: Cmd, num: int, parm: tuple):
        self.host, self.cmd, self.num, self.parm = host, cmd, num, tuple(parm)
        self.attempts = 0
        self.due_at = INF
        self.acked: list[Net] = []


class Watch:
    __slots__ = ("key", "since", "until")

    def __init__(self, key: tuple, since: float, until: float):
        self.key, self.since, self.until = key, since, until


class Commands:
    """Every pending command, by (host, cmd): a new one replaces the one it repeats."""

    def __init__(self):
        self.pending: dict[tuple[str, int], Pending] = {}
        self.watches: dict[int, Watch] = {}
        self._next_watch = 0
        self.counts = {"sent": 0, "acked": 0, "given_up": 0}    # the metrics endpoint's

    def start(self, host: str, cmd: Cmd, num: int, parm: tuple,
              now: float) -> tuple[Attempt, list[Outcome]]:
        """A new operator command: its first attempt, now (and the outcomes of the waiters of
        an ACKed one it replaces)."""
        key = (host, int(cmd))
        old = self.pending.get(key)
        outcomes = self._settle(key, ACKED, old, now) if old is not None and old.acked else []
        undone = (host, int(OPPOSITE[cmd])) if cmd in OPPOSITE else None
        if undone in self.pending:
            gone = self.pending.pop(undone)
            outcomes += self._settle(undone, ACKED if gone.acked else REPLACED, gone, now)
        p = self.pending[key] = Pending(host, cmd, num, parm)
        return self._attempt(p, now), outcomes

    def _attempt(self, p: Pending, now: float) -> Attempt:
        p.attempts += 1
        self.counts["sent"] += 1
        p.due_at = now + CMD_RETRY_S
        return Attempt(p.host, p.cmd, p.num, p.parm, p.attempts)

    def forget_host(self, host: str) -> list[Outcome]:
        outcomes = []
        for key in [k for k in self.pending if k[0] == host]:
            outcomes += self._settle(key, FORGOTTEN, self.pending.pop(key), None)
        return outcomes

    # -- waiters ----------------------------------------------------------------------------
    def watch(self, host: str, cmd: Cmd, now: float, seconds: float) -> int:
        """A waiter for the pending (host, cmd), for `seconds` from `now`; its id. KeyError
        if there is no such command."""
        key = (host, int(cmd))
        if key not in self.pending:
            raise KeyError(key)
        self._next_watch += 1
        self.watches[self._next_watch] = Watch(key, now, now + seconds)
        return self._next_watch

    def unwatch(self, watch: int) -> None:
        """A waiter that went away (its client closed the connection)."""
        self.watches.pop(watch, None)

    def _settle(self, key: tuple, result: str, p: Pending | None, now: float | None,
                only=None) -> list[Outcome]:
        out = []
        for wid, w in list(self.watches.items()):
            if w.key != key or (only is not None and wid not in only):
                continue
            del self.watches[wid]
            out.append(Outcome(wid, key[0], Cmd(key[1]), result,
                               tuple(p.acked) if p is not None else (),
                               p.attempts if p is not None else 0,
                               (now if now is not None else w.until) - w.since))
        return out

    # -- answers ----------------------------------------------------------------------------
    def on_ack(self, host: str, cmd: int, net: Net, now: float) -> tuple[bool, list[str]]:
        """An ACK: (was it for a pending command, the lines to log). The first ACK of a
        command ends its retries; the others are told for the networks they came over.
        No client ACKs an mtcAlive request: such an "ACK" answers nothing."""
        if cmd == Cmd.REQ_MTCALIVE:
            return False, []
        return self._answered(host, cmd, net, now, "request ACK", "request succeeded")

    def on_answer(self, host: str, net: Net, now: float) -> tuple[bool, list[str]]:
        """A pxeboot mtcAlive from `host`: the answer to a pending `alive`."""
        if net is not Net.PXEBOOT:
            return False, []
        ok, lines = self._answered(host, Cmd.REQ_MTCALIVE, net, now, "", "request answered")
        return ok, lines[1:]

    def _answered(self, host: str, cmd: int, net: Net, now: float, each: str,
                  first: str) -> tuple[bool, list[str]]:
        p = self.pending.get((host, cmd))
        if p is None or net in p.acked:
            return False, []
        p.acked.append(net)
        lines = [f"{host} {cmd_name(cmd)} {each} ({net.iface})"]
        if len(p.acked) == 1:
            self.counts["acked"] += 1
            name = "mtcAlive" if cmd == Cmd.REQ_MTCALIVE else cmd_name(cmd)
            lines.append(f"{host} {name} {first} ({net.iface})")
            p.due_at = now + ACK_FORGET_S
        return True, lines

    # -- time -------------------------------------------------------------------------------
    def due(self, now: float) -> Due:
        """What is due at `now`: attempts to make again, commands given up (logged), ACKed
        ones forgotten, waiters told."""
        attempts, lines, outcomes = [], [], []
        for key, p in list(self.pending.items()):
            if p.due_at > now:
                continue
            if p.acked:
                del self.pending[key]
                outcomes += self._settle(key, ACKED, p, now)
            elif p.attempts >= CMD_ATTEMPTS:
                del self.pending[key]
                self.counts["given_up"] += 1
                what = "pxeboot mtcAlive" if p.cmd == Cmd.REQ_MTCALIVE else "ACK"
                name = "mtcAlive" if p.cmd == Cmd.REQ_MTCALIVE else cmd_name(p.cmd)
                lines.append(f"{p.host} {name} request failed ; no {what} after "
                             f"{CMD_ATTEMPTS} attempts")
                outcomes += self._settle(key, GAVE_UP, p, now)
            else:
                attempts.append(self._attempt(p, now))
        for wid, w in list(self.watches.items()):
            if w.until <= now:
                p = self.pending.get(w.key)
                result = ACKED if p is not None and p.acked else TIMEOUT
                outcomes += self._settle(w.key, result, p, w.until, only=(wid,))
        return Due(attempts, lines, outcomes)

    def next_deadline(self) -> float:
        return min(min((p.due_at for p in self.pending.values()), default=INF),
                   min((w.until for w in self.watches.values()), default=INF))
