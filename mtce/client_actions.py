"""What a client does to its own host on the agent's commands (docs/protocol.md §2): the
`.node_locked` files, the goEnabled subfunction-failed flag, reboot, reset, lazy reboot and
wipedisk through the `[actions]` shell commands with a failsafe, sync, and the locked/reset
housekeeping at start.

Nothing here is hard-wired to the machine: every action is the configured command, run with
`/bin/sh -c` in a session of its own and never waited for in the loop. The failsafe outlives
the daemon's service (docs/contract.md §8): under systemd it is a transient unit of its own
(`systemd-run`, the one command waited for, within FAILSAFE_LAUNCH_TIMEOUT_S), elsewhere a
detached process.
"""

from __future__ import annotations

import logging
import os
import shlex

from mtce.children import Children
from mtce.states import PARM_LOCK_PERSIST, Net

LOCKED_FILE = ".node_locked"
RESET_FILE = ".node_reset"
LOCKED_TEXT = "This node is currently in the administratively locked state\n"
SUBF_PASS_FILE = "goenabled_subf"              # GOENABLED_SUBF_PASS
SUBF_FAIL_FILE = "goenabled_subf_failed"       # GOENABLED_SUBF_FAIL
SUBF_FAIL_TEXT = "host subfunction has failed as instructed by maintenance.\n"
REISSUE_REBOOT_S = 30.0        # "mtce reboot required": the reboot is re-issued this often
SHUTDOWNS = ("reboot", "reset", "lazy reboot", "wipedisk")
# The agent sends one command over all its networks at once and again only after 10 s without
# an ACK (docs/protocol.md §5.4): the same command over another network within this time is a
# copy.
COPY_WINDOW_S = 10.0
# The `.node_locked` of old releases, `/etc/mtc/tmp/.node_locked` (upstream 4074c6c), removed
# at start. Not a config key: it lives beside `[paths] platform_dir` (`/etc/platform`), so a
# test host has its own under its root.
OBSOLETE_LOCKED = ("mtc", "tmp", LOCKED_FILE)
# The failsafe under systemd (upstream 9b2fb85): a process started by mtcclient.service stays
# in its cgroup, so the `systemctl reboot` it runs would kill it with the unit and a hung
# shutdown would never be forced. systemd is PID 1 when this directory exists (sd_booted(3)).
SYSTEMD_BOOTED = "/run/systemd/system"
SYSTEMD_RUN = "systemd-run"
FAILSAFE_LAUNCH_TIMEOUT_S = 5.0     # systemd-run only asks PID 1 for a unit: quick or broken
# The unit is a transient service that sleeps the delay, then runs the command: the
# original's transient timer (`--on-active`) is re-armed by every `systemctl daemon-reload`
# on systemd 252, which dpkg runs in most maintainer scripts, and its command is re-read then
# (mangling a `$`); a running service is touched by neither (attack on issue 24). Without
# default dependencies it does not conflict with shutdown.target: the `systemctl reboot` the
# failsafe guards does not stop it (systemd.service(5)); only the host going down does.
FAILSAFE_UNIT_PROPERTIES = ("--property=DefaultDependencies=no",)


def failsafe_script(delay: float, command: str | None = None) -> str:
    """`/bin/sh -c` text that waits `delay` seconds (sub-second: coreutils' sleep), then
    runs the `[actions] failsafe` command (given, or else its first argument) with its own
    `/bin/sh -c`, as every action is run: `sleep 2 && a & b` would have run `b` at once."""
    run = '"$1"' if command is None else shlex.quote(command)
    return f"sleep {delay:.3f}; exec /bin/sh -c {run}"


def systemd_literal(arg: str) -> str:
    """An argument as systemd must see it to pass it on unchanged: it expands `$VAR`,
    `${VAR}` and `$$` in ExecStart= (systemd.service(5), "Command lines")."""
    return arg.replace("$", "$$")
