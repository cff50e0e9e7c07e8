"""Property tests (hypothesis) for every decoder: hostile input gives the documented result or
the documented error, never anything else; where there is an encoder, encode -> decode gives
the fields back.

Decoders and their one error type (README "Security"; docs/design.md "Module map": bad input
never raises):
  alive.decode / Message accessors / parse_json / parse_pxeboot_info / parse_ready_event
      -> alive.DecodeError;  alive.try_decode never raises
  auth.split, Authenticator.check -> never raise;  auth.parse_keys -> auth.KeyFileError
  config.read_ini -> never raises;  config.load, config.parse_inventory -> config.ConfigError
  netif.parse_platform_conf, dhcp_lease_address, static_ifcfg_address, parse_dnsmasq_hosts,
      parse_hosts_file -> never raise
  agent_ctl.Server._answer (one control request) -> a reply dict, never raises

Bugs this found are fixed, and their tests stay as regression tests. Examples are
sized so the whole file runs in about 20 s; no example database is written (the tree is
shared), so a failure prints its reproduction (`@reproduce_failure`/`@example`) instead.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import string
import tempfile

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from mtce import agent_ctl, alive, auth, config, ifchain, logs, netif
from mtce.clock import FakeClock
from mtce.states import Cmd, Net, cmd_name

# MTCE_FUZZ_EXAMPLES=5000 for a longer hunt; the default keeps the file at ~20 s.
EXAMPLES = int(os.environ.get("MTCE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
FEW = settings(FUZZ, max_examples=max(1, EXAMPLES // 2))      # examples that write files
U32 = 2 ** 32 - 1

# -- strategies -------------------------------------------------------------------------------

any_text = st.text(st.characters(codec="utf-8"), max_size=200) | st.text(max_size=50)
hex_byte = st.integers(0, 255).map(lambda b: f"{b:02x}")
macs = st.lists(hex_byte, min_size=6, max_size=6).map(":".join)
mixed_case_macs = st.tuples(macs, st.booleans()).map(lambda m: m[0].upper() if m[1] else m[0])
ipv4s = st.ip_addresses(v=4).map(str)
ips = st.ip_addresses().map(str)
u32 = st.integers(0, U32)
nets = st.sampled_from(list(Net))
IDENT_KEYS = ("hostname", "personality", "pxeboot_ip", "mgmt_ip", "cluster_host_ip", "mgmt_mac")


def real_messages():
    """One of every datagram the daemons send each other, with arbitrary fields."""
    ident = st.builds(alive.Identity, *[st.text(max_size=30)] * 6)
    return st.one_of(
        st.builds(lambda i, n, s, u, h, f: alive.mtcalive(i, n, s, uptime=u, health=h, flags=f),
                  ident, nets, u32, u32, u32, u32),
        st.builds(alive.ready_event, st.text(max_size=40), st.text(max_size=20)),
        st.builds(lambda c, m, d, n: alive.command(c, m, d, num=n), u32, macs,
                  st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=60),
                  st.integers(0, 5)),
        st.builds(lambda c, m: alive.ack(alive.decode(alive.command(c, m, "{}"))), u32, macs),
        st.builds(lambda a, b, c, m: alive.command(Cmd.REQ_MTCALIVE, m, alive.pxeboot_info(
            a, b, c)), ipv4s, ipv4s, ipv4s, macs),
    )


def valid_messages():
    """The real messages, plus any signature's header part followed by arbitrary bytes."""
    return real_messages() | st.builds(lambda sig, raw: alive.pack(sig, text=None) + raw,
                                       st.sampled_from(alive.SIGNATURES),
                                       st.binary(max_size=1000))


