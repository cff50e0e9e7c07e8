"""The mtcAgent <-> mtcClient wire message, `mtc_message_type`, declared once.

Bytes in, objects out and back; no I/O and no logging (callers count and throttle). Decoding
never raises on bad bytes: `decode` raises only `DecodeError`, whose `reason` says what was
wrong, and `try_decode` returns that reason instead. Layout (docs/protocol.md §1;
little-endian, packed, no padding):

    struct mtc_message_type {          offset size
        char         hdr[64];          0      64   17-char signature + NUL; commands: MAC at 17
        unsigned short ver;            64     2
        unsigned short rev;            66     2
        unsigned int   res;            68     4
        unsigned int   cmd;            72     4
        unsigned int   num;            76     4
        unsigned int   parm[5];        80     20
        char         buf[960];         100    960  NUL-terminated JSON
    };                                 sizeof = 1060
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import NamedTuple

from mtce.states import (
    EVENT_MONITOR_READY, FEATURE_PXEBOOT_MTCALIVE, MTC_CMD_VERSION, MTCALIVE_NUM,
    SERVICE_MTCCLIENT, Cmd, Net,
)

# (name, struct format, offset): the header part, everything before `buf`.
FIELDS = (
    ("hdr", "64s", 0),
    ("ver", "H", 64),
    ("rev", "H", 66),
    ("res", "I", 68),
    ("cmd", "I", 72),
    ("num", "I", 76),
    ("parm", "5I", 80),
)
HEADER = struct.Struct("<" + "".join(fmt for _, fmt, _ in FIELDS))   # '<64sHHIII5I'
HDR_SIZE = 64
HEADER_SIZE = HEADER.size            # 100: the "header part"; an ACK is exactly this long
BUF_SIZE = 960
MSG_SIZE = HEADER_SIZE + BUF_SIZE    # 1060
SIG_LEN = 17                         # signature characters; a NUL follows at hdr[17]
MAC_OFFSET = 17                      # agent commands write the target MAC text here
MAX_TEXT = BUF_SIZE - 1              # the receiver forces buf[959] to NUL

assert HEADER_SIZE == 100 and MSG_SIZE == 1060
assert all(struct.calcsize("<" + "".join(f for _, f, _ in FIELDS[:i])) == offset
           for i, (_, _, offset) in enumerate(FIELDS))

# Header signatures (`CC/nodeBase.cpp:21-47`), each exactly 17 characters.
SIG_CMD_REQ = b"cgts mtc cmd req:"
SIG_CMD_RSP = b"cgts mtc cmd rsp:"
SIG_MESSAGE = b"cgts mtc message:"       # mtcAlive and goEnabled, client -> agent
SIG_REP_MSG = b"cgts mtc rep msg:"
SIG_EVENT = b"mtce event msg  :"         # note the two spaces
SIG_LOOPBACK = b"mtc loopback msg:"
SIGNATURES = (SIG_CMD_REQ, SIG_CMD_RSP, SIG_MESSAGE, SIG_REP_MSG, SIG_EVENT, SIG_LOOPBACK)
assert all(len(s) == SIG_LEN for s in SIGNATURES)
_SIGS = frozenset(SIGNATURES)

_INT32 = 1 << 31
_UINT32 = 1 << 32


# The fields an agent needs from an mtcAlive, in one unpack: signature, cmd, parm[0..3].
_MTCALIVE_FIELDS = struct.Struct("<17s55xI4x4I4x")
assert _MTCALIVE_FIELDS.size == HEADER_SIZE
_MTCALIVE = int(Cmd.MTCALIVE)      # a plain int: compared on the hot path
_SEQ_KEY = b',"sequence":'
# What may follow an accepted text's prefix for the next one to be valid as it is: a JSON
# integer (no leading zero, as json.loads demands), the closing brace and the NUL, nothing
# else (the original sends exactly that, docs/protocol.md §3).
_SEQ_TAIL = re.compile(rb"-?(?:0|[1-9][0-9]{0,19})\}\0")
_SEQ_FULLMATCH = _SEQ_TAIL.fullmatch        # (buffer, start, end): no copy of the text


def mtcalive_fields(data) -> tuple | None:
    """(uptime, flags, seq) of a datagram that has an mtcAlive's header part and one text
    ending at the datagram's NUL, or None for anything else.

    Only the header: whether the text is a valid mtcAlive is `text_matches` (against the
    host's last valid one) or `parse_mtcalive`.
    """
    return mtcalive_fields_at(data, 0, len(data))


def mtcalive_fields_at(buf, at: int, size: int) -> tuple | None:
    """`mtcalive_fields` of the datagram `buf[at:at + size]`, read in place."""
    if size <= HEADER_SIZE + 2 or size > MSG_SIZE - 1 or buf[at + size - 1] != 0:
        return None
    sig, cmd, uptime, _, flags, seq = _MTCALIVE_FIELDS.unpack_from(buf, at)
    if sig != SIG_MESSAGE or cmd != _MTCALIVE:
        return None
    return uptime, flags, seq


def text_matches(data, prefix: bytes) -> bool:
    """Whether an mtcAlive datagram's text is `prefix` (an accepted text up to its sequence
    number, `sequence_prefix`) followed by a JSON integer, `}` and the final NUL.

    A host's mtcAlive differs from its last one only in `"sequence"`: this byte comparison
    is the agent's fast path. It accepts only texts that `parse_mtcalive` accepts, with the
    fields of the text the prefix came from (tests/test_alive.py proves it on random and
    mutated buffers).
    """
    if not isinstance(data, (bytes, bytearray)):
        data = bytes(data)
    return text_matches_at(data, 0, len(data), prefix)


def text_matches_at(buf, at: int, size: int, prefix: bytes) -> bool:
    """`text_matches` of the datagram `buf[at:at + size]` (`buf` a bytes or bytearray)."""
    start = at + HEADER_SIZE
    mid = start + len(prefix)
    return mid <= at + size and buf.startswith(prefix, start) and \
        _SEQ_FULLMATCH(buf, mid, at + size) is not None


def sequence_prefix(text: bytes) -> bytes | None:
    """The part of an accepted mtcAlive text before its sequence number, when the text ends
    as the original writes it (`..."sequence":<n>}`); None otherwise (always parsed)."""
    at = text.rfind(_SEQ_KEY)
    if at < 0:
        return None
    prefix = text[:at + len(_SEQ_KEY)]
    if _SEQ_TAIL.fullmatch(text[len(prefix):] + b"\0") is None:
        return None
    return prefix


class DecodeError(ValueError):
    """A datagram or payload that is not a valid message; `reason` is one short phrase."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Message(NamedTuple):
    """One decoded datagram. `hdr` is the raw 64 bytes (the ACK echoes them)."""

    sig: bytes
    hdr: bytes
    ver: int
    rev: int
    res: int
    cmd: int
    num: int
    parm: tuple
    buf: bytes          # the text in buf, without its NUL
    size: int           # bytes received

    @property
    def mac(self) -> str:
        """The target MAC text an agent command carries at hdr[17:] ("" if none)."""
        raw = self.hdr[MAC_OFFSET:].split(b"\0", 1)[0]
        return raw.decode("ascii", "replace")

    def text(self) -> str:
        """`buf` as text; raises DecodeError for bytes that are not UTF-8."""
        try:
            return self.buf.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("payload is not UTF-8") from None

    def json(self) -> dict:
        """`buf` parsed as a JSON object; raises DecodeError otherwise."""
        return parse_json(self.buf)


