"""Message authentication: the trailer, key rotation, freshness and replays."""

from __future__ import annotations

import hashlib
import hmac

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
            assert why == "replayed (already accepted)", (age_ms, why)
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
