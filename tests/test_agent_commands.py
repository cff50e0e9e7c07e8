"""agent_commands.py, the operator commands' retry rule, on a fake timeline (issue 23 items 3, 22).

docs/protocol.md §5.4 and §8 (`MTC_CMD_RSP_TIMEOUT` 10 s, 5 attempts): a command is sent
again every 10 s until the host ACKs on any network, 5 attempts at most; then it is given up.
Each edge is tested at the exact instant and just before it. The waiters (`mtce ... --wait`,
docs/contract.md §1) get one outcome each: ACKed (with the networks), gave up, timed out, forgotten.
"""

from __future__ import annotations

import pytest

from mtce.agent_commands import (ACK_FORGET_S, ACKED, CMD_ATTEMPTS, CMD_RETRY_S, FORGOTTEN, GAVE_UP,
                                 REPLACED, TIMEOUT, Commands)
from mtce.states import Cmd, Net

T0 = 1000.0
EPS = 1e-6


def started(cmd=Cmd.REBOOT, host="worker-1"):
    c = Commands()
    attempt, outcomes = c.start(host, cmd, 0, (), T0)
    assert (attempt.attempt, outcomes) == (1, [])
    return c


def test_the_rule_is_the_originals():
    """docs/protocol.md §8: 10 s for an ACK, 5 attempts (`RESET_PROG_MAX_REBOOTS_B4_RESET`)."""
    assert (CMD_RETRY_S, CMD_ATTEMPTS, ACK_FORGET_S) == (10.0, 5, 1.0)


# -- no ACK: every 10 s, then given up after the fifth ----------------------------------------

@pytest.mark.parametrize("k", range(1, CMD_ATTEMPTS))
def test_without_an_ack_attempt_k_plus_1_is_at_exactly_k_times_10_s(k):
    c = started()
    for i in range(1, k):
        assert [a.attempt for a in c.due(T0 + i * CMD_RETRY_S).attempts] == [i + 1]
    before = c.due(T0 + k * CMD_RETRY_S - EPS)
    assert (before.attempts, before.lines, before.outcomes) == ([], [], [])
    assert c.next_deadline() == T0 + k * CMD_RETRY_S
    now = c.due(T0 + k * CMD_RETRY_S)
    assert [(a.host, a.cmd, a.attempt) for a in now.attempts] == [("worker-1", Cmd.REBOOT,
                                                                   k + 1)]
    assert now.lines == []


def test_without_an_ack_it_is_given_up_10_s_after_the_fifth_attempt():
    c = started()
    for i in range(1, CMD_ATTEMPTS):
        c.due(T0 + i * CMD_RETRY_S)
    end = T0 + CMD_ATTEMPTS * CMD_RETRY_S
    assert c.due(end - EPS).lines == [] and c.pending
    last = c.due(end)
    assert last.attempts == []
    assert last.lines == ["worker-1 reboot request failed ; no ACK after 5 attempts"]
    assert not c.pending and c.next_deadline() == float("inf")
    assert c.counts == {"sent": 5, "acked": 0, "given_up": 1}
    # An ACK after the give-up is for nothing pending (the inbox logs it as noise).
    assert c.on_ack("worker-1", Cmd.REBOOT, Net.MGMT, end) == (False, [])


# -- an ACK on any network ends it --------------------------------------------------------------

@pytest.mark.parametrize("net", list(Net))
@pytest.mark.parametrize("ack_after", [0.0, CMD_RETRY_S - EPS, 4 * CMD_RETRY_S + 9.999])
def test_an_ack_on_any_network_ends_the_retries(net, ack_after):
    c = started()
    attempts = 1
    while T0 + attempts * CMD_RETRY_S <= T0 + ack_after:
        c.due(T0 + attempts * CMD_RETRY_S)
        attempts += 1
    ok, lines = c.on_ack("worker-1", Cmd.REBOOT, net, T0 + ack_after)
    assert ok and lines == [f"worker-1 reboot request ACK ({net.iface})",
                            f"worker-1 reboot request succeeded ({net.iface})"]
    assert c.next_deadline() == T0 + ack_after + ACK_FORGET_S
    gone = c.due(T0 + ack_after + ACK_FORGET_S)
    assert (gone.attempts, gone.lines) == ([], [])
    assert not c.pending
    assert c.counts == {"sent": attempts, "acked": 1, "given_up": 0}


