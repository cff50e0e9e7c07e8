"""mtc.ini: the original's inih rules, typing, errors that name file, line and key."""

from __future__ import annotations

import os

import pytest

from harness.env import shipped
from mtce import config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_text(tmp_path, text: str, name="mtc.ini") -> config.Config:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return config.load(str(path))


def test_shipped_ini_documents_every_key_at_its_default():
    path = os.path.join(REPO, "etc", "mtc.ini")
    cfg = config.load(path)
    assert cfg.warnings == ()
    entries, problems = config.read_ini(open(path, encoding="utf-8").read())
    assert problems == []
    shipped = {(e.section, e.key) for e in entries}
    assert shipped == set(config.OPTION_INDEX)
    assert cfg.values == config.defaults().values
    assert open(path, encoding="utf-8").read() == config.render_ini()


def test_inih_rules(tmp_path):
    cfg = load_text(tmp_path, "\ufeff; comment\n# comment\n[agent]   ; trailing\n"
                    "mtc_agent_port : 2201 ; inline\n"
                    "offline_period=50;\n"
                    "  ; indented comment\n"
                    "offline_threshold = 10\n"
                    "   20\n"
                    "[paths]\nrun_dir = /tmp/a;b\n")
    assert cfg.agent.mtc_agent_port == 2201
    assert cfg.agent.offline_period == 50          # `50;` reads as 50, as the original's atoi
    assert cfg.agent.offline_threshold == 20       # a continuation line re-assigns the name
    assert cfg.paths.run_dir == "/tmp/a;b"         # ';' without whitespace before it is data
    assert cfg.lines[("agent", "offline_threshold")] == 8


def test_a_semicolon_without_whitespace_is_part_of_the_value(tmp_path):
    with pytest.raises(config.ConfigError, match="offline_period: '50;x'"):
        load_text(tmp_path, "[agent]\noffline_period=50;x\n")


def test_first_equals_wins_over_colon(tmp_path):
    cfg = load_text(tmp_path, "[actions]\nreboot = echo a:b=c\n")
    assert cfg.actions.reboot == "echo a:b=c"


def test_unknown_keys_and_bad_lines_warn_never_fail(tmp_path):
    cfg = load_text(tmp_path, "[agent]\nheartbeat_period = 100\n[debug]\ndebug_msg=0\n"
                    "just words\n[client]\nmtcalive_period = 2\n")
    assert cfg.client.mtcalive_period == 2.0
    assert any("unknown key [agent] heartbeat_period" in w and ":2:" in w for w in cfg.warnings)
    assert any("unknown section [debug]" in w for w in cfg.warnings)
    assert any(":5: ignoring line" in w for w in cfg.warnings)


