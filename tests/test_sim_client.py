"""The real Client in one process on a FakeNetwork (tests/harness/sim.py), the test playing the
agent: what a C agent, a controller that moved, or an attacker can send it. Issue 11's client items,
each named."""

from __future__ import annotations

import json
import logging
import os
import random
import struct

import pytest

from harness import soak
from mtce import alive, auth
from mtce.states import ENHANCED_HOST_SERVICES, Cmd, Net, cmd_name
from harness.sim import AGENT_PORT, Controller, Sim, log, record_actions, sims

pytestmark = pytest.mark.sim(clients=["worker-0"], agent=False)


# -- item 5: trusted sources follow the hosts file and the latest pxebootInfo -------------------

def test_a_swact_moves_the_controller_address_and_commands_keep_working(sim):
    """Issue 11 item 5: after a swact or a readdress the hosts file names new controller
    addresses; within one tick the client takes commands from them, ACKs to them, and no
    longer from the old ones (docs/protocol.md §4 for where ACKs go)."""
    s = sim().start()
    c = Controller(s)
    w0, old = c.host, dict(c.src)
    new = {"controller": s.files.net + "201", "controller-0": s.files.net + "202",
           "controller-1": s.files.net + "203"}
    c.listen((w0.controller, 2101), (new["controller"], 2101))
    s.run(1.5)
    c.command(Net.MGMT, Cmd.LOCKED)
    assert s.exists("worker-0", "run_dir", ".node_locked")
    assert [m.cmd for m in c.acks(w0.controller, Net.MGMT)] == [Cmd.LOCKED]
    # The swact: the floating name and the units move (the hosts file is rewritten).
    w0.controller = new["controller"]
    w0.c_mgmt = [new["controller-0"], new["controller-1"]]
    w0.write_hosts()
    s.run(1.2)                                                     # one tick
    c.command(Net.MGMT, Cmd.UNLOCKED, src=new["controller-1"])
    assert not s.exists("worker-0", "run_dir", ".node_locked"), "the new controller is obeyed"
    assert [m.cmd for m in c.acks(new["controller"], Net.MGMT)] == [Cmd.UNLOCKED]
    assert log(s).count(f"Controller  : {new['controller']} ; was") == 1
    c.command(Net.MGMT, Cmd.LOCKED, src=old[Net.MGMT])
    assert not s.exists("worker-0", "run_dir", ".node_locked"), "the old address is not"
    assert log(s).count(f"command from {old[Net.MGMT]} on Mgmnt network refused") == 1
    # and mtcAlive follow the floating address
    s.run(1.2)
    assert c.to_agent(new["controller"], Net.MGMT)[-1].data[:17] == alive.SIG_MESSAGE


def test_the_agents_pxeboot_source_is_trusted_whatever_its_pxebootinfo_says(sim):
    """Issue 11 item 5: the C agent's pxeboot transmit socket is unbound (docs/protocol.md §4), so
    its requests may come from an address its pxebootInfo does not list (the pxecontroller
    floating address). The client used to take the first such request and refuse every later
    one, its reboots and locks too; the source of the latest valid request is trusted."""
    s = sim().start()
    c = Controller(s)
    c0, floating = s.files.controller.c_pxeboot[0], s.files.net + "8"
    c.listen((c0, 2102), (floating, 2102))
    s.run(1.5)
    for _ in range(3):
        c.request({"controller": c0, "controller-0": c0, "controller-1": ""}, src=floating)
        s.run(5)
    assert s.clients["worker-0"].counters.refused == 0
    c.command(Net.PXEBOOT, Cmd.LOCKED, src=floating)
    assert s.exists("worker-0", "run_dir", ".node_locked")
    assert [m.cmd for m in c.acks(floating, Net.PXEBOOT)] == [Cmd.LOCKED]


def test_a_swact_to_the_other_controller_is_followed_within_one_request(sim):
    s = sim().start()
    c = Controller(s)
    c0, c1 = s.files.controller.c_pxeboot
    c.listen((c0, 2102), (c1, 2102))
    s.run(1.5)
    c.request({"controller": c0, "controller-0": c0, "controller-1": ""}, src=c0)
    c.request({"controller": c0, "controller-0": c0, "controller-1": c1}, src=c0)  # c1 added
    s.run(2)
    c.request({"controller": c1, "controller-0": c0, "controller-1": c1}, src=c1)  # the swact
    assert log(s).count(f"controller pxeboot address: {c1} ; was {c0}") == 1
    c.command(Net.PXEBOOT, Cmd.LOCKED, src=c1)
    assert s.exists("worker-0", "run_dir", ".node_locked")
    assert [m.cmd for m in c.acks(c1, Net.PXEBOOT)] == [Cmd.LOCKED]


