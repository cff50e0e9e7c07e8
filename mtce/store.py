"""State the agent keeps under `[paths] state_dir` across reloads and restarts.  `atomic_write` is
the one way a state file is written: a temporary file in the same directory, fsync, rename, then
fsync of the directory, so that a crash at any moment leaves the old or the new file, never a broken
one. `OperatorStates` holds what the operator set with `mtce lock`/`mtce unlock` (docs/contract.md
§4): that value wins over the inventory's `administrative` until that field itself changes in the
file. Stdlib only; no sockets, no subprocess.
"""

from __future__ import annotations

import datetime
import json
import os
import stat
import tempfile

from mtce.states import MNFA_TIMED_OUT_FACT

ADMIN_FILE = "administrative.json"
HOSTS_FILE = "hosts.json"
FORMAT_VERSION = 1
SAVE_RETRY_S = 1.0              # a state file that could not be written: try again after this
_STATES = ("locked", "unlocked")
MAX_STATE_BYTES = 64 << 20      # a state file larger than this is not one of ours


def atomic_write(directory: str, name: str, text: str) -> None:
    """Write `directory/name` so that a reader sees the old or the new text. Raises OSError."""
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass            # already renamed or gone: the original error is what matters
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)   # make the rename itself durable
        finally:
            os.close(dfd)
    except OSError:
        pass                # some file systems refuse fsync on a directory; the data is safe


def remove_stale_temps(directory: str, name: str) -> int:
    """Remove the temporary files of `atomic_write(directory, name, ...)` that a writer
    killed before its rename left behind (at load, when no writer of this process runs).
    Returns how many."""
    prefix, removed = f".{name}.", 0
    try:
        entries = os.listdir(directory)
    except OSError:
        return 0
    for entry in entries:
        if entry.startswith(prefix) and entry.endswith(".tmp"):
            try:
                os.unlink(os.path.join(directory, entry))
                removed += 1
            except OSError:
                pass
    return removed


def read_state(path: str, limit: int = MAX_STATE_BYTES) -> str:
    """The text of a state file, never blocking: a FIFO, a device or a directory where a
    state file should be (a hand edit, a restore gone wrong) is refused instead of hanging
    the daemon at start, and so is a file larger than `limit`. Raises FileNotFoundError,
    OSError (with the reason) or UnicodeDecodeError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"not a regular file (mode {stat.filemode(st.st_mode)})")
        if st.st_size > limit:
            raise OSError(f"{st.st_size} bytes, more than a state file ever holds ({limit})")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    return data.decode("utf-8")


def parse_json(text: str):
    """json.loads for a state file: a corrupted one (bad JSON, or nesting deep enough to
    exhaust the parser) raises ValueError, one exception for every way it can be wrong."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_json(path: str) -> tuple[object | None, str | None]:
    """(the file's JSON, None), (None, None) when absent, or (None, problem)."""
    try:
        text = read_state(path)
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as err:
        return None, f"{path}: cannot read ({err})"
    try:
        return parse_json(text), None
    except ValueError as err:
        return None, f"{path}: not JSON ({err})"


class HostFile:
    """A state file of one JSON object per host, `{"version": 1, "hosts": {...}}`, under
    `state_dir`: read with its problems told, written whole by the one writer (`write`, which
    a test replaces with a failing one); a write that fails leaves `dirty` and `save_problem`
    for SaveRetry."""

    name = ""           # the file's name under state_dir
    what = ""           # what it holds, for the problem lines

    def __init__(self, state_dir: str):
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, self.name)
        self._by_host: dict[str, dict] = {}
        self.save_problem: str | None = None
        self.dirty = False
        self.write = atomic_write

    def _read(self) -> tuple[dict, list[str]]:
        """The file's per-host objects, or {} and why not (absent: no problem)."""
        remove_stale_temps(self.state_dir, self.name)
        self._by_host = {}
        obj, problem = read_json(self.path)
        if problem:
            return {}, [f"{problem} ; no {self.what} restored"]
        if obj is None:
            return {}, []
        if not isinstance(obj, dict) or obj.get("version") != FORMAT_VERSION or \
                not isinstance(obj.get("hosts"), dict):
            return {}, [f"{self.path}: not a version {FORMAT_VERSION} mtce file of "
                        f"{self.what} ; ignored"]
        return obj["hosts"], []

    def _save(self) -> None:
        text = json.dumps({"version": FORMAT_VERSION, "hosts": self._by_host}, indent=1,
                          sort_keys=True) + "\n"
        try:
            self.write(self.state_dir, self.name, text)
        except OSError as err:
            self.save_problem = f"{self.path}: cannot write ({err})"
            self.dirty = True
        else:
            self.save_problem = None
            self.dirty = False