@st.composite
def mutated(draw):
    """A valid datagram, then the soak's mutations: flipped bytes, truncation, oversize,
    another signature/version/command, extreme numbers, invalid UTF-8 or JSON."""
    data = bytearray(draw(valid_messages()))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(("flip", "truncate", "grow", "sig", "field", "utf8", "json",
                                   "nul")))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif op == "grow":
            data += draw(st.binary(min_size=1, max_size=1200))
        elif op == "sig" and len(data) >= 17:
            data[0:17] = draw(st.sampled_from(alive.SIGNATURES) | st.binary(min_size=17,
                                                                             max_size=17))
        elif op == "field" and len(data) >= 100:
            off, size = draw(st.sampled_from(((64, 2), (66, 2), (68, 4), (72, 4), (76, 4),
                                              (80, 4), (84, 4), (88, 4), (92, 4), (96, 4))))
            value = draw(st.sampled_from((0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** (8 * size) - 1))
                         | st.integers(0, 2 ** (8 * size) - 1))
            data[off:off + size] = (value % 2 ** (8 * size)).to_bytes(size, "little")
        elif op == "utf8" and len(data) > 100:
            i = draw(st.integers(100, len(data)))
            data[i:i] = draw(st.sampled_from((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88")))
        elif op == "json" and len(data) > 100:
            junk = draw(st.sampled_from((b"[" * 900, b'{"hostname":' + b"9" * 800 + b"}",
                                         b'{"sequence":-1e999}', b"{", b"null", b"[1,2]",
                                         b'{"hostname":"x","sequence":18446744073709551616}')))
            data[100:] = junk + b"\0"
        elif op == "nul" and len(data) > 100:
            data.insert(draw(st.integers(100, len(data))), 0)
    return bytes(data)


datagrams = st.binary(max_size=2100) | mutated()

# -- alive: the wire message ------------------------------------------------------------------


def check_message(msg: alive.Message, data: bytes) -> None:
    """Everything documented about a decoded Message, and every accessor's error type."""
    assert msg.size == len(data) and alive.HEADER_SIZE <= msg.size <= alive.MSG_SIZE
    assert msg.sig in alive.SIGNATURES and msg.hdr[:17] == msg.sig and len(msg.hdr) == 64
    assert bytes(data[:100]) == alive.HEADER.pack(msg.hdr, msg.ver, msg.rev, msg.res, msg.cmd,
                                                  msg.num, *msg.parm)
    assert b"\0" not in msg.buf and len(msg.buf) <= alive.MAX_TEXT
    assert bytes(data[100:]).startswith(msg.buf)
    assert isinstance(msg.mac, str) and isinstance(alive.describe(msg), str)
    for accessor in (msg.text, msg.json, lambda: alive.parse_ready_event(msg),
                     lambda: alive.parse_pxeboot_info(msg.buf)):
        try:
            accessor()
        except alive.DecodeError as err:
            assert isinstance(err.reason, str) and err.reason
    assert len(alive.ack(msg)) == alive.HEADER_SIZE


@FUZZ
@given(datagrams)
@example(b"")
@example(b"cgts mtc message:" + bytes(83))
@example(b"cgts mtc message:" + bytes(1043))             # 1060: the largest accepted
@example(b"cgts mtc message:" + bytes(1044))             # 1061: oversize
@example(b"cgts mtc message:" + bytes(83) + b"\xff\xfe{" + b"[" * 955)
def test_decode_returns_a_message_or_raises_decode_error(data):
    for form in (data, bytearray(data), memoryview(data)):
        try:
            msg = alive.decode(form)
        except alive.DecodeError as err:
            assert isinstance(err.reason, str) and err.reason
            assert alive.try_decode(form) == (None, err.reason)
            continue
        check_message(msg, data)
        assert alive.try_decode(form) == (msg, None)


@FUZZ
@given(st.binary(max_size=1100) | st.text(max_size=300).map(str.encode)
       | st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
                      lambda c: st.lists(c) | st.dictionaries(st.text(), c), max_leaves=20)
       .map(lambda o: json.dumps(o).encode()))
@example(b"[" * 5000)
@example(b'{"a":' + b"1" * 5000 + b"}")
def test_parse_json_gives_a_dict_or_decode_error(buf):
    try:
        obj = alive.parse_json(buf)
    except alive.DecodeError as err:
        assert err.reason
        return
    assert isinstance(obj, dict) and obj == json.loads(buf.decode("utf-8"))


@FUZZ
@given(st.binary(max_size=600)
       | st.dictionaries(st.sampled_from(("controller", "controller-0", "controller-1", "x")),
                         st.none() | st.integers() | st.text(max_size=20) | st.lists(st.text()))
       .map(lambda d: json.dumps({"pxebootInfo": d}).encode())
       | st.text(max_size=40).map(lambda t: json.dumps({"pxebootInfo": t}).encode()))
def test_parse_pxeboot_info_gives_strings_or_decode_error(buf):
    try:
        info = alive.parse_pxeboot_info(buf)
    except alive.DecodeError as err:
        assert err.reason
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in info.items())


@FUZZ
@given(st.text(max_size=200) | st.dictionaries(
    st.sampled_from(("hostname", "service", "features", "x")),
    st.none() | st.integers() | st.text(max_size=20) | st.lists(st.none() | st.text(max_size=9))
).map(alive.json_text))
def test_parse_ready_event_gives_hostname_and_features_or_decode_error(text):
    msg = alive.decode(alive.pack(alive.SIG_EVENT, cmd=alive.EVENT_MONITOR_READY,
                                  text=text[:200].replace("\0", "")))
    try:
        hostname, features = alive.parse_ready_event(msg)
    except alive.DecodeError as err:
        assert err.reason
        return
    assert isinstance(hostname, str) and hostname
    assert features is None or all(isinstance(f, str) for f in features)


@FUZZ
@given(st.builds(alive.Identity, *[any_text] * 6), nets,
       st.integers(0, U32) | st.integers(-2 ** 40, 2 ** 40), u32, u32, u32)
@example(alive.Identity("worker-0", "worker", "", "", "", ""), Net.MGMT, 0, 0, 0, 0)
@example(alive.Identity("worker-0", "worker", "", "", "", ""), Net.PXEBOOT, U32, U32, U32, U32)
@example(alive.Identity("w", "w", "", "", "", ""), Net.CLSTR, 2 ** 31, 0, 0, 0)
def test_mtcalive_round_trip(ident, net, seq, uptime, health, flags):
    try:
        data = alive.mtcalive(ident, net, seq, uptime=uptime, health=health, flags=flags)
    except ValueError:
        # Documented: a text that does not fit buf (959 bytes) is refused by the encoder.
        assert len(alive.json_text({**ident.as_dict(), "interface": net.iface,
                                    "sequence": alive.as_c_int(seq)})) > alive.MAX_TEXT
        return
    msg = alive.decode(data)
    check_message(msg, data)
    assert (msg.sig, msg.cmd, msg.num) == (alive.SIG_MESSAGE, Cmd.MTCALIVE, 4)
    assert msg.parm == (uptime, health, flags, seq % 2 ** 32, 0)
    body = msg.json()
    assert list(body) == list(IDENT_KEYS) + ["interface", "sequence"]
    assert {k: body[k] for k in IDENT_KEYS} == ident.as_dict()
    assert body["interface"] == net.iface and body["sequence"] == alive.as_c_int(seq)
    assert body["sequence"] % 2 ** 32 == msg.parm[3]
    assert len(data) == 100 + len(msg.buf) + 1


@FUZZ
@given(st.builds(alive.Identity, any_text, st.sampled_from(
    ["worker", "controller,worker", "storage", "controller,worker,lowlatency"]),
    *[any_text] * 4), nets, u32, st.binary(max_size=40), st.binary(max_size=900))
@example(alive.Identity("worker-0", "worker", "", "", "", ""), Net.MGMT, 5, b"17}\0", b"")
@example(alive.Identity("worker-0", "worker", "", "", "", ""), Net.MGMT, 5, b"017}\0", b"")
@example(alive.Identity("worker-0", "worker", "", "", "", ""), Net.MGMT, 5, b"1}}\0", b"")
def test_fast_path_accepted_implies_full_parse_accepted(ident, net, seq, tail, other):
    """Issue 11 item 1: whatever follows a valid text's prefix, or whatever random text comes
    instead, the byte comparison accepts only what parse_mtcalive accepts, same fields."""
    try:
        sent = alive.mtcalive(ident, net, seq)
        first = alive.decode(sent)
        want = alive.parse_mtcalive(first.buf)
    except (ValueError, alive.DecodeError):
        return                                   # not a valid mtcAlive to begin with
    prefix = alive.sequence_prefix(first.buf)
    assert prefix is not None
    head = sent[:alive.HEADER_SIZE]
    assert alive.text_matches(sent, prefix), "its own text is accepted"
    for data in (head + prefix + tail, head + other, head + prefix + other):
        if alive.mtcalive_fields(data) is not None and alive.text_matches(data, prefix):
            assert alive.parse_mtcalive(alive.decode(data).buf) == want


@FUZZ
@given(u32, mixed_case_macs, st.text(max_size=300), st.integers(0, 5), st.lists(u32, max_size=5))
@example(Cmd.LAZY_REBOOT, "08:00:27:AA:BB:CC", alive.default_data("127.0.0.1", Net.MGMT), 1,
         [15])
def test_command_and_ack_round_trip(cmd, mac, data, num, parm):
    try:
        raw = alive.command(cmd, mac, data, num=num, parm=parm)
    except ValueError:
        assert len(data.encode()) > alive.MAX_TEXT or "\0" in data
        return
    msg = alive.decode(raw)
    check_message(msg, raw)
    assert (msg.sig, msg.ver, msg.cmd, msg.num) == (alive.SIG_CMD_REQ, 1, cmd, num)
    assert msg.mac == mac.lower() and msg.text() == data
    assert msg.parm == tuple(parm) + (0,) * (5 - len(parm))
    echo = alive.decode(alive.ack(msg))
    assert len(alive.ack(msg)) == 100 and echo.sig == alive.SIG_CMD_RSP
    assert (echo.ver, echo.rev, echo.res, echo.cmd, echo.num, echo.parm) == \
        (msg.ver, msg.rev, msg.res, msg.cmd, msg.num, msg.parm)
    # docs/protocol.md §1.2: the rewrite's NUL lands on hdr[17]; the MAC's first character is lost.
    assert echo.hdr[17] == 0 and echo.hdr[18:] == msg.hdr[18:] and echo.buf == b""


@FUZZ
@given(st.text(min_size=1, max_size=300), st.text(max_size=40))
def test_ready_event_round_trip(hostname, active):
    try:
        raw = alive.ready_event(hostname, active)
    except ValueError:
        return                                 # longer than buf: refused by the encoder
    msg = alive.decode(raw)
    assert (msg.sig, msg.cmd) == (alive.SIG_EVENT, alive.EVENT_MONITOR_READY)
    assert alive.parse_ready_event(msg) == (hostname, ["pxeboot_mtcAlive"])
    assert msg.json()["active_controller_pxeboot_address"] == active


@FUZZ
@given(any_text, any_text, any_text)
def test_pxeboot_info_round_trip(c, c0, c1):
    text = alive.pxeboot_info(c, c0, c1)
    assert alive.parse_pxeboot_info(text.encode()) == {
        "controller": c, "controller-0": c0, "controller-1": c1}


@FUZZ
@given(u32)
@example(int(Cmd.LAST))
def test_cmd_name_of_any_wire_cmd_is_a_string(code):
    # Found by this fuzzer: Cmd.LAST (25) had no name and raised KeyError.
    assert isinstance(cmd_name(code), str)


# -- auth: the trailer and the key file -------------------------------------------------------

KEYS = [("k1", bytes(range(32))), ("k.2_-", bytes(range(40, 80)))]


def authenticator(require=True, keys=KEYS):
    clock = FakeClock(wall_start=1_800_000_000.0)
    return auth.Authenticator(keys, require, clock.wall, clock.now), clock


@FUZZ
@given(datagrams | st.builds(lambda d, t: d + t, datagrams, st.sampled_from(
    (b"MTCA1 ", b"MTCA1 k1 1 " + b"0" * 64 + b"\0", b"\0MTCA1 k1 99999999999999999999 x\0",
     b"\0MTCA1 " + b"k" * 17 + b" 1 " + b"a" * 64 + b"\0"))))
def test_split_and_check_never_raise(data):
    payload, trailer = auth.split(data)
    assert payload + (trailer or b"") == data
    if trailer is not None:
        assert trailer.startswith(auth.MAGIC)
    for require in (True, False):
        a, _ = authenticator(require)
        out, why = a.check(data)
        assert (out is None) != (why is None)
        if require:
            assert out is None, "random bytes never carry a valid tag"
        elif out is not None:
            assert trailer is None and out == data


@FUZZ
@given(datagrams | real_messages(), st.data())
def test_signed_datagrams_verify_once_and_any_change_is_refused(payload, data):
    a, _ = authenticator()
    signed = a.sign(payload)
    b, _ = authenticator()
    out, why = b.check(signed)
    if auth.split(signed)[0] == payload:
        # Every message the daemons send splits back exactly (its text ends at its NUL).
        assert (out, why) == (payload, None)
        assert b.check(signed)[0] is None, "a replay is refused"
    else:
        assert out is None, "bytes that are not a message do not verify"
    i = data.draw(st.integers(0, len(signed) - 1))
    tampered = bytearray(signed)
    tampered[i] ^= data.draw(st.integers(1, 255))
    c, _ = authenticator()
    assert c.check(bytes(tampered))[0] is None


@FUZZ
@given(real_messages())
def test_sign_check_round_trip_of_real_messages(payload):
    a, clock = authenticator()
    b, _ = authenticator(keys=list(reversed(KEYS)))         # verifies with its second key
    assert b.check(a.sign(payload)) == (payload, None)
    clock.advance(31)
    assert b.check(a.sign(payload))[1].startswith("time ")   # FakeClock moved only a's wall


@FUZZ
@given(any_text | st.lists(st.tuples(st.text(max_size=20), st.text(max_size=80))).map(
    lambda rows: "\n".join(f"{k} {v}" for k, v in rows)))
@example("k1 " + "0" * 63)
@example("k1 " + "0" * 62)
def test_parse_keys_gives_keys_or_key_file_error(text):
    try:
        keys = auth.parse_keys(text)
    except auth.KeyFileError as err:
        assert err.why and (err.line is None or err.line >= 1)
        return
    assert keys and len({k for k, _ in keys}) == len(keys)
    assert all(auth._KID.match(k) and len(v) >= auth.MIN_KEY_BYTES for k, v in keys)


@FUZZ
@given(st.lists(st.tuples(st.text(string.ascii_letters + string.digits + "._-", min_size=1,
                                  max_size=16), st.binary(min_size=32, max_size=64)),
                min_size=1, max_size=5, unique_by=lambda kv: kv[0]),
       st.sampled_from(("\n", "\r\n")), st.booleans())
def test_parse_keys_round_trip(keys, eol, upper):
    lines = ["# keys"] + [f"  {k}\t{v.hex().upper() if upper else v.hex()}  " for k, v in keys]
    assert auth.parse_keys(eol.join(lines) + eol) == keys


# -- config: ini, mtc.ini, inventory ----------------------------------------------------------

ini_name = st.text(string.ascii_letters + string.digits + "_.-", min_size=1, max_size=20)
# A value inih hands back unchanged: one line, no surrounding white space, no ';' after white
# space, and not starting with a comment character.
ini_value = st.text(st.characters(codec="utf-8", exclude_characters="\ufeff"), max_size=40).map(
    lambda v: " ".join("".join(v.splitlines()).split())).filter(
    lambda v: " ;" not in v and v[:1] not in (";", "#") and v == v.strip())


@FUZZ
@given(any_text | st.lists(st.sampled_from(
    ("[a]", "[b", "k=v", "k:v", " cont", "\tx = y ; c", ";c", "#c", "=v", "x", "\ufeff[s]", ""))
    | any_text, max_size=20).map("\n".join))
def test_read_ini_never_raises(text):
    entries, problems = config.read_ini(text)
    nlines = len(text.splitlines())
    assert all(1 <= e.line <= nlines and e.key for e in entries)
    assert all(1 <= n <= nlines and why for n, why in problems)


@FUZZ
@given(st.lists(st.tuples(ini_name, st.lists(st.tuples(ini_name, ini_value), max_size=6)),
                max_size=5),
       st.sampled_from((" = ", "=", " : ")), st.sampled_from(("\n", "\r\n")), st.booleans())
def test_ini_round_trip(sections, sep, eol, comments):
    if ":" in sep:      # the first '=' wins over ':' (test_config), so no '=' in the value
        assume(all("=" not in v for _, kv in sections for _, v in kv))
    out, want = [], []
    for section, kv in sections:
        out.append(f"[{section}]")
        for key, value in kv:
            if comments:
                out.append(f"; {key} help")
            out.append(f"{key}{sep}{value}" + ("  ; inline" if comments else ""))
            want.append((section, key, value))
    entries, problems = config.read_ini(eol.join(out) + eol)
    assert problems == []
    assert [(e.section, e.key, e.value) for e in entries] == want


def test_render_ini_round_trips_every_default():
    entries, problems = config.read_ini(config.render_ini())
    assert problems == []
    got = {(e.section, e.key): e.value for e in entries}
    for opt in config.OPTIONS:
        shown = ("yes" if opt.default else "no") if isinstance(opt.default, bool) \
            else str(opt.default)
        assert got[(opt.section, opt.key)] == shown


NUMBERISH = st.sampled_from(("0", "1", "-1", "65535", "65536", "1.5", "1e3", "0x10", "120;",
                             "9" * 30, "9" * 5000, "", " ", "yes", "Off", "::1", "1.2.3.4",
                             "fe80::1%lo", "-0.0", "1_000", "\u0661"))


def _is_nan(value: str) -> bool:
    try:
        return math.isnan(float(value.rstrip(";")))
    except ValueError:
        return False


def _typed_ok(opt: config.Option, v) -> bool:
    if opt.kind == "port":
        return isinstance(v, int) and 1 <= v <= 65535
    if opt.kind == "int":
        return isinstance(v, int) and v >= 0
    if opt.kind in ("count", "ms"):
        return isinstance(v, int) and v >= 1
    if opt.kind == "seconds":
        return isinstance(v, (int, float)) and v > 0
    if opt.kind == "any_seconds":
        return isinstance(v, (int, float)) and math.isfinite(v)
    if opt.kind == "off_seconds":
        return isinstance(v, (int, float)) and math.isfinite(v) and v >= 0
    if opt.kind == "ip":
        return v == "" or str(ipaddress.ip_address(v)) == v
    if opt.kind == "bool":
        return isinstance(v, bool)
    return isinstance(v, str)


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="mtce-fuzz-") as d:
        yield d


