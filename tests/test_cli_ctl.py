"""The operator's side of the control socket (cli_ctl.py, agent_ctl.py), in one process: the
real Agent and Clients on the FakeNetwork (tests/harness/sim.py), the agent's real Unix control
socket, `cli_ctl.cli` as `mtce` runs it. Issue 23 items 3 (`--wait`), 4 (`hosts --watch`) and
18 (a full `state_dir`); docs/contract.md §1.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile

import pytest

from mtce import agent_ctl, cli_ctl, config
from mtce.agent_commands import CMD_ATTEMPTS, CMD_RETRY_S
from mtce.cli import parse
from mtce.states import Cmd, Net

from harness.sim import to_client

pytestmark = pytest.mark.sim(ctl=True)



class Asker:
    """`cli_ctl.cli`'s `ask`: one request over the agent's real control socket, protocol time
    running (in 50 ms steps) until the reply is whole; `elapsed` is the protocol time."""

    def __init__(self, s, limit_s: float = 200.0):
        self.s, self.limit_s = s, limit_s
        self.elapsed = None

    def connect(self, req: dict) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.s.agent.cfg.paths.agent_socket)
        sock.sendall(json.dumps(req).encode() + b"\n")
        sock.setblocking(False)
        self.s.settle()
        return sock

    def __call__(self, req: dict, timeout: float) -> dict:
        t0 = self.s.clock.now()
        sock = self.connect(req)
        data = bytearray()
        try:
            while self.s.clock.now() - t0 < min(timeout, self.limit_s):
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    self.s.run(0.05)
                    continue
                if not chunk:
                    break
                data += chunk
            else:
                raise cli_ctl.CtlError(f"the agent did not answer within {timeout:g} s")
        finally:
            sock.close()
        self.elapsed = self.s.clock.now() - t0
        return json.loads(data)


def mtce(s, *argv, ask=None):
    """`mtce ARGV` against the sim's agent: (exit code, Asker)."""
    args = parse(list(argv))
    ask = ask or Asker(s)
    return cli_ctl.cli(args, config.load(s.files.agent_ini), ask=ask), ask


# -- item 3: --wait ------------------------------------------------------------------------------

def test_wait_on_an_offline_host_gives_up_after_five_attempts_at_10_s_and_exits_1(sim, capsys):
    """docs/contract.md §1, docs/protocol.md §5.4 "Operator commands": `mtce reboot
    HOST --wait` on a host that never ACKs: the
    agent sends 5 attempts, 10 s apart, gives up 10 s after the last; the command says so
    and exits 1 (today it said `waiting for ACK` and exited 0)."""
    s = sim(clients=[]).start()
    rc, ask = mtce(s, "reboot", "worker-1", "--wait")
    out, err = capsys.readouterr()
    assert rc == 1
    assert err.strip() == "worker-1 reboot: no ACK after 5 attempts (gave up)"
    # Each retry is armed when the last one went out: up to one 50 ms step late each here.
    assert CMD_ATTEMPTS * CMD_RETRY_S <= ask.elapsed <= CMD_ATTEMPTS * (CMD_RETRY_S + 0.05) + 0.05
    assert len(to_client(s, "worker-1", Net.MGMT, Cmd.REBOOT)) == CMD_ATTEMPTS
    assert s.agent_capture.count("worker-1 reboot request failed ; no ACK after 5 attempts") == 1


