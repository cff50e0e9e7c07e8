"""Configuration: `/etc/mtc.ini` and the agent's inventory.

`OPTIONS` is the one place where keys, types and defaults live: validation, `etc/mtc.ini` (a test
compares them) and `mtce --help-config` derive from it. Files are read with the original's inih
rules (docs/contract.md §2; `CD/daemon_ini.cpp:178-292`): `;`/`#` full-line comments, `;` inline
comments only after whitespace, `name = value` or `name : value`, a UTF-8 BOM, and indented
continuation lines that re-assign the previous name. Values are then typed with configobj's
`validate`. The result is immutable; a reload builds a new one. Errors name the file, the line and
the key.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass, field

MAX_SECTION = 49     # inih MAX_SECTION 50, NUL included


MAX_SHOWN = 160      # characters of a key or reason an error line quotes (a whole line can be MBs)


def _clip(text: str | None, limit: int) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit] + "..."


class ConfigError(Exception):
    """A configuration problem that stops start-up (exit 2): file, line and key named."""

    def __init__(self, path: str, line: int | None, key: str | None, why: str):
        key, why = _clip(key, MAX_SHOWN // 2), _clip(why, MAX_SHOWN)
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key}: {why}" if key else f"{where}: {why}")
        self.path, self.line, self.key, self.why = path, line, key, why


@dataclass(frozen=True)
class Option:
    section: str
    key: str
    kind: str           # port, int, ms, seconds, string, path, command, ip, bool
    default: object
    help: str


def _o(section, key, kind, default, help_text):
    return Option(section, key, kind, default, help_text)


OPTIONS = (
    _o("agent", "mtc_agent_port", "port", 2101,
       "agent receive port on mgmt and cluster-host (clients send here)"),
    _o("agent", "mtc_rx_pxeboot_port", "port", 2102,
       "agent receive port on pxeboot (clients send pxeboot mtcAlive and ACKs here)"),
    _o("agent", "offline_period", "ms", 100, "milliseconds between offline audits"),
    _o("agent", "offline_threshold", "count", 90, "offline audits without mtcAlive before a "
       "host is declared offline"),
    _o("agent", "mnfa_threshold", "int", 2, "hosts losing the same network within one detection "
       "window that make it a multi-node failure (one mtce.mnfa alarm, no 200.003 for them); "
       "0: off"),
    _o("agent", "lazy_reboot_delay", "int", 15, "seconds a lazy reboot command asks the host "
       "to wait (parm[0] of the command)"),
    _o("agent", "inventory", "path", "/etc/mtce/inventory.ini",
       "the hosts the agent maintains, controllers included"),
    _o("agent", "mgmt_ip", "ip", "", "address the agent binds on mgmt; empty: the "
       "'controller' name (the floating mgmt address)"),
    _o("agent", "cluster_host_ip", "ip", "", "address the agent binds on cluster-host; empty: "
       "'<own hostname>-cluster-host'"),
    _o("agent", "pxeboot_ip", "ip", "", "address the agent binds on pxeboot; empty: its own "
       "line in dnsmasq.hosts, found by its mgmt MAC"),
    _o("client", "mtc_rx_mgmnt_port", "port", 2118, "client receive port, mgmt"),
    _o("client", "mtc_rx_clstr_port", "port", 2115, "client receive port, cluster-host"),
    _o("client", "mtc_rx_pxeboot_port", "port", 2119, "client receive port, pxeboot"),
    _o("client", "mtcalive_period", "seconds", 5, "seconds between mtcAlive messages"),
    _o("client", "mgmt_ip", "ip", "", "empty: the management interface's address, read over "
       "netlink; set: use it as is (containers, the lab)"),
    _o("client", "cluster_host_ip", "ip", "", "empty: the cluster-host interface's address; "
       "set: use it as is"),
    _o("timeouts", "online_period", "seconds", 7, "seconds per online audit window"),
    _o("timeouts", "pxeboot_mtcalive_window", "seconds", 10,
       "seconds per pxeboot mtcAlive monitor window"),
    _o("timeouts", "mnfa_timeout", "off_seconds", 0, "seconds after which a multi-node failure "
       "ends and each host still lost is handled on its own; 0: never"),
    _o("timeouts", "failsafe_shutdown_delay", "any_seconds", 120,
       "seconds after a reboot command before [actions] failsafe runs if the host is still up"),
    _o("paths", "platform_conf", "path", "/etc/platform/platform.conf",
       "nodetype, subfunction, system_type, system_mode, management_interface, "
       "cluster_host_interface"),
    _o("paths", "platform_dir", "path", "/etc/platform",
       ".initial_config_complete, .first_controller, simplex"),
    _o("paths", "hosts_file", "path", "/etc/hosts",
       "names are looked up here first, then with the system resolver"),
    _o("paths", "hostname_file", "path", "/etc/hostname",
       "this host's name; absent: the kernel's hostname"),
    _o("paths", "build_info", "path", "/etc/build.info", 'SW_VERSION="..."'),
    _o("paths", "dnsmasq_hosts", "path", "/opt/platform/config/{SW_VERSION}/dnsmasq.hosts",
       "agent: pxeboot addresses by mgmt MAC ({SW_VERSION} from build_info)"),
    _o("paths", "dhcp_leases_dir", "path", "/var/lib/dhcp", "client pxeboot address, DHCP"),
    _o("paths", "ifcfg_dir", "path", "/etc/network/interfaces.d",
       "client pxeboot address, static (controllers)"),
    _o("paths", "sys_class_net", "path", "/sys/class/net",
       "interface chain facts that netlink lacks (bonding mode)"),
    _o("paths", "run_dir", "path", "/var/run", ".node_locked, .node_reset, fit/ files"),
    _o("paths", "persist_dir", "path", "/var/persist/mtc", "persistent .node_locked"),
    _o("paths", "state_dir", "path", "/var/lib/mtce",
       "agent state that survives a restart (alarms, operator lock/unlock)"),
    _o("paths", "pid_dir", "path", "/var/run", "mtcAgent.pid / mtcClient.pid"),
    _o("paths", "log_dir", "path", "/var/log", "mtcAgent.log / mtcClient.log"),
    _o("paths", "agent_socket", "path", "/var/run/mtce/agent.sock",
       "the agent's control socket (mode 0600, root only)"),
    _o("actions", "reboot", "command", "systemctl reboot",
       "run (/bin/sh -c) for a reboot command"),
    _o("actions", "reset", "command", "echo b > /proc/sysrq-trigger",
       "run for a reset command"),
    _o("actions", "lazy_reboot", "command", "systemctl reboot",
       "run for a lazy reboot command, after its delay"),
    _o("actions", "failsafe", "command", "echo b > /proc/sysrq-trigger",
       "run if the host is still up failsafe_shutdown_delay seconds after a reboot"),
    _o("actions", "wipedisk", "command", "wipedisk --force && systemctl reboot --force",
       "run for a wipedisk command (fit file no_wipedisk bypasses it)"),
    _o("actions", "alarm", "command", "",
       "agent: run on each alarm raise and clear, the alarm as JSON on stdin"),
    _o("security", "key_file", "path", "",
       "message authentication keys, '<key-id> <hex key of 32+ bytes>' per line; "
       "the first signs, all verify; empty: off (wire as the original)"),
    _o("security", "require", "bool", False,
       "yes: drop every datagram without a valid tag; no: accept untagged ones"),
    _o("metrics", "listen", "listen", "",
       "agent: ADDRESS:PORT ([IPv6]:PORT) serving Prometheus text format at GET /metrics; "
       "empty: off"),
    _o("metrics", "client_listen", "listen", "",
       "client: the same for the client's own series; empty: off"),
)

OPTION_INDEX = {(o.section, o.key): o for o in OPTIONS}
SECTIONS = tuple(dict.fromkeys(o.section for o in OPTIONS))


# -- the inih reader --------------------------------------------------------------------------

@dataclass(frozen=True)
class IniEntry:
    section: str
    key: str
    value: str
    line: int


def _strip_inline_comment(text: str) -> str:
    """Cut at a `;` that follows whitespace (inih `find_chars_or_comment`)."""
    for i, ch in enumerate(text):
        if ch == ";" and i > 0 and text[i - 1].isspace():
            return text[:i]
    return text


def text_lines(text: str) -> list[str]:
    """The lines of a config file as `grep -n` counts them: split at newlines only (not at
    the form feeds, vertical tabs and U+0085 that str.splitlines also takes), a CR before the
    newline dropped."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def refuse_cr_line_ends(text: str, path: str) -> None:
    """A carriage return inside a line: a file with CR-only line ends, which a reader of
    newlines (inih, this one) takes as one line, a comment if it starts with one, so that
    every key after it silently takes its default. Refused (ConfigError) instead."""
    for lineno, line in enumerate(text_lines(text), start=1):
        if "\r" in line:
            raise ConfigError(path, lineno, None, "a carriage return inside the line (CR line "
                              "ends?): lines end at a newline")


