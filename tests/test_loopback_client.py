"""The real mtcClient process on real UDP sockets on 127.x, against the test agent peer."""

from __future__ import annotations

import os
import signal
import time

import pytest

from harness.env import wait_until
from mtce.client import NOISE_BURST
from harness.peer import AgentPeer

pytestmark = pytest.mark.loopback

LOOPBACK, LOCKED, UNLOCKED, REBOOT, RESET, LAZY_REBOOT, REQ_MTCALIVE = 1, 13, 24, 2, 4, 20, 6
I_AM_LOCKED = 0x8


@pytest.fixture
def cluster(fakehost, daemons):
    """A worker's FakeHost, its AgentPeer, and a function starting its client."""
    peers = []

    def make(start=True, **kw):
        host = fakehost(**kw)
        peer = AgentPeer(host)
        peers.append(peer)
        client = daemons("client", host.ini) if start else None
        return host, peer, client

    yield make
    for p in peers:
        try:
            assert not p.errors, f"the peer found malformed datagrams: {p.errors[:5]}"
        finally:
            p.close()


def test_first_mtcalive_on_mgmt_and_cluster_host_then_every_period(cluster):
    host, peer, client = cluster()
    t0 = time.monotonic()
    first = peer.wait_for(lambda: peer.of("mtcalive", "mgmt"), what="first mgmt mtcAlive")[0]
    assert first.at - t0 < 5, "the first mtcAlive comes about 1 s after start"
    assert first.parm[3] == 1 and first.body["sequence"] == 1
    assert first.body == {
        "hostname": "worker-0", "personality": "worker", "pxeboot_ip": host.pxeboot_ip,
        "mgmt_ip": host.mgmt_ip, "cluster_host_ip": host.cluster_host_ip,
        "mgmt_mac": host.mac, "interface": "Mgmnt", "sequence": 1}
    assert first.src[0] == host.mgmt_ip, "sent from the own mgmt address"
    peer.wait_for(lambda: len(peer.of("mtcalive", "mgmt")) >= 3, what="three mgmt mtcAlive")
    seqs = [r.parm[3] for r in peer.of("mtcalive", "mgmt")]
    assert seqs[:3] == [1, 2, 3]
    gaps = [b.at - a.at for a, b in zip(peer.of("mtcalive", "mgmt"), peer.of("mtcalive",
                                                                             "mgmt")[1:])]
    assert all(0.5 < g < 3.0 for g in gaps), f"period 1 s, got gaps {gaps}"
    # cluster-host goes to both controllers, one sequence number for both copies.
    peer.wait_for(lambda: peer.of("mtcalive", where="clstr-c1"), what="clstr mtcAlive to c1")
    c0 = peer.of("mtcalive", where="clstr-c0")[0]
    c1 = peer.of("mtcalive", where="clstr-c1")[0]
    assert c0.parm[3] == c1.parm[3] == 1 and c0.body["interface"] == "Clstr"
    assert c0.src[0] == host.cluster_host_ip


def test_ready_event_at_start_over_mgmt(cluster):
    host, peer, client = cluster()
    ready = peer.wait_for(lambda: peer.of("ready", "mgmt"), what="ready event")[0]
    assert ready.body == {"hostname": "worker-0", "service": "mtcClient",
                          "active_controller_pxeboot_address": "",
                          "features": ["pxeboot_mtcAlive"]}
    assert len(ready.data) == 100 + len(ready.data[100:-1]) + 1


def test_pxeboot_needs_the_agents_request_then_flows_to_both_controllers(cluster):
    host, peer, client = cluster()
    peer.wait_for(lambda: len(peer.of("mtcalive", "mgmt")) >= 2, what="two ticks")
    client.wait_log("controller-0 pxeboot address not learned ; unable to send pxeboot mtcAlive")
    assert not peer.of("mtcalive", "pxeboot"), "no pxeboot mtcAlive before the request"
    peer.request_mtcalive()
    # The request is answered at once with a pxeboot mtcAlive to both controllers; the
    # unsent ticks before it consumed sequence numbers (docs/protocol.md §6).
    first = peer.wait_for(lambda: peer.of("mtcalive", where="pxeboot-c1"),
                          what="pxeboot mtcAlive")[0]
    assert first.body["interface"] == "Pxeboot" and first.body["pxeboot_ip"] == host.pxeboot_ip
    assert first.parm[3] >= 2
    assert first.src[0] == host.pxeboot_ip
    client.wait_log(f"controller-0 pxeboot ip: {host.c_pxeboot[0]}")
    client.wait_log(f"sending pxeboot network mtcAlive msg on port 2102 to controller-1 at "
                    f"{host.c_pxeboot[1]}")
    peer.wait_for(lambda: len(peer.of("mtcalive", where="pxeboot-c0")) >= 3,
                  what="periodic pxeboot mtcAlive")
    assert not [r for r in peer.of("ack") if r.net == "pxeboot"], "a request gets no ACK"


