"""The client's pure core (client_core.py), table-driven from the reference, in milliseconds: the
gates (docs/protocol.md §4.1), the tick and the ready-event cadence (§5.1), the command table
(§2, §4), the MAC check and dispatch (§1.2), who may command (README "Security") and what a
pxebootInfo teaches (§5.2). Every input here is one a C agent or a stranger can send."""

from __future__ import annotations

import pytest

from mtce import alive, client_core, client_trust
from mtce.client_core import (Ack, ClientCore, Do, Gates, RunAction, SaveConfirmed, SendAck,
                              SendAlive)
from mtce.client_trust import TRUST_STALE_S
from mtce.decisions import Log
from mtce.states import Cmd, Net
from mtce.transport import Counters

MAC = "08:00:27:aa:bb:01"
CTL = "10.0.0.2"           # controller-0 mgmt
OWN = "10.0.0.10"


class Facts:
    hostname = "worker-0"

    def __init__(self, fits=(), changes=True):
        self.fits, self.changes = set(fits), changes

    def would_change(self, kind, num, parm, net):
        return self.changes

    def fit(self, name):
        return name in self.fits


def core(now=0.0, period=5.0) -> ClientCore:
    c = ClientCore(period, now, Counters())
    c.gates = Gates("eth0", "eth1", "duplex", "worker")
    c.set_names(mgmt=("10.0.0.1", CTL, "10.0.0.3"), clstr=("10.1.0.4", "10.1.0.5"))
    return c


def cmd(code, *, mac=MAC, data="", num=0, parm=()) -> alive.Message:
    return alive.decode(alive.command(code, mac, data, num=num, parm=parm))


def kinds(actions) -> list:
    return [type(a).__name__ for a in actions]


# -- gates (docs/protocol.md §4.1) ---------------------------------------------------------------

@pytest.mark.parametrize("mgmt, clstr, mode, first, pxeboot, has_clstr, ctls, last_line", [
    # management on lo (USB-installed controller-0 before config): no pxeboot, no log
    ("lo", "", "duplex", False, False, False, 2, "Node Type   : controller"),
    # controller-0's first install: not provisionable yet (debug)
    ("eth0", "eth1", "duplex", True, False, True, 2, "pxeboot network not provisionable yet"),
    # simplex: not provisioned, said so; controller-1 not a destination
    ("eth0", "eth1", "simplex", False, False, True, 1,
     "Simplex Mode: Pxeboot network not provisioned"),
    # otherwise provisioned
    ("eth0", "eth1", "duplex", False, True, True, 2, "Mgmnt iface : eth0"),
    ("eth0", "", "standard", False, True, False, 2, "Mgmnt iface : eth0"),
    # cluster-host combined with mgmt: no separate cluster-host network
    ("eth0", "eth0", "standard", False, True, False, 2, "Mgmnt iface : eth0"),
])
def test_gates_from_the_platform_facts(mgmt, clstr, mode, first, pxeboot, has_clstr, ctls,
                                       last_line):
    g = Gates(mgmt, clstr, mode, "controller", first_install=first)
    assert (g.pxeboot, g.clstr, len(g.controllers)) == (pxeboot, has_clstr, ctls)
    assert g.lines()[-1][1] == last_line
    assert g.lines()[0] == ("info", f"System Type : {client_core.SYSTEM_TYPES[mode]}")


# -- the tick (docs/protocol.md §5.1, §4) --------------------------------------------------------

