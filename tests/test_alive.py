"""The wire codec against golden bytes built by hand from docs/protocol.md §1-§3."""

from __future__ import annotations

import json
import random
import struct

import pytest

from mtce import alive
from mtce.states import Cmd, Net

MAC = "08:00:27:9f:ef:57"
IDENTITY = alive.Identity("controller-1", "controller,worker", "169.254.202.3",
                          "192.168.204.3", "192.168.206.3", MAC)


def by_hand(sig: bytes, ver=0, rev=0, res=0, cmd=0, num=0, parm=(0, 0, 0, 0, 0),
            hdr_tail=b"", text: bytes | None = None) -> bytes:
    """Offsets from the table in docs/protocol.md §1, written field by field."""
    out = bytearray(100)
    out[0:17] = sig
    out[17:17 + len(hdr_tail)] = hdr_tail
    out[64:66] = ver.to_bytes(2, "little")
    out[66:68] = rev.to_bytes(2, "little")
    out[68:72] = res.to_bytes(4, "little")
    out[72:76] = cmd.to_bytes(4, "little")
    out[76:80] = num.to_bytes(4, "little")
    for i, p in enumerate(parm):
        out[80 + 4 * i:84 + 4 * i] = p.to_bytes(4, "little")
    if text is not None:
        out += text + b"\0"
    return bytes(out)


def test_layout_constants():
    assert alive.HEADER.format == "<64sHHIII5I"
    assert (alive.HEADER_SIZE, alive.BUF_SIZE, alive.MSG_SIZE) == (100, 960, 1060)
    assert [len(s) for s in alive.SIGNATURES] == [17] * 6
    assert alive.SIG_EVENT == b"mtce event msg  :"


def test_mtcalive_golden_bytes_match_the_reference_example():
    data = alive.mtcalive(IDENTITY, Net.PXEBOOT, 145, uptime=3600, health=1, flags=0x9)
    text = (b'{"hostname":"controller-1","personality":"controller,worker",'
            b'"pxeboot_ip":"169.254.202.3","mgmt_ip":"192.168.204.3",'
            b'"cluster_host_ip":"192.168.206.3","mgmt_mac":"08:00:27:9f:ef:57",'
            b'"interface":"Pxeboot","sequence":145}')
    assert len(text) == 218 and len(data) == 319       # docs/protocol.md §3's example
    assert data == by_hand(b"cgts mtc message:", cmd=5, num=4, parm=(3600, 1, 0x9, 145, 0),
                           text=text)


def test_sent_length_is_header_plus_strlen_plus_nul():
    for net in Net:
        data = alive.mtcalive(IDENTITY, net, 1)
        body = data[100:]
        assert body.endswith(b"\0") and b"\0" not in body[:-1]
        assert len(data) == 100 + len(body[:-1]) + 1
        assert json.loads(body[:-1])["interface"] == net.iface


def test_json_keys_in_the_original_order():
    data = alive.mtcalive(IDENTITY, Net.MGMT, 7)
    keys = list(json.loads(data[100:-1]))
    assert keys == ["hostname", "personality", "pxeboot_ip", "mgmt_ip", "cluster_host_ip",
                    "mgmt_mac", "interface", "sequence"]


def test_sequence_above_2_31_prints_negative_like_the_original():
    data = alive.mtcalive(IDENTITY, Net.MGMT, 2**31 + 5)
    msg = alive.decode(data)
    assert msg.parm[3] == 2**31 + 5
    assert msg.json()["sequence"] == -(2**31) + 5


def test_ready_event_golden():
    data = alive.ready_event("worker-0", "192.168.202.2")
    text = (b'{"hostname":"worker-0","service":"mtcClient",'
            b'"active_controller_pxeboot_address":"192.168.202.2",'
            b'"features":["pxeboot_mtcAlive"]}')
    assert data == by_hand(b"mtce event msg  :", cmd=0xF0F0F0F0, text=text)


def test_command_carries_version_1_and_the_target_mac_at_hdr_17():
    data = alive.command(Cmd.REQ_MTCALIVE, MAC.upper(),
                         alive.pxeboot_info("10.0.0.2", "10.0.0.2", "10.0.0.3"))
    text = (b'{"pxebootInfo":{"controller":"10.0.0.2","controller-0":"10.0.0.2",'
            b'"controller-1":"10.0.0.3"}}')
    assert data == by_hand(b"cgts mtc cmd req:", ver=1, cmd=6, hdr_tail=MAC.encode(),
                           text=text)
    assert data[17:34] == MAC.encode() and data[34] == 0