def test_a_readdressed_controller_pair_is_followed_once_the_old_one_is_silent(sim):
    """Issue 11 item 5: after a readdress nothing the client knows speaks any more; once no
    known controller has sent a pxeboot request for TRUST_STALE_S, the next valid request is
    followed (a live agent sends one at every ready event, about a minute apart)."""
    from mtce.client_trust import TRUST_STALE_S
    s = sim().start()
    c = Controller(s)
    c0, new = s.files.controller.c_pxeboot[0], s.files.net + "160"
    c.listen((c0, 2102), (new, 2102))
    s.run(1.5)
    c.request({"controller": c0, "controller-0": c0, "controller-1": ""}, src=c0)
    s.run(60)
    c.request({"controller": new, "controller-0": new, "controller-1": ""}, src=new)
    assert s.clients["worker-0"].counters.refused == 1, "a stranger, while c0 is alive"
    s.run(TRUST_STALE_S)
    c.request({"controller": new, "controller-0": new, "controller-1": ""}, src=new)
    assert log(s).count("no request from the known controllers for") == 1
    s.run(6)
    assert c.to_agent(new, Net.PXEBOOT), "pxeboot mtcAlive go to the new address"


def test_a_stranger_cannot_command_without_teaching_first(sim):
    """Keys off (README, Security): a command from an address that is neither a controller's
    name nor a pxebootInfo's is refused, on every network."""
    s = sim().start()
    c = Controller(s)
    s.run(1.5)
    for net in Net:
        c.command(net, Cmd.REBOOT, src=s.files.net + "66")
    assert not c.host.actions() and log(s).count("refused: not a controller address") >= 1
    assert s.clients["worker-0"].counters.refused == 3


def test_with_keys_a_valid_tag_decides_not_the_source(sim, tmp_path):
    """Issue 11 item 5: with message authentication on, a command with a valid tag is obeyed
    from any address (a controller that moved); an untagged one is refused with require."""
    keys = tmp_path / "keys"
    keys.write_text("k1 " + "ab" * 32 + "\n")
    keys.chmod(0o600)
    s = sim(client_extra={"security": {"key_file": str(keys), "require": "yes"}}).start()
    c = Controller(s)
    s.run(1.5)
    signer = auth.Authenticator([("k1", bytes.fromhex("ab" * 32))], True, s.clock.wall,
                                s.clock.now)
    stranger = s.files.net + "99"
    c.send(Net.MGMT, signer.sign(alive.command(Cmd.LOCKED, c.host.mac, "{}")), src=stranger)
    assert s.exists("worker-0", "run_dir", ".node_locked")
    c.send(Net.MGMT, alive.command(Cmd.UNLOCKED, c.host.mac, "{}"))    # untagged, from c0
    assert s.exists("worker-0", "run_dir", ".node_locked")
    assert log(s).count("no authentication tag") == 1


# -- issue 23 items 13 and 16: pxeboot slots, confirmed addresses, strangers ------------------

def pxe(addr: str) -> dict:
    return {"controller": addr, "controller-0": addr, "controller-1": addr}


def mgmt_request(c: Controller, info: dict, src=None) -> None:
    """What the mtce agent sends beside every pxeboot request (docs/contract.md §8): the same
    pxebootInfo over mgmt, from the address it sends every mgmt command from."""
    c.command(Net.MGMT, Cmd.REQ_MTCALIVE, src=src or c.host.controller,
              data=alive.pxeboot_info(info.get("controller", ""), info.get("controller-0", ""),
                                      info.get("controller-1", "")))