def read_ini(text: str) -> tuple[list[IniEntry], list[tuple[int, str]]]:
    """Entries in file order, plus (line, problem) for lines inih would not accept."""
    entries: list[IniEntry] = []
    problems: list[tuple[int, str]] = []
    section, prev_name = "", ""
    for lineno, raw in enumerate(text_lines(text), start=1):
        if lineno == 1 and raw.startswith("\ufeff"):
            raw = raw[1:]
        line = raw.rstrip()
        start = line.lstrip()
        if not start or start[0] in ";#":
            continue
        if prev_name and len(start) < len(line):
            # An indented line continues the previous name: the handler sees it again.
            value = _strip_inline_comment(start).strip()
            entries.append(IniEntry(section, prev_name, value, lineno))
            continue
        if start[0] == "[":
            end = start.find("]")
            if end < 0:
                problems.append((lineno, "section header without ']'"))
                continue
            section, prev_name = start[1:end][:MAX_SECTION], ""
            continue
        sep = "=" if "=" in start else ":" if ":" in start else None
        if sep is None:
            problems.append((lineno, "line without '=' or ':'"))
            continue
        name, value = start.split(sep, 1)
        name = name.strip()
        if not name:
            problems.append((lineno, "empty key name"))
            continue
        value = _strip_inline_comment(value).strip()
        entries.append(IniEntry(section, name, value, lineno))
        prev_name = name
    return entries, problems


