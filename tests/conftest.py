"""The suite's fixtures and hooks: the program under test, a whole fake host under tmp_path,
real daemons, the in-process simulation, the netns lab; a time limit on every test phase.
The helpers they are built from are in tests/harness/ (env, fakehost, daemons).

`MTCE_BIN` names the program to test (default: this tree's `python3 mtce.py`); when it is a
zipapp, unit tests import `mtce` from it too, so the installed package is what is tested.
Tests that need root or network namespaces fail instead of skipping under CI=true.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

from harness.daemons import Daemon
from harness.env import PROGRAM          # first: it puts the program under test on sys.path
from harness.fakehost import FakeHost, assert_harmless
from harness.timeouts import time_limit


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with time_limit(item, "setup"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with time_limit(item, "the test"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    with time_limit(item, "teardown"):
        yield


@pytest.fixture(scope="session")
def mtce_cmd() -> list[str]:
    """The argv prefix that runs mtce (`MTCE_BIN` or `python3 mtce.py`)."""
    return list(PROGRAM)


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
