"""The controllers of `mtce lab --ha`: each a Pacemaker cluster node in namespaces of its own.

A node is the controller's network namespace (from `lab_proc.build_topology`, plus the
`ring0` veth link between the two controllers that corosync uses) entered with its own
mount, UTS and PID namespaces (`unshare`): a private /run and /dev/shm (corosync and
libqb keep their sockets and rings there), /var/lib/corosync and /var/lib/pacemaker bound
to the node's directory, the lab's fence agent overlaid on /usr/sbin and, from a source
tree, mtce's resource agent on /usr/lib/ocf/resource.d. Its PID 1 is a shell that starts
corosync, pacemakerd and the controller's mtcClient; killing it is a power cut (the kernel
kills every process of the PID namespace).

Also here: the cluster's corosync.conf and CIB (the reference `etc/pacemaker/mtce-cib.xml`
with the lab's values), crm_mon's XML read back, and the lab's side of the fence device.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

from mtce.lab_plan import HostPlan, LabError, Plan, package_root, program
from mtce.lab_proc import Proc

RING = "198.19.1."             # the controllers' corosync link (ring0): .1 and .2
TOKEN_MS = 3000                # corosync 3's default token (corosync 2: 1 s), kept for 2 cores
FENCE_DELAY_S = 3              # priority-fencing-delay: the active controller wins a split
AGENT_MONITOR_S = 2            # the lab's monitor interval of the agent (reference: 10 s)
OCF_SOURCE = os.path.join("debian", "ocf", "mtcAgent")
OCF_INSTALLED = "/usr/lib/ocf/resource.d/mtce/mtcAgent"
LAB_INI = "/run/mtce/lab.ini"  # the agent resource's config: each node links its own ini
TOOLS = ("corosync", "corosync-cfgtool", "pacemakerd", "crm_mon", "cibadmin", "crm_resource",
         "nsenter", "unshare", "modprobe")


def ocf_agent() -> str | None:
    """The resource agent the lab runs: the source tree's (so the lab tests it), else the
    installed one; None when neither exists (a zipapp without the .deb)."""
    root = package_root()
    source = os.path.join(root, OCF_SOURCE)
    if os.path.isfile(source):
        return source
    return OCF_INSTALLED if os.path.isfile(OCF_INSTALLED) else None


def mtce_program() -> tuple[str, str]:
    """(python, program file) for the resource agent's `python` and `binary` parameters."""
    argv = program()
    if len(argv) == 2:
        return argv[0], argv[1]
    source = os.path.join(package_root(), "mtce.py")
    if os.path.isfile(source):
        return argv[0], source
    raise LabError("--ha runs the agent through its resource agent, which needs a program "
                   "file: run the lab as `mtce lab`, `python3 mtce.py lab` or from dist/mtce.pyz")


# == one node ================================================================================