def test_lock_over_each_network_acks_to_the_right_place_and_sets_the_flag(cluster):
    host, peer, client = cluster()
    peer.wait_for(lambda: peer.of("mtcalive", "mgmt"), what="running")
    peer.request_mtcalive()
    raw = peer.command("mgmt", LOCKED, num=1, parm=(1,))
    ack = peer.wait_for(lambda: peer.of("ack", "mgmt"), what="mgmt ACK")[0]
    # The ACK is the received header part with only hdr[0:18] rewritten (docs/protocol.md §1.2).
    assert ack.data == b"cgts mtc cmd rsp:\0" + raw[18:100]
    assert ack.data[18:34] == host.mac[1:].encode()
    assert os.path.exists(os.path.join(host.paths["run_dir"], ".node_locked"))
    assert os.path.exists(os.path.join(host.paths["persist_dir"], ".node_locked"))
    client.wait_log("worker-0 locked (Mgmnt)")
    peer.wait_for(lambda: [r for r in peer.of("mtcalive", "mgmt") if r.parm[2] & I_AM_LOCKED],
                  what="locked flag in mtcAlive")
    # cluster-host ACKs go to both controllers; pxeboot ACKs to the sender's address :2102.
    peer.command("cluster-host", LOCKED, num=1, parm=(1,))
    peer.wait_for(lambda: peer.of("ack", where="clstr-c1") and peer.of("ack", where="clstr-c0"),
                  what="clstr ACK to both controllers")
    peer.command("pxeboot", LOCKED, num=0)
    peer.wait_for(lambda: peer.of("ack", where="pxeboot-c0"), what="pxeboot ACK")
    assert not peer.of("ack", where="pxeboot-c1"), "pxeboot ACK goes to the sender only"
    # num 0: no persist flag, the backup is removed.
    wait_until(lambda: not os.path.exists(os.path.join(host.paths["persist_dir"],
                                                       ".node_locked")), 5)
    peer.command("mgmt", UNLOCKED)
    wait_until(lambda: not os.path.exists(os.path.join(host.paths["run_dir"], ".node_locked")),
               5, what="unlock removes .node_locked")
    client.wait_log("worker-0 unlocked received from Mgmnt network")


def test_command_for_another_mac_is_ignored(cluster):
    host, peer, client = cluster()
    peer.wait_for(lambda: peer.of("mtcalive", "mgmt"), what="running")
    peer.command("mgmt", LOCKED, mac="08:00:27:00:00:99", num=1, parm=(1,))
    client.wait_log("locked msg req command from Mgmnt network not for this host "
                    f"(exp:{host.mac} det:08:00:27:00:00:99) ; ignoring ...")
    assert not os.path.exists(os.path.join(host.paths["run_dir"], ".node_locked"))
    # Upper-case MAC text is the same host (docs/contract.md §8: compared case-insensitively).
    # Its ACK is also the marker: the one before it was read and not ACKed.
    peer.command("mgmt", LOOPBACK, mac=host.mac.upper())
    peer.wait_for(lambda: peer.of("ack", "mgmt"), what="ACK for the upper-case MAC")
    assert [a.cmd for a in peer.of("ack")] == [LOOPBACK]


def test_reboot_over_three_networks_acks_each_and_acts_once(cluster):
    host, peer, client = cluster(failsafe_delay=1)
    peer.wait_for(lambda: peer.of("mtcalive", "mgmt"), what="running")
    peer.request_mtcalive()
    for net in ("pxeboot", "mgmt", "cluster-host"):
        peer.command(net, REBOOT)
    peer.wait_for(lambda: {r.net for r in peer.of("ack")} == {"pxeboot", "mgmt",
                                                              "cluster-host"},
                  what="a reboot ACK on every network")
    wait_until(lambda: "reboot" in host.actions() and "failsafe" in host.actions(), 10,
               what="the reboot action and then the failsafe")
    assert host.actions().count("reboot") == 1, host.actions()
    client.wait_log("Reboot (Pxeboot)")
    with open(os.path.join(host.paths["run_dir"], ".node_reset")) as f:
        assert "reboot command" in f.read()


