"""The client's health, "I am" flags and sequence numbers, from files under [paths]."""

from __future__ import annotations

import logging
import os
import types

from mtce import alive
from mtce.client_status import SM_UNHEALTHY_DEBOUNCE, Status
from mtce.states import Flag, Net

IDENT = alive.Identity("worker-0", "worker", "", "10.0.0.9", "", "08:00:27:00:00:09")


def make(tmp_path, personality="worker"):
    run, plat = tmp_path / "run", tmp_path / "platform"
    run.mkdir()
    plat.mkdir()
    paths = types.SimpleNamespace(run_dir=str(run), platform_dir=str(plat))
    return Status(paths, personality, logging.getLogger("test")), run, plat


def touch(d, name):
    open(os.path.join(d, name), "w").close()


def test_flags_and_health_follow_the_files(tmp_path):
    st, run, plat = make(tmp_path, "controller,worker")
    assert st.health_and_flags(Net.MGMT) == (0, 0)
    for d, name in ((plat, ".initial_config_complete"), (run, ".config_pass"),
                    (run, ".node_locked"), (run, ".worker_config_complete"),
                    (run, "goenabled"), (run, "goenabled_subf"), (run, ".sm_degraded"),
                    (run, "patch_installing"), (run, "node_is_patched")):
        touch(d, name)
    health, flags = st.health_and_flags(Net.MGMT)
    assert health == 1
    assert flags == (Flag.I_AM_CONFIGURED | Flag.I_AM_HEALTHY | Flag.I_AM_LOCKED
                     | Flag.SUBF_CONFIGURED | Flag.MAIN_GOENABLED | Flag.SUBF_GOENABLED
                     | Flag.SM_DEGRADED | Flag.PATCHING | Flag.PATCHED)
    touch(run, "goenabled_subf_failed")
    assert not st.health_and_flags(Net.MGMT)[1] & Flag.SUBF_GOENABLED


def test_a_storage_host_has_no_subfunction_flags(tmp_path):
    st, run, _ = make(tmp_path, "storage")
    touch(run, ".worker_config_complete")
    touch(run, "goenabled_subf")
    assert st.health_and_flags(Net.MGMT)[1] == 0


def test_config_fail_is_unhealthy(tmp_path):
    st, run, _ = make(tmp_path)
    touch(run, ".config_fail")
    assert st.health_and_flags(Net.MGMT) == (2, int(Flag.I_AM_NOT_HEALTHY))


def test_sm_unhealthy_is_debounced_per_network_pxeboot_included(tmp_path):
    st, run, _ = make(tmp_path)
    touch(run, ".sm_node_unhealthy")
    for _ in range(SM_UNHEALTHY_DEBOUNCE):
        for net in Net:
            assert not st.health_and_flags(net)[1] & Flag.SM_UNHEALTHY
    for net in Net:
        assert st.health_and_flags(net)[1] & Flag.SM_UNHEALTHY
    os.unlink(os.path.join(run, ".sm_node_unhealthy"))
    assert not st.health_and_flags(Net.PXEBOOT)[1] & Flag.SM_UNHEALTHY
    touch(run, ".sm_node_unhealthy")
    assert not st.health_and_flags(Net.PXEBOOT)[1] & Flag.SM_UNHEALTHY, "debounced again"


def test_sequence_numbers_are_per_network_from_1_and_wrap(tmp_path):
    st, _, _ = make(tmp_path)
    assert alive.decode(st.build(IDENT, Net.MGMT, 5)).parm[3] == 1
    assert alive.decode(st.build(IDENT, Net.MGMT, 5)).parm[3] == 2
    assert alive.decode(st.build(IDENT, Net.PXEBOOT, 5)).parm[3] == 1
    st.seq[Net.CLSTR] = 2**32 - 1
    assert alive.decode(st.build(IDENT, Net.CLSTR, 5)).parm[3] == 0
    msg = alive.decode(st.build(IDENT, Net.CLSTR, 77))
    assert msg.parm[0] == 77 and msg.json()["sequence"] == 1
