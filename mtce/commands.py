"""The agent's operator commands (`mtce lock`, `reboot`, ...) waiting for their ACK: sent
again every CMD_RETRY_S until a host ACKs on any network, CMD_ATTEMPTS times at most
(agent.md §7.2: `MTC_CMD_RSP_TIMEOUT` 10 s, `RESET_PROG_MAX_REBOOTS_B4_RESET` 5).

Pure: `now` in; out come the attempts to make (`Attempt`) and the lines to log. The agent
sends each attempt over the networks it picks and arms one timer at `next_deadline()`.
"""

from __future__ import annotations

from typing import NamedTuple

from mtce.states import Cmd, Net, cmd_name

CMD_RETRY_S = 10.0              # MTC_CMD_RSP_TIMEOUT: wait for an ACK before resending
CMD_ATTEMPTS = 5                # attempts before giving up
ACK_FORGET_S = 1.0              # an ACKed command is kept this long for its other ACKs
INF = float("inf")


class Attempt(NamedTuple):
    host: str
    cmd: Cmd
    num: int
    parm: tuple
    attempt: int                # 1 .. CMD_ATTEMPTS


class Pending:
    """One command to one host, waiting for its ACK."""

    __slots__ = ("host", "cmd", "num", "parm", "attempts", "due_at", "acked")

    def __init__(self, host: str, cmd: Cmd, num: int, parm: tuple):
        self.host, self.cmd, self.num, self.parm = host, cmd, num, tuple(parm)
        self.attempts = 0
        self.due_at = INF
        self.acked: list[Net] = []


class Commands:
    """Every pending command, by (host, cmd): a new one replaces the one it repeats."""

    def __init__(self):
        self.pending: dict[tuple[str, int], Pending] = {}
        self.counts = {"sent": 0, "acked": 0, "given_up": 0}    # the metrics endpoint's

    def start(self, host: str, cmd: Cmd, num: int, parm: tuple, now: float) -> Attempt:
        """A new operator command: its first attempt, now."""
        p = self.pending[(host, int(cmd))] = Pending(host, cmd, num, parm)
        return self._attempt(p, now)

    def _attempt(self, p: Pending, now: float) -> Attempt:
        p.attempts += 1
        self.counts["sent"] += 1
        p.due_at = now + CMD_RETRY_S
        return Attempt(p.host, p.cmd, p.num, p.parm, p.attempts)

    def forget_host(self, host: str) -> None:
        for key in [k for k in self.pending if k[0] == host]:
            del self.pending[key]

    def on_ack(self, host: str, cmd: int, net: Net, now: float) -> tuple[bool, list[str]]:
        """An ACK: (was it for a pending command, the lines to log). The first ACK of a
        command ends its retries; the others are told for the networks they came over."""
        p = self.pending.get((host, cmd))
        if p is None or net in p.acked:
            return False, []
        p.acked.append(net)
        lines = [f"{host} {cmd_name(cmd)} request ACK ({net.iface})"]
        if len(p.acked) == 1:
            self.counts["acked"] += 1
            lines.append(f"{host} {cmd_name(cmd)} request succeeded ({net.iface})")
            p.due_at = now + ACK_FORGET_S
        return True, lines

    def due(self, now: float) -> tuple[list[Attempt], list[str]]:
        """What is due at `now`: attempts to make again, commands given up (logged), ACKed
        ones forgotten."""
        attempts, lines = [], []
        for key, p in list(self.pending.items()):
            if p.due_at > now:
                continue
            if p.acked:
                del self.pending[key]
            elif p.attempts >= CMD_ATTEMPTS:
                del self.pending[key]
                self.counts["given_up"] += 1
                lines.append(f"{p.host} {cmd_name(p.cmd)} request failed ; no ACK after "
                             f"{CMD_ATTEMPTS} attempts")
            else:
                attempts.append(self._attempt(p, now))
        return attempts, lines

    def next_deadline(self) -> float:
        return min((p.due_at for p in self.pending.values()), default=INF)
