"""What the agent does with each datagram it receives (docs/protocol.md §1.3, §3): decode,
find the host by source address, validate an mtcAlive, and hand it to the host table; ready
events, ACKs, and everything that must be dropped, counted and logged within the noise
budget. The decisions about hosts are agent_host.py's; the actions they return go to `run`.
"""

from __future__ import annotations

from mtce import alive
from mtce.decisions import Log
from mtce.states import Cmd, Net, cmd_name

# The hot path's names, looked up once (Inbox.on_raw).
_FIELDS_AT, _MATCHES, _PXEBOOT = alive.mtcalive_fields_at, alive.text_matches_at, Net.PXEBOOT


class Inbox:
    """The agent's receive path. Its collaborators: the host `table`, the `counters`, the
    `clock`, the `wire` (signature checks); `say` logs a line it decides by the one rule
    (logs.Lines: a dropped datagram's line is "noise", throttled per cause); `run` carries
    out the actions the table returns, `load_pxeboot` looks at dnsmasq.hosts again,
    `has_clstr` says whether this controller has a cluster-host network. The `outbox`
    (operator commands waiting for an ACK or an answer) is set by the agent once it is built:
    it sends through the sockets that deliver here."""

    def __init__(self, table, counters, clock, wire, say, run, load_pxeboot, has_clstr):
        self.table, self.counters, self.clock, self.wire = table, counters, clock, wire
        self.now = clock.now
        self.by_addr = table.by_addr          # the hot path's exact match (else table.lookup)
        self.say = say
        self.run, self.load_pxeboot, self.has_clstr = run, load_pxeboot, has_clstr
        self.outbox = None

    def on_raw(self, buf, at: int, size: int, src: str, net: Net, arrived: float | None = None,
               admitted: bool = False) -> None:
        """One datagram, `buf[at:at + size]` (a reused buffer: valid only during the call).

        An mtcAlive changes a host only if its JSON parses and has a valid personality
        (docs/contract.md §8, docs/protocol.md §1.3). A host's mtcAlive text differs from its
        last valid one only in `"sequence"`, so the hot path reads the header in place and
        compares the text with that one's bytes (`alive.text_matches_at`); anything else
        takes the full parse (`on_datagram`). Signed datagrams are checked first (`admitted`:
        what the check passed). The agent counts what it read per drain (`Agent._drained`).
        """
        if not admitted and self.wire.auth is not None:
            data = self.wire.admit(memoryview(buf)[at:at + size], src, net)[0]
            if data is not None:
                data = bytes(data)
                self.on_raw(data, 0, len(data), src, net, arrived, True)
            return
        fields = _FIELDS_AT(buf, at, size)
        if fields is not None:
            host = self.by_addr.get(src)
            if host is None:
                host = self.table.lookup(src)          # a scoped or IPv4-mapped source
            if host is not None:
                prefix = host.nets[net].text_prefix
                if prefix is not None and _MATCHES(buf, at, size, prefix):
                    self.counters.mtcalive += 1
                    actions = host.on_mtcalive(net, fields[2], fields[1], fields[0],
                                               self.now() if arrived is None else arrived)
                    if actions:
                        self.run(actions)
                    if net is _PXEBOOT and self.outbox.commands.pending:    # .waiting
                        self.on_answer(host)
                    return
        self.on_datagram(memoryview(buf)[at:at + size], src, net, arrived)

    def on_datagram(self, data, src: str, net: Net, arrived: float | None = None) -> None:
        """The full parse of a datagram that is not a known host's usual mtcAlive: decode,
        validate, route. `data` is valid only during the call; `arrived` when it arrived
        (None: now)."""
        msg, reason = alive.try_decode(data)
        if msg is None:
            self.bad(net, src, reason)
            return
        host = self.table.lookup(src)
        if msg.sig == alive.SIG_MESSAGE:
            if msg.cmd != Cmd.MTCALIVE:
                self.say(Log("info", f"{cmd_name(msg.cmd)} from {src} on {net.iface} network "
                                     f"; not handled by mtce", "noise", ("goenabled", net)))
                return
            self.on_mtcalive_text(host, msg, src, net, arrived)
            return
        if host is None:
            self.unknown(src, net, msg)
            return
        if msg.sig == alive.SIG_CMD_RSP:
            self.on_ack(host, msg, net)
        elif msg.sig == alive.SIG_EVENT:
            self.on_event(host, msg, net)
        else:
            self.say(Log("warning", f"Received unsupported or badly formed message from {src} "
                                    f"on {net.iface} network", "noise", ("unsupported", net)))

    def on_mtcalive_text(self, host, msg: alive.Message, src: str, net: Net,
                         arrived: float | None = None) -> None:
        """An mtcAlive whose text is not the host's last one: parse and validate it first."""
        try:
            text = alive.parse_mtcalive(msg.buf)
        except alive.DecodeError as err:
            self.bad(net, src, f"mtcAlive: {err.reason}")
            return
        if host is None:
            host = self.learn_source(text, src, net, msg)
            if host is None:
                return
        elif text.hostname is not None and text.hostname != host.hostname:
            # One host's (signed) mtcAlive sent from another's address: a valid tag proves
            # who signed, not for whom; what it says of itself must be where it comes from.
            self.bad(net, src, f"mtcAlive names {text.hostname[:64]}, not {host.hostname} "
                               f"whose address it comes from")
            return
        now = self.clock.now() if arrived is None else arrived
        if net is not Net.PXEBOOT:
            # docs/contract.md §8: the pxeboot address a host may be learned at is the one it
            # reports itself over mgmt or cluster-host (learn_source)
            host.reported_pxeboot_ip = text.pxeboot_ip or ""
        # The cluster-host address a host may be learned at: the one it reports over mgmt
        # (the original takes it from any network; over pxeboot one spoofed datagram would
        # move it, and mgmt is the network a host is known on first).
        actions = self.table.on_identity(host, text.personality, text.cluster_host_ip
                                         if net is Net.MGMT and self.has_clstr()
                                         else None, now)
        if actions:
            self.run(actions)
        host.nets[net].text_prefix = alive.sequence_prefix(msg.buf)
        self.counters.mtcalive += 1
        p = msg.parm
        actions = host.on_mtcalive(net, p[3], p[2], p[0], now)
        if actions:
            self.run(actions)
        if net is Net.PXEBOOT and self.outbox.waiting:
            self.on_answer(host)

    def on_answer(self, host) -> None:
        """A pxeboot mtcAlive: the answer to the operator's `alive`, if one is pending."""
        for line in self.outbox.answered(host.hostname, Net.PXEBOOT, self.clock.now()):
            self.say(Log("info", line))

    def bad(self, net: Net, src: str, reason: str) -> None:
        self.counters.rx_bad += 1
        self.counters.bad_net[net] += 1
        self.say(Log("warning", f"bad message from {src} on {net.iface} network: {reason} ; "
                                f"dropping", "noise", ("bad", net, reason.split(" (")[0])))

    def unknown(self, src: str, net: Net, msg: alive.Message | None) -> None:
        self.counters.unknown_source += 1
        self.counters.unknown_net[net] += 1
        self.say(Log("warning", f"unknown hostname message from {src} on {net.iface} network "
                                f"... dropping ({alive.describe(msg) if msg else ''})", "noise",
                     ("unknown", net)))

    def learn_source(self, text: alive.AliveText, src: str, net: Net, msg: alive.Message):
        """A valid mtcAlive from an address no host owns: the original takes the JSON hostname
        and stores the source as that host's pxeboot address (docs/protocol.md §1.3). Here only
        on the pxeboot network, only for a host that has no pxeboot address yet (a spoofed message
        cannot move a known address), and only when the source is the `pxeboot_ip` the host
        itself reported over mgmt or cluster-host (docs/contract.md §8: a stranger naming it teaches
        nothing)."""
        name = text.hostname
        host = self.table.get(name) if name else None
        if host is None or net != Net.PXEBOOT or host.pxeboot_ip or \
                src != host.reported_pxeboot_ip:
            self.unknown(src, net, msg)
            return None
        self.say(Log("info", f"{name} hostname learned from {net.iface} mtcAlive ; hostaddr:{src} "
                             f"was:{host.pxeboot_ip or 'none'}"))
        self.run(self.table.set_pxeboot_ip(name, src, self.clock.now()))
        return self.table.lookup(src)

    def on_event(self, host, msg: alive.Message, net: Net) -> None:
        self.counters.events += 1
        if msg.cmd != alive.EVENT_MONITOR_READY:
            self.say(Log("debug", f"{host.hostname} event 0x{msg.cmd:x} from {net.iface} network"))
            return
        try:
            name, features = alive.parse_ready_event(msg)
        except alive.DecodeError as err:
            self.bad(net, host.hostname, f"ready event: {err.reason}")
            return
        if name != host.hostname:
            self.say(Log("warning", f"ready event names {name} but comes from {host.hostname}'s "
                                    f"address on {net.iface} network ; dropping", "noise",
                         ("ready-name", net)))
            return
        if features is None:
            self.say(Log("info", f"{host.hostname} mtcClient not offering feature list ; node "
                                 f"may have upgrade pending", "noise", ("ready-old", net)))
        # docs/protocol.md §5.2: re-read on every ready event (its pxeboot request).
        self.load_pxeboot()
        self.run(host.on_ready(features, self.clock.now(), net))

    def on_ack(self, host, msg: alive.Message, net: Net) -> None:
        """`<host> <cmd> request ACK (<net>)` for a command this agent sent; any other ACK
        (unsolicited, or for a code we never send) is a repeatable datagram: noise."""
        self.counters.acks += 1
        now = self.clock.now()
        host.on_ack(msg.cmd, net, now)
        level = "debug" if msg.cmd == Cmd.LOCKED else "info"
        pending, lines = self.outbox.acked(host.hostname, msg.cmd, net, now)
        if not pending:
            self.say(Log(level, f"{host.hostname} {cmd_name(msg.cmd)} request ACK ({net.iface})",
                         "noise", ("ack", host.hostname, net)))
            return
        self.say(Log(level, lines[0]))
        for line in lines[1:]:
            self.say(Log("info", line))