def test_a_swact_to_a_controller_1_not_named_before_is_followed_at_once(sim):
    """Issue 23 item 13, docs/contract.md §8 (a C agent: requests over pxeboot only): after a
    pxebootInfo without controller-1, controller-1's request with the full pxebootInfo fills
    the empty slot at once: pxeboot mtcAlive go to it at once (no 200.003 for a healthy
    host). It used to be refused for 180 s. Filling trusts nobody (a stranger could fill it):
    the active `controller` slot and pxeboot commands follow controller-1 once the old active
    controller has been silent for 3 minutes, as a standby C agent is."""
    from mtce.client_trust import TRUST_STALE_S
    s = sim().start()
    c = Controller(s)
    c0, c1 = s.files.controller.c_pxeboot
    c.listen((c0, 2102), (c1, 2102))
    s.run(1.5)
    c.request({"controller": c0, "controller-0": c0, "controller-1": ""}, src=c0)
    s.run(5)
    c.request({"controller": c1, "controller-0": c0, "controller-1": c1}, src=c1)   # swact
    assert len(c.to_agent(c1, Net.PXEBOOT)) == 1, "the request is answered to controller-1"
    s.run(5)
    assert len(c.to_agent(c1, Net.PXEBOOT)) >= 2, "and the periodic pxeboot mtcAlive"
    c.command(Net.PXEBOOT, Cmd.LOCKED, src=c1)
    assert not s.exists("worker-0", "run_dir", ".node_locked"), "not trusted yet"
    s.run(TRUST_STALE_S)
    c.request({"controller": c1, "controller-0": c0, "controller-1": c1}, src=c1)
    assert log(s).count(f"controller pxeboot address: {c1} ; was {c0}") == 1
    c.command(Net.PXEBOOT, Cmd.LOCKED, src=c1)
    assert s.exists("worker-0", "run_dir", ".node_locked")


def test_after_a_swact_the_mtce_agents_controller_1_is_confirmed_and_obeyed(sim):
    """Issue 23 items 13 and 16, docs/contract.md §8 (an mtce agent: each pxeboot request has its
    mgmt twin): after a swact to a controller-1 the old agent never named, the new agent's
    mgmt pxebootInfo confirms controller-1, its pxeboot request is taken at once and its
    pxeboot reboot carried out; a stranger's is not."""
    s = sim().start()
    spawns = record_actions(s)
    c = Controller(s)
    c0, c1 = s.files.controller.c_pxeboot
    c.listen((c0, 2102), (c1, 2102))
    s.run(1.5)
    before = {"controller": c0, "controller-0": c0, "controller-1": ""}
    mgmt_request(c, before)
    c.request(before, src=c0)
    after = {"controller": c1, "controller-0": c0, "controller-1": c1}
    mgmt_request(c, after)                    # the floating address moved with the swact
    c.request(after, src=c1)
    assert s.clients["worker-0"].ctrl_pxeboot == after
    c.command(Net.PXEBOOT, Cmd.REBOOT, src=s.files.net + "66")
    assert spawns.names == [] and s.clients["worker-0"].counters.refused == 1
    c.command(Net.PXEBOOT, Cmd.REBOOT, src=c1)
    assert spawns.names == ["failsafe", "reboot"]