def test_an_ack_at_the_instant_of_the_retry_comes_after_it_when_the_timer_ran_first():
    """The loop runs readers before timers; when the timer ran first the retry is sent and
    the ACK still ends the command."""
    c = started()
    assert [a.attempt for a in c.due(T0 + CMD_RETRY_S).attempts] == [2]
    assert c.on_ack("worker-1", Cmd.REBOOT, Net.CLSTR, T0 + CMD_RETRY_S)[0]
    assert c.due(T0 + 2 * CMD_RETRY_S).attempts == []


def test_the_other_networks_acks_join_for_one_second_then_it_is_forgotten():
    c = started()
    assert c.on_ack("worker-1", Cmd.REBOOT, Net.PXEBOOT, T0 + 0.2)[1][-1] == \
        "worker-1 reboot request succeeded (Pxeboot)"
    assert c.on_ack("worker-1", Cmd.REBOOT, Net.MGMT, T0 + 0.3) == \
        (True, ["worker-1 reboot request ACK (Mgmnt)"])
    assert c.on_ack("worker-1", Cmd.REBOOT, Net.MGMT, T0 + 0.4) == (False, []), "a repeat"
    assert c.due(T0 + 0.2 + ACK_FORGET_S - EPS).lines == [] and c.pending
    c.due(T0 + 0.2 + ACK_FORGET_S)
    assert c.on_ack("worker-1", Cmd.REBOOT, Net.CLSTR, T0 + 1.3) == (False, [])
    assert c.counts["acked"] == 1


@pytest.mark.parametrize("host, cmd", [("worker-2", Cmd.REBOOT), ("worker-1", Cmd.RESET),
                                       ("worker-1", Cmd.LOCKED)])
def test_an_ack_of_another_host_or_command_does_not_end_it(host, cmd):
    c = started()
    assert c.on_ack(host, cmd, Net.MGMT, T0 + 1) == (False, [])
    assert [a.attempt for a in c.due(T0 + CMD_RETRY_S).attempts] == [2]


# -- a new command for the same host ------------------------------------------------------------

def test_the_same_command_again_replaces_it_and_its_attempts_start_over():
    c = started()
    c.due(T0 + CMD_RETRY_S)                                     # attempt 2
    attempt, _ = c.start("worker-1", Cmd.REBOOT, 0, (), T0 + 15)
    assert attempt.attempt == 1 and len(c.pending) == 1
    assert c.due(T0 + 20).attempts == [], "the old one's retry is gone"
    assert [a.attempt for a in c.due(T0 + 25).attempts] == [2]
    for i in range(2, CMD_ATTEMPTS):
        c.due(T0 + 15 + i * CMD_RETRY_S)
    assert c.due(T0 + 15 + CMD_ATTEMPTS * CMD_RETRY_S - EPS).lines == []
    assert c.due(T0 + 15 + CMD_ATTEMPTS * CMD_RETRY_S).lines[0].endswith("after 5 attempts")


def test_another_command_for_the_same_host_runs_beside_it():
    c = started(Cmd.REBOOT)
    c.start("worker-1", Cmd.RESET, 0, (), T0 + 1)
    assert c.on_ack("worker-1", Cmd.RESET, Net.MGMT, T0 + 2)[0]
    due = c.due(T0 + CMD_RETRY_S)
    assert [(a.cmd, a.attempt) for a in due.attempts] == [(Cmd.REBOOT, 2)]