def read_text(path: str) -> str:
    """A config file's text; raises ConfigError naming the file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ConfigError(path, None, None, f"cannot read: {err.strerror or err}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ConfigError(path, line, None, "not UTF-8 text") from None


# -- typing with configobj/validate -----------------------------------------------------------

def _spec_for(opt: Option) -> str:
    kinds = {
        "port": "integer(min=1, max=65535)",
        "int": "integer(min=0)",
        "count": "integer(min=1)",
        "ms": "integer(min=1)",
        "seconds": "seconds()",
        "any_seconds": "any_seconds()",
        "off_seconds": "off_seconds()",
        "string": "string()",
        "path": "string()",
        "command": "string()",
        "ip": "ip_or_empty()",
        "bool": "yes_no()",
        "listen": "listen_or_empty()",
    }
    return kinds[opt.kind]


def _check_ip(value, *args, **kwargs):
    from validate import VdtValueError
    if value == "":
        return ""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise VdtValueError(value) from None


def parse_listen(text: str) -> tuple[str, int]:
    """`[metrics] listen`: `ADDRESS:PORT` or `[IPv6]:PORT` -> (address, port); raises ValueError."""
    import ipaddress
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError("expected [IPv6]:PORT")
        if ipaddress.ip_address(host).version != 6:
            raise ValueError("brackets are for an IPv6 address")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError("expected ADDRESS:PORT")
        if ipaddress.ip_address(host).version != 4:
            raise ValueError("an IPv6 address goes in brackets: [ADDRESS]:PORT")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port!r}: 1-65535")
    return host, int(port)


def _check_listen(value, *args, **kwargs):
    from validate import VdtValueError
    value = str(value).strip()
    if value == "":
        return ""
    try:
        parse_listen(value)
    except ValueError:
        raise VdtValueError(value) from None
    return value


def _check_any_seconds(value, *args, **kwargs):
    """A finite number of seconds, of any sign (`failsafe_shutdown_delay`: the original reads
    it with atoi and takes a value below 1 as 2, docs/protocol.md §8)."""
    from validate import VdtTypeError, VdtValueError
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise VdtTypeError(value) from None
    if math.isnan(number) or math.isinf(number):
        raise VdtValueError(value)
    return number


def _check_seconds(value, *args, **kwargs):
    """A finite number of seconds above 0 (validate's float() lets nan and inf through)."""
    from validate import VdtValueTooSmallError
    number = _check_any_seconds(value)
    if number < 0.001:
        raise VdtValueTooSmallError(value)
    return number


def _check_off_seconds(value, *args, **kwargs):
    """A finite number of seconds, 0 or more (0: off, `mnfa_timeout`)."""
    from validate import VdtValueTooSmallError
    number = _check_any_seconds(value)
    if number < 0:
        raise VdtValueTooSmallError(value)
    return number


def _check_yes_no(value, *args, **kwargs):
    from validate import VdtTypeError
    if isinstance(value, bool):
        return value
    low = str(value).lower()
    if low in ("yes", "true", "on", "1"):
        return True
    if low in ("no", "false", "off", "0"):
        return False
    raise VdtTypeError(value)


_WHY = {
    "VdtTypeError": "wrong type",
    "VdtValueTooSmallError": "too small",
    "VdtValueTooBigError": "too big",
    "VdtValueError": "not a valid value",
}


def _explain(opt: Option, err: Exception) -> str:
    what = {
        "port": "a port number (1-65535)",
        "int": "a whole number (0 or more)",
        "count": "a whole number (1 or more)",
        "ms": "milliseconds, a whole number (1 or more)",
        "seconds": "seconds, a finite number above 0",
        "any_seconds": "seconds, a finite number (below 1: 2)",
        "off_seconds": "seconds, a finite number, 0 or more (0: off)",
        "ip": "an IPv4 or IPv6 address, or empty",
        "bool": "yes or no",
        "listen": "ADDRESS:PORT or [IPv6]:PORT, or empty",
    }.get(opt.kind, "a string")
    return f"{_WHY.get(type(err).__name__, 'invalid')}, expected {what}"


_NUMBERS = ("port", "int", "count", "ms", "seconds", "any_seconds", "off_seconds")


def _typed(values: dict, lines: dict, path: str) -> dict:
    """Type every known value with validate; defaults fill the rest."""
    from configobj import ConfigObj, flatten_errors
    from validate import Validator

    spec = []
    for section in SECTIONS:
        spec.append(f"[{section}]")
        for opt in OPTIONS:
            if opt.section == section:
                spec.append(f"{opt.key} = {_spec_for(opt)}")
    raw = {s: {} for s in SECTIONS}
    for (section, key), value in values.items():
        opt = OPTION_INDEX[(section, key)]
        if opt.kind in _NUMBERS and value.endswith(";"):
            value = value[:-1].rstrip()     # `120;` reads as 120, as the original's atoi
        raw[section][key] = value
    conf = ConfigObj(raw, configspec=spec, interpolation=False, list_values=False)
    validator = Validator({"ip_or_empty": _check_ip, "yes_no": _check_yes_no,
                           "seconds": _check_seconds, "any_seconds": _check_any_seconds,
                           "off_seconds": _check_off_seconds,
                           "listen_or_empty": _check_listen})
    result = conf.validate(validator, preserve_errors=True)
    if result is not True:
        for sections, key, err in flatten_errors(conf, result):
            if key is None or err is False:
                continue
            section = sections[0]
            opt = OPTION_INDEX[(section, key)]
            shown = raw[section].get(key)
            raise ConfigError(path, lines.get((section, key)), f"[{section}] {key}",
                              f"{shown!r}: {_explain(opt, err)}")
    typed = {}
    for opt in OPTIONS:
        got = conf[opt.section].get(opt.key)
        typed[(opt.section, opt.key)] = opt.default if got is None else got
    return typed


class Section:
    """Read-only attribute access to one section's typed values."""

    def __init__(self, name: str, values: dict):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, key):
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"[{self._name}] has no key {key!r}") from None

    def __setattr__(self, key, value):
        raise AttributeError("configuration is read-only")

    def items(self):
        return self._values.items()