@pytest.mark.parametrize("gates, mgmt_ready, clstr_rx_ok, nets", [
    (Gates("eth0", "eth1", "duplex", "worker"), True, True, [Net.PXEBOOT, Net.MGMT, Net.CLSTR]),
    # cluster-host mtcAlive is gated on the cluster-host *receive* socket (docs/protocol.md §5.1)
    (Gates("eth0", "eth1", "duplex", "worker"), True, False, [Net.PXEBOOT, Net.MGMT]),
    (Gates("eth0", "eth1", "duplex", "worker"), False, True, [Net.PXEBOOT, Net.CLSTR]),
    (Gates("eth0", "eth1", "simplex", "controller"), True, True, [Net.MGMT, Net.CLSTR]),
    (Gates("eth0", "eth0", "standard", "worker"), True, True, [Net.PXEBOOT, Net.MGMT]),
    (None, True, True, [Net.MGMT]),          # platform.conf not read yet
])
def test_each_tick_sends_in_the_originals_order(gates, mgmt_ready, clstr_rx_ok, nets):
    c = core()
    c.gates = gates
    assert [a.net for a in c.tick_nets(mgmt_ready, clstr_rx_ok)] == nets


@pytest.mark.parametrize("period, every", [(5.0, 12), (1.0, 60), (0.5, 120), (120.0, 1)])
def test_the_ready_event_is_due_about_once_a_minute(period, every):
    """docs/protocol.md §5.1: on every 12th tick of 5 s; a faster tick keeps about a minute."""
    c = core(period=period)
    due = [i for i in range(1, 3 * every + 1) if c.tick_done()]
    assert due == [every, 2 * every, 3 * every]


def test_pxeboot_destinations_and_the_once_per_transition_logs():
    """docs/protocol.md §5.1: 'not learned' once per controller until a send succeeds,
    then 'sending pxeboot network mtcAlive msg on port 2102 ...' once. The core says where a
    pxeboot mtcAlive goes (`SendAlive.to`) and is told what became of each send."""
    c = core()
    assert c.send_pxeboot() == SendAlive(Net.PXEBOOT, (("controller-0", ""), ("controller-1", "")))
    first = c.pxeboot_sent([("controller-0", "", False), ("controller-1", "10.2.0.7", True)],
                           2102)
    # The flags start true: an address learned before the first tick logs no 'sending' line.
    assert [(s.level, s.text) for s in first] == [
        ("warning", "controller-0 pxeboot address not learned ; unable to send pxeboot mtcAlive")]
    assert c.pxeboot_sent([("controller-0", "", False)], 2102) == []
    assert c.pxeboot_sent([("controller-0", "10.2.0.6", False)], 2102) == [], "a failed send"
    sent = c.pxeboot_sent([("controller-0", "10.2.0.6", True)], 2102)
    assert [s.text for s in sent] == ["sending pxeboot network mtcAlive msg on port 2102 to "
                                      "controller-0 at 10.2.0.6"]
    assert c.pxeboot_sent([("controller-0", "10.2.0.6", True)], 2102) == []
    c.ctrl_pxeboot = {"controller-0": "10.2.0.6"}
    c.gates = Gates("eth0", "eth1", "simplex", "controller")
    assert c.send_pxeboot().to == (("controller-0", "10.2.0.6"),)


# -- the command table (docs/protocol.md §2, §4) --------------------------------------------------

# code: (ACKed?, what is done, done before the ACK?, the words logged on receipt or None)
REFERENCE_TABLE = {
    Cmd.REQ_MTCALIVE: (False, Do.PXEBOOT_INFO, None, "mtcAlive request received from Mgmnt"),
    Cmd.INFO: (False, Do.NOTHING, None, "mtc 'info' message received from Mgmnt network"),
    Cmd.SYNC: (False, Do.SYNC, True, "mtc 'sync' message received from Mgmnt network"),
    Cmd.LOCKED: (True, Do.LOCK, True, None),
    Cmd.UNLOCKED: (True, Do.UNLOCK, True, "worker-0 unlocked received from Mgmnt network"),
    Cmd.SUBF_GOENABLED_FAILED: (False, Do.SUBF_FAILED, True, "goEnabled subf failed message"),
    Cmd.REQ_MAIN_GOENABLED: (True, Do.NOTHING, None, "received from Mgmnt network"),
    Cmd.REQ_SUBF_GOENABLED: (True, Do.NOTHING, None, "received from Mgmnt network"),
    Cmd.REBOOT: (True, Do.REBOOT, False, "reboot command received from Mgmnt network"),
    Cmd.LAZY_REBOOT: (True, Do.LAZY_REBOOT, False,
                      "lazy reboot command received from Mgmnt network ; delay:30 seconds"),
    Cmd.WIPEDISK: (True, Do.WIPEDISK, False, "Reload command received from Mgmnt network"),
    Cmd.RESET: (True, Do.RESET, False, "Reset command received from Mgmnt network"),
    Cmd.LOOPBACK: (True, Do.NOTHING, None, "Loopback command received from Mgmnt network"),
    # Any other code is still ACKed (FAIL_BAD_CASE is not put in the ACK).
    77: (True, Do.NOTHING, None, "Unsupported maintenance command (77) with 101 bytes "
                                 "received from Mgmnt network"),
}
for _code in range(Cmd.STOP_CONTROL_SVCS, Cmd.START_STORAGE_SVCS + 1):
    REFERENCE_TABLE[Cmd(_code)] = (True, Do.HOST_SERVICES, None, "request from Mgmnt network")


