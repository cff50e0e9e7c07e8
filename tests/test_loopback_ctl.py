"""The operator's commands against the real mtcAgent and real mtcClients on 127.x, through
the real CLI: `--wait` (issue 23 item 3) and a full `state_dir` (item 18); docs/contract.md §1."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from harness.cluster import Cluster
from harness.env import need, wait_until

pytestmark = pytest.mark.loopback


@pytest.fixture
def lab(tmp_path, daemons):
    def make(clients=("worker-0",), before_agent=None):
        c = Cluster(tmp_path / "cluster", workers=2)
        if before_agent:
            before_agent(c)
        c.agent = daemons("agent", c.agent_ini, name="agent")
        c.agent.wait_log("Listening On: 'mtc client receive' socket", count=3)
        c.clients = {name: daemons("client", c.host(name).ini, name=name) for name in clients}
        return c
    return make


def mtce(mtce_cmd, c, *args, timeout=30):
    start = time.monotonic()
    r = subprocess.run(mtce_cmd + list(args) + ["-c", c.agent_ini], capture_output=True,
                       text=True, timeout=timeout)
    r.elapsed = time.monotonic() - start
    return r


def host(mtce_cmd, c, name) -> dict:
    r = mtce(mtce_cmd, c, "hosts", "--json")
    return next((h for h in json.loads(r.stdout) if h["hostname"] == name), {}) \
        if r.returncode == 0 else {}


def ok_everywhere(mtce_cmd, c, name) -> bool:
    h = host(mtce_cmd, c, name)
    return bool(h) and h["availability"] == "online" and all(
        n["state"] == "ok" and n["last_seen_s"] is not None for n in h["networks"].values())


def test_reboot_wait_exits_0_on_the_ack_and_1_when_no_ack_comes(lab, mtce_cmd):
    """docs/contract.md §1: `mtce reboot HOST --wait` exits 0 once the host ACKed, naming the
    networks; on a host whose client is not running it waits until its deadline, says so
    and exits 1; without --wait it returns at once."""
    c = lab(clients=("worker-0",))
    wait_until(lambda: ok_everywhere(mtce_cmd, c, "worker-0"), 20, interval=0.3,
               what="worker-0 ok on every network")
    r = mtce(mtce_cmd, c, "reboot", "worker-0", "--wait")
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith("worker-0 reboot ACKed on ")
    assert set(line.split(" on ")[1].split(",")) == {"pxeboot", "mgmt", "cluster-host"}
    assert r.elapsed < 10
    wait_until(lambda: "reboot" in c.host("worker-0").actions(), 10, what="reboot action")
    r = mtce(mtce_cmd, c, "reboot", "worker-1", "--wait", "2")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip() == "worker-1 reboot: no ACK within 2 s (attempt 1 of 5 ; the " \
                               "agent keeps trying)"
    assert 2 <= r.elapsed < 8
    r = mtce(mtce_cmd, c, "reboot", "worker-1")
    assert r.returncode == 0 and "waiting for ACK" in r.stdout
    assert "Traceback" not in c.agent.text()


@pytest.fixture
def tiny_state_dir():
    """A 64 KiB tmpfs to mount on the agent's state_dir; unmounted at teardown."""
    need(os.geteuid() == 0, "mounting a tmpfs needs root")
    mounted = []

    def mount(path: str) -> str:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", path],
                           capture_output=True, text=True, timeout=20)
        need(r.returncode == 0, f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=20)


def fill(directory: str) -> str:
    """Fill the file system of `directory` to the last byte; the filler's path."""
    path = os.path.join(directory, "filler")
    with open(path, "wb", buffering=0) as f:
        try:
            for _ in range(1 << 12):                  # bounded: 64 KiB in 4 KiB writes
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return path