@dataclass(frozen=True)
class Config:
    path: str
    values: dict
    lines: dict = field(default_factory=dict)
    warnings: tuple = ()
    base: str = ""      # the directory relative paths were taken from: where mtce started

    def get(self, section: str, key: str):
        return self.values[(section, key)]

    def __getattr__(self, section: str) -> Section:
        """`cfg.agent`, `cfg.paths`, ...: made at the first use and kept (the object is
        immutable), so that reading a key on a hot path builds nothing."""
        if section in SECTIONS:
            made = Section(section, {k: v for (s, k), v in self.values.items() if s == section})
            object.__setattr__(self, section, made)
            return made
        raise AttributeError(section)

    # Converted once, named with their unit (style: no bare numbers for time).
    @property
    def offline_period_s(self) -> float:
        return self.get("agent", "offline_period") / 1000.0

    def diff(self, other: "Config") -> list[str]:
        """'[section] key: old -> new' for every value that differs."""
        return [f"[{s}] {k}: {self.values[(s, k)]!r} -> {other.values[(s, k)]!r}"
                for (s, k) in self.changed(other)]

    def with_value(self, key: tuple[str, str], value) -> "Config":
        """A copy with one typed value replaced (the config itself stays immutable)."""
        values = dict(self.values)
        values[key] = value
        return Config(self.path, values, self.lines, self.warnings, self.base)

    def reread(self) -> "Config":
        """The same file read again (SIGHUP), relative paths taken from the same directory as
        at start: a daemon's own working directory is `/` by then (docs/contract.md §1)."""
        return load(self.path, base=self.base)

    def changed(self, other: "Config") -> list[tuple[str, str]]:
        """(section, key) of every value that differs, in OPTIONS order."""
        return [k for k in self.values if self.values[k] != other.values[k]]

    def reload_report(self, other: "Config", program: str, restart: set, unused: set,
                      notes: dict | None = None) -> list[str]:
        """One line per changed value saying what a running daemon does with it: applied
        (with `notes[key]` telling how, when given), not used by this program, or needing a
        restart. A reload never claims a change it did not make."""
        lines = []
        for key in self.changed(other):
            text = (f"[{key[0]}] {key[1]}: {self.values[key]!r} -> {other.values[key]!r}")
            if key in restart:
                text += f" ; needs a restart of {program} to take effect"
            elif key in unused:
                text += f" ; not used by {program}"
            elif notes and key in notes:
                text += f" ; {notes[key]}"
            lines.append(text)
        return lines


