"""The locked/unlocked correction (docs/protocol.md §5.4 "Locked correction"): a client whose
I_AM_LOCKED flag disagrees with the host's administrative state is told LOCKED or UNLOCKED. The
original re-sends on every mtcAlive (3 networks x every 5 s); here the same correction goes at most
once per online_period and its warning once per episode (throttled). Pure.
"""

from __future__ import annotations

from mtce.agent_decisions import INF, Send
from mtce.decisions import Log
from mtce.states import PARM_LOCK_PERSIST, Admin, Cmd, Flag, Net

LOCKED_BIT = int(Flag.I_AM_LOCKED)   # plain int: IntFlag arithmetic is slow on the hot path
# parm[] of a LOCKED command that asks the client to persist the lock (M/mtcCtrlMsg.cpp:814-838)
LOCK_PERSIST_PARM = tuple(int(i == PARM_LOCK_PERSIST) for i in range(PARM_LOCK_PERSIST + 1))


class LockCorrection:
    __slots__ = ("correcting", "at")

    def __init__(self):
        self.correcting: Cmd | None = None      # the correction of the episode under way
        self.at = -INF

    def reset(self) -> None:
        self.correcting = None

    def check(self, host, flags: int, now: float, out: list) -> None:
        """`host`: admin, hostname, settings, facts (the simplex file), clstr_ip,
        pxeboot_ip. Its warning is a "change" line: the daemon logs it once a minute at most."""
        reports_locked = bool(flags & LOCKED_BIT)
        if host.admin is Admin.LOCKED and not reports_locked:
            want = Cmd.LOCKED
        elif host.admin is Admin.UNLOCKED and reports_locked:
            want = Cmd.UNLOCKED
        else:
            self.correcting = None
            return
        new_episode = self.correcting is not want
        if not new_episode and now - self.at < host.settings.online_period_s:
            return
        self.correcting, self.at = want, now
        h, clstr = host.hostname, bool(host.clstr_ip)
        if want is Cmd.UNLOCKED:
            if new_episode:
                out.append(Log("warning", f"{h} mtcAlive reporting locked while unlocked ; "
                                          f"correcting", "change", (h, "correct", want)))
            out.append(Send(h, Net.MGMT, Cmd.UNLOCKED))
            if clstr:
                out.append(Send(h, Net.CLSTR, Cmd.UNLOCKED))
            return
        if host.facts.still_simplex:
            # /etc/platform/simplex present: no warning, no pxeboot, no persist flag.
            num, parm = 0, ()
        else:
            num, parm = 1, LOCK_PERSIST_PARM
            if new_episode:
                out.append(Log("warning", f"{h} mtcAlive reporting unlocked while locked ; "
                                          f"correcting", "change", (h, "correct", want)))
            if host.settings.pxeboot_provisioned and host.pxeboot_ip:
                out.append(Send(h, Net.PXEBOOT, Cmd.LOCKED, num, parm))
        out.append(Send(h, Net.MGMT, Cmd.LOCKED, num, parm))
        if clstr:
            out.append(Send(h, Net.CLSTR, Cmd.LOCKED, num, parm))
