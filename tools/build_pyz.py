#!/usr/bin/env python3
"""Build dist/mtce.pyz: one reproducible, pure-Python zipapp (docs/contract.md §1).

The archive holds `__main__.py` (a copy of mtce.py), the `mtce` package and the pinned runtime
dependencies of requirements.txt, installed with `pip install --no-deps --no-compile --target`
from binary wheels (their `*.dist-info` kept, so importlib.metadata still works; `bin/` and
`__pycache__` dropped). It is written with the standard library's zipfile, as `python3 -m
zipapp` does, but with every byte fixed: members sorted, one timestamp (SOURCE_DATE_EPOCH, or
1980-01-01), modes 0644/0755, the `#!/usr/bin/python3` line. Two builds of the same tree give
the same bytes. It refuses to build an archive that holds a C extension (.so/.pyd): zipimport
cannot load them, and the .deb is Architecture: all.

Usage: build_pyz.py [-o dist/mtce.pyz] [--compression deflate|stored]
Needs: a python with pip (the project venv has one); network or a pip wheel cache/find-links.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHEBANG = b"#!/usr/bin/python3\n"
DEFAULT_EPOCH = 315532800  # 1980-01-01T00:00:00Z, the earliest time a zip member can carry
NATIVE = re.compile(r"\.(so|pyd|dll|dylib)(\.[0-9.]+)?$", re.IGNORECASE)
SKIP_FILE = re.compile(r"(\.py[co]|~|\.swp|\.orig|\.rej)$")
COMPRESSION = {"deflate": zipfile.ZIP_DEFLATED, "stored": zipfile.ZIP_STORED}
PIP_TIMEOUT_S = 900     # a pip install that takes longer is stuck (a dead mirror), not slow


class BuildError(Exception):
    pass


def pinned(requirements: Path) -> dict[str, str]:
    """`name==version` lines of requirements.txt, names normalised as PEP 503 does."""
    pins = {}
    for raw in requirements.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)\s*==\s*([A-Za-z0-9.!+_-]+)", line)
        if not m:
            raise BuildError(f"{requirements}: not a pinned 'name==version' line: {raw!r}")
        pins[normalise(m.group(1))] = m.group(2)
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def bundled(tree: Path) -> dict[str, str]:
    """Distributions present in `tree`, from their *.dist-info/METADATA."""
    found = {}
    for info in sorted(tree.glob("*.dist-info")):
        meta = (info / "METADATA").read_text(encoding="utf-8", errors="replace")
        name = re.search(r"^Name:\s*(.+)$", meta, re.M)
        version = re.search(r"^Version:\s*(.+)$", meta, re.M)
        if not (name and version):
            raise BuildError(f"{info.name}: METADATA without Name/Version")
        found[normalise(name.group(1).strip())] = version.group(1).strip()
    return found


def install_deps(requirements: Path, target: Path, python: str) -> None:
    cmd = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-input", "--no-deps", "--no-compile", "--only-binary=:all:",
           "--no-warn-script-location", "--target", str(target), "-r", str(requirements)]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PIP_ROOT_USER_ACTION="ignore")
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=PIP_TIMEOUT_S)
    if proc.returncode:
        raise BuildError("pip install failed:\n  " + " ".join(cmd) + "\n" + proc.stdout)
    for info in target.glob("*.dist-info"):
        wheel = (info / "WHEEL").read_text(encoding="utf-8")
        if not re.search(r"^Root-Is-Purelib:\s*true", wheel, re.M | re.I):
            raise BuildError(f"{info.name}: not a pure-Python wheel")


def prune_record(record: Path) -> None:
    """Drop RECORD lines of files the archive does not carry (console scripts in ../../bin).

    Those scripts' hashes depend on the path of the interpreter that ran pip, which would make
    the archive depend on where the build ran.
    """
    lines = record.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [ln for ln in lines if not ln.startswith(("../", "bin/", "__pycache__/"))]
    record.write_text("".join(kept), encoding="utf-8")


def stage(staging: Path, requirements: Path, python: str) -> None:
    install_deps(requirements, staging, python)
    pins, have = pinned(requirements), bundled(staging)
    if pins != have:
        raise BuildError(f"bundled {have} differ from the pins {pins}")
    for record in staging.glob("*.dist-info/RECORD"):
        prune_record(record)
    shutil.copytree(ROOT / "mtce", staging / "mtce",
                    ignore=shutil.ignore_patterns("__pycache__", "*.py[co]", ".*"))
    shutil.copyfile(ROOT / "mtce.py", staging / "__main__.py")


def members(staging: Path) -> list[tuple[str, Path]]:
    """(archive name, path) for every directory and file to store, sorted by name."""
    out = []
    for dirpath, dirnames, filenames in os.walk(staging):
        top = Path(dirpath) == staging
        dirnames[:] = sorted(d for d in dirnames if not (
            d == "__pycache__" or d.startswith(".") or (top and d == "bin")))
        for d in dirnames:
            p = Path(dirpath, d)
            out.append((p.relative_to(staging).as_posix() + "/", p))
        for f in filenames:
            if SKIP_FILE.search(f) or f.startswith("."):
                continue
            p = Path(dirpath, f)
            out.append((p.relative_to(staging).as_posix(), p))
    out.sort(key=lambda m: m[0])
    native = [name for name, _ in out if NATIVE.search(name)]
    if native:
        raise BuildError("C extensions cannot go into the zipapp: " + ", ".join(native))
    return out


def write_zip(out: Path, items: list[tuple[str, Path]], compression: int, epoch: int) -> None:
    date_time = time.gmtime(max(epoch, DEFAULT_EPOCH))[:6]
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(SHEBANG)
        with zipfile.ZipFile(f, "w") as zf:
            for name, path in items:
                info = zipfile.ZipInfo(name, date_time)
                info.create_system = 3  # Unix, so external_attr carries the mode
                if name.endswith("/"):
                    info.external_attr = (0o40755 << 16) | 0x10
                    zf.writestr(info, b"")
                else:
                    info.external_attr = 0o100644 << 16
                    info.compress_type = compression
                    zf.writestr(info, path.read_bytes(), compresslevel=9)
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)


def build(output: Path, requirements: Path, compression: str = "deflate",
          python: str = sys.executable, epoch: int | None = None) -> Path:
    if epoch is None:
        epoch = int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_EPOCH))
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mtce-pyz-") as tmp:
        staging = Path(tmp, "root")
        stage(staging, requirements, python)
        write_zip(output, members(staging), COMPRESSION[compression], epoch)
    return output


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "dist" / "mtce.pyz")
    ap.add_argument("-r", "--requirements", type=Path, default=ROOT / "requirements.txt")
    ap.add_argument("--compression", choices=sorted(COMPRESSION), default="deflate")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter whose pip installs the dependencies (default: this one)")
    args = ap.parse_args(argv)
    try:
        out = build(args.output, args.requirements, args.compression, args.python)
    except BuildError as err:
        print(f"build_pyz: {err}", file=sys.stderr)
        return 1
    print(f"build_pyz: wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
