"""What the client does to its own host (client_actions.py), where a real process is the point: the
failsafe (docs/contract.md §8 "The failsafe", issue 23 item 14, upstream 9b2fb85). Under systemd it
is a transient unit of its own (`systemd-run`), so stopping mtcclient.service cannot
kill it; elsewhere, or when systemd-run fails, a process detached from the daemon. A fake
`systemd-run` on PATH records its argv; a directory of the test stands for
`/run/systemd/system` (sd_booted); nothing here reaches the machine's systemd."""

from __future__ import annotations

import logging
import os
import stat
import subprocess

import pytest

from harness.env import wait_until
from mtce import client_actions, config, logs
from mtce.client_actions import HostActions
from mtce.clock import FakeClock
from mtce.loop import Loop
from mtce.states import Net


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def host_actions(fakehost, tmp_path, monkeypatch):
    """(HostActions of a fake host, its log lines, the fake systemd-run's argv file, how to
    make the fake succeed, fail or hang, how to say systemd is PID 1)."""
    host = fakehost(failsafe_delay=2)
    cfg = config.load(host.ini)
    clock = FakeClock()
    log = logging.getLogger(f"mtce.test.actions.{id(host)}")
    log.handlers[:] = []
    lines = Lines()
    log.addHandler(lines)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    acts = HostActions(cfg, Loop(clock, log), clock, log, logs.Throttle(log, clock), "worker-0")
    bin_dir, argv_file = tmp_path / "bin", tmp_path / "systemd-run.argv"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")

    def fake_systemd_run(body: str = "exit 0") -> None:
        script = bin_dir / "systemd-run"
        script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > '{argv_file}'\n{body}\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)

    def systemd_booted() -> None:
        marker = tmp_path / "run" / "systemd" / "system"
        marker.mkdir(parents=True)
        monkeypatch.setattr(client_actions, "SYSTEMD_BOOTED", str(marker))

    yield acts, lines.lines, argv_file, fake_systemd_run, systemd_booted, host
    for proc in acts.children:
        proc.kill()
        proc.wait(timeout=10)


def argv_of(argv_file) -> list[str]:
    return argv_file.read_text().splitlines()


def sleep_of(argv: list[str]) -> str:
    """The delay the failsafe unit's script sleeps (as systemd passes it on)."""
    script = argv[argv.index("/bin/sh") + 2].replace("$$", "$")
    return script.split(";", 1)[0]


def as_systemd_runs(argv: list[str]) -> list[str]:
    """The unit's command line as systemd executes it: `$$` becomes `$` (systemd.service(5))."""
    return [a.replace("$$", "$") for a in argv[argv.index("/bin/sh"):]]


def test_under_systemd_the_failsafe_is_a_transient_unit_of_its_own(host_actions):
    """docs/contract.md §8 "The failsafe": where systemd is PID 1, `systemd-run` starts a unit
    of its own that waits `failsafe_shutdown_delay` (sub-second) and runs
    `/bin/sh -c "<[actions] failsafe>"`; the daemon keeps no process of it. A transient
    service that sleeps, not the original's `--on-active` timer, which every `systemctl
    daemon-reload` re-armed (attack on issue 24; tests/test_systemd.py shows it)."""
    acts, lines, argv_file, fake, booted, host = host_actions
    fake()
    booted()
    acts.shutdown("reboot", Net.MGMT)
    argv = argv_of(argv_file)
    assert sleep_of(argv) == "sleep 2.000"
    assert not any(a.startswith(("--on-", "--timer-property")) for a in argv), argv
    unit = [a for a in argv if a.startswith("--unit=")]
    assert len(unit) == 1 and unit[0].startswith("--unit=mtce-failsafe-reboot-")
    assert as_systemd_runs(argv)[-1] == acts.cfg.actions.failsafe
    assert [p.action_name for p in acts.children] == ["reboot"], "no failsafe process of ours"
    assert "failsafe reboot script launched ; reboot in 2 seconds" in lines
    assert any(line.startswith(f"failsafe is systemd unit {unit[0][7:]}.service")
               for line in lines), lines


@pytest.mark.parametrize("command", [
    'X=braced; echo "${X} $(echo sub) $((1 + 1)) \\$HOME-literal" > OUT',
    "echo 'single $X' > OUT; echo second >> OUT",
    "echo a > OUT & wait",
    "echo 100% > OUT",
])
def test_the_failsafe_command_runs_as_sh_would_run_it(host_actions, tmp_path, command):
    """docs/contract.md §2: actions are shell commands run with `/bin/sh -c`. systemd expands
    `$VAR`, `${VAR}` and `$$` in a unit's command line, so `${X}` ran empty and `$$` as a `$`
    (attack on issue 24): the unit's argv, as systemd runs it, gives what `/bin/sh -c` gives,
    and so does the detached fallback."""
    acts, lines, argv_file, fake, booted, host = host_actions
    fake()
    booted()
    out = tmp_path / "out"
    command = command.replace("OUT", str(out))
    acts.cfg = acts.cfg.with_value(("actions", "failsafe"), command)
    acts.launch_failsafe(0.01, "reboot")
    subprocess.run(["/bin/sh", "-c", command], timeout=10, check=True)
    want = out.read_text()
    out.unlink()
    subprocess.run(as_systemd_runs(argv_of(argv_file)), timeout=10, check=True)
    assert out.read_text() == want
    out.unlink()
    subprocess.run(["/bin/sh", "-c", client_actions.failsafe_script(0.01, command)], timeout=10,
                   check=True)
    assert out.read_text() == want


