"""Names and codes shared by every part of mtce.

Stdlib only: the networks, the command codes with their log names, the mtcAlive flag bits and
the states the agent reports. The wire values come from docs/protocol.md §2; the JSON and ini
spellings from docs/contract.md §5.
"""

import enum


class Net(enum.IntEnum):
    """The three maintenance networks, valued as the original's interface indices."""

    MGMT = 0
    CLSTR = 1
    PXEBOOT = 2

    @property
    def iface(self) -> str:
        """The original's name in logs and in the mtcAlive JSON ("Mgmnt", "Clstr", "Pxeboot")."""
        return _IFACE_NAMES[self]

    @property
    def key(self) -> str:
        """The spelling of docs/contract.md §5 in `mtce hosts --json` ("mgmt", "cluster-host",
        "pxeboot")."""
        return _JSON_KEYS[self]

    @classmethod
    def from_iface(cls, name: str) -> "Net | None":
        return _BY_IFACE.get(name)


_IFACE_NAMES = {Net.MGMT: "Mgmnt", Net.CLSTR: "Clstr", Net.PXEBOOT: "Pxeboot"}
_JSON_KEYS = {Net.MGMT: "mgmt", Net.CLSTR: "cluster-host", Net.PXEBOOT: "pxeboot"}
_BY_IFACE = {v: k for k, v in _IFACE_NAMES.items()}
# ("mgmt", "cluster-host", "pxeboot"): the JSON keys, as ctl, metrics and the labs name them
NET_KEYS = tuple(_JSON_KEYS[n] for n in Net)


class Cmd(enum.IntEnum):
    """Host command and message codes (docs/protocol.md §2, `CC/nodeBase.h:797-822`)."""

    NONE = 0
    LOOPBACK = 1
    REBOOT = 2
    WIPEDISK = 3
    RESET = 4
    MTCALIVE = 5                   # MTC_MSG_MTCALIVE, client -> agent
    REQ_MTCALIVE = 6               # MTC_REQ_MTCALIVE, agent -> client
    MAIN_GOENABLED = 7
    SUBF_GOENABLED = 8
    REQ_MAIN_GOENABLED = 9
    REQ_SUBF_GOENABLED = 10
    MAIN_GOENABLED_FAILED = 11
    SUBF_GOENABLED_FAILED = 12
    LOCKED = 13
    STOP_CONTROL_SVCS = 14
    STOP_WORKER_SVCS = 15
    STOP_STORAGE_SVCS = 16
    START_CONTROL_SVCS = 17
    START_WORKER_SVCS = 18
    START_STORAGE_SVCS = 19
    LAZY_REBOOT = 20
    HOST_SVCS_RESULT = 21
    INFO = 22
    SYNC = 23
    UNLOCKED = 24
    LAST = 25


# The original's log names (`CC/nodeBase.cpp:137-251`).
CMD_NAMES = {
    Cmd.NONE: "none",
    Cmd.LOOPBACK: "loopback",
    Cmd.REBOOT: "reboot",
    Cmd.WIPEDISK: "wipedisk",
    Cmd.RESET: "reset",
    Cmd.MTCALIVE: "mtcAlive msg",
    Cmd.REQ_MTCALIVE: "mtcAlive req",
    Cmd.MAIN_GOENABLED: "goEnabled main msg",
    Cmd.SUBF_GOENABLED: "goEnabled subf msg",
    Cmd.REQ_MAIN_GOENABLED: "goEnabled main req",
    Cmd.REQ_SUBF_GOENABLED: "goEnabled subf req",
    Cmd.MAIN_GOENABLED_FAILED: "goEnabled main failed",
    Cmd.SUBF_GOENABLED_FAILED: "goEnabled subf failed",
    Cmd.LOCKED: "locked msg",
    Cmd.STOP_CONTROL_SVCS: "stop controller host services",
    Cmd.STOP_WORKER_SVCS: "stop worker host services",
    Cmd.STOP_STORAGE_SVCS: "stop storage host services",
    Cmd.START_CONTROL_SVCS: "start controller host services",
    Cmd.START_WORKER_SVCS: "start worker host services",
    Cmd.START_STORAGE_SVCS: "start storage host services",
    Cmd.LAZY_REBOOT: "lazy reboot",
    Cmd.HOST_SVCS_RESULT: "host services result",
    Cmd.INFO: "info msg",
    Cmd.SYNC: "sync",
    Cmd.UNLOCKED: "unlocked msg",
}

