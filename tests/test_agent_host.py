"""mtce.agent_host: one host's JSON (docs/contract.md §5), ACKs, failure flags, and the
Settings it is built with (mtce.agent_decisions).

Time is a plain float `now` (FakeClock style): minutes of protocol time run in milliseconds.
"""

from __future__ import annotations

import pytest

from mtce import agent_decisions, agent_pxeboot
from mtce import agent_host as H
from mtce.agent_decisions import ClearAlarm, Settings
from mtce.agent_pxeboot import PxeStage
from mtce.states import ALARM_MTCALIVE, Availability, Cmd, Flag, Net, NetState

from harness.host_monitor import T0, Sim, alarmed, make, monitored, sends, texts


# -- import rule (docs/design.md "Module map": no I/O in hosts) ---------------------------

def test_settings_from_config_and_derived_times():
    from mtce import config
    s = Settings.from_config(config.defaults(), simplex=False, pxeboot_provisioned=True)
    assert (s.online_period_s, s.offline_period_s, s.offline_threshold, s.pxeboot_window_s) == (
        7.0, 0.1, 90, 10.0)
    assert agent_decisions.offline_after_s(s) == pytest.approx(16.0)
    assert agent_decisions.lost_after_s(s) == 21.0
    assert agent_pxeboot.pxeboot_alarm_after_s(s) == 120.0
    sx = Settings.from_config(config.defaults(), simplex=True, pxeboot_provisioned=True)
    assert not sx.pxeboot_provisioned
    with pytest.raises(ValueError):
        Settings(offline_period_s=0)


def test_debug_settings_log_stages_and_counters():
    host = monitored(settings=Settings(debug=True))
    out = host.audit(T0)
    assert texts(out, "debug") == ["worker-0 stage mtcAlive-Start -> mtcAlive-Send",
                                   "worker-0 stage mtcAlive-Send -> mtcAlive-Monitor",
                                   "worker-0 stage mtcAlive-Monitor -> mtcAlive-Wait"]
    out = host.audit(T0 + 10)
    assert "worker-0 pxeboot mtcAlive: Miss: 1 of 6  ,  Loss: 0 of 2" in texts(out, "debug")


def test_client_dropping_the_feature_clears_its_alarm():
    host, sim = alarmed()
    out = host.on_ready(None, sim.t)
    assert ClearAlarm("worker-0", ALARM_MTCALIVE) in out and sends(out) == []
    assert host.net_state(Net.PXEBOOT) is NetState.UNPROVISIONED
    assert host.pxe.stage is PxeStage.START


def test_ack_is_recorded():
    host = make()
    assert host.on_ack(Cmd.REBOOT, Net.PXEBOOT, T0 + 3) == ()
    assert host.last_ack[(Cmd.REBOOT, Net.PXEBOOT)] == T0 + 3


def test_to_json_has_the_contract_keys():
    host = make()
    doc = H.host_json(host, T0)
    assert {"hostname", "personality", "administrative", "availability", "mgmt_ip",
            "cluster_host_ip", "pxeboot_ip", "networks"} <= set(doc)
    assert set(doc["networks"]) == {"mgmt", "cluster-host", "pxeboot"}
    assert doc["networks"]["mgmt"]["last_seen_s"] is None
    host.on_mtcalive(Net.MGMT, 7, 0, 12, T0)
    net = H.host_json(host, T0 + 2.5)["networks"]["mgmt"]
    assert {"state", "last_seq", "missed", "out_of_sequence", "last_seen_s"} <= set(net)
    assert (net["state"], net["last_seq"], net["last_seen_s"]) == ("ok", 7, 2.5)
    networks = H.host_json(make(clstr=False), T0)["networks"]
    assert networks["cluster-host"]["state"] == "unprovisioned"
    # docs/contract.md §8 "Network state": the pxeboot monitor's own view beside the state
    assert {"misses": 0, "losses": 0, "alarm": False}.items() <= \
        doc["networks"]["pxeboot"].items()


def test_failure_flags_name_the_originals_defines_and_clear_when_offline():
    """Issue 23 item 15, docs/contract.md §5 `failure_flags` (docs/protocol.md §2.1): the failure
    bits of the latest valid mtcAlive, by define, lowest first; none of the state bits; an
    offline host reports nothing now."""
    host = make()
    every = 0xFFFFFFFF
    host.on_mtcalive(Net.MGMT, 1, every, 12, T0)
    assert H.host_json(host, T0)["failure_flags"] == [
        "I_AM_NOT_HEALTHY", "LUKS_VOL_FAILED", "SM_UNHEALTHY", "MAIN_GOENABLE_FAIL",
        "SUBF_GOENABLE_FAIL", "MAIN_SERVICES_FAIL", "SUBF_SERVICES_FAIL"]
    state_bits = int(Flag.I_AM_CONFIGURED | Flag.I_AM_HEALTHY | Flag.SM_DEGRADED |
                     Flag.PATCHING | Flag.MAIN_GOENABLED)
    host.on_mtcalive(Net.MGMT, 2, state_bits | int(Flag.SUBF_GOENABLE_FAIL), 12, T0 + 1)
    assert H.host_json(host, T0 + 1)["failure_flags"] == ["SUBF_GOENABLE_FAIL"]
    sim = Sim(host, T0 + 1)
    sim.run(T0 + 40, alive=lambda net, t: False)
    assert host.availability is Availability.OFFLINE
    assert H.host_json(host, T0 + 40)["failure_flags"] == []
