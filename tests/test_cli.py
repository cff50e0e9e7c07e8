"""The command line as a user meets it first: `python3 mtce.py` from a fresh clone."""

from __future__ import annotations

import os
import subprocess
import signal
import sys

import pytest

from harness.env import PROGRAM, REPO, shipped


def test_without_the_venv_one_line_says_what_to_run(tmp_path):
    """Issue 11 item 11, docs/contract.md §1: plain `python3 mtce.py ...` without the dependencies
    (here: a Python that sees no site-packages) prints one line saying what to run, exit 2,
    no traceback. Run against an installed zipapp (MTCE_BIN), which bundles them, the same
    command gives its one-line config error instead."""
    source = os.path.join(REPO, "mtce.py")
    target = source if PROGRAM[-1:] == [source] or not os.environ.get("MTCE_BIN") \
        else PROGRAM[-1]
    ini = tmp_path / "mtc.ini"
    ini.write_text("[agent]\noffline_threshold = 0\n")      # typed by configobj: refused
    r = subprocess.run([sys.executable, "-S", "-E", target, "agent", "-c", str(ini)],
                       capture_output=True, text=True, timeout=30, cwd=str(tmp_path))
    assert r.returncode == 2, r
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    if target == source:
        assert "make venv" in r.stderr and ".venv/bin/python mtce.py" in r.stderr
        assert "python3 dist/mtce.pyz" in r.stderr
    else:
        assert f"{ini}:2: [agent] offline_threshold:" in r.stderr
    version = subprocess.run([sys.executable, "-S", "-E", target, "--version"],
                             capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("mtce "), version


@pytest.mark.loopback
@pytest.mark.parametrize("mode,foreground,inside", [
    ("agent", True, "absolute"), ("agent", False, "absolute"), ("client", True, "absolute"),
    ("client", False, "absolute"), ("agent", False, "relative"), ("client", True, "relative")])
def test_relative_paths_are_taken_from_the_start_directory_for_every_reload(
        tmp_path, mtce_cmd, mode, foreground, inside):
    """Issue 23 item 2, docs/contract.md §1: `mtce agent -c ag/mtc.ini` (and the client, with and
    without -f) started in a directory, the paths inside the file absolute or relative
    too: the daemon (whose working directory is `/` once it runs) still reads the same files
    on SIGHUP, twice, and the ctl commands started there find its socket."""
    from harness.cluster import Cluster
    from harness.env import wait_until
    from harness.fakehost import assert_harmless
    c = Cluster(tmp_path / "ag", workers=1)
    host = c.controller if mode == "agent" else c.host("worker-0")
    if inside == "relative":
        host.values["paths"] = {k: os.path.relpath(v, tmp_path) for k, v in host.paths.items()}
        if mode == "agent":
            host.values["agent"]["inventory"] = os.path.relpath(c.inventory, tmp_path)
        host.write_ini()
    assert_harmless(host.ini)
    ini = os.path.relpath(host.ini, tmp_path)
    program = "mtcAgent" if mode == "agent" else "mtcClient"
    argv = mtce_cmd + [mode, "-c", ini] + (["-f"] if foreground else [])
    stderr = tmp_path / "stderr"
    log = stderr if foreground else os.path.join(host.paths["log_dir"], f"{program}.log")
    pidfile = os.path.join(host.paths["pid_dir"], f"{program}.pid")
    ready = "Listening On: 'mtc client receive' socket" if mode == "agent" else "Identity    :"
    reloaded = ("inventory reloaded: 0 added, 0 removed, 0 changed" if mode == "agent"
                else "reload: configuration unchanged")

    def text():
        try:
            with open(log, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    with open(stderr, "wb") as err:
        proc = subprocess.Popen(argv, cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                                stdout=err, stderr=subprocess.STDOUT)
    pid = None
    try:
        if not foreground:
            assert proc.wait(20) == 0, stderr.read_text()
        pid = int(wait_until(lambda: os.path.exists(pidfile) and open(pidfile).read().strip(),
                             10, what="the pidfile"))
        wait_until(lambda: ready in text(), 15, what="the daemon up")
        for n in (1, 2):
            os.kill(pid, signal.SIGHUP)
            wait_until(lambda: text().count(reloaded) >= n or "reload failed" in text(), 10,
                       what="the reload")
            assert "reload failed" not in text(), text()[-2000:]
        assert f"starting (config {host.ini})" in text()     # the log names the file read
        if mode == "agent":
            r = subprocess.run(mtce_cmd + ["hosts", "--json", "-c", ini], cwd=str(tmp_path),
                               capture_output=True, text=True, timeout=20)
            assert r.returncode == 0, r.stderr
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if not foreground:      # not our child: gone from /proc once it has exited
                wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 10,
                           what="the daemon gone")
        try:
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


# Every command of docs/contract.md §1's table, with arguments it accepts.
EVERY_COMMAND = [["client"], ["agent", "-f"], ["hosts"], ["hosts", "--json"],
                 ["hosts", "--watch", "1"], ["lock", "worker-0"], ["unlock", "worker-0"],
                 ["reboot", "worker-0"], ["reset", "worker-0", "-c", "mtc.ini"],
                 ["alive", "worker-0"], ["alarms", "--json"], ["lab", "--duration", "2"],
                 ["bench", "--quick", "--json"]]


def python_without_the_dependencies() -> list[str]:
    """Debian's python3 as a fresh clone meets it, when it is 3.9+ and lacks the packages;
    else this interpreter without site-packages."""
    plain = "/usr/bin/python3"
    probe = ("import importlib.util, sys; sys.exit(0 if sys.version_info >= (3, 9) and "
             "importlib.util.find_spec('configobj') is None else 1)")
    if os.path.exists(plain) and subprocess.run([plain, "-c", probe], capture_output=True,
                                                timeout=30).returncode == 0:
        return [plain]
    return [sys.executable, "-S", "-E"]


@pytest.mark.source_tree
@pytest.mark.parametrize("argv", EVERY_COMMAND, ids=[" ".join(a) for a in EVERY_COMMAND])
def test_every_command_without_the_dependencies_says_what_to_run(tmp_path, argv):
    """Issue 23 item 6, docs/contract.md §1: plain `python3 mtce.py ARGS` from the source tree
    without the dependencies (a Python that sees no site-packages, as Debian's python3 without the
    venv) prints one line saying what to run and exits 2, for every command, before it
    starts anything (today `lab` prints its header and exits 1); `--version` still works."""
    (tmp_path / "mtc.ini").write_text("[client]\nmtcalive_period = 1\n")
    python = python_without_the_dependencies()
    r = subprocess.run(python + [os.path.join(REPO, "mtce.py")] + argv,
                       capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert r.returncode == 2, r
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1, r
    assert "make venv" in r.stderr and "python3 dist/mtce.pyz" in r.stderr, r.stderr
    version = subprocess.run(python + [os.path.join(REPO, "mtce.py"), "--version"],
                             capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("mtce "), version


def test_daemon_info_is_internal_and_answers(tmp_path):
    """Issue 23 item 19, docs/design.md: `mtce daemon-info` (for the init scripts and the OCF
    agent) is not in `mtce --help` (docs/contract.md §1's table is the interface); it prints
    the [paths] mtce resolves and exits 3 when no daemon runs, 2 for an ini it cannot read."""
    ini = tmp_path / "mtc.ini"
    ini.write_text(f"[paths]\npid_dir: {tmp_path}/pid\n", encoding="utf-8")
    top = subprocess.run(PROGRAM + ["--help"], capture_output=True, text=True, timeout=60)
    assert "daemon-info" not in top.stdout
    r = subprocess.run(PROGRAM + ["daemon-info", "client", "-c", str(ini)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    assert f"pidfile={tmp_path}/pid/mtcClient.pid" in r.stdout.splitlines()
    assert "pid=" in r.stdout.splitlines()
    ini.write_bytes(b"[paths]\npid_dir = /caf\xe9\n")
    r = subprocess.run(PROGRAM + ["daemon-info", "agent", "-c", str(ini)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not UTF-8" in r.stderr


# -- issue 23 items 3, 4, 6: what an operator's command line and output may be ------------------

def run_main(argv) -> int:
    """`mtce ARGV` in this process: its exit code (argparse's SystemExit taken as one)."""
    from mtce import cli
    try:
        return cli.main(argv)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1


@pytest.fixture
def ini(tmp_path):
    path = tmp_path / "mtc.ini"
    path.write_text(f"[paths]\nagent_socket = {tmp_path}/none.sock\n")
    return str(path)


@pytest.mark.parametrize("argv, line", [
    ([], "mtce: a command is required (mtce --help)"),
    (["bogus"], "mtce: argument COMMAND: invalid choice: 'bogus' (choose from ... "
                "(mtce --help)"),
    (["hosts", "extra"], "mtce: hosts: unrecognized arguments: extra (mtce hosts --help)"),
    (["lock"], "mtce: lock: the following arguments are required: HOST (mtce lock --help)"),
    (["lock", "a", "b"], "mtce: lock: unrecognized arguments: b (mtce lock --help)"),
    (["reboot", "x", "--wait", "abc"],
     "mtce: reboot: unrecognized arguments: abc (mtce reboot --help)"),
    (["hosts", "--watch", "abc"],
     "mtce: hosts: argument --watch: not a number of seconds: 'abc' (mtce hosts --help)"),
    (["hosts", "-c"], "mtce: hosts: argument -c: expected one argument (mtce hosts --help)"),
    (["-c"], "mtce: argument -c: expected one argument (mtce --help)"),
    (["agent", "-x"], "mtce: agent: unrecognized arguments: -x (mtce agent --help)"),
    (["lab", "--hosts", "many"],
     "mtce: lab: argument --hosts: invalid int value: 'many' (mtce lab --help)"),
    (["bench", "--jsn"], "mtce: bench: unrecognized arguments: --jsn (mtce bench --help)"),
])
def test_a_usage_error_is_one_line_naming_the_command(capsys, argv, line):
    """Issue 23 item 6, docs/contract.md §1 (exit 2, one line, for every command): argparse's
    two lines (`usage:` and `error:`), and for a subcommand's stray argument the top-level
    usage, become one line naming the command and where its help is."""
    assert run_main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    if "..." in line:                   # argparse's list of choices varies by version
        head, _, tail = line.partition("...")
        assert err.startswith(head) and err.endswith(tail + "\n"), err
    else:
        assert err == line + "\n", err


@pytest.mark.parametrize("argv", [["--help"], ["hosts", "--help"], ["reboot", "-h"]])
def test_help_stays_whole_and_exits_0(capsys, argv):
    """`--help` is asked for: argparse's whole text on stdout, exit 0."""
    assert run_main(argv) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("usage: mtce") and len(out.splitlines()) > 3, out


@pytest.mark.parametrize("argv, what", [
    (["hosts", "--watch", "nan"], "--watch"), (["hosts", "--watch", "inf"], "--watch"),
    (["hosts", "--watch", "1e300"], "--watch"), (["hosts", "--watch", "1e-300"], "--watch"),
    (["hosts", "--watch", "0"], "--watch"), (["hosts", "--watch", "-2"], "--watch"),
    (["hosts", "--watch", "86401"], "--watch"),
    (["reboot", "worker-0", "--wait", "nan"], "--wait"),
    (["lock", "worker-0", "--wait", "1e-300"], "--wait"),
    (["alive", "--wait=-inf", "worker-0"], "--wait"),
    (["reset", "worker-0", "--wait", "3601"], "--wait"),
])
def test_watch_and_wait_refuse_what_is_not_a_sane_interval(monkeypatch, capsys, ini,
                                                                    argv, what):
    """Issue 23 item 4, docs/contract.md §1: `--watch nan|inf|1e300` crashed in time.sleep after
    the first table, `--watch 1e-300` asked the agent in a busy loop: SECONDS outside
    0.1..86400 (`--wait`: 0.1..3600) is a usage error, one line, exit 2, before anything is
    asked of the agent."""
    from mtce import cli_ctl
    monkeypatch.setattr(cli_ctl, "watch", lambda *a, **k: 99)
    monkeypatch.setattr(cli_ctl, "request", lambda *a, **k: pytest.fail("asked the agent"))
    assert run_main(argv + ["-c", ini]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert f"argument {what}: SECONDS is from 0.1 to " in err


@pytest.mark.parametrize("argv, seconds", [
    (["hosts", "--watch", "0.1"], 0.1), (["hosts", "--watch", "86400"], 86400.0),
    (["hosts", "--watch"], 2.0), (["reboot", "worker-0", "--wait", "3600"], 3600.0),
    (["reboot", "--wait", "worker-0"], 60.0)])
def test_sane_intervals_are_taken(argv, seconds):
    from mtce import cli
    args = cli.parse(argv)
    assert (args.watch if args.command == "hosts" else args.wait) == seconds


# -- output that goes away: a closed pipe, a full disk -------------------------------------------

class FakeAgent:
    """The agent's side of the control socket, in a thread: one JSON reply per request,
    by its `cmd` (enough for the operator commands' output paths)."""

    def __init__(self, path: str, replies: dict):
        import socket
        import threading
        self.replies = replies
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        import json
        import time
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn, conn.makefile("rb") as f:      # both closed: the reader's EOF
                conn.settimeout(5)
                req = json.loads(f.readline())
                conn.sendall(json.dumps(self.replies[req["cmd"]]).encode() + b"\n")

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def one_host(i: int) -> dict:
    nets = {n: {"state": "ok", "last_seq": i, "missed": 0, "last_seen_s": 1.0}
            for n in ("mgmt", "cluster-host", "pxeboot")}
    return {"hostname": f"worker-{i}", "personality": "worker", "administrative": "unlocked",
            "availability": "online", "networks": nets}


@pytest.fixture
def fake_agent(tmp_path):
    import tempfile
    short = tempfile.mkdtemp(prefix="mtce-cli-", dir="/tmp")
    path = os.path.join(short, "agent.sock")
    ini = tmp_path / "mtc.ini"
    ini.write_text(f"[paths]\nagent_socket = {path}\n")
    many = [one_host(i) for i in range(1000)]             # a table far beyond a pipe's 64 KiB
    agent = FakeAgent(path, {
        "hosts": {"ok": True, "hosts": many},
        "alarms": {"ok": True, "alarms": [{"id": "200.003", "severity": "minor",
                                           "host": f"worker-{i}", "raised_at": "now",
                                           "reason": "pxeboot lost"} for i in range(1000)]},
        "alive": {"ok": True, "outcome": "worker-0 alive answered on pxeboot"},
        "lock": {"ok": True, "message": "locked sent to worker-0 ; waiting for ACK"},
    })
    yield str(ini)
    agent.close()
    import shutil
    shutil.rmtree(short, ignore_errors=True)


OUTPUT_COMMANDS = [["hosts"], ["hosts", "--json"], ["alarms"], ["alarms", "--json"],
                   ["alive", "worker-0", "--wait", "5"], ["lock", "worker-0"], ["--version"],
                   ["--help"], ["hosts", "--help"]]


def run_into(argv, sink: str, ini: str):
    """`mtce ARGV` with its stdout a pipe whose reader has gone, or /dev/full."""
    if sink == "closed pipe":
        r, w = os.pipe()
        os.close(r)
    else:
        w = os.open("/dev/full", os.O_WRONLY)
    try:
        return subprocess.run(PROGRAM + argv +
                              (["-c", ini] if argv[-1] != "--help" and argv[0] != "--version"
                               else []),
                              stdout=w, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(w)


@pytest.mark.parametrize("argv", OUTPUT_COMMANDS, ids=[" ".join(a) for a in OUTPUT_COMMANDS])
def test_output_into_a_closed_pipe_ends_quietly_with_the_commands_status(fake_agent,
                                                                                  argv):
    """Issue 23 item 4, docs/contract.md §1: `mtce hosts | grep -q X`, `mtce alive HOST --wait |
    true`, `mtce hosts --json | head -1`: the reader goes first; the command ends quietly
    (no traceback), with the status it had (0 here), as `hosts --watch` already did."""
    r = run_into(argv, "closed pipe", fake_agent)
    assert (r.returncode, r.stderr) == (0, ""), r


@pytest.mark.parametrize("argv", OUTPUT_COMMANDS, ids=[" ".join(a) for a in OUTPUT_COMMANDS])
def test_output_that_cannot_be_written_is_one_line_and_exit_1(fake_agent, argv):
    """Issue 23 item 4, docs/contract.md §1 (1: runtime failure, one line): `mtce alarms >
    /dev/full` gave an OSError traceback; now one line saying why, exit 1."""
    r = run_into(argv, "/dev/full", fake_agent)
    assert r.returncode == 1, r
    assert r.stderr.splitlines() == ["mtce: cannot write the output: No space left on "
                                     "device"], r.stderr


@pytest.mark.parametrize("sink", ["closed pipe", "/dev/full"])
def test_the_lab_and_the_bench_output_too(monkeypatch, capsys, tmp_path, sink):
    """The lab's and the bench's own output paths: into /dev/full one line and exit 1; into a
    closed pipe quietly (the bench's status: 0; the lab stops as on Ctrl-C, as before)."""
    from mtce import bench
    monkeypatch.setenv("TMPDIR", str(tmp_path))

    class Quick:
        def __init__(self, plan, root):
            pass

        def run(self):
            return {}

        def close(self):
            pass

    monkeypatch.setattr(bench, "Bench", Quick)
    monkeypatch.setattr(bench, "met", lambda result: True)
    monkeypatch.setattr(bench, "table", lambda result: "x" * 200000)
    if sink == "closed pipe":
        r, w = os.pipe()
        os.close(r)
    else:
        w = os.open("/dev/full", os.O_WRONLY)
    out = os.fdopen(w, "w")
    monkeypatch.setattr(sys, "stdout", out)
    try:
        rc = run_main(["bench", "--quick"])
    finally:
        monkeypatch.undo()
        out.close()
    err = capsys.readouterr().err
    if sink == "closed pipe":
        assert (rc, err) == (0, "")
    else:
        assert rc == 1 and err.splitlines() == ["mtce: cannot write the output: No space left "
                                                "on device"], err
    if sink == "/dev/full":
        with open("/dev/full", "w") as full:
            # Buffered as a user's shell runs it (the chroot run found exit 120 and a
            # traceback from Python's last flush, hidden where PYTHONUNBUFFERED is set).
            env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
            lab = subprocess.run(PROGRAM + ["lab", "--duration", "2"], stdout=full,
                                 stderr=subprocess.PIPE, text=True, timeout=120,
                                 cwd=str(tmp_path), env=env)
        assert lab.returncode == 1, lab
        assert lab.stderr.splitlines() == ["mtce: cannot write the output: No space left on "
                                           "device"], lab.stderr


# -- issue 23 item 6: what the documentation tells an operator to run ------------------------------

def doc_files() -> list[str]:
    docs = os.path.join(REPO, "docs")
    return [os.path.join(REPO, "README.md"), os.path.join(REPO, "debian", "mtce.1")] + \
        sorted(os.path.join(docs, n) for n in os.listdir(docs) if n.endswith(".md"))


@pytest.mark.source_tree
def test_the_docs_tell_a_way_of_running_mtce_that_works():
    """Issue 23 item 6, docs/contract.md §1: plain `python3 mtce.py ARGS` without the venv
    exits 2 for every command; docs/lab.md said it "works the same" and gave it as the second
    terminal's command. A command line in the docs runs `.venv/bin/python mtce.py`, `python3
    dist/mtce.pyz` or `mtce`; plain `python3 mtce.py` only where the line says it needs the
    dependencies (or fails without them)."""
    import re
    wrong = []
    for path in doc_files():
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if re.search(r"(?<![\w/.-])python3 mtce\.py\b", line) and \
                        "without" not in line:
                    wrong.append(f"{os.path.relpath(path, REPO)}:{n}: {line.strip()}")
    assert len(doc_files()) > 5
    assert not wrong, "\n".join(wrong)


def man_page() -> str:
    """debian/mtce.1 (in the chroot run: the one the package installs)."""
    import gzip
    path = shipped("debian/mtce.1", "/usr/share/man/man1/mtce.1.gz")
    with (gzip.open if path.endswith(".gz") else open)(path, "rt", encoding="utf-8") as f:
        return f.read()


def man_synopsis() -> dict:
    """The man page's SYNOPSIS: {command: the options it shows}."""
    import re
    text = man_page()
    block = text.split(".SH SYNOPSIS", 1)[1].split(".SH ", 1)[0]
    shown = {}
    for group in block.split(".br"):
        words = " ".join(re.sub(r"^\.[A-Z]+ ?", "", line) for line in group.splitlines()
                         if line.strip()).replace("\\-", "-").replace("|", " | ").split()
        words = [w.strip("[]") for w in words]
        if not words or words[0] != "mtce":
            continue
        commands = []
        for w in words[1:]:
            if w == "|":
                continue
            if w.startswith("-") or w.isupper() or not w:
                break
            commands.append(w)
        options = {w for w in words if w.startswith("-")}
        for c in commands or ["(top)"]:
            shown.setdefault(c, set()).update(options)
    return shown


def test_the_man_page_shows_every_option_of_every_command():
    """Issue 23 item 6: the man page's SYNOPSIS lacked `reboot --lazy` and `-c` for most
    commands: it shows every option `mtce COMMAND --help` has (docs/contract.md §1: every command
    takes `-c FILE`), and OPTIONS gives the bounds of `--watch` and `--wait`."""
    import argparse
    from mtce import cli
    top = cli._parser()
    shown = man_synopsis()
    missing = []
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name == "daemon-info":       # internal (docs/design.md), in NOTES
                    continue
                options = {s for a in sub._actions for s in a.option_strings
                           if s.startswith("--") or s in ("-c", "-f")} - {"--help"}
                lacking = options - shown.get(name, set())
                if lacking:
                    missing.append(f"mtce {name}: {sorted(lacking)}")
    assert not missing, "\n".join(missing)
    options = man_page().split(".SH OPTIONS", 1)[1].split(".SH ", 1)[0]
    watch = options.split("\\-\\-watch", 1)[1].split(".TP", 1)[0]
    wait = options.split("\\-\\-wait", 1)[1].split(".TP", 1)[0]
    assert f"{cli.MIN_INTERVAL_S:g} to {cli.MAX_WATCH_S:g}" in watch, watch
    assert f"{cli.MIN_INTERVAL_S:g} to {cli.MAX_WAIT_S:g}" in wait, wait
