"""The module rule of docs/design.md: state modules do no network or process I/O, and the
zipapp's start-up stays light (pyroute2 only when netlink is used)."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys

import pytest

from conftest import REPO

NO_IO = {"socket", "select", "selectors", "subprocess", "pyroute2", "daemon", "lockfile"}
PURE = {
    "mtce.states": NO_IO | {"os", "time"},
    "mtce.alive": NO_IO | {"os", "time"},
    "mtce.clock": NO_IO | {"os"},
    "mtce.hosts": NO_IO | {"os", "time"},
    "mtce.alarms": NO_IO | {"time"},      # reads and writes its one state file
    "mtce.auth": NO_IO | {"time"},        # reads the key file; the clock comes in
    "mtce.status": NO_IO | {"time"},      # stats flag files
    "mtce.schedule": NO_IO | {"os", "time"},
    "mtce.clienttrust": NO_IO | {"os", "time"},
    "mtce.acts": NO_IO | {"os", "time"},
    "mtce.seqs": NO_IO | {"os", "time"},
    "mtce.pxemon": NO_IO | {"os", "time"},
    "mtce.locks": NO_IO | {"os", "time"},
    "mtce.offline": NO_IO | {"os", "time"},
    "mtce.table": NO_IO | {"os", "time"},
    "mtce.commands": NO_IO | {"os", "time"},
    "mtce.budget": NO_IO | {"os", "time"},
    "mtce.pacing": NO_IO | {"os", "time"},
    "mtce.store": NO_IO | {"time"},       # reads and writes the state files
}


def imported(module) -> set[str]:
    # getsource works for a module inside the zipapp too (MTCE_BIN=/usr/bin/mtce).
    tree = ast.parse(inspect.getsource(module))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("name", sorted(PURE))
def test_state_modules_do_no_io(name):
    banned = imported(importlib.import_module(name)) & PURE[name]
    assert not banned, f"{name} imports {sorted(banned)}"


def test_version_does_not_import_pyroute2_or_the_daemons():
    code = ("import sys; from mtce import cli\n"
            "try:\n    cli.main(['--version'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pyroute2', 'daemon', 'lockfile', 'configobj')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env={"PYTHONPATH": ":".join(sys.path)}, timeout=60).stdout
    assert out.strip().splitlines()[-1] == "[]"