def decode(data) -> Message:
    """Decode one received datagram. Raises DecodeError with a reason, nothing else.

    Lenient where the original is (a missing trailing NUL, any ver/rev/res), strict where
    acting on the bytes would be unsafe (shorter than the header part, longer than the
    struct, an unknown signature).
    """
    size = len(data)
    if size < HEADER_SIZE:
        raise DecodeError(f"underrun (only rxed {size} bytes)")
    if size > MSG_SIZE:
        raise DecodeError(f"oversize ({size} bytes, max {MSG_SIZE})")
    hdr, ver, rev, res, cmd, num, *parm = HEADER.unpack_from(data)
    sig = hdr[:SIG_LEN]
    if sig not in _SIGS:
        raise DecodeError("unknown header signature")
    # The original forces buf[959] to NUL and zeroes what was not received, so the text
    # ends at the first NUL or at the end of the datagram.
    buf = bytes(data[HEADER_SIZE:min(size, MSG_SIZE - 1)])
    nul = buf.find(b"\0")
    if nul >= 0:
        buf = buf[:nul]
    return Message(sig, hdr, ver, rev, res, cmd, num, tuple(parm), buf, size)


def try_decode(data) -> tuple[Message | None, str | None]:
    """`decode` that returns (message, None) or (None, reason) and never raises."""
    try:
        return decode(data), None
    except DecodeError as err:
        return None, err.reason


