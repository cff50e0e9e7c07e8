"""docs/design.md's module map holds: every module is in it once, in its family's layer; a
module imports only its own layer and those above, and neither daemon's family the other's;
pure modules do no network or process I/O. And the zipapp's start-up stays light (pyroute2
only when netlink is used)."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys

import pytest

from harness.env import REPO

NO_IO = {"socket", "select", "selectors", "subprocess", "pyroute2", "daemon", "lockfile"}
# What a module's rule in docs/design.md's map allows it (its rule's first words).
PURITY = (("pure but for its files", NO_IO | {"time"}), ("pure but for time", NO_IO | {"os"}),
          ("pure", NO_IO | {"os", "time"}))
# The layer each family lives in (docs/design.md "Module map"); no prefix: shared (1 or 2).
FAMILIES = (("agent", 4), ("client", 3), ("cli", 5), ("lab", 5), ("bench", 5))
DESIGN = os.path.join(REPO, "docs/design.md")    # tools/chroot_test.sh copies it beside tests/


def module_map() -> dict:
    """docs/design.md's module map: {module: (layer, the rule it keeps)}."""
    with open(DESIGN, encoding="utf-8") as f:
        section = f.read().split("\n## Module map")[1].split("\n## ")[0]
    found, layer = {}, 0
    for line in section.splitlines():
        heading = re.match(r"\*\*(\d)\. ", line)
        if heading:
            layer = int(heading.group(1))
        elif line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rule = cells[2] if len(cells) > 2 else ""
            for name in re.findall(r"`(\w+)\.py`", cells[0]):
                assert name not in found, f"{name}.py is in the module map twice"
                found[name] = (layer, rule)
    return found


MAP = module_map()


def family(name: str) -> str | None:
    return next((f for f, _ in FAMILIES if name == f or name.startswith(f + "_")), None)


def tree_of(name: str) -> ast.Module:
    # getsource works for a module inside the zipapp too (MTCE_BIN=/usr/bin/mtce).
    return ast.parse(inspect.getsource(importlib.import_module("mtce." + name)))


def imported(name: str) -> set[str]:
    """The top-level packages `mtce.<name>` imports (`import x`, `from x import`), anywhere."""
    names = set()
    for node in ast.walk(tree_of(name)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def mtce_imports(name: str) -> set[str]:
    """The mtce modules `mtce.<name>` imports, at the top or inside a function: absolute,
    relative (`from . import x`, `from .x import y`) or by name (`importlib.import_module`)."""
    names = set()
    for node in ast.walk(tree_of(name)):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and module == "mtce" or node.level == 1 and not module:
                names |= {a.name for a in node.names if a.name != "__version__"}
            elif node.level == 0 and module.startswith("mtce."):
                names.add(module.split(".")[1])
            elif node.level == 1:
                names.add(module.split(".")[0])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("mtce.")}
        elif isinstance(node, ast.Call) and node.args and \
                isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str) \
                and node.args[0].value.startswith("mtce."):
            names.add(node.args[0].value.split(".")[1])      # importlib.import_module("mtce.x")
    return names


def purity(name: str) -> frozenset | None:
    """What a module's rule bans it from importing (None: it is not pure)."""
    rule = MAP[name][1]
    return next((frozenset(b) for words, b in PURITY if rule.startswith(words)), None)


def test_the_module_map_names_every_module_once_in_its_familys_layer():
    """docs/design.md is the way in: a module missing from it, or named for one daemon but
    listed with the other's (or with the shared ones), is a map that lies."""
    import mtce
    shipped = {m.name for m in pkgutil.iter_modules(mtce.__path__)} | {"__init__"}
    assert set(MAP) == shipped, (f"not in the map: {sorted(shipped - set(MAP))}; "
                                 f"in the map, not in mtce/: {sorted(set(MAP) - shipped)}")
    for name, (layer, _) in MAP.items():
        fam = family(name)
        want = dict(FAMILIES)[fam] if fam else None
        assert layer == want if fam else layer in (1, 2), \
            f"{name}.py is listed in layer {layer}; its family says {want or '1 or 2'}"


@pytest.mark.parametrize("name", sorted(MAP))
def test_a_module_imports_only_its_own_layer_and_those_above(name):
    layer = MAP[name][0]
    for other in sorted(mtce_imports(name)):
        assert other in MAP, f"{name}.py imports mtce.{other}, which is not in the module map"
        assert MAP[other][0] <= layer, (f"{name}.py (layer {layer}) imports {other}.py "
                                        f"(layer {MAP[other][0]}), a layer below it")
        assert {family(name), family(other)} != {"agent", "client"}, \
            f"{name}.py imports {other}.py: one daemon's family imports the other's"


@pytest.mark.parametrize("name", sorted(n for n in MAP if purity(n) is not None))
def test_pure_modules_do_no_io(name):
    """A pure module imports no I/O module, itself or through an mtce module it imports:
    those must be pure too."""
    found = imported(name) & purity(name)
    assert not found, f"{name}.py is pure ({MAP[name][1].split(';')[0]}) but imports " \
                      f"{sorted(found)}"
    impure = sorted(m for m in mtce_imports(name) if m in MAP and purity(m) is None)
    assert not impure, f"{name}.py is pure but imports {impure}, which are not"


def test_version_does_not_import_pyroute2_or_the_daemons():
    code = ("import sys; from mtce import cli\n"
            "try:\n    cli.main(['--version'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pyroute2', 'daemon', 'lockfile', 'configobj')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env={"PYTHONPATH": ":".join(sys.path)}, timeout=60).stdout
    assert out.strip().splitlines()[-1] == "[]"
