"""Message authentication: an HMAC-SHA256 trailer around the unchanged wire format.

Off unless `[security] key_file` is set; then every datagram gets, after everything the
original sends (after the text's NUL, or after the 100 bytes of an ACK), the ASCII trailer
`MTCA1 <key-id> <unix-time-ms> <hex HMAC-SHA256>` and a NUL (docs/contract.md §3). The HMAC, under
the key named by <key-id>, covers every byte before the trailer followed by
`<key-id> <unix-time-ms>`. C peers stop reading at the NUL, so they ignore it.

The first key signs and every key verifies, so keys rotate without downtime (add the new key
second everywhere, then first everywhere, then drop the old one). A receiver rejects a tag that
does not verify, a time more than `FRESH_S` from its own clock, and a (key-id, time, HMAC) it
has already accepted; an untagged datagram is accepted only with `require = no`.
Pure: the wall clock comes in as a function; no logging (callers count and throttle).
"""

from __future__ import annotations

import collections
import os
import re

from mtce.alive import HEADER_SIZE, MSG_SIZE

MAGIC = b"MTCA1 "
FRESH_S = 30.0
MIN_KEY_BYTES = 32
_KID = re.compile(r"^[A-Za-z0-9._-]{1,16}$")
_TRAILER = re.compile(rb"^MTCA1 ([A-Za-z0-9._-]{1,16}) (\d{1,15}) ([0-9a-f]{64})\0$")


class KeyFileError(ValueError):
    def __init__(self, line: int | None, why: str):
        super().__init__(why)
        self.line, self.why = line, why


def parse_keys(text: str) -> list[tuple[str, bytes]]:
    """`<key-id> <hex key>` per line; `#` comments and blank lines skipped. First signs."""
    keys: list[tuple[str, bytes]] = []
    seen = set()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise KeyFileError(lineno, "expected '<key-id> <hex key>'")
        kid, hexkey = parts
        if not _KID.match(kid):
            raise KeyFileError(lineno, f"key id {kid!r}: 1-16 of A-Z a-z 0-9 . _ -")
        if kid in seen:
            raise KeyFileError(lineno, f"key id {kid!r} appears twice")
        try:
            key = bytes.fromhex(hexkey)
        except ValueError:
            raise KeyFileError(lineno, "the key is not hexadecimal") from None
        if len(key) < MIN_KEY_BYTES:
            raise KeyFileError(lineno, f"the key has {len(key)} bytes; {MIN_KEY_BYTES} or more "
                                       "are needed")
        seen.add(kid)
        keys.append((kid, key))
    if not keys:
        raise KeyFileError(None, "no keys")
    return keys