@pytest.mark.parametrize("line,key,why", [
    ("[agent]\nmtc_agent_port = 0", "[agent] mtc_agent_port", "too small"),
    ("[agent]\nmtc_agent_port = 70000", "[agent] mtc_agent_port", "too big"),
    ("[client]\nmtcalive_period = soon", "[client] mtcalive_period", "wrong type"),
    ("[client]\nmgmt_ip = 10.0.0.300", "[client] mgmt_ip", "expected an IPv4 or IPv6"),
    ("[security]\nrequire = maybe", "[security] require", "expected yes or no"),
    ("[agent]\noffline_threshold = 0", "[agent] offline_threshold", "too small"),
])
def test_bad_values_name_file_line_and_key(tmp_path, line, key, why):
    with pytest.raises(config.ConfigError) as err:
        load_text(tmp_path, "; first\n" + line + "\n")
    text = str(err.value)
    assert text.startswith(f"{tmp_path}/mtc.ini:3: {key}: ")
    assert why in text
    assert err.value.line == 3


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(str(tmp_path / "absent.ini"))
    bad = tmp_path / "bin.ini"
    bad.write_bytes(b"[agent]\n\xff\xfe\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(str(bad))
    assert err.value.line == 2


def test_ipv6_and_empty_addresses(tmp_path):
    cfg = load_text(tmp_path, "[client]\nmgmt_ip = fd00::0010\ncluster_host_ip =\n")
    assert cfg.client.mgmt_ip == "fd00::10" and cfg.client.cluster_host_ip == ""


def test_config_is_read_only_and_diffs(tmp_path):
    a = load_text(tmp_path, "[client]\nmtcalive_period = 5\n", "a.ini")
    b = load_text(tmp_path, "[client]\nmtcalive_period = 2\n", "b.ini")
    with pytest.raises(AttributeError):
        a.client.mtcalive_period = 3
    assert a.diff(b) == ["[client] mtcalive_period: 5.0 -> 2.0"]


INVENTORY = """\
[controller-0]
personality = controller        ; controller, worker, storage
mgmt_mac = 08:00:27:1E:0A:01
mgmt_ip = 192.168.204.2
cluster_host_ip = 192.168.206.2
administrative = unlocked

[worker-0]
personality = worker
mgmt_mac = 08:00:27:1e:0a:02
mgmt_ip = 192.168.204.50
administrative = locked
"""


def test_inventory_parsing():
    inv = config.parse_inventory(INVENTORY, "inv.ini")
    assert list(inv.hosts) == ["controller-0", "worker-0"]
    c0 = inv.hosts["controller-0"]
    assert c0.mgmt_mac == "08:00:27:1e:0a:01" and c0.is_controller
    assert inv.hosts["worker-0"].cluster_host_ip == ""
    assert inv.hosts["worker-0"].administrative == "locked"


@pytest.mark.parametrize("change,where", [
    (("mgmt_mac = 08:00:27:1e:0a:02", "mgmt_mac = 08:00:27:1e:0a"), "inv.ini:10: [worker-0] "
     "mgmt_mac"),
    (("mgmt_ip = 192.168.204.50", "mgmt_ip = 192.168.204.2"), "inv.ini:11: [worker-0] mgmt_ip"),
    (("administrative = locked", "administrative = maybe"), "inv.ini:12: [worker-0] "
     "administrative"),
    (("personality = worker", "personality ="), "inv.ini:9: [worker-0] personality"),
])
def test_inventory_errors_name_line_and_key(change, where):
    with pytest.raises(config.ConfigError) as err:
        config.parse_inventory(INVENTORY.replace(*change), "inv.ini")
    assert str(err.value).startswith(where)


def test_inventory_diff():
    a = config.parse_inventory(INVENTORY)
    b = config.parse_inventory(INVENTORY.replace("administrative = locked",
                                                 "administrative = unlocked")
                               + "\n[worker-1]\npersonality = worker\n"
                                 "mgmt_mac = 08:00:27:1e:0a:03\nmgmt_ip = 192.168.204.51\n")
    assert a.diff(b) == (["worker-1"], [], ["worker-0"])
    assert b.diff(a) == ([], ["worker-1"], ["worker-0"])


def test_sw_version_path_expansion(tmp_path):
    info = tmp_path / "build.info"
    info.write_text('OS="debian"\nSW_VERSION="25.09"\n')
    assert config.expand_path("/opt/platform/config/{SW_VERSION}/dnsmasq.hosts", str(info)) \
        == "/opt/platform/config/25.09/dnsmasq.hosts"
    assert config.expand_path("/opt/platform/config/{SW_VERSION}/dnsmasq.hosts",
                              str(tmp_path / "none")) == "/opt/platform/config/dnsmasq.hosts"


# -- issue 23 item 1: an inventory that does not parse exactly is refused --------------------

ISSUE_INVENTORY = """\
[worker-0]
personality = worker
mgmt_mac = 08:00:27:1e:0b:00
mgmt_ip = 192.168.204.50

[worker-1]
personality = worker
mgmt_mac = 08:00:27:1e:0b:01
mgmt_ip = 192.168.204.51

[worker-2]
personality = worker
mgmt_mac = 08:00:27:1e:0b:02
mgmt_ip = 192.168.204.52
"""


def _edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


# Each: (what an operator wrote, the line of the fault, its `[section] key`, words of the why).
BAD_INVENTORIES = [
    # `[worker-3` after `[worker-1]`: today skipped, worker-3's keys overwrite worker-1's.
    ("header without ]", _edit(ISSUE_INVENTORY, "[worker-2]\npersonality = worker\n"
                               "mgmt_mac = 08:00:27:1e:0b:02\nmgmt_ip = 192.168.204.52\n",
                               "[worker-3\npersonality = storage\n"
                               "mgmt_mac = 08:00:27:1e:0b:03\nmgmt_ip = 192.168.204.53\n"),
     11, "[worker-3", "section header without ']'"),
    ("section twice", _edit(ISSUE_INVENTORY, "[worker-2]", "[worker-0]"), 11, "[worker-0]",
     "given twice (first at line 1)"),
    ("personality typo", _edit(ISSUE_INVENTORY, "personality = worker\nmgmt_mac = "
                               "08:00:27:1e:0b:01", "personality = wroker\nmgmt_mac = "
                               "08:00:27:1e:0b:01"), 7, "[worker-1] personality", "'wroker'"),
    # A line without `=` as the first line of a section: today reported against the next one.
    ("line without =", _edit(ISSUE_INVENTORY, "personality = worker\nmgmt_mac = "
                             "08:00:27:1e:0b:01", "personality worker\nmgmt_mac = "
                             "08:00:27:1e:0b:01"), 7, "[worker-1]", "key = value"),
    ("mac without =", _edit(ISSUE_INVENTORY, "mgmt_mac = 08:00:27:1e:0b:02",
                            "mgmt_mac 08:00:27:1e:0b:02"), 13, "[worker-2]", "key = value"),
    ("colon for =", _edit(ISSUE_INVENTORY, "mgmt_ip = 192.168.204.51", "mgmt_ip: 192.168.204.51"),
     9, "[worker-1]", "key = value"),
    ("indented continuation", _edit(ISSUE_INVENTORY, "mgmt_ip = 192.168.204.51\n",
                                    "mgmt_ip = 192.168.204.51\n    192.168.204.61\n"),
     10, "[worker-1]", "key = value"),
    ("empty key", _edit(ISSUE_INVENTORY, "mgmt_ip = 192.168.204.52", "= 192.168.204.52"),
     14, "[worker-2]", "key = value"),
    ("administrative typo", _edit(ISSUE_INVENTORY, "mgmt_ip = 192.168.204.51",
                                  "mgmt_ip = 192.168.204.51\nadministrative = Locked"),
     10, "[worker-1] administrative", "locked or unlocked"),
    ("key twice", _edit(ISSUE_INVENTORY, "mgmt_ip = 192.168.204.51",
                        "mgmt_ip = 192.168.204.51\nmgmt_ip = 192.168.204.61"),
     10, "[worker-1] mgmt_ip", "given twice (first at line 9)"),
    ("missing mgmt_mac", _edit(ISSUE_INVENTORY, "mgmt_mac = 08:00:27:1e:0b:01\n", ""),
     6, "[worker-1] mgmt_mac", "missing"),
    ("missing mgmt_ip", _edit(ISSUE_INVENTORY, "mgmt_ip = 192.168.204.52\n", ""),
     11, "[worker-2] mgmt_ip", "missing"),
    ("empty section", ISSUE_INVENTORY + "\n[worker-9]\n", 16, "[worker-9] personality",
     "missing"),
    ("shared mac, other case", _edit(ISSUE_INVENTORY, "mgmt_mac = 08:00:27:1e:0b:02",
                                     "mgmt_mac = 08:00:27:1E:0B:00"),
     13, "[worker-2] mgmt_mac", "worker-0"),
    ("shared mgmt_ip", _edit(ISSUE_INVENTORY, "mgmt_ip = 192.168.204.52",
                             "mgmt_ip = 192.168.204.050"), 14, "[worker-2] mgmt_ip",
     "not an IP address"),
    ("shared IPv6 spelt apart", _edit(_edit(ISSUE_INVENTORY, "mgmt_ip = 192.168.204.50",
                                            "mgmt_ip = fd00:0:0:0::a"),
                                      "mgmt_ip = 192.168.204.52", "mgmt_ip = FD00::000A"),
     14, "[worker-2] mgmt_ip", "worker-0"),
    ("cluster_host_ip is another's mgmt_ip", _edit(ISSUE_INVENTORY, "mgmt_ip = 192.168.204.52",
                                                   "mgmt_ip = 192.168.204.52\n"
                                                   "cluster_host_ip = 192.168.204.51"),
     15, "[worker-2] cluster_host_ip", "worker-1"),
    ("IPv4-mapped spelling", _edit(ISSUE_INVENTORY, "mgmt_ip = 192.168.204.52",
                                   "mgmt_ip = ::ffff:192.168.204.51"),
     14, "[worker-2] mgmt_ip", "worker-1"),
    ("text after the header", _edit(ISSUE_INVENTORY, "[worker-2]", "[worker-2] worker"),
     11, "[worker-2]", "after ']'"),
]


@pytest.mark.parametrize("text,line,key,why", [c[1:] for c in BAD_INVENTORIES],
                         ids=[c[0] for c in BAD_INVENTORIES])
def test_an_inventory_that_does_not_parse_exactly_names_the_faulty_line(text, line,
                                                                                 key, why):
    """Issue 23 item 1, docs/contract.md §4: each input the issue quotes (and the rest of §4's list:
    a bad `administrative`, a missing `mgmt_mac`/`mgmt_ip`, an address or MAC two hosts share
    in any spelling) is refused with one `FILE:LINE: [section] key: why` naming the line of
    the fault itself, never a neighbour."""
    with pytest.raises(config.ConfigError) as err:
        config.parse_inventory(text, "inv.ini")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"inv.ini:{line}: {key}: "), message
    assert err.value.line == line
    if why:
        assert why in message, message