def test_a_stranger_cannot_reboot_or_lock_a_client_that_has_met_its_agent(tmp_path):
    """Issue 23 item 16 (keys off), docs/contract.md §8, with the real mtce agent: a stranger, from
    its own unspoofed address and knowing the host's MAC, sends an mtcAlive request with its
    own pxebootInfo over pxeboot, then REBOOT and LOCKED. To a client that has met its agent,
    running, or just restarted while the controller cannot reach it (the stranger is first,
    as it was with trust on first use), nothing is carried out: refused, counted, logged
    rate-limited. The request is still answered (after the restart its pxebootInfo fills
    the empty slots, until the agent's next request replaces them)."""
    with sims(tmp_path, workers=1) as make:
        s = make().start()
        s.run_until(s.all_ok, 20, what="every host ok")
        w0 = s.files.host("worker-0")
        c0 = s.files.controller
        stranger, bad = Controller(s), s.files.net + "66"
        kept = os.path.join(s.path("worker-0", "persist_dir"), "pxeboot_controllers.json")
        with open(kept) as f:
            assert json.load(f)["controller-0"] == c0.pxeboot_ip

        def attack(rounds: int) -> None:
            for _ in range(rounds):
                stranger.request(pxe(bad), src=bad)
                stranger.command(Net.PXEBOOT, Cmd.REBOOT, src=bad)
                stranger.command(Net.PXEBOOT, Cmd.LOCKED, src=bad, num=1, parm=(1,))
                s.run(0.2)

        attack(3)
        controllers = {c0.controller, c0.mgmt_ip, c0.cluster_host_ip, c0.pxeboot_ip}
        ours = {w0.mgmt_ip, w0.cluster_host_ip, w0.pxeboot_ip}
        s.net.drop = lambda d: d.src[0] in controllers and d.dst[0] in ours
        s.clients["worker-0"].stop()
        s.clients["worker-0"] = s.make_client("worker-0")
        s.clients["worker-0"].start()
        s.settle()
        def answers() -> int:
            return sum(d.src[0] == w0.pxeboot_ip and d.data[:17] == alive.SIG_MESSAGE
                       for d in s.net.sent + s.net.lost)

        answered = answers()
        attack(100)
        client = s.clients["worker-0"]
        assert not s.exists("worker-0", "run_dir", ".node_reset"), "no reboot"
        assert not s.exists("worker-0", "run_dir", ".node_locked"), "no lock"
        assert client.counters.refused >= 200
        assert stranger.acks(bad, Net.PXEBOOT) == []
        assert answers() >= answered + 100, "each request is answered (docs/contract.md §8)"
        refusals = [line for line in log(s).lines() if bad in line]
        assert 1 <= len(refusals) <= 12, refusals
        assert log(s).count("controller pxeboot addresses confirmed earlier: "
                            f"{c0.pxeboot_ip}") == 1
        s.net.drop = None
        s.run_until(s.all_ok, 20, what="back to normal once the controller is heard")


def test_a_fresh_client_that_never_met_its_agent_keeps_the_originals_rule(sim):
    """Issue 23 item 16, docs/contract.md §8 (README "Security"): a client that has never received a
    confirmed pxebootInfo (a C agent, or before it meets its agent) keeps the original's
    rule, trust on the first pxeboot request: a stranger first can command it over pxeboot.
    Keys, or the mtce agent's confirmation, close this."""
    s = sim().start()
    spawns = record_actions(s)
    stranger, bad = Controller(s), s.files.net + "66"
    stranger.request(pxe(bad), src=bad)
    stranger.command(Net.PXEBOOT, Cmd.REBOOT, src=bad)
    assert spawns.names == ["failsafe", "reboot"]


def test_an_unusable_kept_file_refuses_pxeboot_commands_until_confirmed(sim):
    """docs/contract.md §8: the kept set that cannot be read is logged once and fails closed:
    pxeboot commands are refused, even from the first requester, until a pxebootInfo over mgmt
    confirms the controllers again."""
    s = sim(clients=[]).start()
    persist = s.path("worker-0", "persist_dir")
    with open(os.path.join(persist, "pxeboot_controllers.json"), "w") as f:
        f.write('{"controller-0": "not an address"}\n')
    s.clients["worker-0"] = s.make_client("worker-0")
    spawns = record_actions(s)
    s.clients["worker-0"].start()
    s.settle()
    assert log(s).count("pxeboot commands are refused until the agent confirms") == 1
    c = Controller(s)
    c0 = s.files.controller.c_pxeboot[0]
    c.request(pxe(c0), src=c0)
    c.command(Net.PXEBOOT, Cmd.REBOOT, src=c0)
    assert spawns.names == []
    mgmt_request(c, pxe(c0))
    c.command(Net.PXEBOOT, Cmd.REBOOT, src=c0)
    assert spawns.names == ["failsafe", "reboot"]
    with open(os.path.join(persist, "pxeboot_controllers.json")) as f:
        assert json.load(f) == pxe(c0), "the kept file is good again"


# -- item 6: the host-services ACK is the original's --------------------------------------------

@pytest.mark.parametrize("cmd", range(Cmd.STOP_CONTROL_SVCS, Cmd.START_STORAGE_SVCS + 1))
def test_host_services_ack_carries_num_2_the_result_and_the_enhanced_flag(sim, cmd):
    """Issue 11 item 6, docs/protocol.md §2, §1.2 (`M/mtcCompMsg.cpp:461-464`): the
    echo with num 2, parm[0] the result (0), parm[1] 0x1B0000B1; 100 bytes, the MAC remnant."""
    s = sim().start()
    c = Controller(s)
    c.listen((c.host.controller, 2101))
    s.run(1.5)
    sent = c.command(Net.MGMT, cmd, num=0, parm=(0, 0, 7, 8, 9))
    [ack] = [d.data for d in c.to_agent(c.host.controller, Net.MGMT)
             if d.data[:17] == alive.SIG_CMD_RSP]
    want = bytearray(sent[:100])
    want[0:18] = alive.SIG_CMD_RSP + b"\0"
    struct.pack_into("<III", want, 76, 2, 0, ENHANCED_HOST_SERVICES)
    assert ack == bytes(want)
    assert log(s).count(f"{cmd_name(cmd)} request from Mgmnt network") == 1


