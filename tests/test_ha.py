"""High availability under Pacemaker (issue 15, docs/ha.md): the OCF resource agent
`ocf:mtce:mtcAgent` against a real agent (ocf-tester from Debian's resource-agents, and the
OCF exit codes one by one), and the reference configuration replayed with `crm_simulate`
(the group starts in order, moves in order behind fencing when its node fails, and stays
where it runs when the node comes back).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess

import pytest

from harness.cluster import Cluster
from harness.env import REPO, gone, need, wait_until
from harness.fakehost import inih_style

pytestmark = [pytest.mark.loopback, pytest.mark.ha]

OCF_AGENT = os.path.join(REPO, "debian", "ocf", "mtcAgent")
CIB = os.path.join(REPO, "etc", "pacemaker", "mtce-cib.xml")
OCF_SUCCESS, OCF_ERR_CONFIGURED, OCF_NOT_RUNNING = 0, 6, 7


@pytest.fixture
def ocf(tmp_path, mtce_cmd):
    """Run the OCF agent's actions for an agent configured under tmp_path."""
    c = Cluster(tmp_path / "c", workers=0)
    python, program = (mtce_cmd if len(mtce_cmd) == 2 else ["/usr/bin/python3", mtce_cmd[0]])
    params = {"config": c.agent_ini, "binary": program, "python": python}

    def run(action: str, **more) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env.update({f"OCF_RESKEY_{k}": v for k, v in {**params, **more}.items()})
        env["OCF_ROOT"] = "/usr/lib/ocf"
        return subprocess.run([OCF_AGENT, action], capture_output=True, text=True, env=env,
                              timeout=60, check=False)
    run.params, run.cluster = params, c
    yield run
    run("stop")


def test_the_ocf_exit_codes_start_stop_monitor_validate(ocf):
    """ra-dev-guide: start and stop are idempotent; monitor 7 when cleanly stopped, 0 when
    running (the control socket answers); a bad configuration is 6."""
    assert ocf("monitor").returncode == OCF_NOT_RUNNING
    assert ocf("validate-all").returncode == OCF_SUCCESS
    for _ in range(2):
        r = ocf("start")
        assert r.returncode == OCF_SUCCESS, r.stderr
    assert ocf("monitor").returncode == OCF_SUCCESS
    for _ in range(2):
        assert ocf("stop").returncode == OCF_SUCCESS
    assert ocf("monitor").returncode == OCF_NOT_RUNNING
    bad = os.path.join(os.path.dirname(ocf.params["config"]), "bad.ini")
    with open(bad, "w") as f:
        f.write("[agent]\noffline_period = soon\n")
    assert ocf("validate-all", config=bad).returncode == OCF_ERR_CONFIGURED
    assert ocf("start", config=bad).returncode == OCF_ERR_CONFIGURED
    assert ocf("validate-all", config=bad + ".missing").returncode == OCF_ERR_CONFIGURED
    meta = ocf("meta-data")
    assert meta.returncode == 0 and '<resource-agent name="mtcAgent"' in meta.stdout


def test_a_pid_reused_by_another_process_is_not_the_agent(ocf):
    """Issue 23 item 19 (docs/ha.md, the resource agent): after `kill -9` of the agent its
    pidfile stays, and the kernel may give its pid to an unrelated process. monitor must say
    7 (not running), stop must leave that process alone, and start must start the agent."""
    assert ocf("start").returncode == OCF_SUCCESS
    pidfile = os.path.join(ocf.cluster.controller.paths["pid_dir"], "mtcAgent.pid")
    agent_pid = int(open(pidfile).read().split()[0])
    os.kill(agent_pid, signal.SIGKILL)
    wait_until(lambda: not os.path.exists(f"/proc/{agent_pid}/status")
               or "zombie" in open(f"/proc/{agent_pid}/status").read(), 10, what="agent gone")
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        with open(pidfile, "w") as f:
            f.write(f"{stranger.pid}\n")         # the pid now belongs to `sleep`
        r = ocf("monitor")
        assert r.returncode == OCF_NOT_RUNNING, r.stderr
        assert ocf("stop").returncode == OCF_SUCCESS
        assert stranger.poll() is None, "stop signalled an unrelated process"
        r = ocf("start")
        assert r.returncode == OCF_SUCCESS, r.stderr
        assert ocf("monitor").returncode == OCF_SUCCESS
        assert int(open(pidfile).read().split()[0]) != stranger.pid
        assert ocf("stop").returncode == OCF_SUCCESS
        assert ocf("monitor").returncode == OCF_NOT_RUNNING
        assert stranger.poll() is None, "an unrelated process was signalled"
    finally:
        stranger.kill()
        stranger.wait(10)


def agent_pid(ocf) -> int:
    pidfile = os.path.join(ocf.cluster.controller.paths["pid_dir"], "mtcAgent.pid")
    return int(open(pidfile).read().split()[0])


def test_the_ocf_agent_reads_the_ini_as_mtce_does(ocf):
    """Issue 23 item 19 (docs/ha.md, the resource agent): the resource agent finds the
    pidfile and the control socket where mtce puts them, whatever inih syntax the ini uses
    (before: it read only `key = value`, looked in /var/run, and start said 1 while the agent
    it had started ran on; monitor 7 and stop 0 left it running: two agents under Pacemaker)."""
    inih_style(ocf.params["config"])
    r = ocf("start", CRM_meta_timeout="10000")
    try:
        assert r.returncode == OCF_SUCCESS, r.stderr
        assert ocf("monitor").returncode == OCF_SUCCESS
        pid = agent_pid(ocf)
        assert ocf("stop").returncode == OCF_SUCCESS
        wait_until(lambda: gone(pid), 10, what="the agent ended")
        assert ocf("monitor").returncode == OCF_NOT_RUNNING
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(agent_pid(ocf), signal.SIGKILL)     # the old agent left it running


