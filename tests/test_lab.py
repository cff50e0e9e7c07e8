"""`mtce lab` end to end: the real lab (real agent and clients) with --duration and no tty, its
scenarios, a second terminal's commands against it, Ctrl-C / SIGTERM / SIGKILL at any moment,
a port already in use, and the files it generates (every ini harmless).

Each lab runs alone, on its own 127.x block (two cores: never several clusters at once).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from harness.env import PROGRAM, need, wait_until

from harness.fakehost import assert_harmless

pytestmark = pytest.mark.loopback

NETS = ("mgmt", "cluster-host", "pxeboot")
VERDICT_OK = "mtce lab: ok: 3 hosts online on every network (mgmt, cluster-host, pxeboot)"

_HANDED_OUT: set = set()


def free_block() -> str:
    """A 127.N block none of whose lab ports is bound now, never the same one twice."""
    for _ in range(50):
        block = f"127.{random.randint(50, 250)}"
        if block in _HANDED_OUT:
            continue
        socks = []
        try:
            for net in (204, 206, 202):
                for octet, port in ((1, 2101), (2, 2101), (2, 2102), (10, 2118), (11, 2119)):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    socks.append(s)
                    s.bind((f"{block}.{net}.{octet}", port))
            _HANDED_OUT.add(block)
            return block
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free 127.N block")


def tagged(tag: str) -> list[int]:
    """Live processes that carry the lab's MTCE_LAB_ID (every process a lab starts)."""
    needle = f"MTCE_LAB_ID={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        if needle in env:
            found.append(int(entry))
    return found


def namespaces(prefix: str = "mtce-lab-") -> list[str]:
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20)
    return [line.split()[0] for line in r.stdout.splitlines() if line.startswith(prefix)]


