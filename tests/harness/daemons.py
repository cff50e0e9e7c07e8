"""A real mtce daemon process in the foreground (`-f`), its output in a file, for the tests
that run real daemons (the `daemons` fixture, conftest.py)."""

from __future__ import annotations

import signal
import subprocess

from harness.env import wait_until


class Daemon:
    """A real mtce daemon process in the foreground (`-f`), its stderr captured to a file."""

    def __init__(self, argv: list[str], log_path: str, env=None):
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)

    def text(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_log(self, needle: str, timeout: float = 10.0, count: int = 1) -> str:
        def found():
            t = self.text()
            return t if t.count(needle) >= count else None
        try:
            return wait_until(found, timeout, what=f"{needle!r} in the log")
        except AssertionError:
            raise AssertionError(f"{needle!r} not logged within {timeout} s; log:\n"
                                 + self.text()[-4000:]) from None

    def signal(self, signum) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode
