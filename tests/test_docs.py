"""Every reference a reader meets resolves inside the repository (issue 23 item 9).

The facts the code, the tests, the packaging and the docs rely on live under docs/: the
contract in docs/contract.md, the wire and the C original's behaviour in docs/protocol.md,
mtce's deliberate deviations in docs/design.md, the HA setup in docs/ha.md, the original's
test plan in docs/testing.md. A clone of the repository is enough to follow any citation.

The citation grammar this test reads, in every file of `scanned()` (README, docs, the code
with its comments, docstrings and help texts, packaging, configuration, tests, tools):

- `docs/<file>.md §<N>[.<M>...]`: the file exists under docs/ and has a numbered heading for
  that number (`## 5. What each side does`, `### 5.3 Who may command a client`). A range
  (`docs/protocol.md §5.1-5.4`, `docs/protocol.md §2-§3`) names both its ends; a list
  (`docs/protocol.md §4.1, §5.2`, `docs/protocol.md §4.1 and §6`) names each.
- Right after the number: a name in double quotes is a heading or a bold lead-in
  (`**Takeover.**`) inside that section (`docs/contract.md §8 "Network state"`); a
  back-quoted word occurs in that section's text (`docs/contract.md §5 `failure_flags``).
  A capitalised word there without quotes is refused: quote the name.
- A `§<N>` with no file name before it continues the nearest citation at most 6 lines above
  it in the same file; in a docs/<file>.md without one, it is that file's own section.
- `docs/<file>.md "<Name>"` (a comma may come before the quote) and `README "<Name>"`: a
  heading or a bold lead-in of that file; a heading matches by its text, or by its text up
  to a parenthesis or colon (`docs/design.md "Module map"`, `README "Security"`).
- Any `<path>.md` (markdown links included) exists relative to the file that names it or to
  the root, and an `#<anchor>` after it is the GitHub anchor of one of its headings.
- Refused: a `§` after any other name (the founders' notes, and words such as contract,
  interface or style, name nothing a clone has), a `§` without a number (in a grammar
  `§<N>` stands for one, `<Name>` for a name, and the sign alone in back-quotes is the
  sign), and places outside the repository (the founders' shared directory, their note
  files, their `anchors <X.N>` sections).
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field


from harness.env import REPO

# About the source tree: the chroot run (tools/chroot_test.sh) leaves this file out; anywhere
# else a tree without docs/ is a failure, not a skip.

TOP_FILES = ("README.md", "mtce.py", "Makefile", "setup.py", "stdeb.cfg", "MANIFEST.in",
             "pytest.ini", "requirements.txt", "requirements-dev.txt")
TREES = ("docs", "mtce", "debian", "etc", "tests", "tools", "mk", ".ci")
SKIP_DIRS = {"__pycache__"}
SELF = "tests/test_docs.py"     # read for its docstring only (test_the_checker_...)
WINDOW = 6                      # lines a bare `§N` looks back for the file it continues
# Words that name a document outside the repository when a `§` follows them.
FOREIGN = {"contract", "contract's", "interface", "interface's", "spec", "style", "anchors",
           "reference", "notes", "agent", "client", "protocol", "ha", "design", "testing"}
NUM = r"\d+(?:\.\d+)*"
SECTION = re.compile(r"§(\s?)(" + NUM + r")(?:\s*[-\u2013]\s*§?(" + NUM + r"))?")
OUTSIDE = re.compile(r"/work/[^\s`'\")]*|\.\./shared\b[^\s`'\")]*|\bshared/(?:spec|reference)\b|"
                     r"\banchors(?:\.md)?\s+§?[A-E]\.\d")
MD_PATH = re.compile(r"(?<![\w/.:-])((?:\.\.?/)?(?:[\w.-]+/)*[\w-][\w.-]*\.md)"
                     r"(#[\w-]+)?(?![\w-])")
URL = re.compile(r"https?://\S+")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
BOLD = re.compile(r"\*\*([^*\n]+?)\*\*")
# `docs/FILE.md "Name"` or `README "Name"` (a comma may come before the quote).
NAMED = re.compile(r"(docs/[\w.-]+\.md|README(?:\.md)?),?\s+\"([^\"\n]+)\"")


def scanned() -> list[str]:
    """Paths (relative to the root) of every text file the test reads."""
    out = [f for f in TOP_FILES if os.path.isfile(os.path.join(REPO, f))]
    for tree in TREES:
        for d, dirs, files in os.walk(os.path.join(REPO, tree)):
            dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS)
            for f in sorted(files):
                out.append(os.path.relpath(os.path.join(d, f), REPO))
    return out


def read(rel: str) -> str | None:
    try:
        with open(os.path.join(REPO, rel), encoding="utf-8") as f:
            return f.read()
    except (UnicodeDecodeError, IsADirectoryError):
        return None


def plain(text: str) -> str:
    """A heading's or bold text without markdown marks, links or trailing punctuation."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return text.replace("`", "").replace("*", "").strip().rstrip(".:").strip()