def test_lazy_reboot_waits_its_delay(cluster):
    host, peer, client = cluster(failsafe_delay=2)
    peer.wait_for(lambda: peer.of("mtcalive", "mgmt"), what="running")
    t0 = time.monotonic()
    peer.command("mgmt", LAZY_REBOOT, num=1, parm=(2,))
    client.wait_log("lazy reboot command received from Mgmnt network ; delay:2 seconds")
    wait_until(lambda: "lazy_reboot" in host.actions(), 10, what="the lazy reboot action")
    assert time.monotonic() - t0 >= 1.5
    client.wait_log("Lazy Reboot (Mgmnt) ; now")


def test_reset_runs_the_reset_action(cluster):
    host, peer, client = cluster()
    peer.wait_for(lambda: peer.of("mtcalive", "mgmt"), what="running")
    peer.command("mgmt", RESET)
    peer.wait_for(lambda: peer.of("ack", "mgmt"), what="reset ACK")
    wait_until(lambda: "reset" in host.actions(), 10, what="the reset action")
    client.wait_log("Reset 'reboot -f' (Mgmnt)")


def test_bad_datagrams_are_logged_rate_limited_and_change_nothing(cluster):
    host, peer, client = cluster()
    peer.wait_for(lambda: peer.of("mtcalive", "mgmt"), what="running")
    good = peer.command_bytes(LOCKED, "{}", num=1, parm=(1,))
    bad = [b"", b"x" * 10, good[:99], good + b"y" * 1000, b"garbage!" * 20,
           good.replace(b"cgts mtc cmd req:", b"cgts mtc cmd XXX:"),
           peer.command_bytes(REQ_MTCALIVE, "{not json"),
           peer.command_bytes(REQ_MTCALIVE, "\udcff".encode("utf-8", "surrogateescape")
                              .decode("latin-1")),
           good[:100] + b"\xff\xfe{" + b"\x00"]
    for _ in range(30):
        for data in bad:
            for net in ("mgmt", "pxeboot", "cluster-host"):
                peer.send(net, data)
    peer.wait_for(lambda: len(peer.of("mtcalive", "mgmt")) >= 3, what="still sending")
    assert client.proc.poll() is None
    assert not os.path.exists(os.path.join(host.paths["run_dir"], ".node_locked")) or \
        peer.of("ack"), "only the valid lock (good[:100]+...) may have locked"
    text = client.text()
    assert "Traceback" not in text
    # At most one line per cause (network x kind of fault) in a minute, and all of them
    # together within the noise budget's burst, not one per datagram.
    lines = [line for line in text.splitlines() if any(k in line for k in (
        "malformed message from", "unsupported message from", "Failed to tokenize",
        "not for this host"))]
    assert 3 <= len(lines) <= NOISE_BURST, lines
    for kind in ("underrun", "oversize"):
        assert text.count(f"network ({kind}") <= 3, text
    assert text.count("unsupported message from") <= 3
    assert text.count("Failed to tokenize mtcAlive request message data") <= 1


def test_mgmt_transmit_fit_file_stops_mgmt_until_removed(cluster):
    host, peer, client = cluster()
    peer.wait_for(lambda: peer.of("mtcalive", "mgmt"), what="running")
    fit = os.path.join(host.paths["run_dir"], "fit")
    os.makedirs(fit)
    open(os.path.join(fit, "mgmnt_txsock"), "w").close()
    client.wait_log("fault insertion: closing mgmt_tx socket")
    client.wait_log("calling setup_mgmt_tx_socket (auto-recovery)")
    client.wait_log("failed to init 'management tx' socket (rc:1)")
    peer.drain(0.3)
    n = len(peer.of("mtcalive", "mgmt"))
    # Two more ticks (their cluster-host mtcAlive arrive) without a mgmt one.
    k = len(peer.of("mtcalive", "cluster-host"))
    peer.wait_for(lambda: len(peer.of("mtcalive", "cluster-host")) >= k + 4, what="two ticks")
    assert len(peer.of("mtcalive", "mgmt")) == n, "no mgmt mtcAlive while the fit file exists"
    os.unlink(os.path.join(fit, "mgmnt_txsock"))
    got = peer.wait_for(lambda: peer.of("mtcalive", "mgmt")[n:], what="mgmt back")
    # Sequence numbers were consumed while the socket was down: the agent sees a gap.
    assert got[0].parm[3] > peer.of("mtcalive", "mgmt")[n - 1].parm[3] + 1
    peer.errors = [e for e in peer.errors if "mgmt: sequence" not in e]