def test_forget_host_drops_its_commands():
    c = started()
    c.start("worker-2", Cmd.REBOOT, 0, (), T0)
    assert c.forget_host("worker-1") == []
    assert [a.host for a in c.due(T0 + CMD_RETRY_S).attempts] == ["worker-2"]


# -- the waiters (`--wait`) ------------------------------------------------------------------

def test_a_waiter_gets_the_networks_that_acked_when_the_command_is_done():
    c = started()
    w = c.watch("worker-1", Cmd.REBOOT, T0, 60)
    c.on_ack("worker-1", Cmd.REBOOT, Net.PXEBOOT, T0 + 0.1)
    c.on_ack("worker-1", Cmd.REBOOT, Net.MGMT, T0 + 0.2)
    assert c.due(T0 + 1.1 - EPS).outcomes == []
    [out] = c.due(T0 + 1.1).outcomes
    assert (out.watch, out.result, out.ok, out.nets) == (w, ACKED, True,
                                                         (Net.PXEBOOT, Net.MGMT))
    assert out.text() == "worker-1 reboot ACKed on pxeboot,mgmt"
    assert c.due(T0 + 60).outcomes == [] and c.next_deadline() == float("inf")


def test_a_waiter_of_an_offline_host_hears_the_give_up_at_50_s():
    c = started()
    w = c.watch("worker-1", Cmd.REBOOT, T0, 60)
    for i in range(1, CMD_ATTEMPTS):
        assert c.due(T0 + i * CMD_RETRY_S).outcomes == []
    assert c.due(T0 + 50 - EPS).outcomes == []
    [out] = c.due(T0 + 50).outcomes
    assert (out.watch, out.result, out.ok, out.attempts) == (w, GAVE_UP, False, 5)
    assert out.text() == "worker-1 reboot: no ACK after 5 attempts (gave up)"


def test_a_waiter_times_out_at_its_own_deadline_and_the_command_goes_on():
    c = started()
    w = c.watch("worker-1", Cmd.REBOOT, T0, 5)
    assert c.next_deadline() == T0 + 5
    assert c.due(T0 + 5 - EPS).outcomes == []
    [out] = c.due(T0 + 5).outcomes
    assert (out.watch, out.result, out.ok) == (w, TIMEOUT, False)
    assert out.text() == "worker-1 reboot: no ACK within 5 s (attempt 1 of 5 ; the agent " \
                         "keeps trying)"
    assert [a.attempt for a in c.due(T0 + CMD_RETRY_S).attempts] == [2]


def test_a_waiter_whose_deadline_falls_between_the_ack_and_the_forget_has_the_ack():
    c = started()
    c.watch("worker-1", Cmd.REBOOT, T0, 3)
    c.on_ack("worker-1", Cmd.REBOOT, Net.CLSTR, T0 + 2.5)
    [out] = c.due(T0 + 3).outcomes
    assert out.ok and out.nets == (Net.CLSTR,)


def test_an_unwatched_waiter_hears_nothing():
    c = started()
    w = c.watch("worker-1", Cmd.REBOOT, T0, 5)
    c.unwatch(w)
    c.unwatch(w)                                # twice: nothing
    assert c.due(T0 + 5).outcomes == [] and c.next_deadline() == T0 + CMD_RETRY_S


def test_a_waiter_joins_the_command_that_replaces_its_own():
    c = started()
    w = c.watch("worker-1", Cmd.REBOOT, T0, 60)
    assert c.start("worker-1", Cmd.REBOOT, 0, (), T0 + 3)[1] == []
    c.on_ack("worker-1", Cmd.REBOOT, Net.MGMT, T0 + 4)
    [out] = c.due(T0 + 5).outcomes
    assert (out.watch, out.ok) == (w, True)


def test_a_command_repeated_after_its_ack_tells_the_first_waiter_it_was_acked():
    c = started()
    w = c.watch("worker-1", Cmd.REBOOT, T0, 60)
    c.on_ack("worker-1", Cmd.REBOOT, Net.MGMT, T0 + 0.5)
    _, outcomes = c.start("worker-1", Cmd.REBOOT, 0, (), T0 + 0.7)
    assert [(o.watch, o.ok, o.nets) for o in outcomes] == [(w, True, (Net.MGMT,))]
    assert c.due(T0 + 60).outcomes == []


