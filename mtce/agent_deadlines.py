"""When each host of the agent's table is next due (`Deadlines`): hosts wait in buckets of
BUCKET_S by their next deadline, so that an audit visits only the hosts that are due, and the
long grid re-times steady hosts instead of auditing them (docs/bench.md, issue 25). Lazy
invalidation: a host's entry is live while its token is the host's `links.tok`; a deadline
that moved later costs one idle visit, one that moved earlier is announced by the host
(`woken`). Pure, as agent_table.py.
"""

from __future__ import annotations

import heapq
import itertools

from mtce.agent_decisions import INF
from mtce.states import Availability

BUCKET_S = 0.1                  # the width of a deadline bucket: no wider than the audit grid


class Deadlines:
    """The table's hosts by the BUCKET_S slot of their next deadline; `woken` is where a host
    whose deadline may have moved earlier puts itself (going online, unlock, ready...)."""

    def __init__(self):
        self._buckets: dict[int, list] = {}
        self._indices: list[int] = []         # the slots that have a bucket, earliest first
        self._tok = itertools.count()
        self.woken: list = []

    def schedule(self, host, at: float | None = None) -> None:
        if at is None:
            at = host.next_deadline()
        if at < host.links.at:
            tok = next(self._tok)
            host.links.tok, host.links.at = tok, at
            index = int(at // BUCKET_S)
            bucket = self._buckets.get(index)
            if bucket is None:
                bucket = self._buckets[index] = []
                heapq.heappush(self._indices, index)
            bucket.append((tok, host))

    def drain_woken(self) -> None:
        woken = self.woken
        while woken:
            host = woken.pop()
            if host.links.wake is not None:
                self.schedule(host)

    def first_bucket(self) -> list | None:
        """The earliest bucket that still holds a live entry (stale ones are dropped)."""
        indices, buckets = self._indices, self._buckets
        while indices:
            bucket = buckets[indices[0]]
            live = [(tok, host) for tok, host in bucket if tok == host.links.tok]
            if live:
                buckets[indices[0]] = live
                return live
            del buckets[heapq.heappop(indices)]
        return None

    def refresh(self, until: float) -> float:
        """Issue 25 item 3: re-time every host scheduled by `until` from what it was heard
        since, and return the earliest moment by `until` at which a host's presence (its
        offline audit's start, a network's `lost`) is due: INF if none.

        Between two reads a second apart the agent cannot see a host go silent, but it knows
        when the silence would start to count: a host heard every 5 s is due 7 s after its
        last mtcAlive, so one due within the next second is one already silent for 6 s, and
        the agent wakes for it on time. A steady host is re-timed here instead of audited;
        its pxeboot window ends on a point of the grid and is judged by the read there
        (agent_pxeboot._window_end)."""
        self.drain_woken()
        last = int(until // BUCKET_S)
        earliest = INF
        online = Availability.ONLINE
        later = []
        for index in [i for i in self._indices if i <= last]:
            for tok, host in self._buckets[index]:
                if tok != host.links.tok or host.links.at > until:
                    continue
                due = host.presence.deadline() if host.availability is online else INF
                if due < earliest:
                    earliest = due
                at = host.pxeboot_deadline(due)            # = host.next_deadline()
                if at > host.links.at:
                    later.append((host, at))
        for host, at in later:
            host.links.tok, host.links.at = -1, INF
            self.schedule(host, at)
        return earliest if earliest <= until else INF

    def next_deadline(self) -> float:
        """When `audit` next has work (INF: none until an event)."""
        self.drain_woken()
        bucket = self.first_bucket()
        return min(host.links.at for _, host in bucket) if bucket else INF

    def audit(self, now: float) -> list:
        """Audit the hosts that are due at `now`; actions of all of them."""
        self.drain_woken()
        indices, buckets = self._indices, self._buckets
        out: list = []
        due: list = []
        last = int(now // BUCKET_S)
        while indices and indices[0] <= last:
            index = indices[0]
            later = []
            for tok, host in buckets[index]:
                if tok != host.links.tok:
                    continue                   # superseded or removed
                if host.links.at > now:
                    later.append((tok, host))  # in this bucket, not due yet
                    continue
                host.links.tok, host.links.at = -1, INF
                actions = host.audit(now)
                if actions:
                    out.extend(actions)
                due.append(host)
            if later:
                buckets[index] = later
                break
            del buckets[heapq.heappop(indices)]
        for host in due:                       # after the loop: a host is audited once per call
            self.schedule(host, host.next_at)
        self.drain_woken()
        return out
