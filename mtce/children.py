"""The processes the daemons start: `[actions]` commands (`/bin/sh -c`, a session of their
own, never waited for in the loop) and `sync`. `reap()`, called from the loop, collects the
finished ones, logs a failure, and kills one that ran past its time limit.
"""

from __future__ import annotations

import logging


class Children:
    def __init__(self, log: logging.Logger, clock):
        self.log, self.clock = log, clock
        self.procs: list = []                    # subprocess.Popen, with .action_name

    def spawn(self, name: str, command: str, stdin: bytes | None = None,
              timeout_s: float | None = None) -> bool:
        """Start `command`; `stdin` is written to it and closed (the alarm hook's JSON)."""
        import subprocess       # only when something runs: the client stays smaller
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", command],
                                    stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True, close_fds=True)
        except OSError as err:
            self.log.error("cannot run [actions] %s (%s)", name, err.strerror)
            return False
        if stdin is not None:
            try:
                proc.stdin.write(stdin)
                proc.stdin.close()
            except OSError:
                pass            # it exited without reading: reap() tells its status
        proc.action_name = name
        proc.deadline = None if timeout_s is None else self.clock.now() + timeout_s
        proc.timeout_s = timeout_s
        self.procs.append(proc)
        return True

    def run(self, argv: list[str], timeout_s: float) -> str | None:
        """Run `argv` (no shell) to its end, waiting at most `timeout_s` in the loop: for a
        short command whose outcome decides what comes next. None if it succeeded, else why
        not (its last line of output, if any); a command past its time is killed."""
        import subprocess
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=timeout_s, close_fds=True)
        except subprocess.TimeoutExpired:
            return f"no answer in {timeout_s:g} s"
        except OSError as err:
            return err.strerror or str(err)
        if done.returncode == 0:
            return None
        said = done.stdout.decode("utf-8", "replace").strip().splitlines()
        return f"exit status {done.returncode}" + (f": {said[-1][:200]}" if said else "")

    def running(self, name: str) -> bool:
        """Started and not reaped yet (reaping is the loop's, at its own pace)."""
        return any(p.action_name == name for p in self.procs)

    def reap(self) -> None:
        for proc in list(self.procs):
            rc = proc.poll()
            if rc is None:
                if proc.deadline is not None and self.clock.now() > proc.deadline:
                    proc.kill()
                    proc.deadline = None
                    self.log.warning("[actions] %s took longer than %g s ; killed",
                                     proc.action_name, proc.timeout_s)
                continue
            self.procs.remove(proc)
            if rc != 0:
                self.log.warning("[actions] %s exited with status %d", proc.action_name, rc)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
