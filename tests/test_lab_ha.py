"""`mtce lab --ha` in process (issue 15, docs/ha.md, docs/contract.md §6 and §8 "Takeover"): the
cluster configuration the lab loads is the reference CIB's (etc/pacemaker/mtce-cib.xml, which
tests/test_ha.py replays with crm_simulate) and valid for Pacemaker; the lab's fence device
speaks the fence-agents API (options on stdin or argv, status 0/2, metadata readable by
pacemaker-controld's user); its power switch refuses what a real PDU would; crm_mon's XML
during a fence is read right; each controller's generated files make it an agent host with
the shared state_dir; and the promises a scenario checks fail when one is broken.

The scenarios themselves run the real cluster: tools/ci_lab.sh runs each once under CI.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from harness.env import REPO, need

from harness.fakehost import assert_harmless

REFERENCE_CIB = os.path.join(REPO, "etc", "pacemaker", "mtce-cib.xml")
CRM_MON_FENCING = os.path.join(REPO, "tests", "data", "crm_mon_fencing.xml")


@pytest.fixture
def plan(tmp_path):
    from mtce.lab_plan import Plan
    p = Plan(str(tmp_path / "lab"), 4, netns=True, ha=True, ns_prefix="t-")
    p.write()
    return p


def lab_cib(plan) -> ET.Element:
    from mtce.lab_cluster import cib_configuration
    return ET.fromstring(cib_configuration(plan, "/usr/bin/python3", "/usr/bin/mtce",
                                           "/srv/shared"))


# -- the CIB: the reference's, with the lab's values -----------------------------------------------

def nvpairs(el) -> dict:
    return {nv.get("name"): nv.get("value") for nv in el.iter("nvpair")} if el is not None else {}


def primitives(cfg) -> list[tuple]:
    """(group or "", id, class, provider, type, instance parameter names, meta, op names)."""
    out = []
    for parent in [cfg.find("resources")] + cfg.findall("resources/group"):
        for p in parent.findall("primitive"):
            out.append((parent.get("id", ""), p.get("id"), p.get("class"), p.get("provider"),
                        p.get("type"), set(nvpairs(p.find("instance_attributes"))),
                        nvpairs(p.find("meta_attributes")),
                        sorted(op.get("name") for op in p.iter("op"))))
    return out


def test_the_lab_loads_the_reference_cib_with_only_its_values_changed(plan):
    """docs/ha.md: what the lab proves is the configuration the README tells operators to load:
    same resources in the same group order, same constraints, stickiness, fencing and
    split priority; only paths, addresses and the monitor interval are the lab's."""
    ref = ET.parse(REFERENCE_CIB).getroot().find("configuration")
    lab = lab_cib(plan)
    ref_p, lab_p = primitives(ref), primitives(lab)
    assert [p[:5] for p in lab_p] == [p[:5] for p in ref_p]
    assert [p.get("id") for p in lab.findall("resources/group/primitive")] == \
        ["p_state", "p_controller_ip", "p_mtcagent"]
    for r, mine in zip(ref_p, lab_p):
        assert r[5] <= mine[5], f"{r[1]}: the lab drops parameters {r[5] - mine[5]}"
        assert mine[6] == r[6] and mine[7] == r[7], r[1]
    assert nvpairs(lab.find("resources/group/meta_attributes")) == \
        nvpairs(ref.find("resources/group/meta_attributes")) == {"priority": "10"}
    ref_crm, lab_crm = nvpairs(ref.find("crm_config")), nvpairs(lab.find("crm_config"))
    for key in ("stonith-enabled", "priority-fencing-delay"):
        assert lab_crm[key] == ref_crm[key], key
    assert ref_crm["stonith-enabled"] == "true"

    def rules(cfg):
        return [(c.tag, c.get("id"), c.get("rsc"), c.get("node"), c.get("score"))
                for c in cfg.find("constraints")]
    assert rules(lab) == rules(ref)
    assert nvpairs(lab.find("rsc_defaults")) == nvpairs(ref.find("rsc_defaults")) == \
        {"resource-stickiness": "100"}
    assert [n.get("uname") for n in lab.iter("node")] == ["controller-0", "controller-1"]


def test_the_lab_cib_points_at_the_lab(plan):
    lab = lab_cib(plan)
    by_id = {p.get("id"): nvpairs(p.find("instance_attributes")) for p in lab.iter("primitive")}
    assert by_id["p_state"] == {"device": "/srv/shared", "directory": plan.state_dir,
                                "fstype": "none", "options": "bind"}
    assert by_id["p_controller_ip"]["ip"] == plan.floating
    assert by_id["p_controller_ip"]["nic"] == plan.ifaces[0]
    assert by_id["p_mtcagent"] == {"config": "/run/mtce/lab.ini", "binary": "/usr/bin/mtce",
                                   "python": "/usr/bin/python3"}
    assert by_id["fence-controller-1"] == {"pcmk_host_list": "controller-1"}