def defaults() -> Config:
    return Config("<defaults>", {(o.section, o.key): o.default for o in OPTIONS})


def _current_dir() -> str:
    try:
        return os.getcwd()
    except OSError:         # removed under us: only a relative path needs it
        return ""


def _from_base(base: str, path: str, where: str, line: int | None, key: str | None) -> str:
    """`path` taken from `base` if relative (docs/contract.md §1: from where the command
    started)."""
    if not path or os.path.isabs(path):
        return path
    if not base:
        raise ConfigError(where, line, key, f"{path!r} is relative and the current directory "
                          "is unavailable")
    return os.path.join(base, path)


def load(path: str, overrides: dict | None = None, base: str | None = None) -> Config:
    """Read and type `path`; raises ConfigError (exit 2) for an unreadable file or bad value.

    A relative `path`, and every relative path value in the file, is taken from `base`
    (default: the current directory) once, here, so that a daemon reloading later from `/`
    reads the same files (`Config.reread`). Unknown sections and keys, and lines inih would
    skip, become `warnings` (logged once by the daemon, never fatal).
    """
    base = _current_dir() if base is None else base
    path = _from_base(base, path, path, None, None)
    text = read_text(path)
    refuse_cr_line_ends(text, path)
    entries, problems = read_ini(text)
    values, lines, warnings = {}, {}, []
    for lineno, why in problems:
        if why.startswith("section header"):
            # inih would go on in the section before, where these keys are unknown, and the
            # defaults would apply instead: for [actions] the real reboot (issue 23 review).
            raise ConfigError(path, lineno, None, f"{why}: the keys after it would not be "
                              "read")
        warnings.append(f"{path}:{lineno}: ignoring line: {why}")
    for e in entries:
        if (e.section, e.key) in OPTION_INDEX:
            values[(e.section, e.key)] = e.value
            lines[(e.section, e.key)] = e.line
        elif e.section not in SECTIONS:
            meant = e.section.strip().lower()
            if meant in SECTIONS:
                # Section names are case-sensitive (inih's strcmp): the keys of `[ACTIONS]`
                # would be unknown and the [actions] defaults really reboot.
                raise ConfigError(path, e.line, f"[{e.section}] {e.key}", f"the section is "
                                  f"[{meant}], spelt exactly so: its keys would not be read")
            warnings.append(f"{path}:{e.line}: unknown section [{e.section}] (key {e.key})")
        else:
            warnings.append(f"{path}:{e.line}: unknown key [{e.section}] {e.key}")
    for (section, key), value in (overrides or {}).items():
        values[(section, key)] = str(value)
    typed = _typed(values, lines, path)
    for opt in OPTIONS:
        if opt.kind == "path":
            key = (opt.section, opt.key)
            typed[key] = _from_base(base, typed[key], path, lines.get(key),
                                    f"[{opt.section}] {opt.key}")
    return Config(path, typed, lines, tuple(dict.fromkeys(warnings)), base)


