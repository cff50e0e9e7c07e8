"""Shared fixtures: the program under test, a whole fake host under tmp_path, waiting helpers.

`MTCE_BIN` names the program to test (default: this tree's `python3 mtce.py`); when it is a
zipapp, unit tests import `mtce` from it too, so the installed package is what is tested.
Tests that need root or network namespaces fail instead of skipping under CI=true.
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)


def _program() -> list[str]:
    env = os.environ.get("MTCE_BIN")
    if env:
        return shlex.split(env)
    return [sys.executable, os.path.join(REPO, "mtce.py")]


PROGRAM = _program()
_zip = next((p for p in PROGRAM if os.path.isfile(p) and zipfile.is_zipfile(p)), None)
if _zip:
    sys.path.insert(0, _zip)
elif REPO not in sys.path:
    sys.path.insert(0, REPO)

# Programs the tests start buffer their output as in a user's shell: a PYTHONUNBUFFERED in the
# developer's environment once hid an exit 120 that CI's clean one showed.
os.environ.pop("PYTHONUNBUFFERED", None)

# The suite runs from the source tree, or (make test-chroot) as tests/ alone against the
# installed package: then what the package installs is what the tests read.
SOURCE_TREE = os.path.isfile(os.path.join(REPO, "mtce.py"))


def shipped(source: str, installed: str) -> str:
    """The file under test: `source` (relative to the tree) there, else the installed copy."""
    return os.path.join(REPO, source) if SOURCE_TREE else installed


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Debian installs some of the suite's tools (ocf-tester, crm_simulate, start-stop-daemon, ip)
# in /usr/sbin and /sbin, which a normal user's PATH lacks: without them here a normal user's
# run would say "not installed" of tools that are (issue 23 review). Programs the tests start
# inherit the same PATH.
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
_path = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
os.environ["PATH"] = os.pathsep.join(_path + [d for d in SBIN_DIRS if d not in _path])


# -- no test may hang: a per-test time limit, and a sweep of what killed runs left ------------

def pytest_addoption(parser):
    parser.addini("test_timeout", "seconds each test phase (setup, call, teardown) may take; "
                  "@pytest.mark.timeout(s) changes it for one test", default="120")


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): this test's own time limit")


def pytest_sessionstart(session):
    from harness import sweep
    for what in sweep.sweep():
        sys.stderr.write(f"conftest: removed a stale {what}\n")


class TestTimedOut(Exception):
    """A test phase ran past its limit (raised from SIGALRM in the main thread)."""


def _limit(item) -> float:
    mark = item.get_closest_marker("timeout")
    if mark:
        return float(mark.args[0])
    return float(item.config.getini("test_timeout"))


@contextlib.contextmanager
def _time_limit(item, phase: str):
    limit = _limit(item)

    def expire(signum, frame):
        import faulthandler
        faulthandler.dump_traceback(sys.stderr, all_threads=True)
        raise TestTimedOut(f"{item.nodeid}: {phase} ran past {limit:g} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _time_limit(item, "setup"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _time_limit(item, "the test"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    with _time_limit(item, "teardown"):
        yield


def need(condition: bool, why: str) -> None:
    """Skip when a test cannot run here, except under CI=true where that is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"cannot run under CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def mtce_cmd() -> list[str]:
    """The argv prefix that runs mtce (`MTCE_BIN` or `python3 mtce.py`)."""
    return list(PROGRAM)


