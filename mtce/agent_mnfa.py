"""Multi-node failure avoidance on the mtcAlive networks (`Mnfa`, docs/contract.md §8 "Multi-node
failure avoidance (MNFA)", docs/protocol.md §5.8): when at least `mnfa_threshold` hosts that were
`ok` on one network lose it within one detection window of each other, the fault is the controller's
side (its link, its switch port), not theirs. The agent then raises one `mtce.mnfa` alarm for that
network instead of a 200.003 for each host; hosts that lose the network later join it. It ends when
every host in it is back (after 200.003's clear debounce), or after `mnfa_timeout` seconds, when
each host still lost is handled on its own as if its loss began then.

Beyond the original, whose MNFA guards its heartbeat only (`[agent] mnfa_threshold`, `[timeouts]
mnfa_timeout`, docs/protocol.md §5.8). Pure: the hosts (agent_host.HostMonitor) report each
network's loss and return (`lost`, `back`) with `now`; actions go out.
"""

from __future__ import annotations

from mtce.agent_decisions import INF, ClearAlarm, RaiseAlarm, Remember, Settings
from mtce.decisions import Log
from mtce.states import ALARM_MNFA, MNFA_TIMED_OUT_FACT, Admin, Net

MNFA_SEVERITY = "major"
DETECTION_SLACK_S = 1.0         # the agent's read grid at most: a loss is declared on a tick


class Failure:
    """One network's MNFA bookkeeping."""

    __slots__ = ("net", "recent", "unrecovered", "held", "back", "since", "raised_on",
                 "timed_out")

    def __init__(self, net: Net):
        self.net = net
        self.recent: list = []              # (when, host): losses from ok, no MNFA under way
        self.unrecovered: set = set()       # hosts lost since their last return
        self.held: set | None = None        # the hosts in the MNFA; None: none under way
        self.back: set = set()              # hosts in it that are back
        self.since = INF                    # when it began (monotonic)
        self.raised_on = ""                 # the host its alarm names (a takeover keeps it)
        self.timed_out: set = set()         # handled on their own since a timeout, until back