def test_an_unknown_inventory_key_is_warned_about_with_its_line_never_fatal():
    """docs/contract.md §2 (unknown keys warn once, never fatal), §4 (its refusals do not name an
    unknown key): a misspelt key is reported with its file and line, and the host is kept as
    the rest of its section says."""
    text = _edit(ISSUE_INVENTORY, "mgmt_ip = 192.168.204.51",
                 "mgmt_ip = 192.168.204.51\nadminstrative = locked")
    inv = config.parse_inventory(text, "inv.ini")
    assert inv.hosts["worker-1"].administrative == "unlocked"
    assert [w for w in inv.warnings if w.startswith("inv.ini:10: unknown key [worker-1] "
                                                    "adminstrative")], inv.warnings
    assert len(inv.warnings) == 1


@pytest.mark.parametrize("personality", ["worker,", "worker,,storage", "lowlatency",
                                         "Worker", "compute", "worker worker", "worker,worker",
                                         "controller;worker"])
def test_a_personality_outside_the_originals_words_is_refused(personality):
    """docs/contract.md §4: a comma list of controller, worker, storage and the original's
    subfunction word lowlatency (platform.conf `subfunction=`, docs/design.md), naming at
    least one of the three functions."""
    text = _edit(ISSUE_INVENTORY, "personality = worker\nmgmt_mac = 08:00:27:1e:0b:02",
                 f"personality = {personality}\nmgmt_mac = 08:00:27:1e:0b:02")
    with pytest.raises(config.ConfigError) as err:
        config.parse_inventory(text, "inv.ini")
    assert str(err.value).startswith("inv.ini:12: [worker-2] personality: ")


