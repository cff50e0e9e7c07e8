"""mtce/agent_deadlines.py: the table's hosts in buckets of their next deadline, audited when due
(issue 25), against a brute-force reference."""

from __future__ import annotations

import random

from mtce import agent_deadlines
from mtce.agent_decisions import INF, Settings
from mtce.agent_host import TableLinks
from mtce.agent_table import HostTable
from mtce.config import Inventory

from harness.host_monitor import T0, entry


def test_the_deadline_buckets_audit_each_host_exactly_when_due():
    """Issue 25: hosts wait in BUCKET_S buckets of their deadline, not in a heap. Against a
    brute-force reference (every host whose deadline has come, at every audit): no host is
    audited before its deadline or missed after it, whatever the deadlines (inside one
    bucket, on its edge, moved earlier by a wake, later by the host itself) and however
    irregular the audit times."""

    class Probe:
        """What HostTable needs of a host; its deadlines are set by the test."""

        def __init__(self, name):
            self.hostname, self.due_at, self.audits = name, INF, []
            self.links, self.next_at = TableLinks(), INF
            self.entry = entry(name, 10)
            self.clstr_ip = self.pxeboot_ip = ""
            self.facts = None

        def next_deadline(self):
            return self.due_at

        def audit(self, now):
            self.audits.append(now)
            self.due_at = self.later(now)
            self.next_at = self.due_at
            return []

    rng = random.Random(25)
    w = agent_deadlines.BUCKET_S
    hosts = {}

    def factory(e, settings, now):
        hosts[e.hostname] = p = Probe(e.hostname)
        p.later = lambda now: now + rng.choice((w / 3, w, 2 * w, 0.7, 5.0, INF))
        p.due_at = T0 + rng.choice((0.0, w / 2, w, 1.5 * w, 3.0))
        return p
    table = HostTable(Settings(), host_factory=factory)
    table.apply_inventory(Inventory("<t>", {f"w-{i}": entry(f"w-{i}", 10 + i)
                                             for i in range(40)}), T0)
    now = T0
    expected: dict = {name: [] for name in hosts}
    for step in range(600):
        now += rng.choice((w / 4, w / 2, w, w, 1.3 * w, 3 * w))
        if rng.random() < 0.1:                  # a host's deadline moves earlier: it wakes
            p = hosts[rng.choice(sorted(hosts))]
            p.due_at = min(p.due_at, now + rng.choice((0.0, w / 5, w)))
            table._woken.append(p)
        due = sorted(name for name, p in hosts.items() if p.due_at <= now)
        before = {name: len(p.audits) for name, p in hosts.items()}
        table.audit(now)
        audited = sorted(name for name, p in hosts.items() if len(p.audits) > before[name])
        assert audited == due, (step, now)
        for name in due:
            expected[name].append(now)
        assert table.next_deadline() == min(p.due_at for p in hosts.values()), step
    assert {name: p.audits for name, p in hosts.items()} == expected
    assert sum(len(a) for a in expected.values()) > 300