def test_a_host_that_leaves_the_inventory_ends_its_waiters():
    c = started()
    w = c.watch("worker-1", Cmd.REBOOT, T0, 60)
    [out] = c.forget_host("worker-1")
    assert (out.watch, out.result, out.ok) == (w, FORGOTTEN, False)
    assert "left the inventory" in out.text()


@pytest.mark.parametrize("cmd, word", [(Cmd.LOCKED, "lock"), (Cmd.UNLOCKED, "unlock"),
                                       (Cmd.RESET, "reset"), (Cmd.LAZY_REBOOT, "lazy reboot")])
def test_the_outcome_names_the_operators_command(cmd, word):
    c = started(cmd)
    c.watch("worker-1", cmd, T0, 60)
    c.on_ack("worker-1", cmd, Net.MGMT, T0 + 1)
    [out] = c.due(T0 + 2).outcomes
    assert out.text() == f"worker-1 {word} ACKed on mgmt"


def test_alive_is_answered_by_the_hosts_pxeboot_mtcalive_not_by_an_ack():
    """docs/protocol.md §2: a client does not ACK an mtcAlive request; it answers it with a
    pxeboot mtcAlive. An ACK of code 6 (which no client sends) answers nothing."""
    c = started(Cmd.REQ_MTCALIVE)
    c.watch("worker-1", Cmd.REQ_MTCALIVE, T0, 60)
    assert c.on_ack("worker-1", Cmd.REQ_MTCALIVE, Net.PXEBOOT, T0 + 0.1) == (False, [])
    assert c.on_answer("worker-1", Net.MGMT, T0 + 0.1) == (False, [])
    assert c.on_answer("worker-1", Net.PXEBOOT, T0 + 0.2) == \
        (True, ["worker-1 mtcAlive request answered (Pxeboot)"])
    [out] = c.due(T0 + 1.2).outcomes
    assert out.text() == "worker-1 alive answered on pxeboot"


def test_alive_without_an_answer_is_given_up_like_the_others():
    c = started(Cmd.REQ_MTCALIVE)
    c.watch("worker-1", Cmd.REQ_MTCALIVE, T0, 60)
    for i in range(1, CMD_ATTEMPTS):
        c.due(T0 + i * CMD_RETRY_S)
    last = c.due(T0 + 50)
    assert last.lines == ["worker-1 mtcAlive request failed ; no pxeboot mtcAlive after 5 "
                          "attempts"]
    assert last.outcomes[0].text() == "worker-1 alive: no pxeboot mtcAlive after 5 attempts " \
                                      "(gave up)"


@pytest.mark.parametrize("first, then", [(Cmd.LOCKED, Cmd.UNLOCKED), (Cmd.UNLOCKED, Cmd.LOCKED)])
def test_a_lock_replaced_by_an_unlock_is_sent_no_more(first, then):
    """docs/protocol.md §5.4 (operator commands): `mtce lock` then `mtce unlock` of a host
    that has not ACKed the lock yet: the lock is not sent again after the unlock (a late
    LOCKED would lock a host the operator just unlocked); its waiter is told it was replaced.
    Found in the issue 23 review."""
    c = started(first)
    watch = c.watch("worker-1", first, T0, 60.0)
    attempt, outcomes = c.start("worker-1", then, 0, (), T0 + 3)
    assert attempt.cmd == then
    assert [(o.watch, o.result) for o in outcomes] == [(watch, REPLACED)]
    assert "replaced by a later" in outcomes[0].text()
    sent = [a.cmd for i in range(1, 2 * CMD_ATTEMPTS)
            for a in c.due(T0 + 3 + i * CMD_RETRY_S).attempts]
    assert sent and set(sent) == {then}