@FEW
@given(st.lists(st.tuples(st.sampled_from(config.OPTIONS), NUMBERISH | ini_value), max_size=8))
def test_load_types_every_value_or_raises_config_error(scratch, values):
    assume(not any(_is_nan(v) for _, v in values))
    path = os.path.join(scratch, "mtc.ini")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"[{opt.section}]\n{opt.key} = {value}\n" for opt, value in values)
    try:
        cfg = config.load(path)
    except config.ConfigError as err:
        assert err.path == path and err.why and err.line and err.key
        return
    for opt in config.OPTIONS:
        assert _typed_ok(opt, cfg.get(opt.section, opt.key)), (opt, cfg.get(opt.section,
                                                                            opt.key))


@FEW
@given(st.binary(max_size=400) | any_text.map(str.encode))
def test_load_of_any_file_gives_config_or_config_error(scratch, raw):
    path = os.path.join(scratch, "any.ini")
    with open(path, "wb") as f:
        f.write(raw)
    try:
        cfg = config.load(path)
    except config.ConfigError as err:
        assert err.path == path and err.why
        return
    assert isinstance(cfg.warnings, tuple)


# Found by this fuzzer: validate's float(min=0.001) let nan (and inf) through, and a nan
# deadline at the top of the loop's timer heap is never due: mtcalive_period = nan silenced
# the client.
@pytest.mark.parametrize("key", ["mtcalive_period", "online_period", "pxeboot_mtcalive_window",
                                 "failsafe_shutdown_delay"])