@pytest.mark.parametrize("code", sorted(REFERENCE_TABLE, key=int))
def test_every_command_code_over_mgmt_as_the_reference_table_says(code):
    acked, do, before_ack, words = REFERENCE_TABLE[code]
    c = core()
    out = c.on_command(cmd(code, num=1, parm=(30, 0, 0, 0, 0)), CTL, Net.MGMT, False, 1.0,
                       Facts())
    acks = [a for a in out if isinstance(a, SendAck)]
    runs = [a for a in out if isinstance(a, RunAction)]
    assert len(acks) == (1 if acked else 0)
    if do in (Do.NOTHING, Do.PXEBOOT_INFO, Do.HOST_SERVICES):
        assert runs == []
    else:
        assert [r.do for r in runs] == [do]
        ack_at = out.index(acks[0]) if acks else len(out)
        assert (out.index(runs[0]) < ack_at) == before_ack
    said = [a.text for a in out if isinstance(a, Log)]
    if words is None:
        assert said == []
    else:
        assert any(words in s for s in said), said
    if acked:
        # The ACK echoes the command: cmd unchanged, to its source on its network.
        assert (acks[0].msg.cmd, acks[0].src, acks[0].net) == (int(code), CTL, Net.MGMT)
        # The locked ACK is not logged; others are, with their command line.
        assert acks[0].log == (code != Cmd.LOCKED)


def test_the_locked_message_logs_nothing_on_receipt():
    """docs/protocol.md §2: `<host> locked (<Iface>)` only when it creates the file (client.py
    carries that out); the ACK is sent and not logged."""
    out = core().on_command(cmd(Cmd.LOCKED), CTL, Net.MGMT, False, 1.0, Facts())
    assert kinds(out) == ["RunAction", "SendAck"]
    assert out[1].log is False


def test_a_host_services_ack_carries_num_2_the_rc_and_the_flag():
    """docs/protocol.md §2: parm[0] = rc, parm[1] = 0x1B0000B1, num = 2."""
    out = core().on_command(cmd(Cmd.START_WORKER_SVCS, num=0), CTL, Net.MGMT, False, 1.0,
                            Facts())
    ack = next(a for a in out if isinstance(a, SendAck))
    assert (ack.num, ack.parm[:2]) == (2, (0, 0x1B0000B1))
    wire = alive.decode(alive.ack(ack.msg, ack.num, ack.parm))
    assert (wire.sig, wire.num, wire.parm[:2]) == (alive.SIG_CMD_RSP, 2, (0, 0x1B0000B1))


def test_host_services_fit_files_fail_the_rc_or_withhold_the_ack():
    out = core().on_command(cmd(Cmd.START_WORKER_SVCS), CTL, Net.MGMT, False, 1.0,
                            Facts(fits={"host_services"}))
    ack = next(a for a in out if isinstance(a, SendAck))
    assert ack.parm[0] == client_core.FAIL_FIT
    out = core().on_command(cmd(Cmd.START_WORKER_SVCS), CTL, Net.MGMT, False, 1.0,
                            Facts(fits={"no_hs_ack"}))
    assert not any(isinstance(a, SendAck) for a in out)