def gone(pid: int) -> bool:
    """The process has ended (or is a zombie nobody has reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = ""):
    """Poll `predicate` until it returns a true value (returned) or `timeout` passes (fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def loopback_block() -> str:
    """A random 127.a.b. prefix so concurrent tests and labs never share an address."""
    return f"127.{random.randint(10, 250)}.{random.randint(0, 250)}."


def inih_style(ini: str) -> None:
    """Rewrite an mtc.ini in syntax inih (so mtce) reads as well as `key = value`
    (docs/contract.md §2, mtce/config.py `read_ini`): a UTF-8 BOM, `key: value` in [paths],
    an inline `;` comment after a tab."""
    out, section = [], ""
    for line in open(ini, encoding="utf-8").read().splitlines():
        if line.startswith("["):
            section = line
        elif section == "[paths]" and " = " in line:
            key, value = line.split(" = ", 1)
            line = f"{key}: {value}\t; set for this host"
        out.append(line)
    with open(ini, "w", encoding="utf-8") as f:
        f.write("\ufeff" + "\n".join(out) + "\n")


HARMLESS_ACTIONS = ("reboot", "reset", "lazy_reboot", "failsafe", "wipedisk", "alarm")
_DANGER = ("systemctl", "sysrq", "/sbin/reboot", "shutdown", "poweroff", "halt", "init ",
           "wipedisk --force")


def assert_harmless(ini: str) -> None:
    """Refuse to start a daemon whose [actions] could touch this machine.

    Every [actions] key must be set (the defaults reboot the machine) and none may run a
    power or service command.
    """
    from mtce import config
    cfg = config.load(ini)
    for key in [o.key for o in config.OPTIONS if o.section == "actions"]:
        value = cfg.get("actions", key)
        assert (("actions", key) in cfg.lines) or key == "alarm", \
            f"{ini}: [actions] {key} is not set: its default would touch the machine"
        assert not any(d in value for d in _DANGER), f"{ini}: [actions] {key} = {value!r}"


class FakeHost:
    """Every file a daemon reads, under one directory; `ini` points all [paths] into it."""

    def __init__(self, root, *, hostname="worker-0", subfunction="worker",
                 system_type="standard", system_mode="duplex", mgmt_iface="lab0",
                 clstr_iface="lab1", mac="08:00:27:aa:bb:01", net=None, mgmt_ip=None,
                 cluster_host_ip=None, pxeboot_ip=None, period=1.0, failsafe_delay=2,
                 extra: dict | None = None, platform: bool = True,
                 controllers: dict | None = None):
        self.root = str(root)
        self.net = net or loopback_block()
        self.hostname = hostname
        self.mac = mac
        self.mgmt_iface, self.clstr_iface = mgmt_iface, clstr_iface
        self.mgmt_ip = mgmt_ip or self.net + "10"
        self.cluster_host_ip = cluster_host_ip if cluster_host_ip is not None \
            else self.net + "20"
        self.pxeboot_ip = pxeboot_ip if pxeboot_ip is not None else self.net + "30"
        # The controllers: floating mgmt .1, unit mgmt .2/.3, cluster-host .4/.5,
        # pxeboot .6/.7 (or as given).
        c = controllers or {}
        self.controller = c.get("controller", self.net + "1")
        self.c_mgmt = c.get("c_mgmt", [self.net + "2", self.net + "3"])
        self.c_clstr = c.get("c_clstr", [self.net + "4", self.net + "5"])
        self.c_pxeboot = c.get("c_pxeboot", [self.net + "6", self.net + "7"])
        self.paths = {k: os.path.join(self.root, v) for k, v in {
            "platform_conf": "platform/platform.conf", "platform_dir": "platform",
            "hosts_file": "hosts", "hostname_file": "hostname", "build_info": "build.info",
            "dnsmasq_hosts": "config/dnsmasq.hosts", "dhcp_leases_dir": "dhcp",
            "ifcfg_dir": "interfaces.d", "sys_class_net": "sys/class/net", "run_dir": "run",
            "persist_dir": "persist", "state_dir": "state", "pid_dir": "pid", "log_dir": "log",
            "agent_socket": "run/mtce/agent.sock"}.items()}
        for key in ("platform_dir", "dhcp_leases_dir", "ifcfg_dir", "sys_class_net", "run_dir",
                    "persist_dir", "state_dir", "pid_dir", "log_dir"):
            os.makedirs(self.paths[key], exist_ok=True)
        os.makedirs(os.path.dirname(self.paths["dnsmasq_hosts"]), exist_ok=True)
        self.actions_log = os.path.join(self.root, "actions.log")
        self.write("hostname", hostname + "\n")
        self.write("build.info", 'SW_VERSION="25.09"\n')
        self.write_hosts()
        if platform:
            self.write_platform(subfunction=subfunction, system_type=system_type,
                                system_mode=system_mode)
        self.add_iface(mgmt_iface, mac)
        if self.pxeboot_ip:
            self.write_lease(f"{mgmt_iface}:2", self.pxeboot_ip)
        self.values = {
            "client": {"mgmt_ip": self.mgmt_ip, "cluster_host_ip": self.cluster_host_ip or "",
                       "mtcalive_period": period},
            "timeouts": {"failsafe_shutdown_delay": failsafe_delay},
            "paths": dict(self.paths),
            "actions": {a: f"echo {a} >> {self.actions_log}" for a in HARMLESS_ACTIONS
                        if a != "alarm"},
        }
        for section, kv in (extra or {}).items():
            self.values.setdefault(section, {}).update(kv)
        self.ini = os.path.join(self.root, "mtc.ini")
        self.write_ini()

    def write(self, rel: str, text: str) -> str:
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def write_hosts(self) -> None:
        self.write("hosts", "".join(f"{ip} {name}\n" for ip, name in (
            (self.controller, "controller"), (self.c_mgmt[0], "controller-0"),
            (self.c_mgmt[1], "controller-1"), (self.c_clstr[0], "controller-0-cluster-host"),
            (self.c_clstr[1], "controller-1-cluster-host"))))

    def write_ini(self) -> None:
        lines = []
        for section, kv in self.values.items():
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {v}" for k, v in kv.items())
        self.write("mtc.ini", "\n".join(lines) + "\n")

    def write_platform(self, subfunction="worker", system_type="standard",
                       system_mode="duplex", **more) -> None:
        conf = {"nodetype": subfunction.split(",")[0], "subfunction": subfunction,
                "system_type": system_type, "system_mode": system_mode,
                "management_interface": self.mgmt_iface,
                "cluster_host_interface": self.clstr_iface}
        conf.update(more)
        self.write("platform/platform.conf",
                   "".join(f"{k}={v}\n" for k, v in conf.items() if v is not None))

    def add_iface(self, name: str, mac: str, devtype: str | None = None) -> None:
        d = os.path.join(self.paths["sys_class_net"], name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "address"), "w") as f:
            f.write(mac + "\n")
        with open(os.path.join(d, "uevent"), "w") as f:
            f.write(f"INTERFACE={name}\n" + (f"DEVTYPE={devtype}\n" if devtype else ""))

    def write_lease(self, key: str, address: str) -> None:
        self.write(f"dhcp/dhclient.{key}.leases",
                   f'lease {{\n  interface "{key}";\n  fixed-address {address};\n}}\n')

    def log_text(self, program="mtcClient") -> str:
        path = os.path.join(self.paths["log_dir"], f"{program}.log")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def actions(self) -> list[str]:
        try:
            with open(self.actions_log, encoding="utf-8") as f:
                return f.read().split()
        except FileNotFoundError:
            return []