def test_nan_seconds_are_refused(scratch, key):
    section = "client" if key == "mtcalive_period" else "timeouts"
    path = os.path.join(scratch, f"nan-{key}.ini")
    with open(path, "w") as f:
        f.write(f"[{section}]\n{key} = nan\n")
    try:
        value = config.load(path).get(section, key)
    except config.ConfigError:
        return
    assert value > 0, f"[{section}] {key} = {value!r} was accepted"


hostnames = st.builds(lambda a, b: a + b, st.sampled_from(string.ascii_letters + string.digits),
                      st.text(string.ascii_letters + string.digits + "._-", max_size=48))
# docs/contract.md §4: a comma list of the original's words naming at least one host function.
personality = st.sampled_from(("controller", "worker", "storage", "worker,lowlatency",
                               "controller,worker", "controller,worker,lowlatency"))


def _a_hosts_address(text: str) -> bool:
    """docs/contract.md §4: no host has an unspecified, multicast or broadcast address."""
    a = ipaddress.ip_address(text)
    return not (a.is_unspecified or a.is_multicast or text == "255.255.255.255")


host_ips = ips.filter(_a_hosts_address)
# docs/contract.md §4: a host's MAC is unicast (the low bit of its first byte clear), not zero.
host_macs = mixed_case_macs.filter(lambda m: not int(m[:2], 16) & 1 and
                                   m.replace(":", "") != "0" * 12)
