"""The daemons' one loop: readiness through `selectors`, one timer heap, signal flags.

Signal handlers only record the signal; the loop hands it to `on_signal` between turns
(style P7). A callback that raises is logged with its traceback and the loop goes on (P10).
The loop measures its own lag, so a stalled process can tell that it was stalled.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import signal
import socket

from mtce import logs


class Timer:
    __slots__ = ("at", "callback", "cancelled")

    def __init__(self, at: float, callback):
        self.at, self.callback, self.cancelled = at, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    def __init__(self, clock, logger: logging.Logger | None = None):
        self.clock = clock
        self.log = logger or logs.get()
        self.selector = selectors.DefaultSelector()
        # Everything but the batched readers: what ends a pause early (a control request, a
        # signal, a scrape, a netlink event must not wait for the next read of the sockets).
        self.urgent = selectors.DefaultSelector()
        self._timers: list = []
        self._seq = itertools.count()
        self._signals: list[int] = []
        self._old_handlers: dict = {}
        self._wake_r = self._wake_w = None
        self.stopped = False
        self.on_signal = None          # callable(signum), set by the daemon
        self.pause_hint = None         # callable() -> seconds to sleep before a wait
        self.last_turn_at = clock.now()
        self.polled_at = self.last_turn_at    # when the last turn asked which sockets are ready
        self.max_lag = 0.0
        self.turns = 0                 # run_once calls so far (what one turn may share)
        self.hurry = False             # set by a reader that left work queued: no pause next
        self._errors = logs.Throttle(self.log, clock)

    # -- readiness ---------------------------------------------------------------------------
    def add_reader(self, fileobj, callback, batched: bool = False) -> None:
        """`callback(fileobj)` whenever `fileobj` is readable. A `batched` reader (the
        agent's receive sockets) is read after a pause, not woken for: the pause lets its
        datagrams gather; any other reader ends a pause as soon as it is readable."""
        self.selector.register(fileobj, selectors.EVENT_READ, callback)
        if not batched:
            self.urgent.register(fileobj, selectors.EVENT_READ)

    def remove_reader(self, fileobj) -> None:
        for selector in (self.selector, self.urgent):
            try:
                selector.unregister(fileobj)
            except (KeyError, ValueError):
                pass

    def add_writer(self, fileobj, callback) -> None:
        """`callback(fileobj)` whenever `fileobj` is writable (a file is a reader or a writer
        here, not both)."""
        self.selector.register(fileobj, selectors.EVENT_WRITE, callback)
        self.urgent.register(fileobj, selectors.EVENT_WRITE)

    remove_writer = remove_reader

    # -- timers ------------------------------------------------------------------------------
    def call_at(self, at: float, callback) -> Timer:
        timer = Timer(at, callback)
        heapq.heappush(self._timers, (at, next(self._seq), timer))
        return timer

    def call_later(self, delay: float, callback) -> Timer:
        return self.call_at(self.clock.now() + delay, callback)

    def next_deadline(self) -> float | None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    # -- signals -----------------------------------------------------------------------------
    def install_signals(self, signums) -> None:
        """Record these signals for `on_signal`; a self-pipe wakes a sleeping select."""
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        self.add_reader(self._wake_r, self._drain_wakeups)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for signum in signums:
            self._old_handlers[signum] = signal.signal(signum, self._record_signal)

    def _record_signal(self, signum, frame) -> None:
        self._signals.append(signum)

    def _drain_wakeups(self, sock) -> None:
        try:
            while sock.recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def restore_signals(self) -> None:
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers.clear()
        if self._wake_w is not None:
            signal.set_wakeup_fd(-1)
            self.remove_reader(self._wake_r)
            self._wake_r.close()
            self._wake_w.close()
            self._wake_r = self._wake_w = None

    # -- running -----------------------------------------------------------------------------
    def _guard(self, what: str, callback, *args) -> None:
        try:
            callback(*args)
        except Exception:   # noqa: BLE001 - the boundary of one handler: log it, keep serving
            self._errors.log(logging.ERROR, what, "unexpected error in %s", what,
                             exc_info=True)

    def run_once(self, max_wait: float | None = 0.05) -> int:
        """One turn: wait for readiness at most until the next timer (and `max_wait`, unless
        None), then run what is due. `pause_hint()`, when set, may ask for a pause before
        the wait, never past the next timer: at light load the agent lets datagrams gather
        and reads them in one batch instead of waking for each; not after a turn whose reader
        left work queued (`hurry`, a full listen queue). A pause ends early when a reader that
        is not `batched` (or a signal) is ready. Returns how many readers,
        timers and signals ran (a test's "settle" loop runs turns until nothing is left)."""
        ran = 0
        self.turns += 1
        now = self.clock.now()
        deadline = self.next_deadline()
        hurry, self.hurry = self.hurry, False
        if self.pause_hint is not None and not hurry:
            pause = self.pause_hint()
            if pause > 0:
                if deadline is not None:
                    pause = min(pause, deadline - now)
                if pause > 0:
                    self.clock.wait(self.urgent, pause)
                    now = self.clock.now()
        if deadline is None:
            wait = max_wait
        else:
            wait = max(0.0, deadline - now)
            if max_wait is not None:
                wait = min(wait, max_wait)
        ready = self.selector.select(wait)
        self.polled_at = self.clock.now()
        registered = self.selector.get_map()
        for key, _ in ready:
            if registered.get(key.fd) is not key:
                continue                # removed (and closed) by a reader before it this turn
            ran += 1
            self._guard(getattr(key.data, "__qualname__", "reader"), key.data, key.fileobj)
        now = self.clock.now()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                ran += 1
                self._guard(getattr(timer.callback, "__qualname__", "timer"), timer.callback)
        while self._signals:
            signum = self._signals.pop(0)
            if self.on_signal is not None:
                ran += 1
                self._guard("signal handler", self.on_signal, signum)
        lag = now - self.last_turn_at
        self.max_lag = max(self.max_lag, lag)
        self.last_turn_at = now
        return ran

    def run(self, max_wait: float | None = None) -> None:
        """Turns until `stop()`: idle, it sleeps until the next timer or readiness (a signal
        wakes it through the self-pipe), not every 50 ms."""
        while not self.stopped:
            self.run_once(max_wait)

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.restore_signals()
        self.selector.close()
        self.urgent.close()
