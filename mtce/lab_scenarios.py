"""`mtce lab`'s fault scenarios (`--scenario`): pxeboot-loss, controller-link, restart, burst.
Each steps with the lab, changes something real (a fault-insertion file, a link down, a client
killed, a flood) and ends with its promise held or `failed`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING

from mtce.lab_plan import (
    BURST_COUNT, BURST_LOG_BUDGET, BURST_MIN_RATE, BURST_RATE, MTCALIVE_PERIOD_S,
    PXEBOOT_ALARM_S, PXEBOOT_CLEAR_S, RESTART_DEADLINE_S, STEADY_S,
)
from mtce.lab_proc import (Proc, ip_cmd, stop_all)
from mtce.lab_view import (LogTail, View)

# == scenarios ===============================================================================
if TYPE_CHECKING:
    from mtce.lab import Lab


class Scenario:
    """A fault played out once every host is steady; `done` or `failed` says how it ended."""

    name = "none"
    needs_workers = 0
    about_s = 0.0             # how long it takes once every host is steady

    def __init__(self, lab: "Lab"):
        self.lab = lab
        self.state = "waiting"
        self.done = False
        self.failed = ""
        self.summary = ""
        self.started_at: float | None = None

    def status(self) -> str:
        return ""

    def step(self, now: float, view: View) -> None:
        if view.first_all_ok is not None:
            self.done = True

    def finish(self, summary: str) -> None:
        self.done, self.summary, self.state = True, summary, "done"
        self.lab.event(f"scenario {self.name}: done: {summary}")

    def fail(self, why: str) -> None:
        self.failed, self.state = why, "failed"
        self.lab.event(f"scenario {self.name}: FAILED: {why}")

    def stop(self) -> None:
        """Undo the fault (the lab is stopping)."""


class PxebootLoss(Scenario):
    """One worker's pxeboot mtcAlive stop reaching the agent until 200.003 is raised; then
    they flow again until it clears. Only pxeboot is touched: mgmt and cluster-host stay ok.

    --netns: the worker's pxeboot link (eth2) goes down, and up again: a real link loss.
    Loopback: there is no link to take down (and no way to drop packets without root), so
    the worker's DHCP lease moves to an address that dnsmasq.hosts does not list, as after a
    bad re-lease. The client re-learns its pxeboot address on its socket-recovery path
    (`client.Client.tick`: a re-created pxeboot socket triggers learning), which the
    fault-insertion file `fit/pxeboot_txsock` sets off for one tick; from then on its
    pxeboot sockets are bound to the new address: its mtcAlive leave from an address the
    agent cannot attribute to the host (dropped as unknown), and the agent's pxeboot
    requests go to the old address where nothing listens. Restoring the lease (and one
    more socket recovery) makes it re-learn the listed address, and the mtcAlive count again.
    """

    name = "pxeboot-loss"
    needs_workers = 1
    about_s = PXEBOOT_ALARM_S + PXEBOOT_CLEAR_S + 5

    def __init__(self, lab: "Lab"):
        super().__init__(lab)
        self.target = lab.plan.workers[0] if lab.plan.workers else None
        self.down_at = self.alarm_at = self.up_at = None
        self.relearn: str | None = None      # the address the client must log, then no fit
        self.fit_since = 0.0
        self.tail: LogTail | None = None
        self.collateral: list[str] = []

    def status(self) -> str:
        t = self.target.name if self.target else "?"
        now = time.monotonic()
        if self.state == "waiting":
            return f"pxeboot-loss: {t} loses pxeboot once every host is ok for {STEADY_S:g} s"
        if self.state == "down":
            return (f"pxeboot-loss: {t} pxeboot down for {now - self.down_at:.0f} s ; the alarm "
                    f"comes after ~{PXEBOOT_ALARM_S:g} s")
        if self.state == "recovering":
            return (f"pxeboot-loss: {t} pxeboot back for {now - self.up_at:.0f} s ; the alarm "
                    f"clears after ~{PXEBOOT_CLEAR_S:g} s")
        return f"pxeboot-loss: {self.state}" + (f": {self.summary}" if self.summary else "")

    def _fit(self, on: bool) -> None:
        _fit_file(self.target.run_dir, "pxeboot_txsock", on)

    def _move_lease(self, address: str, why: str) -> None:
        self.lab.plan.write_lease(self.target, address)
        self.tail = LogTail(self.target.client_log, from_end=True)
        self.relearn, self.fit_since = address, time.monotonic()
        self._fit(True)
        self.lab.event(f"{self.target.name}: DHCP lease now gives pxeboot {address} {why}")

    def _watch_relearn(self, now: float) -> None:
        """The client logs `Pxeboot IP: <address>` when it re-learned it: from then on its
        pxeboot sockets use that address (the loss or the recovery starts), and the fault
        file goes (it served only to set off one socket recovery)."""
        if not self.relearn or not self.tail:
            return
        if any(f"Pxeboot IP: {self.relearn}" in line for line in self.tail.read()):
            self.lab.event(f"{self.target.name}: client re-learned its pxeboot address "
                           f"{self.relearn} ; its pxeboot sockets use it now")
            if self.state == "down":
                self.down_at = now
            elif self.state == "recovering":
                self.up_at = now
        elif now - self.fit_since < 5 * MTCALIVE_PERIOD_S:
            return
        else:
            self.lab.event(f"{self.target.name}: client did not log re-learning "
                           f"{self.relearn} ; fault file removed anyway")
        self._fit(False)
        self.relearn = None

    def _down(self) -> None:
        t = self.target
        if self.lab.plan.netns:
            ip_cmd("link", "set", "eth2", "down", ns=t.ns)
            self.lab.event(f"{t.name}: pxeboot link eth2 set down (ip -n {t.ns} link set eth2 "
                           f"down)")
        else:
            self._move_lease(self.lab.plan.moved_pxeboot_ip(), "(not in dnsmasq.hosts)")

    def _up(self) -> None:
        t = self.target
        if self.lab.plan.netns:
            ip_cmd("link", "set", "eth2", "up", ns=t.ns)
            self.lab.event(f"{t.name}: pxeboot link eth2 set up")
        else:
            self._move_lease(t.pxeboot_ip, "again (the one in dnsmasq.hosts)")

    def step(self, now: float, view: View) -> None:
        t = self.target
        if self.state == "waiting":
            if view.steady_for(now) >= STEADY_S:
                self.started_at = self.down_at = now
                self._down()
                self.state = "down"
            return
        self._watch_relearn(now)
        if self.state == "down":
            h = view.hosts.get(t.name) or {}
            for net in ("mgmt", "cluster-host"):
                if view.net_state(t.name, net) != "ok" and net not in self.collateral:
                    self.collateral.append(net)
            if h and h.get("availability") != "online" and "availability" not in \
                    self.collateral:
                self.collateral.append("availability")
            if view.alarm_for(t.name):
                self.alarm_at = now
                self.lab.event(f"{t.name}: alarm 200.003 raised {now - self.down_at:.1f} s "
                               f"after its pxeboot loss")
                self.up_at = now
                self._up()
                self.state = "recovering"
            elif now - self.down_at > PXEBOOT_ALARM_S + 20:
                self.fail(f"no 200.003 alarm for {t.name} within "
                          f"{now - self.down_at:.0f} s of its pxeboot loss")
            return
        if self.state == "recovering":
            if not view.alarm_for(t.name) and view.net_state(t.name, "pxeboot") == "ok":
                if self.collateral:
                    self.fail(f"{t.name} {', '.join(self.collateral)} not ok during the "
                              f"pxeboot loss")
                    return
                self.finish(f"{t.name} pxeboot loss: alarm after "
                            f"{self.alarm_at - self.down_at:.1f} s, clear "
                            f"{now - self.up_at:.1f} s after recovery ; mgmt, cluster-host ok")
            elif now - self.up_at > PXEBOOT_CLEAR_S + 20:
                self.fail(f"200.003 for {t.name} not cleared {now - self.up_at:.0f} s after "
                          f"its pxeboot recovered")

    def stop(self) -> None:
        if self.state in ("down", "recovering") and self.target and not self.lab.plan.netns:
            self._fit(False)


class ControllerLink(Scenario):
    """The controller's own side fails (issue 27, docs/protocol.md §5.8): first its pxeboot
    link, then, in a second phase, its cluster-host link, each for longer than the pxeboot alarm
    bound, then back. Every host loses that network at once: the agent must raise exactly one
    mtce.mnfa for it and clear it once they are back, raise no 200.003, take no host offline,
    with no operator command.

    --netns: `ip -n <controller's namespace> link set eth2 (eth1) down`, then up. Loopback: no
    link to take down; the agent's own receive socket of that network is closed by its
    fault-insertion file (`<run_dir>/fit/agent_pxeboot_rxsock`, `agent_clstr_rxsock`) while
    the phase lasts: what arrives from every host is lost at the controller, as on a dead link.
    """

    name = "controller-link"
    needs_workers = 2                   # the default mnfa_threshold, whatever the controller does
    PHASES = (("pxeboot", "eth2", "agent_pxeboot_rxsock"),
              ("cluster-host", "eth1", "agent_clstr_rxsock"))
    HOLD_S = PXEBOOT_ALARM_S + 10        # down for longer than the alarm bound
    about_s = 2 * (STEADY_S + HOLD_S + PXEBOOT_CLEAR_S + 5)

    def __init__(self, lab: "Lab"):
        super().__init__(lab)
        self.phase = 0
        self.down_at = self.up_at = None
        self.tail: LogTail | None = None
        self.lines: list[str] = []
        self.problems: list[str] = []
        self.results: list[str] = []
        self.held = 0                       # hosts the phase's mtce.mnfa named
        self.link_down = False

    @property
    def net(self) -> str:
        return self.PHASES[self.phase][0]

    def status(self) -> str:
        now = time.monotonic()
        if self.state == "waiting":
            return (f"controller-link: the controller's {self.net} link fails once every host "
                    f"is ok for {STEADY_S:g} s")
        if self.state == "down":
            return (f"controller-link: the controller's {self.net} link down for "
                    f"{now - self.down_at:.0f} s of {self.HOLD_S:g} ; one mtce.mnfa expected")
        if self.state == "recovering":
            return (f"controller-link: the controller's {self.net} link back for "
                    f"{now - self.up_at:.0f} s ; mtce.mnfa clears once every host is back")
        return f"controller-link: {self.state}" + (f": {self.summary}" if self.summary else "")

    def _link(self, up: bool) -> None:
        net, ifname, fit = self.PHASES[self.phase]
        self.link_down = not up
        c = self.lab.plan.controller
        word = "up" if up else "down"
        if self.lab.plan.netns:
            ip_cmd("link", "set", ifname, word, ns=c.ns)
            self.lab.event(f"{c.name}: {net} link {ifname} set {word} (ip -n {c.ns} link set "
                           f"{ifname} {word})")
            return
        _fit_file(c.run_dir, fit, not up)
        self.lab.event(f"{c.name}: the agent's {net} receive socket "
                       f"{'back' if up else 'closed'} (fit/{fit} {'removed' if up else 'made'})")

    def _watch(self, view: View) -> None:
        """What must never happen while the scenario lasts: a 200.003, a host offline."""
        for a in view.alarms:
            if a.get("id") != "mtce.mnfa":
                why = f"{a.get('id')} raised for {a.get('host')}"
                if why not in self.problems:
                    self.problems.append(why)
        for name in view.expected:
            if (view.hosts.get(name) or {}).get("availability") == "offline":
                why = f"{name} went offline"
                if why not in self.problems:
                    self.problems.append(why)

    def _mnfa(self, view: View) -> dict | None:
        return next((a for a in view.alarms if a.get("id") == "mtce.mnfa"
                     and a.get("network") == self.net), None)

    def _count(self, text: str) -> int:
        if self.tail is not None:
            self.lines += self.tail.read()
        return sum(text in line for line in self.lines)

    def step(self, now: float, view: View) -> None:
        if self.state != "waiting":
            self._watch(view)
            if self.problems:
                self.fail("; ".join(self.problems))
                return
        if self.state == "waiting":
            if view.steady_for(now) >= STEADY_S:
                if self.started_at is None:
                    self.started_at = now
                    self.tail = LogTail(self.lab.plan.agent_log, from_end=True)
                self.down_at = now
                self._link(False)
                self.state = "down"
            return
        if self.state == "down":
            if now - self.down_at < self.HOLD_S:
                return
            alarm = self._mnfa(view)
            if alarm is None:
                self.fail(f"no mtce.mnfa for {self.net} {now - self.down_at:.0f} s after the "
                          f"controller's {self.net} link went down")
                return
            self.held = len(alarm.get("hosts") or ())
            self.up_at = now
            self._link(True)
            self.state = "recovering"
            return
        if self.state == "recovering":
            if self._mnfa(view) is None and view.all_ok_now():
                self._phase_done(now)
            elif now - self.up_at > PXEBOOT_CLEAR_S + 20:
                self.fail(f"mtce.mnfa for {self.net} not cleared {now - self.up_at:.0f} s after "
                          f"the controller's {self.net} link came back")

    def _phase_done(self, now: float) -> None:
        entered = self._count(f"MNFA ENTER ({self.net}) ; ")
        left = self._count(f"MNFA EXIT ({self.net})")
        if (entered, left) != (1, 1):
            self.fail(f"{self.net}: {entered} MNFA ENTER and {left} MNFA EXIT lines (expected "
                      f"one each)")
            return
        self.results.append(f"{self.net}: one mtce.mnfa ({self.held} hosts), cleared "
                            f"{now - self.up_at:.1f} s after the link came back")
        if self.phase + 1 < len(self.PHASES):
            self.phase += 1
            self.state = "waiting"
            return
        self.finish(" ; ".join(self.results) + " ; no 200.003, no host offline")

    def fail(self, why: str) -> None:
        super().fail(why)
        self.stop()

    def stop(self) -> None:
        if self.link_down:
            self._link(True)


class Restart(Scenario):
    """A client is killed (SIGKILL, like a crash) and started again: within 10 s the agent
    must see that host's pxeboot mtcAlive again, numbered from 1 (it re-learned its own
    pxeboot address from its lease and the controller's from the agent's request)."""

    name = "restart"
    about_s = 5.0

    def __init__(self, lab: "Lab"):
        super().__init__(lab)
        workers = lab.plan.workers
        self.target = workers[-1] if workers else lab.plan.controller
        self.restart_at = None
        self.seq_before = self.count_before = 0
        self.tail: LogTail | None = None

    def status(self) -> str:
        t = self.target.name
        if self.state == "waiting":
            return f"restart: {t}'s client is killed once every host is ok for {STEADY_S:g} s"
        if self.state == "restarted":
            return (f"restart: {t}'s client restarted {time.monotonic() - self.restart_at:.1f} "
                    f"s ago ; waiting for its pxeboot mtcAlive")
        return f"restart: {self.state}" + (f": {self.summary}" if self.summary else "")

    def step(self, now: float, view: View) -> None:
        t = self.target
        if self.state == "waiting":
            if view.steady_for(now) < STEADY_S:
                return
            self.started_at = now
            proc = self.lab.clients[t.name]
            proc.expected_exit = True
            proc.signal(signal.SIGKILL)
            try:
                proc.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
            view.poll(time.monotonic())        # the counters after the last old mtcAlive
            pxe = view.net(t.name, "pxeboot")
            self.seq_before, self.count_before = pxe.get("last_seq", 0), pxe.get("received", 0)
            self.tail = LogTail(t.client_log, from_end=True)
            self.lab.event(f"{t.name}: client killed (SIGKILL) at pxeboot seq "
                           f"{self.seq_before} ; starting it again")
            self.lab.start_client(t)
            self.restart_at = time.monotonic()
            self.state = "restarted"
            return
        if self.state == "restarted":
            pxe = view.net(t.name, "pxeboot")
            if (view.polled_at > self.restart_at and pxe.get("state") == "ok"
                    and pxe.get("received", 0) > self.count_before
                    and pxe.get("last_seq", 0) < self.seq_before):
                took = now - self.restart_at
                learned = [line for line in (self.tail.read() if self.tail else [])
                           if "Pxeboot IP: " in line]
                addr = learned[-1].split("Pxeboot IP: ")[-1] if learned else "?"
                if took > RESTART_DEADLINE_S:
                    self.fail(f"{t.name} pxeboot ok again only after {took:.1f} s")
                elif addr != t.pxeboot_ip:
                    self.fail(f"{t.name}'s restarted client did not log re-learning "
                              f"{t.pxeboot_ip} (saw {addr})")
                else:
                    self.finish(f"{t.name} pxeboot ok again {took:.1f} s after the restart, "
                                f"seq {pxe.get('last_seq')} (was {self.seq_before}), "
                                f"pxeboot address {addr} re-learned")
            elif now - self.restart_at > RESTART_DEADLINE_S:
                self.fail(f"{t.name} pxeboot not ok again within {RESTART_DEADLINE_S:g} s of "
                          f"the restart (state {pxe.get('state')}, seq {pxe.get('last_seq')}, "
                          f"was {self.seq_before})")


class Burst(Scenario):
    """A stress sender speaks for `burst-0` (in the inventory, no client): BURST_COUNT
    mtcAlive at BURST_RATE a second on mgmt. The agent's counters for burst-0 must account
    for every one (last_seq = count, missed 0, out-of-sequence 0) and its log must stay
    short (no line per message)."""

    name = "burst"
    about_s = BURST_COUNT / BURST_RATE + 5

    def __init__(self, lab: "Lab"):
        super().__init__(lab)
        self.host = next(h for h in lab.plan.hosts if not h.client)
        self.proc: Proc | None = None
        self.result: dict = {}
        self.log_lines_before = 0
        self.check_at = None

    def status(self) -> str:
        if self.state == "waiting":
            return (f"burst: {BURST_COUNT} mtcAlive at {BURST_RATE:g}/s for burst-0 once every "
                    f"host is ok for {STEADY_S:g} s")
        if self.state == "sending":
            return f"burst: sending {BURST_COUNT} mtcAlive at {BURST_RATE:g}/s as burst-0"
        return f"burst: {self.state}" + (f": {self.summary}" if self.summary else "")

    def step(self, now: float, view: View) -> None:
        if self.state == "waiting":
            if view.steady_for(now) < STEADY_S:
                return
            self.started_at = now
            self.log_lines_before = _count_lines(self.lab.plan.agent_log)
            self.proc = self.lab.start_loadgen(self.host)
            self.lab.event(f"burst-0: sending {BURST_COUNT} mtcAlive at {BURST_RATE:g}/s from "
                           f"{self.host.mgmt_ip} to the agent")
            self.state = "sending"
            return
        if self.state == "sending":
            rc = self.proc.returncode()
            if rc is None:
                return
            self.proc.expected_exit = True
            out = _last_json_line(self.proc.log_path)
            if rc != 0 or "sent" not in out:
                self.fail(f"the sender failed (status {rc}): {out.get('error') or out}")
                return
            self.result = out
            self.lab.event(f"burst-0: sent {out['sent']} in {out['seconds']:.2f} s "
                           f"({out['rate']:.0f}/s)")
            self.check_at = now
            self.state = "checking"
            view.poll(time.monotonic())
        if self.state == "checking":
            mgmt = view.net(self.host.name, "mgmt")
            sent = self.result["sent"]
            if mgmt.get("last_seq") == self.result["last_seq"] and \
                    mgmt.get("received", 0) >= sent:
                added = _count_lines(self.lab.plan.agent_log) - self.log_lines_before
                problems = []
                if mgmt.get("missed") or mgmt.get("out_of_sequence"):
                    problems.append(f"missed {mgmt.get('missed')}, out-of-sequence "
                                    f"{mgmt.get('out_of_sequence')}")
                if mgmt.get("received") != sent:
                    problems.append(f"agent counted {mgmt.get('received')} of {sent}")
                if self.result["rate"] < BURST_MIN_RATE:
                    problems.append(f"the sender reached only {self.result['rate']:.0f}/s "
                                    f"(< {BURST_MIN_RATE:g}/s)")
                if added > BURST_LOG_BUDGET:
                    problems.append(f"the agent logged {added} lines during the burst")
                if problems:
                    self.fail("; ".join(problems))
                else:
                    self.finish(f"{sent} mtcAlive at {self.result['rate']:.0f}/s all processed "
                                f"(burst-0 mgmt last_seq {mgmt.get('last_seq')}, received "
                                f"{mgmt.get('received')}, missed 0, out-of-sequence 0) ; "
                                f"{added} agent log lines")
            elif now - self.check_at > 5.0:
                self.fail(f"the agent counted burst-0 mgmt last_seq {mgmt.get('last_seq')}, "
                          f"received {mgmt.get('received')} of {sent} sent")

    def stop(self) -> None:
        if self.proc:
            stop_all([self.proc], 1.0)


SCENARIO_CLASSES = {c.name: c for c in (Scenario, PxebootLoss, ControllerLink, Restart, Burst)}


def _fit_file(run_dir: str, name: str, on: bool) -> None:
    """Make (`on`) or remove the fault-insertion file `<run_dir>/fit/<name>`."""
    path = os.path.join(run_dir, "fit", name)
    if on:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w"):
            pass
    elif os.path.exists(path):
        os.unlink(path)


def _count_lines(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 16), b""))
    except OSError:
        return 0


def _last_json_line(path: str) -> dict:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line for line in f.read().splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}