inventory_hosts = st.lists(
    st.tuples(hostnames, personality, host_macs, host_ips, st.none() | host_ips,
              st.sampled_from(("locked", "unlocked", None))),
    max_size=6, unique_by=(lambda h: h[0].lower(), lambda h: h[2].lower()))


@FUZZ
@given(inventory_hosts, st.sampled_from((" = ", "=", "  =  ")))
def test_inventory_round_trip(hosts, sep):
    def same(text):         # docs/contract.md §4: one address in any spelling (IPv4-mapped too)
        a = ipaddress.ip_address(text)
        return getattr(a, "ipv4_mapped", None) or a

    addrs = [same(h[3]) for h in hosts] + [same(h[4]) for h in hosts if h[4]]
    assume(len(set(addrs)) == len(addrs))
    out = []
    for name, pers, mac, mgmt, clstr, admin in hosts:
        out += [f"[{name}]", f"personality{sep}{pers}", f"mgmt_mac{sep}{mac}",
                f"mgmt_ip{sep}{mgmt}"]
        if clstr is not None:
            out.append(f"cluster_host_ip{sep}{clstr}   ; optional")
        if admin is not None:
            out.append(f"administrative{sep}{admin}")
        out.append("")
    inv = config.parse_inventory("\n".join(out), "inv.ini")
    assert list(inv.hosts) == [h[0] for h in hosts] and inv.warnings == ()
    for name, pers, mac, mgmt, clstr, admin in hosts:
        e = inv.hosts[name]
        assert (e.personality, e.mgmt_mac, e.mgmt_ip, e.cluster_host_ip, e.administrative) == (
            pers, mac.lower(), str(ipaddress.ip_address(mgmt)),
            str(ipaddress.ip_address(clstr)) if clstr else "", admin or "unlocked")