@pytest.mark.parametrize("personality,kept", [
    ("controller", "controller"), ("storage", "storage"),
    ("worker,lowlatency", "worker,lowlatency"),
    ("controller,worker,lowlatency", "controller,worker,lowlatency"),
    ("controller, worker", "controller,worker")])
def test_the_originals_subfunction_lists_are_taken(personality, kept):
    text = _edit(ISSUE_INVENTORY, "personality = worker\nmgmt_mac = 08:00:27:1e:0b:02",
                 f"personality = {personality}\nmgmt_mac = 08:00:27:1e:0b:02")
    assert config.parse_inventory(text, "inv.ini").hosts["worker-2"].personality == kept


def test_the_shipped_inventory_and_its_example_parse():
    """The shipped file (all commented out) parses to no hosts, and its example, uncommented
    as its header says, parses exactly (README's Configure section shows the same)."""
    path = shipped("debian/inventory.ini", "/etc/mtce/inventory.ini")
    text = open(path, encoding="utf-8").read()
    assert config.parse_inventory(text, path).hosts == {}
    example = text.split("; Example (remove the leading '; ' to use it):\n", 1)[1]
    uncommented = "\n".join(line[2:] if line.startswith("; ") else line.lstrip(";")
                            for line in example.splitlines())
    inv = config.parse_inventory(uncommented, path)
    assert list(inv.hosts) == ["controller-0", "worker-0"]
    assert inv.hosts["worker-0"].cluster_host_ip == "192.168.206.50"


