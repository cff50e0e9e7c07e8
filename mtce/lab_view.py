"""What `mtce lab` shows: the agent's table as the lab sees it (`View`, over the control
socket), the agent's log tail, the screen redrawn in place on a terminal.
"""

from __future__ import annotations

import os
import re

from mtce import cli_ctl
from mtce.lab_plan import Plan
from mtce.states import NET_KEYS

# == what the agent says =====================================================================

class View:
    """The agent's host table and alarms, as of the last poll, plus what was ever seen."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.socket = plan.agent_socket      # --ha: the active controller's
        self.hosts: dict[str, dict] = {}
        self.order: list[str] = []
        self.alarms: list[dict] = []
        self.error = "not polled yet"
        self.polled_at = 0.0
        self.expected = [h.name for h in plan.clients]
        self.ok_seen = {n: set() for n in self.expected}
        self.online_seen: set[str] = set()
        self.all_ok_since: float | None = None
        self.first_all_ok: float | None = None

    def poll(self, now: float) -> bool:
        try:
            hosts = cli_ctl.request(self.socket, {"cmd": "hosts"}, timeout=2.0)
            alarms = cli_ctl.request(self.socket, {"cmd": "alarms"}, timeout=2.0)
        except cli_ctl.CtlError as err:
            self.error = str(err)
            self.all_ok_since = None
            return False
        if not hosts.get("ok") or not alarms.get("ok"):
            self.error = hosts.get("error") or alarms.get("error") or "agent refused"
            return False
        self.error = ""
        self.polled_at = now
        self.order = [h["hostname"] for h in hosts["hosts"]]
        self.hosts = {h["hostname"]: h for h in hosts["hosts"]}
        self.alarms = alarms["alarms"]
        for name in self.expected:
            h = self.hosts.get(name)
            if not h:
                continue
            if h.get("availability") == "online":
                self.online_seen.add(name)
            for net in NET_KEYS:
                if self.net_ok(name, net):
                    self.ok_seen[name].add(net)
        if self.all_ok_now():
            if self.all_ok_since is None:
                self.all_ok_since = now
            if self.first_all_ok is None:
                self.first_all_ok = now
        else:
            self.all_ok_since = None
        return True

    def net(self, name: str, net: str) -> dict:
        return ((self.hosts.get(name) or {}).get("networks") or {}).get(net) or {}

    def net_state(self, name: str, net: str) -> str:
        return self.net(name, net).get("state", "?")

    def net_ok(self, name: str, net: str) -> bool:
        """`ok` and heard: a network the agent has not heard yet is `ok` for its first
        windows (docs/contract.md §8), which proves nothing here."""
        n = self.net(name, net)
        return n.get("state") == "ok" and n.get("last_seen_s") is not None

    def host_ok(self, name: str) -> bool:
        h = self.hosts.get(name)
        return bool(h) and h.get("availability") == "online" and all(
            self.net_ok(name, n) for n in NET_KEYS)

    def all_ok_now(self) -> bool:
        return all(self.host_ok(n) for n in self.expected)

    def steady_for(self, now: float) -> float:
        return 0.0 if self.all_ok_since is None else now - self.all_ok_since

    def alarm_for(self, name: str) -> dict | None:
        """The host's own alarm (200.003), not a network's (mtce.mnfa, the agent's host)."""
        return next((a for a in self.alarms if a.get("host") == name and not a.get("network")),
                    None)

    def missing(self) -> list[str]:
        """What never came up: 'worker-1 never online', 'worker-0 never ok on pxeboot'."""
        out = []
        for name in self.expected:
            if name not in self.online_seen:
                out.append(f"{name} never online")
                continue
            lacking = [n for n in NET_KEYS if n not in self.ok_seen[name]]
            if lacking:
                out.append(f"{name} never ok on {', '.join(lacking)}")
        return out


class LogTail:
    """New lines of a log file since the last read (daemon logs the lab shows or checks)."""

    def __init__(self, path: str, from_end: bool = False):
        self.path = path
        self.offset = 0
        self.partial = b""
        if from_end:
            try:
                self.offset = os.path.getsize(path)
            except OSError:
                pass

    def read(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(1 << 20)
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        return [line.decode("utf-8", "replace") for line in lines]


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT(\d\d:\d\d:\d\d)\.\d+ \[[^\]]*\] \S+ \S+ \S+ "
                       r"\S+:\s+(Info|Warn|Error|Fatal|Debug)\s*: (.*)$")


def parse_log_line(line: str) -> tuple[str, str, str] | None:
    """(HH:MM:SS, level, text) of a daemon log line, None for anything else."""
    m = _LOG_LINE.match(line)
    return (m.group(1), m.group(2), m.group(3)) if m else None


# == display =================================================================================
