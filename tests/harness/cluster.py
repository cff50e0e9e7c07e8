"""A whole cluster's files for integration tests: controller-0 (agent and client) and workers,
each a FakeHost on one loopback block (or given addresses), with the agent's inventory and
dnsmasq.hosts, and short timers so that minutes of protocol happen in seconds."""

from __future__ import annotations

import os

from harness.env import loopback_block

from harness.fakehost import FakeHost

FAST_TIMERS = {
    "agent": {"offline_period": 50, "offline_threshold": 20},
    "timeouts": {"online_period": 1, "pxeboot_mtcalive_window": 1},
}


def mac_of(i: int) -> str:
    return f"08:00:27:5e:00:{i + 1:02x}"


def personality_of(name: str) -> str:
    """controller-0 -> controller, storage-0 -> storage, anything else -> worker."""
    word = name.split("-")[0]
    return word if word in ("controller", "storage") else "worker"


class Cluster:
    """controller-0 at index 0, workers after it. Addresses in one /24 block:
    .1 floating mgmt, .2+ unit mgmt, .4/.5 controller cluster-host, .6/.7 controller pxeboot,
    workers: mgmt .10+i, cluster-host .20+i, pxeboot .30+i."""

    def __init__(self, root, workers: int = 2, net: str | None = None, timers=None,
                 period: float = 1.0, agent_extra: dict | None = None, addrs=None,
                 names=None):
        self.root = str(root)
        self.net = net or loopback_block()
        n = self.net
        # `names`: any hosts, controller-0 first (it runs the agent); personality from the
        # name's first word (controller-N, worker-N, storage-N).
        self.names = list(names or ["controller-0"] + [f"worker-{i}" for i in range(workers)])
        assert self.names[0] == "controller-0", "controller-0 runs the agent"
        self.addrs = addrs or {}
        self.hosts: dict[str, FakeHost] = {}
        for i, name in enumerate(self.names):
            unit = int(name.split("-")[1]) if name.startswith("controller-") else None
            a = self.addrs.get(name, {})
            self.hosts[name] = FakeHost(
                os.path.join(self.root, name), hostname=name, net=n,
                subfunction=personality_of(name), mac=mac_of(i),
                mgmt_ip=a.get("mgmt", n + str(2 + unit if unit is not None else 9 + i)),
                cluster_host_ip=a.get("clstr", n + str(4 + unit if unit is not None
                                                       else 19 + i)),
                pxeboot_ip=a.get("pxeboot", n + str(6 + unit if unit is not None else 29 + i)),
                period=period, controllers=self.addrs.get("controllers"))
            os.makedirs(os.path.join(self.root, name), exist_ok=True)
        c0 = self.controller
        self.inventory = os.path.join(self.root, "inventory.ini")
        self.dnsmasq = c0.paths["dnsmasq_hosts"]
        self.write_inventory()
        self.write_dnsmasq()
        extra = {k: dict(v) for k, v in (timers or FAST_TIMERS).items()}
        extra.setdefault("agent", {}).update({"mgmt_ip": c0.controller,
                                              "cluster_host_ip": c0.c_clstr[0],
                                              "inventory": self.inventory})
        extra["actions"] = {"alarm": f"cat >> {os.path.join(self.root, 'alarm-hook.log')}; "
                                     f"echo >> {os.path.join(self.root, 'alarm-hook.log')}"}
        for section, kv in (agent_extra or {}).items():
            extra.setdefault(section, {}).update(kv)
        for section, kv in extra.items():
            c0.values.setdefault(section, {}).update(kv)
        c0.write_ini()
        # The agent's ini is the controller's ini; it also serves the ctl socket.
        self.agent_ini = c0.ini

    @property
    def controller(self) -> FakeHost:
        return self.hosts["controller-0"]

    def host(self, name: str) -> FakeHost:
        return self.hosts[name]

    def write_inventory(self, admin: dict | None = None, skip=()) -> None:
        admin = admin or {}
        out = []
        for name, h in self.hosts.items():
            if name in skip:
                continue
            out += [f"[{name}]", f"personality = {personality_of(name)}",
                    f"mgmt_mac = {h.mac}", f"mgmt_ip = {h.mgmt_ip}",
                    f"cluster_host_ip = {h.cluster_host_ip}",
                    f"administrative = {admin.get(name, 'unlocked')}", ""]
        with open(self.inventory, "w") as f:
            f.write("\n".join(out))

    def write_dnsmasq(self) -> None:
        lines = [f"pxecontroller,{self.controller.c_pxeboot[0]}"]
        for i, h in enumerate(self.hosts.values()):
            lines.append(f"{h.mac},pxeboot-{i + 1},{h.pxeboot_ip},1d")
        with open(self.dnsmasq, "w") as f:
            f.write("\n".join(lines) + "\n")

    def alarm_hook_log(self) -> str:
        try:
            with open(os.path.join(self.root, "alarm-hook.log")) as f:
                return f.read()
        except FileNotFoundError:
            return ""


def issue23_bad_inventories(c: Cluster) -> list[tuple[str, str, int, str]]:
    """Issue 23 item 1's inputs, made from `c`'s inventory (workers worker-0 and worker-1):
    (id, the whole file text, the line of the fault, `[section] key` the message names)."""
    with open(c.inventory) as f:
        text = f.read()
    lines = text.splitlines()

    def line_of(needle: str, after: str) -> int:
        start = lines.index(after)
        return next(n for n, ln in enumerate(lines, start=1) if n > start and ln == needle)

    w1, w3 = c.host("worker-1"), "10.255.0.3"
    tail = len(lines) + 1 if text.endswith("\n") else len(lines) + 2
    sep = "" if text.endswith("\n") else "\n"
    return [
        # A header without `]` after [worker-1]: its keys must not overwrite worker-1's.
        ("header without ]", text + sep + f"[worker-3\npersonality = storage\n"
         f"mgmt_mac = 08:00:27:5e:00:33\nmgmt_ip = {w3}\n", tail, "[worker-3"),
        ("second [worker-0]", text + sep + "[worker-0]\npersonality = worker\n"
         f"mgmt_mac = 08:00:27:5e:00:33\nmgmt_ip = {w3}\n", tail, "[worker-0]"),
        ("personality = wroker", text.replace(
            "[worker-1]\npersonality = worker\n", "[worker-1]\npersonality = wroker\n"),
         line_of("personality = worker", "[worker-1]"), "[worker-1] personality"),
        ("line without =", text.replace(
            "[worker-1]\npersonality = worker\n", "[worker-1]\npersonality worker\n"),
         line_of("personality = worker", "[worker-1]"), "[worker-1]"),
        ("shared mgmt MAC", text.replace(f"mgmt_mac = {w1.mac}",
                                         f"mgmt_mac = {c.host('worker-0').mac.upper()}"),
         line_of(f"mgmt_mac = {w1.mac}", "[worker-1]"), "[worker-1] mgmt_mac"),
    ]