def test_sigterm_exits_zero_and_removes_the_pidfile(cluster):
    host, peer, client = cluster()
    pidfile = os.path.join(host.paths["pid_dir"], "mtcClient.pid")
    wait_until(lambda: os.path.exists(pidfile), 5, what="pidfile")
    with open(pidfile) as f:
        assert int(f.read().strip()) == client.proc.pid
    client.signal(signal.SIGTERM)
    assert client.proc.wait(10) == 0
    assert not os.path.exists(pidfile)


def test_second_start_is_refused_and_a_stale_pidfile_is_replaced(cluster, daemons):
    host, peer, client = cluster()
    pidfile = os.path.join(host.paths["pid_dir"], "mtcClient.pid")
    wait_until(lambda: os.path.exists(pidfile), 5, what="pidfile")
    second = daemons("client", host.ini, name="second")
    assert second.proc.wait(10) == 1
    assert "already running" in second.text()
    client.stop()
    with open(pidfile, "w") as f:
        f.write("999999\n")       # no such process
    third = daemons("client", host.ini, name="third")
    third.wait_log("removed stale pidfile")
    wait_until(lambda: open(pidfile).read().strip() == str(third.proc.pid), 5,
               what="the pidfile names the new process")


def test_sighup_reloads_and_logs_the_change(cluster):
    host, peer, client = cluster()
    peer.wait_for(lambda: peer.of("mtcalive", "mgmt"), what="running")
    host.values["client"]["mtcalive_period"] = 0.5
    host.write_ini()
    client.signal(signal.SIGHUP)
    client.wait_log("config change: [client] mtcalive_period: 1.0 -> 0.5")
    assert client.proc.poll() is None
    n = len(peer.of("mtcalive", "mgmt"))
    peer.drain(2.2)
    assert len(peer.of("mtcalive", "mgmt")) - n >= 3


