"""The vocabulary both daemons' pure cores decide in, beside what only one of them does
(agent_decisions: Send, RaiseAlarm, ...; client_core: SendAlive, SendAck, ...): `Log`, a line
to log. `kind` says which rule it goes through (logs.Lines, the one throttling rule): "log"
plain, "noise" what a datagram can repeat at will (throttled per `key`, within the noise
budget), "change" a change a datagram made (throttled per `key`, within the events budget).
Stdlib only.
"""

from __future__ import annotations

from typing import NamedTuple


class Log(NamedTuple):
    level: str          # "debug", "info", "warning", "error"
    text: str
    kind: str = "log"   # "log", "noise" or "change"
    key: tuple = ()     # the throttle's cause (noise, change)