def test_host_services_fit_failure_and_no_ack(sim):
    s = sim().start()
    c = Controller(s)
    c.listen((c.host.controller, 2101))
    s.run(1.5)
    fit = os.path.join(s.path("worker-0", "run_dir"), "fit")
    os.makedirs(fit)
    open(os.path.join(fit, "host_services"), "w").close()
    c.command(Net.MGMT, Cmd.START_WORKER_SVCS)
    [ack] = c.acks(c.host.controller, Net.MGMT)
    assert (ack.num, ack.parm[0], ack.parm[1]) == (2, 254, ENHANCED_HOST_SERVICES)
    open(os.path.join(fit, "no_hs_ack"), "w").close()
    c.command(Net.MGMT, Cmd.STOP_WORKER_SVCS)
    assert len(c.acks(c.host.controller, Net.MGMT)) == 1, "no ACK with fit/no_hs_ack"


def test_other_acks_stay_the_plain_echo(sim):
    s = sim().start()
    c = Controller(s)
    c.listen((c.host.controller, 2101))
    s.run(1.5)
    sent = c.command(Net.MGMT, Cmd.LOOPBACK, num=3, parm=(1, 2, 3))
    [ack] = [d.data for d in c.to_agent(c.host.controller, Net.MGMT)
             if d.data[:17] == alive.SIG_CMD_RSP]
    assert ack == alive.SIG_CMD_RSP + b"\0" + sent[18:100]


# -- item 7: wipedisk and the subfunction-failed flag ------------------------------------------

def test_wipedisk_runs_the_wipedisk_action_after_its_ack_with_a_failsafe(sim):
    """Issue 11 item 7, docs/protocol.md §2 (`M/mtcCompMsg.cpp:714-742`): ACK, failsafe at half
    the delay, `.node_reset` says "wipedisk command", then `[actions] wipedisk`."""
    s = sim().start()
    c = Controller(s)
    c.listen((c.host.controller, 2101))
    s.run(1.5)
    c.command(Net.MGMT, Cmd.WIPEDISK)
    assert [m.cmd for m in c.acks(c.host.controller, Net.MGMT)] == [Cmd.WIPEDISK]
    s.clients["worker-0"].actions.children[-1].wait(5)
    assert "wipedisk" in c.host.actions()
    assert log(s).count("Reload command received from Mgmnt network") == 1
    assert log(s).count("Disk wipe in progress (Mgmnt)") == 1
    assert log(s).count("failsafe reboot script launched ; reboot in 1 seconds") == 1
    with open(os.path.join(s.path("worker-0", "run_dir"), ".node_reset")) as f:
        assert f.read() == "wipedisk command\n"


def test_wipedisk_fit_bypass(sim):
    s = sim().start()
    c = Controller(s)
    s.run(1.5)
    fit = os.path.join(s.path("worker-0", "run_dir"), "fit")
    os.makedirs(fit)
    open(os.path.join(fit, "no_wipedisk"), "w").close()
    c.command(Net.MGMT, Cmd.WIPEDISK)
    assert log(s).count("Wipedisk - fit bypass (Mgmnt)") == 1
    assert not s.clients["worker-0"].actions.children and "wipedisk" not in c.host.actions()


def test_subf_goenabled_failed_writes_its_flag_as_the_original(sim):
    """Issue 11 item 7, `M/mtcCompMsg.cpp:310-316`: goenabled_subf removed,
    goenabled_subf_failed written; no ACK. The next mtcAlive no longer says SUBF_GOENABLED."""
    s = sim().start()
    c = Controller(s)
    c.listen((c.host.controller, 2101))
    run = s.path("worker-0", "run_dir")
    open(os.path.join(run, "goenabled_subf"), "w").close()
    s.run(1.5)
    c.command(Net.MGMT, Cmd.SUBF_GOENABLED_FAILED)
    assert not os.path.exists(os.path.join(run, "goenabled_subf"))
    with open(os.path.join(run, "goenabled_subf_failed")) as f:
        assert f.read() == "host subfunction has failed as instructed by maintenance.\n"
    assert c.acks(c.host.controller, Net.MGMT) == []