def test_bad_config_value_exits_2_naming_file_line_and_key(fakehost, mtce_cmd):
    import subprocess
    host = fakehost()
    host.write("bad.ini", "[client]\nmtcalive_period = 5\n\nmtc_rx_mgmnt_port = lots\n")
    r = subprocess.run(mtce_cmd + ["client", "-c", os.path.join(host.root, "bad.ini"), "-f"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"mtce: {host.root}/bad.ini:4: [client] mtc_rx_mgmnt_port: 'lots': wrong type, "
        "expected a port number (1-65535)"]
    r = subprocess.run(mtce_cmd + ["client", "-c", "/nonexistent/mtc.ini", "-f"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "/nonexistent/mtc.ini" in r.stderr


def test_missing_platform_conf_keeps_running_and_recovers(cluster):
    host, peer, client = cluster(platform=False)
    client.wait_log("cannot read")
    peer.drain(1.5)
    assert client.proc.poll() is None
    host.write_platform()
    peer.wait_for(lambda: peer.of("mtcalive", "cluster-host"), what="mtcAlive once the file "
                  "exists")
    client.wait_log("Mgmnt iface : lab0")


@pytest.mark.parametrize("case", ["simplex", "mgmt-on-lo", "first-install"])
def test_pxeboot_gates(cluster, daemons, case):
    kw = {"simplex": {"system_type": "All-in-one", "system_mode": "simplex"},
          "mgmt-on-lo": {"mgmt_iface": "lo"},
          "first-install": {"subfunction": "controller"}}[case]
    host, peer, _ = cluster(start=False, **kw)
    if case == "first-install":
        host.write("platform/.first_controller", "")
    client = daemons("client", host.ini)
    peer.wait_for(lambda: len(peer.of("mtcalive", "mgmt")) >= 2, what="mgmt mtcAlive")
    peer.request_mtcalive()
    # Two more ticks: a pxeboot mtcAlive would go out in the same tick, before the mgmt one.
    n = len(peer.of("mtcalive", "mgmt"))
    peer.wait_for(lambda: len(peer.of("mtcalive", "mgmt")) >= n + 2, what="two ticks")
    assert not peer.of("mtcalive", "pxeboot")
    assert "setup pxeboot receive socket" not in client.text()
    if case == "simplex":
        client.wait_log("Simplex Mode: Pxeboot network not provisioned")
        assert not peer.of("mtcalive", where="clstr-c1"), "simplex: controller-0 only"
    ready = peer.of("ready")[0]
    assert ready.body["features"] == ["pxeboot_mtcAlive"], "advertised even when not provisioned"


def test_cluster_host_combined_with_mgmt_sends_no_cluster_host_mtcalive(cluster):
    host, peer, client = cluster(clstr_iface="lab0")
    peer.wait_for(lambda: len(peer.of("mtcalive", "mgmt")) >= 2, what="mgmt mtcAlive")
    assert not peer.of("mtcalive", "cluster-host")
    assert peer.of("mtcalive", "mgmt")[0].body["cluster_host_ip"] == ""


def test_a_restarted_client_learns_pxeboot_again_within_10_s(cluster, daemons):
    host, peer, client = cluster()
    peer.wait_for(lambda: peer.of("ready"), what="ready")
    peer.request_mtcalive()
    peer.wait_for(lambda: peer.of("mtcalive", "pxeboot"), what="pxeboot")
    client.stop()
    peer.drain(0.3)
    peer.received.clear()
    peer._last_seq.clear()
    t0 = time.monotonic()
    again = daemons("client", host.ini, name="again")
    # The agent answers a ready event with an mtcAlive request over pxeboot.
    peer.wait_for(lambda: peer.of("ready"), what="ready after restart")
    peer.request_mtcalive()
    first = peer.wait_for(lambda: peer.of("mtcalive", "pxeboot"), what="pxeboot again")[0]
    assert first.at - t0 < 10
    assert first.parm[3] <= 2, "a restarted client counts from 1 again"
    again.wait_log(f"controller-0 pxeboot ip: {host.c_pxeboot[0]}")


def test_socket_failure_relearns_a_changed_lease_address(cluster):
    host, peer, client = cluster()
    peer.wait_for(lambda: peer.of("mtcalive", "mgmt"), what="running")
    new = host.net + "31"
    host.write_lease(f"{host.mgmt_iface}:2", new)
    fit = os.path.join(host.paths["run_dir"], "fit")
    os.makedirs(fit)
    open(os.path.join(fit, "pxeboot_txsock"), "w").close()
    client.wait_log("fault insertion: closing pxeboot_tx socket")
    os.unlink(os.path.join(fit, "pxeboot_txsock"))
    client.wait_log(f"pxeboot dhcp lease address: {new} ; initial")
    client.wait_log(f"setup pxeboot receive socket on {host.mgmt_iface}:{new}:2119")
    host.pxeboot_ip = new
    peer.request_mtcalive()
    got = peer.wait_for(lambda: peer.of("mtcalive", "pxeboot"), what="pxeboot from the new "
                        "address")
    assert got[0].src[0] == new and got[0].body["pxeboot_ip"] == new


def test_without_f_the_client_detaches_logs_to_its_file_and_stops_on_sigterm(fakehost,
                                                                            mtce_cmd):
    import subprocess
    from harness.fakehost import assert_harmless
    host = fakehost()
    assert_harmless(host.ini)
    peer = AgentPeer(host)
    try:
        parent = subprocess.run(mtce_cmd + ["client", "-c", host.ini], capture_output=True,
                                text=True, timeout=20)
        assert parent.returncode == 0, parent.stderr
        pidfile = os.path.join(host.paths["pid_dir"], "mtcClient.pid")
        pid = int(wait_until(lambda: os.path.exists(pidfile) and open(pidfile).read().strip(),
                             10, what="the daemon's pidfile"))
        # Double fork: the daemon is neither the parent that exited nor its session leader.
        assert os.getsid(pid) != os.getpid() and os.getpgid(pid) != os.getpgid(0)
        peer.wait_for(lambda: peer.of("mtcalive", "mgmt"), what="mtcAlive from the daemon")
        log = os.path.join(host.paths["log_dir"], "mtcClient.log")
        wait_until(lambda: "Identity    :" in host.log_text(), 10, what="its log file")
        assert "mtcClient starting" in open(log).read()
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not os.path.exists(pidfile), 10, what="pidfile removed on exit")
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 10, what="the daemon gone")
        assert "SIGTERM: exiting" in host.log_text()
    finally:
        peer.close()
