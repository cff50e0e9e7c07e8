"""mtce.agent_alarm_store: de-duplication, the state file across restarts, corrupt and
unwritable files."""

import datetime
import json
import os

import pytest

from mtce.agent_alarm_store import Alarm, AlarmSet, AlarmStore, hook_payload
from mtce.agent_decisions import ClearAlarm, RaiseAlarm

WALL = 1_780_000_000.25


def alarm(host="worker-0", wall=WALL):
    return Alarm.new("200.003", host, "minor", f"{host} pxeboot network communication failure",
                     wall)


def test_alarm_json_is_the_contract_object():
    doc = alarm().to_json()
    assert list(doc) == ["id", "host", "severity", "reason", "raised_at"]
    assert doc["id"] == "200.003" and doc["severity"] == "minor"
    when = datetime.datetime.fromisoformat(doc["raised_at"])
    assert when.timestamp() == WALL and when.utcoffset() == datetime.timedelta(0)
    payload = json.loads(hook_payload(alarm(), "clear"))
    assert payload["action"] == "clear" and payload["host"] == "worker-0"


def test_no_duplicates_across_save_and_load(tmp_path):
    store = AlarmStore(str(tmp_path))
    assert store.load() is None                        # first start: no file, no problem
    assert store.raise_(alarm()) is True
    assert store.raise_(alarm(wall=WALL + 60)) is False         # already active
    assert store.raise_(alarm("worker-1")) is True
    restarted = AlarmStore(str(tmp_path))              # a simulated agent restart
    assert restarted.load() is None
    assert restarted.active() == store.active()
    assert restarted.get("worker-0", "200.003").raised_at == alarm().raised_at
    assert restarted.raise_(alarm()) is False
    on_disk = json.loads((tmp_path / "alarms.json").read_text())
    assert [a["host"] for a in on_disk["alarms"]] == ["worker-0", "worker-1"]
    assert sorted(os.listdir(tmp_path)) == ["alarms.json"]       # no temp file left behind


def test_clear_is_persisted(tmp_path):
    store = AlarmStore(str(tmp_path))
    store.raise_(alarm())
    cleared = store.clear("worker-0", "200.003")
    assert cleared == alarm()
    assert store.clear("worker-0", "200.003") is None
    restarted = AlarmStore(str(tmp_path))
    assert restarted.load() is None and restarted.active() == [] and len(restarted) == 0


def test_corrupt_file_is_handled(tmp_path):
    (tmp_path / "alarms.json").write_text('{"version": 1, "alarms": [')
    store = AlarmStore(str(tmp_path))
    problem = store.load()
    assert problem and "alarms.json" in problem and "not JSON" in problem
    assert store.active() == []
    assert store.raise_(alarm())                       # the next change writes a good file
    fresh = AlarmStore(str(tmp_path))
    assert fresh.load() is None and len(fresh) == 1


def test_bad_entries_are_skipped(tmp_path):
    good = alarm().to_json()
    text = json.dumps({"version": 1, "alarms": [good, {"id": "200.003"}, 7, good]})
    (tmp_path / "alarms.json").write_text(text)
    store = AlarmStore(str(tmp_path))
    problem = store.load()
    assert "entry 1 ignored" in problem and "entry 2 ignored" in problem
    assert "entry 3 ignored: duplicate 200.003 for worker-0" in problem
    assert store.active() == [alarm()]


def test_other_unreadable_files(tmp_path):
    for text in ("[]", '{"version": 9, "alarms": []}', "\xff\xfe garbage"):
        (tmp_path / "alarms.json").write_text(text, encoding="latin-1")
        store = AlarmStore(str(tmp_path))
        assert store.load() and store.active() == []
    os.remove(tmp_path / "alarms.json")
    os.mkdir(tmp_path / "alarms.json")                 # not a file at all
    store = AlarmStore(str(tmp_path))
    assert "cannot read" in store.load()


def test_unwritable_state_dir_does_not_raise(tmp_path):
    blocker = tmp_path / "state"
    blocker.write_text("a file where the directory should be")
    store = AlarmStore(str(blocker))
    assert store.raise_(alarm()) is True               # the state in memory is right
    assert store.save_problem and store.save_failures == 1
    assert store.active() == [alarm()]