def test_relative_paths_are_resolved_once_from_the_start_directory(tmp_path,
                                                                           monkeypatch):
    """Issue 23 item 2, docs/contract.md §1: a relative `-c` and relative path values are taken from
    the directory the command started in, and a reload (from `/`, as a daemon) reads the same
    files; an absolute value is kept exactly as written."""
    (tmp_path / "ag").mkdir()
    (tmp_path / "ag" / "mtc.ini").write_text("[agent]\ninventory = ag/inventory.ini\n"
                                             "[paths]\nstate_dir = st\nrun_dir = /var/run\n")
    monkeypatch.chdir(tmp_path)
    cfg = config.load("ag/mtc.ini")
    assert cfg.path == str(tmp_path / "ag" / "mtc.ini")
    assert cfg.agent.inventory == str(tmp_path / "ag" / "inventory.ini")
    assert cfg.paths.state_dir == str(tmp_path / "st") and cfg.paths.run_dir == "/var/run"
    assert cfg.security.key_file == ""                  # empty stays off
    monkeypatch.chdir("/")
    again = cfg.reread()
    assert again.values == cfg.values and again.path == cfg.path
    with pytest.raises(config.ConfigError, match="relative and the current directory"):
        config.load("ag/mtc.ini", base="")


def test_load_paths_reads_paths_exactly_as_load(tmp_path, monkeypatch):
    """Issue 23 item 19 (docs/design.md, `mtce daemon-info`): the init scripts and the OCF
    agent learn the [paths] from `config.load_paths`, which must give what the daemon's own
    `load` gives for any inih syntax (BOM, `key: value`, inline comments, continuation lines,
    relative values), and still answer when another section has a bad value."""
    (tmp_path / "h").mkdir()
    text = ("\ufeff[paths]\npid_dir: run/pid\t; the host's own\n"
            "agent_socket = /nowhere.sock\n   /run/mtce/h.sock\n"
            "log_dir=/var/log/h ; inline\n[agent]\noffline_period = 100\n")
    (tmp_path / "h" / "mtc.ini").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    path, paths = config.load_paths("h/mtc.ini")
    cfg = config.load("h/mtc.ini")
    assert path == cfg.path == str(tmp_path / "h" / "mtc.ini")
    assert paths == dict(cfg.paths.items())
    assert paths["pid_dir"] == str(tmp_path / "run" / "pid")
    assert paths["agent_socket"] == "/run/mtce/h.sock"
    (tmp_path / "h" / "mtc.ini").write_text(text.replace("= 100", "= soon"), encoding="utf-8")
    with pytest.raises(config.ConfigError):
        config.load("h/mtc.ini")
    assert config.load_paths("h/mtc.ini") == (path, paths)
    (tmp_path / "h" / "mtc.ini").write_bytes(b"[paths]\npid_dir = /caf\xe9\n")
    with pytest.raises(config.ConfigError, match="not UTF-8"):
        config.load_paths("h/mtc.ini")


def test_inventory_line_numbers_are_what_grep_n_says():
    """docs/contract.md §4 (`FILE:LINE`): lines end at a newline only. Attack (issue 23
    review, op): U+0085 in a comment (a cp1252 '…' after a latin-1 round trip) split the
    comment, and its second half was refused as a line of its own; a form feed shifted every
    later line number by one; a vertical tab cut a value."""
    text = "; see ticket\u0085 MTCE-12 for why\n" + ISSUE_INVENTORY
    assert set(config.parse_inventory(text, "inv.ini").hosts) == {"worker-0", "worker-1",
                                                                   "worker-2"}
    text = "\f\n" + _edit(ISSUE_INVENTORY, "personality = worker\nmgmt_mac = 08:00:27:1e:0b:01",
                          "personality = wroker\nmgmt_mac = 08:00:27:1e:0b:01")
    with pytest.raises(config.ConfigError) as err:
        config.parse_inventory(text, "inv.ini")
    assert err.value.line == 8, str(err.value)         # grep -n: the form feed is line 1
    text = _edit(ISSUE_INVENTORY, "mgmt_ip = 192.168.204.51", "mgmt_ip = 192.168.204.51\x0b9")
    with pytest.raises(config.ConfigError, match=r"inv.ini:9: \[worker-1\] mgmt_ip"):
        config.parse_inventory(text, "inv.ini")


