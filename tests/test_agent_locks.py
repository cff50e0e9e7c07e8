"""mtce.agent_locks through a HostMonitor: the locked/unlocked correction, debounced per
online period.

Time is a plain float `now` (FakeClock style): minutes of protocol time run in milliseconds.
"""

from __future__ import annotations


from mtce import agent_decisions
from mtce.agent_decisions import Send, Settings
from mtce.agent_host import HostMonitor
from mtce.states import Cmd, Net

from harness.host_monitor import LOCKED, PXE_IP, T0, entry, make, sends, texts


# -- locked / unlocked correction -----------------------------------------------------------

def test_locked_correction_is_debounced_per_online_period():
    host = make(admin="locked")
    host.on_mtcalive(Net.MGMT, 1, LOCKED, 12, T0)
    out = host.on_mtcalive(Net.MGMT, 2, 0, 12, T0 + 1)
    assert texts(out) == ["worker-0 mtcAlive reporting unlocked while locked ; correcting"]
    assert sends(out) == [Send("worker-0", Net.PXEBOOT, Cmd.LOCKED, 1, (1,)),
                          Send("worker-0", Net.MGMT, Cmd.LOCKED, 1, (1,)),
                          Send("worker-0", Net.CLSTR, Cmd.LOCKED, 1, (1,))]
    assert sends(host.on_mtcalive(Net.CLSTR, 1, 0, 12, T0 + 2)) == []
    assert host.on_mtcalive(Net.MGMT, 3, 0, 12, T0 + 7.9) == []
    out = host.on_mtcalive(Net.MGMT, 4, 0, 12, T0 + 8)          # one online_period later
    assert texts(out) == [] and len(sends(out, cmd=Cmd.LOCKED)) == 3
    assert host.on_mtcalive(Net.MGMT, 5, LOCKED, 12, T0 + 9) == []     # agrees: episode ends
    assert host.on_mtcalive(Net.MGMT, 6, LOCKED, 12, T0 + 10) == ()    # back on the fast path


def test_unlocked_correction_and_simplex_locked():
    host = make()
    out = host.on_mtcalive(Net.MGMT, 1, LOCKED, 12, T0)
    assert sends(out) == [Send("worker-0", Net.MGMT, Cmd.UNLOCKED),
                          Send("worker-0", Net.CLSTR, Cmd.UNLOCKED)]


def test_the_simplex_file_not_the_system_mode_decides_the_locked_correction():
    """Issue 11 item 8, docs/protocol.md §5.4 "Locked correction": while `<platform_dir>/simplex`
    exists (a simplex system, or one still in transition to duplex), LOCKED goes without
    LOCK_PERSIST, not over pxeboot, and without the warning; once it is gone, with them."""
    facts = agent_decisions.Facts(still_simplex=True)
    host = HostMonitor(entry(admin="locked"), Settings(), T0, pxeboot_ip=PXE_IP, facts=facts)
    out = host.on_mtcalive(Net.MGMT, 1, 0, 12, T0)
    assert sends(out) == [Send("worker-0", Net.MGMT, Cmd.LOCKED),
                          Send("worker-0", Net.CLSTR, Cmd.LOCKED)]
    assert not [x for x in texts(out) if "correcting" in x]
    facts.still_simplex = False                                   # the transition finished
    out = host.on_mtcalive(Net.MGMT, 2, 0, 12, T0 + 10)
    assert sends(out) == [Send("worker-0", Net.PXEBOOT, Cmd.LOCKED, 1, (1,)),
                          Send("worker-0", Net.MGMT, Cmd.LOCKED, 1, (1,)),
                          Send("worker-0", Net.CLSTR, Cmd.LOCKED, 1, (1,))]