def load_paths(path: str, base: str | None = None) -> tuple[str, dict]:
    """(the file's absolute path, its [paths] values) exactly as `load` resolves them, reading
    nothing else: a bad value in another section does not hide where the daemon's pidfile and
    socket are (`mtce daemon-info`, for the init scripts and the OCF agent). Raises
    ConfigError for a file that cannot be read."""
    base = _current_dir() if base is None else base
    path = _from_base(base, path, path, None, None)
    entries, _ = read_ini(read_text(path))
    values = {o.key: o.default for o in OPTIONS if o.section == "paths"}
    lines = {}
    for e in entries:
        if e.section == "paths" and e.key in values:
            values[e.key], lines[e.key] = e.value, e.line
    return path, {k: _from_base(base, v, path, lines.get(k), f"[paths] {k}")
                  for k, v in values.items()}


def render_ini() -> str:
    """A commented mtc.ini with every key at its default, generated from OPTIONS."""
    out = ["; mtce configuration (the original's /etc/mtc.ini format).",
           "; ';' or '#' starts a comment line; ';' after whitespace starts an inline comment.",
           "; Every key is shown with its default."]
    for section in SECTIONS:
        out.append("")
        out.append(f"[{section}]")
        for opt in OPTIONS:
            if opt.section != section:
                continue
            default = opt.default
            if isinstance(default, bool):
                default = "yes" if default else "no"
            out.append(f"; {opt.help}")
            out.append(f"{opt.key} = {default}".rstrip())
    return "\n".join(out) + "\n"


# -- inventory (docs/contract.md §4) --------------------------------------------------------------
#
# Not inih: the inventory is mtce's own file, and a host taken wrongly is a host monitored,
# locked or rebooted wrongly. So every line must be a comment, a `[hostname]` header or
# `key = value` with a known key, once per section; anything else is refused with the line
# of the fault itself (docs/contract.md §4), and a reload that meets it keeps the running inventory.

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
INVENTORY_KEYS = ("personality", "mgmt_mac", "mgmt_ip", "cluster_host_ip", "administrative")
# The original's host functions and the subfunction word its platform.conf `subfunction=`
# adds (`controller,worker,lowlatency` on an all-in-one); at least one function is named.
PERSONALITY_WORDS = ("controller", "worker", "storage", "lowlatency")
PERSONALITY_FUNCTIONS = ("controller", "worker", "storage")


