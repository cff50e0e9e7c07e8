"""Active alarms (200.003, docs/protocol.md §5.5; mtce.mnfa, agent_mnfa.py): de-duplicated, and
kept across agent restarts.

`AlarmSet` is the pure part: raise/clear with de-duplication by (host, id, network) and the
text of the state file. `AlarmStore` adds the only I/O of this module: `<state_dir>/alarms.json`,
read once at start (missing or corrupt: empty, never an exception) and rewritten atomically
(`store.atomic_write`) after a change: at once, or, `deferred`, at the wiring's next `flush()`,
so that a thousand alarms raised in one audit cost one write, not a thousand fsyncs in the
loop. Stdlib only; no sockets, no subprocess (the `[actions] alarm` hook is run by the wiring,
with `hook_payload` as its stdin).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from dataclasses import dataclass

from mtce.states import ALARM_MNFA
from mtce.store import atomic_write, parse_json, read_state, remove_stale_temps

FILE_NAME = "alarms.json"
FORMAT_VERSION = 1
_KEYS = ("id", "host", "severity", "reason", "raised_at")


def iso8601(wall: float) -> str:
    """A wall-clock time (seconds since the epoch) as ISO-8601 UTC, to the millisecond."""
    return (datetime.datetime.fromtimestamp(wall, datetime.timezone.utc)
            .isoformat(timespec="milliseconds"))


@dataclass(frozen=True)
class Alarm:
    """One active alarm, as `mtce alarms --json` shows it (docs/contract.md §5)."""
    id: str
    host: str
    severity: str
    reason: str
    raised_at: str
    network: str = ""           # mtce.mnfa: one alarm per network (a JSON key: "pxeboot" ...)
    hosts: tuple = ()           # mtce.mnfa: the hosts in it

    @classmethod
    def new(cls, alarm_id: str, host: str, severity: str, reason: str, wall: float,
            network: str = "", hosts: tuple = ()) -> "Alarm":
        """An alarm raised now; `wall` is the wall clock (display only)."""
        return cls(alarm_id, host, severity, reason, iso8601(wall), network, tuple(hosts))

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.host, self.id, self.network)

    def raised_wall(self) -> float | None:
        """`raised_at` as seconds since the epoch; None if it does not parse."""
        try:
            return datetime.datetime.fromisoformat(self.raised_at).timestamp()
        except ValueError:
            return None

    def to_json(self) -> dict:
        obj = {"id": self.id, "host": self.host, "severity": self.severity}
        if self.network:
            obj.update(network=self.network, hosts=list(self.hosts))
        obj.update(reason=self.reason, raised_at=self.raised_at)
        return obj

    @classmethod
    def from_json(cls, obj) -> "Alarm":
        """Raises ValueError unless `obj` is an object with the five string keys (and, for a
        network's alarm, `network` a string and `hosts` a list of strings)."""
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        missing = [k for k in _KEYS if not isinstance(obj.get(k), str)]
        if missing:
            raise ValueError("missing or not a string: " + ", ".join(missing))
        if not obj["id"] or not obj["host"]:
            raise ValueError("empty id or host")
        if obj["id"] != ALARM_MNFA:
            return cls(*(obj[k] for k in _KEYS))    # a host's alarm has no network or hosts
        network, hosts = obj.get("network", ""), obj.get("hosts", [])
        if not isinstance(network, str) or not isinstance(hosts, list) or \
                not all(isinstance(h, str) and h for h in hosts):
            raise ValueError("network not a string or hosts not a list of host names")
        return cls(*(obj[k] for k in _KEYS), network, tuple(dict.fromkeys(hosts)))


def hook_payload(alarm: Alarm, action: str) -> str:
    """stdin of the `[actions] alarm` command: the alarm plus "action": "raise"|"clear"."""
    return json.dumps({**alarm.to_json(), "action": action})


class AlarmSet:
    """Active alarms by (host, id, network), in the order raised. No I/O."""

    def __init__(self, alarms=()):
        self._active: dict[tuple[str, str, str], Alarm] = {}
        for alarm in alarms:
            self.raise_(alarm)

    def raise_(self, alarm: Alarm) -> bool:
        """Add `alarm`; False (and no change) if (host, id, network) is already active."""
        if alarm.key in self._active:
            return False
        self._active[alarm.key] = alarm
        return True

    def rename_hosts(self, alarm: Alarm) -> bool:
        """The active alarm of `alarm`'s key names `alarm.hosts` now (raised_at stays); False
        if it is not active or names them already."""
        old = self._active.get(alarm.key)
        if old is None or old.hosts == alarm.hosts:
            return False
        self._active[alarm.key] = dataclasses.replace(old, hosts=alarm.hosts)
        return True

    def clear(self, host: str, alarm_id: str, network: str = "") -> Alarm | None:
        """Remove and return the active alarm, or None if there was none."""
        return self._active.pop((host, alarm_id, network), None)

    def get(self, host: str, alarm_id: str, network: str = "") -> Alarm | None:
        return self._active.get((host, alarm_id, network))

    def active(self) -> list[Alarm]:
        return list(self._active.values())

    def __len__(self) -> int:
        return len(self._active)

    def to_json(self) -> list[dict]:
        return [a.to_json() for a in self._active.values()]

    def dumps(self) -> str:
        """The state file's text."""
        return json.dumps({"version": FORMAT_VERSION, "alarms": self.to_json()}, indent=1) + "\n"

    @classmethod
    def loads(cls, text: str) -> tuple["AlarmSet", list[str]]:
        """Parse a state file: (alarms, problems). Bad entries are skipped, never raised."""
        try:
            obj = parse_json(text)
        except ValueError as err:
            return cls(), [f"not JSON ({err})"]
        if not isinstance(obj, dict) or not isinstance(obj.get("alarms"), list):
            return cls(), ["no 'alarms' list"]
        if obj.get("version") != FORMAT_VERSION:
            return cls(), [f"unknown version {obj.get('version')!r}"]
        found, problems = cls(), []
        for i, item in enumerate(obj["alarms"]):
            try:
                alarm = Alarm.from_json(item)
            except ValueError as err:
                problems.append(f"entry {i} ignored: {err}")
                continue
            if not found.raise_(alarm):
                problems.append(f"entry {i} ignored: duplicate {alarm.id} for {alarm.host}"
                                + (f" ({alarm.network})" if alarm.network else ""))
        return found, problems


class AlarmStore:
    """An `AlarmSet` persisted to `<state_dir>/alarms.json` on every change.

    A failed write does not raise (the alarm state in memory stays right and the next change
    writes it again): it is kept in `save_problem` and counted in `save_failures`, for the
    wiring to log.
    """

    def __init__(self, state_dir: str, deferred: bool = False):
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, FILE_NAME)
        self._set = AlarmSet()
        self.save_problem: str | None = None
        self.save_failures = 0
        self.saves = 0
        self.deferred = deferred
        self.dirty = False
        self.write = atomic_write       # the one writer; a test puts a failing one here

    def load(self) -> str | None:
        """Read the state file. None if fine or absent (first start); else the problem text,
        and whatever could not be read is dropped."""
        remove_stale_temps(self.state_dir, FILE_NAME)
        try:
            text = read_state(self.path)
        except FileNotFoundError:
            self._set = AlarmSet()
            return None
        except (OSError, UnicodeDecodeError) as err:
            self._set = AlarmSet()
            return f"{self.path}: cannot read ({err}) ; starting with no active alarms"
        self._set, problems = AlarmSet.loads(text)
        if problems:
            return f"{self.path}: " + " ; ".join(problems)
        return None

    def raise_(self, alarm: Alarm) -> bool:
        """Add and persist; False if already active (then persisted if it names other
        hosts now, AlarmSet.rename_hosts)."""
        if not self._set.raise_(alarm):
            if self._set.rename_hosts(alarm):
                self._persist()
            return False
        self._persist()
        return True

    def clear(self, host: str, alarm_id: str, network: str = "") -> Alarm | None:
        """Remove and persist; None (nothing written) if it was not active."""
        alarm = self._set.clear(host, alarm_id, network)
        if alarm is not None:
            self._persist()
        return alarm

    def get(self, host: str, alarm_id: str, network: str = "") -> Alarm | None:
        return self._set.get(host, alarm_id, network)

    def active(self) -> list[Alarm]:
        return self._set.active()

    def __len__(self) -> int:
        return len(self._set)

    def to_json(self) -> list[dict]:
        return self._set.to_json()

    def _persist(self) -> None:
        self.dirty = True
        if not self.deferred:
            self.flush()

    def flush(self) -> None:
        """Write the file if something changed since the last write (a failed write is kept
        in `save_problem` and tried again at the next flush)."""
        if not self.dirty:
            return
        try:
            self.save()
        except OSError as err:
            self.save_failures += 1
            self.save_problem = f"{self.path}: cannot write ({err})"
        else:
            self.dirty = False
            self.save_problem = None

    def save(self) -> None:
        """Write the state file atomically: a reader sees the old or the new file, never half.

        Raises OSError.
        """
        self.write(self.state_dir, FILE_NAME, self._set.dumps())
        self.saves += 1
