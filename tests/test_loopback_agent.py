"""The real mtcAgent with real mtcClients on 127.x: host states, commands, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from harness.agent_io import all_ok, ctl, hosts_json
from harness.cluster import Cluster
from harness.env import wait_until

pytestmark = pytest.mark.loopback


@pytest.fixture
def lab(tmp_path, daemons, mtce_cmd):
    def make(workers=2, start_clients=True, **kw):
        c = Cluster(tmp_path / "cluster", workers=workers, **kw)
        c.agent = daemons("agent", c.agent_ini, name="agent")
        c.clients = {}
        # Clients announce themselves once at start (then every ~60 s): start them after
        # the agent listens, as a real controller would be up before its workers.
        c.agent.wait_log("Listening On: 'mtc client receive' socket", count=3)
        if start_clients:
            for name, h in c.hosts.items():
                c.clients[name] = daemons("client", h.ini, name=name)
        return c
    return make


def test_every_host_online_on_every_network(lab, mtce_cmd):
    c = lab()
    hosts = wait_until(lambda: all_ok(mtce_cmd, c), 20, interval=0.3,
                       what="all hosts online and ok on all networks")
    w0 = hosts["worker-0"]
    assert w0["pxeboot_ip"] == c.host("worker-0").pxeboot_ip
    assert w0["mgmt_ip"] == c.host("worker-0").mgmt_ip
    assert set(w0["networks"]) == {"mgmt", "cluster-host", "pxeboot"}
    for net in w0["networks"].values():
        assert net["last_seq"] >= 1 and net["missed"] == 0 and net["out_of_sequence"] == 0
        assert 0 <= net["last_seen_s"] < 5
    c.agent.wait_log("worker-0 mtcClient ready ; with pxeboot mtcAlive support")
    c.agent.wait_log("worker-1 mtcAlive received from Pxeboot network with uptime:")
    table = ctl(mtce_cmd, c, "hosts").stdout
    assert table.splitlines()[0].split()[:4] == ["HOST", "PERSONALITY", "ADMIN", "AVAIL"]
    assert any(line.startswith("worker-1") and "online" in line for line in table.splitlines())
    # docs/contract.md §1: `--watch` against the real agent, over a pipe; Ctrl-C (SIGINT) exits 0.
    watch = subprocess.Popen(mtce_cmd + ["hosts", "--watch", "0.2", "-c", c.agent_ini],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: watch.poll() is None and os.path.getsize(c.agent.log_path) > 0, 5)
        time.sleep(1.0)                     # several intervals of the watch, on the real clock
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=10)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.communicate(timeout=5)
    assert watch.returncode == 0, err
    assert out.count("mtce hosts --watch 0.2") >= 2 and "worker-1" in out and "alarms:" in out
    assert "Traceback" not in c.agent.text() and "Traceback" not in err


def test_lock_from_the_cli_reaches_the_client_which_acks_and_reports_locked(lab, mtce_cmd):
    c = lab()
    wait_until(lambda: all_ok(mtce_cmd, c), 20, interval=0.3, what="all ok")
    r = ctl(mtce_cmd, c, "lock", "worker-1")
    assert "locked msg sent to worker-1" in r.stdout
    c.agent.wait_log("worker-1 locked msg request succeeded")
    w1 = c.host("worker-1")
    wait_until(lambda: os.path.exists(os.path.join(w1.paths["run_dir"], ".node_locked")), 10)
    assert os.path.exists(os.path.join(w1.paths["persist_dir"], ".node_locked"))
    c.clients["worker-1"].wait_log("worker-1 locked (")
    h = hosts_json(mtce_cmd, c)["worker-1"]
    assert h["administrative"] == "locked"
    # Unlock removes the files again.
    ctl(mtce_cmd, c, "unlock", "worker-1")
    wait_until(lambda: not os.path.exists(os.path.join(w1.paths["run_dir"], ".node_locked")),
               10, what="unlocked")


def test_cli_errors(lab, mtce_cmd, tmp_path):
    c = lab(start_clients=False)
    wait_until(lambda: hosts_json(mtce_cmd, c), 10, what="agent up")
    r = ctl(mtce_cmd, c, "lock", "nosuchhost", check=False)
    assert r.returncode == 1 and r.stderr.strip() == "mtce: no such host: nosuchhost"
    c.agent.stop()
    r = ctl(mtce_cmd, c, "hosts", check=False)
    assert r.returncode == 1 and "agent is not running" in r.stderr
    sock = c.controller.paths["agent_socket"]
    assert not os.path.exists(sock), "the socket is removed on exit"


def test_the_control_socket_is_root_only_and_survives_garbage(lab, mtce_cmd):
    import socket
    c = lab(start_clients=False)
    wait_until(lambda: hosts_json(mtce_cmd, c), 10, what="agent up")
    path = c.controller.paths["agent_socket"]
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    for junk in (b"\xff\xfe\n", b"[1,2]\n", b"{\"cmd\": 5}\n", b"x" * 70000):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.sendall(junk)
        s.shutdown(socket.SHUT_WR)
        reply = json.loads(s.recv(65536))
        s.close()
        assert reply["ok"] is False and reply["error"]
    assert hosts_json(mtce_cmd, c) == {h: hosts_json(mtce_cmd, c)[h]
                                       for h in hosts_json(mtce_cmd, c)}
    assert c.agent.proc.poll() is None


def test_bad_config_and_missing_inventory_exit_2(tmp_path, mtce_cmd):
    c = Cluster(tmp_path / "c", workers=0)
    os.unlink(c.inventory)
    r = subprocess.run(mtce_cmd + ["agent", "-c", c.agent_ini, "-f"], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 2
    assert r.stderr.strip() == f"mtce: {c.inventory}: cannot read: No such file or directory"
    with open(c.inventory, "w") as f:
        f.write("[worker-9]\npersonality = worker\nmgmt_mac = nope\nmgmt_ip = 10.0.0.1\n")
    r = subprocess.run(mtce_cmd + ["agent", "-c", c.agent_ini, "-f"], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 2 and f"{c.inventory}:3: [worker-9] mgmt_mac" in r.stderr


def test_sighup_applies_inventory_changes(lab, mtce_cmd):
    c = lab(start_clients=False)
    wait_until(lambda: hosts_json(mtce_cmd, c), 10, what="agent up")
    c.write_inventory(skip=("worker-1",), admin={"worker-0": "locked"})
    c.agent.signal(signal.SIGHUP)
    c.agent.wait_log("inventory reloaded: 0 added, 1 removed, 1 changed")
    hosts = hosts_json(mtce_cmd, c)
    assert set(hosts) == {"controller-0", "worker-0"}
    assert hosts["worker-0"]["administrative"] == "locked"
    with open(c.inventory, "a") as f:
        f.write("[broken\n[worker-2]\nmgmt_mac = xx\n")
    c.agent.signal(signal.SIGHUP)
    c.agent.wait_log("reload failed, keeping the running configuration")
    assert set(hosts_json(mtce_cmd, c)) == {"controller-0", "worker-0"}


def test_reboot_reset_and_alive_from_the_cli_reach_the_client(lab, mtce_cmd):
    c = lab()
    wait_until(lambda: all_ok(mtce_cmd, c), 20, interval=0.3, what="all ok")
    w0 = c.host("worker-0")
    r = ctl(mtce_cmd, c, "reboot", "worker-0")
    assert "reboot sent to worker-0 (Pxeboot,Mgmnt,Clstr)" in r.stdout
    wait_until(lambda: "reboot" in w0.actions(), 10, what="the client's reboot action")
    c.agent.wait_log("worker-0 reboot request succeeded")
    assert w0.actions().count("reboot") == 1, "acted once for three copies"
    r = ctl(mtce_cmd, c, "reset", "worker-1")
    wait_until(lambda: "reset" in c.host("worker-1").actions(), 10, what="reset action")
    r = ctl(mtce_cmd, c, "alive", "worker-1")
    assert "mtcAlive request sent to worker-1 on pxeboot" in r.stdout
    c.clients["worker-1"].wait_log("controller pxeboot address:")


def test_garbage_and_spoofed_datagrams_change_nothing(lab, mtce_cmd):
    import socket
    from mtce import alive
    from mtce.states import Net
    c = lab(workers=1, start_clients=False)
    wait_until(lambda: hosts_json(mtce_cmd, c), 10, what="agent up")
    c0 = c.controller
    spoof = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    spoof.bind((c.net + "99", 0))              # an address no host owns
    ident = alive.Identity("worker-0", "worker", "", c.net + "99", "", "08:00:27:00:00:99")
    junk = [b"", b"\x00" * 50, b"cgts mtc message:" + b"\xff" * 2000,
            alive.mtcalive(ident, Net.MGMT, 7), alive.ready_event("worker-0", ""),
            alive.mtcalive(ident, Net.MGMT, 8)[:100] + b"{not json}\x00"]
    for _ in range(200):
        for data in junk:
            spoof.sendto(data, (c0.controller, 2101))
            spoof.sendto(data, (c0.c_clstr[0], 2101))
            spoof.sendto(data, (c0.c_pxeboot[0], 2102))
    # and garbage from a known host's own address
    own = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    own.bind((c.host("worker-0").mgmt_ip, 0))
    for _ in range(200):
        own.sendto(b"cgts mtc message:" + b"\x00" * 83 + b"[1,2]\x00", (c0.controller, 2101))
    spoof.close()
    own.close()

    def counted():
        st = json.loads(subprocess.run(mtce_cmd + ["hosts", "--json", "-c", c.agent_ini],
                                       capture_output=True, text=True, timeout=20).stdout)
        return st
    hosts = wait_until(counted, 10)
    w0 = {h["hostname"]: h for h in hosts}["worker-0"]
    assert w0["availability"] == "offline", "spoofed mtcAlive must not bring a host online"
    assert w0["networks"]["mgmt"]["last_seq"] == 0
    assert c.agent.proc.poll() is None
    text = c.agent.text()
    assert "Traceback" not in text
    assert text.count("unknown hostname message") <= 3, "one line per network per minute"
    assert text.count("bad message from") <= 12


def test_a_restarted_agent_keeps_its_alarm_without_raising_it_again(tmp_path, daemons,
                                                                      mtce_cmd):
    c = Cluster(tmp_path / "c", workers=1)
    state = c.controller.paths["state_dir"]
    with open(os.path.join(state, "alarms.json"), "w") as f:
        json.dump({"version": 1, "alarms": [{
            "id": "200.003", "host": "worker-0", "severity": "minor",
            "reason": "worker-0 pxeboot network communication failure",
            "raised_at": "2026-11-26T00:00:00.000+00:00"}]}, f)
    agent = daemons("agent", c.agent_ini, name="agent")
    agent.wait_log("worker-0 found mtcAlive alarm ; loaded minor")
    agent.wait_log("Listening On: 'mtc client receive' socket", count=3)
    r = ctl(mtce_cmd, c, "alarms", "--json")
    alarms = json.loads(r.stdout)
    assert [(a["id"], a["host"], a["raised_at"]) for a in alarms] == [
        ("200.003", "worker-0", "2026-11-26T00:00:00.000+00:00")]
    h = hosts_json(mtce_cmd, c)["worker-0"]
    assert h["pxeboot_monitor"]["loss"] == 2 and h["pxeboot_monitor"]["miss"] == 6
    assert c.alarm_hook_log() == "", "a restored alarm is not raised again"
    # Once the host talks on pxeboot again the alarm clears after the good windows.
    daemons("client", c.host("worker-0").ini, name="worker-0")
    wait_until(lambda: not json.loads(ctl(mtce_cmd, c, "alarms", "--json").stdout), 30,
               interval=0.5, what="the restored alarm cleared")
    assert '"action": "clear"' in c.alarm_hook_log()


def test_lazy_reboot_from_the_cli_waits_the_configured_delay(tmp_path, daemons, mtce_cmd):
    import time
    c = Cluster(tmp_path / "c", workers=1, agent_extra={"agent": {"lazy_reboot_delay": 2}})
    agent = daemons("agent", c.agent_ini, name="agent")
    agent.wait_log("Listening On: 'mtc client receive' socket", count=3)
    clients = {name: daemons("client", h.ini, name=name) for name, h in c.hosts.items()}
    wait_until(lambda: all_ok(mtce_cmd, c), 20, interval=0.3, what="all ok")
    t0 = time.monotonic()
    r = ctl(mtce_cmd, c, "reboot", "--lazy", "worker-0")
    assert "lazy reboot sent to worker-0 (Pxeboot,Mgmnt)" in r.stdout
    w0 = c.host("worker-0")
    wait_until(lambda: "lazy_reboot" in w0.actions(), 10, what="the lazy reboot action")
    assert time.monotonic() - t0 >= 1.5
    clients["worker-0"].wait_log("lazy reboot command received from Pxeboot network ; "
                                 "delay:2 seconds")


def test_an_inventory_that_does_not_parse_exactly_stops_the_agent_at_start(tmp_path,
                                                                                  mtce_cmd):
    """Issue 23 item 1, docs/contract.md §4 and §1: the issue's inputs (a header without `]` after
    [worker-1], a second [worker-0], `personality = wroker`, a line without `=`, a shared MAC)
    stop `mtce agent -f` before it does anything: exit 2, one line `FILE:LINE: [section]
    key: why` naming the line of the fault."""
    from harness.cluster import issue23_bad_inventories
    c = Cluster(tmp_path / "c", workers=2)
    for what, text, line, key in issue23_bad_inventories(c):
        with open(c.inventory, "w") as f:
            f.write(text)
        r = subprocess.run(mtce_cmd + ["agent", "-c", c.agent_ini, "-f"], capture_output=True,
                           text=True, timeout=20)
        assert r.returncode == 2, (what, r)
        assert len(r.stderr.splitlines()) == 1, (what, r.stderr)
        assert r.stderr.startswith(f"mtce: {c.inventory}:{line}: {key}: "), (what, r.stderr)