# fit files that bypass an action after its ACK (docs/protocol.md §5.7)
_FIT_BYPASS = {"reboot": ("no_reboot", "Reboot"), "reset": ("no_reset", "Reset"),
               "wipedisk": ("no_wipedisk", "Wipedisk")}


class HostActions:
    """`throttle` for faults of the machine (a file that cannot be written); `noise` for lines
    a datagram can repeat at will (a reboot already in progress) and `events` for the changes
    commands make (a lock file written), each bounded by its budget."""

    def __init__(self, cfg, loop, clock, log: logging.Logger, throttle, hostname: str,
                 noise=None, events=None):
        self.cfg, self.loop, self.clock, self.log, self.throttle = cfg, loop, clock, log, \
            throttle
        self.noise = noise or throttle
        self.events = events or throttle
        self.hostname = hostname
        self.kids = Children(log, clock)         # the running actions
        self.failsafes = 0                       # launched by this process (unit names)
        # SHUTDOWNS kind -> (when it was carried out, the networks it has come over since)
        self.carried_out: dict[str, tuple[float, set]] = {}

    def reconfigure(self, cfg, hostname: str) -> None:
        """A reload: the new `[paths]`, `[actions]` and timeouts apply to what comes next."""
        self.cfg, self.hostname = cfg, hostname

    def fit(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.cfg.paths.run_dir, "fit", name))

    def _present(self, where: str, name: str) -> bool:
        return os.path.exists(os.path.join(where, name))

    def would_change(self, kind: str, num: int = 0, parm: tuple = (), net: Net | None = None
                     ) -> bool:
        """Whether carrying out `kind` now changes anything on this host: its log line is then
        a state change, never suppressed by the noise budget of repeated commands."""
        run, persist = self.cfg.paths.run_dir, self.cfg.paths.persist_dir
        if kind == "lock":
            want_backup = bool(num > 0 and parm and parm[PARM_LOCK_PERSIST])
            return (not self._present(run, LOCKED_FILE)
                    or want_backup != self._present(persist, LOCKED_FILE))
        if kind == "unlock":
            return self._present(run, LOCKED_FILE) or self._present(persist, LOCKED_FILE)
        if kind == "subf failed":
            return not self._present(run, SUBF_FAIL_FILE) or self._present(run, SUBF_PASS_FILE)
        if kind in SHUTDOWNS:
            bypass = _FIT_BYPASS.get(kind)
            return not self.is_copy(kind, net) and not (bypass and self.fit(bypass[0]))
        return False

    def is_copy(self, kind: str, net: Net | None) -> bool:
        """Whether `kind` over `net` is a copy of the one just carried out: it came over
        another network within COPY_WINDOW_S. Anything else runs again, as in the original
        (docs/protocol.md §2), a reset or a wipedisk after a reboot included."""
        done = self.carried_out.get(kind)
        return (done is not None and net not in done[1]
                and self.clock.now() - done[0] < COPY_WINDOW_S)

    # -- the locked files --------------------------------------------------------------------
    def lock(self, num: int, parm: tuple, net: Net) -> None:
        """MTC_MSG_LOCKED: the volatile file, and the persistent one if LOCK_PERSIST is set."""
        run, persist = self.cfg.paths.run_dir, self.cfg.paths.persist_dir
        if not os.path.exists(os.path.join(run, LOCKED_FILE)):
            self.events.info(("command", "lock", net), "%s locked (%s)", self.hostname,
                             net.iface)
            self._write(run, LOCKED_FILE, LOCKED_TEXT)
        if num > 0 and parm[PARM_LOCK_PERSIST]:
            if not os.path.exists(os.path.join(persist, LOCKED_FILE)):
                self._write(persist, LOCKED_FILE, LOCKED_TEXT)
        else:
            self._remove(persist, LOCKED_FILE)

    def unlock(self, net: Net) -> None:
        """MTC_MSG_UNLOCKED: both files go (the caller logs the received line)."""
        self._remove(self.cfg.paths.run_dir, LOCKED_FILE)
        if self._remove(self.cfg.paths.persist_dir, LOCKED_FILE):
            self.events.info(("command", "unlock backup", net), "cleared node locked backup "
                             "flag (%s)", net.iface)

    def subf_failed(self) -> None:
        """MTC_MSG_SUBF_GOENABLED_FAILED: the pass flag goes, the failed flag is written
        (`M/mtcCompMsg.cpp:310-316`), so the next mtcAlive no longer says SUBF_GOENABLED."""
        run = self.cfg.paths.run_dir
        self._remove(run, SUBF_PASS_FILE)
        self._write(run, SUBF_FAIL_FILE, SUBF_FAIL_TEXT)

    def sync(self, net: Net) -> None:
        """MTC_CMD_SYNC: `sync` in a child process, never in the loop; one at a time."""
        if self.kids.running("sync"):
            return
        self._spawn("sync", "sync")

    def _write(self, where: str, name: str, text: str) -> bool:
        try:
            os.makedirs(where, exist_ok=True)
            with open(os.path.join(where, name), "a", encoding="utf-8") as f:
                f.write(text)
        except OSError as err:
            self.throttle.error(("write", where, name), "failed to write %s (%s)",
                                os.path.join(where, name), err.strerror)
            return False
        return True

    def _remove(self, where: str, name: str) -> bool:
        try:
            os.unlink(os.path.join(where, name))
        except FileNotFoundError:
            return False
        except OSError as err:
            self.throttle.error(("remove", where, name), "failed to remove %s (%s)",
                                os.path.join(where, name), err.strerror)
            return False
        return True

    # -- reboot, reset, lazy reboot ----------------------------------------------------------
    def shutdown(self, kind: str, net: Net, delay: int = 0) -> None:
        """Carry out a reboot-like command once, however many networks its copies came over
        (the original re-runs it for every copy); every other one runs."""
        if self.is_copy(kind, net):
            self.carried_out[kind][1].add(net)
            self.noise.info(("command", "in progress", kind, net), "%s (%s) ; %s already in "
                            "progress", kind, net.iface, kind)
            return
        bypass = _FIT_BYPASS.get(kind)
        if bypass and self.fit(bypass[0]):
            self.noise.info(("command", "fit bypass", kind, net), "%s - fit bypass (%s)",
                            bypass[1], net.iface)
            return
        self.carried_out[kind] = (self.clock.now(), {net})
        delay_s = self.failsafe_delay_s()
        run = self.cfg.paths.run_dir
        if kind == "reboot":
            self.log.info("Reboot (%s)", net.iface)
            self._write(run, RESET_FILE, "reboot command\n")
            self.launch_failsafe(delay_s, kind)
            self.run_action("reboot")
        elif kind == "reset":
            self.log.info("Reset 'reboot -f' (%s)", net.iface)
            self._write(run, RESET_FILE, "reset command\n")
            self.launch_failsafe(delay_s / 2, kind)  # the original's reset uses half of it
            self.run_action("reset")
        elif kind == "wipedisk":
            # M/mtcCompMsg.cpp:714-742: failsafe at half the delay, then wipedisk and a
            # forced reboot in a child (the shipped `[actions] wipedisk` does both).
            self.launch_failsafe(delay_s / 2, kind)
            self.log.info("Disk wipe in progress (%s)", net.iface)
            self._write(run, RESET_FILE, "wipedisk command\n")
            self.run_action("wipedisk")
        else:
            self._write(run, RESET_FILE, "lazy reboot command\n")
            self._lazy_countdown(net, self.clock.now() + delay)

    def _lazy_countdown(self, net: Net, at: float) -> None:
        left = int(round(at - self.clock.now()))
        if left <= 0:
            self.log.info("Lazy Reboot (%s) ; now", net.iface)
            self.launch_failsafe(self.failsafe_delay_s(), "lazy reboot")
            self.run_action("lazy_reboot")
            return
        # The original logs every second; a long delay is logged once a minute here.
        if left <= 10 or left % 60 == 0:
            self.log.info("Lazy Reboot (%s) ; in %d seconds", net.iface, left)
        self.loop.call_later(1.0, lambda: self._lazy_countdown(net, at))

    def failsafe_delay_s(self) -> float:
        """`[timeouts] failsafe_shutdown_delay`, below 1 taken as 2 as the original does
        (docs/protocol.md §8)."""
        configured = self.cfg.timeouts.failsafe_shutdown_delay
        return 2.0 if configured < 1 else float(configured)

    def launch_failsafe(self, delay: float, kind: str = "reboot") -> None:
        """`[actions] failsafe` after `delay` seconds, so that it still fires when the daemon
        is stopped by a reboot that then hangs: a transient systemd service of its own that
        sleeps the delay where systemd is PID 1, else (or if systemd-run fails) a process in
        a session of its own."""
        command = self.cfg.actions.failsafe
        if not command:
            return
        self.log.info("failsafe reboot script launched ; reboot in %g seconds", delay)
        self.failsafes += 1
        if os.path.isdir(SYSTEMD_BOOTED):
            unit = f"mtce-failsafe-{kind.replace(' ', '-')}-{os.getpid()}-{self.failsafes}"
            why = self.kids.run([
                SYSTEMD_RUN, f"--unit={unit}",
                f"--description=mtce failsafe: [actions] failsafe {delay:g} s after a {kind}",
                *FAILSAFE_UNIT_PROPERTIES, "/bin/sh", "-c",
                systemd_literal(failsafe_script(delay)), "mtce-failsafe",
                systemd_literal(command)], FAILSAFE_LAUNCH_TIMEOUT_S)
            if why is None:
                self.log.info("failsafe is systemd unit %s.service ; [actions] failsafe in %g "
                              "seconds", unit, delay)
                return
            self.log.warning("systemd-run failed (%s) ; failsafe as a detached process "
                             "instead", why)
        self._spawn("failsafe", failsafe_script(delay, command))

    def run_action(self, name: str) -> None:
        command = getattr(self.cfg.actions, name)
        if not command:
            self.log.warning("[actions] %s is empty ; nothing run", name)
            return
        self.log.info("running [actions] %s: %s", name, command)
        self._spawn(name, command)

    def _spawn(self, name: str, command: str) -> None:
        self.kids.spawn(name, command)

    def reap(self) -> None:
        self.kids.reap()

    @property
    def children(self) -> list:
        return self.kids.procs

    # -- locked/reset housekeeping at start (docs/protocol.md §2) ----------------------------
    def housekeeping(self) -> None:
        run, persist = self.cfg.paths.run_dir, self.cfg.paths.persist_dir
        volatile = os.path.join(run, LOCKED_FILE)
        backup = os.path.join(persist, LOCKED_FILE)
        if os.path.exists(volatile):
            self.log.info("locked node")
        if os.path.exists(os.path.join(run, RESET_FILE)):
            self.log.warning("mtce reboot required")
            self.launch_failsafe(self.failsafe_delay_s(), "reboot")
            self._reissue_reboot()
        obsolete = os.path.join(os.path.dirname(os.path.normpath(self.cfg.paths.platform_dir)),
                                *OBSOLETE_LOCKED)
        if os.path.exists(obsolete):
            self.log.info("removing obsoleted %s file", obsolete)
            self._remove(*os.path.split(obsolete))
        if os.path.exists(backup) and not os.path.exists(volatile):
            self.log.info("restoring %s from %s backup", volatile, backup)
            self._write(run, LOCKED_FILE, LOCKED_TEXT)
        elif not os.path.exists(backup) and os.path.exists(volatile):
            self._remove(run, LOCKED_FILE)

    def _reissue_reboot(self) -> None:
        self.log.info("issuing reboot")
        self.run_action("reboot")
        self.loop.call_later(REISSUE_REBOOT_S, self._reissue_reboot)
