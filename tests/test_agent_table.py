"""mtce.agent_table: the inventory diff, look-up by address, deadline buckets, woken hosts,
the next offline moment, thousands of hosts.

Time is a plain float `now` (FakeClock style): minutes of protocol time run in milliseconds.
"""

from __future__ import annotations

import pytest

from mtce import config
from mtce.agent_decisions import INF, ClearAlarm, RaiseAlarm, Send, Settings
from mtce.agent_host import HostMonitor
from mtce.agent_pxeboot import PxeStage
from mtce.agent_table import HostTable
from mtce.config import HostEntry, Inventory
from mtce.states import ALARM_MTCALIVE, Admin, Availability, Cmd, Net

from harness.host_monitor import FEATURES, PXE_IP, T0, entry, online, sends, table_of, texts


# -- HostTable ------------------------------------------------------------------------------

def test_inventory_diff():
    table = table_of(3)
    w1 = table.get("worker-1")
    online(w1)
    for seq in (5, 9):
        w1.on_mtcalive(Net.CLSTR, seq, 0, 12, T0)
    hosts = {f"worker-{i}": entry(f"worker-{i}", 10 + i) for i in range(3)}
    del hosts["worker-0"]
    hosts["worker-1"] = entry("worker-1", 11, personality="worker,lowlatency")
    hosts["worker-2"] = HostEntry("worker-2", "worker", "08:00:27:1e:0a:0c", "192.168.204.99",
                                  "192.168.206.12", "locked")
    hosts["storage-0"] = entry("storage-0", 40, personality="storage")
    added, removed, changed, out = table.apply_inventory(Inventory("<test>", hosts), T0 + 1)
    assert (added, removed, sorted(changed)) == (["storage-0"], ["worker-0"],
                                                 ["worker-1", "worker-2"])
    assert "worker-0 removed from inventory" in texts(out)
    assert "storage-0 added to inventory (storage)" in texts(out)
    assert "worker-2 administrative state unlocked -> locked (inventory)" in texts(out)
    assert ("worker-2 inventory change: mgmt_ip 192.168.204.12 -> 192.168.204.99, "
            "administrative unlocked -> locked") in texts(out)
    assert table.get("worker-1") is w1 and w1.nets[Net.CLSTR].missed == 6   # counters kept
    assert table.get("worker-2").admin is Admin.LOCKED
    assert table.lookup("192.168.204.12") is None
    assert table.lookup("192.168.204.99") is table.get("worker-2")
    assert table.lookup("192.168.204.10") is None and "worker-0" not in table


def test_changed_address_resets_that_networks_counters():
    table = table_of(1)
    host = table.get("worker-0")
    host.on_mtcalive(Net.MGMT, 5, 0, 12, T0)
    host.on_mtcalive(Net.MGMT, 9, 0, 12, T0)
    host.on_mtcalive(Net.CLSTR, 5, 0, 12, T0)
    host.on_mtcalive(Net.CLSTR, 9, 0, 12, T0)
    e = host.entry
    moved = HostEntry(e.hostname, e.personality, e.mgmt_mac, "192.168.204.77",
                      e.cluster_host_ip, e.administrative)
    table.apply_inventory(Inventory("<t>", {"worker-0": moved}), T0 + 1)
    assert host.nets[Net.MGMT].missed == 0 and host.nets[Net.CLSTR].missed == 3


def test_lookup_by_every_address_and_pxeboot_reindex():
    table = table_of(2)
    w0 = table.get("worker-0")
    assert table.lookup("192.168.204.10") is w0
    assert table.lookup("192.168.206.10") is w0
    assert table.lookup("::ffff:192.168.204.10") is w0
    assert table.set_pxeboot_ip("worker-0", "192.168.202.10", T0)
    assert table.lookup("192.168.202.10") is w0
    out = table.set_pxeboot_ip("worker-0", "192.168.202.20", T0)
    assert texts(out) == ["worker-0 pxeboot ip changed from 192.168.202.10 to 192.168.202.20"]
    assert table.lookup("192.168.202.10") is None and table.lookup("192.168.202.20") is w0
    out = table.set_pxeboot_ip("worker-1", "192.168.202.20", T0)     # a clash: first keeps it
    assert any("is also worker-0's" in x for x in texts(out))
    assert table.lookup("192.168.202.20") is w0
    table.set_pxeboot_ip("worker-0", None, T0)
    assert table.lookup("192.168.202.20") is table.get("worker-1")
    assert table.set_pxeboot_ip("nobody", "1.2.3.4", T0) == ()


def test_restore_alarms_for_unknown_hosts_clears_them():
    table = table_of(1)
    out = table.restore_alarms(["worker-0", "gone-9"], T0)
    assert ClearAlarm("gone-9", ALARM_MTCALIVE) in out
    assert table.get("worker-0").pxe.alarm


