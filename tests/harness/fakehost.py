"""A whole host's files under one directory (`FakeHost`: platform.conf, hosts, leases,
dnsmasq.hosts, an mtc.ini whose every [paths] key points inside it and whose [actions] are
harmless), the check that an ini cannot touch this machine (`assert_harmless`), and the ini in
inih's other syntax (`inih_style`).
"""

from __future__ import annotations

import os

from harness.env import loopback_block

def inih_style(ini: str) -> None:
    """Rewrite an mtc.ini in syntax inih (so mtce) reads as well as `key = value`
    (docs/contract.md §2, mtce/config.py `read_ini`): a UTF-8 BOM, `key: value` in [paths],
    an inline `;` comment after a tab."""
    out, section = [], ""
    for line in open(ini, encoding="utf-8").read().splitlines():
        if line.startswith("["):
            section = line
        elif section == "[paths]" and " = " in line:
            key, value = line.split(" = ", 1)
            line = f"{key}: {value}\t; set for this host"
        out.append(line)
    with open(ini, "w", encoding="utf-8") as f:
        f.write("\ufeff" + "\n".join(out) + "\n")


HARMLESS_ACTIONS = ("reboot", "reset", "lazy_reboot", "failsafe", "wipedisk", "alarm")
_DANGER = ("systemctl", "sysrq", "/sbin/reboot", "shutdown", "poweroff", "halt", "init ",
           "wipedisk --force")


def assert_harmless(ini: str) -> None:
    """Refuse to start a daemon whose [actions] could touch this machine.

    Every [actions] key must be set (the defaults reboot the machine) and none may run a
    power or service command.
    """
    from mtce import config
    cfg = config.load(ini)
    for key in [o.key for o in config.OPTIONS if o.section == "actions"]:
        value = cfg.get("actions", key)
        assert (("actions", key) in cfg.lines) or key == "alarm", \
            f"{ini}: [actions] {key} is not set: its default would touch the machine"
        assert not any(d in value for d in _DANGER), f"{ini}: [actions] {key} = {value!r}"


class FakeHost:
    """Every file a daemon reads, under one directory; `ini` points all [paths] into it."""

    def __init__(self, root, *, hostname="worker-0", subfunction="worker",
                 system_type="standard", system_mode="duplex", mgmt_iface="lab0",
                 clstr_iface="lab1", mac="08:00:27:aa:bb:01", net=None, mgmt_ip=None,
                 cluster_host_ip=None, pxeboot_ip=None, period=1.0, failsafe_delay=2,
                 extra: dict | None = None, platform: bool = True,
                 controllers: dict | None = None):
        self.root = str(root)
        self.net = net or loopback_block()
        self.hostname = hostname
        self.mac = mac
        self.mgmt_iface, self.clstr_iface = mgmt_iface, clstr_iface
        self.mgmt_ip = mgmt_ip or self.net + "10"
        self.cluster_host_ip = cluster_host_ip if cluster_host_ip is not None \
            else self.net + "20"
        self.pxeboot_ip = pxeboot_ip if pxeboot_ip is not None else self.net + "30"
        # The controllers: floating mgmt .1, unit mgmt .2/.3, cluster-host .4/.5,
        # pxeboot .6/.7 (or as given).
        c = controllers or {}
        self.controller = c.get("controller", self.net + "1")
        self.c_mgmt = c.get("c_mgmt", [self.net + "2", self.net + "3"])
        self.c_clstr = c.get("c_clstr", [self.net + "4", self.net + "5"])
        self.c_pxeboot = c.get("c_pxeboot", [self.net + "6", self.net + "7"])
        self.paths = {k: os.path.join(self.root, v) for k, v in {
            "platform_conf": "platform/platform.conf", "platform_dir": "platform",
            "hosts_file": "hosts", "hostname_file": "hostname", "build_info": "build.info",
            "dnsmasq_hosts": "config/dnsmasq.hosts", "dhcp_leases_dir": "dhcp",
            "ifcfg_dir": "interfaces.d", "sys_class_net": "sys/class/net", "run_dir": "run",
            "persist_dir": "persist", "state_dir": "state", "pid_dir": "pid", "log_dir": "log",
            "agent_socket": "run/mtce/agent.sock"}.items()}
        for key in ("platform_dir", "dhcp_leases_dir", "ifcfg_dir", "sys_class_net", "run_dir",
                    "persist_dir", "state_dir", "pid_dir", "log_dir"):
            os.makedirs(self.paths[key], exist_ok=True)
        os.makedirs(os.path.dirname(self.paths["dnsmasq_hosts"]), exist_ok=True)
        self.actions_log = os.path.join(self.root, "actions.log")
        self.write("hostname", hostname + "\n")
        self.write("build.info", 'SW_VERSION="25.09"\n')
        self.write_hosts()
        if platform:
            self.write_platform(subfunction=subfunction, system_type=system_type,
                                system_mode=system_mode)
        self.add_iface(mgmt_iface, mac)
        if self.pxeboot_ip:
            self.write_lease(f"{mgmt_iface}:2", self.pxeboot_ip)
        self.values = {
            "client": {"mgmt_ip": self.mgmt_ip, "cluster_host_ip": self.cluster_host_ip or "",
                       "mtcalive_period": period},
            "timeouts": {"failsafe_shutdown_delay": failsafe_delay},
            "paths": dict(self.paths),
            "actions": {a: f"echo {a} >> {self.actions_log}" for a in HARMLESS_ACTIONS
                        if a != "alarm"},
        }
        for section, kv in (extra or {}).items():
            self.values.setdefault(section, {}).update(kv)
        self.ini = os.path.join(self.root, "mtc.ini")
        self.write_ini()

    def write(self, rel: str, text: str) -> str:
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def write_hosts(self) -> None:
        self.write("hosts", "".join(f"{ip} {name}\n" for ip, name in (
            (self.controller, "controller"), (self.c_mgmt[0], "controller-0"),
            (self.c_mgmt[1], "controller-1"), (self.c_clstr[0], "controller-0-cluster-host"),
            (self.c_clstr[1], "controller-1-cluster-host"))))

    def write_ini(self) -> None:
        lines = []
        for section, kv in self.values.items():
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {v}" for k, v in kv.items())
        self.write("mtc.ini", "\n".join(lines) + "\n")

    def write_platform(self, subfunction="worker", system_type="standard",
                       system_mode="duplex", **more) -> None:
        conf = {"nodetype": subfunction.split(",")[0], "subfunction": subfunction,
                "system_type": system_type, "system_mode": system_mode,
                "management_interface": self.mgmt_iface,
                "cluster_host_interface": self.clstr_iface}
        conf.update(more)
        self.write("platform/platform.conf",
                   "".join(f"{k}={v}\n" for k, v in conf.items() if v is not None))

    def add_iface(self, name: str, mac: str, devtype: str | None = None) -> None:
        d = os.path.join(self.paths["sys_class_net"], name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "address"), "w") as f:
            f.write(mac + "\n")
        with open(os.path.join(d, "uevent"), "w") as f:
            f.write(f"INTERFACE={name}\n" + (f"DEVTYPE={devtype}\n" if devtype else ""))

    def write_lease(self, key: str, address: str) -> None:
        self.write(f"dhcp/dhclient.{key}.leases",
                   f'lease {{\n  interface "{key}";\n  fixed-address {address};\n}}\n')

    def log_text(self, program="mtcClient") -> str:
        path = os.path.join(self.paths["log_dir"], f"{program}.log")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def actions(self) -> list[str]:
        try:
            with open(self.actions_log, encoding="utf-8") as f:
                return f.read().split()
        except FileNotFoundError:
            return []