@pytest.fixture(autouse=True)
def _no_systemd_failsafe(monkeypatch):
    """An in-process client never asks this machine's systemd for a failsafe unit, even where
    systemd is PID 1: tests of that path (test_client_actions.py) point SYSTEMD_BOOTED at their own
    directory and put a fake systemd-run on PATH."""
    from mtce import client_actions
    monkeypatch.setattr(client_actions, "SYSTEMD_BOOTED",
                        "/nonexistent/mtce-tests/run/systemd/system")


@pytest.fixture
def fakehost(tmp_path):
    """Build a FakeHost; call it with overrides, e.g. `fakehost(subfunction="controller")`."""
    made = []

    def make(name="host", **kw):
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        host = FakeHost(root, **kw)
        made.append(host)
        return host

    return make


class Daemon:
    """A real mtce daemon process in the foreground (`-f`), its stderr captured to a file."""

    def __init__(self, argv: list[str], log_path: str, env=None):
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)

    def text(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_log(self, needle: str, timeout: float = 10.0, count: int = 1) -> str:
        def found():
            t = self.text()
            return t if t.count(needle) >= count else None
        try:
            return wait_until(found, timeout, what=f"{needle!r} in the log")
        except AssertionError:
            raise AssertionError(f"{needle!r} not logged within {timeout} s; log:\n"
                                 + self.text()[-4000:]) from None

    def signal(self, signum) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def daemons(mtce_cmd, tmp_path):
    """Start daemons: `daemons("client", ini)`; all are stopped at teardown."""
    started = []

    def start(mode: str, ini: str, *extra, name: str | None = None, env=None,
              prefix: list | None = None) -> Daemon:
        assert_harmless(ini)
        log = tmp_path / f"{name or mode}-{len(started)}.stderr"
        d = Daemon((prefix or []) + mtce_cmd + [mode, "-c", ini, "-f", *extra], str(log),
                   env=env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def sim(tmp_path, request):
    """`make(**kw)` builds an in-process Sim (tests/harness/sim.py: the real Agent and Clients
    on a FakeNetwork, one FakeClock); every Sim is stopped at the end, and a traceback any of
    them caught fails the test. A module or test narrows the defaults with
    `@pytest.mark.sim(clients=["worker-0"], agent=False)` (the test plays the agent);
    `ctl=True` puts the agent's control socket in a short directory (a Unix socket path has
    at most 107 bytes) for tests that talk to it."""
    from harness.sim import sims
    mark = request.node.get_closest_marker("sim")
    defaults = dict(mark.kwargs) if mark else {}
    short = tempfile.mkdtemp(prefix="mtce-ctl-", dir="/tmp") if defaults.pop("ctl", False) \
        else None
    if short:
        defaults["agent_extra"] = {"paths": {"agent_socket": os.path.join(short, "agent.sock")}}
    try:
        with sims(tmp_path, **defaults) as make:
            yield make
    finally:
        if short:
            shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def netlab(tmp_path, daemons, mtce_cmd):
    """`make(workers=2, ...)`: the real agent and clients in network namespaces
    (tests/harness/netns.py `build_netlab`); everything is stopped and removed at the end."""
    from harness.netns import netlab_maker
    yield from netlab_maker(tmp_path, daemons)