def test_a_huge_bad_line_gives_a_short_error_line():
    """docs/contract.md §1 (one line naming file, line and key): a 16 MB line (a JSON file
    given as the inventory, issue 23 review) is quoted in part, not whole, in the line that
    stops the agent and in every reload's log."""
    text = "{" + '"a": 1, ' * 2_000_000 + "}\n"
    with pytest.raises(config.ConfigError) as err:
        config.parse_inventory(text, "inv.ini")
    assert err.value.line == 1 and len(str(err.value)) < 400, len(str(err.value))


@pytest.mark.parametrize("key, value", [
    ("mgmt_ip", "0.0.0.0"), ("mgmt_ip", "::"), ("mgmt_ip", "255.255.255.255"),
    ("mgmt_ip", "224.0.0.1"), ("mgmt_ip", "ff02::1"), ("cluster_host_ip", "0.0.0.0")])
def test_an_address_no_host_can_have_is_refused(key, value):
    """docs/contract.md §4 (a value the agent cannot take as written): an unspecified,
    multicast or broadcast address is no host's (issue 23 review: accepted silently)."""
    text = _edit(ISSUE_INVENTORY, "mgmt_ip = 192.168.204.51",
                 "mgmt_ip = 192.168.204.51\ncluster_host_ip = 192.168.206.51"
                 if key == "cluster_host_ip" else f"{key} = {value}")
    if key == "cluster_host_ip":
        text = _edit(text, "cluster_host_ip = 192.168.206.51", f"cluster_host_ip = {value}")
    with pytest.raises(config.ConfigError, match=rf"\[worker-1\] {key}: .*no host's"):
        config.parse_inventory(text, "inv.ini")


def test_a_host_given_twice_in_another_case_is_refused():
    """docs/contract.md §4 (a section given twice): host names do not differ by case (DNS);
    `[WORKER-0]` after `[worker-0]` is the same host twice (issue 23 review: a second host)."""
    text = ISSUE_INVENTORY + "\n[WORKER-0]\npersonality = worker\nmgmt_mac = 08:00:27:1e:0b:09\n" \
                             "mgmt_ip = 192.168.204.59\n"
    with pytest.raises(config.ConfigError, match=r"inv.ini:16: \[WORKER-0\]: section given "
                                                 r"twice \(first at line 1\)"):
        config.parse_inventory(text, "inv.ini")


