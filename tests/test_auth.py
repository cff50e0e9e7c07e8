"""Message authentication: the trailer, key rotation, freshness and replays."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest

from mtce import alive, auth
from mtce.clock import FakeClock
from mtce.states import Cmd, Net

K1 = ("k1", bytes(range(32)))
K2 = ("k2", bytes(range(32, 72)))
IDENT = alive.Identity("worker-0", "worker", "10.0.2.30", "10.0.0.30", "", "08:00:27:00:00:01")


def make(keys, require=True, clock=None):
    clock = clock or FakeClock(wall_start=1_800_000_000.0)
    return auth.Authenticator(keys, require, clock.wall, clock.now), clock


def test_trailer_layout_and_hmac_input_as_the_contract_says():
    a, clock = make([K1])
    payload = alive.mtcalive(IDENT, Net.MGMT, 5)
    signed = a.sign(payload)
    assert signed.startswith(payload) and signed.endswith(b"\0")
    trailer = signed[len(payload):-1].decode()
    magic, kid, ms, tag = trailer.split(" ")
    assert (magic, kid, int(ms)) == ("MTCA1", "k1", int(clock.wall() * 1000))
    expect = hmac.new(K1[1], payload + f"k1 {ms}".encode(), hashlib.sha256).hexdigest()
    assert tag == expect
    # A C peer reads the original message: the text ends at the first NUL.
    assert alive.decode(signed).json()["sequence"] == 5


def test_an_ack_is_tagged_after_its_100_bytes():
    a, _ = make([K1])
    ack = alive.ack(alive.decode(alive.command(Cmd.LOCKED, "08:00:27:00:00:01", "{}")))
    signed = a.sign(ack)
    assert signed[100:106] == b"MTCA1 "
    payload, trailer = auth.split(signed)
    assert payload == ack and trailer.startswith(b"MTCA1 ")
    b, _ = make([K1])
    b._seen, b.wall = {}, a.wall
    assert b.check(signed) == (ack, None)


def test_verify_accepts_once_then_refuses_the_replay():
    a, clock = make([K1])
    signed = a.sign(alive.mtcalive(IDENT, Net.MGMT, 5))
    assert a.check(signed)[1] is None
    assert a.check(signed) == (None, "replayed (already accepted)")
    assert a.counters["replayed"] == 1


@pytest.mark.parametrize("offset,ok", [(-29.9, True), (29.9, True), (-31, False), (31, False)])
def test_freshness_window(offset, ok):
    sender, clock = make([K1])
    receiver = auth.Authenticator([K1], True, lambda: clock.wall() + offset, clock.now)
    clock.advance(31)                   # running since before the sender's time (a restart)
    got, why = receiver.check(sender.sign(alive.ready_event("w", "")))
    assert (got is not None) is ok, why


def test_wrong_key_unknown_key_truncated_and_flipped_tags_are_refused():
    a, clock = make([K1])
    other = auth.Authenticator([("k1", bytes(32))], True, clock.wall, clock.now)
    data = alive.mtcalive(IDENT, Net.MGMT, 9)
    assert other.check(a.sign(data))[1] == "authentication tag does not verify"
    stranger = auth.Authenticator([K2], True, clock.wall, clock.now)
    assert stranger.check(a.sign(data))[1] == "unknown key id 'k1'"
    signed = a.sign(data)
    assert a.check(signed[:-10])[1] == "malformed authentication tag"
    flipped = bytearray(signed)
    flipped[120] ^= 0x01                      # one bit of the JSON
    assert a.check(bytes(flipped))[1] == "authentication tag does not verify"


def test_require_no_accepts_untagged_but_never_a_bad_tag():
    a, clock = make([K1], require=False)
    data = alive.mtcalive(IDENT, Net.MGMT, 1)
    assert a.check(data) == (data, None)
    strict, _ = make([K1], require=True, clock=clock)
    assert strict.check(data) == (None, "no authentication tag")
    bad = bytearray(a.sign(data))
    bad[-5] = ord("0") if bad[-5] != ord("0") else ord("1")
    assert a.check(bytes(bad))[0] is None


def test_key_rollover_in_steps():
    """new key added second everywhere, then first everywhere, then the old one dropped."""
    clock = FakeClock()
    old = auth.Authenticator([K1], True, clock.wall, clock.now)
    step1 = auth.Authenticator([K1, K2], True, clock.wall, clock.now)      # verifies both, signs k1
    step2 = auth.Authenticator([K2, K1], True, clock.wall, clock.now)      # signs k2
    step3 = auth.Authenticator([K2], True, clock.wall, clock.now)
    data = alive.ready_event("w", "")
    for signer, verifier in ((old, step1), (step1, old), (step2, step1), (step1, step2),
                             (step2, step3), (step3, step2)):
        clock.advance(0.01)
        assert verifier.check(signer.sign(data))[1] is None
    assert step3.check(old.sign(data))[1] == "unknown key id 'k1'"


def test_replay_memory_is_bounded_and_forgets_only_what_is_stale():
    clock = FakeClock()
    a = auth.Authenticator([K1], True, clock.wall, clock.now, max_remembered=100)
    for i in range(300):
        clock.advance(0.001)
        a.check(a.sign(alive.mtcalive(IDENT, Net.MGMT, i)))
    assert len(a._seen) == 100
    clock.advance(61)
    a.check(a.sign(alive.mtcalive(IDENT, Net.MGMT, 1)))
    assert len(a._seen) == 1


@pytest.mark.parametrize("text,line,why", [
    ("k1 00112233", 1, "32 or more"), ("# c\nk1 zz" + "0" * 64, 2, "not hexadecimal"),
    ("k1 " + "00" * 32 + "\nk1 " + "11" * 32, 2, "appears twice"), ("", None, "no keys"),
    ("bad id " + "00" * 32, 1, "expected"), ("k/1 " + "00" * 32, 1, "key id"),
])
def test_key_file_errors(text, line, why):
    with pytest.raises(auth.KeyFileError) as err:
        auth.parse_keys(text)
    assert err.value.line == line and why in err.value.why


def test_key_file_from_config_names_the_file_and_warns_about_its_mode(tmp_path):
    from mtce import config
    keys = tmp_path / "keys"
    keys.write_text("k1 " + "ab" * 32 + "\n")
    keys.chmod(0o644)
    ini = tmp_path / "mtc.ini"
    ini.write_text(f"[security]\nkey_file = {keys}\nrequire = yes\n")
    a, warnings = auth.from_config(config.load(str(ini)), lambda: 0.0, lambda: 0.0)
    assert a.require and a.keys[0][0] == "k1"
    assert warnings and "chmod 600" in warnings[0]
    keys.write_text("k1 abcd\n")
    with pytest.raises(config.ConfigError) as err:
        auth.from_config(config.load(str(ini)), lambda: 0.0, lambda: 0.0)
    assert str(err.value).startswith(f"{keys}:1: ")


# -- the wall clock stepping (issue 23 item 20; docs/protocol.md, message authentication) --------

class SteppingClock(FakeClock):
    """A fake clock whose wall time can jump (NTP, a VM restore) while monotonic time does not."""

    def step_wall(self, seconds: float) -> None:
        self._wall_offset += seconds


def pair(clock, **kw):
    """A signer and a receiver on one clock (wall for times, monotonic for memory)."""
    return (auth.Authenticator([K1], True, clock.wall, clock.now, **kw),
            auth.Authenticator([K1], True, clock.wall, clock.now, **kw))


def stamp(signed: bytes) -> int:
    return int(auth.split(signed)[1].split(b" ")[2])


def test_the_replay_memory_stays_bounded_when_the_clock_steps_back():
    """docs/contract.md §3 (replays): at a steady rate the memory holds about one freshness window
    (2 x 30 s) of tags, and keeps doing so after the wall clock steps back an hour (before:
    nothing older than the step was ever pruned again; tens of MB an hour at 2,000 hosts)."""
    clock = SteppingClock()
    signer, receiver = pair(clock)
    rate, seq = 50, 0                         # tags a second
    window = 2 * auth.FRESH_S * rate
    for phase in ("steady", "stepped back"):
        if phase == "stepped back":
            clock.step_wall(-3600)
        for _ in range(int(180 * rate)):
            clock.advance(1 / rate)
            seq += 1
            assert receiver.check(signer.sign(alive.mtcalive(IDENT, Net.MGMT, seq)))[1] is None
        assert len(receiver._seen) <= window + rate, phase
        assert len(signer._signed_order) <= 2 * rate, phase


def test_the_replay_memory_stays_bounded_when_the_clock_steps_forward_and_back_again():
    clock = SteppingClock()
    signer, receiver = pair(clock)
    for i in range(1, 4001):
        clock.advance(0.05)
        if i % 1000 == 0:
            clock.step_wall(3600 if i % 2000 else -3600)
        assert receiver.check(signer.sign(alive.mtcalive(IDENT, Net.MGMT, i)))[1] is None
    assert len(receiver._seen) <= 2 * auth.FRESH_S / 0.05 + 20


def test_a_payload_signed_again_after_the_clock_steps_back_carries_the_current_time():
    """Never stamp ahead of now: before, the same bytes signed again after a step back of an
    hour were stamped just after their last signing, an hour ahead, and dropped as stale."""
    clock = SteppingClock()
    signer, receiver = pair(clock)
    data = alive.ready_event("worker-0", "")
    assert receiver.check(signer.sign(data))[1] is None
    clock.step_wall(-3600)
    clock.advance(0.5)
    again = signer.sign(data)
    assert stamp(again) == int(clock.wall() * 1000)
    assert receiver.check(again)[1] is None


def test_identical_bytes_in_one_millisecond_get_distinct_times_none_ahead_of_now():
    clock = SteppingClock()
    signer, receiver = pair(clock)
    data = alive.ready_event("worker-0", "")
    signed = [signer.sign(data) for _ in range(5)]
    now_ms = int(clock.wall() * 1000)
    assert len({stamp(s) for s in signed}) == 5
    assert all(now_ms - 5 < stamp(s) <= now_ms for s in signed)
    assert [receiver.check(s)[1] for s in signed] == [None] * 5


@pytest.mark.parametrize("step_s", [-50.0, -29.0, 0.0, 10.0])
def test_a_replay_is_refused_for_as_long_as_its_time_is_fresh_whatever_the_clock_did(step_s):
    """A tag accepted once is refused while its time is within 30 s of the receiver's clock:
    here the receiver's wall clock steps by `step_s` 55 s after the first acceptance, which
    can make a 55 s old tag fresh again; it is still refused as a replay, at the window's
    edges, then forgotten once it is stale."""
    clock = SteppingClock()
    signer, receiver = pair(clock)
    first = signer.sign(alive.mtcalive(IDENT, Net.MGMT, 1))
    t0 = stamp(first)
    assert receiver.check(first)[1] is None
    other = 2
    for advance in (29.9, 25.1):
        clock.advance(advance)
        receiver.check(signer.sign(alive.mtcalive(IDENT, Net.MGMT, other)))   # prunes
        other += 1
    clock.step_wall(step_s)
    for _ in range(40):                           # 40 s more, one tag a second
        clock.advance(1.0)
        receiver.check(signer.sign(alive.mtcalive(IDENT, Net.MGMT, other)))
        other += 1
        age_ms = int(clock.wall() * 1000) - t0
        why = receiver.check(first)[1]
        if abs(age_ms) <= auth.FRESH_S * 1000:
            assert why == "replayed (already accepted)" or "already seen and forgotten" in why, \
                (age_ms, why)
        else:
            assert why is not None and why.startswith("time "), (age_ms, why)
    assert receiver.counters["accepted"] == other - 1


def test_the_replay_memory_has_a_hard_cap_whatever_the_clock_does():
    clock = SteppingClock()
    signer, receiver = pair(clock, max_remembered=500)
    for i in range(2000):
        clock.advance(0.001)
        receiver.check(signer.sign(alive.mtcalive(IDENT, Net.MGMT, i)))
    assert len(receiver._seen) == 500
    assert receiver.counters["forgotten_early"] == 1500


# -- issue 23 item 20, the attack: a tag accepted once is never accepted again -------------------
# docs/contract.md §3: a receiver drops a (key-id, time, HMAC) it has already accepted, whatever
# its wall clock does since (an attacker replayed a captured REBOOT once the tag had been pruned
# and the client's clock had stepped back 64 s: `reboot` ran twice in one process).

class MsClock:
    """Wall and monotonic clocks in whole milliseconds, exact at the edges of the window: the
    wall clock steps (NTP, a VM restore), the monotonic one only goes on."""

    def __init__(self, wall_ms: int = 1_800_000_000_000, mono_ms: int = 5_000_000):
        self.wall_ms, self.mono_ms = wall_ms, mono_ms

    def wall(self) -> float:
        return (self.wall_ms + 0.5) / 1000          # int(wall() * 1000) == wall_ms

    def mono(self) -> float:
        return self.mono_ms / 1000

    def advance(self, ms: int) -> None:
        self.wall_ms += ms
        self.mono_ms += ms

    def step(self, ms: int) -> None:
        self.wall_ms += ms


def signed_at(payload: bytes, ms: int, key=K1) -> bytes:
    """`payload` with the trailer a peer stamping `ms` sends, built as docs/contract.md §3 says
    (not by mtce.auth)."""
    kid, secret = key
    mac = hmac.new(secret, payload + f"{kid} {ms}".encode(), hashlib.sha256).hexdigest()
    return payload + f"MTCA1 {kid} {ms} {mac}".encode() + b"\0"


REBOOT = alive.command(Cmd.REBOOT, "08:00:27:00:00:01", '{"address":"10.0.0.1"}')


def receiver(clk: MsClock, **kw) -> auth.Authenticator:
    return auth.Authenticator([K1], True, clk.wall, clk.mono, **kw)


def traffic(rx: auth.Authenticator, clk: MsClock, seconds: int, seq: int = 0,
            offset_ms: int = 0) -> int:
    """One signed mtcAlive a second for `seconds`, from a peer `offset_ms` off this clock: each
    is accepted (and each acceptance prunes what is stale)."""
    for _ in range(seconds):
        clk.advance(1000)
        seq += 1
        got, why = rx.check(signed_at(alive.mtcalive(IDENT, Net.MGMT, seq),
                                      clk.wall_ms + offset_ms))
        assert why is None, (seq, why)
    return seq


@pytest.mark.parametrize("wait_s", [31, 61, 65, 3600])
@pytest.mark.parametrize("age_ms", [-30_000, -29_999, -1, 0, 1, 29_999, 30_000])
def test_a_captured_command_replayed_after_the_clock_steps_back_past_its_pruning_is_refused(
        wait_s, age_ms):
    """docs/contract.md §3 (already accepted): a REBOOT accepted once; `wait_s` of traffic (its tag
    pruned as stale); then the receiver's wall clock steps back so that the captured tag is
    `age_ms` old again, from the edge of the 30 s window in the future to its edge in the
    past. The replay is refused every time (before: accepted once it had been pruned)."""
    clk = MsClock()
    rx = receiver(clk)
    clk.advance(1000)
    t0 = clk.wall_ms
    captured = signed_at(REBOOT, t0)
    assert rx.check(captured) == (REBOOT, None)
    traffic(rx, clk, wait_s)
    clk.step(t0 + age_ms - clk.wall_ms)
    payload, why = rx.check(captured)
    assert payload is None, f"replay accepted {wait_s} s later, the clock {age_ms} ms past it"
    assert why == "replayed (already accepted)" or why.startswith("time "), why


def test_after_a_step_back_only_the_times_already_seen_are_refused():
    """The cost of the rule above, and its limit: after a step back a daemon refuses the times
    it accepted and has forgotten (a replay of those cannot be told from a new tag) and only
    those: new traffic right after the step, and after it passed them again, is accepted."""
    clk = MsClock()
    rx = receiver(clk)
    seq = traffic(rx, clk, 120)                    # accepted: times t0+1 s .. t0+120 s
    t0 = clk.wall_ms - 120_000
    clk.step(-300_000)                             # five minutes back: t0-180 s
    seq = traffic(rx, clk, 150, seq)               # .. t0-30 s: all new, accepted
    refused = []
    for _ in range(150):                           # .. t0+120 s: seen before
        clk.advance(1000)
        seq += 1
        got, why = rx.check(signed_at(alive.mtcalive(IDENT, Net.MGMT, seq), clk.wall_ms))
        if got is None:
            refused.append((clk.wall_ms - t0) // 1000)
            assert why.startswith("time ") and "forgotten" in why, why
    # Tags of times up to 30 s before the step were forgotten (stale by then), the last 30 s
    # are still remembered one by one: only the forgotten ones are refused as a whole.
    assert refused and refused[0] >= 0 and refused[-1] <= 90, refused
    seq = traffic(rx, clk, 120, seq)               # past them: accepted again
    assert len(rx._seen) <= auth.FRESH_S + 1


@pytest.mark.parametrize("offset_ms", [-30_000, -29_999, 0, 29_999, 30_000])
def test_peers_within_the_window_are_never_refused_in_normal_operation(offset_ms):
    """docs/contract.md §3: a peer whose clock is off by up to 30 s (to the millisecond) is
    heard, hour after hour, and the memory stays about one window of its traffic."""
    clk = MsClock()
    rx = receiver(clk)
    clk.advance(31_000)                      # the peer's clock is past this daemon's start
    traffic(rx, clk, 1800, offset_ms=offset_ms)
    assert len(rx._seen) <= 2 * auth.FRESH_S + 1


def test_a_tag_from_the_future_does_not_hold_back_pruning():
    """One peer 30 s ahead, then a steady stream: the memory holds the last 30-60 s of tags
    (ordered by their times: the early one goes when it is stale, not before, not after)."""
    clk = MsClock()
    rx = receiver(clk)
    clk.advance(1000)
    ahead = signed_at(REBOOT, clk.wall_ms + 30_000)
    assert rx.check(ahead)[1] is None
    seq = 0
    for _ in range(200):                      # 50 a second for 200 s
        for _ in range(50):
            clk.advance(20)
            seq += 1
            assert rx.check(signed_at(alive.mtcalive(IDENT, Net.MGMT, seq), clk.wall_ms))[1] \
                is None
        assert len(rx._seen) <= 50 * (auth.FRESH_S + 1) + 1
    assert rx.check(ahead)[0] is None


def test_a_tag_forgotten_because_the_memory_is_full_is_still_refused():
    """The hard cap (a flood of valid tags): what it forgets is refused like a replay, and
    tags newer than what it forgot are accepted (before: forgotten and accepted again)."""
    clk = MsClock()
    rx = receiver(clk, max_remembered=100)
    clk.advance(1000)
    first = signed_at(REBOOT, clk.wall_ms)
    assert rx.check(first)[1] is None
    for seq in range(300):
        clk.advance(1)
        assert rx.check(signed_at(alive.mtcalive(IDENT, Net.MGMT, seq), clk.wall_ms))[1] is None
    assert len(rx._seen) == 100 and rx.counters["forgotten_early"] == 201
    assert rx.check(first)[0] is None
    assert rx.check(signed_at(REBOOT, clk.wall_ms))[1] is None


@pytest.mark.parametrize("step_s", [-3600, -64, 64, 3600])
def test_the_memory_is_bounded_whatever_the_clock_does(step_s):
    """Steps of the receiver's clock alone (its peers keep the right time) and of the whole
    cluster's, back and forth, for an hour at 10 tags a second: the remembered tags never
    exceed about two windows, the forgotten times never more than a few ranges."""
    clk = MsClock()
    rx = receiver(clk)
    peer_offset, seq = 0, 0
    for minute in range(60):
        if minute % 10 == 5:
            clk.step(step_s)
            if minute % 20 == 5:
                peer_offset -= step_s           # only this daemon's clock stepped
        elif minute % 10 == 0 and minute:
            clk.step(-step_s)
            peer_offset = 0
        for _ in range(60 * 10):
            clk.advance(100)
            seq += 1
            rx.check(signed_at(alive.mtcalive(IDENT, Net.MGMT, seq), clk.wall_ms + peer_offset))
            assert len(rx._seen) <= 10 * 2 * (auth.FRESH_S + 1), (minute, len(rx._seen))
    assert rx.counters["accepted"] > 30 * 60 * 10
    assert len(rx._forgotten_lo) <= auth.FORGOTTEN_RANGES


# -- the same daemon across a reload, and a new one after a restart ------------------------------

def test_a_reload_keeps_what_was_accepted_and_forgotten():
    """SIGHUP builds a new Authenticator (auth.from_config): transport.Wire.use carries the old
    memory over, the forgotten times and the start time included, also across a reload with
    keys off in between."""
    import logging

    from mtce import transport
    clk = MsClock()
    wire = transport.Wire(receiver(clk), [], logging.getLogger("test"), None,
                          transport.Counters())
    clk.advance(1000)
    captured = signed_at(REBOOT, clk.wall_ms)
    assert wire.auth.check(captured)[1] is None
    traffic(wire.auth, clk, 65)
    wire.use(receiver(clk))                          # a reload: new keys object
    clk.step(-65_000)
    assert wire.auth.check(captured)[0] is None
    wire.use(None)                                   # keys off ...
    wire.use(receiver(clk))                          # ... and on again
    assert wire.auth.check(captured)[0] is None
    # A peer 10 s behind is heard after a reload as before it (the start is the process's).
    assert wire.auth.check(signed_at(alive.ready_event("w", ""), clk.wall_ms - 10_000))[1] \
        is None


def test_a_restarted_daemon_refuses_what_was_signed_before_it_started():
    """docs/contract.md §3 across a restart (the attack's second doubt: a REBOOT replayed 4.8 s
    after capture to the restarted client ran `reboot` again): a tag signed before this
    process started cannot be a message meant for it (nothing sent before its sockets
    existed reached it), so it is refused; one signed from its start on is accepted."""
    clk = MsClock()
    old = receiver(clk)
    clk.advance(10_000)
    captured = signed_at(REBOOT, clk.wall_ms)
    assert old.check(captured)[1] is None
    clk.advance(2_500)                               # stopped, started again
    new = receiver(clk)
    start = clk.wall_ms
    clk.advance(2_300)
    payload, why = new.check(captured)
    assert payload is None and why.startswith("time ") and "started" in why, why
    from mtce import transport
    assert transport.auth_reason(why) == "stale"
    assert new.check(signed_at(REBOOT, start - auth.START_SLACK_MS - 1))[0] is None
    assert new.check(signed_at(REBOOT, start - auth.START_SLACK_MS))[1] is None
    assert new.check(signed_at(REBOOT, clk.wall_ms))[1] is None


def test_the_start_follows_the_clock_when_it_is_corrected():
    """A host that booted with its clock an hour ahead (an RTC in local time): once NTP steps
    it back, its peers' tags are accepted at once, not refused for an hour as 'before this
    daemon started'; what was signed before the start, by the corrected clock, still is."""
    clk = MsClock()
    clk.step(3_600_000)
    rx = receiver(clk)
    clk.advance(10_000)
    clk.step(-3_600_000)                              # right again
    started = clk.wall_ms - 10_000                    # by the corrected clock
    assert rx.check(signed_at(REBOOT, clk.wall_ms))[1] is None
    assert rx.check(signed_at(REBOOT, started + 1_000))[1] is None
    assert rx.check(signed_at(REBOOT, started - 5_000))[0] is None


