"""Message authentication: an HMAC-SHA256 trailer around the unchanged wire format.

Off unless `[security] key_file` is set; then every datagram gets, after everything the
original sends (after the text's NUL, or after the 100 bytes of an ACK), the ASCII trailer
`MTCA1 <key-id> <unix-time-ms> <hex HMAC-SHA256>` and a NUL (docs/contract.md §3). The HMAC, under
the key named by <key-id>, covers every byte before the trailer followed by
`<key-id> <unix-time-ms>`. C peers stop reading at the NUL, so they ignore it.

The first key signs and every key verifies, so keys rotate without downtime (add the new key
second everywhere, then first everywhere, then drop the old one). A receiver rejects a tag that
does not verify, a time more than `FRESH_S` from its own clock, and a (key-id, time, HMAC) it
has already accepted, whatever its wall clock did since; an untagged datagram is accepted only
with `require = no`.
Pure: the wall and monotonic clocks come in as functions; no logging (callers count and
throttle).
"""

from __future__ import annotations

import bisect
import collections
import heapq
import os
import re

from mtce.alive import HEADER_SIZE, MSG_SIZE

MAGIC = b"MTCA1 "
FRESH_S = 30.0
FRESH_MS = int(FRESH_S * 1000)
REPLAY_CAP = 200_000        # tags remembered at most (~50 MB: a minute at 3,300 a second)
FORGOTTEN_RANGES = 64       # ranges of forgotten times kept at most (the closest two merge)
FORGOTTEN_GAP_MS = FRESH_MS  # a forgotten time this close to a range joins it
START_SLACK_MS = 10         # a tag this much older than the start is still taken: the few ms
                            # a signer puts identical bytes back, and a skew NTP keeps below
