"""Nothing the tests run may reboot, reset or power off the machine they run on."""

from __future__ import annotations

import pytest

from harness.fakehost import assert_harmless
from mtce import config


def test_shipped_defaults_are_the_dangerous_ones_so_tests_must_override_them():
    defaults = config.defaults()
    assert "reboot" in defaults.actions.reboot
    assert "sysrq" in defaults.actions.reset and "sysrq" in defaults.actions.failsafe
    assert "wipedisk --force" in defaults.actions.wipedisk


def test_every_test_host_sets_every_action_to_something_harmless(fakehost):
    host = fakehost()
    assert_harmless(host.ini)
    cfg = config.load(host.ini)
    for key in ("reboot", "reset", "lazy_reboot", "failsafe", "wipedisk"):
        assert cfg.get("actions", key).startswith("echo ")


def test_the_guard_refuses_an_ini_without_actions(tmp_path):
    ini = tmp_path / "mtc.ini"
    ini.write_text("[client]\nmtcalive_period = 1\n")
    with pytest.raises(AssertionError, match="is not set"):
        assert_harmless(str(ini))
    ini.write_text("[actions]\nreboot = systemctl reboot\nreset = true\nlazy_reboot = true\n"
                   "failsafe = true\n")
    with pytest.raises(AssertionError, match="systemctl"):
        assert_harmless(str(ini))


# -- no test may hang (issue 12) -----------------------------------------------------------------

def _calls_without_timeout(path: str) -> list[str]:
    """`subprocess.run/call/check_*` and argument-less `.wait()`/`.communicate()` calls that
    name no timeout: any of them can hang a test run for ever."""
    import ast
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name, base = node.func.attr, node.func.value
        kwargs = {k.arg for k in node.keywords}
        if "timeout" in kwargs:
            continue
        if name in ("run", "call", "check_call", "check_output") and \
                isinstance(base, ast.Name) and base.id == "subprocess":
            found.append(f"{path}:{node.lineno}: subprocess.{name}")
        elif name in ("wait", "communicate") and not node.args:
            found.append(f"{path}:{node.lineno}: .{name}()")
    return found


def test_every_subprocess_call_has_a_timeout():
    import glob
    import os
    from harness.env import REPO
    files = sorted(glob.glob(os.path.join(REPO, "tests", "*.py"))
                   + glob.glob(os.path.join(REPO, "mtce", "*.py"))
                   + glob.glob(os.path.join(REPO, "tools", "*.py")))
    assert len(files) > 20
    offenders = [c for path in files for c in _calls_without_timeout(path)]
    assert offenders == []


def test_the_timeout_check_sees_a_call_without_one(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import subprocess\nsubprocess.run(['true'])\np.wait()\n"
                   "subprocess.run(['true'], timeout=5)\np.wait(3)\n")
    assert [c.split(": ", 1)[1] for c in _calls_without_timeout(str(bad))] == \
        ["subprocess.run", ".wait()"]


def test_a_test_that_runs_too_long_is_stopped_with_a_failure():
    import time
    from types import SimpleNamespace
    from harness.timeouts import TestTimedOut, time_limit
    mark = SimpleNamespace(args=(0.2,))
    item = SimpleNamespace(nodeid="tests/x.py::t", get_closest_marker=lambda name: mark,
                           config=None)
    started = time.monotonic()
    with pytest.raises(TestTimedOut, match=r"tests/x.py::t: the test ran past 0.2 s"):
        with time_limit(item, "the test"):
            for _ in range(100):        # bounded: 5 s at most if the limit did not work
                time.sleep(0.05)
    assert time.monotonic() - started < 2


def test_the_session_sweep_touches_only_what_is_stale():
    import os
    import subprocess
    from harness import sweep
    dead = subprocess.Popen(["true"])
    dead.wait(10)
    names = [f"mtce-t{dead.pid}-worker-0-1", f"mtce-t{os.getpid()}-worker-0-2",
             "mtce-lab-abc_1234-controller-0", "mtce-lab-live5678-sw", "other-ns"]
    assert sweep.stale_namespaces(names, {"mtce-lab-live5678"}) == \
        [f"mtce-t{dead.pid}-worker-0-1", "mtce-lab-abc_1234-controller-0"]
    ini = "/tmp/pytest-of-root/pytest-3/test_x0/host/mtc.ini"
    assert sweep.stale_daemon(1, ["python3", "/r/mtce.py", "client", "-c", ini, "-f"])
    assert not sweep.stale_daemon(4242, ["python3", "/r/mtce.py", "client", "-c", ini])
    assert not sweep.stale_daemon(1, ["/usr/bin/mtce", "agent", "-c", "/etc/mtc.ini"])
    assert not sweep.stale_daemon(1, ["sleep", "-c", ini])


def test_a_tests_loopback_block_is_never_one_a_lab_uses():
    """Tests run beside `mtce lab` (127.42) and tools/ci_lab.sh's lanes (127.61-80): the random
    block a test takes must never be theirs (issue 26's review: it could land on 127.42)."""
    from harness.env import LAB_BLOCKS, loopback_block
    seen = {int(loopback_block().split(".")[1]) for _ in range(3000)}
    assert not seen & LAB_BLOCKS and seen <= set(range(10, 251))
    assert 42 in LAB_BLOCKS and set(range(61, 81)) <= LAB_BLOCKS
