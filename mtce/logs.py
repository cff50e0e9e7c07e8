"""Logging: the original's line shape, and `Throttle` so that no cause floods the log.

A line looks like the C daemons' (docs/design.md "Logs"):
`2026-11-26T01:10:46.123 [1234.00012] worker-0 mtcClient client.py(120) tick:  Info : text`.
Handlers are created by `setup()` only, after the daemon has forked (docs/design.md
"python-daemon closes descriptors").
"""

from __future__ import annotations

import collections
import itertools
import logging
import logging.handlers
import math
import os
import sys
import time

from mtce.budget import Budget

LOGGER_NAME = "mtce"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
_TAGS = {logging.DEBUG: "Debug ", logging.INFO: " Info ", logging.WARNING: " Warn ",
         logging.ERROR: "Error ", logging.CRITICAL: "Fatal "}
# Control characters in a message (from a datagram, a file, a hostname) are shown escaped, so
# that no input can forge a log line or a terminal sequence.
_ESCAPES = {c: f"\\x{c:02x}" for c in range(32) if c != 9}
_ESCAPES.update({10: "\\n", 13: "\\r", 127: "\\x7f"})


def printable(text: str) -> str:
    """`text` with control characters escaped (a tab is kept)."""
    return text.translate(_ESCAPES)


class _Formatter(logging.Formatter):
    def __init__(self, hostname: str, program: str):
        super().__init__()
        self.hostname, self.program = hostname, program
        self.count = itertools.count(1)

    def format(self, record: logging.LogRecord) -> str:
        t = time.localtime(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}"
        tag = _TAGS.get(record.levelno, record.levelname)
        line = (f"{stamp} [{record.process}.{next(self.count) % 100000:05d}] {self.hostname} "
                f"{self.program} {record.filename}({record.lineno}) {record.funcName}: {tag}: "
                f"{printable(record.getMessage())}")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def get(name: str | None = None) -> logging.Logger:
    return logging.getLogger(LOGGER_NAME if not name else f"{LOGGER_NAME}.{name}")


# syslog priorities (sd-daemon(3)): a line on a journal stream that starts with `<N>` is
# stored at priority N.
_PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
               logging.CRITICAL: 2}