@pytest.mark.parametrize("net", list(Net))
def test_an_mtcalive_request_teaches_and_answers_only_over_pxeboot(net):
    """docs/protocol.md §2, §5.2: over pxeboot the request's pxebootInfo is learned and one pxeboot
    mtcAlive goes out at once, with no ACK; over mgmt or cluster-host nothing is done."""
    c = core()
    src = "10.2.0.6" if net is Net.PXEBOOT else CTL
    info = alive.pxeboot_info("10.2.0.6", "10.2.0.6", "10.2.0.7")
    out = c.on_command(cmd(Cmd.REQ_MTCALIVE, data=info), src, net, False, 1.0, Facts())
    assert not any(isinstance(a, SendAck) for a in out)
    if net is Net.PXEBOOT:
        assert out[-1].net is Net.PXEBOOT and isinstance(out[-1], SendAlive)
        assert c.ctrl_pxeboot == {"controller": "10.2.0.6", "controller-0": "10.2.0.6",
                                  "controller-1": "10.2.0.7"}
    else:
        assert not any(isinstance(a, SendAlive) for a in out)
        assert c.ctrl_pxeboot == dict.fromkeys(client_trust.PXEBOOT_KEYS, "")


# -- the MAC check and dispatch (docs/protocol.md §1.2) --------------------------------------

def test_a_command_for_another_mac_is_dropped_with_the_originals_words():
    c = core()
    msg = cmd(Cmd.REBOOT, mac="08:00:27:aa:bb:99")
    out = c.on_message(msg, CTL, Net.MGMT, False, 1.0, Facts(), (OWN,), MAC)
    assert [a.text for a in out] == ["reboot req command from Mgmnt network not for this host "
                                     "(exp:08:00:27:aa:bb:01 det:08:00:27:aa:bb:99) ; "
                                     "ignoring ..."]
    assert c.counters.rx_bad == 1 and c.counters.commands == 0


def test_the_mac_check_is_skipped_for_self_and_for_version_0():
    """docs/protocol.md §1.2: a message from the host's own address skips the target-MAC
    check (here the host is controller-0, the agent's own host); it still needs a
    controller's address to be carried out (docs/contract.md §8)."""
    c = core()
    other = cmd(Cmd.LOOPBACK, mac="08:00:27:aa:bb:99")
    out = c.on_message(other, CTL, Net.MGMT, False, 1.0, Facts(), (CTL,), MAC)
    assert any(isinstance(a, SendAck) for a in out), "from this host itself"
    v0 = alive.decode(alive.pack(alive.SIG_CMD_REQ, cmd=Cmd.LOOPBACK, ver=0))
    out = c.on_message(v0, CTL, Net.MGMT, False, 1.0, Facts(), (OWN,), MAC)
    assert any(isinstance(a, SendAck) for a in out), "version 0 carries no MAC"


def test_a_host_without_a_mac_accepts_no_command_from_a_controller():
    out = core().on_message(cmd(Cmd.REBOOT, mac=""), CTL, Net.MGMT, False, 1.0, Facts(),
                            (OWN,), "")
    assert kinds(out) == ["Log"] and "not for this host" in out[0].text


@pytest.mark.parametrize("sig, words", [
    (alive.SIG_REP_MSG, "main function goEnabled results acknowledged from Mgmnt network"),
    (alive.SIG_MESSAGE, "unexpected mtcAlive message from 10.0.0.2 from Mgmnt network ; "
                        "WARNING: mtcClient is receiving mtcAgent bound mtcAlive messages"),
    (alive.SIG_EVENT, "unsupported message from 10.0.0.2 from Mgmnt network"),
    (alive.SIG_CMD_RSP, "unsupported message from 10.0.0.2 from Mgmnt network"),
])
def test_other_signatures_are_told_and_never_acted_on(sig, words):
    c = core()
    msg = alive.decode(alive.pack(sig, cmd=Cmd.MAIN_GOENABLED, ver=0))
    out = c.on_message(msg, CTL, Net.MGMT, False, 1.0, Facts(), (OWN,), MAC)
    assert [(a.kind, a.text) for a in out] == [("noise", words)]


