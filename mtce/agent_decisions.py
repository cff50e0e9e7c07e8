"""The actions the agent's host state machines return, and what they share: `Send`,
`RaiseAlarm`, `ClearAlarm`, `Log` (carried out by agent.py), the timer `Settings`, the `Facts`
the wiring refreshes, and the pure timing arithmetic. Imports `states` and `budget`, and
`config` for `Settings.from_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Union

from mtce.budget import Budget
from mtce.decisions import Log
from mtce.states import Cmd, Net

INF = float("inf")
NO_ACTIONS: tuple = ()
ALARM_SEVERITY = "minor"
# All hosts' sequence-event lines together: SEQ_TABLE_BURST, then SEQ_TABLE_PER_MIN a minute
# (when every host has gaps at once, the agent's own receive buffer overflowed: a few lines
# and one line of totals, not ten per host and network).
SEQ_TABLE_BURST, SEQ_TABLE_PER_MIN = 100, 100


# -- actions ---------------------------------------------------------------------------------

class Send(NamedTuple):
    """Send command `cmd` to `host` over `net` (the wiring picks address, port and MAC)."""
    host: str
    net: Net
    cmd: Cmd
    num: int = 0
    parm: tuple = ()


class RaiseAlarm(NamedTuple):
    """Raise an alarm; raised again with other `hosts` (mtce.mnfa), it names them."""
    host: str
    alarm_id: str
    severity: str
    reason: str
    network: str = ""                   # mtce.mnfa: the network's JSON key (one alarm each)
    hosts: tuple = ()                   # mtce.mnfa: the hosts in it


class ClearAlarm(NamedTuple):
    host: str
    alarm_id: str
    network: str = ""


class Remember(NamedTuple):
    """A fact about `host` worth keeping in `state_dir` for the next agent (a restart or a
    takeover, docs/contract.md §8 "Takeover"): `fact` is "online" (its availability) or
    "pxeboot_feature" (what its latest ready event offered)."""
    host: str
    fact: str
    value: bool


Action = Union[Send, RaiseAlarm, ClearAlarm, Log, Remember]


# -- settings and the pure timing arithmetic -------------------------------------------------

class Facts:
    """Facts about the agent's own host that can change while it runs, shared by every host
    and refreshed by the wiring (agent_host.py reads no files): `still_simplex` is the
    `<platform_dir>/simplex` file, which the original checks at each locked correction
    (no pxeboot send and no LOCK_PERSIST while it exists,
    docs/protocol.md §5.4 "Locked correction"); `grid_s` the agent's long read grid (issue 25),
    onto which a pxeboot window's end is put (0: none)."""

    __slots__ = ("still_simplex", "seq_budget", "grid_s")

    def __init__(self, still_simplex: bool = False):
        self.still_simplex = still_simplex
        self.seq_budget = Budget(SEQ_TABLE_BURST, SEQ_TABLE_PER_MIN)
        self.grid_s = 0.0


def _default(section: str, key: str):
    """The one home of every default (config.OPTIONS)."""
    from mtce.config import OPTION_INDEX
    return OPTION_INDEX[(section, key)].default


@dataclass(frozen=True)
class Settings:
    """Agent timers and facts about the agent itself, converted once to seconds."""
    online_period_s: float = float(_default("timeouts", "online_period"))
    offline_period_s: float = _default("agent", "offline_period") / 1000.0
    offline_threshold: int = int(_default("agent", "offline_threshold"))
    pxeboot_window_s: float = float(_default("timeouts", "pxeboot_mtcalive_window"))
    simplex: bool = False
    pxeboot_provisioned: bool = True    # the agent's own pxeboot network
    lost_windows: int = 3               # docs/contract.md §8: mgmt/cluster-host lost after 3
    mnfa_threshold: int = int(_default("agent", "mnfa_threshold"))         # 0: off
    mnfa_timeout_s: float = float(_default("timeouts", "mnfa_timeout"))    # 0: never
    debug: bool = False                 # emit the original's clog/alog detail as debug Logs
    # Derived, for the audits' hot path: lost_after_s() and whether the monitor may run at all
    # on this controller (agent_pxeboot_gate).
    lost_s: float = field(init=False, repr=False, compare=False)
    pxeboot_here: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        for name in ("online_period_s", "offline_period_s", "pxeboot_window_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be above 0")
        if self.offline_threshold < 1 or self.lost_windows < 1:
            raise ValueError("offline_threshold and lost_windows must be 1 or more")
        object.__setattr__(self, "lost_s", self.online_period_s * self.lost_windows)
        object.__setattr__(self, "pxeboot_here", self.pxeboot_provisioned and not self.simplex)

    @classmethod
    def from_config(cls, config, *, simplex: bool, pxeboot_provisioned: bool) -> "Settings":
        """From a `config.Config` (docs/contract.md §2 keys), unclamped (docs/contract.md §8)."""
        return cls(online_period_s=float(config.get("timeouts", "online_period")),
                   offline_period_s=config.offline_period_s,
                   offline_threshold=int(config.get("agent", "offline_threshold")),
                   pxeboot_window_s=float(config.get("timeouts", "pxeboot_mtcalive_window")),
                   mnfa_threshold=int(config.get("agent", "mnfa_threshold")),
                   mnfa_timeout_s=float(config.get("timeouts", "mnfa_timeout")),
                   simplex=simplex, pxeboot_provisioned=pxeboot_provisioned and not simplex)


def offline_after_s(s: Settings) -> float:
    """Seconds from a host's last mtcAlive to `offline` with a timely audit
    (docs/contract.md §8 "Availability")."""
    return s.online_period_s + s.offline_period_s * s.offline_threshold


def lost_after_s(s: Settings) -> float:
    """Seconds without mtcAlive on mgmt/cluster-host, host online, before that net is lost."""
    return s.lost_s
