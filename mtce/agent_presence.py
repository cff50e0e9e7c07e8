"""A host's availability (docs/protocol.md §5.4, docs/contract.md §8): `Presence` takes it online,
marks mgmt and cluster-host lost, runs the offline audit and declares offline; `OfflineAudit` is the
audit's pure timing: once a host has been silent on mgmt and cluster-host for one `online_period`,
an mtcAlive request every `offline_period` on slots start + k x period (a late loop skips slots, it
never bursts), offline after `offline_threshold` periods. pxeboot mtcAlive alone never keeps a host
online (docs/contract.md §8; the original counts them).
"""

from __future__ import annotations

from mtce.agent_decisions import INF, Remember, Send, lost_after_s
from mtce.decisions import Log
from mtce.states import Availability, Cmd, Net, NetState

_OK = NetState.OK


class OfflineAudit:
    __slots__ = ("start", "sends", "slot", "send_at", "offline_at")

    def __init__(self):
        self.start: float | None = None      # running since (None: not running)
        self.sends = 0
        self.slot = 0
        self.send_at = INF
        self.offline_at = INF

    @property
    def running(self) -> bool:
        return self.start is not None

    def begin(self, silent_until: float, now: float, period_s: float, threshold: int) -> None:
        """It starts when the silent period ended, not when the agent noticed (at most one
        period earlier, in case the agent's call is late): the audit tick's granularity is
        not counted twice in the time to offline."""
        start = max(silent_until, now - period_s)
        self.start, self.sends, self.slot = start, 0, 0
        self.send_at = start
        self.offline_at = start + period_s * threshold

    def end(self) -> None:
        self.start = None
        self.send_at = self.offline_at = INF

    def due(self, now: float, period_s: float) -> str | None:
        """"offline", "send" (a request now; the next slot is set), or None."""
        if now >= self.offline_at:
            return "offline"
        if now < self.send_at:
            return None
        self.sends += 1
        late = int((now - self.start) / period_s) + 1
        self.slot = max(self.slot + 1, late)
        self.send_at = self.start + self.slot * period_s
        return "send"

    def deadline(self) -> float:
        return min(self.send_at, self.offline_at)