class _JournalFormatter(_Formatter):
    """The same line for systemd's journal, which stamps the time itself: `<N>` + the line
    without its timestamp."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_PRIORITIES.get(record.levelno, 6)}>"
        lines = super().format(record).split(" ", 1)[1].split("\n")   # a traceback's too
        return "\n".join(prefix + line for line in lines)


LOG_FILE_MODE = 0o640           # as debian/mtce.logrotate's `create 0640 root adm`
LOG_FILE_GROUP = "adm"


class _LogFile(logging.handlers.WatchedFileHandler):
    """The daemon's log file, created (at start, or again after it was moved away) with the
    mode and group logrotate gives the next one: the daemon's umask made it world-readable
    until the first rotation (attack on issue 24)."""

    def _open(self):
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_FILE_MODE)
        try:
            if os.fstat(fd).st_size == 0:          # made now (or empty): mode and group
                os.fchmod(fd, LOG_FILE_MODE)
                if os.geteuid() == 0:
                    import grp
                    os.fchown(fd, -1, grp.getgrnam(LOG_FILE_GROUP).gr_gid)
        except (KeyError, OSError):
            pass                    # no such group here: root's
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)


def journal_stream(fd: int = 2) -> bool:
    """True when `fd` is the journal stream systemd gave this service ($JOURNAL_STREAM,
    systemd.exec(5)): the daemon then logs there too."""
    want = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in want.split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup(program: str, *, foreground: bool, log_dir: str, hostname: str,
          level: int = logging.INFO, journal: bool = False) -> logging.Logger:
    """Attach the handlers: stderr with `-f`, else `<log_dir>/<program>.log`, and with
    `journal` (a daemon systemd started, whose stderr is its journal stream) the journal too,
    as the original's syslog lines reach both the file and the journal.

    The file handler reopens the file when logrotate moves it.
    """
    log = get()
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    if foreground:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        os.makedirs(log_dir, exist_ok=True)
        handler = _LogFile(os.path.join(log_dir, f"{program}.log"))
    handler.setFormatter(_Formatter(hostname, program))
    log.addHandler(handler)
    if journal and not foreground:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(_JournalFormatter(hostname, program))
        log.addHandler(stream)
    log.setLevel(level)
    log.propagate = False
    return log


class Throttle:
    """Log a cause on its first occurrence, then at most once per `interval` seconds.

    Each repeat logged says how many were suppressed since the last one. `clear(key)` is
    called when the cause goes away, so that its return is logged at once. Keys can come from
    the network (source addresses), so at most `max_keys` are remembered, and a `budget`,
    when given, bounds the lines of all keys together. `summary()` (the daemons call it once a
    minute) tells what was suppressed, by cause (a key's first element).
    """

    def __init__(self, logger: logging.Logger, clock, interval: float = 60.0,
                 max_keys: int = 4096, budget: Budget | None = None):
        self.logger, self.clock, self.interval, self.max_keys = logger, clock, interval, max_keys
        self.budget = budget
        self._seen: collections.OrderedDict = collections.OrderedDict()  # key -> [at, suppressed]
        self.suppressed_total = 0
        self._by_cause: collections.Counter = collections.Counter()

    def log(self, level: int, key, msg: str, *args, _depth: int = 2, exc_info=None) -> bool:
        """Log `msg % args` unless `key` was logged less than `interval` ago or the budget is
        spent. True if logged."""
        now = self.clock.now()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval:
            self._suppress(entry, key)
            return False
        if self.budget is not None and not self.budget.take(now):
            if entry is None:
                entry = self._remember(key, -math.inf)
            self._suppress(entry, key)
            return False
        suppressed = entry[1] if entry is not None else 0
        if entry is None:
            entry = self._remember(key, now)
        entry[0], entry[1] = now, 0
        self._seen.move_to_end(key)
        text = msg % args if args else msg
        if suppressed:
            text += f" ({suppressed} similar suppressed)"
        self.logger.log(level, text, stacklevel=_depth, exc_info=exc_info)
        return True

    def _remember(self, key, at: float) -> list:
        if len(self._seen) >= self.max_keys:
            self._seen.popitem(last=False)
        entry = self._seen[key] = [at, 0]
        return entry

    def _suppress(self, entry: list, key) -> None:
        entry[1] += 1
        self.suppressed_total += 1
        self._by_cause[key[0] if isinstance(key, tuple) and key else key] += 1

    def warning(self, key, msg: str, *args) -> bool:
        return self.log(logging.WARNING, key, msg, *args, _depth=3)

    def error(self, key, msg: str, *args) -> bool:
        return self.log(logging.ERROR, key, msg, *args, _depth=3)

    def info(self, key, msg: str, *args) -> bool:
        return self.log(logging.INFO, key, msg, *args, _depth=3)

    def debug(self, key, msg: str, *args) -> bool:
        return self.log(logging.DEBUG, key, msg, *args, _depth=3)

    def clear(self, key) -> None:
        self._seen.pop(key, None)

    def active(self, key) -> bool:
        return key in self._seen

    def summary(self) -> str | None:
        """What was suppressed since the last call, the biggest causes first (None: nothing),
        and forget it."""
        if not self.suppressed_total:
            return None
        causes = ", ".join(f"{cause} {count}" for cause, count in self._by_cause.most_common(6))
        more = len(self._by_cause) - 6
        text = (f"{self.suppressed_total} repeated log lines suppressed ({causes}"
                f"{f', {more} more causes' if more > 0 else ''})")
        self.suppressed_total = 0
        self._by_cause.clear()
        return text


class Lines:
    """The one rule both daemons log a decided line (`decisions.Log`) by: kind "log" plainly,
    "noise" through the `noise` throttle, "change" through the `events` throttle, each per
    the line's key. `depth`: the stack frames between the caller to name in the line and this
    method (the log format names the function that decided to log)."""

    def __init__(self, log: logging.Logger, noise: "Throttle", events: "Throttle"):
        self.log, self.noise, self.events = log, noise, events

    def say(self, line, depth: int = 2) -> bool:
        """Log `line`; True if it was logged (not below the level, not held back)."""
        level = LEVELS.get(line.level, logging.INFO)
        if level < self.log.getEffectiveLevel():
            return False
        if line.kind == "log":
            self.log.log(level, "%s", line.text, stacklevel=depth)
            return True
        throttle = self.events if line.kind == "change" else self.noise
        return throttle.log(level, line.key, "%s", line.text, _depth=depth + 1)
