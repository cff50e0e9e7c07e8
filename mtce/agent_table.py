"""Every host the agent maintains (`HostTable`): found by name and by any of its addresses,
applied an inventory as a diff, asked for the summaries of sequence events, audited when due
(agent_deadlines.Deadlines). The per-host state machine is agent_host.HostMonitor. Pure, as
agent_host.py.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Callable, Iterable

from mtce.agent_deadlines import Deadlines
from mtce.agent_decisions import INF, NO_ACTIONS, ClearAlarm, Facts, Send, Settings
from mtce.agent_host import HostMonitor, TableLinks, host_json
from mtce.agent_mnfa import Mnfa
from mtce.agent_seqs import SEQ_LOG_WINDOW_S
from mtce.decisions import Log
from mtce.states import ALARM_MNFA, ALARM_MTCALIVE, Admin, Cmd, Net

if TYPE_CHECKING:
    from mtce.config import Inventory

_INVENTORY_FIELDS = ("personality", "mgmt_mac", "mgmt_ip", "cluster_host_ip", "administrative")


class HostTable:
    """Every maintained host, by name and by address, audited from buckets of deadlines.

    Hosts tell the table when their deadline may have moved earlier (going online, unlock,
    ready...), so `audit` only visits hosts that are due. Later-moving deadlines need no
    notice: a stale entry just costs one idle `audit` visit (lazy invalidation).
    """

    def __init__(self, settings: Settings,
                 host_factory: Callable[..., HostMonitor] = HostMonitor, agent_host: str = ""):
        self.settings = settings
        self.mnfa = Mnfa(settings, agent_host)   # multi-node failure avoidance (agent_mnfa)
        self.hosts: dict[str, HostMonitor] = {}
        self._factory = host_factory
        self.by_addr: dict[str, HostMonitor] = {}
        self._claims: dict[str, list[HostMonitor]] = {}
        self.deadlines = Deadlines()          # when each host is next due (agent_deadlines)
        self._woken = self.deadlines.woken
        self._auditing: set[HostMonitor] = set()     # hosts in an offline audit (few)
        self._seq_pending: set[HostMonitor] = set()  # hosts with sequence events not logged
        self.facts = Facts()

    def __len__(self) -> int:
        return len(self.hosts)

    def __iter__(self):
        return iter(self.hosts.values())

    def __contains__(self, hostname: str) -> bool:
        return hostname in self.hosts

    def get(self, hostname: str) -> HostMonitor | None:
        return self.hosts.get(hostname)

    def lookup(self, addr: str) -> HostMonitor | None:
        """The host owning a source address (mgmt, cluster-host or pxeboot)."""
        host = self.by_addr.get(addr)
        if host is None and ("%" in addr or addr.startswith("::ffff:")):
            host = self.by_addr.get(addr.split("%", 1)[0].removeprefix("::ffff:"))
        return host

    # -- address index: first claimant wins, later ones are remembered for when it leaves --

    def _claim(self, addr: str, host: HostMonitor, out: list) -> None:
        if not addr:
            return
        claims = self._claims.setdefault(addr, [])
        if host in claims:
            return
        if claims:
            out.append(Log("warning", f"{host.hostname} address {addr} is also "
                                      f"{claims[0].hostname}'s ; keeping {claims[0].hostname}"))
        claims.append(host)
        self.by_addr[addr] = claims[0]

    def _unclaim(self, addr: str, host: HostMonitor) -> None:
        claims = self._claims.get(addr)
        if not addr or not claims or host not in claims:
            return
        claims.remove(host)
        if claims:
            self.by_addr[addr] = claims[0]
        else:
            del self._claims[addr]
            del self.by_addr[addr]

    @staticmethod
    def _addrs(host: HostMonitor) -> tuple:
        return (host.entry.mgmt_ip, host.clstr_ip, host.pxeboot_ip)

    # -- inventory ----------------------------------------------------------------------------

    def apply_inventory(self, inventory: "Inventory", now: float) -> tuple[list, list, list, list]:
        """Make the table match `inventory`: (added, removed, changed, actions)."""
        added, removed, changed, out = [], [], [], []
        initial = not self.hosts
        new = inventory.hosts
        for name in [n for n in self.hosts if n not in new]:
            host = self.hosts.pop(name)
            for addr in self._addrs(host):
                self._unclaim(addr, host)
            host.presence.end_audit()
            self.mnfa.forget(host, out)
            host.links = TableLinks()
            self._seq_pending.discard(host)
            removed.append(name)
            out.append(Log("info", f"{name} removed from inventory"))
            host.pxe.clear_alarm(out)
        for name, entry in new.items():
            host = self.hosts.get(name)
            if host is None:
                host = self._factory(entry, self.settings, now)
                host.facts = self.facts
                self.hosts[name] = host
                host.links = TableLinks(self._woken.append, self._auditing, self._seq_pending,
                                        self.mnfa)
                self._woken.append(host)
                for addr in self._addrs(host):
                    self._claim(addr, host, out)
                added.append(name)
                if not initial:
                    out.append(Log("info", f"{name} added to inventory ({entry.personality})"))
                continue
            old = host.entry
            diffs = [f"{k} {getattr(old, k) or 'none'} -> {getattr(entry, k) or 'none'}"
                     for k in _INVENTORY_FIELDS if getattr(old, k) != getattr(entry, k)]
            if not diffs:
                continue
            changed.append(name)
            out.append(Log("info", f"{name} inventory change: " + ", ".join(diffs)))
            for addr in self._addrs(host):
                self._unclaim(addr, host)
            out.extend(host.update_entry(entry, now))
            for n in host.nets:
                n.text_prefix = None
            for addr in self._addrs(host):
                self._claim(addr, host, out)
        if initial and added:
            out.append(Log("info", f"inventory: {len(added)} hosts"))
        return added, removed, changed, out

    def on_identity(self, host: HostMonitor, personality: str, cluster_host_ip: str | None,
                    now: float) -> list:
        """What a valid mtcAlive says of its host (docs/protocol.md §1.3, §5.2): its personality,
        and, where the agent has a cluster-host network, its cluster-host address, learned when
        the inventory has none (the original's `set_clstr_hostaddr`); a learned address joins
        the address index. Only when the text changed: the hot path does not come here."""
        out: list = []
        h = host.hostname
        if personality != host.reported_personality:
            host.reported_personality = personality
            if personality != host.entry.personality:
                out.append(Log("info", f"{h} mtcAlive reports personality '{personality}' ; "
                                       f"the inventory says '{host.entry.personality}'",
                               "change", (h, "personality")))
        ip = cluster_host_ip or ""
        if not ip or ip == "none" or ip == host.clstr_ip:
            return out
        if host.entry.cluster_host_ip:
            out.append(Log("warning", f"{h} mtcAlive reports cluster_host_ip {ip} ; keeping "
                                      f"the inventory's {host.entry.cluster_host_ip}", "change",
                           (h, "clstr-ip")))
            return out
        try:
            ip = str(ipaddress.ip_address(ip))      # the original requires an IP address
        except ValueError:
            out.append(Log("warning", f"{h} mtcAlive reports cluster_host_ip {ip[:64]!r}, not "
                                      f"an IP address ; ignored", "change", (h, "clstr-ip")))
            return out
        if ip == host.clstr_ip:
            return out
        # A state change, but one the host's own mgmt address can repeat at will: throttled.
        out.append(Log("info", f"{h} cluster address provision change from "
                               f"{host.learned_clstr_ip or 'none'} to {ip}", "change",
                       (h, "clstr-change")))
        old = host.clstr_ip
        host.learn_clstr_ip(ip)
        self._unclaim(old, host)
        self._claim(host.clstr_ip, host, out)
        return out

    def sequence_summaries(self, now: float) -> list:
        """The summary lines of sequence-event windows that ended (the agent asks once a
        minute, so that no count waits for a next event to be told)."""
        out: list = []
        totals = [0, 0, 0, 0]
        for host in list(self._seq_pending):
            if not host.sequence_summaries(now, out, self.facts.seq_budget, totals):
                self._seq_pending.discard(host)
        if totals[0]:
            out.append(Log("warning", f"{totals[0]} more sequence events of {totals[3]} host "
                                      f"networks not logged in {SEQ_LOG_WINDOW_S:g} secs "
                                      f"(missed {totals[1]} mtcAlive msgs ; {totals[2]} "
                                      f"out-of-sequence) ; counts in mtce hosts"))
        return out

    def forget_texts(self) -> None:
        """A reload may change what makes an mtcAlive valid: every text is parsed again."""
        for host in self.hosts.values():
            for n in host.nets:
                n.text_prefix = None

    def set_pxeboot_ip(self, hostname: str, ip: str | None, now: float):
        """A host's pxeboot address from dnsmasq.hosts; unknown hosts are ignored."""
        host = self.hosts.get(hostname)
        if host is None or (ip or "") == host.pxeboot_ip:
            return NO_ACTIONS
        out: list = []
        self._unclaim(host.pxeboot_ip, host)
        out.extend(host.set_pxeboot_ip(ip, now))
        self._claim(host.pxeboot_ip, host, out)
        return out

    def restore_alarms(self, hostnames: Iterable[str], now: float) -> list:
        """Active 200.003 alarms found at start; one for a host no longer listed is cleared."""
        out: list = []
        for name in hostnames:
            host = self.hosts.get(name)
            if host is None:
                out.append(Log("info", f"{name} not in inventory ; clearing 'mtcAlive' alarm "
                                       f"({ALARM_MTCALIVE})"))
                out.append(ClearAlarm(name, ALARM_MTCALIVE))
            else:
                out.extend(host.restore_alarm(now))
        return out

    def restore_mnfa(self, network: str, hostnames: Iterable[str], age_s: float, now: float,
                     raised_on: str = "") -> list:
        """An mtce.mnfa alarm found at start (agent_mnfa.Mnfa.restore), raised on `raised_on`
        (this agent's host, or the other controller's before a takeover): its hosts still in
        the inventory are held again; one for an unknown network, or with none of them left, is
        cleared."""
        net = next((n for n in Net if n.key == network), None)
        names = list(dict.fromkeys(hostnames))
        # Only hosts that can come back there and carry no alarm of their own: unlocked, and on
        # pxeboot with a pxeboot address and no 200.003.
        hosts = [self.hosts[h] for h in names if h in self.hosts
                 and self.hosts[h].admin is not Admin.LOCKED
                 and (net is not Net.PXEBOOT or (self.hosts[h].pxeboot_ip
                                                 and not self.hosts[h].pxe.alarm))]
        if net is not None and self.mnfa.nets[net].held is not None:
            return [Log("warning", f"a second {ALARM_MNFA} for {network} found at start (raised "
                                   f"on {raised_on}) ; clearing it"),
                    ClearAlarm(raised_on or self.mnfa.agent_host, ALARM_MNFA, network)]
        if net is None or not hosts or not self.settings.mnfa_threshold:
            return [Log("info", f"MNFA ({network}) found at start without its hosts, or "
                                f"mnfa_threshold 0 ; clearing {ALARM_MNFA}"),
                    ClearAlarm(raised_on or self.mnfa.agent_host, ALARM_MNFA, network)]
        self.mnfa.restore(net, hosts, age_s, now, raised_on)
        out = [Log("info", f"MNFA ({network}) found at start ; {len(hosts)} hosts held until "
                           f"they are back")]
        if len(hosts) != len(names):
            out.append(self.mnfa.alarm_of(net))
        return out

    def apply_settings(self, settings: Settings, now: float) -> list:
        """New timers after a reload; every host is rescheduled; MNFA turned off ends."""
        self.settings = settings
        out: list = []
        self.mnfa.reconfigure(settings, out)
        for host in self.hosts.values():
            host.settings = host.pxe.settings = settings
            self._woken.append(host)
        return out

    # -- scheduling (agent_deadlines.Deadlines) -------------------------------------------------

    def refresh(self, until: float) -> float:
        """Deadlines.refresh: re-time the hosts due by `until`; the earliest presence deadline."""
        return self.deadlines.refresh(until)

    def next_deadline(self) -> float:
        """When `audit` next has work (INF: none until an event)."""
        return min(self.deadlines.next_deadline(), self.mnfa.deadline())

    def audit(self, now: float) -> list:
        """Audit the hosts that are due at `now`, then the MNFA timeouts; their actions."""
        out = self.deadlines.audit(now)
        if now >= self.mnfa.deadline():
            self.mnfa.audit(now, out)
        return out

    @property
    def auditing(self) -> bool:
        """Whether a host is in an offline audit."""
        return bool(self._auditing)

    def next_offline_at(self) -> float:
        """The earliest moment a host in an offline audit is due to go offline (INF: none).

        The agent audits on an offline_period grid; it also wakes at this moment, so that
        offline is declared on time and not up to one grid step late."""
        return min((h.presence.audit.offline_at for h in self._auditing), default=INF)

    def takeover_requests(self) -> list:
        """docs/contract.md §8 "Takeover": an agent that starts (a restart, or the other controller
        taking over) asks every host for an mtcAlive on each of its networks, pxeboot
        included, so that clients learn this controller's pxeboot address at once instead of
        at their next ready event; the first answers re-baseline the sequence numbers."""
        s = self.settings
        out: list = []
        for h in self.hosts.values():
            pxeboot = h.pxeboot_ip and s.pxeboot_provisioned and not s.simplex
            if not pxeboot:                 # a pxeboot request brings its own mgmt one
                out.append(Send(h.hostname, Net.MGMT, Cmd.REQ_MTCALIVE))
            if h.clstr_ip:
                out.append(Send(h.hostname, Net.CLSTR, Cmd.REQ_MTCALIVE))
            if pxeboot:
                out.append(Send(h.hostname, Net.PXEBOOT, Cmd.REQ_MTCALIVE))
        if self.hosts:
            out.append(Log("info", f"agent start: mtcAlive request sent to {len(self.hosts)} "
                                   f"hosts"))
        return out

    def note_stall(self, gap_s: float, now: float) -> list:
        """The loop noticed it was stalled `gap_s` seconds: fresh windows for every host."""
        for host in self.hosts.values():
            host.note_stall(now)
            self._woken.append(host)
        return [Log("warning", f"main loop stalled for {gap_s:.1f} secs ; restarting the "
                               f"mtcAlive audit windows of {len(self.hosts)} hosts")]

    def to_json(self, now: float) -> list:
        return [host_json(host, now) for host in self.hosts.values()]