@FUZZ
@given(any_text | st.lists(st.sampled_from(
    ("[worker-0]", "[w 1]", "[" + "a" * 70 + "]", "personality = worker", "personality =",
     "mgmt_mac = 08:00:27:00:00:01", "mgmt_mac = 08:00:27:00:00:0", "mgmt_ip = 10.0.0.1",
     "mgmt_ip = 10.0.0.256", "cluster_host_ip = fd00::1", "administrative = locked",
     "administrative = maybe", "other = 1", "  continued", "no equals")) | any_text,
    max_size=14).map("\n".join))
def test_parse_inventory_gives_hosts_or_config_error(text):
    try:
        inv = config.parse_inventory(text, "inv.ini")
    except config.ConfigError as err:
        assert err.path == "inv.ini" and err.why
        return
    macs_seen, addrs_seen = set(), set()
    for name, e in inv.hosts.items():
        assert e.hostname == name and e.administrative in ("locked", "unlocked")
        assert set(e.personality.split(",")) <= set(config.PERSONALITY_WORDS)
        assert e.mgmt_mac == e.mgmt_mac.lower() and e.mgmt_mac not in macs_seen
        assert str(ipaddress.ip_address(e.mgmt_ip)) == e.mgmt_ip
        macs_seen.add(e.mgmt_mac)
        for a in filter(None, (e.mgmt_ip, e.cluster_host_ip)):
            assert a not in addrs_seen
            addrs_seen.add(a)