def test_sync_is_not_run_in_the_loop(sim):
    s = sim().start()
    c = Controller(s)
    s.run(1.5)
    for _ in range(20):
        c.command(Net.MGMT, Cmd.SYNC)
    syncs = [p for p in s.clients["worker-0"].actions.children
             if getattr(p, "action_name", "") == "sync"]
    assert len(syncs) == 1, "sync runs in a child, one at a time, not in the loop"


# -- item 2: no log flood --------------------------------------------------------------------

def hostile_client_mix(s, c: Controller, rng: random.Random):
    """(source, net, datagram): the soak's mutations of what a client receives, from unknown
    addresses and from the controllers' own (only what changes nothing), with the ACK-only
    and log-only command codes from the controllers."""
    w0 = c.host
    info = soak.HostInfo("worker-0", w0.mac, w0.mgmt_ip, w0.cluster_host_ip, w0.pxeboot_ip)
    mut = soak.Mutator(soak.client_seeds(info, w0.controller, tuple(w0.c_pxeboot)), rng)
    trusted = [w0.controller] + w0.c_mgmt + w0.c_clstr + w0.c_pxeboot
    unknown = [s.files.net + str(i) for i in range(100, 140)]
    codes = list(soak.ACK_ONLY + soak.LOG_ONLY)
    while True:
        net = rng.choice(list(Net))
        r = rng.random()
        if r < 0.35:
            cmd = rng.choice(codes + [rng.getrandbits(32)])
            yield c.src[net], net, alive.command(cmd, w0.mac, "{}", num=1, parm=(cmd,))
            continue
        _, data = mut.next()
        src = rng.choice(trusted)
        if r < 0.7 and soak.client_safe_from_trusted(data, src, (w0.mgmt_ip,), w0.mac):
            yield src, net, data
        else:
            yield rng.choice(unknown), net, data


@pytest.mark.slow
def test_two_hundred_thousand_hostile_datagrams_log_at_most_60_client_lines(sim):
    """Issue 11 item 2, style P9: 200,000 datagrams at 2,000/s to the client's three ports,
    most from the controllers' own addresses (commands it only ACKs, unknown signatures, bad
    JSON, wrong MAC, ACK-only codes): at most 60 lines, with the suppressed counts, nothing
    done to the host, and a real command in the middle is still logged and obeyed."""
    s = sim().start()
    c = Controller(s)
    s.run(1.5)
    c.request({"controller": c.src[Net.PXEBOOT], "controller-0": c.src[Net.PXEBOOT]})
    s.run(1)
    log(s).clear()
    rng = random.Random(12)
    mix = hostile_client_mix(s, c, rng)
    t0 = s.clock.now()
    for batch in range(10_000):                      # 20 every 10 ms: 2,000/s for 100 s
        for _ in range(20):
            src, net, data = next(mix)
            s.net.transmit(data, (src, 41000), c.dest(net))
        if batch == 5000:
            c.command(Net.MGMT, Cmd.LOCKED, num=1, parm=(1,))
        s.clock.advance(0.01)
        s.settle()
    assert 99 <= s.clock.now() - t0 <= 101
    lines = log(s).lines(logging.INFO)
    assert len(lines) <= 60, "\n".join(lines)
    assert any("repeated log lines suppressed" in line for line in lines), lines
    assert any(line.startswith("worker-0 locked (Mgmnt)") for line in lines), \
        "the real command's line is not hidden by the flood"
    assert s.exists("worker-0", "run_dir", ".node_locked")
    assert c.host.actions() == [], "no reboot, reset or wipedisk was run"
    assert s.clients["worker-0"].counters.rx >= 200_000


# -- item 9: no two datagrams of one sender share a tag -----------------------------------------