def test_lock_on_a_full_state_dir_exits_1_and_changes_nothing(lab, mtce_cmd, tiny_state_dir):
    """docs/contract.md §1, issue 23 item 18: with the agent's state_dir full, `mtce lock` exits 1
    and says why; the host is not locked (no LOCKED reaches it, `mtce hosts` unchanged).
    With room again, the same command locks it, and the lock is in the file."""
    mounted = []
    c = lab(clients=("worker-0",), before_agent=lambda c: mounted.append(
        tiny_state_dir(c.controller.paths["state_dir"])))
    state_dir = mounted[0]
    wait_until(lambda: ok_everywhere(mtce_cmd, c, "worker-0"), 20, interval=0.3,
               what="worker-0 ok on every network")
    filler = fill(state_dir)
    r = mtce(mtce_cmd, c, "lock", "worker-0")
    assert r.returncode == 1
    assert "worker-0 not locked: cannot save the operator state" in r.stderr
    assert "No space left on device" in r.stderr and "nothing changed" in r.stderr
    time.sleep(1.0)                       # what a wrongly sent LOCKED would have done by now
    w0 = c.host("worker-0")
    assert not os.path.exists(os.path.join(w0.paths["run_dir"], ".node_locked"))
    h = host(mtce_cmd, c, "worker-0")
    assert (h["administrative"], h["administrative_source"]) == ("unlocked", "inventory")
    assert "worker-0 lock refused" in c.agent.text()
    os.unlink(filler)
    r = mtce(mtce_cmd, c, "lock", "worker-0", "--wait")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("worker-0 lock ACKed on ")
    saved = json.load(open(os.path.join(state_dir, "administrative.json")))
    assert saved["hosts"]["worker-0"]["administrative"] == "locked"
    wait_until(lambda: os.path.exists(os.path.join(w0.paths["run_dir"], ".node_locked")), 10,
               what="the client locked")


def test_a_burst_of_commands_at_once_is_served_and_waits_are_refused_by_the_agent(lab,
                                                                                  mtce_cmd):
    """Issue 23 item 3, docs/contract.md §1: 40 commands at the same moment (more than the
    listen backlog) are all answered, none fails with "Resource temporarily unavailable";
    20 `--wait` ones at once: 16 wait, the others get the agent's own refusal
    ("16 commands already wait ..."), never a socket error. The agent then stopped (SIGTERM)
    answers those waiting."""
    import threading
    from mtce import agent_ctl, cli_ctl
    c = lab(clients=())
    path = c.controller.paths["agent_socket"]
    results, go = [], threading.Event()

    def one(req, timeout):
        go.wait(10)
        try:
            results.append(cli_ctl.request(path, req, timeout))
        except cli_ctl.CtlError as err:
            results.append(str(err))

    threads = [threading.Thread(target=one, args=({"cmd": "hosts"}, 20), daemon=True)
               for _ in range(40)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(30)
    assert len(results) == 40
    assert [r for r in results if not (isinstance(r, dict) and r.get("ok"))] == []

    results.clear()
    go.clear()
    req = {"cmd": "reboot", "host": "worker-1", "wait": 60}
    threads = [threading.Thread(target=one, args=(req, 70), daemon=True) for _ in range(20)]
    for t in threads:
        t.start()
    go.set()
    wait_until(lambda: len(results) >= 20 - agent_ctl.MAX_WAITING, 20, interval=0.1,
               what="the refusals")
    c.agent.stop()
    for t in threads:
        t.join(20)
    refused = [r for r in results if isinstance(r, dict) and "already wait" in r.get("error", "")]
    stopped = [r for r in results if r == {"ok": False,
                                           "error": "the agent stopped before the outcome"}]
    assert (len(refused), len(stopped)) == (20 - agent_ctl.MAX_WAITING, agent_ctl.MAX_WAITING), \
        results


def test_a_waiting_command_whose_agent_is_killed_says_so(lab, mtce_cmd):
    """Issue 23 item 3, docs/contract.md §1: `mtce reset HOST --wait` whose agent is killed
    (-9) while it waits: one line saying the agent closed the connection without answering,
    exit 1 (it read "the agent's reply is not JSON")."""
    import signal
    c = lab(clients=())
    proc = subprocess.Popen(mtce_cmd + ["reset", "worker-1", "--wait", "30", "-c", c.agent_ini],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: "worker-1 sending 'reset' request" in c.agent.text(), 20,
                   interval=0.1, what="the reset sent")
        c.agent.signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert proc.returncode == 1 and out == ""
    assert err.splitlines() == ["mtce: the agent closed the connection without answering "
                                "(stopped or killed)"], err