@dataclass(frozen=True)
class HostEntry:
    hostname: str
    personality: str
    mgmt_mac: str
    mgmt_ip: str
    cluster_host_ip: str
    administrative: str
    line: int = 0

    @property
    def is_controller(self) -> bool:
        return "controller" in self.personality.split(",")


@dataclass(frozen=True)
class Inventory:
    path: str
    hosts: dict          # hostname -> HostEntry, in file order
    warnings: tuple = ()

    def diff(self, other: "Inventory") -> tuple[list, list, list]:
        """(added, removed, changed) hostnames going from self to other."""
        added = [h for h in other.hosts if h not in self.hosts]
        removed = [h for h in self.hosts if h not in other.hosts]
        changed = [h for h in other.hosts
                   if h in self.hosts and not _same(self.hosts[h], other.hosts[h])]
        return added, removed, changed


def _same(a: HostEntry, b: HostEntry) -> bool:
    return all(getattr(a, k) == getattr(b, k) for k in INVENTORY_KEYS)


def _inventory_sections(text: str, path: str,
                        warnings: list) -> list[tuple[str, int, dict]]:
    """(hostname, header line, {key: (value, line)}) in file order; ConfigError for any line
    that is not exactly a comment, a header or `key = value`."""
    sections: list[tuple[str, int, dict]] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(text_lines(text), start=1):
        if lineno == 1 and raw.startswith("\ufeff"):
            raw = raw[1:]
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line[0] == "[":
            end = line.find("]")
            if end < 0:
                raise ConfigError(path, lineno, line, "section header without ']'")
            rest = line[end + 1:].strip()
            if rest and rest[0] not in ";#":
                raise ConfigError(path, lineno, line[:end + 1],
                                  f"{rest!r} after ']' (one [hostname] per line)")
            name = line[1:end]
            if name.lower() in seen:            # host names do not differ by case (DNS)
                raise ConfigError(path, lineno, f"[{name}]",
                                  f"section given twice (first at line {seen[name.lower()]})")
            seen[name.lower()] = lineno
            sections.append((name, lineno, {}))
            continue
        where = f"[{sections[-1][0]}]" if sections else None
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise ConfigError(path, lineno, where, f"{line!r} is neither a [hostname] header, "
                              "a comment nor key = value")
        if not sections:
            raise ConfigError(path, lineno, key, "key outside a [hostname] section")
        kv = sections[-1][2]
        if key not in INVENTORY_KEYS:
            # Warned about once, never fatal, as in mtc.ini (docs/contract.md §2): the list of
            # refusals of docs/contract.md §4 does not name it.
            warnings.append(f"{path}:{lineno}: unknown key {where} {key} (keys: "
                            f"{', '.join(INVENTORY_KEYS)})")
            continue
        if key in kv:
            raise ConfigError(path, lineno, f"{where} {key}",
                              f"given twice (first at line {kv[key][1]})")
        kv[key] = (_strip_inline_comment(value).strip(), lineno)
    return sections


def _personality(value: str) -> str | None:
    """The personality as a comma list without spaces, or None if it is not one."""
    items = [i.strip() for i in value.split(",")]
    if (not all(i in PERSONALITY_WORDS for i in items) or len(set(items)) != len(items)
            or not any(i in PERSONALITY_FUNCTIONS for i in items)):
        return None
    return ",".join(items)


def _same_address(text: str) -> str:
    """The canonical form two spellings of one address share (an IPv4-mapped IPv6 address
    is its IPv4 address)."""
    addr = ipaddress.ip_address(text)
    mapped = getattr(addr, "ipv4_mapped", None)
    return str(mapped or addr)


