"""Authenticated messages end to end, key rotation, replays, and where commands may come from."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from harness.agent_io import all_ok, hosts_json
from harness.cluster import Cluster
from harness.env import wait_until
from mtce import auth
from harness.peer import AgentPeer

pytestmark = pytest.mark.loopback

K1 = "k1 " + "11" * 32
K2 = "k2 " + "22" * 32
LOCKED = 13


def write_keys(path, *lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)


def secure(host, keyfile, require="yes"):
    host.values["security"] = {"key_file": keyfile, "require": require}
    host.write_ini()


def test_signed_cluster_works_and_an_unsigned_client_is_not_heard(tmp_path, daemons, mtce_cmd):
    c = Cluster(tmp_path / "c", workers=2)
    keys = str(tmp_path / "keys")
    write_keys(keys, K1)
    for name in ("controller-0", "worker-0"):
        secure(c.host(name), keys)
    agent = daemons("agent", c.agent_ini, name="agent")
    agent.wait_log("Listening On: 'mtc client receive' socket", count=3)
    for name in c.names:              # worker-1 keeps the original's wire: no tags
        daemons("client", c.host(name).ini, name=name)
    wait_until(lambda: all_ok(mtce_cmd, c, ["controller-0", "worker-0"]), 20, interval=0.3,
               what="the signed hosts ok on every network")
    # The marker that the agent read worker-1's untagged mtcAlive (and dropped them).
    agent.wait_log("no authentication tag")
    w1 = hosts_json(mtce_cmd, c)["worker-1"]
    assert w1["availability"] == "offline", "require = yes drops untagged mtcAlive"
    assert {n["last_seq"] for n in w1["networks"].values()} == {0}
    text = agent.text()
    assert "message authentication on: 1 key(s), signing with k1 ; require yes" in text
    assert 1 <= text.count("no authentication tag") <= 3
    # Issue 11 item 9: identical bytes the signed hosts send on two networks at once (the
    # ready event at start, ACKs) are never taken for replays.
    assert "replayed" not in text


def test_rotation_in_steps_without_a_lost_message(tmp_path, daemons, mtce_cmd):
    c = Cluster(tmp_path / "c", workers=1)
    keyfiles = {}
    for name in c.names:
        keyfiles[name] = str(tmp_path / f"keys-{name}")
        write_keys(keyfiles[name], K1)
        secure(c.host(name), keyfiles[name])
    procs = {"agent": daemons("agent", c.agent_ini, name="agent")}
    procs["agent"].wait_log("Listening On: 'mtc client receive' socket", count=3)
    for name in c.names:
        procs[name] = daemons("client", c.host(name).ini, name=name)
    wait_until(lambda: all_ok(mtce_cmd, c), 20, interval=0.3, what="all ok with k1")
    for step in ((K1, K2), (K2, K1), (K2,)):
        for name in c.names:
            write_keys(keyfiles[name], *step)
        seen = {n: h["networks"]["mgmt"]["last_seq"] for n, h in hosts_json(mtce_cmd, c).items()}
        for name, p in procs.items():
            reloads = p.text().count("SIGHUP: reloading")
            p.signal(signal.SIGHUP)
            p.wait_log("SIGHUP: reloading", count=reloads + 1)

        def two_more():
            # Two mtcAlive of every host taken since the reload: signed with the new keys.
            hosts = hosts_json(mtce_cmd, c)
            return hosts if all(hosts[n]["networks"]["mgmt"]["last_seq"] >= seen[n] + 2
                                for n in c.names) else None
        wait_until(two_more, 10, interval=0.2, what=f"mtcAlive with the keys of step {step}")
        hosts = all_ok(mtce_cmd, c)
        assert hosts, f"a host went lost or offline during step {step}"
    assert "authentication tag does not verify" not in procs["agent"].text()
    for name in c.names:
        h = hosts_json(mtce_cmd, c)[name]
        assert all(n["missed"] <= 1 for n in h["networks"].values()), h["networks"]


def test_a_replayed_command_is_refused(fakehost, daemons, tmp_path):
    host = fakehost()
    keys = str(tmp_path / "keys")
    write_keys(keys, K1)
    secure(host, keys)
    peer = AgentPeer(host, authenticator=auth.Authenticator(auth.parse_keys(K1), True,
                                                            time.time, time.monotonic))
    client = daemons("client", host.ini)
    try:
        peer.wait_for(lambda: peer.of("mtcalive", "mgmt"), what="signed mtcAlive")
        raw = peer.command_bytes(LOCKED, "{}", num=1, parm=(1,))
        signed = peer.auth.sign(raw)
        sock = peer.socks["mgmt"][1]
        sock.sendto(signed, (host.mgmt_ip, 2118))
        peer.wait_for(lambda: peer.of("ack", "mgmt"), what="the first ACK")
        os.unlink(os.path.join(host.paths["run_dir"], ".node_locked"))
        sock.sendto(signed, (host.mgmt_ip, 2118))
        client.wait_log("replayed (already accepted)")
        peer.drain(0.5)
        assert len(peer.of("ack", "mgmt")) == 1
        assert not os.path.exists(os.path.join(host.paths["run_dir"], ".node_locked"))
        assert not peer.errors and not peer.rejected
    finally:
        peer.close()


def test_commands_from_a_non_controller_address_are_refused(fakehost, daemons):
    host = fakehost()
    peer = AgentPeer(host)
    client = daemons("client", host.ini)
    try:
        peer.wait_for(lambda: peer.of("mtcalive", "mgmt"), what="running")
        intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        intruder.bind((host.net + "66", 0))
        intruder.sendto(peer.command_bytes(LOCKED, "{}", num=1, parm=(1,)),
                        (host.mgmt_ip, 2118))
        intruder.sendto(peer.command_bytes(2, "{}"), (host.pxeboot_ip, 2119))
        intruder.close()
        client.wait_log(f"locked msg command from {host.net}66 on Mgmnt network refused: "
                        "not a controller address")
        client.wait_log(f"reboot command from {host.net}66 on Pxeboot network refused: "
                        "not a controller address")
        peer.drain(0.5)
        assert not peer.of("ack")
        assert not os.path.exists(os.path.join(host.paths["run_dir"], ".node_locked"))
        assert "reboot" not in host.actions()
    finally:
        peer.close()
