"""The client's behaviour from the original's test plan (14bb677; docs/testing.md maps each line
to its tests), in-process: the real Client on a FakeNetwork and a FakeClock, the test playing
the agent. Each test names the reference section it follows; every input is one a C agent can
send. What is about real sockets stays in test_loopback_client and test_netns_client."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from mtce import alive
from mtce.states import Cmd, Net
from harness.sim import AGENT_PORT, Controller, log, record_actions, sims
from harness.sysnet import MGMT_KINDS, dress

pytestmark = pytest.mark.sim(clients=["worker-0"], agent=False)


def sent(c: Controller, net: Net, sig: bytes = alive.SIG_MESSAGE) -> list:
    """(destination address, decoded message) of what worker-0 sent the agent on `net`."""
    src = {Net.MGMT: c.host.mgmt_ip, Net.CLSTR: c.host.cluster_host_ip,
           Net.PXEBOOT: c.host.pxeboot_ip}[net]
    return [(d.dst[0], alive.decode(d.data)) for d in c.s.net.sent + c.s.net.lost
            if d.src[0] == src and d.dst[1] == AGENT_PORT[net] and d.data[:17] == sig]


def seqs(c: Controller, net: Net, dest: str) -> list[int]:
    return [m.parm[3] for d, m in sent(c, net) if d == dest]


# -- mtcAlive on every network, sequence numbers (docs/protocol.md §5.1, §6) ----------------------

def test_each_network_has_its_own_sequence_from_1_and_pxeboot_waits_for_the_request(sim):
    """Test plan: "mtcAlive sequence number monitoring". The first tick 1 s after start;
    mgmt to the floating controller, cluster-host to both controllers with one message,
    each network counting from 1; pxeboot consumes its numbers but sends nothing before the
    agent's request teaches the controllers' addresses, saying so once per controller."""
    s = sim(period=1.0).start()
    c = Controller(s)
    ctl = s.files.controller
    s.run(0.9)
    assert sent(c, Net.MGMT) == []
    s.run_until(lambda: len(sent(c, Net.MGMT)) == 3, 2.5, step=0.01, what="three ticks")
    assert seqs(c, Net.MGMT, c.host.controller) == [1, 2, 3]
    assert seqs(c, Net.CLSTR, ctl.c_clstr[0]) == seqs(c, Net.CLSTR, ctl.c_clstr[1]) == [1, 2, 3]
    assert sent(c, Net.PXEBOOT) == []
    for unit in ("controller-0", "controller-1"):
        assert log(s).count(f"{unit} pxeboot address not learned ; unable to send pxeboot "
                            f"mtcAlive") == 1
    body = json.loads(sent(c, Net.MGMT)[0][1].buf)
    assert body == {"hostname": "worker-0", "personality": "worker",
                    "pxeboot_ip": c.host.pxeboot_ip, "mgmt_ip": c.host.mgmt_ip,
                    "cluster_host_ip": c.host.cluster_host_ip, "mgmt_mac": c.host.mac,
                    "interface": "Mgmnt", "sequence": 1}


def test_the_request_teaches_and_pxeboot_goes_to_both_controllers_with_one_sequence(sim):
    """docs/protocol.md §2 and §4: the request's pxebootInfo is learned, one pxeboot mtcAlive
    goes out at once (its sequence the next number after the ones the ticks consumed), the
    same message to controller-0 and controller-1 on 2102, then one every tick."""
    s = sim(period=1.0).start()
    c = Controller(s)
    c0, c1 = s.files.controller.c_pxeboot
    s.run_until(lambda: len(sent(c, Net.MGMT)) == 2, 2.5, step=0.01, what="two ticks")
    # two ticks: pxeboot numbers 1 and 2 consumed
    c.request({"controller": c0, "controller-0": c0, "controller-1": c1})
    assert seqs(c, Net.PXEBOOT, c0) == seqs(c, Net.PXEBOOT, c1) == [3]
    assert log(s).count(f"controller-0 pxeboot ip: {c0}") == 1
    assert log(s).count(f"sending pxeboot network mtcAlive msg on port 2102 to controller-1 "
                        f"at {c1}") == 1
    s.run_until(lambda: len(sent(c, Net.MGMT)) == 4, 2.5, step=0.01, what="two more ticks")
    assert seqs(c, Net.PXEBOOT, c0) == seqs(c, Net.PXEBOOT, c1) == [3, 4, 5]
    body = json.loads(sent(c, Net.PXEBOOT)[0][1].buf)
    assert (body["interface"], body["pxeboot_ip"]) == ("Pxeboot", c.host.pxeboot_ip)


def test_each_controllers_pxeboot_line_follows_its_own_send(sim):
    """docs/protocol.md §5.1 (`M/mtcCompMsg.cpp:1192-1212`): the client sends to controller-0,
    then to controller-1, and logs each one's line right after its send: a failed send to
    controller-1 comes after controller-0's 'sending ... to' line, not before it (attack on
    issue 26: the order once changed when the core was told the outcomes at the end)."""
    import errno
    s = sim(period=1.0).start()
    c = Controller(s)
    c0, c1 = s.files.controller.c_pxeboot
    s.net.send_errors[c1] = OSError(errno.EINVAL, "Invalid argument")
    s.run_until(lambda: log(s).count("controller-1 pxeboot address not learned"), 2.5,
                step=0.01, what="a tick before the addresses are learned")
    c.request({"controller": c0, "controller-0": c0, "controller-1": c1})
    lines = [line for line in log(s).lines(logging.DEBUG)
             if "sending pxeboot network mtcAlive msg" in line or "failed to send" in line]
    assert len(lines) == 2, lines
    assert "to controller-0 at" in lines[0] and "controller-1" in lines[1] and \
        "failed to send" in lines[1], lines
    del s.net.send_errors[c1]
    s.run_until(lambda: log(s).count(f"to controller-1 at {c1}"), 2.5, step=0.01,
                what="controller-1's line once its send works")


def test_cluster_host_combined_with_mgmt_sends_no_cluster_host_mtcalive(sim):
    """Test plan: "mgmt-combined or separate cluster-host network" (docs/protocol.md §4.1)."""
    s = sim(period=1.0)
    host = s.files.host("worker-0")
    host.clstr_iface = host.mgmt_iface
    host.write_platform()
    s.start()
    c = Controller(s)
    s.run_until(lambda: len(sent(c, Net.MGMT)) == 3, 4, what="three ticks")
    assert sent(c, Net.CLSTR) == []
    assert json.loads(sent(c, Net.MGMT)[0][1].buf)["cluster_host_ip"] == ""


# -- the ready event (docs/protocol.md §3, §5.1) ---------------------------------------------

def test_ready_event_at_start_over_mgmt_then_every_minute_over_mgmt_and_pxeboot(sim):
    s = sim(period=1.0).start()
    c = Controller(s)
    c0, c1 = s.files.controller.c_pxeboot
    ready = sent(c, Net.MGMT, alive.SIG_EVENT)
    assert [d for d, _ in ready] == [c.host.controller], "at start, over mgmt only"
    assert json.loads(ready[0][1].buf) == {"hostname": "worker-0", "service": "mtcClient",
                                           "active_controller_pxeboot_address": "",
                                           "features": ["pxeboot_mtcAlive"]}
    c.request({"controller": c1, "controller-0": c0, "controller-1": c1})
    s.run(59.5, step=0.01)
    assert len(sent(c, Net.MGMT, alive.SIG_EVENT)) == 1
    s.run_until(lambda: len(sent(c, Net.MGMT, alive.SIG_EVENT)) == 2, 2, step=0.01,
                what="the ready event of the 60th tick")
    pxe = sent(c, Net.PXEBOOT, alive.SIG_EVENT)
    assert [d for d, _ in pxe] == [c1], "to the active controller's pxeboot address"
    assert json.loads(pxe[0][1].buf)["active_controller_pxeboot_address"] == c1


# -- commands over each network (docs/protocol.md §2, §4; test plan regression lines) ------------

def test_lock_over_each_network_acks_where_the_reference_says_and_sets_the_flag(sim):
    """mgmt ACKs go to the floating controller on 2101, cluster-host ACKs to both
    controllers' cluster-host addresses, pxeboot ACKs to the command's source on 2102; the
    ACK is the 100-byte echo with `cgts mtc cmd rsp:`; `.node_locked` is made once."""
    s = sim().start()
    c = Controller(s)
    ctl = s.files.controller
    c0 = ctl.c_pxeboot[0]
    c.request({"controller": c0, "controller-0": c0, "controller-1": ""})
    for net in (Net.MGMT, Net.CLSTR, Net.PXEBOOT):
        c.command(net, Cmd.LOCKED)
    assert [d for d, m in sent(c, Net.MGMT, alive.SIG_CMD_RSP)] == [c.host.controller]
    assert sorted(d for d, m in sent(c, Net.CLSTR, alive.SIG_CMD_RSP)) == sorted(ctl.c_clstr)
    assert [d for d, m in sent(c, Net.PXEBOOT, alive.SIG_CMD_RSP)] == [c.src[Net.PXEBOOT]]
    acks = [d for d in s.net.sent + s.net.lost if d.data[:17] == alive.SIG_CMD_RSP]
    assert {len(d.data) for d in acks} == {alive.HEADER_SIZE}
    assert log(s).count("worker-0 locked (Mgmnt)") == 1
    assert s.exists("worker-0", "run_dir", ".node_locked")
    s.run(1.1)
    last = sent(c, Net.MGMT)[-1][1]
    assert last.parm[2] & 0x8, "I_AM_LOCKED in the next mtcAlive"


def test_reboot_over_three_networks_is_acked_on_each_and_run_once(sim):
    """docs/protocol.md §2: the agent sends reboot over pxeboot, mgmt and cluster-host; each copy
    is ACKed; the original re-runs the sequence per copy, mtce runs it once (docs/design.md)."""
    s = sim().start()
    spawns = record_actions(s)
    c = Controller(s)
    c0 = s.files.controller.c_pxeboot[0]
    c.request({"controller": c0, "controller-0": c0, "controller-1": ""})
    for net in (Net.PXEBOOT, Net.MGMT, Net.CLSTR):
        c.command(net, Cmd.REBOOT)
        assert [m.cmd for _, m in sent(c, net, alive.SIG_CMD_RSP)][-1] == Cmd.REBOOT
    assert spawns.names == ["failsafe", "reboot"]
    assert log(s).count("Reboot (Pxeboot)") == 1
    assert "reboot command" in Path(s.path("worker-0", "run_dir"), ".node_reset").read_text()


def test_reset_and_wipedisk_after_a_reboot_each_run(sim):
    """Issue 23 item 11, docs/protocol.md §2 (the original has no de-duplication): the agent's
    reset progression sends REBOOT over pxeboot, mgmt and cluster-host, then RESET over mgmt
    and cluster-host (never pxeboot, docs/protocol.md §5.4), then WIPEDISK. Each command runs;
    only the copies of one command over the other networks run once."""
    s = sim().start()
    spawns = record_actions(s)
    c = Controller(s)
    c0 = s.files.controller.c_pxeboot[0]
    c.request({"controller": c0, "controller-0": c0, "controller-1": ""})
    for cmd, nets in ((Cmd.REBOOT, (Net.PXEBOOT, Net.MGMT, Net.CLSTR)),
                      (Cmd.RESET, (Net.MGMT, Net.CLSTR)), (Cmd.WIPEDISK, (Net.MGMT, Net.CLSTR))):
        s.run(2)
        for net in nets:
            c.command(net, cmd)
            assert [m.cmd for _, m in sent(c, net, alive.SIG_CMD_RSP)][-1] == cmd
    assert spawns.names == ["failsafe", "reboot", "failsafe", "reset", "failsafe", "wipedisk"]
    assert log(s).count("Reset 'reboot -f' (Mgmnt)") == 1
    assert log(s).count("Disk wipe in progress (Mgmnt)") == 1
    for copy in ("reboot (Mgmnt)", "reboot (Clstr)", "reset (Clstr)", "wipedisk (Clstr)"):
        assert log(s).count(f"{copy} ; {copy.split()[0]} already in progress") == 1
    text = Path(s.path("worker-0", "run_dir"), ".node_reset").read_text()
    assert text.splitlines() == ["reboot command", "reset command", "wipedisk command"]


def test_a_client_restarted_with_node_reset_runs_a_reset(sim):
    """Issue 23 item 11, docs/protocol.md §2: a client that starts with `.node_reset` (its
    reboot hung) re-issues the reboot; the agent's RESET that follows still runs."""
    s = sim(clients=[]).start()
    Path(s.path("worker-0", "run_dir"), ".node_reset").write_text("reboot command\n")
    client = s.clients["worker-0"] = s.make_client("worker-0")
    spawns = record_actions(s)
    client.start()
    s.settle()
    assert log(s).count("mtce reboot required") == 1
    assert spawns.names == ["failsafe", "reboot"]
    c = Controller(s)
    s.run(2)
    for net in (Net.MGMT, Net.CLSTR):
        c.command(net, Cmd.RESET)
        assert [m.cmd for _, m in sent(c, net, alive.SIG_CMD_RSP)][-1] == Cmd.RESET
    assert spawns.names == ["failsafe", "reboot", "failsafe", "reset"]
    assert log(s).count("Reset 'reboot -f' (Mgmnt)") == 1


