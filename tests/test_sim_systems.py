"""The first line of the original's test plan (14bb677), in-process: "install and provision
each system type with a mix of networking modes ; ethernet, bond and vlan - AIO SX, AIO DX,
AIO DX plus, Standard System 2+1, Storage System 2+1+1". The real agent on controller-0 and a
real client on every host, on a FakeNetwork with a FakeClock; each host's management interface
is an ethernet, a vlan, a bond or a vlan over a bond (a sysfs tree, as the test machines can
make none of them).

What each system type must show (docs/protocol.md §4.1, §5.4 and §5.5):
every host online with mgmt and cluster-host ok; pxeboot ok on every host, carried to both
controllers, except on a simplex system, where no host sends pxeboot, the agent shows it
`unprovisioned`, and nothing goes to a controller-1 that does not exist.
"""

from __future__ import annotations

import json

import pytest

from mtce import alive
from mtce.states import Net
from harness.sim import AGENT_PORT, log
from harness.sysnet import dress

KINDS = ("ethernet", "vlan", "bond", "vlan over bond")

# name -> (hosts, system_type, system_mode, the controllers' subfunction)
SYSTEMS = {
    "AIO SX": (["controller-0"], "All-in-one", "simplex", "controller,worker"),
    "AIO DX": (["controller-0", "controller-1"], "All-in-one", "duplex", "controller,worker"),
    "AIO DX plus": (["controller-0", "controller-1", "worker-0"], "All-in-one", "duplex",
                    "controller,worker"),
    "Standard 2+1": (["controller-0", "controller-1", "worker-0"], "Standard", "duplex",
                     "controller"),
    "Storage 2+1+1": (["controller-0", "controller-1", "storage-0", "worker-0"], "Standard",
                      "duplex", "controller"),
}


def build(make, system: str):
    names, system_type, mode, ctl_subfunction = SYSTEMS[system]
    s = make(names=names)
    chains = {}
    for i, name in enumerate(names):
        host = s.files.host(name)
        subfunction = ctl_subfunction if name.startswith("controller") else name.split("-")[0]
        # A mix of networking modes: each host a different kind, in turn.
        chains[name] = dress(host, KINDS[i % len(KINDS)], subfunction=subfunction,
                             system_type=system_type, system_mode=mode)[1]
    return s, chains


def mtcalives(s, name: str, net: Net) -> list:
    """(destination address, JSON) of every mtcAlive `name` sent on `net`."""
    host = s.files.host(name)
    src = {Net.MGMT: host.mgmt_ip, Net.CLSTR: host.cluster_host_ip,
           Net.PXEBOOT: host.pxeboot_ip}[net]
    out = []
    for d in s.net.sent + s.net.lost:
        if d.src[0] == src and d.dst[1] == AGENT_PORT[net] and d.data[:17] == alive.SIG_MESSAGE:
            out.append((d.dst[0], json.loads(alive.decode(d.data).buf)))
    return out


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_each_system_type_with_mixed_interfaces_comes_up_on_every_network(sim, system):
    s, chains = build(sim, system)
    names = SYSTEMS[system][0]
    simplex = SYSTEMS[system][2] == "simplex"
    s.start()

    def up():
        hosts = s.hosts()
        want = {"mgmt": "ok", "cluster-host": "ok",
                "pxeboot": "unprovisioned" if simplex else "ok"}
        return all(hosts[n]["availability"] == "online"
                   and {k: v["state"] for k, v in hosts[n]["networks"].items()} == want
                   for n in names)

    s.run_until(up, 30, what=f"{system}: every host up on every network")
    s.run(3)        # a few more ticks, so that every network has carried several mtcAlive
    c = s.files.controller
    for name in names:
        if not simplex:     # the chain is found while learning the own pxeboot address
            assert log(s, name).count(chains[name]) >= 1, (name, log(s, name).text())
        subfunction = SYSTEMS[system][3] if name.startswith("controller") \
            else name.split("-")[0]
        mgmt = mtcalives(s, name, Net.MGMT)
        assert mgmt and {d for d, _ in mgmt} == {c.controller}, "mgmt goes to the floating address"
        assert {j["personality"] for _, j in mgmt} == {subfunction}
        clstr_dests = {d for d, _ in mtcalives(s, name, Net.CLSTR)}
        pxeboot = mtcalives(s, name, Net.PXEBOOT)
        if simplex:
            assert clstr_dests == {c.c_clstr[0]}, "no controller-1 on a simplex system"
            assert pxeboot == [], "pxeboot is not provisioned on simplex"
            assert (s.files.host(name).pxeboot_ip, 2119) not in s.net.bound
            assert s.hosts()[name]["networks"]["pxeboot"]["last_seq"] == 0
        else:
            assert clstr_dests == set(c.c_clstr), "cluster-host goes to both controllers"
            assert {d for d, _ in pxeboot} == set(c.c_pxeboot), "pxeboot to both controllers"
            assert {j["pxeboot_ip"] for _, j in pxeboot} == {s.files.host(name).pxeboot_ip}
            assert (s.files.host(name).pxeboot_ip, 2119) in s.net.bound
            assert s.hosts()[name]["networks"]["pxeboot"]["last_seq"] >= 2
    if simplex:
        unit_1 = {c.c_mgmt[1], c.c_clstr[1], c.c_pxeboot[1]}
        assert not [d for d in s.net.sent + s.net.lost if d.dst[0] in unit_1]
    assert s.agent_capture.count("going offline") == 0
    assert s.agent_capture.count("missed") == 0
