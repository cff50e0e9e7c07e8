"""The command line as a user meets it first: `python3 mtce.py` from a fresh clone."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import PROGRAM, REPO


def test_item11_without_the_venv_one_line_says_what_to_run(tmp_path):
    """Issue 11 item 11, contract §1: plain `python3 mtce.py ...` without the dependencies
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