def test_heap_audits_only_due_hosts():
    calls = []

    class Counting(HostMonitor):
        def audit(self, now):
            calls.append(self.hostname)
            return super().audit(now)

    table = table_of(3, host_factory=Counting)
    for host in table:
        host.on_mtcalive(Net.MGMT, 1, 0, 12, T0)       # online; no pxeboot monitor (no ready)
    assert table.audit(T0 + 6.9) == [] and calls == []
    assert table.next_deadline() == pytest.approx(T0 + 7)
    table.get("worker-1").on_mtcalive(Net.MGMT, 2, 0, 12, T0 + 3)
    out = table.audit(T0 + 7)
    assert sorted(calls) == ["worker-0", "worker-1", "worker-2"]    # worker-1: a stale entry
    assert len(sends(out, Net.MGMT)) == 2
    calls.clear()
    assert table.audit(T0 + 7.05) == [] and calls == []
    table.audit(T0 + 7.1)
    assert sorted(calls) == ["worker-0", "worker-2"]
    calls.clear()
    table.audit(T0 + 9.9)
    assert "worker-1" not in calls


def test_woken_host_is_scheduled_early():
    table = table_of(1)
    host = table.get("worker-0")
    online(host)
    table.audit(T0)
    assert table.next_deadline() == pytest.approx(T0 + 7)
    table.set_pxeboot_ip("worker-0", PXE_IP, T0 + 1)
    host.on_ready(FEATURES, T0 + 1)
    assert table.next_deadline() == pytest.approx(T0 + 1)
    assert sends(table.audit(T0 + 1), Net.PXEBOOT, Cmd.REQ_MTCALIVE)


def test_two_thousand_hosts_for_a_minute():
    n_hosts, step = 2000, 0.1
    table = table_of(n_hosts)
    for i, host in enumerate(table):
        table.set_pxeboot_ip(host.hostname, f"10.10.{i // 250}.{i % 250}", T0)
    hosts = list(table)
    groups = [hosts[g::50] for g in range(50)]         # each host sends every 5 s, staggered
    seq = 0
    actions = 0
    for tick in range(600):
        now = T0 + tick * step
        if tick % 50 == 0:
            seq += 1
        for host in groups[tick % 50]:
            for net in Net:
                actions += len(host.on_mtcalive(net, seq, 0, 12, now))
            if tick < 50:
                host.on_ready(FEATURES, now)
        for a in table.audit(now):
            assert not isinstance(a, (RaiseAlarm, Send)) or a.net is Net.PXEBOOT, a
    assert all(h.availability is Availability.ONLINE for h in hosts)
    assert all(h.nets[net].missed == 0 for h in hosts for net in Net)
    assert all(h.pxe.stage is PxeStage.WAIT and h.pxe.miss == 0 for h in hosts)
    assert len(table.to_json(now)) == n_hosts


def test_the_table_knows_when_the_next_host_in_an_offline_audit_goes_offline():
    s = Settings(online_period_s=7, offline_period_s=0.1, offline_threshold=90)
    table = HostTable(s)
    table.apply_inventory(config.parse_inventory(
        "[w0]\npersonality = worker\nmgmt_mac = 08:00:27:00:00:01\nmgmt_ip = 10.0.0.1\n"
        "[w1]\npersonality = worker\nmgmt_mac = 08:00:27:00:00:02\nmgmt_ip = 10.0.0.2\n"), T0)
    w0, w1 = table.get("w0"), table.get("w1")
    w0.on_mtcalive(Net.MGMT, 1, 0, 5, T0)
    w1.on_mtcalive(Net.MGMT, 1, 0, 5, T0 + 3)
    assert table.next_offline_at() == INF
    table.audit(T0 + 7.05)                     # w0 silent for one online_period: audit starts
    # ... at the end of its silent window, not at the audit call: offline 7 + 9 s after.
    assert table.next_offline_at() == pytest.approx(T0 + 7 + 9)
    table.audit(T0 + 10.05)
    assert table.next_offline_at() == pytest.approx(T0 + 16)     # w0 is still the earliest
    w0.on_mtcalive(Net.MGMT, 2, 0, 5, T0 + 11)  # heard again: its audit ends
    assert table.next_offline_at() == pytest.approx(T0 + 3 + 16)
    table.audit(T0 + 19.0)
    assert w1.availability is Availability.OFFLINE
    # w0, silent since T0 + 11 + 7 = 1018, is noticed 1 s late: its audit counts from at most
    # one offline_period before the call (T0 + 18.9), not from a second ago.
    assert table.next_offline_at() == pytest.approx(T0 + 18.9 + 9)
    w0.on_mtcalive(Net.MGMT, 3, 0, 5, T0 + 19.5)
    assert table.next_offline_at() == INF