def test_the_ocf_agent_says_6_when_mtce_cannot_read_the_ini(ocf):
    """docs/ha.md: an ini mtce refuses (here: not UTF-8) is OCF_ERR_CONFIGURED for monitor and
    stop too, not a guess at the default paths (before: monitor 7 and stop 0, from
    /var/run)."""
    ini = ocf.params["config"]
    with open(ini, "ab") as f:
        f.write(b"; caf\xe9\n")
    r = ocf("monitor")
    assert r.returncode == OCF_ERR_CONFIGURED, r.stderr
    assert "UTF-8" in r.stderr
    assert ocf("stop").returncode == OCF_ERR_CONFIGURED


def test_ocf_stop_stops_the_lock_holder_not_the_pid_written_in_the_pidfile(ocf):
    """docs/ha.md: the agent is the process that holds the lock on its pidfile, whatever the
    file says: a pidfile rewritten while the agent runs does not make stop signal the pid
    written in it (before: stop killed that process and returned 1, the agent running)."""
    assert ocf("start").returncode == OCF_SUCCESS
    pid = agent_pid(ocf)
    pidfile = os.path.join(ocf.cluster.controller.paths["pid_dir"], "mtcAgent.pid")
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        with open(pidfile, "w") as f:
            f.write(f"{stranger.pid}\n")
        r = ocf("stop", CRM_meta_timeout="8000")
        assert stranger.poll() is None, "stop signalled the pid written in the pidfile"
        assert r.returncode == OCF_SUCCESS, r.stderr
        wait_until(lambda: gone(pid), 10, what="the agent ended")
        assert ocf("monitor").returncode == OCF_NOT_RUNNING
    finally:
        stranger.kill()
        stranger.wait(10)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def test_ocf_stop_stops_an_agent_whose_pidfile_was_removed(ocf):
    """docs/ha.md: Pacemaker's stop must leave no agent behind (else the other controller
    starts a second one). Without its pidfile the agent is still found, as the server of
    its control socket (SO_PEERCRED) running `mtce agent` with this configuration (before:
    stop said 0 and the agent ran on, monitor still 0)."""
    assert ocf("start").returncode == OCF_SUCCESS
    pid = agent_pid(ocf)
    try:
        os.unlink(os.path.join(ocf.cluster.controller.paths["pid_dir"], "mtcAgent.pid"))
        assert ocf("monitor").returncode == OCF_SUCCESS
        r = ocf("stop", CRM_meta_timeout="8000")
        assert r.returncode == OCF_SUCCESS, r.stderr
        assert gone(pid), "stop said 0 and the agent runs on"
        assert ocf("monitor").returncode == OCF_NOT_RUNNING
    finally:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def test_ocf_tester_passes(ocf):
    need(shutil.which("ocf-tester") is not None,
         "ocf-tester (Debian's resource-agents) is not installed (make test installs it)")
    p = ocf.params
    r = subprocess.run(["ocf-tester", "-n", "p_mtcagent", "-o", f"config={p['config']}",
                        "-o", f"binary={p['binary']}", "-o", f"python={p['python']}",
                        OCF_AGENT], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "passed all tests" in r.stdout


def simulate(tmp_path, cib: str, *args) -> tuple[str, str]:
    need(shutil.which("crm_simulate") is not None,
         "crm_simulate (Debian's pacemaker-cli-utils) is not installed (make test installs it)")
    out = str(tmp_path / f"cib-{len(os.listdir(tmp_path))}.xml")
    r = subprocess.run(["crm_simulate", "-x", cib, "-S", "-O", out, *args],
                       capture_output=True, text=True, timeout=60, check=False,
                       env={**os.environ, "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout, out


def actions(text: str) -> list[str]:
    """`<action> <resource> on <node>` of the executed transition, in order."""
    body = text.split("Executing Cluster Transition:", 1)[1].split("Revised Cluster Status", 1)[0]
    out = []
    for line in body.splitlines():
        m = re.match(r"\s*\* Resource action:\s+(\S+)\s+(\S+) on (\S+)", line)
        if m:
            out.append(f"{m.group(2)} {m.group(1)} {m.group(3)}")
        m = re.match(r"\s*\* Fencing (\S+)", line)
        if m:
            out.append(f"fence {m.group(1)}")
    return out


def test_crm_simulate_starts_the_group_in_order_and_moves_it_behind_fencing(tmp_path):
    text, up = simulate(tmp_path, CIB)
    starts = [a for a in actions(text) if a.startswith("start ") and "fence" not in a]
    assert starts == ["start p_state controller-0", "start p_controller_ip controller-0",
                      "start p_mtcagent controller-0"]
    text, failed = simulate(tmp_path, up, "--node-fail", "controller-0")
    moved = [a for a in actions(text) if not a.startswith("monitor")]
    assert moved[0] == "fence controller-0", "fencing before anything moves"
    assert moved[1:] == ["start p_state controller-1", "start p_controller_ip controller-1",
                         "start p_mtcagent controller-1"]
    text, _ = simulate(tmp_path, failed, "--node-up", "controller-0")
    assert not [a for a in actions(text) if a.startswith(("start p_", "stop p_"))], \
        "stickiness: the group stays on controller-1 when controller-0 returns"