def parse_json(buf: bytes) -> dict:
    """A message text as a JSON object, or DecodeError('...')."""
    if not buf:
        raise DecodeError("empty payload")
    try:
        text = buf.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("payload is not UTF-8") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise DecodeError("payload is not valid JSON") from None
    if not isinstance(obj, dict):
        raise DecodeError("payload is not a JSON object")
    return obj


FUNCTIONS = ("controller", "worker", "storage")
_FUNCTION_ITEM = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def valid_personality(value) -> bool:
    """A personality as clients send it (`subfunction=` of platform.conf): a comma list of
    lower-case words naming at least one of controller, worker, storage ("worker",
    "controller,worker,lowlatency"). The original's `set_host_functions` finds those words
    as substrings; a text without any of them fails there (docs/protocol.md §1.3)."""
    if not isinstance(value, str) or not value or len(value) > 128:
        return False
    items = value.split(",")
    return (all(_FUNCTION_ITEM.fullmatch(i) for i in items)
            and any(i in FUNCTIONS for i in items))


class AliveText(NamedTuple):
    """What the agent reads from a valid mtcAlive's JSON (docs/protocol.md §1.3,
    docs/contract.md §8)."""
    hostname: str | None
    personality: str
    cluster_host_ip: str | None
    pxeboot_ip: str | None = None


def parse_mtcalive(buf: bytes) -> AliveText:
    """An mtcAlive text as the agent accepts it: a JSON object with a valid `personality`;
    raises DecodeError otherwise. `hostname`, `cluster_host_ip` and `pxeboot_ip` are None
    unless strings."""
    obj = parse_json(buf)
    personality = obj.get("personality")
    if personality is None:
        raise DecodeError("mtcAlive without a personality")
    if not valid_personality(personality):
        raise DecodeError("mtcAlive with an invalid personality")
    hostname, clstr, pxe = obj.get("hostname"), obj.get("cluster_host_ip"), obj.get("pxeboot_ip")
    return AliveText(hostname if isinstance(hostname, str) else None, personality,
                     clstr if isinstance(clstr, str) else None,
                     pxe if isinstance(pxe, str) else None)


# -- encoding ---------------------------------------------------------------------------------

def pack(sig: bytes, *, cmd: int = 0, ver: int = 0, rev: int = 0, res: int = 0, num: int = 0,
         parm=(), text: str | None = None, hdr_extra: bytes = b"") -> bytes:
    """Build a datagram: header part, then `text` and its NUL (100 + strlen + 1 bytes).

    `text` None gives the bare 100-byte header part. `hdr_extra` goes at hdr[17:] (the
    target MAC of an agent command), overwriting the signature's NUL as the original does.
    """
    if sig not in _SIGS:
        raise ValueError(f"unknown signature {sig!r}")
    hdr = (sig + (hdr_extra or b"\0")).ljust(HDR_SIZE, b"\0")
    if len(hdr) > HDR_SIZE or (hdr_extra and len(hdr) == HDR_SIZE and hdr[-1]):
        raise ValueError("header text longer than 63 bytes")
    parms = tuple(parm) + (0,) * (5 - len(parm))
    head = HEADER.pack(hdr, ver, rev, res, cmd, num, *parms)
    if text is None:
        return head
    body = text.encode("utf-8")
    if len(body) > MAX_TEXT or b"\0" in body:
        raise ValueError(f"message text of {len(body)} bytes does not fit (max {MAX_TEXT})")
    return head + body + b"\0"


def ack(msg: Message, num: int | None = None, parm: tuple | None = None) -> bytes:
    """The client's ACK: the received header part echoed with only hdr[0:18] rewritten.

    The rewrite's NUL lands on hdr[17], so the MAC's first character is lost and the rest
    stays (docs/protocol.md §1.2); exactly 100 bytes are sent, never the buffer. `num`/`parm`
    replace the echoed ones where the original rewrites them (host services: num 2, parm[0]
    the result, parm[1] 0x1B0000B1, `M/mtcCompMsg.cpp:461-464`).
    """
    hdr = SIG_CMD_RSP + b"\0" + msg.hdr[SIG_LEN + 1:]
    num = msg.num if num is None else num
    parms = tuple(msg.parm if parm is None else parm)
    parms = parms[:5] + tuple(msg.parm[len(parms):5])
    return HEADER.pack(hdr, msg.ver, msg.rev, msg.res, msg.cmd, num & 0xFFFFFFFF,
                       *(p & 0xFFFFFFFF for p in parms))


def json_text(obj: dict) -> str:
    """Compact JSON as the original writes it: keys in the given order, no spaces."""
    return json.dumps(obj, separators=(",", ":"))