def test_state_dir_is_created(tmp_path):
    store = AlarmStore(str(tmp_path / "var" / "lib" / "mtce"))
    store.raise_(alarm())
    assert store.save_problem is None
    assert (tmp_path / "var" / "lib" / "mtce" / "alarms.json").exists()


def test_alarm_set_is_pure_and_round_trips():
    s = AlarmSet([alarm(), alarm(), alarm("worker-1")])
    assert len(s) == 2
    back, problems = AlarmSet.loads(s.dumps())
    assert problems == [] and back.active() == s.active()


def test_hosts_actions_drive_the_store(tmp_path):
    store = AlarmStore(str(tmp_path))
    raise_ = RaiseAlarm("worker-0", "200.003", "minor",
                        "worker-0 pxeboot network communication failure")
    made = Alarm.new(raise_.alarm_id, raise_.host, raise_.severity, raise_.reason, WALL)
    assert store.raise_(made) and not store.raise_(made)
    clear = ClearAlarm("worker-0", "200.003")
    assert store.clear(clear.host, clear.alarm_id) == made
    assert store.to_json() == []


def iterations_reported(fd: int, want: int, timeout_s: float) -> int:
    """Read the writer's progress pipe (two bytes per iteration) until `want` iterations are
    reported, the pipe closes, or `timeout_s` passes; returns the iterations seen."""
    import select
    import time
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    got, deadline = 0, time.monotonic() + timeout_s
    while got < 2 * want:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(int(left * 1000) + 1):
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        got += len(chunk)
    return got // 2


@pytest.mark.timeout(300)
def test_kill_9_during_thousands_of_state_writes_leaves_the_old_or_the_new_state(tmp_path):
    """Issue 15, docs/contract.md §8 (writes to state_dir are atomic): a writer of alarms.json and
    administrative.json killed with SIGKILL in the middle of its writing, eight times, always
    leaves files that load whole, with no problem; the temporary files a killed writer leaves
    are removed at the next load. Each kill comes after a random number of finished
    iterations (a raise, maybe a clear, an operator state: two to three files replaced), while
    the writer is busy with the next: what proves the point is that it was writing when it
    died, not how fast it wrote (issue 23 item 22: a machine under load writes slower)."""
    import random
    import signal
    import time

    from mtce.store import OperatorStates
    rng = random.Random(3)
    state = str(tmp_path / "state")
    done = []
    for round_ in range(8):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                                   # the writer
            try:
                os.close(r)
                store, ops = AlarmStore(state), OperatorStates(state)
                i = round_ * 100000
                while True:
                    i += 1
                    host = f"worker-{i % 40}"
                    store.raise_(Alarm.new("200.003", host, "minor", f"reason {i}", 1.78e9 + i))
                    if i % 3 == 0:
                        store.clear(f"worker-{(i + 7) % 40}", "200.003")
                    ops.set(host, "locked" if i % 2 else "unlocked", "unlocked", 1.78e9 + i)
                    os.write(w, b"xx")                 # one iteration done
            finally:
                os._exit(0)
        os.close(w)
        want = rng.randint(50, 300)
        try:
            reached = iterations_reported(r, want, timeout_s=30)
            time.sleep(rng.uniform(0, 0.003))          # somewhere inside the next iteration
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        with os.fdopen(r, "rb") as f:
            reached += len(f.read()) // 2
        assert reached >= want, f"round {round_}: the writer did {reached} of {want} iterations"
        done.append(reached)
        store, ops = AlarmStore(state), OperatorStates(state)
        assert store.load() is None, f"round {round_}: alarms.json broken"
        assert ops.load() == [], f"round {round_}: administrative.json broken"
        assert all(a.id == "200.003" and a.host.startswith("worker-") for a in store.active())
        assert not [n for n in os.listdir(state) if n.endswith(".tmp")], "temporaries left"
    assert len(done) == 8