def test_undecodable_datagrams_are_noise_counted_as_bad():
    c = core()
    out = c.on_undecodable("unknown header signature", "192.0.2.9", Net.PXEBOOT)
    assert out[0].text == "unsupported message from 192.0.2.9 from Pxeboot network"
    out = c.on_undecodable("short datagram (12 bytes)", "192.0.2.9", Net.MGMT)
    assert out[0].text == ("malformed message from 192.0.2.9 from Mgmnt network (short "
                           "datagram (12 bytes)) ; dropping")
    assert {a.kind for a in out} == {"noise"} and c.counters.rx_bad == 2


# -- who may command (README, Security) ----------------------------------------------------------

@pytest.mark.parametrize("src, net, tagged, carried_out", [
    (CTL, Net.MGMT, False, True),               # controller-0's mgmt address
    ("10.0.0.1", Net.MGMT, False, True),        # the floating `controller`
    ("10.1.0.4", Net.CLSTR, False, True),       # controller-0-cluster-host
    ("10.1.0.4", Net.MGMT, False, False),       # a cluster-host address is not trusted on mgmt
    ("192.0.2.66", Net.MGMT, False, False),     # a stranger
    ("192.0.2.66", Net.MGMT, True, True),       # a stranger with a valid tag (moved controller)
    (OWN, Net.MGMT, False, False),              # this host's own address: any local process
    ("10.2.0.6", Net.PXEBOOT, False, False),    # pxeboot: nothing learned yet
])
def test_a_reboot_is_carried_out_only_from_a_trusted_source(src, net, tagged, carried_out):
    c = core()
    out = c.on_command(cmd(Cmd.REBOOT), src, net, tagged, 1.0, Facts())
    assert any(isinstance(a, RunAction) for a in out) == carried_out
    if not carried_out:
        assert out == [Log("warning", f"reboot command from {src} on {net.iface} network "
                                      f"refused: not a controller address", "noise",
                           ("refused", net))]
        assert c.counters.refused == 1


def texts(out) -> list[str]:
    return [a.text for a in out if isinstance(a, Log)]


def test_pxeboot_trust_is_first_use_then_follows_only_a_silent_controller_pair():
    """The first mtcAlive request over pxeboot teaches (trust on first use); a second source
    is answered but not followed while the known controllers keep asking (docs/contract.md §8), and
    followed once they have been silent for TRUST_STALE_S (a readdressed pair)."""
    c = core(now=0.0)
    info = alive.pxeboot_info("10.2.0.6", "10.2.0.6", "10.2.0.7")
    c.on_command(cmd(Cmd.REQ_MTCALIVE, data=info), "10.2.0.6", Net.PXEBOOT, False, 1.0, Facts())
    assert c.sources.pxeboot == {"10.2.0.6", "10.2.0.7"}
    assert any(isinstance(a, RunAction) for a in c.on_command(
        cmd(Cmd.REBOOT), "10.2.0.7", Net.PXEBOOT, False, 2.0, Facts())), "controller-1 trusted"
    rogue = alive.pxeboot_info("10.9.9.9", "10.9.9.9", "10.9.9.8")
    stale = client_trust.TRUST_STALE_S
    out = c.on_command(cmd(Cmd.REQ_MTCALIVE, data=rogue), "10.9.9.9", Net.PXEBOOT, False,
                       1.0 + stale - 1, Facts())
    assert out[-1] == c.send_pxeboot() and "pxebootInfo from 10.9.9.9 on Pxeboot " \
        "network not taken: not a controller address" in texts(out)
    assert c.ctrl_pxeboot["controller-0"] == "10.2.0.6" and c.counters.refused == 1
    # The known pair asks again: the clock of trust restarts.
    c.on_command(cmd(Cmd.REQ_MTCALIVE, data=info), "10.2.0.6", Net.PXEBOOT, False, 100.0,
                 Facts())
    out = c.on_command(cmd(Cmd.REQ_MTCALIVE, data=rogue), "10.9.9.9", Net.PXEBOOT, False,
                       100.0 + stale - 1, Facts())
    assert any("not taken" in t for t in texts(out))
    out = c.on_command(cmd(Cmd.REQ_MTCALIVE, data=rogue), "10.9.9.9", Net.PXEBOOT, False,
                       100.0 + stale + 1, Facts())
    assert any("following it" in t for t in texts(out)) and out[-1] == c.send_pxeboot()
    assert c.sources.pxeboot == {"10.9.9.9", "10.9.9.8"}
    # Only a request teaches: a stale pair does not open the door to other commands.
    c2 = core()
    assert not any(isinstance(a, RunAction) for a in c2.on_command(
        cmd(Cmd.REBOOT), "10.9.9.9", Net.PXEBOOT, False, 10 * stale, Facts()))


