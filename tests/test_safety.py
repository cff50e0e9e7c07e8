"""Nothing the tests run may reboot, reset or power off the machine they run on."""

from __future__ import annotations

import pytest

from conftest import assert_harmless
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