# -- the attack in process: a real Client on the in-memory network (tests/harness/sim.py) ---

def keyed_client(tmp_path):
    from harness.sim import sims
    keys = tmp_path / "keys"
    keys.write_text(f"{K1[0]} {K1[1].hex()}\n")
    keys.chmod(0o600)
    return sims(tmp_path, clients=["worker-0"], agent=False,
                client_extra={"security": {"key_file": str(keys), "require": "yes"}})


def reboot_captured(make):
    """The keyed client started; a signed REBOOT sent to it (it reboots) and kept as an
    attacker on the path would keep it: (sim, its recorded actions, the controller, the
    agent's authenticator, the command's data, the captured datagram)."""
    from harness.sim import Controller, record_actions
    s = make().start()
    spawns = record_actions(s)
    c = Controller(s)
    s.run(1.5)
    agent = auth.Authenticator([K1], True, s.clock.wall, s.clock.now)
    data = alive.default_data(c.src[Net.MGMT], Net.MGMT)
    captured = agent.sign(alive.command(Cmd.REBOOT, c.host.mac, data))
    c.send(Net.MGMT, captured)
    assert spawns.names.count("reboot") == 1
    return s, spawns, c, agent, data, captured


def test_attack_a_captured_reboot_replayed_after_the_clients_clock_stepped_back(tmp_path):
    """docs/contract.md §3, the confirmed attack on item 20: a signed REBOOT captured on its way
    to a client (require = yes); 63 s of signed traffic later (its tag pruned), the client's
    wall clock steps back 64 s and the capture is sent again: `reboot` does not run twice."""
    from harness.sim import log
    with keyed_client(tmp_path) as make:
        s, spawns, c, agent, data, captured = reboot_captured(make)
        for _ in range(63):
            s.run(1.0)
            c.send(Net.MGMT, agent.sign(alive.command(Cmd.REQ_MTCALIVE, c.host.mac, data)))
        accepted = s.clients["worker-0"].wire.auth.counters["accepted"]
        assert accepted == 64, accepted
        s.clock._wall_offset -= 64                 # NTP steps the client's clock back
        s.run(0.5)
        c.send(Net.MGMT, captured)
        assert spawns.names.count("reboot") == 1, spawns.names
        assert log(s).count("dropping datagram") == 1
        # The cost (the agent's clock stepped back with the client's here): the times the
        # client accepted and forgot are refused until its clock has passed them again, then
        # the agent is obeyed.
        reboot = alive.command(Cmd.REBOOT, c.host.mac, data)
        s.run(1.0)                                 # past the capture's time again
        c.send(Net.MGMT, agent.sign(reboot))
        assert spawns.names.count("reboot") == 1 and log(s).count("already seen and forgotten")
        s.run(35.0)
        c.send(Net.MGMT, agent.sign(reboot))
        assert spawns.names.count("reboot") == 2