@pytest.mark.parametrize("argv, line", [
    (["reboot", "worker-1", "--wait"], "worker-1 reboot ACKed on "),
    (["reboot", "--wait", "worker-1"], "worker-1 reboot ACKed on "),
    (["reboot", "worker-1", "--lazy", "--wait", "30"], "worker-1 lazy reboot ACKed on "),
    (["reset", "worker-1", "--wait"], "worker-1 reset ACKed on "),
    (["lock", "worker-1", "--wait"], "worker-1 lock ACKed on "),
    (["alive", "worker-1", "--wait"], "worker-1 alive answered on "),
])
def test_wait_on_an_online_host_exits_0_and_names_the_networks_that_acked(sim, capsys, argv,
                                                                          line):
    """docs/contract.md §1: with every network up the host ACKs on each network the command went
    over (reset: not pxeboot; alive: answered by the host's pxeboot mtcAlive); the command
    exits 0 about a second later (the other networks' ACKs are gathered) and names them."""
    s = sim(clients=["worker-1"]).start()
    s.run_until(lambda: s.all_ok(["worker-1"]), 20, what="worker-1 ok")
    rc, ask = mtce(s, *argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.startswith(line)
    nets = set(out.strip()[len(line):].split(","))
    expected = {"reset": {"mgmt", "cluster-host"}, "alive": {"pxeboot"}}.get(
        argv[0], {"pxeboot", "mgmt", "cluster-host"})
    if "--lazy" in argv:
        expected = {"pxeboot", "mgmt"}           # docs/protocol.md §5.4: not over cluster-host
    assert nets == expected
    assert ask.elapsed < 1.5


KEPT = {"lock": "the agent keeps worker-1 locked (state_dir) and tells it again when it is "
                "heard",
        "unlock": "the agent keeps worker-1 unlocked (state_dir) and tells it again when it "
                  "is heard"}


@pytest.mark.parametrize("word", ["lock", "unlock"])
def test_lock_wait_that_gets_no_ack_says_the_lock_is_kept(sim, capsys, word):
    """Issue 23 item 3, docs/contract.md §1, docs/protocol.md §5.4 "Locked correction": `mtce
    lock HOST --wait` on a host that never ACKs exits 1, but unlike a reboot nothing is lost:
    the lock is recorded (kept in state_dir) and the locked correction tells the host as soon
    as its mtcAlive arrives. The give-up and the timeout both say so (today: only "gave up")."""
    s = sim(clients=[]).start()
    if word == "unlock":
        assert s.request(cmd="lock", host="worker-1")["ok"]
        s.run(CMD_ATTEMPTS * CMD_RETRY_S + 1)
    rc, _ = mtce(s, word, "worker-1", "--wait")
    err = capsys.readouterr().err
    assert rc == 1
    assert err.strip() == f"worker-1 {word}: no ACK after 5 attempts (gave up) ; {KEPT[word]}"
    rc, _ = mtce(s, word, "worker-1", "--wait", "2")
    err = capsys.readouterr().err
    assert rc == 1
    assert err.strip() == f"worker-1 {word}: no ACK within 2 s (attempt 1 of 5 ; the agent " \
                          f"keeps trying) ; {KEPT[word]}"
    assert s.hosts()["worker-1"]["administrative"] == f"{word}ed"
    assert s.hosts()["worker-1"]["administrative_source"] == "operator"


def test_wait_times_out_at_its_deadline_and_the_agent_keeps_trying(sim, capsys):
    s = sim(clients=[]).start()
    rc, ask = mtce(s, "reboot", "worker-1", "--wait", "5")
    _, err = capsys.readouterr()
    assert rc == 1
    assert err.strip() == "worker-1 reboot: no ACK within 5 s (attempt 1 of 5 ; the agent " \
                          "keeps trying)"
    assert 5.0 <= ask.elapsed < 5.1
    s.run(CMD_RETRY_S - 5 + 0.1)
    assert len(to_client(s, "worker-1", Net.MGMT, Cmd.REBOOT)) == 2


def test_without_wait_the_command_returns_once_the_agent_has_taken_it(sim, capsys):
    s = sim(clients=[]).start()
    rc, ask = mtce(s, "reboot", "worker-1")
    out, _ = capsys.readouterr()
    assert rc == 0 and "reboot sent to worker-1" in out and ask.elapsed < 0.1


def test_a_waiting_client_that_goes_away_is_forgotten(sim):
    """The loop never waits for a client: a waiting connection is a reader like any other;
    closed, it is closed and its waiter dropped; the command itself goes on."""
    s = sim(clients=[]).start()
    ask = Asker(s)
    sock = ask.connect({"cmd": "reboot", "host": "worker-1", "wait": 60})
    assert len(s.agent.ctl.waiting) == 1 and len(s.agent.outbox.commands.watches) == 1
    sock.close()
    s.settle()
    assert s.agent.ctl.waiting == {} and s.agent.outbox.commands.watches == {}
    s.run(CMD_RETRY_S + 0.1)
    assert len(to_client(s, "worker-1", Net.MGMT, Cmd.REBOOT)) == 2


def test_a_waiting_client_that_only_shut_its_sending_side_still_gets_its_outcome(sim):
    """`echo '{...}' | nc -U agent.sock` closes its sending side after the request: that is
    not a client gone; its outcome still comes."""
    s = sim(clients=[]).start()
    sock = Asker(s).connect({"cmd": "reboot", "host": "worker-1", "wait": 5})
    sock.shutdown(socket.SHUT_WR)
    s.run(1)
    assert len(s.agent.ctl.waiting) == 1
    s.run(4.1)
    sock.setblocking(True)
    sock.settimeout(5)
    reply = json.loads(sock.makefile().readline())
    sock.close()
    assert reply["outcome"].startswith("worker-1 reboot: no ACK within 5 s")


def test_at_most_max_waiting_wait_and_one_more_is_refused_before_anything_is_sent(sim):
    s = sim(clients=[]).start()
    ask = Asker(s)
    socks = [ask.connect({"cmd": "reboot", "host": "worker-1", "wait": 60})
             for _ in range(agent_ctl.MAX_WAITING)]
    sent = len(to_client(s, "worker-1", Net.MGMT, Cmd.REBOOT))
    assert sent == agent_ctl.MAX_WAITING and len(s.agent.ctl.waiting) == agent_ctl.MAX_WAITING
    reply = ask({"cmd": "reboot", "host": "worker-1", "wait": 60}, 5)
    assert not reply["ok"] and "already wait" in reply["error"]
    assert len(to_client(s, "worker-1", Net.MGMT, Cmd.REBOOT)) == sent, "nothing sent"
    # They all waited for the same command (each new one replaced the last): one give-up,
    # told to every one of them.
    s.run(CMD_ATTEMPTS * CMD_RETRY_S + 1)
    for sock in socks:
        sock.setblocking(True)
        sock.settimeout(5)
        reply = json.loads(sock.makefile().readline())
        assert reply["outcome"] == "worker-1 reboot: no ACK after 5 attempts (gave up)"
        sock.close()
    assert s.agent.ctl.waiting == {}


def test_the_agent_stopping_answers_its_waiters(sim):
    s = sim(clients=[]).start()
    sock = Asker(s).connect({"cmd": "reboot", "host": "worker-1", "wait": 60})
    s.agent.stop()
    sock.setblocking(True)
    sock.settimeout(5)
    reply = json.loads(sock.makefile().readline())
    sock.close()
    assert reply == {"ok": False, "error": "the agent stopped before the outcome"}


@pytest.mark.parametrize("wait", [0, -1, True, "5", 1e9, [5]])
def test_a_bad_wait_is_refused_and_nothing_is_sent(sim, wait):
    s = sim(clients=[]).start()
    reply = s.request(cmd="reboot", host="worker-1", wait=wait)
    assert not reply["ok"] and reply["error"].startswith("bad request: wait")
    assert to_client(s, "worker-1", Net.MGMT, Cmd.REBOOT) == []


@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf", "4000"])
def test_a_bad_wait_on_the_command_line_is_a_usage_error(sim, capsys, value):
    from mtce import cli
    s = sim(clients=[]).start()
    assert cli.main(["reboot", "worker-1", "--wait", value, "-c", s.files.agent_ini]) == 2
    assert "argument --wait: SECONDS is from 0.1 to 3600" in capsys.readouterr().err
    assert to_client(s, "worker-1", Net.MGMT, Cmd.REBOOT) == []


# -- item 18: a full state_dir ------------------------------------------------------------------

def enospc(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class Writer:
    """store.atomic_write, or ENOSPC while `full`; counts the attempts."""

    def __init__(self, full: bool = True):
        from mtce import store
        self.real, self.full, self.calls = store.atomic_write, full, 0

    def __call__(self, *args):
        self.calls += 1
        if self.full:
            enospc()
        return self.real(*args)


@pytest.mark.parametrize("first, then", [(None, "lock"), ("lock", "unlock")])
def test_a_lock_or_unlock_that_cannot_be_saved_is_refused_and_changes_nothing(sim, capsys,
                                                                             first, then):
    """docs/contract.md §1, §4; issue 23 item 18: `mtce lock` on a full state_dir exits 1; nothing
    is sent to the host, the agent's state is unchanged (a lock it could not keep would be
    undone by the next restart, behind the operator's back)."""
    s = sim(clients=["worker-1"]).start()
    s.run_until(lambda: s.all_ok(["worker-1"]), 20, what="worker-1 ok")
    if first:
        assert mtce(s, first, "worker-1")[0] == 0
        s.run(2)
    before = s.hosts()["worker-1"]
    file_before = open(s.agent.operator_states.path).read() if first else None
    cmd = Cmd.LOCKED if then == "lock" else Cmd.UNLOCKED
    sent = {net: len(to_client(s, "worker-1", net, cmd)) for net in Net}
    s.agent.operator_states.write = enospc
    rc, _ = mtce(s, then, "worker-1")
    err = capsys.readouterr().err
    assert rc == 1
    assert f"worker-1 not {then}ed: cannot save the operator state" in err
    assert "No space left on device" in err and "nothing changed" in err
    s.run(3)
    after = s.hosts()["worker-1"]
    assert (after["administrative"], after["administrative_source"]) == \
        (before["administrative"], before["administrative_source"])
    assert {net: len(to_client(s, "worker-1", net, cmd)) for net in Net} == sent
    assert s.exists("worker-1", "run_dir", ".node_locked") == (first == "lock")
    assert (open(s.agent.operator_states.path).read() if first else None) == file_before
    assert not os.path.exists(s.agent.operator_states.path) or first
    # Room again: the same command works.
    s.agent.operator_states.write = Writer(full=False)
    assert mtce(s, then, "worker-1")[0] == 0


def test_an_alarm_raised_on_a_full_disk_is_saved_as_soon_as_there_is_room(sim):
    """Issue 23 item 18: an alarm in memory that state_dir could not take is written again
    on the audit tick, once a second while it fails (not every 50 ms tick), logged once a
    minute, and saved within a second of space returning."""
    s = sim(clients=["worker-1"]).start()
    s.run_until(lambda: s.all_ok(["worker-1"]), 20, what="worker-1 ok")
    writer = s.agent.alarms.write = Writer(full=True)
    w1 = s.files.host("worker-1")
    s.net.drop = lambda d: d.src[0] == w1.pxeboot_ip          # worker-1's pxeboot goes dark
    s.run_until(lambda: s.agent.alarms.active(), 60, what="200.003 raised")
    assert [a.id for a in s.agent.alarms.active()] == ["200.003"]
    calls = writer.calls
    s.run(10)
    assert calls + 9 <= writer.calls <= calls + 11, "once a second, not every tick"
    assert s.agent_capture.count("alarms.json: cannot write") == 1
    assert not os.path.exists(s.agent.alarms.path)
    writer.full = False
    s.run(1.0)
    assert [a["id"] for a in json.load(open(s.agent.alarms.path))["alarms"]] == ["200.003"]
    assert s.agent_capture.count("alarms.json written again") == 1


def test_an_operator_state_change_not_saved_is_saved_when_there_is_room(sim):
    """A reload that takes an operator's lock back to the inventory (the file's
    `administrative` changed) on a full disk: memory says inventory, the file still says
    operator; the file follows within a second of room returning."""
    from harness.sim import set_admin_in_file
    s = sim(clients=["worker-1"]).start()
    assert s.request(cmd="lock", host="worker-1")["ok"]
    path = s.agent.operator_states.path
    assert "worker-1" in json.load(open(path))["hosts"]
    writer = s.agent.operator_states.write = Writer(full=True)
    set_admin_in_file(s, "worker-1", "locked")
    s.agent.reload()
    assert s.hosts()["worker-1"]["administrative_source"] == "inventory"
    s.run(3)
    assert "worker-1" in json.load(open(path))["hosts"], "still the old file"
    assert 2 <= writer.calls <= 5
    writer.full = False
    s.run(1.0)
    assert json.load(open(path))["hosts"] == {}


# -- item 4: hosts --watch ----------------------------------------------------------------------

def test_watch_into_a_closed_pipe_ends_quietly(tmp_path, mtce_cmd):
    """docs/contract.md §1: `mtce hosts --watch | head -1` ends without a traceback once `head`
    has gone (exit 0)."""
    from harness.fakehost import FakeHost
    host = FakeHost(tmp_path / "h")
    watch = subprocess.Popen(mtce_cmd + ["hosts", "--watch", "0.1", "-c", host.ini],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(["head", "-1"], stdin=watch.stdout, stdout=subprocess.PIPE)
    watch.stdout.close()
    try:
        first, _ = head.communicate(timeout=20)
        _, err = watch.communicate(timeout=20)
    finally:
        for p in (watch, head):
            if p.poll() is None:
                p.kill()
                p.communicate(timeout=5)
    assert first.startswith(b"mtce hosts --watch 0.1")
    assert watch.returncode == 0, err
    assert err == b""


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def drawn(text: str) -> list[str]:
    """The lines a terminal shows after the last redraw (escape codes removed)."""
    last = text.rsplit("\x1b[?25l", 1)[-1]
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", last).replace("\r", "")
    return [line for line in plain.split("\n") if line.strip()]


@pytest.mark.parametrize("columns", [100, 80, 60])
def test_watch_on_a_narrow_terminal_fits_the_table_and_cuts_no_network(sim, monkeypatch,
                                                                       columns):
    """docs/contract.md §1: below the full table's width, `--watch` draws a compact form (as the
    lab's screen does) where every host's pxeboot state is still there; nothing is cut."""
    s = sim(names=["controller-0", "controller-1", "worker-0", "worker-1"],
            clients=["controller-1", "worker-0", "worker-1"]).start()
    s.run_until(lambda: s.all_ok(["worker-0", "worker-1"]), 20, what="workers ok")
    assert s.request(cmd="lock", host="controller-1")["ok"]     # the footnote line, too
    s.run(2)
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setenv("LINES", "40")
    out = Tty()
    cli_ctl.watch("/x", 2.0, out=out, ask=s.agent.handle_request, sleep=lambda _: None, turns=1)
    lines = drawn(out.getvalue())
    assert all(len(line) < columns for line in lines), [ln for ln in lines if
                                                         len(ln) >= columns]
    header = next(line for line in lines if line.startswith("HOST"))
    assert header.split()[-1] == "PXEBOOT"
    states = {}
    for line in lines:
        word = line.split()[0]
        if word in ("worker-0", "worker-1"):
            states[word] = [w for w in line.split() if w in ("ok", "lost")]
    assert states == {"worker-0": ["ok"] * 3, "worker-1": ["ok"] * 3}
    text = " ".join(" ".join(lines).split())
    assert "* set by mtce lock/unlock (kept in state_dir ; the inventory's administrative " \
           "applies again when it changes)" in text


def test_a_line_the_screen_must_cut_says_so(monkeypatch):
    """What still does not fit (a terminal narrower than the narrowest form) is cut with a
    visible mark, never silently (the lab's screen and `--watch` alike)."""
    from mtce.cli_screen import Screen
    monkeypatch.setenv("COLUMNS", "20")
    monkeypatch.setenv("LINES", "10")
    out = Tty()
    Screen(out).draw(["short", "x" * 40])
    assert drawn(out.getvalue()) == ["short", "x" * 18 + ">"]


# -- the client side of the socket: a busy agent, an agent that dies ---------------------------

@pytest.fixture
def sockpath():
    short = tempfile.mkdtemp(prefix="mtce-ctl-", dir="/tmp")
    yield os.path.join(short, "agent.sock")
    shutil.rmtree(short, ignore_errors=True)


def full_backlog(path: str):
    """A listener that accepts nothing, its backlog full: (listener, the queued sockets)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    queued = []
    for _ in range(64):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            s.close()
            return listener, queued
        queued.append(s)
    pytest.fail("the listen backlog never filled")


def serve_later(listener, queued, after_s: float):
    """After `after_s`, accept everything: the queued ones are closed unanswered, a request
    gets `{"ok": true}`."""
    import threading
    import time

    def run():
        time.sleep(after_s)
        for s in queued:
            s.close()
        listener.settimeout(0.2)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    line = conn.makefile("rb").readline()
                except OSError:
                    continue
                if line:
                    conn.sendall(b'{"ok": true}\n')
                    return
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_full_listen_backlog_is_waited_for_within_the_timeout(sockpath):
    """Issue 23 item 3, docs/contract.md §1: 17 commands at the same moment fill the agent's
    listen backlog; connect() on the CLI's timed (non-blocking) socket then fails with EAGAIN,
    which failed the command at once ("Resource temporarily unavailable", exit 1). A busy
    agent is waited for, within the request's timeout."""
    listener, queued = full_backlog(sockpath)
    try:
        t = serve_later(listener, queued, 0.3)
        assert cli_ctl.request(sockpath, {"cmd": "hosts"}, timeout=5) == {"ok": True}
        t.join(10)
    finally:
        listener.close()


def test_a_backlog_full_for_the_whole_timeout_says_the_agent_is_busy(sockpath):
    import time
    listener, queued = full_backlog(sockpath)
    try:
        start = time.monotonic()
        with pytest.raises(cli_ctl.CtlError) as err:
            cli_ctl.request(sockpath, {"cmd": "hosts"}, timeout=0.5)
        assert 0.5 <= time.monotonic() - start < 2
        assert str(err.value) == f"the agent did not take the connection within 0.5 s " \
                                 f"({sockpath}: too many commands at once ; try again)"
    finally:
        for s in queued:
            s.close()
        listener.close()


@pytest.mark.parametrize("how, says", [
    ("close", "the agent closed the connection without answering (stopped or killed)"),
    ("reset", "the agent closed the connection without answering (stopped or killed)"),
    ("half", "the agent closed the connection in the middle of its reply (stopped or "
             "killed)"),
])
def test_an_agent_gone_without_a_reply_is_said_so(sockpath, how, says):
    """Issue 23 item 3, docs/contract.md §1: the agent killed (-9) while a command waits for
    its outcome: the connection closes with no reply at all, which read "the agent's reply is
    not JSON". Said as what it is (a SIGTERM'd agent still answers "the agent stopped before
    the outcome")."""
    import threading
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sockpath)
    listener.listen(1)

    def run():
        conn, _ = listener.accept()
        conn.settimeout(5)
        if how == "reset":          # unread bytes at the close: the reader gets ECONNRESET
            conn.recv(1, socket.MSG_PEEK)
        else:
            conn.makefile("rb").readline()
        if how == "half":
            conn.sendall(b'{"ok": false, "out')
        conn.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        with pytest.raises(cli_ctl.CtlError) as err:
            cli_ctl.request(sockpath, {"cmd": "reset", "host": "worker-1", "wait": 30}, timeout=10)
        assert str(err.value) == says
    finally:
        t.join(5)
        listener.close()