@pytest.mark.ha
def test_crm_verify_accepts_the_lab_cib(plan, tmp_path):
    """The lab's configuration in the reference CIB (its status: both nodes up, quorate):
    Pacemaker finds nothing to warn about."""
    need(shutil.which("crm_verify") is not None, "crm_verify (pacemaker-cli-utils)")
    cib = ET.parse(REFERENCE_CIB).getroot()
    cib.remove(cib.find("configuration"))
    cib.insert(0, lab_cib(plan))
    path = tmp_path / "cib.xml"
    ET.ElementTree(cib).write(path)
    r = subprocess.run(["crm_verify", "-VV", "--xml-file", str(path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr


def test_corosync_conf_two_node_knet_with_a_raised_token():
    from mtce.lab_cluster import TOKEN_MS, corosync_conf

    class N:
        def __init__(self, name, nodeid):
            self.name, self.nodeid, self.ring_ip = name, nodeid, f"198.19.1.{nodeid}"
    text = corosync_conf([N("controller-0", 1), N("controller-1", 2)])
    assert "transport: knet" in text and "two_node: 1" in text
    assert f"token: {TOKEN_MS}" in text and TOKEN_MS > 1000
    assert text.count("ring0_addr:") == 2 and "name: controller-1" in text


# -- the fence device -----------------------------------------------------------------------------

class FakeNode:
    def __init__(self, alive=True):
        self.on = alive
        self.cuts = 0

    def alive(self):
        return self.on

    def power_off(self):
        self.cuts += 1
        self.on = False


@pytest.fixture
def fence_dir(tmp_path):
    d = tmp_path / "fence"
    d.mkdir()
    return str(d)


def stdin_of(text: str):
    r, w = os.pipe()
    os.write(w, text.encode())
    os.close(w)
    return os.fdopen(r)


def test_fence_options_from_stdin_as_pacemaker_writes_them_or_from_argv():
    """fence-agents API: pacemaker-fenced writes key=value lines on stdin; an operator types
    -o/--action and -n/--plug."""
    from mtce import lab_fence
    with stdin_of("# from pacemaker-fenced\naction=reboot\nport=controller-1\n"
                  "nodename=controller-1\nplug\n") as f:
        opts = lab_fence.options([], f)
    assert opts == {"action": "reboot", "port": "controller-1", "nodename": "controller-1"}
    assert lab_fence.options(["-o", "off", "-n", "controller-0"], None) == \
        {"action": "off", "port": "controller-0"}
    assert lab_fence.options(["--action=status", "--plug=controller-1"], None) == \
        {"action": "status", "port": "controller-1"}
    assert lab_fence.target_of({"nodename": "controller-1"}) == "controller-1"


def test_fence_metadata_and_the_actions_pacemaker_asks_for(fence_dir, capsys):
    from mtce import lab_fence
    assert lab_fence.main(fence_dir, ["-o", "metadata"]) == 0
    meta = ET.fromstring(capsys.readouterr().out)
    actions = {a.get("name") for a in meta.iter("action")}
    assert {"on", "off", "reboot", "status", "monitor", "list", "metadata"} <= actions
    assert {p.get("name") for p in meta.iter("parameter")} >= {"action", "port"}
    assert lab_fence.main(fence_dir, ["-o", "monitor"]) == 0
    assert lab_fence.main(os.path.join(fence_dir, "gone"), ["-o", "monitor"]) == 1
    assert lab_fence.main(fence_dir, ["-o", "status", "-n", "controller-1"]) == 0
    open(os.path.join(fence_dir, "controller-1.off"), "w").close()
    assert lab_fence.main(fence_dir, ["-o", "status", "-n", "controller-1"]) == 2
    assert lab_fence.main(fence_dir, ["-o", "reboot"]) == 1
    assert lab_fence.main(fence_dir, ["-o", "explode", "-n", "controller-1"]) == 1
    err = capsys.readouterr().err
    assert "no target" in err and "unknown action 'explode'" in err
    assert os.listdir(fence_dir) == ["controller-1.off"]      # no request for either


def fence_in_thread(fence_dir, action, target, wait=20.0):
    from mtce import lab_fence
    result = {}
    t = threading.Thread(target=lambda: result.update(
        r=lab_fence.ask(fence_dir, action, target, wait=wait)))
    t.start()
    return t, result


def serve_until(fence_dir, nodes, thread, limit=20.0) -> list:
    from mtce.lab_cluster import power_switch
    done, end = [], time.monotonic() + limit
    while thread.is_alive() and time.monotonic() < end:
        done += power_switch(fence_dir, nodes)
        thread.join(0.02)
    assert not thread.is_alive()
    return done


def test_a_fence_request_powers_the_target_off_and_status_then_says_off(fence_dir):
    from mtce import lab_fence
    me = socket.gethostname()
    nodes = {me: FakeNode(), "controller-1": FakeNode()}
    t, result = fence_in_thread(fence_dir, "reboot", "controller-1")
    done = serve_until(fence_dir, nodes, t)
    assert result["r"] == (True, "")
    assert done == [(me, "controller-1", "reboot", True)]
    assert nodes["controller-1"].cuts == 1 and nodes[me].alive()
    assert lab_fence.main(fence_dir, ["-o", "status", "-n", "controller-1"]) == 2
    t, result = fence_in_thread(fence_dir, "on", "controller-1")
    serve_until(fence_dir, nodes, t)
    assert result["r"] == (False, "the lab does not power on")


@pytest.mark.parametrize("requester_alive, action, target, why", [
    (False, "reboot", "controller-1", "is powered off"),     # a dead node's left-over request
    (True, "reboot", "controller-9", "no such controller or action"),
    (True, "format", "controller-1", "no such controller or action"),
])
def test_the_power_switch_refuses_what_a_pdu_would(fence_dir, requester_alive, action, target,
                                                   why):
    nodes = {socket.gethostname(): FakeNode(requester_alive), "controller-1": FakeNode()}
    t, result = fence_in_thread(fence_dir, action, target)
    assert serve_until(fence_dir, nodes, t) == []
    ok, text = result["r"]
    assert not ok and why in text
    assert nodes["controller-1"].alive() and nodes["controller-1"].cuts == 0


def test_a_request_nobody_answers_fails_within_its_wait(fence_dir):
    from mtce import lab_fence
    ok, why = lab_fence.ask(fence_dir, "off", "controller-1", wait=0.3)
    assert (ok, why) == (False, "the lab did not answer in 0.3 s")


@pytest.mark.ha
def test_the_fence_executable_runs_as_hacluster_without_the_lab_python():
    """pacemaker-controld asks every fence agent for its metadata as hacluster, who cannot read
    root's virtualenv or tree: the executable the nodes see is self-contained."""
    need(os.geteuid() == 0, "root (runs the fence agent as hacluster)")
    try:
        pwd.getpwnam("hacluster")
    except KeyError:
        need(False, "the hacluster user (Debian's pacemaker package)")
    from mtce import lab_fence
    from mtce.lab_cluster import fence_script
    d = tempfile.mkdtemp(prefix="mtce-fence-")
    try:
        os.chmod(d, 0o755)
        exe = os.path.join(d, "fence_mtce_lab")
        with open(exe, "w", encoding="utf-8") as f:
            f.write(fence_script(d))
        os.chmod(exe, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        r = subprocess.run(["setpriv", "--reuid=hacluster", "--regid=haclient",
                            "--clear-groups", exe, "-o", "metadata"], capture_output=True,
                           text=True, timeout=30, cwd="/", env={"PATH": "/usr/bin:/bin"})
        assert r.returncode == 0, r.stderr
        assert r.stdout == lab_fence.METADATA
        r = subprocess.run([exe], input="action=monitor\n", capture_output=True, text=True,
                           timeout=30, cwd="/", env={"PATH": "/usr/bin:/bin"})
        assert r.returncode == 0, r.stderr
    finally:
        shutil.rmtree(d)


# -- crm_mon ------------------------------------------------------------------------------------

def test_crm_mon_during_a_fence_still_places_the_group_on_the_dead_node():
    """Captured from pacemaker 2.1.5 while controller-0 was being fenced: crm_mon still shows the
    group Started on it, so the lab never takes crm_mon alone as a takeover (it also asks the
    agent on the survivor and looks for the floating address there)."""
    from mtce.lab_cluster import parse_crm_mon
    from mtce.lab_ha_cluster import GROUP
    with open(CRM_MON_FENCING, encoding="utf-8") as f:
        state = parse_crm_mon(f.read())
    assert state.dc == "controller-1"
    assert state.online == {"controller-1"}
    assert state.group_on(GROUP) == "controller-0"
    assert state.failed == []


@pytest.mark.parametrize("text", ["", "<crm_mon", "<nope/>", "\x00" * 10,
                                  "<crm_mon><resources><resource id='p_state' role='Started' "
                                  "active='true'/></resources></crm_mon>"])
def test_crm_mon_garbage_places_nothing(text):
    from mtce.lab_cluster import parse_crm_mon
    from mtce.lab_ha_cluster import GROUP
    state = parse_crm_mon(text)
    assert state.dc == "" and state.online == set() and state.group_on(GROUP) == ""


# -- the generated files ------------------------------------------------------------------------

def test_both_controllers_are_agent_hosts_sharing_state_dir(plan):
    """docs/contract.md §8 "Takeover": the agent that takes over loads the same state_dir; each
    controller has its own control socket and its own copy of dnsmasq.hosts; the inventory
    lists both controllers."""
    from mtce import config
    c0, c1 = plan.controllers
    assert [h.name for h in plan.controllers] == ["controller-0", "controller-1"]
    assert [h.name for h in plan.workers] == ["worker-0", "worker-1"]
    for ini in plan.inis():
        assert_harmless(ini)
        assert not config.load(ini).warnings, ini
    cfgs = {h.name: config.load(h.ini) for h in plan.clients}
    for h in (c0, c1):
        cfg = cfgs[h.name]
        assert ("agent", "inventory") in cfg.lines, h.name
        assert cfg.get("paths", "state_dir") == plan.state_dir
        assert cfg.get("paths", "agent_socket") == plan.socket_of(h)
        assert cfg.get("actions", "alarm"), h.name
        with open(h.path("config", "dnsmasq.hosts"), encoding="utf-8") as f:
            leases = f.read()
        assert all(f"{x.mac},pxeboot-{i + 1},{x.pxeboot_ip}," in leases
                   for i, x in enumerate(plan.hosts)), leases
    assert plan.socket_of(c0) != plan.socket_of(c1)
    for h in plan.workers:
        assert ("agent", "inventory") not in cfgs[h.name].lines
        assert cfgs[h.name].get("paths", "state_dir") != plan.state_dir
    inv = config.load_inventory(plan.inventory)
    assert {"controller-0", "controller-1", "worker-0", "worker-1"} <= set(inv.hosts)


def test_ha_needs_two_controllers():
    from mtce.lab_plan import Plan
    with pytest.raises(ValueError, match="hosts must be 2 to"):
        Plan("/tmp/x", 1, netns=True, ha=True)


# -- the command line ---------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["lab", "--scenario", "node-kill"], "--scenario node-kill needs --ha"),
    (["lab", "--ha", "--scenario", "burst"],
     "--scenario burst is not an --ha scenario (one of none, agent-kill, node-kill, swact, "
     "split)"),
    (["lab", "--ha", "--hosts", "2"],
     "--ha needs --hosts between 3 and 100 (two controllers and workers)"),
    (["lab", "--ha", "--duration", "0"], "--duration must be more than 0 seconds"),
])
def test_usage_errors_exit_2_before_anything_starts(argv, message, capsys, tmp_path,
                                                    monkeypatch):
    from mtce import cli
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert cli._main(argv) == 2
    assert capsys.readouterr().err.strip() == f"mtce lab: {message}"
    assert os.listdir(tmp_path) == []


def test_ha_without_root_exits_2_and_says_why(monkeypatch, capsys):
    from mtce import cli
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli._main(["lab", "--ha"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtce lab: --ha needs root"), err


# -- the promises a move scenario checks ---------------------------------------------------------

def host(name, locked=False, bad=(), availability="online"):
    return {"hostname": name, "personality": "worker" if name.startswith("w") else "controller",
            "administrative": "locked" if locked else "unlocked", "availability": availability,
            "networks": {n: {"state": "lost" if n in bad else "ok", "last_seq": 40,
                             "missed": 0, "out_of_sequence": 0, "last_seen_s": 0.5}
                         for n in ("mgmt", "cluster-host", "pxeboot")}}


@pytest.fixture
def moved(plan):
    """The scenarios just after a move (the lab's watch not ticking): worker-1 locked,
    worker-0's pxeboot lost and alarmed, the hook run once; every check of check_after_move
    passes until a test breaks one."""
    from mtce.lab_ha import Watch
    from mtce.lab_ha_scenarios import HaScenarios
    from mtce.lab_view import View
    v = View(plan)
    watch = Watch(plan, v, None, {}, lambda: 0.0, None)
    watch.hold = lambda seconds: None
    v.hosts = {"controller-0": host("controller-0"), "controller-1": host("controller-1"),
               "worker-0": host("worker-0", bad=("pxeboot",)),
               "worker-1": host("worker-1", locked=True)}
    v.alarms = [{"id": "200.003", "host": "worker-0", "severity": "minor", "reason": "r {x}",
                 "raised_at": "2026-12-03T00:00:00Z"}]
    with open(plan.alarm_log, "w", encoding="utf-8") as f:
        f.write(json.dumps({**v.alarms[0], "action": "raise"}) + "\n\n")
    return HaScenarios(plan, v, None, watch, lambda text: None, [])


def check(moved):
    moved.check_after_move("worker-1", "worker-0", list(moved.view.hosts))


def test_after_a_move_every_promise_held(moved):
    check(moved)
    moved.check_no_loss("worker-0")


@pytest.mark.parametrize("breaks, complaint", [
    (lambda v: v.hosts["worker-1"].update(administrative="unlocked"),
     "the lock of worker-1 was lost"),
    (lambda v: v.alarms.clear(), "the 200.003 alarm of worker-0 was lost"),
    (lambda v: v.hosts["controller-1"].update(availability="offline"), "controller-1 offline"),
    (lambda v: v.hosts["worker-1"]["networks"]["mgmt"].update(state="lost"),
     "worker-1 online, not ok on mgmt"),
])
def test_a_move_that_broke_a_promise_fails(moved, breaks, complaint):
    from mtce.lab_ha import ScenarioFailed
    breaks(moved.view)
    with pytest.raises(ScenarioFailed, match=complaint):
        check(moved)


def test_a_second_raise_or_an_offline_seen_fails_the_move(moved):
    from mtce.lab_ha import ScenarioFailed
    with open(moved.plan.alarm_log, "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "200.003", "host": "worker-0", "action": "raise"}) + "\n")
    with pytest.raises(ScenarioFailed, match="the alarm hook ran 2 raises for worker-0"):
        check(moved)
    with open(moved.plan.alarm_log, "w", encoding="utf-8") as f:
        f.write(json.dumps({"id": "200.003", "host": "worker-0", "action": "raise"}) + "\n")
    moved.watch.offline_seen.append("worker-1 at 50.0 s")
    with pytest.raises(ScenarioFailed, match="seen offline: worker-1 at 50.0 s"):
        check(moved)


@pytest.mark.parametrize("field, value", [("missed", 1), ("out_of_sequence", 2), ("last_seq", 0)])
def test_a_swact_that_lost_an_mtcalive_fails(moved, field, value):
    from mtce.lab_ha import ScenarioFailed
    moved.view.hosts["worker-1"]["networks"]["cluster-host"][field] = value
    with pytest.raises(ScenarioFailed, match="mtcAlive lost across the swact: worker-1 "
                                             "cluster-host"):
        moved.check_no_loss("worker-0")


# -- output to a closed pipe ----------------------------------------------------------------------

class ClosedPipe:
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass

    def isatty(self):
        return False


@pytest.mark.parametrize("kind", ["lab", "ha"])
def test_a_closed_pipe_stops_the_lab_once_then_nothing_more_is_written(kind):
    """`mtce lab --ha | head`: once the reader is gone the lab stops as for Ctrl-C
    (Interrupted) and every later line (the table, the final verdict) is dropped, not a
    traceback from a second broken write."""
    from mtce.cli_screen import Interrupted
    args = argparse.Namespace(hosts=None, duration=None, netns=False, scenario="none")
    if kind == "ha":
        from mtce.lab_ha import HaLab
        lab = HaLab(args, out=ClosedPipe())
    else:
        from mtce.lab import Lab
        lab = Lab(args, out=ClosedPipe())
    with pytest.raises(Interrupted):
        lab.say("the first line")
    lab.say("mtce lab: stopped (SIGPIPE)")


def test_only_the_agent_itself_is_counted_as_an_agent_not_a_command_about_it():
    """`mtce lab --ha` counts the agents of a node to prove a split never runs two (docs/ha.md):
    the OCF agent's `mtce daemon-info agent -c <lab ini>` (issue 23 item 19) names the mode
    and the ini too, and was counted as a second agent (CI: "2 agents ran at the same time"),
    and `agent-kill` could have killed it instead of the agent."""
    from mtce.lab_cluster import LAB_INI, is_agent
    prefix = [b"/usr/bin/python3", b"/usr/bin/mtce"]
    assert is_agent(prefix + [b"agent", b"-c", LAB_INI.encode(), b"-f"])
    assert is_agent(prefix + [b"-c", LAB_INI.encode(), b"agent"])
    assert not is_agent(prefix + [b"daemon-info", b"agent", b"-c", LAB_INI.encode()])
    assert not is_agent(prefix + [b"hosts", b"-c", LAB_INI.encode()])
    assert not is_agent(prefix + [b"agent", b"-c", b"/etc/mtc.ini"])