# -- pxeboot: slots, confirmed addresses (docs/contract.md §8, issue 23 items 13 and 16) --------

P0, P1, STRANGER = "10.2.0.6", "10.2.0.7", "192.0.2.66"


def request(c, info, src, net=Net.PXEBOOT, now=1.0, tagged=False):
    """An mtcAlive request carrying pxebootInfo `info` (controller, controller-0, -1)."""
    return c.on_command(cmd(Cmd.REQ_MTCALIVE, data=alive.pxeboot_info(*info)), src, net,
                        tagged, now, Facts())


def carried_out(c, code, src, now=2.0, net=Net.PXEBOOT) -> bool:
    return any(isinstance(a, RunAction) for a in c.on_command(cmd(code), src, net, False, now,
                                                                Facts()))


def test_a_request_naming_an_empty_slot_is_taken_at_once():
    """Issue 23 item 13, docs/contract.md §8: after a pxebootInfo without controller-1, a request
    from controller-1's pxeboot address with the full pxebootInfo (a swact to it, a C agent)
    fills the empty slot at once: pxeboot mtcAlive go to it now. Filling a slot makes nobody
    trusted (a stranger could fill it too, issue 23 attack): the filled `controller` slot and
    pxeboot commands follow it once no request has come from the old active controller for
    TRUST_STALE_S (a standby C agent sends none)."""
    c = core()
    request(c, (P0, P0, ""), P0)
    out = request(c, (P1, P0, P1), P1, now=2.0)
    assert out[-1] == c.send_pxeboot()
    assert c.ctrl_pxeboot == {"controller": P0, "controller-0": P0, "controller-1": P1}
    assert c.counters.refused == 1, "the filled controller slot is not replaced yet"
    assert not carried_out(c, Cmd.REBOOT, P1, now=3.0)
    assert carried_out(c, Cmd.REBOOT, P0, now=3.0)
    later = 1.0 + TRUST_STALE_S + 0.1
    request(c, (P1, P0, P1), P1, now=later)
    assert c.ctrl_pxeboot == {"controller": P1, "controller-0": P0, "controller-1": P1}
    assert carried_out(c, Cmd.REBOOT, P1, now=later + 1)