def test_lazy_reboot_and_locked_parms():
    data = alive.command(Cmd.LAZY_REBOOT, MAC, alive.default_data("10.0.0.1", Net.MGMT),
                         num=1, parm=(15,))
    assert data == by_hand(b"cgts mtc cmd req:", ver=1, cmd=20, num=1, parm=(15, 0, 0, 0, 0),
                           hdr_tail=MAC.encode(),
                           text=b'{"address":"10.0.0.1","interface":"Mgmnt"}')


def test_ack_echoes_100_bytes_with_only_the_signature_rewritten():
    cmd = by_hand(b"cgts mtc cmd req:", ver=1, cmd=13, num=1, parm=(1, 2, 3, 4, 5),
                  hdr_tail=MAC.encode(), text=b'{"address":"x","interface":"Mgmnt"}')
    ack = alive.ack(alive.decode(cmd))
    assert len(ack) == 100
    assert ack[:18] == b"cgts mtc cmd rsp:\0"
    assert ack[18:34] == MAC[1:].encode()           # the MAC remnant (docs/protocol.md §1.2)
    assert ack[18:100] == cmd[18:100]


def test_decode_round_trip_and_fields():
    data = alive.mtcalive(IDENTITY, Net.CLSTR, 42, uptime=9, health=2, flags=0x1008)
    msg = alive.decode(data)
    assert (msg.sig, msg.cmd, msg.num, msg.parm) == (alive.SIG_MESSAGE, 5, 4,
                                                     (9, 2, 0x1008, 42, 0))
    assert msg.size == len(data) and msg.mac == ""
    assert msg.json()["cluster_host_ip"] == "192.168.206.3"


@pytest.mark.parametrize("data,reason", [
    (b"", "underrun"), (b"x" * 99, "underrun"),
    (b"cgts mtc message:" + b"\0" * 1100, "oversize"),
    (b"cgts mtc XXXXXXX:" + b"\0" * 90, "unknown header signature"),
    (b"\0" * 100, "unknown header signature"),
])
def test_bad_datagrams_give_a_reason(data, reason):
    msg, why = alive.try_decode(data)
    assert msg is None and why.startswith(reason)
    with pytest.raises(alive.DecodeError):
        alive.decode(data)


def test_missing_nul_is_tolerated_like_the_original():
    data = alive.mtcalive(IDENTITY, Net.MGMT, 3)[:-1]
    assert alive.decode(data).json()["sequence"] == 3


def test_text_stops_at_buf_959_like_the_original():
    data = by_hand(b"cgts mtc message:", cmd=5) + b"a" * 960
    assert len(data) == 1060
    assert alive.decode(data).buf == b"a" * 959


@pytest.mark.parametrize("text,reason", [
    (b"", "empty payload"), (b"{not json", "not valid JSON"), (b"\xff\xfe", "not UTF-8"),
    (b"[1,2]", "not a JSON object"), (b"[" * 958 + b"]", "not valid JSON"),
], ids=["empty", "bad", "utf8", "array", "deep"])
def test_payload_errors(text, reason):
    msg = alive.decode(by_hand(b"cgts mtc message:", cmd=5) + text + b"\0")
    with pytest.raises(alive.DecodeError, match=reason):
        msg.json()


def test_pxeboot_info_parsing():
    info = alive.parse_pxeboot_info(alive.pxeboot_info("a", "b", "").encode())
    assert info == {"controller": "a", "controller-0": "b", "controller-1": ""}
    with pytest.raises(alive.DecodeError, match="tokenize"):
        alive.parse_pxeboot_info(b"nope")
    with pytest.raises(alive.DecodeError, match="pxebootInfo"):
        alive.parse_pxeboot_info(b'{"other":1}')
    assert alive.parse_pxeboot_info(b'{"pxebootInfo":{"controller-0":5}}') == {}