class Mnfa:
    """The agent's MNFA, per network. `agent_host` names the alarm's host (the agent's own)."""

    def __init__(self, settings: Settings, agent_host: str = ""):
        self.settings = settings
        self.agent_host = agent_host
        self.nets = {net: Failure(net) for net in Net}

    def window_s(self, net: Net) -> float:
        """One detection window: the time between two hosts' declared losses of one fault
        (each host's loss is declared at the end of one of its own windows)."""
        s = self.settings
        return (s.pxeboot_window_s if net is Net.PXEBOOT else s.online_period_s) + \
            DETECTION_SLACK_S

    # -- events from the hosts ---------------------------------------------------------------

    def lost(self, host, net: Net, now: float, out: list) -> None:
        """`host` lost `net` (pxeboot: its monitor declared a loss). Under way, an MNFA takes
        any unlocked host without a 200.003 of its own; to enter one, a loss counts only from
        ok: the network heard since the agent started, or the host online to the agent before
        this one (state_dir)."""
        if not self.settings.mnfa_threshold:
            return
        f = self.nets[net]
        if host in f.unrecovered or host.admin is Admin.LOCKED:
            return                          # not from ok; a locked host is its operator's
        if net is Net.PXEBOOT and host.pxe.alarm:
            return                          # its own fault already
        if f.held is None and not (host.nets[net].received or host.restored_online):
            return                          # never ok here: no evidence of a common fault
        f.unrecovered.add(host)
        if f.held is not None:
            f.back.discard(host)
            if host not in f.held:
                f.held.add(host)
                _hold(host, net, True, out)
                out.append(self.alarm_of(net))
                out.append(self._count_line(f))
            return
        window = self.window_s(net)
        f.recent = [(t, h) for t, h in f.recent
                    if now - t <= window and h in f.unrecovered and h is not host]
        f.recent.append((now, host))
        if len(f.recent) >= self.settings.mnfa_threshold:
            self._enter(f, {h for _, h in f.recent}, now, out)

    def back(self, host, net: Net, now: float, out: list) -> None:
        """`host` is back on `net` (pxeboot: a good window once 200.003 would clear); nothing
        to do unless its loss was counted."""
        f = self.nets[net]
        if host not in f.unrecovered:
            return
        f.unrecovered.discard(host)
        self._untime(f, host, out)
        if f.held is not None and host in f.held:
            f.back.add(host)
            if f.back >= f.held:
                self._exit(f, out)

    def forget(self, host, out: list, nets=tuple(Net)) -> None:
        """`host` is locked, offline or left the inventory (or, on one of `nets`, is no longer
        monitored): its losses there no longer count, and no MNFA holds it."""
        for net in nets:
            f = self.nets[net]
            if host not in f.unrecovered and (f.held is None or host not in f.held):
                continue
            f.unrecovered.discard(host)
            self._untime(f, host, out)
            f.recent = [(t, h) for t, h in f.recent if h is not host]
            if f.held is None or host not in f.held:
                continue
            f.held.discard(host)
            f.back.discard(host)
            _hold(host, f.net, False)
            if not f.held:
                self._exit(f, out, left=True)
            elif f.back >= f.held:
                self._exit(f, out)
            else:
                out.append(self.alarm_of(f.net))
                out.append(self._count_line(f))

    def audit(self, now: float, out: list) -> None:
        """`mnfa_timeout`: each MNFA under way longer ends."""
        timeout = self.settings.mnfa_timeout_s
        if not timeout:
            return
        for f in self.nets.values():
            if f.held is not None and now >= f.since + timeout:
                self._exit(f, out, why=f"timeout after {timeout:g} secs")

    def deadline(self) -> float:
        """When `audit` next has work (INF: none)."""
        timeout = self.settings.mnfa_timeout_s
        if not timeout:
            return INF
        return min((f.since + timeout for f in self.nets.values() if f.held is not None),
                   default=INF)

    def reconfigure(self, settings: Settings, out: list) -> None:
        """New settings (SIGHUP); turned off (`mnfa_threshold` 0), each MNFA under way ends,
        its hosts still lost handled on their own from now, as at a timeout."""
        self.settings = settings
        if not settings.mnfa_threshold:
            for f in self.nets.values():
                if f.held is not None:
                    self._exit(f, out, why="turned off (mnfa_threshold 0)")
                f.recent, f.unrecovered = [], set()

    def restore(self, net: Net, hosts: list, age_s: float, now: float,
                raised_on: str = "") -> None:
        """An MNFA the agent before this one had (its alarm in `state_dir`, raised on
        `raised_on`: the other controller after a takeover), `age_s` old: its hosts are held,
        and each counts as back at its next return."""
        f = self.nets[net]
        f.held, f.back, f.since = set(hosts), set(), now - max(0.0, age_s)
        f.raised_on = raised_on or self.agent_host
        f.unrecovered |= f.held
        for host in hosts:
            _hold(host, net, True)
            if net is Net.PXEBOOT:
                host.pxe.debounce()       # back after 200.003's clear debounce, as before

    def restore_timed_out(self, host, net: Net) -> None:
        """`host` was handled on its own after an MNFA's timeout (state_dir): still so, until
        it is back; its loss does not count toward a new one."""
        f = self.nets[net]
        f.unrecovered.add(host)
        f.timed_out.add(host)

    # -- views ---------------------------------------------------------------------------------

    def held_nets(self, host) -> list[str]:
        """The networks (JSON keys) on which `host` is held by an MNFA under way."""
        return [f.net.key for f in self.nets.values() if f.held is not None and host in f.held]

    def counts(self) -> dict:
        """{network key: hosts in its MNFA, or None when none is under way}."""
        return {f.net.key: None if f.held is None else len(f.held) for f in self.nets.values()}

    # -- entering and leaving ------------------------------------------------------------------

    def _enter(self, f: Failure, hosts: set, now: float, out: list) -> None:
        f.held, f.back, f.since, f.recent = hosts, set(), now, []
        f.raised_on = self.agent_host
        for host in hosts:
            _hold(host, f.net, True, out)
        out.append(Log("warning", f"MNFA ENTER ({f.net.key}) ; {len(hosts)} hosts"))
        out.append(self.alarm_of(f.net))

    def _exit(self, f: Failure, out: list, why: str = "", left: bool = False) -> None:
        """Every host is back (or, `left`, every one left it: locked, offline, removed); or,
        `why` (a timeout, turned off), each still lost is handled on its own from now on, as
        if its loss began now."""
        still = [h for h in f.held if h not in f.back]
        for host in f.held:
            _hold(host, f.net, False)
            if why and host in still:
                if f.net is Net.PXEBOOT:
                    host.pxe.loss_begins()
                f.timed_out.add(host)       # kept (state_dir): a restart must not hold it again
                out.append(Remember(host.hostname, MNFA_TIMED_OUT_FACT[f.net], True))
        text = f"MNFA EXIT ({f.net.key})"
        if why:
            text += f" ; {why} ; {len(still)} hosts still lost"
        elif left:
            text += " ; no host left in it (locked, offline or removed)"
        f.held, f.back, f.since = None, set(), INF
        out.append(Log("info", text))
        out.append(ClearAlarm(f.raised_on, ALARM_MNFA, f.net.key))

    @staticmethod
    def _untime(f: Failure, host, out: list) -> None:
        if host in f.timed_out:
            f.timed_out.discard(host)
            out.append(Remember(host.hostname, MNFA_TIMED_OUT_FACT[f.net], False))

    @staticmethod
    def _count_line(f: Failure) -> Log:
        """Hosts joined or left: a "change" line, so that the daemon says it once a minute at
        most however many hosts join (logs.Lines)."""
        return Log("info", f"MNFA ({f.net.key}) ; {len(f.held)} hosts", "change",
                   ("mnfa", f.net.key))

    def alarm_of(self, net: Net) -> RaiseAlarm:
        """The mtce.mnfa alarm of `net`'s MNFA under way, naming its hosts now."""
        f = self.nets[net]
        net = f.net.key
        return RaiseAlarm(f.raised_on, ALARM_MNFA, MNFA_SEVERITY,
                          f"{net} network lost by several hosts at once ; the controller's "
                          f"side (its {net} link or switch port) is the likely fault",
                          net, tuple(sorted(h.hostname for h in f.held)))


def _hold(host, net: Net, held: bool, out: list | None = None) -> None:
    """A host's pxeboot monitor raises no 200.003 while held (agent_pxeboot). Taken into an
    MNFA (`out`), a 200.003 it raised since its loss counted here (a loss count kept over a
    lock reaches alarm level at once) belongs to this fault: cleared."""
    if net is Net.PXEBOOT:
        host.pxe.mnfa_held = held
        if held and out is not None:
            host.pxe.clear_alarm(out)
