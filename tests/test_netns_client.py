"""The real mtcClient in a network namespace, joined to a test agent's namespace by veth links:
mgmt (with the pxeboot address labelled `eth0:2` on the same link, as StarlingX does) and
cluster-host. Addresses come from netlink; a link taken down and up shows recovery.

Addresses are from 198.18.0.0/15 (reserved for benchmarking) and live only inside the
namespaces these tests create.
"""

from __future__ import annotations

import pytest

from harness.netns import Topology, require_netns
from harness.peer import AgentPeer

pytestmark = pytest.mark.netns

MAC = "08:00:27:aa:bb:01"
MGMT, CLSTR, PXE = "198.18.204.", "198.18.206.", "198.18.202."


@pytest.fixture
def topo():
    require_netns()
    t = Topology()
    yield t
    t.close()


@pytest.fixture
def worker(topo, fakehost, daemons):
    ctl = topo.ns("ctl")
    w0 = topo.ns("w0")
    topo.veth(w0, "eth0", ctl, "m0", mac_a=MAC)
    topo.veth(w0, "eth1", ctl, "c0", mac_a="08:00:27:aa:bb:02")
    topo.addr(w0, "eth0", MGMT + "10/24")
    topo.addr(w0, "eth0", PXE + "30/24", label="eth0:2")
    topo.addr(w0, "eth1", CLSTR + "20/24")
    for cidr in (MGMT + "1/24", MGMT + "2/24", PXE + "6/24", PXE + "7/24"):
        topo.addr(ctl, "m0", cidr)
    for cidr in (CLSTR + "4/24", CLSTR + "5/24"):
        topo.addr(ctl, "c0", cidr)
    host = fakehost(mgmt_iface="eth0", clstr_iface="eth1", mac=MAC, mgmt_ip=MGMT + "10",
                    cluster_host_ip=CLSTR + "20", pxeboot_ip=PXE + "30",
                    controllers={"controller": MGMT + "1", "c_mgmt": [MGMT + "2", MGMT + "3"],
                                 "c_clstr": [CLSTR + "4", CLSTR + "5"],
                                 "c_pxeboot": [PXE + "6", PXE + "7"]})
    # Addresses and MAC from netlink and the namespace's own sysfs, not from the config.
    host.values["client"].update({"mgmt_ip": "", "cluster_host_ip": ""})
    host.values["paths"]["sys_class_net"] = "/sys/class/net"
    host.write_ini()
    with topo.inside(ctl):
        peer = AgentPeer(host)
    client = daemons("client", host.ini, prefix=topo.exec_prefix(w0))
    yield host, peer, client, w0, ctl
    try:
        assert not peer.errors, peer.errors[:5]
    finally:
        peer.close()


def test_all_three_networks_with_addresses_from_netlink(worker):
    host, peer, client, w0, ctl = worker
    first = peer.wait_for(lambda: peer.of("mtcalive", "mgmt"), what="mgmt mtcAlive")[0]
    assert first.src[0] == MGMT + "10"
    assert first.body["mgmt_ip"] == MGMT + "10", "the primary address, not the eth0:2 label"
    assert first.body["mgmt_mac"] == MAC
    assert first.body["pxeboot_ip"] == PXE + "30"
    assert first.body["cluster_host_ip"] == CLSTR + "20"
    peer.wait_for(lambda: peer.of("mtcalive", where="clstr-c1"), what="cluster-host mtcAlive")
    peer.request_mtcalive()
    got = peer.wait_for(lambda: peer.of("mtcalive", where="pxeboot-c1"), what="pxeboot")
    assert got[0].src[0] == PXE + "30"
    client.wait_log("Interface Chain: eth0")
    client.wait_log("pxeboot dhcp lease address: " + PXE + "30 ; initial")


def test_link_down_and_up_shows_loss_then_recovery(worker, topo):
    host, peer, client, w0, ctl = worker
    peer.wait_for(lambda: peer.of("mtcalive", "mgmt"), what="running")
    peer.request_mtcalive()
    peer.wait_for(lambda: len(peer.of("mtcalive", where="pxeboot-c0")) >= 2, what="pxeboot")
    topo.link(w0, "eth0", "down")
    peer.drain(0.5)
    counts = {net: len(peer.of("mtcalive", net)) for net in ("mgmt", "pxeboot", "cluster-host")}
    peer.drain(3.5)
    assert len(peer.of("mtcalive", "mgmt")) == counts["mgmt"], "mgmt is down"
    assert len(peer.of("mtcalive", "pxeboot")) == counts["pxeboot"], "pxeboot shares eth0"
    assert len(peer.of("mtcalive", "cluster-host")) > counts["cluster-host"], "eth1 is up"
    assert client.proc.poll() is None
    topo.link(w0, "eth0", "up")
    back = peer.wait_for(lambda: peer.of("mtcalive", "mgmt")[counts["mgmt"]:], timeout=10,
                         what="mgmt after link up")
    # The numbers consumed while the link was down show up as a gap.
    assert back[0].parm[3] > peer.of("mtcalive", "mgmt")[counts["mgmt"] - 1].parm[3] + 1
    peer.wait_for(lambda: peer.of("mtcalive", "pxeboot")[counts["pxeboot"]:], timeout=10,
                  what="pxeboot after link up")
    text = client.text()
    assert text.count("Network is unreachable") <= 4, "send errors are throttled"
    peer.errors = [e for e in peer.errors if ": sequence " not in e]