# -- netif: platform.conf, leases, ifcfg, dnsmasq.hosts, hosts -------------------------------


@FUZZ
@given(any_text)
def test_parse_platform_conf_never_raises(text):
    conf = netif.parse_platform_conf(text)
    assert all(isinstance(k, str) and k and isinstance(v, str) and "\n" not in v
               for k, v in conf.items())


conf_key = st.builds(lambda a, b: a + b, st.sampled_from(string.ascii_letters + "_"),
                     st.text(string.ascii_letters + string.digits + "_", max_size=20))


@FUZZ
@given(st.dictionaries(conf_key, st.text(st.characters(exclude_characters="\n"), max_size=30),
                       max_size=8), st.sampled_from(('"', "'")))
def test_platform_conf_round_trip(conf, quote):
    text = "# platform.conf\n" + "".join(f"{k} = {quote}{v}{quote}\n" for k, v in conf.items())
    assert netif.parse_platform_conf(text) == conf


def _write(path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _check_address(addr, logs_) -> None:
    assert addr == "" or str(ipaddress.IPv4Address(addr)) == addr
    assert all(level in ("debug", "info", "warning", "error") and isinstance(t, str)
               for level, t in logs_)


lease_text = st.lists(st.sampled_from(
    ("lease {", "}", "  fixed-address 10.0.0.1;", "fixed-address", "  fixed-address ;",
     "fixed-address 10.0.0.999;", "fixed-address ::1;", '  interface "eth0:2";', "\0"))
    | any_text, max_size=10).map("\n".join).map(str.encode)


@FEW
@given(st.binary(max_size=300) | lease_text,
       st.sampled_from(("eth0:2", "", ":", "../x", "a/b", "x\0y")) | st.text(max_size=10))
def test_dhcp_lease_address_never_raises(scratch, data, key):
    d = os.path.join(scratch, "dhcp")
    os.makedirs(d, exist_ok=True)
    _write(os.path.join(d, "dhclient.eth0:2.leases"), data)
    addr, logs_ = ifchain.dhcp_lease_address(d, key)
    _check_address(addr, logs_)


@FEW
@given(st.lists(ipv4s, min_size=1, max_size=3), st.sampled_from(("\n", "\r\n")))
def test_dhcp_lease_round_trip(scratch, addrs, eol):
    d = os.path.join(scratch, "dhcp-rt")
    os.makedirs(d, exist_ok=True)
    blocks = [f'lease {{{eol}  interface "vlan10:2";{eol}  fixed-address {a};{eol}}}'
              for a in addrs]
    _write(os.path.join(d, "dhclient.vlan10:2.leases"), eol.join(blocks).encode())
    addr, logs_ = ifchain.dhcp_lease_address(d, "vlan10:2")
    assert addr == addrs[-1]           # CRLF too: the '\r' goes with the white space
    _check_address(addr, logs_)


@FEW
@given(st.binary(max_size=300) | st.lists(st.sampled_from(
    ("address 10.0.0.1", " address 10.0.0.2", "address", "address 1.2.3", "addressx 9.9.9.9",
     "iface x inet static")) | any_text, max_size=8).map("\n".join).map(str.encode),
       st.sampled_from(("eth0:2", "", "x\0y", "../../etc/x")) | st.text(max_size=10))
def test_static_ifcfg_address_never_raises(scratch, data, key):
    d = os.path.join(scratch, "ifcfg")
    os.makedirs(d, exist_ok=True)
    _write(os.path.join(d, "ifcfg-eth0:2"), data)
    _check_address(*ifchain.static_ifcfg_address(d, key))


@FEW
@given(st.lists(ipv4s, min_size=1, max_size=3))
def test_static_ifcfg_round_trip(scratch, addrs):
    d = os.path.join(scratch, "ifcfg-rt")
    os.makedirs(d, exist_ok=True)
    _write(os.path.join(d, "ifcfg-bond0:2"), "".join(
        f"iface bond0:2 inet static\naddress {a}\n    netmask 255.255.255.0\n"
        for a in addrs).encode())
    assert ifchain.static_ifcfg_address(d, "bond0:2")[0] == addrs[-1]


@FUZZ
@given(any_text | st.lists(st.sampled_from(
    ("08:00:27:aa:bb:01,pxeboot-1,169.254.202.2,1d", "08:00:27:AA:BB:02,p,,1d",
     "zz,p,1.2.3.4", "08:00:27:aa:bb:03,p,1.2.3.999", ",,", "pxecontroller,1.2.3.4", "#c",
     "08:00:27:aa:bb:04\n,p,1.2.3.4")) | any_text, max_size=10).map("\n".join))
def test_parse_dnsmasq_hosts_never_raises(text):
    entries, problems = netif.parse_dnsmasq_hosts(text)
    for e in entries:
        assert ifchain.MAC_RE.match(e.mac) and len(e.mac) == 17
        assert e.ip == "" or str(ipaddress.IPv4Address(e.ip)) == e.ip
    assert all(n >= 1 and why for n, why in problems)


@FUZZ
@given(st.lists(st.tuples(mixed_case_macs, st.text(string.ascii_letters + string.digits + "-",
                                                   max_size=12), st.none() | ipv4s,
                          st.sampled_from(("", ",1d", ",infinite"))), max_size=8))
def test_dnsmasq_hosts_round_trip(rows):
    text = "pxecontroller,10.0.0.1\n" + "".join(
        f"{mac},{name},{ip or ''}{lease}\r\n" for mac, name, ip, lease in rows)
    entries, problems = netif.parse_dnsmasq_hosts(text)
    assert problems == []
    assert [(e.mac, e.name, e.ip, e.lineno) for e in entries] == [
        (mac.lower(), name, ip or "", i + 2) for i, (mac, name, ip, _) in enumerate(rows)]


@FUZZ
@given(any_text)
def test_parse_hosts_file_never_raises(text):
    table = netif.parse_hosts_file(text)
    for name, addrs in table.items():
        assert name == name.lower() and addrs and len(set(addrs)) == len(addrs)
        assert all(netif._ip_family(a) for a in addrs)


@FUZZ
@given(st.lists(st.tuples(ips, st.lists(st.text(string.ascii_letters + string.digits + ".-",
                                                 min_size=1, max_size=20), min_size=1,
                                         max_size=3)), max_size=8))
def test_hosts_file_round_trip(rows):
    text = "".join(f"{ip}\t{' '.join(names)}  # c\n" for ip, names in rows)
    want: dict = {}
    for ip, names in rows:
        for n in names:
            if ip not in want.setdefault(n.lower(), []):
                want[n.lower()].append(ip)
    assert netif.parse_hosts_file(text) == want


# -- ctl: one control request -----------------------------------------------------------------


def ctl_server(handler):
    """A `agent_ctl.Server` without its socket: `_answer` is the whole request decoder."""
    server = agent_ctl.Server.__new__(agent_ctl.Server)
    server.log = logging.getLogger("mtce.test.fuzz.ctl")
    server.throttle = logs.Throttle(server.log, FakeClock())
    server.handler = handler
    return server


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats()
                           | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=4)
                           | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)