EVENT_MONITOR_READY = 0xF0F0F0F0   # the mtcClient ready event, in `cmd`
ENHANCED_HOST_SERVICES = 0x1B0000B1
MTC_CMD_VERSION = 1                # agent commands carry ver=1: target MAC in hdr[17:]


def cmd_name(code: int) -> str:
    """The original's log name of a command code; any other code prints as its number."""
    name = CMD_NAMES.get(code)     # IntEnum keys hash as their ints
    return name if name is not None else f"cmd 0x{code:x}"


class Flag(enum.IntFlag):
    """The "I am <state>" bits of mtcAlive parm[2] (docs/protocol.md §2.1)."""

    I_AM_CONFIGURED = 0x1
    I_AM_NOT_HEALTHY = 0x2
    I_AM_HEALTHY = 0x4
    I_AM_LOCKED = 0x8
    SUBF_CONFIGURED = 0x10
    MAIN_GOENABLED = 0x20
    SUBF_GOENABLED = 0x40
    SM_DEGRADED = 0x80
    PATCHING = 0x100
    PATCHED = 0x200
    LUKS_VOL_FAILED = 0x400
    SM_UNHEALTHY = 0x1000
    MAIN_GOENABLE_FAIL = 0x10000
    SUBF_GOENABLE_FAIL = 0x20000
    MAIN_SERVICES_FAIL = 0x40000
    SUBF_SERVICES_FAIL = 0x80000


# The failure bits among them (docs/contract.md §5 `failure_flags`), shown by their define's name
# without the MTC_FLAG__ prefix; 0x10000-0x80000 came with upstream 6106051.
FAILURE_FLAGS = (Flag.I_AM_NOT_HEALTHY, Flag.LUKS_VOL_FAILED, Flag.SM_UNHEALTHY,
                 Flag.MAIN_GOENABLE_FAIL, Flag.SUBF_GOENABLE_FAIL, Flag.MAIN_SERVICES_FAIL,
                 Flag.SUBF_SERVICES_FAIL)
FAILURE_MASK = sum(int(f) for f in FAILURE_FLAGS)


def failure_flag_names(flags: int) -> list[str]:
    """The names of the failure bits set in an mtcAlive's parm[2], lowest bit first."""
    if not flags & FAILURE_MASK:
        return []
    return [f.name for f in FAILURE_FLAGS if flags & f]


class Health(enum.IntEnum):
    """mtcAlive parm[1] (`CC/nodeBase.h:105-108`)."""

    UNKNOWN = 0
    HEALTHY = 1
    UNHEALTHY = 2


# parm[] slots of an mtcAlive (`CC/nodeBase.h:72-77`).
PARM_UPTIME, PARM_HEALTH, PARM_FLAGS, PARM_SEQ = 0, 1, 2, 3
MTCALIVE_NUM = 4
PARM_LOCK_PERSIST = 0


class Availability(str, enum.Enum):
    ONLINE = "online"
    OFFLINE = "offline"


class NetState(str, enum.Enum):
    OK = "ok"
    LOST = "lost"
    UNPROVISIONED = "unprovisioned"


class Admin(str, enum.Enum):
    LOCKED = "locked"
    UNLOCKED = "unlocked"


ALARM_MTCALIVE = "200.003"
ALARM_MNFA = "mtce.mnfa"          # one per network in a multi-node failure (docs/contract.md §5)
# The host fact (state_dir hosts.json) that a host is handled on its own since an MNFA on the
# network timed out (agent_mnfa), until it is back there.
MNFA_TIMED_OUT_FACT = {net: f"mnfa_timed_out_{net.key}" for net in Net}
CONTROLLERS = ("controller-0", "controller-1")   # hard-coded names (docs/protocol.md §3)
FEATURE_PXEBOOT_MTCALIVE = "pxeboot_mtcAlive"
SERVICE_MTCCLIENT = "mtcClient"
MAX_WAIT_S = 3600.0     # the longest `mtce lock --wait` the CLI asks for and the agent grants
