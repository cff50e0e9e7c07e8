"""How the agent reads its sockets (`Reading`): what each drain brought (the counters, the
rate, the pacer's view of the load), how long the loop may let datagrams gather before it reads
(`pause_hint`, on the grid `choose_grid` picks), and the receive buffers' room and the kernel's
drops, checked every few seconds. When and how much is agent_pacing.Pacer's decision; the
sockets are agent_net's.
"""

from __future__ import annotations

from mtce import agent_net, agent_pacing
from mtce.states import Net

BATCH_LOG_ABOVE = 25            # "serviced %d messages in one batch" above this
_BATCH_NAME = {Net.MGMT: "Mgmnt", Net.CLSTR: "Clstr", Net.PXEBOOT: "pxeboot"}


class Reading:
    """The agent's reading side: `net` (agent_net.AgentNet), its `pacer`, the transport
    `counters`; the `table` and the `outbox` say whether the fine grid is needed; `noise`
    throttles the batch lines."""

    def __init__(self, net, pacer: agent_pacing.Pacer, counters, table, outbox, noise, clock):
        self.net, self.pacer, self.counters = net, pacer, counters
        self.table, self.outbox, self.noise, self.clock = table, outbox, noise, clock
        self.since_rate = 0                 # datagrams read since `take_count`

    def drained(self, net: Net, count: int) -> None:
        """One socket read to empty (or to its limit): `count` datagrams."""
        self.since_rate += count
        self.pacer.read(count)
        self.counters.rx += count
        self.counters.rx_net[net] += count
        if count >= agent_net.RX_LIMIT:
            self.pacer.saturated = True
        if count > BATCH_LOG_ABOVE:
            self.noise.info(("batch", net), "serviced %d messages in one batch (%s)", count,
                            _BATCH_NAME[net])

    def take_count(self) -> int:
        """The datagrams read since the last call (the 60 s rate log)."""
        count, self.since_rate = self.since_rate, 0
        return count

    def pause_hint(self) -> float:
        """How long the loop may let datagrams gather before it reads (agent_pacing.py)."""
        self.choose_grid()
        return self.pacer.pause(self.clock.now())

    def choose_grid(self) -> None:
        """Issue 25 item 3: the long grid (a read and an audit a second at light load) when
        every datagram comes with its kernel arrival time (a datagram read a second late
        still counts from when it came), no host is in an offline audit (its requests go out
        every offline_period) and no command waits for its ACK (the operator waits too).
        A host whose silence starts to count before the next tick wakes the agent on time
        (`Agent.audit`); a pxeboot window ends on a point of the long grid (`Facts.grid_s`),
        where the read that judges it comes."""
        stamped = self.net.set.stamped
        self.pacer.long = stamped and not self.table.auditing and not self.outbox.waiting
        self.table.facts.grid_s = self.pacer.long_s() if stamped else 0.0

    def check_drops(self) -> None:
        """The kernel's drop counters of the receive sockets, and the pile they allow now."""
        self.counters.kernel_drops = self.net.set.check_drops()
        self.counters.drops_net = self.net.set.drops_by_net()
        self.size_pile()

    def size_pile(self) -> None:
        """How much the loop may let pile up between reads (agent_pacing.py): half of what
        the smallest receive buffer holds, as the sockets are now."""
        room = self.net.rx_room()
        self.pacer.max_pile = max(1, room // 2) if room else agent_pacing.COALESCE_MAX_PILE
