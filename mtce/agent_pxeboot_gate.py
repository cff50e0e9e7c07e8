"""Whether and how one host's pxeboot monitor runs (`PxebootGate`, docs/protocol.md §5.5, §4.1):
its client's pxeboot_mtcAlive feature (from ready events, or inferred from a pxeboot mtcAlive
that comes first), its pxeboot address, its lock and availability, which hold the monitor; what
its pxeboot state reads (docs/contract.md §8 "Network state"); and what its declared loss and
return tell the table's multi-node failure avoidance (agent_mnfa). As agent_presence.Presence,
it holds the rules and its host (agent_host.HostMonitor) the state: `pxe` (the monitor),
`pxeboot_ip`, `pxeboot_feature`, `pxeboot_supported`, `admin`, `availability`. Pure.
"""

from __future__ import annotations

from mtce.agent_decisions import ALARM_SEVERITY, Remember, Send
from mtce.agent_pxeboot import PXEBOOT_MISS_THRESHOLD, PxeStage
from mtce.decisions import Log
from mtce.states import FEATURE_PXEBOOT_MTCALIVE, Admin, Availability, Cmd, Net, NetState

_LOCKED, _OFFLINE, _WAIT = Admin.LOCKED, Availability.OFFLINE, PxeStage.WAIT