def as_c_int(value: int) -> int:
    """An unsigned 32-bit value printed with the original's `itos(int)` (negative above 2^31-1)."""
    value %= _UINT32
    return value - _UINT32 if value >= _INT32 else value


@dataclass(frozen=True)
class Identity:
    """What a client says about itself in every mtcAlive (docs/protocol.md §3, keys 1-6)."""

    hostname: str
    personality: str
    pxeboot_ip: str
    mgmt_ip: str
    cluster_host_ip: str
    mgmt_mac: str

    def as_dict(self) -> dict:
        return {
            "hostname": self.hostname,
            "personality": self.personality,
            "pxeboot_ip": self.pxeboot_ip,
            "mgmt_ip": self.mgmt_ip,
            "cluster_host_ip": self.cluster_host_ip,
            "mgmt_mac": self.mgmt_mac,
        }


def mtcalive(identity: Identity, net: Net, seq: int, *, uptime: int = 0, health: int = 0,
             flags: int = 0) -> bytes:
    """One client mtcAlive for `net`; `seq` is that network's sequence number (parm[3])."""
    body = identity.as_dict()
    body["interface"] = net.iface
    body["sequence"] = as_c_int(seq)
    return pack(SIG_MESSAGE, cmd=Cmd.MTCALIVE, num=MTCALIVE_NUM,
                parm=(uptime % _UINT32, health, flags, seq % _UINT32, 0), text=json_text(body))


def ready_event(hostname: str, active_controller_pxeboot_address: str = "") -> bytes:
    """The mtcClient ready event with the hard-coded feature list (docs/protocol.md §3)."""
    body = {
        "hostname": hostname,
        "service": SERVICE_MTCCLIENT,
        "active_controller_pxeboot_address": active_controller_pxeboot_address,
        "features": [FEATURE_PXEBOOT_MTCALIVE],
    }
    return pack(SIG_EVENT, cmd=EVENT_MONITOR_READY, text=json_text(body))


def command(cmd: int, mac: str, data: str, *, num: int = 0, parm=()) -> bytes:
    """An agent -> client command: ver 1, the target's mgmt MAC at hdr[17] (lower case)."""
    return pack(SIG_CMD_REQ, cmd=cmd, ver=MTC_CMD_VERSION, num=num, parm=parm, text=data,
                hdr_extra=mac.lower().encode("ascii"))


def default_data(address: str, net: Net) -> str:
    """The data of every agent command but a pxeboot mtcAlive request (docs/protocol.md §3)."""
    return json_text({"address": address, "interface": net.iface})


def pxeboot_info(controller: str, controller_0: str, controller_1: str) -> str:
    """The data of an mtcAlive request over pxeboot: where the client sends pxeboot mtcAlive."""
    return json_text({"pxebootInfo": {
        "controller": controller, "controller-0": controller_0, "controller-1": controller_1}})


def parse_pxeboot_info(buf: bytes) -> dict:
    """The `pxebootInfo` object of an mtcAlive request; raises DecodeError.

    Keys whose value is not a string are dropped, so the caller sees them as missing.
    """
    try:
        obj = parse_json(buf)
    except DecodeError as err:
        raise DecodeError(f"Failed to tokenize mtcAlive request message data ({err.reason})") \
            from None
    info = obj.get("pxebootInfo")
    if not isinstance(info, dict):
        raise DecodeError("Failed to parse 'pxebootInfo' from mtcAlive request message")
    return {k: v for k, v in info.items() if isinstance(v, str)}


def parse_ready_event(msg: Message) -> tuple[str, list | None]:
    """(hostname, features) of a ready event; raises DecodeError.

    `features` is the list of strings offered, or None when the key is missing or is not a
    JSON array (an older client, "not offering feature list").
    """
    obj = msg.json()
    hostname = obj.get("hostname")
    if not isinstance(hostname, str) or not hostname:
        raise DecodeError("ready event without a hostname")
    features = obj.get("features")
    if not isinstance(features, list):
        return hostname, None
    return hostname, [f for f in features if isinstance(f, str)]


def describe(msg: Message) -> str:
    """The original's forced dump shape: `<cmd>:<num>:<p0>.<p1>.<p2>.<p3> [<hdr>] <text>`."""
    p = msg.parm
    hdr = msg.hdr.split(b"\0", 1)[0].decode("ascii", "replace")
    text = msg.buf[:200].decode("utf-8", "replace")
    shown = f"[{hdr}] {text}".encode("unicode_escape").decode("ascii")
    return f"{msg.cmd}:{msg.num}:{p[0]}.{p[1]}.{p[2]}.{p[3]} {shown}"