def _fifo(path):
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("what, make", [
    ("nested too deeply", lambda p: p.write_text("[" * 100_000)),
    ("an object nested too deeply", lambda p: p.write_text('{"a":' * 100_000)),
    ("a FIFO", lambda p: _fifo(str(p))),
    ("larger than any state file", lambda p: p.write_bytes(b" " * (64 << 20) + b"[]")),
])
def test_a_state_file_a_hand_or_a_disk_mangled_is_a_problem_never_a_crash_or_a_hang(
        tmp_path, what, make):
    """Issue 23 attack (docs/contract.md §8 "Takeover": the agent loads `state_dir` at start;
    §1: bad input changes nothing and never crashes): `alarms.json` or `administrative.json`
    nested deeply enough to exhaust the JSON parser (before: RecursionError, the agent could
    not start on either controller), a FIFO in its place (before: the start hung in open()),
    or a huge file: each is reported as a problem and the agent starts with nothing from it."""
    from mtce.store import OperatorStates
    make(tmp_path / "alarms.json")
    store = AlarmStore(str(tmp_path))
    problem = store.load()
    assert problem and "alarms.json" in problem and store.active() == [], problem
    make(tmp_path / "administrative.json")
    states = OperatorStates(str(tmp_path))
    problems = states.load()
    assert problems and "administrative.json" in problems[0] and states.hosts() == []


def mnfa(network="pxeboot", hosts=("worker-0", "worker-1"), wall=WALL):
    return Alarm.new("mtce.mnfa", "controller-0", "major", f"{network} lost together", wall,
                     network, hosts)


def test_one_mnfa_alarm_per_network_kept_with_its_hosts_across_a_restart(tmp_path):
    """docs/contract.md §5: mtce.mnfa carries `network` and `hosts`; one per network (the
    agent's hostname is the host of each); raised again naming more hosts, the stored one
    names them and keeps its raised_at; a restart reads it back as it was."""
    store = AlarmStore(str(tmp_path))
    assert store.raise_(mnfa()) and store.raise_(mnfa("cluster-host"))
    doc = store.get("controller-0", "mtce.mnfa", "pxeboot").to_json()
    assert list(doc) == ["id", "host", "severity", "network", "hosts", "reason", "raised_at"]
    assert doc["hosts"] == ["worker-0", "worker-1"]
    assert store.raise_(mnfa(hosts=("worker-0", "worker-1", "worker-2"), wall=WALL + 9)) is False
    restarted = AlarmStore(str(tmp_path))
    assert restarted.load() is None
    again = restarted.get("controller-0", "mtce.mnfa", "pxeboot")
    assert again.hosts == ("worker-0", "worker-1", "worker-2") and again.raised_wall() == WALL
    assert restarted.clear("controller-0", "mtce.mnfa", "cluster-host") is not None
    assert [a.network for a in restarted.active()] == ["pxeboot"]
    payload = json.loads(hook_payload(again, "raise"))
    assert payload["network"] == "pxeboot" and payload["hosts"] == list(again.hosts)


@pytest.mark.parametrize("entry", [{"network": 7}, {"hosts": "worker-0"}, {"hosts": [3]},
                                   {"hosts": [""]}])
def test_a_mangled_mnfa_entry_is_skipped_with_a_problem(tmp_path, entry):
    text = json.dumps({"version": 1, "alarms": [dict(mnfa().to_json(), **entry),
                                                alarm().to_json()]})
    (tmp_path / "alarms.json").write_text(text)
    store = AlarmStore(str(tmp_path))
    assert "entry 0 ignored" in store.load()
    assert store.active() == [alarm()]


def test_a_network_on_an_alarm_that_has_none_is_dropped_when_read(tmp_path):
    """A hand-edited 200.003 with a `network` would never have cleared (it is keyed by
    network): a host's alarm is read without one (the attack on issue 27)."""
    text = json.dumps({"version": 1, "alarms": [dict(alarm().to_json(), network="pxeboot",
                                                     hosts=["worker-0"])]})
    (tmp_path / "alarms.json").write_text(text)
    store = AlarmStore(str(tmp_path))
    assert store.load() is None
    assert store.clear("worker-0", "200.003") == alarm()