def test_the_obsolete_locked_file_is_removed_at_start(sim):
    """Issue 23 item 15, upstream 4074c6c (docs/protocol.md §2): at start the client removes the
    obsolete `/etc/mtc/tmp/.node_locked`, found beside `platform_dir` (`/etc/platform`), so a
    test host has its own under its root and no test touches the real /etc."""
    s = sim(clients=[]).start()
    etc = os.path.dirname(s.path("worker-0", "platform_dir"))
    obsolete = Path(etc, "mtc", "tmp", ".node_locked")
    obsolete.parent.mkdir(parents=True)
    obsolete.write_text("This node is currently in the administratively locked state\n")
    s.clients["worker-0"] = s.make_client("worker-0")
    s.clients["worker-0"].start()
    s.settle()
    assert not obsolete.exists()
    assert log(s).count(f"removing obsoleted {obsolete} file") == 1
    s.clients["worker-0"].stop()
    s.clients["worker-0"] = s.make_client("worker-0")
    s.clients["worker-0"].start()                  # absent: nothing to say
    assert log(s).count("removing obsoleted") == 0 and log(s).count("Identity") == 1


def test_lazy_reboot_waits_its_delay_in_protocol_time(sim):
    s = sim().start()
    spawns = record_actions(s)
    c = Controller(s)
    c.command(Net.MGMT, Cmd.LAZY_REBOOT, num=1, parm=(5,))
    assert log(s).count("lazy reboot command received from Mgmnt network ; delay:5 seconds")
    s.run(4.5)
    assert spawns.names == []
    assert log(s).count("Lazy Reboot (Mgmnt) ; in ") >= 4
    s.run(1)
    assert spawns.names == ["failsafe", "lazy_reboot"]
    assert log(s).count("Lazy Reboot (Mgmnt) ; now") == 1