class Node:
    """One controller as a cluster node: starts, powers off, runs commands inside."""

    def __init__(self, plan: Plan, host: HostPlan, nodeid: int, env: dict):
        self.host, self.nodeid, self.env = host, nodeid, env
        self.name = host.name
        self.dir = os.path.join(plan.root, "ha", host.name)
        self.proc: Proc | None = None

    @property
    def ring_ip(self) -> str:
        return RING + str(self.nodeid)

    @property
    def corosync_conf(self) -> str:
        return os.path.join(self.dir, "corosync.conf")

    @property
    def pacemaker_dir(self) -> str:
        return os.path.join(self.dir, "pacemaker")

    def log(self, what: str) -> str:
        return os.path.join(self.dir, f"{what}.log")

    def prepare(self, corosync_text: str) -> None:
        for sub in ("corosync", "pacemaker/cib", "pacemaker/pengine", "pacemaker/blackbox",
                    "pacemaker/cores"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        subprocess.run(["chown", "-R", "hacluster:haclient", self.pacemaker_dir], check=True,
                       timeout=10, stdin=subprocess.DEVNULL)
        with open(self.corosync_conf, "w", encoding="utf-8") as f:
            f.write(corosync_text)

    def script(self, overlays: list[tuple[str, str]]) -> str:
        """PID 1 of the node: mounts, then corosync, pacemakerd and the client; waits."""
        q = shlex.quote
        client = program() + ["client", "-c", self.host.ini, "-f"]
        lines = ["set -e", "mount -t tmpfs tmpfs /run", "mount -t tmpfs tmpfs /dev/shm",
                 f"mount --bind {q(os.path.join(self.dir, 'corosync'))} /var/lib/corosync",
                 f"mount --bind {q(self.pacemaker_dir)} /var/lib/pacemaker"]
        for lower, target in overlays:
            lines.append(f"mount -t overlay overlay -o lowerdir={q(lower)}:{q(target)} "
                         f"{q(target)}")
        lines += ["mkdir -p /run/corosync /run/crm /run/pacemaker /run/mtce",
                  "chown hacluster:haclient /run/crm /run/pacemaker",
                  f"ln -s {q(self.host.ini)} {LAB_INI}",
                  f"hostname {q(self.name)}", "set +e",
                  f"corosync -f -c {q(self.corosync_conf)} >> {q(self.log('corosync'))} 2>&1 &",
                  "for i in $(seq 1 100); do corosync-cfgtool -s >/dev/null 2>&1 && break; "
                  "sleep 0.1; done",
                  "export PCMK_logfile=/var/lib/pacemaker/pacemaker.log PCMK_logfacility=none",
                  f"pacemakerd -f >> {q(self.log('pacemakerd'))} 2>&1 &",
                  f"{shlex.join(client)} >> {q(self.host.client_log)} 2>&1 &",
                  "wait"]
        return "\n".join(lines) + "\n"

    def start(self, overlays: list[tuple[str, str]]) -> None:
        argv = ["ip", "netns", "exec", self.host.ns, "unshare", "--mount", "--uts", "--pid",
                "--fork", "--kill-child=SIGKILL", "--mount-proc", "bash", "-c",
                self.script(overlays)]
        self.proc = Proc(self.name, argv, self.log("node"), self.env)
        self.proc.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.running()

    def power_off(self) -> None:
        """A power cut: SIGKILL to unshare, whose child (PID 1 of the node) follows, and
        with it every process of the node's PID namespace."""
        if self.proc is None:
            return
        self.proc.expected_exit = True
        self.proc.signal(signal.SIGKILL)
        try:
            self.proc.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for pid in self.pids():      # the PID namespace's processes die with its PID 1
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def init_pid(self) -> int | None:
        """The host PID of the node's PID 1 (the child of unshare)."""
        if not self.alive():
            return None
        pid = self.proc.popen.pid
        try:
            with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
                kids = f.read().split()
        except OSError:
            return None
        return int(kids[0]) if kids else None

    def run(self, argv: list[str], timeout: float = 20.0) -> subprocess.CompletedProcess:
        pid = self.init_pid()
        if pid is None:
            raise LabError(f"{self.name} is not running")
        return subprocess.run(["nsenter", "-t", str(pid), "-n", "-m", "-u", "-p"] + argv,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def pids(self) -> list[int]:
        """Host PIDs of the processes in the node's network namespace."""
        r = subprocess.run(["ip", "netns", "pids", self.host.ns], capture_output=True,
                           text=True, timeout=10, stdin=subprocess.DEVNULL)
        return [int(p) for p in r.stdout.split() if p.isdigit()]

    def agent_pids(self) -> list[int]:
        """Host PIDs of the mtcAgent processes running on this node."""
        found = []
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if is_agent(argv):
                found.append(pid)
        return found


def is_agent(argv: list[bytes]) -> bool:
    """Whether a command line is the lab's agent itself: `mtce agent` on the lab's ini, not a
    command about it (the OCF agent's `mtce daemon-info agent -c <ini>`)."""
    from mtce.service import mtce_command
    found = mtce_command([a.decode(errors="replace") for a in argv if a])
    return found is not None and found == ("agent", LAB_INI)


# == the cluster's configuration =============================================================

def corosync_conf(nodes: list[Node]) -> str:
    members = "".join(f"  node {{\n    ring0_addr: {n.ring_ip}\n    name: {n.name}\n"
                      f"    nodeid: {n.nodeid}\n  }}\n" for n in nodes)
    return (f"# corosync of `mtce lab --ha`: knet over ring0, two_node quorum (fencing\n"
            f"# decides a split), token {TOKEN_MS} ms (a loaded 2-core host needs no less).\n"
            f"totem {{\n  version: 2\n  cluster_name: mtce-lab\n  transport: knet\n"
            f"  token: {TOKEN_MS}\n  crypto_cipher: none\n  crypto_hash: none\n}}\n"
            f"nodelist {{\n{members}}}\n"
            f"quorum {{\n  provider: corosync_votequorum\n  two_node: 1\n}}\n"
            f"logging {{\n  to_stderr: yes\n  to_syslog: no\n  to_logfile: no\n"
            f"  timestamp: on\n}}\n")


def _nv(prefix: str, values: dict) -> str:
    return "".join(f'<nvpair id="{prefix}-{k}" name="{k}" value={quoteattr(str(v))}/>'
                   for k, v in values.items())


def cib_configuration(plan: Plan, python: str, binary: str, shared: str) -> str:
    """The <configuration> the lab loads: the reference CIB's resources, order and
    constraints (tests/test_ha.py compares them), with the lab's values."""
    fences = "".join(
        f'<primitive id="fence-{h.name}" class="stonith" type="fence_mtce_lab">'
        f'<instance_attributes id="fence-{h.name}-ia">'
        f'{_nv(f"fence-{h.name}", {"pcmk_host_list": h.name})}</instance_attributes>'
        f'<operations><op id="fence-{h.name}-monitor" name="monitor" interval="60s"/>'
        f'</operations></primitive>' for h in plan.controllers)
    return (
        '<configuration><crm_config><cluster_property_set id="cib-bootstrap-options">'
        + _nv("cib-bootstrap-options", {
            "stonith-enabled": "true", "cluster-name": "mtce-lab",
            "priority-fencing-delay": f"{FENCE_DELAY_S}s", "stonith-timeout": "60s"})
        + '</cluster_property_set></crm_config><nodes>'
        + "".join(f'<node id="{i + 1}" uname="{h.name}"/>'
                  for i, h in enumerate(plan.controllers))
        + '</nodes><resources>' + fences
        + '<group id="g_mtce"><meta_attributes id="g_mtce-meta">'
        + _nv("g_mtce", {"priority": "10"}) + '</meta_attributes>'
        + '<primitive id="p_state" class="ocf" provider="heartbeat" type="Filesystem">'
        + '<instance_attributes id="p_state-ia">'
        + _nv("p_state", {"device": shared, "directory": plan.state_dir, "fstype": "none",
                          "options": "bind"})
        + '</instance_attributes><operations>'
        + '<op id="p_state-monitor" name="monitor" interval="20s" timeout="40s"/>'
        + '</operations></primitive>'
        + '<primitive id="p_controller_ip" class="ocf" provider="heartbeat" type="IPaddr2">'
        + '<instance_attributes id="p_controller_ip-ia">'
        + _nv("p_controller_ip", {"ip": plan.floating, "cidr_netmask": "24",
                                  "nic": plan.ifaces[0]})
        + '</instance_attributes><operations>'
        + '<op id="p_controller_ip-monitor" name="monitor" interval="10s" timeout="20s"/>'
        + '</operations></primitive>'
        + '<primitive id="p_mtcagent" class="ocf" provider="mtce" type="mtcAgent">'
        + '<instance_attributes id="p_mtcagent-ia">'
        + _nv("p_mtcagent", {"config": LAB_INI, "binary": binary, "python": python})
        + '</instance_attributes><meta_attributes id="p_mtcagent-meta">'
        + _nv("p_mtcagent", {"migration-threshold": "2"}) + '</meta_attributes><operations>'
        + '<op id="p_mtcagent-start" name="start" interval="0s" timeout="30s"/>'
        + '<op id="p_mtcagent-stop" name="stop" interval="0s" timeout="30s"/>'
        + f'<op id="p_mtcagent-monitor" name="monitor" interval="{AGENT_MONITOR_S}s" '
          'timeout="20s"/>'
        + '</operations></primitive></group></resources><constraints>'
        + "".join(f'<rsc_location id="l-fence-{h.name}" rsc="fence-{h.name}" node="{h.name}" '
                  f'score="-INFINITY"/>' for h in plan.controllers)
        + '<rsc_location id="l-g_mtce-prefers-controller-0" rsc="g_mtce" node="controller-0" '
          'score="50"/>'
        + '</constraints><rsc_defaults><meta_attributes id="rsc-options">'
        + _nv("rsc-options", {"resource-stickiness": "100"})
        + '</meta_attributes></rsc_defaults></configuration>')


def fence_script(fence_dir: str) -> str:
    """The executable the nodes see as /usr/sbin/fence_mtce_lab: mtce/lab_fence.py itself,
    self-contained, because pacemaker-controld runs it (metadata) as hacluster, who may not
    read the lab's interpreter or package."""
    import inspect
    import sys
    from mtce import lab_fence
    python = "/usr/bin/python3" if os.path.isfile("/usr/bin/python3") else sys.executable
    return (f"#!{python}\n# fence_mtce_lab: generated by mtce lab --ha\n"
            + inspect.getsource(lab_fence)
            + f"\n\nif __name__ == '__main__':\n    sys.exit(main({fence_dir!r}))\n")


# == what crm_mon says =======================================================================

@dataclass
class ClusterState:
    dc: str = ""
    online: set = field(default_factory=set)
    where: dict = field(default_factory=dict)       # resource id -> [nodes it runs on]
    failed: list = field(default_factory=list)      # resource ids with a failed role

    def group_on(self, group: tuple[str, ...]) -> str:
        """The node where every resource of `group` runs (one node), or ""."""
        nodes = {tuple(self.where.get(r, ())) for r in group}
        if len(nodes) == 1:
            only = next(iter(nodes))
            if len(only) == 1:
                return only[0]
        return ""


def parse_crm_mon(text: str) -> ClusterState:
    """`crm_mon -1 --output-as=xml` (pacemaker 2.1): the DC, the online nodes, where each
    resource runs."""
    state = ClusterState()
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return state
    dc = root.find("./summary/current_dc")
    if dc is not None and dc.get("present") == "true":
        state.dc = dc.get("name", "")
    for node in root.iterfind("./nodes/node"):
        if node.get("online") == "true":
            state.online.add(node.get("name", ""))
    for rsc in root.iter("resource"):
        rid = rsc.get("id", "")
        if rsc.get("failed") == "true":
            state.failed.append(rid)
        if rsc.get("role") == "Started" and rsc.get("active") == "true":
            state.where[rid] = [n.get("name", "") for n in rsc.iterfind("node")]
    return state


# == the lab's side of the fence device ======================================================

def pending_requests(fence_dir: str) -> list[tuple[str, dict]]:
    """Fence requests not answered yet, oldest first: (path, body)."""
    out = []
    try:
        names = sorted(os.listdir(fence_dir))
    except OSError:
        return out
    for name in names:
        if not name.startswith("req-") or name.endswith((".tmp", ".done")):
            continue
        path = os.path.join(fence_dir, name)
        if os.path.exists(path + ".done"):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                body = json.load(f)
        except (OSError, ValueError):
            body = {}
        out.append((path, body if isinstance(body, dict) else {}))
    return out


def answer(path: str, ok: bool, why: str) -> None:
    with open(path + ".done.tmp", "w", encoding="utf-8") as f:
        json.dump({"ok": ok, "why": why}, f)
    os.rename(path + ".done.tmp", path + ".done")


def power_switch(fence_dir: str, nodes: dict) -> list[tuple[str, str, str, bool]]:
    """The lab's power switch: answers every pending request. `off` and `reboot` power the
    target off (and it stays off: `<target>.off` tells `status`); `on` succeeds only for a
    node that runs. A request for an unknown controller or action, or from a controller that
    is itself powered off (a request left behind by a dead node), is refused. Returns
    (requester, target, action, was running) for each node powered off."""
    done = []
    for path, body in pending_requests(fence_dir):
        target, requester, action = (str(body.get(k, "")) for k in ("target", "requester",
                                                                    "action"))
        node, asker = nodes.get(target), nodes.get(requester)
        if node is None or action not in ("off", "reboot", "on"):
            answer(path, False, f"no such controller or action: {body}")
        elif asker is None or not asker.alive():
            answer(path, False, f"{requester or 'the requester'} is powered off")
        elif action == "on":
            answer(path, node.alive(), "" if node.alive() else "the lab does not power on")
        else:
            was = node.alive()
            node.power_off()
            with open(os.path.join(fence_dir, f"{target}.off"), "w"):
                pass
            answer(path, True, "")
            done.append((requester, target, action, was))
    return done