class PxebootGate:
    """The gate of `host`'s pxeboot monitor."""

    __slots__ = ("host",)

    def __init__(self, host):
        self.host = host
        host.pxe.on_loss = self.loss

    def monitored(self) -> bool:
        """Whether the pxeboot monitor applies at all (docs/protocol.md §5.5, §4.1)."""
        h = self.host
        return h.pxeboot_supported and bool(h.pxeboot_ip) and h.settings.pxeboot_here

    def held(self) -> bool:
        """Locked or disabled (offline here) holds the monitor in START; counters stay."""
        h = self.host
        return h.admin is Admin.LOCKED or h.availability is Availability.OFFLINE

    def net_state(self, now: float | None) -> NetState:
        """ok or lost, the monitor applying (docs/contract.md §8 "Network state")."""
        h = self.host
        track = h.nets[Net.PXEBOOT]
        if self.held() and now is not None:
            # A held monitor (locked, offline) declares no loss; what arrives still decides:
            # lost after as long a silence as the monitor takes to declare one.
            seen = track.last_seen
            quiet_s = PXEBOOT_MISS_THRESHOLD * h.settings.pxeboot_window_s
            return NetState.OK if seen is not None and now - seen < quiet_s else NetState.LOST
        # Lost from the monitor's declared loss to its next good window (the alarm has its
        # own clear debounce), and, never heard since the agent started, once a window has
        # passed without one (not at once: "Takeover").
        if h.pxe.lost or (not track.received and h.pxe.miss > 0):
            return NetState.LOST
        return NetState.OK

    # -- events ----------------------------------------------------------------------------

    def heard(self, now: float, out: list) -> bool:
        """A valid pxeboot mtcAlive; True when the monitor starts because of it."""
        h = self.host
        if h.pxeboot_supported or h.pxeboot_feature is False:
            return False
        # Feature unknown (no ready event since the agent started) or known from the agent
        # before (state_dir, `restore`): monitored from its first pxeboot mtcAlive, not ~60 s
        # later at its next ready event (the original waits); while unknown, 200.003 waits for
        # the announcement (agent_pxeboot.may_alarm). A ready event without the feature wins
        # (on_ready).
        h.pxeboot_supported = True
        h.pxe.to_start(now)
        out.append(Log("info", f"{h.hostname} pxeboot mtcAlive received before a ready event ; "
                               f"monitoring pxeboot"))
        return True

    def restore(self, feature: bool | None, now: float) -> None:
        """The feature its client's latest ready event offered, as the agent before this one
        kept it (state_dir): it stands until the next ready event."""
        h = self.host
        if feature is not None:
            h.pxeboot_feature = h.pxe.may_alarm = feature
        if feature:
            # Monitored from the start, as after its ready event: a loss in progress is seen
            # within a window or two, not at its client's next ready event.
            h.pxeboot_supported = True
            h.pxe.to_start(now)
            h.wake()

    def on_ready(self, features: list | None, now: float, net: Net) -> list:
        """The mtcClient ready event; `features` None for an older client (docs/protocol.md §3)."""
        out: list = []
        h = self.host
        name, s = h.hostname, h.settings
        supported = features is not None and FEATURE_PXEBOOT_MTCALIVE in features
        if net is Net.PXEBOOT and not supported:
            # docs/contract.md §8 "Revision": clients send a ready event over pxeboot only
            # since 649e94c, which gave it the feature list: one without it there is not the
            # host's client, and must not turn its monitor (and an active alarm) off.
            out.append(Log("warning", f"{name} ready event without pxeboot_mtcAlive over "
                                      f"Pxeboot network ; not from its client, ignored",
                           "change", (name, "ready-pxeboot")))
            return out
        if supported is not h.pxeboot_feature:
            out.append(Remember(name, "pxeboot_feature", supported))
        h.pxeboot_feature = h.pxe.may_alarm = supported
        if not h.client_ready:
            h.client_ready = True
            out.append(Log("info", f"{name} mtcClient ready"
                                   + (" ; with pxeboot mtcAlive support" if supported else "")))
        if supported and not h.pxeboot_supported:
            h.pxeboot_supported = True
            h.pxe.to_start(now)
            h.wake()
        elif not supported:
            # Unlike the original's sticky flag: a client that no longer offers the feature
            # (downgrade) is no longer monitored, and its alarm could never clear: clear it.
            h.pxeboot_supported = False
            h.pxe.to_start(now)
            h.pxe.clear_alarm(out)
        if supported and s.pxeboot_provisioned and not s.simplex and h.pxeboot_ip:
            out.append(Send(name, Net.PXEBOOT, Cmd.REQ_MTCALIVE))
        return out

    def set_ip(self, ip: str | None, now: float) -> list:
        """The host's pxeboot address from dnsmasq.hosts (or learned); "" or None: none."""
        h = self.host
        ip = ip or ""
        old = h.pxeboot_ip
        if ip == old:
            return []
        name = h.hostname
        h.pxeboot_ip = ip
        if not old:
            out = [Log("info", f"{name} pxeboot ip set to {ip}")]
        elif not ip:
            out = [Log("info", f"{name} pxeboot ip removed (was {old})")]
        else:
            out = [Log("info", f"{name} pxeboot ip changed from {old} to {ip}")]
            h.nets[Net.PXEBOOT].reset()
        h.pxe.to_start(now)
        h.wake()
        return out

    def restore_alarm(self, now: float) -> list:
        """200.003 found active at agent start: resume in the loss state (docs/protocol.md §5.5)."""
        h = self.host
        s = h.settings
        h.pxe.restore()
        out = [Log("info", f"{h.hostname} found mtcAlive alarm ; loaded {ALARM_SEVERITY}")]
        if s.simplex or not s.pxeboot_provisioned or h.admin is Admin.LOCKED:
            # The monitor never runs here (simplex, no pxeboot), or locked hosts carry no
            # 200.003 (docs/protocol.md §5.5): clear now rather than keep a stale alarm.
            h.pxe.clear_alarm(out)
        h.wake()
        return out

    # -- the audit -----------------------------------------------------------------------------

    def audit(self, now: float, out: list) -> None:
        """Run the monitor if it applies and is not held; a loss it declares and a return it
        sees go to the table's MNFA."""
        h = self.host
        pxe = h.pxe
        monitored = self.monitored()
        if not monitored or self.held():
            if not monitored and h.links.mnfa is not None:
                h.links.mnfa.forget(h, out, (Net.PXEBOOT,))     # it cannot come back there
            if h.admin is Admin.LOCKED:
                pxe.clear_alarm(out)
            if pxe.stage is not PxeStage.START:
                pxe.to_start(now)
            return
        pxe.run(now, h.nets[Net.PXEBOOT], out)
        mnfa = h.links.mnfa
        if mnfa is not None and pxe.clean:
            mnfa.back(h, Net.PXEBOOT, now, out)

    def loss(self, now: float, out: list) -> None:
        """The monitor declared a loss (before it decides 200.003): the table's MNFA may hold
        the host now, joining it (a host locked and unlocked while held, its loss count kept)."""
        mnfa = self.host.links.mnfa
        if mnfa is not None:
            mnfa.lost(self.host, Net.PXEBOOT, now, out)

    def deadline(self, at: float) -> float:
        """`at`, or the monitor's deadline if that is earlier."""
        h = self.host
        if h.pxeboot_supported and h.pxeboot_ip and h.settings.pxeboot_here and \
                h.admin is not _LOCKED and h.availability is not _OFFLINE:   # monitored, not held
            pxe = h.pxe
            pxe = pxe.timer if pxe.stage is _WAIT else pxe.start_at          # pxe.deadline()
            return pxe if pxe < at else at
        if h.pxe.alarm and h.admin is Admin.LOCKED:
            return min(at, h.pxe.start_at)
        return at
