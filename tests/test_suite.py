"""The suite's own rules (issue 23 item 22; docs/testing.md): what `make test` selects, which
tests are marked `slow`, and that a test which cannot run here is a skip (a failure under
CI=true), never a pass. pytest itself is asked, in a subprocess, as `make test` runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


from harness.env import REPO, need

FLOODS = ("tests/test_sim_agent.py::"
          "test_two_hundred_thousand_hostile_datagrams_log_at_most_60_lines",
          "tests/test_sim_client.py::"
          "test_two_hundred_thousand_hostile_datagrams_log_at_most_60_client_lines")


def pytest_run(*args, env=None) -> str:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
                          check=False)
    return proc.stdout + proc.stderr


def collected(*args) -> set[str]:
    out = pytest_run("--collect-only", "-q", *args)
    return {line.strip() for line in out.splitlines() if "::" in line}


def test_the_200000_datagram_floods_are_slow_and_make_test_still_runs_them():
    """They take 14 s and 20 s: marked `slow` (before: unmarked), and pytest.ini's default
    selection (`make test`, the whole suite) keeps the slow tests."""
    files = sorted({f.split("::")[0] for f in FLOODS})
    assert set(FLOODS) <= collected("-m", "slow", *files)
    assert set(FLOODS) <= collected(*files), "make test runs the slow tests too"


def test_no_old_python_is_a_skip_and_under_ci_a_failure(tmp_path):
    """test_packaging's real-old-interpreter test on a machine without one (before: it
    passed, having tested nothing)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYENV_VERSION")}
    env.update(PYENV_ROOT=str(tmp_path), PATH="/usr/sbin:/usr/bin:/sbin:/bin")
    olds = [n for n in ("python2", "python2.7", "python3.5", "python3.6", "python3.7",
                        "python3.8") if shutil.which(n, path=env["PATH"])]
    need(not olds, f"this machine has {olds[0] if olds else ''} in the system's own "
         "directories")
    target = ("tests/test_packaging.py::test_real_old_pythons_are_told_which_version_they_need"
              "[(none found)]")
    out = pytest_run("-q", "-rs", target, env=env)
    assert "1 skipped" in out and "no Python older than 3.9" in out, out[-2000:]
    out = pytest_run("-q", target, env={**env, "CI": "true"})
    assert "1 failed" in out and "cannot run under CI" in out, out[-2000:]


def test_a_normal_users_run_finds_the_tools_debian_puts_in_sbin(tmp_path):
    """`make test` as a normal user (PATH without /usr/sbin, issue 23 review): the suite looks
    where Debian installs ocf-tester, crm_simulate and start-stop-daemon, and does not call
    them missing."""
    probe = tmp_path / "test_probe.py"
    probe.write_text("import shutil\n\ndef test_probe():\n"
                     "    assert shutil.which('start-stop-daemon', path=None)\n")
    env = {**os.environ, "PATH": "/usr/local/bin:/usr/bin:/bin"}
    need(shutil.which("start-stop-daemon", path="/usr/sbin:/sbin") is not None,
         "start-stop-daemon (dpkg) is not in /usr/sbin or /sbin")
    out = pytest_run("-q", "--rootdir", REPO, "-c", os.path.join(REPO, "pytest.ini"),
                     "--confcutdir", os.path.join(REPO, "tests"), "-p", "conftest",
                     str(probe), env={**env, "PYTHONPATH": os.pathsep.join(
                         [os.path.join(REPO, "tests")] +
                         [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])})
    assert "1 passed" in out, out[-2000:]