def test_a_stranger_filling_an_empty_slot_gains_nothing_before_any_confirmation():
    """docs/contract.md §8 (keys off, no confirmed pxebootInfo yet: the original's rule, trust
    on the first request): attack from the issue 23 review. A C agent is trusted first; a
    stranger's request names itself in every slot: it fills the empty controller-1 slot only
    (pxeboot mtcAlive copies go to it), is trusted for nothing, cannot replace the C agent's
    slots even by sending again and again (its requests never reset the 3-minute clock), and
    the C agent's next request, naming controller-1 empty, clears the stranger's fill."""
    c = core()
    request(c, (P0, P0, ""), P0)
    for i in range(12):
        out = request(c, (STRANGER, STRANGER, STRANGER), STRANGER, now=2.0 + i * 50)
        assert out[-1] == c.send_pxeboot(), "answered"
        assert c.ctrl_pxeboot == {"controller": P0, "controller-0": P0,
                                  "controller-1": STRANGER}
        assert not carried_out(c, Cmd.REBOOT, STRANGER, now=2.5 + i * 50)
        if i % 3 == 0:
            request(c, (P0, P0, ""), P0, now=3.0 + i * 50)      # the C agent, every minute
            assert c.ctrl_pxeboot["controller-1"] == ""
            assert carried_out(c, Cmd.REBOOT, P0, now=3.5 + i * 50)


def test_a_pxebootinfo_over_mgmt_from_a_controller_confirms_and_is_kept():
    """Issue 23 item 16, docs/contract.md §8: an mtcAlive request with pxebootInfo over mgmt (or
    cluster-host) from an address the client takes commands from there confirms the addresses
    it names; the client answers nothing on mgmt (a C client ignores it too) and asks for the
    set to be kept in persist_dir. Over mgmt from a stranger, or naming nothing, it does not."""
    c = core()
    assert [a.text for a in request(c, ("", "", ""), CTL, net=Net.MGMT)] == [
        "mtcAlive request received from Mgmnt network"]
    assert c.confirmed is None
    out = request(c, (P0, P0, P1), STRANGER, net=Net.MGMT)
    assert "refused" in out[0].text and c.confirmed is None
    out = request(c, (P0, P0, P1), CTL, net=Net.MGMT)
    assert not any(isinstance(a, (SendAck, SendAlive)) for a in out)
    assert SaveConfirmed({"controller": P0, "controller-0": P0, "controller-1": P1}) in out
    assert c.confirmed == {"controller": P0, "controller-0": P0, "controller-1": P1}
    assert request(c, (P0, P0, P1), "10.1.0.4", net=Net.CLSTR, now=2.0)[-1:] != [
        SaveConfirmed(c.confirmed)], "unchanged: nothing to keep again"
    out = request(c, (P1, P0, P1), "10.1.0.5", net=Net.CLSTR, now=3.0)   # controller-1's
    assert SaveConfirmed({"controller": P1, "controller-0": P0, "controller-1": P1}) in out


def test_once_confirmed_a_stranger_is_answered_but_cannot_command_over_pxeboot():
    """Issue 23 item 16, docs/contract.md §8: once confirmed, a stranger's mtcAlive request over
    pxeboot is answered (one pxeboot mtcAlive to the learned controllers), its pxebootInfo
    replaces no slot, and its reboot, reset, lazy reboot, wipedisk and locked are refused;
    the confirmed controllers' are carried out."""
    c = core()
    request(c, (P0, P0, P1), CTL, net=Net.MGMT)
    request(c, (P0, P0, P1), P0, now=1.5)
    out = request(c, (STRANGER,) * 3, STRANGER, now=2.0)
    assert out[-1] == c.send_pxeboot()
    assert [a.text for a in out if isinstance(a, Log) and a.key[0] == "refused"] == [
        f"pxebootInfo from {STRANGER} on Pxeboot network not taken: not a confirmed "
        f"controller address"]
    assert c.ctrl_pxeboot == {"controller": P0, "controller-0": P0, "controller-1": P1}
    for code in (Cmd.REBOOT, Cmd.RESET, Cmd.LAZY_REBOOT, Cmd.WIPEDISK, Cmd.LOCKED):
        assert not carried_out(c, code, STRANGER), code
    assert carried_out(c, Cmd.REBOOT, P1)


