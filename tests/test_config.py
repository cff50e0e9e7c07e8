"""mtc.ini: the original's inih rules, typing, errors that name file, line and key."""

from __future__ import annotations

import os

import pytest

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