def test_with_keys_ten_minutes_of_normal_traffic_have_no_replay_drops(tmp_path):
    """Issue 11 item 9: the client sends identical bytes on two networks in the same
    millisecond (the ready event on mgmt and pxeboot; an ACK to two cluster-host addresses),
    and the agent replies to the same host on three networks at once. With the protocol clock
    frozen between events (every send of a turn in one millisecond), ten minutes of a whole
    cluster's normal traffic, commands included, give no replay drop anywhere."""
    keys = tmp_path / "keys"
    keys.write_text("k1 " + "cd" * 32 + "\n")
    keys.chmod(0o600)
    sec = {"security": {"key_file": str(keys), "require": "yes"}}
    s = Sim(tmp_path / "sim", workers=2, agent_extra=sec, client_extra=sec)
    try:
        s.start()
        s.run(5)
        for i in range(120):                          # 10 minutes, in 5 s steps
            if i % 20 == 10:
                assert s.request(cmd="lock", host="worker-0")["ok"]
            if i % 20 == 15:
                assert s.request(cmd="unlock", host="worker-0")["ok"]
            s.run(5, step=0.1)
        assert s.all_ok()
        replays = {"agent": s.agent.wire.auth.counters["replayed"]}
        replays.update({n: c.wire.auth.counters["replayed"] for n, c in s.clients.items()})
        assert replays == {n: 0 for n in replays}
        assert s.agent.wire.auth.counters["accepted"] > 4000
        assert not s.errors()
    finally:
        s.stop()


def test_identical_bytes_signed_in_one_millisecond_get_two_tags():
    wall = [1_780_000_000.0]
    a = auth.Authenticator([("k1", b"k" * 32)], True, lambda: wall[0], lambda: 1.0)
    b = auth.Authenticator([("k1", b"k" * 32)], True, lambda: wall[0], lambda: 1.0)
    data = alive.ready_event("worker-0", "")
    first, second, other = a.sign(data), a.sign(data), a.sign(alive.ready_event("worker-1"))
    assert first != second
    assert b.check(first)[1] is None and b.check(second)[1] is None and \
        b.check(other)[1] is None
    assert int(other.split(b" ")[-2]) == int(wall[0] * 1000), \
        "different bytes keep the clock's time: no drift however many are signed"


# -- the fault-insertion files, every one (docs/protocol.md §5.7), in-process --------------------

# file: (socket, its recovery label, what stops while the file exists)
CLIENT_FIT = {
    "mgmnt_rxsock": ("mgmt_rx", "mgmt_rx", "mgmt commands"),
    "mgmnt_txsock": ("mgmt_tx", "mgmt_tx", "mgmt mtcAlive"),
    "clstr_rxsock": ("clstr_rx", "clstr_rx", "cluster-host mtcAlive"),
    "clstr_txsock": ("clstr_tx", "clstr_tx_sockets", None),
    "pxeboot_rxsock": ("pxeboot_rx", "pxeboot_rx", "pxeboot commands"),
    "pxeboot_txsock": ("pxeboot_tx", "pxeboot_tx", None),
}


def alives(c: Controller, net: Net) -> int:
    src = {Net.MGMT: c.host.mgmt_ip, Net.CLSTR: c.host.cluster_host_ip,
           Net.PXEBOOT: c.host.pxeboot_ip}[net]
    return sum(1 for d in c.s.net.sent + c.s.net.lost
               if d.src[0] == src and d.dst[1] == AGENT_PORT[net]
               and d.data[:17] == alive.SIG_MESSAGE)


def loopback_acked(c: Controller, net: Net) -> bool:
    """A loopback command over `net` is ACKed (the client receives on it)."""
    before = len(c.s.net.sent + c.s.net.lost)
    c.command(net, Cmd.LOOPBACK)
    return any(d.data[:17] == alive.SIG_CMD_RSP for d in (c.s.net.sent + c.s.net.lost)[before:])