def test_under_systemd_the_failsafe_units_are_not_stopped_by_the_shutdown_it_guards(
        host_actions):
    """docs/contract.md §8 "The failsafe": only the host going down cancels it. A timer or a
    service with systemd's default dependencies conflicts with shutdown.target (systemd.timer(5),
    systemd.service(5)), so `systemctl reboot` would stop the timer as the reboot begins and a
    hung shutdown would never be forced (issue 23 attack: found by the ops session). Both
    transient units are made without them."""
    acts, lines, argv_file, fake, booted, host = host_actions
    fake()
    booted()
    acts.shutdown("reboot", Net.MGMT)
    argv = argv_of(argv_file)
    assert "--property=DefaultDependencies=no" in argv
    assert argv.index("/bin/sh") > argv.index("--property=DefaultDependencies=no")


@pytest.mark.parametrize("configured, reboot_ms, reset_ms", [
    (0, 2000, 1000), (0.5, 2000, 1000), (1, 1000, 500), (120, 120000, 60000)])
def test_a_failsafe_delay_below_1_is_2_as_the_original(host_actions, configured, reboot_ms,
                                                       reset_ms):
    """docs/protocol.md §8: the original treats a `failsafe_shutdown_delay` below 1 as 2;
    reset (and wipedisk) use half of it."""
    acts, lines, argv_file, fake, booted, host = host_actions
    acts.cfg = acts.cfg.with_value(("timeouts", "failsafe_shutdown_delay"), configured)
    fake()
    booted()
    acts.shutdown("reboot", Net.MGMT)
    assert sleep_of(argv_of(argv_file)) == f"sleep {reboot_ms / 1000:.3f}"
    acts.shutdown("reset", Net.MGMT)
    assert sleep_of(argv_of(argv_file)) == f"sleep {reset_ms / 1000:.3f}"


def test_a_reset_under_systemd_has_half_the_delay_and_its_own_unit(host_actions):
    acts, lines, argv_file, fake, booted, host = host_actions
    fake()
    booted()
    acts.shutdown("reboot", Net.MGMT)
    first = [a for a in argv_of(argv_file) if a.startswith("--unit=")]
    acts.shutdown("reset", Net.MGMT)
    argv = argv_of(argv_file)
    assert sleep_of(argv) == "sleep 1.000"
    second = [a for a in argv if a.startswith("--unit=")]
    assert second[0].startswith("--unit=mtce-failsafe-reset-") and second != first


@pytest.mark.parametrize("body, why", [
    ("echo 'Failed to start transient timer unit: Access denied' >&2; exit 1",
     "exit status 1: Failed to start transient timer unit: Access denied"),
    ("exec sleep 30", "no answer in 0.5 s"),
])
def test_a_failing_systemd_run_falls_back_to_a_detached_process(host_actions, monkeypatch,
                                                                body, why):
    """A refused or hung systemd-run (bounded by a timeout) is logged, and the failsafe is
    the detached process instead: a host is never left without one."""
    acts, lines, argv_file, fake, booted, host = host_actions
    monkeypatch.setattr(client_actions, "FAILSAFE_LAUNCH_TIMEOUT_S", 0.5)
    fake(body)
    booted()
    acts.launch_failsafe(2.0, "reboot")
    assert argv_file.exists(), "systemd-run was tried"
    assert f"systemd-run failed ({why}) ; failsafe as a detached process instead" in lines
    assert [p.action_name for p in acts.children] == ["failsafe"]
    assert acts.children[0].args[-1] == client_actions.failsafe_script(
        2.0, acts.cfg.actions.failsafe)


def test_a_missing_systemd_run_falls_back_to_a_detached_process(host_actions, monkeypatch):
    acts, lines, argv_file, fake, booted, host = host_actions
    monkeypatch.setattr(client_actions, "SYSTEMD_RUN", "mtce-test-no-such-systemd-run")
    booted()
    acts.launch_failsafe(2.0, "reboot")
    assert any(line.startswith("systemd-run failed (") for line in lines), lines
    assert [p.action_name for p in acts.children] == ["failsafe"]


def test_without_systemd_the_failsafe_is_a_detached_process(host_actions):
    """No `/run/systemd/system` (a container, another init): systemd-run is not tried, even
    when it is installed; the failsafe is a process in a session of its own."""
    acts, lines, argv_file, fake, booted, host = host_actions
    fake()
    acts.launch_failsafe(2.0, "reboot")
    assert not argv_file.exists()
    assert [p.action_name for p in acts.children] == ["failsafe"]
    assert os.getsid(acts.children[0].pid) == acts.children[0].pid, "a session of its own"


def test_the_detached_failsafe_outlives_a_stopped_client(host_actions):
    """docs/contract.md §8: stopping the client does not cancel the failsafe (real processes, real
    time: the shortest delay is 1 s)."""
    acts, lines, argv_file, fake, booted, host = host_actions
    acts.launch_failsafe(0.1, "reboot")
    proc = acts.children[0]
    acts.reap()                     # what Client.stop() does with its children
    wait_until(lambda: "failsafe" in host.actions(), 10, what="the failsafe after the stop")
    assert proc.wait(timeout=10) == 0