class Run:
    """One `mtce lab` process, its output in files under its own TMPDIR."""

    def __init__(self, root, args: list[str], block: str | None = None):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self.args = args
        self.block = block or free_block()
        self.out_path = os.path.join(self.root, "stdout")
        self.err_path = os.path.join(self.root, "stderr")
        self.tmp = os.path.join(self.root, "t")     # short: the agent's socket lives in it
        os.makedirs(self.tmp, exist_ok=True)
        self.started_at = time.monotonic()
        env = dict(os.environ, TMPDIR=self.tmp, MTCE_LAB_BLOCK=self.block)
        env.pop("MTCE_LAB_ID", None)
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(PROGRAM + ["lab"] + args, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, env=env)
        self.rc = None

    def out(self) -> str:
        with open(self.out_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def err(self) -> str:
        with open(self.err_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def lab_dir(self) -> str | None:
        found = [d for d in os.listdir(self.tmp) if d.startswith("mtce-lab-")]
        return os.path.join(self.tmp, found[0]) if found else None

    def wait_line(self, needle: str, timeout: float = 20.0) -> str:
        def seen():
            text = self.out()
            if needle in text:
                return text
            assert self.proc.poll() is None, f"the lab exited ({self.proc.returncode}) " \
                f"before {needle!r}:\n{text}\n{self.err()}"
            return None
        return wait_until(seen, timeout, interval=0.05, what=repr(needle))

    def wait(self, timeout: float = 120.0) -> int:
        try:
            self.rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"the lab ran past {timeout} s:\n{self.out()[-3000:]}")
        return self.rc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def assert_nothing_left(self, tag: str | None) -> None:
        """No process, namespace or file of this lab remains (the guardian may need a
        moment after a SIGKILL)."""
        if tag:
            wait_until(lambda: not tagged(tag), 10, what=f"no process of {tag}")
            if os.geteuid() == 0 and os.path.exists("/run/netns"):
                wait_until(lambda: not namespaces(tag), 10, what=f"no namespace {tag}-*")
        wait_until(lambda: not os.listdir(self.tmp), 10,
                   what=f"{self.tmp} empty (has {os.listdir(self.tmp)})")


def start(root, args, block=None) -> Run:
    return Run(root, args, block)


def netns_usable() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def hosts_json(ini: str) -> dict:
    r = subprocess.run(PROGRAM + ["-c", ini, "hosts", "--json"], capture_output=True, text=True,
                       timeout=20)
    return {h["hostname"]: h for h in json.loads(r.stdout)} if r.returncode == 0 else {}


def ctl(ini: str, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run(PROGRAM + ["-c", ini] + list(args), capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 0, r.stderr
    return r


# -- the default lab, and a second terminal --------------------------------------------------

@pytest.mark.slow
def test_default_lab_comes_up_and_answers_a_second_terminal(tmp_path):
    run = start(tmp_path / "lab", ["--duration", "16"])
    text = run.wait_line("second terminal: ")
    ini = re.search(r"second terminal: .* -c (\S+) hosts", text).group(1)
    lab_dir = run.lab_dir()
    assert ini == os.path.join(lab_dir, "mtc.ini")
    inis = [os.path.join(lab_dir, d, "mtc.ini") for d in os.listdir(lab_dir)
            if os.path.isfile(os.path.join(lab_dir, d, "mtc.ini"))]
    assert len(inis) == 3
    for path in inis:
        assert_harmless(path)
    run.wait_line("all 3 hosts online on every network")
    hosts = hosts_json(ini)
    assert sorted(hosts) == ["controller-0", "worker-0", "worker-1"]
    for h in hosts.values():
        assert h["availability"] == "online"
        assert {n: h["networks"][n]["state"] for n in NETS} == dict.fromkeys(NETS, "ok")
    assert hosts["worker-0"]["mgmt_ip"] == f"{run.block}.204.10"
    assert hosts["worker-1"]["pxeboot_ip"] == f"{run.block}.202.11"
    assert ctl(ini, "hosts").stdout.splitlines()[0].startswith("HOST")

    assert "locked msg sent to worker-0" in ctl(ini, "lock", "worker-0").stdout
    run.wait_line("worker-0 locked")
    # The reboot action asks the lab to restart the client (a simulated reboot).
    assert "reboot sent to worker-1" in ctl(ini, "reboot", "worker-1").stdout
    run.wait_line("worker-1: [actions] reboot ran: client stopped")
    run.wait_line("worker-1 offline", timeout=10)
    run.wait_line("worker-1: client started again after the simulated reboot", timeout=10)
    wait_until(lambda: hosts_json(ini).get("worker-1", {}).get("availability") == "online",
               10, interval=0.2, what="worker-1 online again")
    assert run.wait(40) == 0, run.out() + run.err()
    out = run.out()
    assert out.splitlines()[-1].startswith(VERDICT_OK), out
    assert run.err() == ""
    run.assert_nothing_left(os.path.basename(lab_dir))


# -- scenarios ---------------------------------------------------------------------------------

# The scenario machinery through one scenario that has no time to end (it must fail and say
# so). Each lab runs alone (two cores); tools/ci_lab.sh runs every scenario to its end, on
# loopback and in namespaces, as CI's end-to-end test (each exits 0 only if its promise held),
# and the behaviour each scenario shows has its in-process test (pxeboot loss and the alarm:
# test_agent_pxeboot, test_netns_agent; a client restart: test_sim_client_plan,
# test_loopback_client; bursts: test_agent_seqs, test_loopback_faults).

@pytest.mark.slow
def test_a_scenario_that_has_no_time_to_end_fails_and_says_so(tmp_path):
    run = start(tmp_path / "lab", ["--scenario", "pxeboot-loss", "--duration", "8"])
    assert run.wait(60) == 1, run.out() + run.err()
    out = run.out()
    # Where the scenario stood depends on how fast this machine brought every host up: it may
    # still be waiting for that, or already have taken worker-0's pxeboot down.
    assert re.fullmatch(r"mtce lab: FAILED: scenario pxeboot-loss did not reach its end \("
                        r"pxeboot-loss: worker-0 (pxeboot down for \d+ s ; the alarm comes after "
                        r"~24 s|loses pxeboot once every host is ok for 3 s)\) ; it needs about "
                        r"--duration 61", out.splitlines()[-1]), out


# -- stopping at any moment ----------------------------------------------------------------------

def _tag_of(run: Run) -> str | None:
    d = run.lab_dir()
    return os.path.basename(d) if d else None


@pytest.mark.parametrize("moment", ["directory", "agent", "clients"])
def test_ctrl_c_during_start_up_leaves_nothing(tmp_path, moment):
    run = start(tmp_path / "lab", [])
    if moment == "directory":
        tag = wait_until(lambda: _tag_of(run), 10, interval=0.005, what="the lab directory")
    else:
        tag = wait_until(lambda: _tag_of(run), 10, interval=0.01, what="the lab directory")
        count = 1 if moment == "agent" else 3
        wait_until(lambda: len(tagged(tag)) >= count, 10, interval=0.005,
                   what=f"{count} lab processes")
    run.proc.send_signal(signal.SIGINT)
    assert run.wait(20) == 0, run.out() + run.err()
    assert "mtce lab: stopped (SIGINT) ; every process and file of the lab removed" in run.out()
    run.assert_nothing_left(tag)


@pytest.mark.slow
def test_ctrl_c_sigterm_and_sigkill_while_running_leave_nothing(tmp_path):
    runs = {sig: start(tmp_path / sig.name, ["--duration", "30"] if sig == signal.SIGTERM
                       else []) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)}
    for sig, run in runs.items():
        run.wait_line("all 3 hosts online on every network")
        tag = _tag_of(run)
        assert len(tagged(tag)) == 4        # the agent and three clients
        run.proc.send_signal(sig)
        rc = run.wait(20)
        if sig == signal.SIGINT:
            assert rc == 0 and "stopped (SIGINT)" in run.out()
        elif sig == signal.SIGTERM:
            assert rc == 128 + signal.SIGTERM, "an interrupted --duration run is no success"
        else:
            assert rc == -signal.SIGKILL
        run.assert_nothing_left(tag)


@pytest.mark.netns
def test_ctrl_c_during_namespace_creation_leaves_no_namespace(tmp_path):
    need(netns_usable(), "needs root and iproute2 for --netns")
    run = start(tmp_path / "lab", ["--netns"])
    tag = wait_until(lambda: _tag_of(run), 10, interval=0.005, what="the lab directory")
    wait_until(lambda: namespaces(tag), 10, interval=0.005, what="a namespace of the lab")
    run.proc.send_signal(signal.SIGINT)
    assert run.wait(20) == 0, run.out() + run.err()
    assert "every process, namespace and file of the lab removed" in run.out()
    run.assert_nothing_left(tag)
    assert not namespaces(tag)


# -- bad input -----------------------------------------------------------------------------------

def test_a_port_in_use_is_named_with_the_fix(tmp_path):
    block = free_block()
    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the agent binds it
    held.bind((f"{block}.204.1", 2101))
    try:
        run = Run(tmp_path / "lab", ["--duration", "5"], block=block)
        assert run.wait(20) == 1
    finally:
        held.close()
    err = run.err().strip()
    assert err.startswith(f"mtce lab: {block}.204.1:2101/udp (for the agent (mgmt)) is already "
                          f"in use"), err
    assert re.search(r"run this lab on a free block: MTCE_LAB_BLOCK=127\.\d+ .* lab --duration 5$",
                     err), err
    assert len(err.splitlines()) == 1 and run.out() == ""
    assert os.listdir(run.tmp) == []


@pytest.mark.parametrize("args, message", [
    (["--hosts", "0"], "--hosts must be between 1 and 100 (controller-0 included)"),
    (["--hosts", "1", "--scenario", "pxeboot-loss"],
     "--scenario pxeboot-loss needs a worker: use --hosts 2 or more"),
    (["--hosts", "2", "--scenario", "controller-link"],
     "--scenario controller-link needs 2 workers: use --hosts 3 or more"),
    (["--duration", "0"], "--duration must be more than 0 seconds"),
])
def test_usage_errors_exit_2(tmp_path, args, message):
    run = Run(tmp_path / "lab", args)
    assert run.wait(20) == 2
    assert run.err().strip() == f"mtce lab: {message}"
    assert os.listdir(run.tmp) == []


def test_netns_without_root_exits_2_and_says_why(monkeypatch, capsys):
    from mtce import lab
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    args = argparse.Namespace(hosts=3, duration=None, netns=True, scenario="none")
    assert lab.main(args) == 2
    assert capsys.readouterr().err.strip() == (
        "mtce lab: --netns needs root (it creates network namespaces and veth links); run it "
        "as root, or without --netns for the loopback lab")


# -- the generated files ---------------------------------------------------------------------------

@pytest.mark.parametrize("netns", [False, True])
def test_every_generated_file_is_complete_and_every_ini_harmless(tmp_path, netns):
    from mtce import config, ifchain, lab, netif
    plan = lab.Plan(tmp_path, 5, netns=netns, block="127.77", burst=True, ns_prefix="t-")
    plan.write()
    assert len(plan.inis()) == 5
    for ini in plan.inis():
        assert_harmless(ini)
        cfg = config.load(ini)
        assert not cfg.warnings, cfg.warnings
        for key, value in cfg.paths.items():
            if key == "sys_class_net" and netns:
                assert value == "/sys/class/net"
            else:
                assert value.startswith(str(tmp_path) + os.sep), (key, value)
        for kind in ("reboot", "reset", "lazy_reboot", "wipedisk"):
            assert cfg.get("actions", kind).startswith(f"echo {kind} > ")
        assert cfg.get("actions", "failsafe") == ""
    inv = config.load_inventory(plan.inventory)
    assert sorted(inv.hosts) == ["burst-0", "controller-0", "worker-0", "worker-1", "worker-2",
                                 "worker-3"]
    entries, problems, error = netif.read_dnsmasq_hosts(
        plan.controller.path("config", "dnsmasq.hosts"))
    assert not problems and not error
    assert {e.mac: e.ip for e in entries if e.mac} == {
        inv.hosts[h.name].mgmt_mac: h.pxeboot_ip for h in plan.clients}
    prefix = "198.18" if netns else "127.77"
    assert plan.host("worker-3").mgmt_ip == f"{prefix}.204.13"
    assert os.path.realpath(plan.lab_ini) == plan.agent_ini
    address, _ = ifchain.dhcp_lease_address(plan.host("worker-0").path("dhcp"),
                                          plan.lease_key())
    assert address == f"{prefix}.202.10"