@pytest.mark.parametrize("fname", sorted(CLIENT_FIT))
def test_every_fit_file_closes_its_socket_while_it_exists_then_every_network_is_back(sim, fname):
    """docs/protocol.md §5.7, the table row of each file: what it closes, what stops while it exists
    (mgmnt_rxsock: mgmt reception; mgmnt_txsock: mgmt mtcAlive; clstr_rxsock: cluster-host
    mtcAlive, gated on its receive socket; pxeboot_rxsock: pxeboot reception, though pxeboot
    mtcAlive still goes out; the transmit files: re-created each tick, so mtcAlive flows), the
    tick's recovery line, and every network back once the file is gone."""
    sock, label, stops = CLIENT_FIT[fname]
    s = sim().start()
    c = Controller(s)
    c0 = s.files.controller.c_pxeboot[0]
    c.request({"controller": c0, "controller-0": c0, "controller-1": ""})
    s.run(2)
    assert all(alives(c, net) for net in Net), "every network sends before the file"
    fit = os.path.join(c.host.paths["run_dir"], "fit", fname)
    os.makedirs(os.path.dirname(fit), exist_ok=True)
    open(fit, "w").close()
    s.run_until(lambda: log(s).count(f"fault insertion: closing {sock} socket (fit/{fname})"),
                3, what="the fault insertion line")
    s.run(1.05)
    assert log(s).count(f"calling setup_{label}_socket (auto-recovery)") >= 1
    counts = {net: alives(c, net) for net in Net}
    s.run(3)
    moved = {net: alives(c, net) > counts[net] for net in Net}
    assert moved == {Net.MGMT: stops != "mgmt mtcAlive", Net.CLSTR: stops !=
                     "cluster-host mtcAlive", Net.PXEBOOT: True}, moved
    if stops == "mgmt commands":
        assert not loopback_acked(c, Net.MGMT)
    if stops == "pxeboot commands":
        assert not loopback_acked(c, Net.PXEBOOT)
    assert log(s).count(f"fault insertion: closing {sock} socket") == 1, "not one a tick"
    os.unlink(fit)
    s.run(2.1)
    counts = {net: alives(c, net) for net in Net}
    s.run(2)
    assert all(alives(c, net) > counts[net] for net in Net), "every network back"
    assert all(loopback_acked(c, net) for net in Net), "every network receives again"


def test_a_process_on_the_host_itself_cannot_command_its_client(tmp_path):
    """docs/contract.md §8 "Who may command a client" (keys off): mgmt commands come from the
    `controller`, `controller-0` and `controller-1` addresses, cluster-host ones from the
    controllers' cluster-host addresses; the host's own addresses are not among them (the
    original's "self" only skips the target-MAC check). Attack (issue 23 review): an
    unprivileged process on worker-0 binds worker-0's own mgmt and cluster-host addresses and
    sends LOCKED, WIPEDISK and REBOOT to its own client, with version 0 (no MAC), then a
    pxebootInfo naming itself over mgmt (which would confirm it as a pxeboot controller):
    nothing is carried out, nothing is confirmed, each is refused and logged rate-limited."""
    with sims(tmp_path, workers=1) as make:
        s = make().start()
        s.run_until(s.all_ok, 20, what="every host ok")
        _the_host_itself_attacks(s)


def _the_host_itself_attacks(s):
    spawns = record_actions(s)
    w0 = s.files.host("worker-0")
    local = Controller(s)
    for _ in range(20):
        for net, src in ((Net.MGMT, w0.mgmt_ip), (Net.CLSTR, w0.cluster_host_ip)):
            for code, num, parm in ((Cmd.LOCKED, 1, (1,)), (Cmd.WIPEDISK, 0, ()),
                                    (Cmd.REBOOT, 0, ()), (Cmd.RESET, 0, ())):
                data = alive.pack(alive.SIG_CMD_REQ, cmd=code, num=num, parm=parm, ver=0)
                local.send(net, data, src=src)
            local.send(net, alive.command(Cmd.REQ_MTCALIVE, w0.mac, json.dumps(
                {"pxebootInfo": {"controller": w0.pxeboot_ip, "controller-0": w0.pxeboot_ip,
                                 "controller-1": w0.pxeboot_ip}})), src=src)
        s.run(0.2)
    assert spawns.names == [], "nothing ran"
    assert not s.exists("worker-0", "run_dir", ".node_locked")
    assert not s.exists("worker-0", "persist_dir", ".node_locked")
    assert not s.exists("worker-0", "run_dir", ".node_reset")
    assert w0.pxeboot_ip not in s.clients["worker-0"].core.sources.pxeboot
    ours = {w0.mgmt_ip, w0.cluster_host_ip, w0.pxeboot_ip}
    assert not [d for d in s.net.sent + s.net.lost
                if d.src[0] in ours and d.data[:17] == alive.SIG_CMD_RSP], "nothing ACKed"
    refusals = [line for line in log(s).lines() if "refused: not a controller" in line]
    assert 1 <= len(refusals) <= 12, refusals