class OperatorStates(HostFile):
    """host -> (administrative, the inventory's value when the operator set it, when).

    The inventory value is kept so that, after a restart, the agent can tell whether the
    file's `administrative` changed while it was down (then the file wins, docs/contract.md §4).
    Writes are immediate: an operator's command is rare, and must not be lost to a crash
    right after `mtce lock` said it was done. `set` that cannot write changes nothing and
    says why; a `drop` that cannot write stays `dirty` until a `flush` writes it.
    """

    name, what = ADMIN_FILE, "operator lock/unlock"

    def load(self) -> list[str]:
        """Read the file; returns problems (bad entries are dropped, never raised)."""
        hosts, problems = self._read()
        for host, entry in hosts.items():
            if (isinstance(entry, dict) and entry.get("administrative") in _STATES
                    and entry.get("inventory") in _STATES and isinstance(host, str)):
                self._by_host[host] = {k: entry.get(k) for k in
                                       ("administrative", "inventory", "at")}
            else:
                problems.append(f"{self.path}: entry for {host!r} ignored")
        return problems

    def get(self, host: str) -> dict | None:
        return self._by_host.get(host)

    def hosts(self) -> list[str]:
        return list(self._by_host)

    def set(self, host: str, administrative: str, inventory: str, wall: float) -> str | None:
        """Keep the operator's value, written at once: None, or why it could not be written
        (then nothing changed)."""
        old = self._by_host.get(host)
        self._by_host[host] = {
            "administrative": administrative, "inventory": inventory,
            "at": datetime.datetime.fromtimestamp(wall, datetime.timezone.utc)
            .isoformat(timespec="seconds")}
        dirty = self.dirty
        self._save()
        problem = self.save_problem
        if problem is None:
            return None
        if old is None:
            del self._by_host[host]
        else:
            self._by_host[host] = old
        self.dirty = dirty              # what was unsaved before still is; else memory is
        if not dirty:                   # the file again
            self.save_problem = None
        return problem

    def drop(self, host: str) -> bool:
        if self._by_host.pop(host, None) is None:
            return False
        self._save()
        return True

    def restore(self, table, now: float, log, run) -> None:
        """At the agent's start: an operator's lock or unlock stays, unless the inventory's
        `administrative` of that host changed while the agent was down (the file wins)."""
        for name in self.hosts():
            kept = self.get(name)
            host = table.get(name)
            if host is None:
                log.info("%s not in inventory ; its operator %s is forgotten", name,
                         kept["administrative"])
                self.drop(name)
            elif host.entry.administrative != kept["inventory"]:
                log.info("%s inventory administrative changed from %s to %s while the agent "
                         "was stopped ; the inventory's %s applies, not the operator's %s",
                         name, kept["inventory"], host.entry.administrative,
                         host.entry.administrative, kept["administrative"])
                self.drop(name)
            else:
                run(host.set_admin(kept["administrative"], now, "operator"))
                log.info("%s %s by the operator (%s) ; kept from %s", name,
                         kept["administrative"], kept.get("at") or "earlier", self.path)

    def sync(self, table) -> None:
        """After a reload: a host whose inventory `administrative` changed is the file's
        again; its kept operator value goes."""
        for name in self.hosts():
            host = table.get(name)
            if host is None or host.admin_source != "operator":
                self.drop(name)

    def flush(self) -> None:
        """Write the file again if a change could not be written (`save_problem` says why)."""
        if self.dirty:
            self._save()


HOST_FACTS = ("online", "pxeboot_feature", *MNFA_TIMED_OUT_FACT.values())


class HostFacts(HostFile):
    """What the agent knows of each host that the next agent (a restart, or the other
    controller taking over) should not have to guess while the clients answer: whether it was
    online, and the pxeboot feature its client's latest ready event offered (a client before
    649e94c sends its one ready event at its own start only). `<state_dir>/hosts.json`,
    written like alarms: one write per audit tick at most (`flush`), again until it succeeds.
    """

    name, what = HOSTS_FILE, "host availability (every host unknown until it is heard)"

    def load(self) -> list[str]:
        """Read the file; returns problems (a bad entry is dropped, never raised)."""
        hosts, problems = self._read()
        for host, facts in hosts.items():
            if not isinstance(facts, dict) or not all(
                    k in HOST_FACTS and isinstance(v, bool) for k, v in facts.items()):
                problems.append(f"{self.path}: {str(host)[:64]!r} ignored: bad entry")
                continue
            self._by_host[host] = dict(facts)
        return problems

    def get(self, host: str) -> dict:
        return self._by_host.get(host, {})

    def set(self, host: str, fact: str, value: bool) -> None:
        facts = self._by_host.setdefault(host, {})
        if facts.get(fact) is not value:
            facts[fact] = value
            self.dirty = True

    def keep_only(self, hosts) -> None:
        """Forget the hosts the inventory no longer has."""
        for host in [h for h in self._by_host if h not in hosts]:
            del self._by_host[host]
            self.dirty = True

    def flush(self) -> None:
        if self.dirty:
            self._save()


class SaveRetry:
    """State that memory holds and `state_dir` could not take (a full disk) is written again
    on the audit tick, once every SAVE_RETRY_S while it fails, so that it reaches the disk as
    soon as there is room; the failure is logged rate-limited, the recovery once.

    `stores` have `dirty`, `save_problem`, `path` and `flush()` (AlarmStore, OperatorStates,
    HostFacts).
    """

    def __init__(self, stores, log, throttle):
        self.stores, self.log, self.throttle = list(stores), log, throttle
        self._retry_at: dict[str, float] = {}

    def tick(self, now: float) -> None:
        for s in self.stores:
            failing = s.path in self._retry_at
            if s.dirty:
                if failing and now < self._retry_at[s.path]:
                    continue
                s.flush()
            if s.dirty:
                self._retry_at[s.path] = now + SAVE_RETRY_S
                self.throttle.error(("save", s.path), "%s ; kept in memory, written again "
                                    "when there is room", s.save_problem)
            elif failing:               # written now, or by a later change meanwhile
                del self._retry_at[s.path]
                self.throttle.clear(("save", s.path))
                self.log.info("%s written again ; what memory held is saved", s.path)