def load_keys(path: str) -> tuple[list[tuple[str, bytes]], list[str]]:
    """Keys from `path`, plus warnings (a key file others can read). Raises KeyFileError."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as err:
        raise KeyFileError(None, f"cannot read: {getattr(err, 'strerror', None) or err}") \
            from None
    warnings = []
    if mode & 0o077:
        warnings.append(f"{path} is readable by others (mode {mode & 0o777:o}) ; chmod 600 it")
    return parse_keys(text), warnings


def split(data) -> tuple[bytes, bytes | None]:
    """(what the original sends, the trailer or None) of a received datagram."""
    data = bytes(data)
    if data[HEADER_SIZE:HEADER_SIZE + len(MAGIC)] == MAGIC:
        return data[:HEADER_SIZE], data[HEADER_SIZE:]
    nul = data.find(b"\0", HEADER_SIZE)
    if nul < 0 or data[nul + 1:nul + 1 + len(MAGIC)] != MAGIC:
        return data, None
    return data[:nul + 1], data[nul + 1:]


class Authenticator:
    """Signs outgoing and checks incoming datagrams for one daemon."""

    def __init__(self, keys: list[tuple[str, bytes]], require: bool, wall,
                 max_remembered: int = 1_000_000):
        # hashlib loads OpenSSL (~3 MiB): imported only when keys are in use.
        import hashlib
        import hmac
        self._hmac, self._sha256 = hmac, hashlib.sha256
        self.keys = list(keys)
        self.by_id = dict(self.keys)
        self.require = require
        self.wall = wall
        self.max_remembered = max_remembered
        self._seen: collections.OrderedDict = collections.OrderedDict()   # tag -> time_ms
        self.counters = collections.Counter()
        # What this process signed lately, so that identical bytes signed within the same
        # millisecond (a ready event on two networks, an ACK to three addresses) never share
        # a time, hence a tag, which a receiver would drop as a replay.
        self._signed: dict[bytes, int] = {}
        self._signed_order: collections.deque = collections.deque()

    def _mac(self, key: bytes, payload: bytes, kid: str, ms: int) -> str:
        return self._hmac.new(key, payload + f"{kid} {ms}".encode(), self._sha256).hexdigest()

    def signing_time(self, payload: bytes) -> int:
        """The wall clock in ms, made later than any earlier signing of the same bytes.

        Strictly increasing per payload, not per process: a process signing thousands of
        different datagrams a second (an agent auditing many hosts) keeps its times on the
        clock, while the same bytes twice in one millisecond get two times, so two tags.
        """
        now_ms = int(self.wall() * 1000)
        signed, order = self._signed, self._signed_order
        while order and order[0][0] < now_ms - 1:
            at, old = order.popleft()
            if signed.get(old) == at:
                del signed[old]
        last = signed.get(payload)
        ms = now_ms if last is None or last < now_ms else last + 1
        signed[payload] = ms
        order.append((ms, payload))
        return ms

    def sign(self, payload: bytes) -> bytes:
        kid, key = self.keys[0]
        ms = self.signing_time(payload)
        tag = self._mac(key, payload, kid, ms)
        return payload + MAGIC + f"{kid} {ms} {tag}".encode() + b"\0"

    def check(self, data) -> tuple[bytes | None, str | None]:
        """(payload, None) to accept, or (None, reason) to drop."""
        return self.verify(data)[:2]

    def verify(self, data) -> tuple[bytes | None, str | None, bool]:
        """`check`, and whether a valid tag vouched for the payload (not `require = no`
        letting an untagged datagram through)."""
        payload, trailer = split(data)
        if trailer is None:
            if self.require:
                self.counters["untagged"] += 1
                return None, "no authentication tag", False
            self.counters["accepted_untagged"] += 1
            return payload, None, False
        m = _TRAILER.match(trailer)
        if m is None:
            self.counters["malformed"] += 1
            return None, "malformed authentication tag", False
        kid, ms, tag = m.group(1).decode(), int(m.group(2)), m.group(3).decode()
        key = self.by_id.get(kid)
        if key is None:
            self.counters["unknown_key"] += 1
            return None, f"unknown key id {kid!r}", False
        if not self._hmac.compare_digest(self._mac(key, payload, kid, ms), tag):
            self.counters["bad_tag"] += 1
            return None, "authentication tag does not verify", False
        now_ms = int(self.wall() * 1000)
        if abs(now_ms - ms) > FRESH_S * 1000:
            self.counters["stale"] += 1
            return None, f"time {ms} is {abs(now_ms - ms) / 1000:.0f} s from this clock", False
        if tag in self._seen:
            self.counters["replayed"] += 1
            return None, "replayed (already accepted)", False
        self._remember(tag, ms, now_ms)
        self.counters["accepted"] += 1
        return payload, None, True

    def _remember(self, tag: str, ms: int, now_ms: int) -> None:
        seen = self._seen
        seen[tag] = ms
        # Entries older than the freshness window can never be accepted again anyway.
        horizon = now_ms - 2 * FRESH_S * 1000
        while seen and (len(seen) > self.max_remembered or next(iter(seen.values())) < horizon):
            seen.popitem(last=False)


def carry_over(old: Authenticator | None, new: Authenticator | None):
    """After a reload: the new keys keep the old memory of accepted tags (no replays) and of
    what was signed (no two tags alike)."""
    if old is not None and new is not None:
        new._seen = old._seen
        new._signed, new._signed_order = old._signed, old._signed_order
    return new


def from_config(cfg, wall) -> tuple[Authenticator | None, list[str]]:
    """The daemon's Authenticator (None when `[security] key_file` is empty).

    Raises config.ConfigError naming the key file and line.
    """
    from mtce.config import ConfigError
    path = cfg.security.key_file
    if not path:
        return None, []
    try:
        keys, warnings = load_keys(path)
    except KeyFileError as err:
        raise ConfigError(path, err.line, None, err.why) from None
    return Authenticator(keys, cfg.security.require, wall), warnings


assert MSG_SIZE == 1060