def test_once_confirmed_an_empty_slot_is_filled_by_anyone_but_trusts_no_one():
    """docs/contract.md §8: the pxebootInfo of any request fills an empty slot (the client then
    sends pxeboot mtcAlive there too); commands come only from confirmed addresses."""
    c = core()
    request(c, (P0, P0, ""), CTL, net=Net.MGMT)
    request(c, (STRANGER, STRANGER, STRANGER), STRANGER)        # every slot empty: all filled
    assert c.ctrl_pxeboot == dict.fromkeys(client_trust.PXEBOOT_KEYS, STRANGER)
    assert not carried_out(c, Cmd.REBOOT, STRANGER)
    out = request(c, (P0, P0, ""), P0, now=3.0)                # the agent's: replaces, and
    assert c.ctrl_pxeboot == {"controller": P0, "controller-0": P0, "controller-1": ""}
    assert f"controller-1 pxeboot address {STRANGER} is not a controller's ; cleared" in \
        texts(out), "a slot the controllers leave empty is emptied of a stranger's address"
    assert carried_out(c, Cmd.LOCKED, P0, now=4.0)


def test_confirmed_addresses_follow_a_silent_pair_only_through_mgmt():
    """The 180 s rule (docs/contract.md §8) counts a confirmed pxebootInfo over mgmt as a request
    from the controllers: a stranger's pxebootInfo replaces slots only after 180 s without
    either, and even then commands only from confirmed addresses are carried out."""
    c = core()
    request(c, (P0, P0, P1), CTL, net=Net.MGMT, now=1.0)
    request(c, (P0, P0, P1), P0, now=1.0)
    stale = client_trust.TRUST_STALE_S
    request(c, (P0, P0, P1), CTL, net=Net.MGMT, now=stale)     # only mgmt reaches the client
    request(c, (STRANGER,) * 3, STRANGER, now=stale + 10)
    assert c.ctrl_pxeboot["controller-0"] == P0
    out = request(c, (STRANGER,) * 3, STRANGER, now=2 * stale + 1)
    assert any("following it" in t for t in texts(out))
    assert c.ctrl_pxeboot["controller-0"] == STRANGER
    assert not carried_out(c, Cmd.REBOOT, STRANGER, now=2 * stale + 2)


def test_a_kept_set_is_loaded_and_a_bad_one_refuses_until_confirmed_again():
    """A restart reopens nothing: the kept set is loaded before any datagram; a file that
    could not be read is taken as confirmed with no address (fail closed), until the agent
    confirms its addresses again (an mtce agent answers the start-up ready event)."""
    c = core()
    c.load_confirmed({"controller": P0, "controller-0": P0, "controller-1": P1})
    request(c, (STRANGER,) * 3, STRANGER)                      # first request after start
    assert not carried_out(c, Cmd.REBOOT, STRANGER)
    bad = core()
    bad.load_confirmed({})
    request(bad, (P0, P0, P1), P0)
    assert not carried_out(bad, Cmd.REBOOT, P0)
    request(bad, (P0, P0, P1), CTL, net=Net.MGMT, now=2.0)
    assert carried_out(bad, Cmd.REBOOT, P0, now=3.0)


# -- learning the controllers' pxeboot addresses (docs/protocol.md §5.2) -------------------------

@pytest.mark.parametrize("data", ["not json", '{"other":{}}', '{"pxebootInfo":"x"}', "{" * 500])
def test_a_bad_pxeboot_info_teaches_nothing_and_is_noise(data):
    c = core()
    c.ctrl_pxeboot = {"controller": "10.2.0.6", "controller-0": "10.2.0.6",
                      "controller-1": "10.2.0.7"}
    before = dict(c.ctrl_pxeboot)
    out = c.on_command(cmd(Cmd.REQ_MTCALIVE, data=data), "10.2.0.6", Net.PXEBOOT, False, 1.0,
                       Facts())
    assert c.ctrl_pxeboot == before
    errors = [a for a in out if isinstance(a, Log) and a.level == "error"]
    assert len(errors) == 1 and errors[0].kind == "noise"


def test_only_ack_forms_the_table_knows():
    assert {row.ack for row in client_core.COMMANDS.values()} == set(Ack)