def parse_inventory(text: str, path: str = "<inventory>") -> Inventory:
    """The inventory's hosts; raises ConfigError naming the line and key of the first fault
    (a missing key: the line of its section's header)."""
    hosts = {}
    addresses: dict[str, str] = {}
    macs: dict[str, str] = {}
    warnings: list[str] = []
    refuse_cr_line_ends(text, path)
    for name, header, kv in _inventory_sections(text, path, warnings):
        def val(key, default="", kv=kv):
            return kv[key][0] if key in kv else default

        def line(key, kv=kv, header=header):
            return kv[key][1] if key in kv else header

        if not _HOSTNAME.fullmatch(name):
            raise ConfigError(path, header, f"[{name}]", "not a valid hostname")
        for key in ("personality", "mgmt_mac", "mgmt_ip"):
            if key not in kv:
                raise ConfigError(path, header, f"[{name}] {key}", "missing")
        personality = _personality(val("personality"))
        if personality is None:
            raise ConfigError(path, line("personality"), f"[{name}] personality",
                              f"{val('personality')!r} is not a comma list of "
                              f"{', '.join(PERSONALITY_WORDS)} naming at least one of "
                              f"{', '.join(PERSONALITY_FUNCTIONS)}")
        mac = val("mgmt_mac")
        if not _MAC.match(mac):
            raise ConfigError(path, line("mgmt_mac"), f"[{name}] mgmt_mac",
                              f"{mac!r} is not a MAC address (xx:xx:xx:xx:xx:xx)")
        if int(mac[:2], 16) & 1 or mac.replace(":", "") == "000000000000":
            raise ConfigError(path, line("mgmt_mac"), f"[{name}] mgmt_mac",
                              f"{mac} is no host's MAC (broadcast, multicast or zero)")
        if mac.lower() in macs:
            raise ConfigError(path, line("mgmt_mac"), f"[{name}] mgmt_mac",
                              f"{mac} is already the MAC of {macs[mac.lower()]}")
        macs[mac.lower()] = name
        ips = {}
        for key in ("mgmt_ip", "cluster_host_ip"):
            raw = val(key)
            if not raw and key == "cluster_host_ip":
                ips[key] = ""
                continue
            try:
                addr = ipaddress.ip_address(raw)
                ips[key] = str(addr)
                same = _same_address(raw)
            except ValueError:
                raise ConfigError(path, line(key), f"[{name}] {key}",
                                  f"{raw!r} is not an IP address") from None
            if addr.is_unspecified or addr.is_multicast or \
                    addr == ipaddress.IPv4Address("255.255.255.255"):
                raise ConfigError(path, line(key), f"[{name}] {key}",
                                  f"{raw} is no host's address (unspecified, multicast or "
                                  f"broadcast)")
            owner = addresses.get(same)
            if owner:
                raise ConfigError(path, line(key), f"[{name}] {key}",
                                  f"{raw} is already an address of {owner}")
            addresses[same] = name
        admin = val("administrative", "unlocked")
        if admin not in ("locked", "unlocked"):
            raise ConfigError(path, line("administrative"), f"[{name}] administrative",
                              f"{admin!r} is not locked or unlocked")
        hosts[name] = HostEntry(name, personality, mac.lower(), ips["mgmt_ip"],
                                ips["cluster_host_ip"], admin, header)
    return Inventory(path, hosts, tuple(warnings))


def load_inventory(path: str) -> Inventory:
    return parse_inventory(read_text(path), path)


def sw_version(build_info_path: str) -> str:
    """SW_VERSION from build.info, quotes stripped; "" if absent."""
    try:
        with open(build_info_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("SW_VERSION="):
                    return line.split("=", 1)[1].strip().strip('"').strip("'")
    except OSError:
        pass
    return ""


def expand_path(template: str, build_info_path: str) -> str:
    """`{SW_VERSION}` in a configured path, from build.info (the original's dnsmasq.hosts)."""
    if "{SW_VERSION}" in template:
        template = template.replace("{SW_VERSION}", sw_version(build_info_path))
    return os.path.normpath(template) if template else template