def test_reset_runs_the_reset_action_with_half_the_failsafe_delay(sim):
    s = sim().start()
    spawns = record_actions(s)
    Controller(s).command(Net.MGMT, Cmd.RESET)
    assert spawns.names == ["failsafe", "reset"]
    assert log(s).count("Reset 'reboot -f' (Mgmnt)") == 1
    assert log(s).count("failsafe reboot script launched ; reboot in 1 seconds") == 1


# -- own pxeboot address and the interface chain (docs/protocol.md §5.2, §5.6) ---------------------

@pytest.mark.parametrize("kind", list(MGMT_KINDS))
def test_management_interface_kinds_learn_pxeboot_from_the_parents_lease(sim, kind):
    """Test plan: physical, vlan, bonded and bonded-vlan management interfaces, bonds with 2,
    1 or 0 slaves: the chain is logged, the lease of `<parent>:2` gives the own pxeboot
    address (docs/protocol.md §5.2), the receive socket binds to it, and the pxeboot
    mtcAlive carries it."""
    s = sim()
    host = s.files.host("worker-0")
    parent, chain = dress(host, kind)
    s.start()
    c = Controller(s)
    assert log(s).count(chain) >= 1, log(s).text()
    assert log(s).count(f"Pxeboot IF Name: {parent}") >= 1
    assert log(s).count(f"pxeboot dhcp lease address: {host.pxeboot_ip} ; initial") == 1
    assert (host.pxeboot_ip, 2119) in s.net.bound, "the pxeboot receive socket is bound"
    c0 = s.files.controller.c_pxeboot[0]
    c.request({"controller": c0, "controller-0": c0, "controller-1": ""})
    assert json.loads(sent(c, Net.PXEBOOT)[-1][1].buf)["pxeboot_ip"] == host.pxeboot_ip
    assert json.loads(sent(c, Net.PXEBOOT)[-1][1].buf)["mgmt_mac"] == host.mac


