"""The cluster of `mtce lab --ha` as the lab builds and watches it (docs/ha.md): the two
controllers as nodes (`lab_cluster.Node`) joined by their corosync link, the files the cluster
reads (the lab's fence agent, mtce's resource agent, the CIB), and what the lab last saw of it:
crm_mon's state, where the group g_mtce runs, which controller was fenced, whether the agent
answers there.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from mtce import cli_ctl
from mtce.lab_cluster import (
    ClusterState, Node, cib_configuration, corosync_conf, fence_script, mtce_program, ocf_agent,
    parse_crm_mon, power_switch,
)
from mtce.lab_plan import LabError, Plan
from mtce.lab_proc import ip_cmd

GROUP = ("p_state", "p_controller_ip", "p_mtcagent")


class HaCluster:
    """controller-0 and controller-1 as one Pacemaker cluster: `build` makes the nodes and the
    cluster's files, `start` boots them, `poll` and `serve_fence` keep `state`, `active` and
    `fenced` up to date. `event` writes one timed line of the lab."""

    def __init__(self, plan: Plan, event):
        self.plan = plan
        self.event = event
        self.nodes: dict[str, Node] = {}
        self.state = ClusterState()
        self.active = ""                      # where the group runs, as last seen
        self.fence_dir = self.shared = ""
        self.fenced: list[str] = []
        self.overlays: list[tuple[str, str]] = []

    # -- set-up ----------------------------------------------------------------------------------
    def build(self, env: dict) -> None:
        """The ring0 link between the controllers, a node on each, corosync.conf in both, and
        the files under ha/ the nodes overlay or load."""
        c0, c1 = self.plan.controllers
        ip_cmd("link", "add", "ring0", "type", "veth", "peer", "name", "ring0", "netns", c1.ns,
               ns=c0.ns)
        for i, h in enumerate((c0, c1)):
            node = Node(self.plan, h, i + 1, env)
            ip_cmd("addr", "add", f"{node.ring_ip}/24", "dev", "ring0", ns=h.ns)
            ip_cmd("link", "set", "ring0", "up", ns=h.ns)
            self.nodes[h.name] = node
        conf = corosync_conf(list(self.nodes.values()))
        for node in self.nodes.values():
            node.prepare(conf)
        self._write_files()

    def _write_files(self) -> None:
        ha = os.path.join(self.plan.root, "ha")
        self.shared = os.path.join(ha, "shared-state")
        self.fence_dir = os.path.join(ha, "fence")
        for d in (self.shared, self.fence_dir, self.plan.state_dir, os.path.join(ha, "sbin"),
                  os.path.join(ha, "ocf", "mtce")):
            os.makedirs(d, exist_ok=True)
        fence = os.path.join(ha, "sbin", "fence_mtce_lab")
        with open(fence, "w", encoding="utf-8") as f:
            f.write(fence_script(self.fence_dir))
        os.chmod(fence, 0o755)
        self.overlays = [(os.path.join(ha, "sbin"), "/usr/sbin")]
        source = ocf_agent()
        if source != "/usr/lib/ocf/resource.d/mtce/mtcAgent":
            shutil.copy(source, os.path.join(ha, "ocf", "mtce", "mtcAgent"))
            os.chmod(os.path.join(ha, "ocf", "mtce", "mtcAgent"), 0o755)
            self.overlays.append((os.path.join(ha, "ocf"), "/usr/lib/ocf/resource.d"))
        python, binary = mtce_program()
        with open(os.path.join(ha, "cib.xml"), "w", encoding="utf-8") as f:
            f.write(cib_configuration(self.plan, python, binary, self.shared))

    def start(self) -> None:
        for node in self.nodes.values():
            node.start(self.overlays)

    def load_cib(self) -> None:
        """The lab's configuration (ha/cib.xml) replaces the CIB's, on the DC."""
        r = self.nodes[self.state.dc].run(
            ["cibadmin", "--replace", "--scope", "configuration", "--xml-file",
             os.path.join(self.plan.root, "ha", "cib.xml")], timeout=30)
        if r.returncode != 0:
            raise LabError(f"cibadmin --replace: {r.stderr.strip() or r.stdout.strip()}")

    def power_off(self) -> None:
        for node in self.nodes.values():
            node.power_off()

    # -- what the lab sees of it -----------------------------------------------------------------
    def poll(self) -> None:
        """crm_mon on the first node that answers: the state, and where g_mtce runs."""
        for node in self.nodes.values():
            if not node.alive():
                continue
            try:
                r = node.run(["crm_mon", "-1", "--output-as=xml"], timeout=10)
            except (LabError, subprocess.TimeoutExpired):
                continue
            if r.returncode == 0:
                state = parse_crm_mon(r.stdout)
                where = state.group_on(GROUP)
                if where != self.active and where:
                    self.event(f"g_mtce started on {where} (state_dir, {self.plan.floating}, "
                               f"the agent)")
                self.state, self.active = state, where
                return
        self.state, self.active = ClusterState(), ""

    def serve_fence(self) -> None:
        for requester, target, action, was_on in power_switch(self.fence_dir, self.nodes):
            self.fenced.append(target)
            self.event(f"fence: {requester} fenced {target} ({action}): "
                       f"{'powered off' if was_on else 'was already off'}")

    def agent_answers(self, name: str) -> bool:
        try:
            status = cli_ctl.request(self.plan.socket_of(self.plan.host(name)),
                                     {"cmd": "status"}, timeout=2.0)
        except cli_ctl.CtlError:
            return False
        return status.get("hostname") == name

    def agent_up_on(self, name: str) -> bool:
        return self.agent_answers(name) and self.state.group_on(GROUP) == name

    def has_floating(self, name: str) -> bool:
        r = ip_cmd("-o", "addr", "show", "dev", self.plan.ifaces[0], ns=self.plan.host(name).ns,
                   check=False)
        return f" {self.plan.floating}/" in r.stdout