def test_attack_a_captured_reboot_replayed_to_the_restarted_client(tmp_path):
    """The attack's doubt (the replay memory is per process): a REBOOT replayed 4.8 s after its
    capture to the client restarted meanwhile is refused, as signed before it started."""
    from harness.sim import log, record_actions
    with keyed_client(tmp_path) as make:
        s, spawns, c, agent, data, captured = reboot_captured(make)
        s.clients["worker-0"].stop()
        run_dir = s.path("worker-0", "run_dir")
        for name in os.listdir(run_dir):           # as a reboot leaves it (tmpfs)
            os.remove(os.path.join(run_dir, name))
        s.run(2.5)
        s.clients["worker-0"] = s.make_client("worker-0")
        spawns = record_actions(s)
        s.clients["worker-0"].start()
        s.run(2.3)
        c.send(Net.MGMT, captured)
        assert spawns.names.count("reboot") == 0, spawns.names
        assert log(s).count("before this daemon started") == 1
        c.send(Net.MGMT, agent.sign(alive.command(Cmd.REBOOT, c.host.mac, data)))
        assert spawns.names.count("reboot") == 1


def test_a_flood_of_unsigned_datagrams_is_one_warning_line_per_cause_and_minute(tmp_path):
    """Bad input gets a clear, rate-limited line (transport.Wire hands its drops to the
    daemon's one throttling rule, logs.Lines): 200 unsigned REBOOTs at a client that requires
    tags run nothing and log one line per cause, named after `admit`, with the count of those
    held back on the next one a minute later."""
    from harness.sim import Controller, log, record_actions
    with keyed_client(tmp_path) as make:
        s = make().start()
        spawns = record_actions(s)
        c = Controller(s)
        s.run(1.5)
        reboot = alive.command(Cmd.REBOOT, c.host.mac, alive.default_data(c.src[Net.MGMT],
                                                                          Net.MGMT))
        for _ in range(200):
            c.send(Net.MGMT, reboot)
        s.run(1.0)
        drops = [r for r in log(s).records if "dropping datagram" in r.getMessage()]
        assert len(drops) == 1 and drops[0].funcName == "admit", [r.getMessage() for r in drops]
        assert drops[0].levelname == "WARNING" and "Mgmnt network" in drops[0].getMessage()
        s.run(61.0)
        c.send(Net.MGMT, reboot)
        s.run(1.0)
        drops = [r.getMessage() for r in log(s).records if "dropping datagram" in r.getMessage()]
        assert len(drops) == 2 and "(199 similar suppressed)" in drops[1], drops
        assert "reboot" not in spawns.names