def test_a_section_header_without_its_bracket_in_mtc_ini_stops_the_daemon(tmp_path):
    """docs/contract.md §1 (config errors name file, line and key; exit 2): in mtc.ini a
    `[actions` without `]` would leave the keys under it in the section before, where they
    are unknown, and the real `[actions]` defaults (reboot, sysrq) would apply: an error, not
    a warning (issue 23 review, op)."""
    ini = tmp_path / "mtc.ini"
    ini.write_text("[timeouts]\nonline_period = 7\n[actions\nreboot = true\nreset = true\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(str(ini))
    assert err.value.line == 3 and "section header without ']'" in str(err.value)


@pytest.mark.parametrize("which", ["mtc.ini", "inventory"])
def test_a_file_with_cr_line_ends_is_refused_not_read_as_one_line(tmp_path, which):
    """docs/contract.md §1, §4 (a file that does not parse exactly is refused): lines end at
    a newline (CRLF too). A file with old CR-only line ends is one long line to a reader of
    newlines: the inventory parsed as no host at all (a reload then dropped every host and
    its operator lock) and mtc.ini as one comment (every [actions] key its real default).
    Attack: issue 23 review, second round (ops2)."""
    if which == "inventory":
        text = ("; hosts\n" + ISSUE_INVENTORY).replace("\n", "\r")
        with pytest.raises(config.ConfigError, match=r"inv.ini:1: .*carriage return"):
            config.parse_inventory(text, "inv.ini")
        crlf = ISSUE_INVENTORY.replace("\n", "\r\n")
        assert len(config.parse_inventory(crlf, "inv.ini").hosts) == 3
    else:
        ini = tmp_path / "mtc.ini"
        ini.write_bytes(b"; mtce\r[actions]\rreboot = true\r")
        with pytest.raises(config.ConfigError, match=r"mtc.ini:1: .*carriage return"):
            config.load(str(ini))


@pytest.mark.parametrize("header", ["[ACTIONS]", "[Actions]", "[ actions ]", "[actions ]"])
def test_a_known_section_spelt_otherwise_in_mtc_ini_stops_the_daemon(tmp_path, header):
    """docs/contract.md §1 (config errors name file, line and key; exit 2) and §2 (sections are
    the original's, case-sensitive as inih matches them): `[ACTIONS]` is an unknown section,
    so its keys were warned about and the real [actions] defaults (reboot, sysrq) applied.
    Attack: issue 23 review, second round (ops2)."""
    ini = tmp_path / "mtc.ini"
    ini.write_text(f"[timeouts]\nonline_period = 7\n{header}\nreboot = true\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(str(ini))
    assert err.value.line == 4 and "[actions]" in str(err.value), str(err.value)  # its first key


@pytest.mark.parametrize("value", ["0", "-3", "0.5"])
def test_a_failsafe_delay_below_1_is_taken_as_the_original_takes_it(tmp_path, value):
    """docs/protocol.md §8: the original reads `failsafe_shutdown_delay` with atoi and takes
    a value below 1 as 2 (mtce/client_actions.py); an ini the original runs with must not stop the
    client (issue 23 review, second round: 0 was refused, exit 2)."""
    ini = tmp_path / "mtc.ini"
    ini.write_text(f"[timeouts]\nfailsafe_shutdown_delay = {value}\n")
    assert config.load(str(ini)).timeouts.failsafe_shutdown_delay == float(value)


@pytest.mark.parametrize("mac", ["ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "01:00:5e:00:00:01"])
def test_a_mac_no_host_can_have_is_refused(mac):
    """docs/contract.md §4: the broadcast, the zero and a multicast MAC are no host's (issue
    23 review, second round)."""
    text = _edit(ISSUE_INVENTORY, "mgmt_mac = 08:00:27:1e:0b:01", f"mgmt_mac = {mac}")
    with pytest.raises(config.ConfigError, match=r"inv.ini:8: \[worker-1\] mgmt_mac: .*no host"):
        config.parse_inventory(text, "inv.ini")


def test_mnfa_keys_default_and_take_the_originals_spelling(tmp_path):
    """Issue 27, docs/contract.md §2: `[agent] mnfa_threshold` (2; 0: off) and `[timeouts]
    mnfa_timeout` (0: never) as the original's mtc_ini_handler names them."""
    cfg = load_text(tmp_path, "; nothing\n")
    assert cfg.get("agent", "mnfa_threshold") == 2 and cfg.get("timeouts", "mnfa_timeout") == 0
    cfg = load_text(tmp_path, "[agent]\nmnfa_threshold = 0\n[timeouts]\nmnfa_timeout = 900\n")
    assert cfg.get("agent", "mnfa_threshold") == 0 and cfg.get("timeouts", "mnfa_timeout") == 900
    for text, key in (("[agent]\nmnfa_threshold = -1\n", "[agent] mnfa_threshold"),
                      ("[timeouts]\nmnfa_timeout = -5\n", "[timeouts] mnfa_timeout"),
                      ("[timeouts]\nmnfa_timeout = nan\n", "[timeouts] mnfa_timeout")):
        with pytest.raises(config.ConfigError) as err:
            load_text(tmp_path, text)
        assert str(err.value).startswith(f"{tmp_path}/mtc.ini:2: {key}: "), str(err.value)