def anchor(text: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@dataclass
class Doc:
    """A markdown file's headings: numbered sections, names and anchors."""
    sections: dict = field(default_factory=dict)     # "5.3" -> section text
    names: dict = field(default_factory=dict)        # "5.3" -> names inside it
    all_names: set = field(default_factory=set)
    anchors: set = field(default_factory=set)


_docs: dict = {}


def doc(rel: str) -> Doc | None:
    if rel in _docs:
        return _docs[rel]
    text = read(rel) if os.path.isfile(os.path.join(REPO, rel)) else None
    d = None
    if text is not None:
        d = Doc()
        lines = text.split("\n")
        heads = []                          # (line index, level, text)
        fenced = False
        for i, line in enumerate(lines):
            if FENCE.match(line):
                fenced = not fenced
                continue
            m = None if fenced else HEADING.match(line)
            if m:
                heads.append((i, len(m.group(1)), m.group(2)))
        seen: dict = {}
        for k, (i, level, title) in enumerate(heads):
            base = anchor(title)
            n = seen.get(base, 0)
            seen[base] = n + 1
            d.anchors.add(base if n == 0 else f"{base}-{n}")
            name = plain(title)
            d.all_names.update({name, re.split(r"\s*[(:\[]", name)[0].strip()})
            num = re.match(r"(" + NUM + r")\.?\s", title + " ")
            if num:
                end = next((j for j, lv, _ in heads[k + 1:] if lv <= level), len(lines))
                body = "\n".join(lines[i:end])
                d.sections[num.group(1)] = body
                inner = {plain(t) for j, _, t in heads if i < j < end}
                inner |= {re.split(r"\s*[(:\[]", x)[0].strip() for x in inner}
                inner |= {plain(b) for b in BOLD.findall(body)}
                d.names[num.group(1)] = inner
        d.all_names |= {plain(b) for b in BOLD.findall(text)}
    _docs[rel] = d
    return d


def flatten(before: str) -> str:
    """The text before a `§`, with line breaks and comment marks between lines made one
    space, so that a citation broken over two lines reads as one."""
    return re.sub(r"\s*\n\s*(?:#+|;+|//|\*|\"\"\")?\s*", " ", before)


def problems_in(rel: str, text: str) -> list[str]:
    """Every citation of `text` (the file `rel`) that does not resolve, as `rel:line: why`."""
    out = []
    here = os.path.dirname(rel)
    own = rel if rel.startswith("docs/") and rel.endswith(".md") else None
    starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line_of(pos: int) -> int:
        lo, hi = 0, len(starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if starts[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    def bad(pos: int, why: str) -> None:
        out.append(f"{rel}:{line_of(pos)}: {why}")

    # -- `§` citations -----------------------------------------------------------------
    last = None                             # (line, target) of the latest named citation
    for m in re.finditer("§", text):
        pos = m.start()
        line = line_of(pos)
        sec = SECTION.match(text, pos)
        if not sec:
            if not text.startswith(("§<", "§`"), pos):
                bad(pos, f"a § without a section number: {text[pos:pos + 12]!r}")
            continue
        pre = flatten(text[max(0, pos - 160):pos])
        word = re.search(r"([\w./'\u2019-]+)[,:]?\s*$", pre)
        word = word.group(1).rstrip(".") if word else ""
        quoted = re.search(r"(docs/[\w.-]+\.md)\s*$", pre)
        if quoted:
            target = quoted.group(1)
        elif word.endswith(".md") or word.lower().strip("(") in FOREIGN:
            target = "!" + word.strip("(")
        elif last and line - last[0] <= WINDOW:
            target = last[1]
        elif own:
            target = own
        else:
            bad(pos, f"§{sec.group(2)} names no file: write docs/<file>.md §{sec.group(2)}")
            continue
        if quoted or target.startswith("!"):
            last = (line, target)
        numbers = [n for n in (sec.group(2), sec.group(3)) if n]
        cited = "§" + "-".join(numbers)
        if target.startswith("!"):
            bad(pos, f"{target[1:]} {cited}: not a file of this repository "
                     f"(cite docs/<file>.md §<N>)")
            continue
        d = doc(target)
        if d is None:
            bad(pos, f"{target} {cited}: no such file")
            continue
        missing = [n for n in numbers if n not in d.sections]
        if missing:
            bad(pos, f"{target} §{missing[0]}: no such numbered section in {target}")
            continue
        after = text[sec.end():sec.end() + 120]
        name = re.match(r"(?:\s+|,\s*)\"([^\"\n]+)\"", after)
        code = re.match(r"\s+`([^`\n]+)`", after)
        cap = re.match(r" ([A-Z][a-z]+)\b", after)
        if name and plain(name.group(1)) not in d.names[numbers[-1]]:
            bad(pos, f"{target} {cited} \"{name.group(1)}\": no such heading or bold "
                     f"lead-in in that section")
        elif code and code.group(1) not in d.sections[numbers[-1]]:
            bad(pos, f"{target} {cited} `{code.group(1)}`: not in that section")
        elif cap and not name:
            bad(pos, f"{target} {cited} {cap.group(1)}: a sub-name goes in double quotes")

    # -- `docs/FILE.md "Name"`, `README "Name"` ------------------------------------------
    for m in NAMED.finditer(text):
        if m.group(2).startswith("<"):
            continue                        # a placeholder in a grammar
        target = "README.md" if m.group(1).startswith("README") else m.group(1)
        d = doc(target)
        if d is None:
            bad(m.start(), f"{target}: no such file")
        elif plain(m.group(2)) not in d.all_names:
            bad(m.start(), f"{target} \"{m.group(2)}\": no such heading or bold lead-in")

    # -- file names and anchors ------------------------------------------------------------
    urls = [u.span() for u in URL.finditer(text)]
    for m in MD_PATH.finditer(text):
        if any(a <= m.start() < b for a, b in urls):
            continue
        path, frag = m.group(1), m.group(2)
        if re.match(r",?\s*§", flatten(text[m.end():m.end() + 40])):
            continue                        # reported with its § above
        found = None
        for base in (here, ""):
            cand = os.path.normpath(os.path.join(base, path))
            if not cand.startswith("..") and os.path.isfile(os.path.join(REPO, cand)):
                found = cand
                break
        if found is None:
            bad(m.start(), f"{path}: no such file in the repository")
        elif frag and frag[1:] not in doc(found).anchors:
            bad(m.start(), f"{path}{frag}: no such heading in {found}")

    for m in OUTSIDE.finditer(text):
        bad(m.start(), f"{m.group(0)!r}: a place outside the repository")
    return out


def all_problems() -> tuple[list[str], int]:
    """Every problem in the scanned files, and how many files were read."""
    out, n = [], 0
    for rel in scanned():
        if rel == SELF:
            continue                        # its strings are broken citations on purpose
        text = read(rel)
        if text is None:
            continue
        n += 1
        out += problems_in(rel, text)
    return out, n


# -- the tests ---------------------------------------------------------------------------


def test_every_citation_in_the_repository_resolves_under_docs():
    """Issue 23 item 9: every `§` citation, document name and anchor a reader meets in the
    README, the docs, the code, the packaging, the configuration, the tests and the tools
    resolves to a file and a section of this repository (grammar in the module docstring)."""
    problems, files = all_problems()
    assert files > 150, f"only {files} files read: is the scan list right?"
    assert not problems, f"{len(problems)} citations lead nowhere:\n" + "\n".join(problems)


def test_every_command_help_resolves():
    """Issue 23 item 9: `mtce --help` and each command's `--help` (argparse text) cite only
    what resolves here."""
    from mtce import cli
    top = cli._parser()
    texts = {"mtce --help": top.format_help()}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                texts[f"mtce {name} --help"] = sub.format_help()
    assert len(texts) >= 10, sorted(texts)
    problems = []
    for what, text in texts.items():
        problems += problems_in(what, text)
    assert not problems, "\n".join(problems)


def test_the_checker_refuses_what_leads_nowhere():
    """The checker itself: each kind of broken reference is reported at its line, and the
    good forms pass (so the test above cannot pass by reading nothing)."""
    note = "agent" + ".md"
    broken = {
        f"x ({note} §6)": "not a file of this repository",
        "y (contract §8)": "not a file of this repository",
        "z (docs/contract.md §9)": "no such numbered section",
        "w (docs/contract.md §1.4)": "no such numbered section",
        "v (docs/nothere.md §1)": "no such file",
        "u (§4)": "names no file",
        'a (docs/contract.md §8 "No such bullet")': "no such heading or bold lead-in",
        "b (docs/contract.md §8 Takeover)": "a sub-name goes in double quotes",
        "c (docs/contract.md §5 `no_such_key`)": "not in that section",
        "d [link](docs/protocol.md#no-such-heading)": "no such heading",
        f"e see {note}": "no such file in the repository",
        'f docs/design.md "No such heading"': "no such heading or bold lead-in",
        "g " + "/work/" + "shared/spec": "outside the repository",
        "h (" + "anchors" + " D.3)": "outside the repository",
        "i (docs/protocol.md §D.7)": "without a section number",
    }
    for text, why in broken.items():
        found = problems_in("mtce/x.py", "\n\n" + text + "\n")
        assert len(found) == 1 and why in found[0] and found[0].startswith("mtce/x.py:3:"), \
            (text, found)
    good = [
        "(docs/contract.md §8 \"Network state\")",
        "(docs/contract.md §8, \"Takeover\") and §1",
        "(docs/protocol.md §5.1-5.4, §6; docs/protocol.md §2-§3)",
        "docs/contract.md §5 `failure_flags`",
        "(docs/protocol.md\n    # §1.2)",
        "[the deviations](docs/design.md#deliberate-deviations-from-the-c-original)",
        "docs/design.md \"Module map\", README \"Security\"",
        "a grammar: docs/FILE.md §<N>",
    ]
    for text in good:
        assert problems_in("mtce/x.py", text) == [], text
    assert problems_in(SELF, __doc__) == [], "the grammar's own examples resolve"
    # In a doc, a bare § is the doc's own section.
    assert problems_in("docs/protocol.md", "see §5.3") == []
    assert problems_in("docs/design.md", "see §5.3")


TEST_REF = re.compile(r"`(?:(test_\w+)::)?(test_\w+)(\.\.\.|\*)?`")
NOT_TESTS = {"test_timeout"}        # pytest.ini's option


def stale_test_references(text: str, modules: dict) -> list[str]:
    """The `test_file::test_name` and bare `test_name` references in `text` that name no test
    of this tree (a trailing `...` or `*` is a prefix); `modules` maps a test file's module
    name to the test functions it defines."""
    everywhere = set().union(*modules.values())
    bad = []
    for m in TEST_REF.finditer(text):
        module, name, prefix = m.groups()
        names = modules.get(module, set()) if module else everywhere
        if module and module not in modules:
            bad.append(f"{module}: no such test file")
        elif not module and (name in modules or name in NOT_TESTS):
            continue                                    # a test file named alone
        elif prefix and not any(n.startswith(name) for n in names):
            bad.append(f"{m.group(0)}: no test starts so")
        elif not prefix and name not in names:
            bad.append(f"{m.group(0)}: no such test" + (f" in {module}.py" if module else ""))
    return bad


def test_every_test_a_document_names_exists():
    """docs/testing.md maps each line of the original's test plan to the tests that cover it,
    and the docs name tests elsewhere too: each `test_file::test_name` and bare `test_name`
    is a test of this tree (a rename, a split file or a moved test makes a stale map)."""
    modules = {}
    for f in os.listdir(os.path.join(REPO, "tests")):
        if f.startswith("test_") and f.endswith(".py"):
            modules[f[:-3]] = set(re.findall(r"(?m)^(?:    )?def (test_\w+)", read(f"tests/{f}")))
    docs = ["README.md"] + [f"docs/{f}" for f in sorted(os.listdir(os.path.join(REPO, "docs")))
                            if f.endswith(".md")]
    bad = [f"{rel}: {why}" for rel in docs for why in stale_test_references(read(rel), modules)]
    assert len(modules) > 40 and not bad, "\n".join(bad)
    broken = stale_test_references(
        "`test_x::test_a` `test_y::test_b` `test_c` `test_d...` `test_y`",
        {"test_y": {"test_a"}, "test_z": {"test_dd"}})
    assert broken == ["test_x: no such test file", "`test_y::test_b`: no such test in test_y.py",
                      "`test_c`: no such test"], broken