requests = st.fixed_dictionaries({}, optional={
    "cmd": st.sampled_from(("hosts", "alarms", "status", "lock", "unlock", "reboot", "reset",
                            "lazy-reboot", "alive", "x")) | json_values,
    "host": st.sampled_from(("worker-0", "")) | json_values})


@FUZZ
@given(st.binary(max_size=400) | requests.map(lambda r: json.dumps(r).encode() + b"\n")
       | json_values.map(lambda v: json.dumps(v).encode()))
@example(b"x" * (agent_ctl.MAX_REQUEST + 1))
@example(b"\xff\xfe\n")
def test_ctl_answer_gives_a_reply_and_the_handler_only_sees_objects(raw):
    seen = []

    def handler(req):
        seen.append(req)
        if req.get("cmd") == "x":
            raise KeyError("a failing handler is answered, not raised")
        return {"ok": True}

    reply = ctl_server(handler)._answer(raw)
    assert isinstance(reply, dict) and isinstance(reply["ok"], bool)
    json.dumps(reply)
    assert all(isinstance(r, dict) for r in seen) and len(seen) <= 1
    if not reply["ok"]:
        assert reply["error"]


def test_ctl_deeply_nested_request_gets_a_reply():
    # Found by this fuzzer: RecursionError escaped the control socket's decoder.
    reply = ctl_server(lambda req: {"ok": True})._answer(b"[" * 60000 + b"\n")
    assert reply["ok"] is False and reply["error"].startswith("bad request")


def test_agent_handle_request_answers_any_object(tmp_path):
    """The agent's request handler behind `_answer`, on a real (socketless) Agent."""
    from harness.cluster import Cluster

    from mtce import agent, loop

    c = Cluster(tmp_path / "c", workers=1)
    clock = FakeClock()
    log = logging.getLogger("mtce.test.fuzz.agent")
    a = agent.Agent(config.load(c.agent_ini), loop.Loop(clock, log), clock, log)
    a.run(a.table.apply_inventory(a.inventory, clock.now())[3])     # start() without sockets

    @FUZZ
    @given(requests)
    def run(req):
        reply = a.handle_request(req)
        assert isinstance(reply, dict) and isinstance(reply["ok"], bool)
        json.dumps(reply)
        if not reply["ok"]:
            assert isinstance(reply["error"], str) and reply["error"]

    run()
    assert {h["hostname"] for h in a.table.to_json(clock.now())} == {"controller-0", "worker-0"}