class Presence:
    """One host's availability from its mtcAlive (docs/protocol.md §5.4, docs/contract.md §8):
    online at the first valid one; mgmt/cluster-host `lost` after `lost_windows` silent online
    periods; the offline audit once mgmt and cluster-host were silent for one; `offline` at its end.
    It sets `host.availability` and the host's network states; `host` gives hostname, settings,
    nets, admin, clstr_ip, `provisioned(net)` and the table's registry of hosts
    in audit."""

    __slots__ = ("host", "window_from", "audit", "awaits_mgmt")

    def __init__(self, host, now: float):
        self.host = host
        self.window_from = now               # windows never start before this (stalls)
        self.audit = OfflineAudit()
        # after an offline declaration pxeboot alone does not revive it: 1, 2 once logged
        self.awaits_mgmt = 0

    def heard(self, now: float, net: Net, seq: int, out: list) -> bool:
        """A valid mtcAlive: online if it was not; the audit ends. True when it went online.

        docs/contract.md §8: pxeboot traffic alone never keeps a host online (anyone on the pxeboot
        network can send a host's pxeboot mtcAlive): it brings a host online only until its
        first offline declaration (at agent start it is often the first to answer), and it
        neither delays nor ends the offline audit, which counts mgmt and cluster-host."""
        h = self.host
        woke = False
        if net is Net.PXEBOOT:
            if h.availability is not Availability.OFFLINE:
                return False
            if self.awaits_mgmt:
                if self.awaits_mgmt == 1:        # once per offline: a datagram's line
                    self.awaits_mgmt = 2
                    out.append(Log("info", f"{h.hostname} pxeboot mtcAlive while offline ; "
                                           f"online again at its next mgmt or cluster-host "
                                           f"mtcAlive"))
                return False
        else:
            self.awaits_mgmt = 0
        iface = net.iface
        if h.availability is Availability.OFFLINE:
            self.go_online(now)
            out.append(Log("info", f"{h.hostname} mtcAlive ; going 'online'"))
            out.append(Remember(h.hostname, "online", True))
            woke = True
        if self.audit.running:
            out.append(Log("info", f"{h.hostname} still seeing mtcAlive ({iface} seq:{seq}) "
                                   f"after {self.audit.sends} of {h.settings.offline_threshold} "
                                   f"offline audits ; exiting offline handling"))
            self.end_audit()
        return woke

    def go_online(self, now: float) -> None:
        """Online from `now`: mgmt and cluster-host are `ok` until `lost_windows` windows
        pass without their mtcAlive (docs/contract.md §8 "Network state"), the one that just
        arrived included; a network not heard yet gets its windows from now, not `lost` at
        once (after a takeover the first answers come over pxeboot, docs/contract.md §8
        "Takeover")."""
        h = self.host
        h.availability = Availability.ONLINE
        self.window_from = now
        for n in h.nets[:2]:                                     # mgmt, cluster-host
            if not n.received:
                n.state = NetState.OK

    def last_heard(self) -> float:
        """The last mgmt or cluster-host mtcAlive, or when the windows started if later."""
        heard = self.window_from
        for n in self.host.nets[:2]:                             # mgmt, cluster-host
            seen = n.last_seen
            if seen is not None and seen > heard:
                heard = seen
        return heard

    def end_audit(self) -> None:
        self.audit.end()
        registry = self.host.links.auditing
        if registry is not None:
            registry.discard(self.host)

    def note_stall(self, now: float) -> bool:
        """The loop was stalled: every window starts again; True if an audit was ended."""
        self.window_from = now
        if not self.audit.running:
            return False
        self.end_audit()
        return True

    def check(self, now: float, out: list) -> float:
        """What is due at `now` for an online host: lost windows, the offline audit. Returns
        `deadline()` after it (INF once offline)."""
        if not self.audit.running:
            at = self.deadline()
            if now < at:
                return at                  # the common audit: a steady host heard in time
        h = self.host
        s = h.settings
        lost_s = lost_after_s(s)
        for n in h.nets[:2] if h.clstr_ip else h.nets[:1]:     # mgmt, cluster-host
            if n.state is NetState.OK and now >= max(n.last_seen or -INF, self.window_from) + \
                    lost_s:
                n.state = NetState.LOST
                n.ok = False
                n.went_lost += 1
                out.append(Log("info", f"{h.hostname} {n.net.iface} network mtcAlive lost ; "
                                       f"none for {s.lost_windows} x {s.online_period_s:g} secs"))
                if h.links.mnfa is not None:
                    h.links.mnfa.lost(h, n.net, now, out)
        if not self.audit.running:
            silent_until = self.last_heard() + s.online_period_s
            if now < silent_until:
                return self.deadline()
            # docs/contract.md §8: one online_period without mgmt or cluster-host mtcAlive
            # starts it.
            self.audit.begin(silent_until, now, s.offline_period_s, s.offline_threshold)
            if h.links.auditing is not None:
                h.links.auditing.add(h)
            h.update_steady()
            out.append(Log("info", f"{h.hostname} starting {_ms(s.offline_period_s)} msec "
                                   f"offline audit ({h.admin.value}-{h.availability.value})"))
        due = self.audit.due(now, s.offline_period_s)
        if due == "offline":
            self.declare_offline(out)
            return INF
        if due == "send":
            out.append(Send(h.hostname, Net.MGMT, Cmd.REQ_MTCALIVE))
            if h.clstr_ip:
                out.append(Send(h.hostname, Net.CLSTR, Cmd.REQ_MTCALIVE))
        return self.deadline()

    def declare_offline(self, out: list) -> None:
        h = self.host
        s = h.settings
        h.availability = Availability.OFFLINE
        h.restored_online = False
        self.awaits_mgmt = 1
        self.end_audit()
        h.client_ready = False
        h.flags = 0                    # docs/contract.md §5: failure_flags are what it reports now
        for n in h.nets:               # docs/protocol.md §6: zeroed on offline
            if n.state is NetState.OK and n.net is not Net.PXEBOOT:
                n.went_lost += 1
            n.last_seq = 0
            n.received = n.ok = False
            n.state = NetState.LOST
        h.locks.reset()
        h.update_steady()
        if h.links.mnfa is not None:   # offline is its own fault: no multi-node failure holds it
            h.links.mnfa.forget(h, out)
        out.append(Log("info", f"{h.hostname} going offline ; (threshold "
                               f"({_ms(s.offline_period_s)} msec * {s.offline_threshold})"))
        out.append(Remember(h.hostname, "online", False))

    def deadline(self) -> float:
        """When `check` next has work for an online host: the audit's next step, or the end
        of the silent period after the last mgmt or cluster-host mtcAlive (`last_heard`),
        or a network's `lost`, whichever comes first. Written out for the audits' hot path
        (issue 25: every steady host, every few seconds)."""
        h = self.host
        s = h.settings
        since = self.window_from
        mgmt, clstr = h.nets[0], h.nets[1]
        m_seen = mgmt.last_seen
        if m_seen is None or m_seen < since:
            m_seen = since
        c_seen = clstr.last_seen
        if c_seen is None or c_seen < since:
            c_seen = since
        audit = self.audit
        if audit.start is not None:
            at = audit.send_at if audit.send_at < audit.offline_at else audit.offline_at
        else:
            at = (m_seen if m_seen > c_seen else c_seen) + s.online_period_s
        lost_s = s.lost_s
        if mgmt.state is _OK and m_seen + lost_s < at:
            at = m_seen + lost_s
        if clstr.state is _OK and c_seen + lost_s < at and h.clstr_ip:
            at = c_seen + lost_s
        return at


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))