def test_a_controller_after_unlock_learns_its_static_address(sim):
    """Test plan: "controller nodes after unlock ; static from ifcfg" (docs/protocol.md §5.2): no
    lease, `ifcfg-<parent>:2` with `address` at column 0."""
    s = sim(clients=["controller-0"])
    host = s.files.host("controller-0")
    os.unlink(os.path.join(host.paths["dhcp_leases_dir"], f"dhclient.{host.mgmt_iface}:2.leases"))
    host.write(f"interfaces.d/ifcfg-{host.mgmt_iface}:2",
               f"iface {host.mgmt_iface}:2 inet static\n  address 10.99.0.1\n"
               f"address {host.pxeboot_ip}\nnetmask 255.255.255.0\n")
    s.start()
    assert log(s, "controller-0").count(f"pxeboot static address: {host.pxeboot_ip}") == 1
    assert (host.pxeboot_ip, 2119) in s.net.bound


def test_the_first_install_gate_opens_only_after_initial_config_and_a_restart(sim):
    """Test plan: "pxeboot receiver is not setup on the oam interface on controller-0 first
    install until after initial config complete" (docs/protocol.md §4.1: the gate is evaluated at
    process start only; in practice the unlock reboot restarts the client)."""
    s = sim(clients=["controller-0"], period=1.0, level=logging.DEBUG)
    host = s.files.host("controller-0")
    host.write("platform/.first_controller", "")
    s.start()
    c = Controller(s, "controller-0")
    c0 = s.files.controller.c_pxeboot[0]
    assert log(s, "controller-0").count("pxeboot network not provisionable yet") == 1
    assert (host.pxeboot_ip, 2119) not in s.net.bound
    host.write("platform/.initial_config_complete", "")
    s.run(3)
    assert (host.pxeboot_ip, 2119) not in s.net.bound, "not re-evaluated while running"
    assert sent(c, Net.PXEBOOT) == []
    s.clients["controller-0"].stop()
    s.clients["controller-0"] = s.make_client("controller-0")
    s.clients["controller-0"].start()
    s.settle()
    assert (host.pxeboot_ip, 2119) in s.net.bound
    c.request({"controller": c0, "controller-0": c0, "controller-1": ""})
    assert len(sent(c, Net.PXEBOOT)) >= 1


