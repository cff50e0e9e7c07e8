"""The real mtcAgent and mtcClients in network namespaces: controller-0 and two workers, each
with mgmt, cluster-host and pxeboot links into one bridge per network.

Addresses are from 198.18.0.0/15 and live only in the namespaces these tests create. Timers
are short (1 s online and pxeboot windows) so that the pxeboot alarm comes after ~12 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from harness.agent_io import alarms_json, all_ok, hosts_json
from harness.cluster import mac_of
from harness.env import REPO, wait_until
from harness.netns import C6, M, M6, P

pytestmark = [pytest.mark.netns, pytest.mark.slow]

def test_all_hosts_online_on_all_networks_then_pxeboot_loss_alarm_and_clear(netlab, mtce_cmd):
    c = netlab(workers=2)
    names = c.names[:3]
    hosts = wait_until(lambda: all_ok(mtce_cmd, c, names), 30, interval=0.5,
                       what="every host ok on every network")
    assert hosts["worker-1"]["mgmt_ip"] == M + "11"
    # pxeboot of worker-0 goes down; mgmt and cluster-host stay ok.
    c.topo.link(c.ns["worker-0"], "eth2", "down")
    t_down = time.monotonic()
    alarm = wait_until(lambda: alarms_json(mtce_cmd, c), 40, interval=0.5,
                       what="alarm 200.003")
    took = time.monotonic() - t_down
    assert alarm == [{"id": "200.003", "host": "worker-0", "severity": "minor",
                      "reason": alarm[0]["reason"], "raised_at": alarm[0]["raised_at"]}]
    assert "pxeboot network communication failure" in alarm[0]["reason"]
    assert 9 < took < 25, f"12 windows of 1 s expected, took {took:.1f} s"
    text = c.agent.text()
    assert "worker-0 pxeboot mtcAlive miss count 1 ; loss count 0 ; sending request" in text
    assert "worker-0 pxeboot mtcAlive lost ; 1 more loss before alarm assertion" in text
    assert "setting minor 'mtcAlive' failure alarm (200.003 )" in text
    hosts = hosts_json(mtce_cmd, c)
    w0 = hosts["worker-0"]
    assert w0["networks"]["pxeboot"]["state"] == "lost"
    assert w0["networks"]["mgmt"]["state"] == "ok" and w0["availability"] == "online"
    assert hosts["worker-1"]["networks"]["pxeboot"]["state"] == "ok"
    assert '"action": "raise"' in c.alarm_hook_log()
    # Back up: the alarm clears after the good windows.
    c.topo.link(c.ns["worker-0"], "eth2", "up")
    wait_until(lambda: not alarms_json(mtce_cmd, c), 30, interval=0.5, what="alarm cleared")
    c.agent.wait_log("clearing 'mtcAlive' alarm (200.003)")
    assert '"action": "clear"' in c.alarm_hook_log()
    wait_until(lambda: all_ok(mtce_cmd, c, names), 10, interval=0.5, what="all ok again")


def test_a_sequence_gap_is_counted(netlab, mtce_cmd):
    c = netlab(workers=1, extra_hosts=1)
    spare = c.hosts["worker-1"]      # in the inventory, no client: the burst sender speaks
    wait_until(lambda: hosts_json(mtce_cmd, c), 10, what="agent up")
    env = dict(os.environ, MTCE_PATH=REPO)
    r = subprocess.run(c.topo.exec_prefix(c.ns["worker-1"]) + [
        sys.executable, os.path.join(REPO, "tests", "harness", "burst.py"), spare.mgmt_ip, M + "1",
        "2101", "worker-1", mac_of(2), "20", "200", "1", "4"], capture_output=True, text=True,
        timeout=30, env=env)
    assert r.returncode == 0, r.stderr

    def counted():
        h = hosts_json(mtce_cmd, c).get("worker-1")
        return h if h and h["networks"]["mgmt"]["last_seq"] == 24 else None

    h = wait_until(counted, 10, what="all 20 received")
    assert h["networks"]["mgmt"]["missed"] == 4
    assert h["networks"]["mgmt"]["out_of_sequence"] == 0
    c.agent.wait_log("worker-1 mtcAlive received from Mgmnt network with uptime:0 ; missed 4 "
                     "mtcAlive msgs ; expect:11 detect:15 ; correcting")


def test_ten_thousand_mtcalive_at_burst_rate_are_all_processed(netlab, mtce_cmd):
    c = netlab(workers=1, extra_hosts=1)
    spare = c.hosts["worker-1"]
    wait_until(lambda: hosts_json(mtce_cmd, c), 10, what="agent up")
    lines_before = c.agent.text().count("\n")
    env = dict(os.environ, MTCE_PATH=REPO)
    r = subprocess.run(c.topo.exec_prefix(c.ns["worker-1"]) + [
        sys.executable, os.path.join(REPO, "tests", "harness", "burst.py"), spare.mgmt_ip, M + "1",
        "2101", "worker-1", mac_of(2), "10000", "2000"], capture_output=True, text=True,
        timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    rate = float(r.stdout.split("(")[1].split("/s")[0])
    assert rate >= 500, r.stdout

    def done():
        h = hosts_json(mtce_cmd, c).get("worker-1")
        return h if h and h["networks"]["mgmt"]["last_seq"] == 10000 else None

    h = wait_until(done, 15, what="the 10,000th mtcAlive")
    mgmt = h["networks"]["mgmt"]
    assert mgmt["missed"] == 0 and mgmt["out_of_sequence"] == 0, mgmt
    assert mgmt["received"] >= 10000, "every one of the burst counted"
    added = c.agent.text().count("\n") - lines_before
    assert added < 40, f"{added} log lines for a 10,000 message burst"


def test_lock_from_the_cli_is_acked_and_reported_locked(netlab, mtce_cmd):
    c = netlab(workers=1)
    names = c.names[:2]
    wait_until(lambda: all_ok(mtce_cmd, c, names), 30, interval=0.5, what="all ok")
    r = subprocess.run(mtce_cmd + ["lock", "worker-0", "-c", c.agent_ini], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    c.agent.wait_log("worker-0 locked msg request succeeded")
    w0 = c.hosts["worker-0"]
    wait_until(lambda: os.path.exists(os.path.join(w0.paths["run_dir"], ".node_locked")), 10,
               what=".node_locked on the client")
    c.clients["worker-0"].wait_log("worker-0 locked (")
    h = hosts_json(mtce_cmd, c)["worker-0"]
    assert h["administrative"] == "locked" and h["availability"] == "online"
    # The pxeboot monitor is held while the host is locked (docs/protocol.md §5.5).
    assert h["pxeboot_monitor"]["stage"] == "start"


def test_mgmt_and_cluster_host_over_ipv6(netlab, mtce_cmd):
    """The family follows name resolution (docs/contract.md §3): `controller` and the cluster-host
    names resolve to IPv6 here, so both daemons speak IPv6 there; pxeboot stays IPv4."""
    c = netlab(workers=1, v6=True)
    hosts = wait_until(lambda: all_ok(mtce_cmd, c, c.names[:2]), 30, interval=0.5,
                       what="every host ok on every network over IPv6")
    w0 = hosts["worker-0"]
    assert w0["mgmt_ip"] == M6 + "10" and w0["cluster_host_ip"] == C6 + "20"
    assert w0["pxeboot_ip"] == P + "30"
    c.clients["worker-0"].wait_log(f"Creating eth0 socket on port 2118 with address: {M6}10")
    c.agent.wait_log(f"Listening On: 'mtc client receive' socket {M6}1:2101")
    r = subprocess.run(mtce_cmd + ["lock", "worker-0", "-c", c.agent_ini], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    c.agent.wait_log("worker-0 locked msg request succeeded")