def test_ready_event_parsing():
    host, features = alive.parse_ready_event(alive.decode(alive.ready_event("w", "")))
    assert (host, features) == ("w", ["pxeboot_mtcAlive"])
    old = by_hand(b"mtce event msg  :", cmd=0xF0F0F0F0,
                  text=b'{"hostname":"w","service":"mtcClient"}')
    assert alive.parse_ready_event(alive.decode(old)) == ("w", None)
    string = by_hand(b"mtce event msg  :", cmd=0xF0F0F0F0,
                     text=b'{"hostname":"w","features":"pxeboot_mtcAlive"}')
    assert alive.parse_ready_event(alive.decode(string)) == ("w", None)


def test_seeded_mutations_never_raise_anything_but_decode_error():
    rng = random.Random(1234)
    seeds = [alive.mtcalive(IDENTITY, Net.MGMT, 5), alive.ready_event("w", "x"),
             alive.command(Cmd.REBOOT, MAC, "{}")]
    for _ in range(20000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            op = rng.randrange(4)
            if op == 0 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op == 1:
                del data[rng.randrange(len(data) + 1):]
            elif op == 2:
                data += bytes(rng.randrange(256) for _ in range(rng.randrange(600)))
            else:
                struct.pack_into("<I", data, 72, rng.getrandbits(32)) if len(data) >= 76 else None
        msg, reason = alive.try_decode(bytes(data))
        assert (msg is None) != (reason is None)
        if msg is not None:
            try:
                msg.json()
            except alive.DecodeError:
                pass


def test_the_agents_header_check_agrees_with_decode():
    """mtcalive_fields reads only the header part: it accepts what decode reads as an mtcAlive
    (signature, cmd 5) whose one text ends at the datagram's NUL, with the same numbers."""
    rng = random.Random(99)
    good = alive.mtcalive(IDENTITY, Net.MGMT, 77, uptime=5, health=1, flags=0x8)
    assert alive.mtcalive_fields(good) == (5, 0x8, 77)
    assert alive.mtcalive_fields(memoryview(good)) == (5, 0x8, 77)
    others = [good[:-1], good.replace(b"cgts mtc message:", b"cgts mtc cmd rsp:"),
              good[:72] + (6).to_bytes(4, "little") + good[76:], alive.ready_event("w", ""),
              good[:100], good[:101] + b"\0", good + b"x" * (1060 - len(good))]
    for data in others:
        assert alive.mtcalive_fields(data) is None, data
    for _ in range(20000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            data[i] = rng.randrange(256)
        fields = alive.mtcalive_fields(bytes(data))
        if fields is not None:
            msg = alive.decode(bytes(data))
            assert (msg.parm[0], msg.parm[2], msg.parm[3]) == fields
            assert msg.cmd == 5 and msg.sig == alive.SIG_MESSAGE and msg.size == len(data)


def test_the_fast_path_accepts_only_what_the_full_parse_accepts():
    """Issue 11 item 1, docs/contract.md §8: a host's next mtcAlive is valid without a JSON parse
    only when its text is the last valid text with another sequence number. For random mutations
    of real mtcAlive (bit flips, truncation, insertions, another number in "sequence"):
    fast path accepted => the full parse accepts, with the same fields."""
    rng = random.Random(1111)
    idents = [IDENTITY, alive.Identity("worker-0", "worker", "", "192.168.204.50", "",
                                       "08:00:27:1e:0a:01"),
              alive.Identity("storage-1", "storage", "169.254.202.9", "fd00::9", "fd01::9",
                             "08:00:27:1e:0a:09")]
    accepted = mutated = 0
    for ident in idents:
        for net in Net:
            first = alive.decode(alive.mtcalive(ident, net, rng.randrange(1 << 32)))
            prefix = alive.sequence_prefix(first.buf)
            assert prefix is not None and prefix.endswith(b',"sequence":')
            want = alive.parse_mtcalive(first.buf)
            for i in range(6000):
                data = bytearray(alive.mtcalive(ident, net, rng.randrange(1 << 32)))
                changes = rng.choice((0, 1, 1, 2, 3))
                for _ in range(changes):
                    op, at = rng.randrange(4), rng.randrange(100, len(data))
                    if op == 0:
                        data[at] ^= 1 << rng.randrange(8)
                    elif op == 1:
                        data[at] = rng.choice(b'{}",:0123456789-\\\0 ')
                    elif op == 2:
                        del data[at:at + rng.randint(1, 4)]
                    else:
                        data[at:at] = bytes(rng.choice(b'{}",:07-\0') for _ in range(2))
                data = bytes(data)
                if alive.mtcalive_fields(data) is None or not alive.text_matches(data, prefix):
                    continue
                accepted += 1
                mutated += changes > 0
                assert alive.parse_mtcalive(alive.decode(data).buf) == want, data
    assert accepted > 9000, "the unmutated ones, at least, go the fast way"
    assert mutated > 100, "mutations of the sequence digits still go the fast way"


@pytest.mark.parametrize("text, why", [
    (b'{"hostname":"worker-0",,}', "payload is not valid JSON"),
    (b'{"hostname":"worker-0","personality":"worker","sequence":5', "payload is not valid JSON"),
    (b'{"hostname":"worker-0","sequence":5}', "mtcAlive without a personality"),
    (b'{"hostname":"worker-0","personality":"wprker","sequence":5}',
     "mtcAlive with an invalid personality"),
    (b'{"hostname":"worker-0","personality":"","sequence":5}',
     "mtcAlive with an invalid personality"),
    (b'{"hostname":"worker-0","personality":7,"sequence":5}',
     "mtcAlive with an invalid personality"),
    (b'["worker"]', "payload is not a JSON object"),
])
def test_an_mtcalive_without_valid_json_and_personality_is_refused(text, why):
    """Issue 11 item 1, docs/protocol.md §1.3: the original reads `personality` first and returns
    before `set_mtcAlive` when it cannot (`update_host_functions("")` fails)."""
    with pytest.raises(alive.DecodeError) as err:
        alive.parse_mtcalive(text)
    assert err.value.reason == why


@pytest.mark.parametrize("personality", ["worker", "controller", "storage",
                                         "controller,worker", "controller,worker,lowlatency",
                                         "worker,lowlatency", "controller,storage"])
def test_personalities_clients_send_are_valid(personality):
    assert alive.valid_personality(personality)


@pytest.mark.parametrize("personality", ["", "none", "lowlatency", "Worker", "worker,",
                                         "worker controller", "x" * 200, None, ["worker"]])
def test_other_personalities_are_not(personality):
    assert not alive.valid_personality(personality)


def test_a_text_that_does_not_end_with_its_sequence_is_always_parsed():
    assert alive.sequence_prefix(b'{"personality":"worker","sequence":5,"x":1}') is None
    assert alive.sequence_prefix(b'{"personality":"worker","sequence":05}') is None
    assert alive.sequence_prefix(b'{"personality":"worker","sequence":5.0}') is None
    assert alive.sequence_prefix(b'{"personality":"worker","sequence":-5}') == \
        b'{"personality":"worker","sequence":'



def test_the_in_place_check_reads_only_the_datagram_in_a_shared_buffer():
    """Issue 25: the agent checks a datagram where recvmmsg put it, in a buffer shared with
    others (`text_matches_at`). It decides as `text_matches` on the datagram's own bytes; what
    lies after the datagram (the next slot, a longer datagram read there before) never helps
    a short or cut text pass."""
    import random
    rng = random.Random(2505)
    ident = alive.Identity("worker-3", "worker", "169.254.202.3", "192.168.204.3",
                           "192.168.206.3", "08:00:27:00:00:03")
    good = alive.mtcalive(ident, Net.MGMT, 77)
    prefix = alive.sequence_prefix(alive.decode(good).buf)
    slot = 2048
    for i in range(3000):
        data = bytearray(alive.mtcalive(ident, Net.MGMT, rng.randrange(1 << 32)))
        cut = rng.choice((len(data), len(data), rng.randrange(0, len(data) + 1)))
        data = data[:cut]
        if data and rng.random() < 0.3:
            data[rng.randrange(len(data))] = rng.randrange(256)
        buf = bytearray(rng.randbytes(slot * 3))
        at = slot * rng.randrange(3)
        buf[at:at + len(data)] = data
        # what was there before: the rest of a full, valid datagram
        stale = alive.mtcalive(ident, Net.MGMT, 78)
        if len(data) < len(stale):
            buf[at + len(data):at + len(stale)] = stale[len(data):]
        assert alive.text_matches_at(buf, at, len(data), prefix) == \
            alive.text_matches(bytes(data), prefix), (i, bytes(data))
        assert alive.mtcalive_fields_at(buf, at, len(data)) == \
            alive.mtcalive_fields(bytes(data)), (i, bytes(data))