def test_a_missing_platform_conf_keeps_the_client_running_until_it_appears(sim):
    s = sim(period=1.0)
    host = s.files.host("worker-0")
    os.unlink(host.paths["platform_conf"])
    s.start()
    c = Controller(s)
    s.run(5)
    assert log(s).count("cannot read") == 1, "throttled, not once a tick"
    assert sent(c, Net.CLSTR) == []
    host.write_platform()
    s.run(1.1)
    assert log(s).count(f"Mgmnt iface : {host.mgmt_iface}") == 1
    s.run(1)
    assert sent(c, Net.CLSTR), "cluster-host mtcAlive once the file is there"


def test_a_restarted_client_learns_pxeboot_again_within_10_s(tmp_path):
    """Test plan: "from controller within 10 seconds of process restart"
    (docs/protocol.md §5.4 "Requests"):
    with the real agent, the restarted client's ready event brings a request at once."""
    with sims(tmp_path, workers=1) as make:
        s = make().start()
        s.run_until(s.all_ok, 10, what="all ok")
        s.run(5)
        c = Controller(s)
        c0 = s.files.controller.c_pxeboot[0]
        before = seqs(c, Net.PXEBOOT, c0)
        s.clients["worker-0"].stop()
        s.clients["worker-0"] = s.make_client("worker-0")
        s.clients["worker-0"].start()
        s.settle()
        restarted = s.clock.now()
        s.run_until(lambda: len(seqs(c, Net.PXEBOOT, c0)) > len(before), 10,
                    what="pxeboot mtcAlive of the new process")
        assert s.clock.now() - restarted < 10
        first = seqs(c, Net.PXEBOOT, c0)[len(before)]
        assert first <= 3 < before[-1], "the new process counts from 1 again"
        s.run(2)
        assert s.all_ok()


def test_sighup_applies_a_new_period_and_names_the_change(sim):
    s = sim(period=1.0).start()
    c = Controller(s)
    s.run(2.1)
    host = s.files.host("worker-0")
    host.values["client"]["mtcalive_period"] = 2
    host.write_ini()
    s.clients["worker-0"].reload()
    s.settle()
    assert log(s).count("config change: [client] mtcalive_period: 1.0 -> 2.0") == 1, log(s).text()
    before = len(sent(c, Net.MGMT))
    s.run(6.05, step=0.01)
    assert len(sent(c, Net.MGMT)) - before == 3
