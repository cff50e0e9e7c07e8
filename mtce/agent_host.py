"""One host's mtcAlive state as the agent sees it, a pure state machine (`HostMonitor`).

Events plus `now` (monotonic seconds) in, actions out (agent_decisions.py: `Send`, `RaiseAlarm`,
`ClearAlarm`, `Log`), carried out by the wiring (agent.py). Here: availability and the
offline audit (docs/protocol.md §5.4), per-network ok/lost, what a valid mtcAlive says of the
host; with its parts: sequence numbers (agent_seqs.py, docs/protocol.md §6), the pxeboot monitor
(agent_pxeboot.py, docs/protocol.md §5.5) and the locked/unlocked correction (agent_locks.py,
docs/protocol.md §5.4 "Locked correction"). All hosts:
agent_table.HostTable. No socket, select, time, os or subprocess: the clock comes in as `now`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from mtce.agent_decisions import ALARM_SEVERITY, INF, NO_ACTIONS, Facts, Settings
from mtce.agent_locks import LOCKED_BIT, LockCorrection
from mtce.agent_presence import Presence
from mtce.agent_pxeboot import PxebootMonitor, PxeStage
from mtce.agent_pxeboot_gate import PxebootGate
from mtce.agent_seqs import SEQ_HALF, SEQ_MASK, NetTrack
from mtce.decisions import Log
from mtce.states import Admin, Availability, Net, NetState, failure_flag_names

if TYPE_CHECKING:   # config reads files; only its types are needed here
    from mtce.config import HostEntry

class TableLinks:
    """What the agent's table keeps on each host it holds (agent_table.py,
    agent_deadlines.py): `wake`, called when the host's deadline may be earlier now; the
    table's sets of hosts in an offline audit (`auditing`) and with unlogged sequence events
    (`seq_pending`); its multi-node failure avoidance (`mnfa`, agent_mnfa.Mnfa), told of each
    network's loss and return; the host's live entry in the deadline buckets (`tok`, due `at`).
    A host outside any table has the unlinked default."""

    __slots__ = ("wake", "auditing", "seq_pending", "mnfa", "tok", "at")

    def __init__(self, wake: Callable[["HostMonitor"], None] | None = None,
                 auditing: set | None = None, seq_pending: set | None = None, mnfa=None):
        self.wake, self.auditing, self.seq_pending = wake, auditing, seq_pending
        self.mnfa = mnfa
        self.tok = -1
        self.at = INF


class HostMonitor:
    """One host: availability, per-network tracking, the offline audit, the lock correction,
    and the gate of its pxeboot monitor (`self.pxe`).

    Every event method takes `now` and returns a list of actions, or an empty tuple.
    """

    def __init__(self, entry: "HostEntry", settings: Settings, now: float,
                 pxeboot_ip: str = "", facts: Facts | None = None):
        self.entry = entry
        self.hostname: str = entry.hostname
        self.settings = settings
        self.facts = facts or Facts()
        self.admin = Admin(entry.administrative)
        self.admin_source = "inventory"          # or "operator" (mtce lock/unlock, kept)
        self.learned_clstr_ip = ""               # from mtcAlive, when the inventory has none
        self.reported_personality = ""           # of the last valid mtcAlive
        self.reported_pxeboot_ip = ""            # of the last valid mgmt/cluster-host one
        self.flags = 0                           # parm[2] of the last valid mtcAlive
        self.availability = Availability.OFFLINE
        self.pxeboot_ip = pxeboot_ip or ""
        # The client's pxeboot_mtcAlive feature (docs/contract.md §8 "Revision"): None until a ready
        # event tells (agent start), then whether the latest one offered it.
        self.pxeboot_feature: bool | None = None
        self.pxeboot_supported = False           # the monitor applies (announced or inferred)
        self.client_ready = False
        self.restored_online = False             # online to the agent before this one (restore)
        self.last_ack: dict = {}                 # (cmd, net) -> now of the last ACK
        self.nets = tuple(NetTrack(n) for n in Net)
        self.pxe = PxebootMonitor(self.hostname, settings, now, self.facts)
        # online/offline (docs/protocol.md §5.4, docs/contract.md §8)
        self.presence = Presence(self, now)
        self.gate = PxebootGate(self)           # whether and how the pxeboot monitor runs
        # locked/unlocked correction (docs/protocol.md §5.4 "Locked correction")
        self._lock_bit = LOCKED_BIT if self.admin is Admin.LOCKED else 0
        self.locks = LockCorrection()
        self._steady = False
        self.links = TableLinks()
        self.next_at = INF                       # next_deadline() as the last audit left it

    @property
    def facts(self) -> Facts:
        return self._facts

    @facts.setter
    def facts(self, facts: Facts) -> None:
        """The table's shared facts, the pxeboot monitor's as well (its `grid_s`)."""
        self._facts = facts
        pxe = self.__dict__.get("pxe")
        if pxe is not None:
            pxe.facts = facts

    # -- derived state ---------------------------------------------------------------------

    @property
    def pxeboot_monitored(self) -> bool:
        """Whether the pxeboot monitor applies at all (agent_pxeboot_gate)."""
        return self.gate.monitored()

    @property
    def clstr_ip(self) -> str:
        """The inventory's cluster-host address, or the one the host's mtcAlive reported."""
        return self.entry.cluster_host_ip or self.learned_clstr_ip

    def provisioned(self, net: Net) -> bool:
        if net is Net.CLSTR:
            return bool(self.clstr_ip)
        if net is Net.PXEBOOT:
            return self.pxeboot_monitored
        return True

    def net_state(self, net: Net, now: float | None = None) -> NetState:
        """ok / lost / unprovisioned as `mtce hosts --json` shows it (docs/contract.md §8)."""
        if type(net) is not Net:
            net = Net(net)
        if not self.provisioned(net):
            return NetState.UNPROVISIONED
        if net is Net.PXEBOOT:
            return self.gate.net_state(now)
        return self.nets[net].state

    def update_steady(self) -> None:
        self._steady = (self.availability is Availability.ONLINE and not self.presence.audit.running
                        and self.locks.correcting is None)

    def wake(self) -> None:
        """The table's hook: this host's deadline may be earlier now."""
        wake = self.links.wake
        if wake is not None:
            wake(self)

    # -- mtcAlive -----------------------------------------------------------------------------

    def on_mtcalive(self, net: Net, seq: int, flags: int, uptime: int, now: float):
        """One valid mtcAlive from this host on `net` (parm[3] seq, parm[2] flags, parm[0]).

        The in-order message of a steady host returns the empty tuple without building
        anything: this is the 50,000 messages a second path.
        """
        n = self.nets[net]
        n.last_seen = now
        n.count += 1
        self.flags = flags
        if n.ok and self._steady and (flags & LOCKED_BIT) == self._lock_bit:
            ahead = (seq - n.last_seq) & SEQ_MASK
            if ahead == 1:
                n.last_seq = seq
                return NO_ACTIONS
            if 1 < ahead < SEQ_HALF and n.counted_gap(seq, now):
                return NO_ACTIONS
        return self._mtcalive_slow(n, seq, flags, uptime, now)

    def _mtcalive_slow(self, n: NetTrack, seq: int, flags: int, uptime: int, now: float) -> list:
        out: list = []
        h = self.hostname
        was_ok = n.ok
        wake = self.presence.heard(now, n.net, seq, out)   # online: the monitor is not held
        if n.take(seq, uptime, now, h, self.facts.seq_budget, self.settings.debug, out) and \
                self.links.seq_pending is not None:
            self.links.seq_pending.add(self)
        if not was_ok and n.net is not Net.PXEBOOT:
            n.back_ok()
            mnfa = self.links.mnfa
            if mnfa is not None:
                mnfa.back(self, n.net, now, out)
        if n.net is Net.PXEBOOT and self.gate.heard(now, out):
            wake = True
        self.locks.check(self, flags, now, out)
        self.update_steady()
        if wake:
            self.wake()
        return out

    def sequence_summaries(self, now: float, out: list, budget, totals: list) -> bool:
        """The summaries of windows that ended; True while one is still open."""
        pending = False
        for n in self.nets:
            pending |= n.window_summary(self.hostname, now, out, budget, totals)
        return pending

    def learn_clstr_ip(self, ip: str) -> None:
        """A cluster-host address from a valid mtcAlive, the inventory having none (the
        original's `set_clstr_hostaddr`; HostTable.on_identity decides)."""
        self.learned_clstr_ip = ip
        self._reset_net(Net.CLSTR)
        self.wake()

    # -- other events ---------------------------------------------------------------------------

    def restore(self, online: bool | None, pxeboot_feature: bool | None, now: float) -> None:
        """What the agent before this one knew (state_dir, docs/contract.md §8 "Takeover"):
        a host it had online is online from `now`, its networks `ok` for their windows, so
        one full detection window passes before it can be declared offline or lost; the
        feature its client's latest ready event offered stands until the next one."""
        if online:
            self.presence.go_online(now)
            self.restored_online = True
            self.update_steady()
        self.gate.restore(pxeboot_feature, now)

    def on_ready(self, features: list | None, now: float, net: Net = Net.MGMT):
        """The mtcClient ready event; `features` None for an older client (docs/protocol.md §3,
        agent_pxeboot_gate)."""
        return self.gate.on_ready(features, now, net)

    def on_ack(self, cmd: int, net: Net, now: float):
        """A command ACK from this host; kept for the command retry logic elsewhere."""
        self.last_ack[(cmd, net)] = now
        return NO_ACTIONS

    def set_admin(self, state: Admin | str, now: float, source: str = "inventory"):
        """Lock or unlock, by the inventory or by the operator (`source`). Locking clears
        200.003 and holds the monitor."""
        state = Admin(state)
        self.admin_source = source
        if state is self.admin:
            return NO_ACTIONS
        out = [Log("info", f"{self.hostname} administrative state {self.admin.value} -> "
                           f"{state.value} ({source})")]
        self.admin = state
        self._lock_bit = LOCKED_BIT if state is Admin.LOCKED else 0
        self.locks.reset()
        self.pxe.to_start(now)
        if state is Admin.LOCKED:
            self.pxe.clear_alarm(out)        # docs/protocol.md §5.5: no 200.003 if locked
            if self.links.mnfa is not None:
                self.links.mnfa.forget(self, out)
        else:
            self.wake()
        self.update_steady()
        return out

    def set_pxeboot_ip(self, ip: str | None, now: float):
        """The host's pxeboot address from dnsmasq.hosts (or learned); "" or None: none."""
        return self.gate.set_ip(ip, now)

    def update_entry(self, entry: "HostEntry", now: float):
        """A changed inventory entry. Counters stay unless that network's address changed."""
        old, self.entry = self.entry, entry
        out: list = []
        if entry.mgmt_ip != old.mgmt_ip:
            self._reset_net(Net.MGMT)
        if entry.cluster_host_ip != old.cluster_host_ip:
            self._reset_net(Net.CLSTR)
            self.learned_clstr_ip = ""
        if entry.administrative != old.administrative:
            # docs/contract.md §4: the file's value applies when that field itself changes; another
            # key's change leaves an operator's lock or unlock alone.
            out.extend(self.set_admin(entry.administrative, now, "inventory"))
        self.wake()
        return out

    def transitions(self, net: Net) -> tuple[int, int]:
        """(ok -> lost, lost -> ok) changes of `net` so far: flapping shows before it is an
        alarm (pxeboot: the monitor's declared losses and returns)."""
        if net is Net.PXEBOOT:
            return self.pxe.went_lost, self.pxe.went_ok
        n = self.nets[net]
        return n.went_lost, n.went_ok

    def _reset_net(self, net: Net) -> None:
        self.nets[net].reset()

    def restore_alarm(self, now: float):
        """200.003 found active at agent start (agent_pxeboot_gate)."""
        return self.gate.restore_alarm(now)

    def note_stall(self, now: float) -> None:
        """The loop was stalled: give every window a fresh start instead of blaming the host."""
        if self.presence.note_stall(now):
            self.update_steady()
        self.pxe.restart_window(now)

    # -- audit ----------------------------------------------------------------------------------

    def audit(self, now: float):
        """Run whatever is due at `now`: offline audit, lost windows, the pxeboot monitor.
        Leaves in `next_at` what `next_deadline()` would then say (computed once)."""
        if self._steady:
            # The common audit (600 a second at 2,000 hosts): a steady host heard in time
            # whose pxeboot window is still open; what the general path would find, without
            # its calls.
            at = self.presence.deadline()
            if now < at:
                pxe = self.pxe
                if self.admin is not Admin.LOCKED and self.pxeboot_monitored:
                    if pxe.stage is PxeStage.WAIT and now < pxe.timer:
                        self.next_at = pxe.timer if pxe.timer < at else at
                        return NO_ACTIONS
                elif pxe.stage is PxeStage.START and not pxe.alarm:
                    self.next_at = at
                    return NO_ACTIONS
                # Presence has nothing due (`check` would return `at` and change nothing):
                # the pxeboot monitor's turn.
                return self.audit_all(now, at)
        return self.audit_all(now)

    def audit_all(self, now: float, presence_at: float | None = None):
        """`audit` without its shortcut for the common case; `presence_at`, when given, is
        what presence's `check` would return at `now` with nothing due."""
        out: list = []
        if presence_at is not None:
            at = presence_at
        else:
            at = self.presence.check(now, out) if self.availability is Availability.ONLINE \
                else INF
        self.gate.audit(now, out)
        self.next_at = self.gate.deadline(at)
        return out if out else NO_ACTIONS

    # -- scheduling and reporting -------------------------------------------------------------

    def next_deadline(self) -> float:
        """The earliest `now` at which `audit` has something to do (INF: nothing until an event)."""
        return self.gate.deadline(
            self.presence.deadline() if self.availability is Availability.ONLINE else INF)

    def pxeboot_deadline(self, at: float) -> float:
        """`at`, or the pxeboot monitor's deadline if that is earlier (agent_pxeboot_gate)."""
        return self.gate.deadline(at)


def host_json(host: HostMonitor, now: float) -> dict:
    """The docs/contract.md §5 host object, plus `pxeboot_monitor`, `alarm`, `client_ready`."""
    e = host.entry
    networks = {}
    for n in host.nets:
        networks[n.net.key] = {
            "state": host.net_state(n.net, now).value,
            "last_seq": n.last_seq,
            "missed": n.missed,
            "out_of_sequence": n.out_of_sequence,
            "last_seen_s": None if n.last_seen is None else round(now - n.last_seen, 3),
            "received": n.count,
        }
    networks[Net.PXEBOOT.key].update(host.pxe.network_json())
    audit = None
    if host.presence.audit.running:
        audit = {"sends": host.presence.audit.sends,
                 "threshold": host.settings.offline_threshold}
    mnfa = host.links.mnfa
    return {
        "hostname": host.hostname,
        "personality": e.personality,
        "administrative": host.admin.value,
        "administrative_source": host.admin_source,
        "availability": host.availability.value,
        "mgmt_ip": e.mgmt_ip,
        "cluster_host_ip": host.clstr_ip,
        "cluster_host_ip_source": ("inventory" if e.cluster_host_ip else
                                   "mtcAlive" if host.learned_clstr_ip else None),
        "reported_personality": host.reported_personality or None,
        "pxeboot_ip": host.pxeboot_ip,
        "networks": networks,
        "pxeboot_monitor": {"monitored": host.pxeboot_monitored,
                            "supported": host.pxeboot_supported,
                            "feature": host.pxeboot_feature,
                            **host.pxe.to_json()},
        "alarm": ALARM_SEVERITY if host.pxe.alarm else None,
        "failure_flags": failure_flag_names(host.flags),
        "client_ready": host.client_ready,
        "offline_audit": audit,
        "mnfa": mnfa.held_nets(host) if mnfa is not None else [],
    }