SIGNED_KEEP_S = 1.0         # how long a signing's time stays taken for the same payload
SIGNED_CAP = 100_000
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
    """Signs outgoing and checks incoming datagrams for one daemon.

    A tag once accepted is never accepted again by this daemon, whatever its wall clock does
    (NTP stepping it, a VM restored), with bounded memory: accepted tags are kept, ordered by
    their times, until they are stale by the wall clock (older than `FRESH_S`: a replay is
    refused as stale then); the times of the tags it forgets (stale, or past
    `max_remembered`) are kept as a few ranges, refused should the clock step back into them;
    and tags signed before this daemon started (by its clock, corrected for steps since) are
    refused, which covers what its previous process accepted. The wall clock (`wall`) stamps
    and judges; the monotonic one (`mono`) keeps the start and the signing memory.
    """

    def __init__(self, keys: list[tuple[str, bytes]], require: bool, wall, mono,
                 max_remembered: int = REPLAY_CAP):
        # hashlib loads OpenSSL (~3 MiB): imported only when keys are in use.
        import hashlib
        import hmac
        self._hmac, self._sha256 = hmac, hashlib.sha256
        self.keys = list(keys)
        self.by_id = dict(self.keys)
        self.require = require
        self.wall, self.mono = wall, mono
        self.max_remembered = max_remembered
        # Accepted tags: tag -> its time in ms, and (time, tag) as a heap, oldest time first.
        self._seen: dict = {}
        self._by_time: list = []
        # Times whose tags were forgotten: disjoint ranges [lo, hi], in order.
        self._forgotten_lo: list = []
        self._forgotten_hi: list = []
        # When this daemon started (monotonic s): carried over by a reload.
        self._started = mono()
        self.counters = collections.Counter()
        # What this process signed lately, so that identical bytes signed within the same
        # millisecond (a ready event on two networks, an ACK to three addresses) never share
        # a time, hence a tag, which a receiver would drop as a replay: hash(payload) -> the
        # times given to it; and (monotonic time, hash, ms) in signing order, to forget them.
        self._signed: dict[int, list[int]] = {}
        self._signed_order: collections.deque = collections.deque()

    def _mac(self, key: bytes, payload: bytes, kid: str, ms: int) -> str:
        return self._hmac.new(key, payload + f"{kid} {ms}".encode(), self._sha256).hexdigest()

    def signing_time(self, payload: bytes) -> int:
        """The wall clock in ms, or just before it: never a time this payload was given in the
        last `SIGNED_KEEP_S`, and never ahead of the wall clock.

        Distinct per payload, not per process: a process signing thousands of different
        datagrams a second keeps its times on the clock, while the same bytes three times in
        one millisecond get that millisecond and the two before it. After the clock steps
        back, the next signature carries the new wall time (a time ahead of it, as a
        strictly increasing stamp would give, is stale to every receiver).
        """
        now_ms = int(self.wall() * 1000)
        mono = self.mono()
        signed, order = self._signed, self._signed_order
        while order and (mono - order[0][0] > SIGNED_KEEP_S or len(order) > SIGNED_CAP):
            _, key, ms = order.popleft()
            times = signed.get(key)
            if times is not None:
                if ms in times:
                    times.remove(ms)
                if not times:
                    del signed[key]
        key = hash(payload)       # a collision only moves a stamp back a millisecond
        times = signed.setdefault(key, [])
        ms = now_ms
        while ms in times:
            ms -= 1
        times.append(ms)
        order.append((mono, key, ms))
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
        if abs(now_ms - ms) > FRESH_MS:
            self.counters["stale"] += 1
            return None, f"time {ms} is {abs(now_ms - ms) / 1000:.0f} s from this clock", False
        if tag in self._seen:
            self.counters["replayed"] += 1
            return None, "replayed (already accepted)", False
        why = self._too_old(ms, now_ms)
        if why is not None:
            return None, why, False
        self._remember(tag, ms, now_ms)
        self.counters["accepted"] += 1
        return payload, None, True

    def _too_old(self, ms: int, now_ms: int) -> str | None:
        """Why a fresh tag not in memory may still be one accepted before: signed before this
        daemon started, or of a time whose tags it has forgotten (its clock stepped back
        since, or the memory was full). Both texts start as a stale one's: one reason label."""
        start = now_ms - round((self.mono() - self._started) * 1000)   # by today's clock
        if ms < start - START_SLACK_MS:
            self.counters["before_start"] += 1
            return f"time {ms} is before this daemon started ({start})"
        i = bisect.bisect_right(self._forgotten_lo, ms) - 1
        if i >= 0 and ms <= self._forgotten_hi[i]:
            self.counters["forgotten"] += 1
            return (f"time {ms} is among times already seen and forgotten "
                    f"({self._forgotten_lo[i]}..{self._forgotten_hi[i]}): a replay cannot be "
                    "told")
        return None

    def _remember(self, tag: str, ms: int, now_ms: int) -> None:
        """Keep an accepted tag until it is stale by the wall clock; forget the stale ones,
        oldest time first (one from the future holds back nothing), and past `max_remembered`
        the oldest whatever their time (counted: refused from then on as forgotten)."""
        self._seen[tag] = ms
        heap = self._by_time
        heapq.heappush(heap, (ms, tag))
        horizon = now_ms - FRESH_MS
        while heap and (heap[0][0] < horizon or len(heap) > self.max_remembered):
            old_ms, old_tag = heapq.heappop(heap)
            if old_ms >= horizon:
                self.counters["forgotten_early"] += 1
            self._seen.pop(old_tag, None)
            self._forget(old_ms)

    def _forget(self, ms: int) -> None:
        """Add `ms` to the forgotten ranges: into or beside the range it is near, else as a new
        one; past `FORGOTTEN_RANGES` the two closest merge (the times between them are refused
        too)."""
        lo, hi = self._forgotten_lo, self._forgotten_hi
        i = bisect.bisect_right(lo, ms) - 1
        if i >= 0 and ms <= hi[i]:
            return
        if i >= 0 and ms - hi[i] <= FORGOTTEN_GAP_MS:
            hi[i] = ms
        elif i + 1 < len(lo) and lo[i + 1] - ms <= FORGOTTEN_GAP_MS:
            i += 1
            lo[i] = ms
        else:
            i += 1
            lo.insert(i, ms)
            hi.insert(i, ms)
        if i < len(lo) - 1 and lo[i + 1] - hi[i] <= FORGOTTEN_GAP_MS:   # grew up to the next
            hi[i] = hi[i + 1]
            del lo[i + 1], hi[i + 1]
        if len(lo) > FORGOTTEN_RANGES:
            j = min(range(len(lo) - 1), key=lambda k: lo[k + 1] - hi[k])
            hi[j] = hi[j + 1]
            del lo[j + 1], hi[j + 1]


def carry_over(old: Authenticator | None, new: Authenticator | None):
    """After a reload: the new keys keep the old memory of accepted tags, of forgotten times
    and of the start (no replays), and of what was signed (no two tags alike)."""
    if old is not None and new is not None:
        new._seen, new._by_time = old._seen, old._by_time
        new._forgotten_lo, new._forgotten_hi = old._forgotten_lo, old._forgotten_hi
        new._started = old._started
        new._signed, new._signed_order = old._signed, old._signed_order
    return new


def from_config(cfg, wall, mono) -> tuple[Authenticator | None, list[str]]:
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
    return Authenticator(keys, cfg.security.require, wall, mono), warnings


assert MSG_SIZE == 1060
