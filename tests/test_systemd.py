"""The .deb under a real systemd (issue 24): installed with dpkg into a booted Debian 12
container (tests/harness/container.py) and driven as an operator drives a host.

`make test-systemd` runs this file (root, systemd-nspawn, debootstrap; MTCE_DEB names the
package). The tests share one booted container and run in file order, as one operator's day:
install, configure and start, reload, restart, kill -9, the failsafe, the journal and
logrotate, an upgrade, then remove and purge. Inside, one controller (the packaged units,
/etc/mtc.ini) and one worker (a unit of the test's own, its client's files under /srv/lab)
talk over the container's loopback; every `[actions]` command only records its name in
/results, bound from the host: nothing reboots, resets or powers off.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from harness.container import Container
from harness.env import REPO, need, wait_until

# The first run builds the container root (debootstrap, about 75 s) in the first test's setup.
pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

CACHE = os.environ.get("MTCE_SYSTEMD_DIR", os.path.join(REPO, "build", "systemd"))
MIRROR = os.environ.get("MTCE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
LAB = "/srv/lab"                # the generated lab tree inside the container
WORKER_UNIT = "mtce-test-worker-0.service"
UNITS = ("mtcagent", "mtcclient")
FAILSAFE_DELAY_S = 3
PXEBOOT_WINDOW_S = 1            # 200.003 after 1 s x 6 misses x 2 losses
REBOOT_KINDS = ("reboot", "reset", "lazy_reboot", "wipedisk", "failsafe")
# Where a purge may leave traces that are not the package's: the system's own bookkeeping.
NOT_OURS = re.compile(r"^/(proc|sys|dev|run|tmp|var/tmp|debs|results|srv/lab|var/cache|"
                      r"var/log/journal|var/lib/dpkg|var/lib/systemd|var/lib/apt|var/log/apt|"
                      r"var/lib/logrotate|etc/systemd/system/"
                      + re.escape(WORKER_UNIT) + r")(/|$)|^/var/log/(dpkg\.log|lastlog|wtmp|"
                      r"btmp|alternatives\.log)$|^/etc/(ld\.so\.cache|machine-id)$")


@pytest.fixture(scope="module")
def deb() -> str:
    path = os.environ.get("MTCE_DEB", "")
    need(bool(path) and os.path.isfile(path), "MTCE_DEB names no .deb (make test-systemd)")
    return path


@pytest.fixture(scope="module")
def box(deb):
    need(os.geteuid() == 0, "needs root")
    for tool in ("systemd-nspawn", "debootstrap", "nsenter", "dpkg-deb"):
        need(shutil.which(tool) is not None, f"needs {tool} (make test-systemd installs it)")
    c = Container(CACHE, MIRROR)
    c.prepare("controller-0")
    try:
        c.boot()
        c.files_before = files(c)
        yield c
    finally:
        c.stop()


def wait(predicate, timeout: float, what: str):
    """conftest.wait_until, polling a container (each poll runs a command in it)."""
    return wait_until(predicate, timeout, interval=0.25, what=what)


def files(c: Container) -> set[str]:
    """Every path of the container's file system, but what the system itself keeps."""
    out = c.sh("find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run \\) "
               "-prune -o -print", timeout=120).stdout.splitlines()
    return {p for p in out if not NOT_OURS.search(p)}


def show(c: Container, unit: str, *props: str) -> dict:
    out = c.sh(f"systemctl show {unit} -p {','.join(props)}").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def hosts(c: Container) -> dict:
    r = c.sh("mtce hosts --json", check=False, timeout=30)
    if r.returncode:
        return {}
    return {h["hostname"]: h for h in json.loads(r.stdout)}


def alarms(c: Container) -> list:
    r = c.sh("mtce alarms --json", check=False, timeout=30)
    return json.loads(r.stdout) if r.returncode == 0 else []


def all_ok(c: Container) -> bool:
    table = hosts(c)
    return len(table) == 2 and all(
        h["availability"] == "online" and all(n["state"] == "ok" for n in h["networks"].values())
        for h in table.values())


def journal(c: Container, unit: str, since: float | None = None) -> str:
    when = f" --since @{since:.0f}" if since else ""
    return c.sh(f"journalctl --no-pager -o cat -u {unit}{when}").stdout


def actions(c: Container, host: str) -> list[str]:
    return c.result(f"{host}.actions").split()


def with_actions(ini: str, host: str, drop_paths: tuple = (), drop_agent: tuple = (),
                 timeouts: dict | None = None) -> str:
    """The lab's generated mtc.ini with every [actions] command replaced by one that records
    its name in /results/<host>.actions (the alarm hook: the alarm in /results/alarms.log),
    the [paths] keys in `drop_paths` and [agent] keys in `drop_agent` left to their defaults,
    and `timeouts` set."""
    out, section = [], ""
    for line in ini.splitlines():
        m = re.match(r"\s*\[(\w+)\]", line)
        if m:
            section = m.group(1)
            if section == "actions":
                continue
        key = line.split("=", 1)[0].strip()
        if section == "actions" or (section == "paths" and key in drop_paths) or \
                (section == "agent" and key in drop_agent) or \
                (section == "timeouts" and key in (timeouts or {})):
            continue
        out.append(line)
        if m and section == "timeouts":
            out += [f"{k} = {v}" for k, v in (timeouts or {}).items()]
    out += ["", "[actions]"]
    out += [f"{a} = echo {a} >> /results/{host}.actions" for a in REBOOT_KINDS
            if a != "failsafe"]
    # As an operator may write it: a variable, a command substitution (run by /bin/sh -c,
    # docs/contract.md §2; systemd must not expand or mangle them, attack on issue 24).
    out.append(f'failsafe = X=fired; echo "failsafe ${{X}} $(echo ok)" >> /results/{host}.actions')
    out.append("alarm = cat >> /results/alarms.log; echo >> /results/alarms.log")
    return "\n".join(out) + "\n"


def assert_harmless_inside(text: str) -> None:
    acts = text.split("\n[actions]\n", 1)[1]
    for line in acts.splitlines():
        if "=" in line and not line.lstrip().startswith(";"):
            assert ">> /results/" in line, line
    assert "sysrq" not in acts and "systemctl reboot" not in acts


# -- 1. install, configure, start: READY is what makes a unit active ---------------------------

def test_the_package_installs_disabled_and_both_units_start_on_ready(box, deb):
    c = box
    c.sh(f"dpkg -i {c.add_deb(deb)}", timeout=180)
    for unit in UNITS:
        assert c.sh(f"systemctl is-enabled {unit}", check=False).stdout.strip() == "disabled"
        assert c.sh(f"systemctl is-active {unit}", check=False).stdout.strip() == "inactive"
    # The lab's generated two-host tree, by the installed program; then the operator's files.
    c.sh(f"python3 -c \"import sys; sys.path.insert(0, '/usr/bin/mtce'); "
         f"from mtce.lab_plan import Plan; Plan('{LAB}', 2, pxeboot_window={PXEBOOT_WINDOW_S})"
         f".write()\"")
    defaults = ("run_dir", "persist_dir", "state_dir", "pid_dir", "log_dir", "agent_socket")
    ctrl = with_actions(c.read(f"{LAB}/controller-0/mtc.ini"), "controller-0",
                        drop_paths=defaults, drop_agent=("inventory",),
                        timeouts={"failsafe_shutdown_delay": FAILSAFE_DELAY_S})
    worker = with_actions(c.read(f"{LAB}/worker-0/mtc.ini"), "worker-0",
                          timeouts={"failsafe_shutdown_delay": FAILSAFE_DELAY_S})
    for text in (ctrl, worker):
        assert_harmless_inside(text)
    c.write("/etc/mtc.ini", ctrl)
    c.write(f"{LAB}/worker-0/mtc.ini", worker)
    c.write("/etc/mtce/inventory.ini", c.read(f"{LAB}/inventory.ini"))
    c.write(f"/etc/systemd/system/{WORKER_UNIT}", "\n".join([
        "[Unit]", "Description=mtce test: worker-0's mtcClient", "",
        "[Service]", "Type=notify", "NotifyAccess=main",
        f"ExecStart=/usr/bin/mtce client -c {LAB}/worker-0/mtc.ini", "Restart=on-failure",
        "RestartSec=1", "", "[Install]", "WantedBy=multi-user.target", ""]))
    c.sh("systemctl daemon-reload")
    r = c.sh("systemctl enable --now mtcagent.service mtcclient.service " + WORKER_UNIT,
             timeout=120)
    for unit in UNITS:
        props = show(c, unit, "ActiveState", "SubState", "Type", "Result", "MainPID")
        assert (props["ActiveState"], props["SubState"], props["Type"]) == \
               ("active", "running", "notify"), (props, r.stderr)
        assert c.sh(f"systemctl is-enabled {unit}").stdout.strip() == "enabled"
        assert int(props["MainPID"]) > 0
    # READY=1 comes once the sockets are bound: the agent answers at once.
    assert c.sh("mtce hosts", check=False, timeout=30).returncode == 0
    wait(lambda: all_ok(c), 60, "both hosts online and ok on every network")


def test_a_unit_whose_daemon_never_notifies_fails_its_start(box):
    """Type=notify: with a daemon that never says READY=1 (no NOTIFY_SOCKET), the start
    times out and the unit fails; it does not hang or pass as started."""
    c = box
    dropin = "/etc/systemd/system/mtcagent.service.d/silent.conf"
    c.write(dropin, "[Service]\nExecStart=\nExecStart=/usr/bin/env -u NOTIFY_SOCKET "
                    "/usr/bin/mtce agent -c /etc/mtc.ini\nTimeoutStartSec=4\n")
    try:
        c.sh("systemctl daemon-reload")
        t = time.monotonic()
        r = c.sh("systemctl restart mtcagent", check=False, timeout=60)
        took = time.monotonic() - t
        props = show(c, "mtcagent", "SubState", "Result", "MainPID")
        assert r.returncode != 0 and took < 30, (r, took)
        # failed, then Restart=on-failure tries again after RestartSec (and fails again)
        assert props["Result"] == "timeout" and props["MainPID"] == "0" and \
            props["SubState"] in ("failed", "auto-restart"), props
        text = journal(c, "mtcagent")
        assert "start operation timed out" in text.lower() and \
            "Failed to start mtcagent.service" in text, text[-2000:]
    finally:
        c.sh(f"rm -f {dropin} && systemctl daemon-reload && systemctl reset-failed mtcagent; "
             f"systemctl stop mtcagent; systemctl start mtcagent", check=False, timeout=60)
    assert show(c, "mtcagent", "ActiveState")["ActiveState"] == "active"
    wait(lambda: all_ok(c), 60, "both hosts ok again")


# -- 2. reload and restart ---------------------------------------------------------------------

def test_systemctl_reload_is_the_sighup_reload(box):
    c = box
    pid = show(c, "mtcagent", "MainPID")["MainPID"]
    inventory = c.read("/etc/mtce/inventory.ini")
    c.write("/etc/mtce/inventory.ini", inventory + "\n[worker-9]\npersonality = worker\n"
            "mgmt_mac = 08:00:27:1a:00:99\nmgmt_ip = 127.42.204.99\n"
            "administrative = locked\n")
    c.sh("systemctl reload mtcagent", timeout=60)
    wait(lambda: "worker-9" in hosts(c), 20, "worker-9 in mtce hosts after the reload")
    assert show(c, "mtcagent", "MainPID")["MainPID"] == pid
    assert "SIGHUP: reloading" in journal(c, "mtcagent")
    c.write("/etc/mtce/inventory.ini", inventory)
    c.sh("systemctl reload mtcagent", timeout=60)
    wait(lambda: "worker-9" not in hosts(c), 20, "worker-9 gone after the second reload")


def lose_worker_pxeboot(c: Container, lost: bool) -> None:
    """worker-0's pxeboot mtcAlive dropped at send (a routing rule from its pxeboot address,
    ahead of the local table): its pxeboot network is lost while mgmt and cluster-host stay
    ok, as when its pxeboot cable is pulled."""
    src = hosts(c)["worker-0"]["pxeboot_ip"] if lost else None
    if lost:
        c.sh("ip rule show | grep -q '^50:' || { ip rule add pref 50 lookup local && "
             "ip rule del pref 0; }; "
             f"ip rule add pref 10 from {src} blackhole")
    else:
        c.sh("while ip rule del pref 10 2>/dev/null; do :; done")


def active_200_003(c: Container) -> list:
    return [a for a in alarms(c) if a["id"] == "200.003" and a["host"] == "worker-0"]


def test_systemctl_restart_keeps_an_operator_lock_and_an_active_alarm(box):
    c = box
    # A locked host carries no 200.003 (docs/protocol.md §5.5): the lock is controller-0's.
    c.sh("mtce lock controller-0", timeout=30)
    lose_worker_pxeboot(c, True)
    wait(lambda: active_200_003(c), 90, "200.003 raised for worker-0")
    raised = active_200_003(c)[0]["raised_at"]
    c.sh("systemctl restart mtcagent", timeout=60)
    assert show(c, "mtcagent", "ActiveState")["ActiveState"] == "active"
    assert hosts(c)["controller-0"]["administrative"] == "locked"
    assert [a["raised_at"] for a in active_200_003(c)] == [raised]


# -- 3. kill -9: Restart=on-failure, the state as before ---------------------------------------

@pytest.mark.parametrize("unit", UNITS)
def test_kill_9_of_each_daemon_is_restarted_by_systemd_with_its_state(box, unit):
    c = box
    before = show(c, unit, "MainPID", "NRestarts")
    raised = [a["raised_at"] for a in active_200_003(c)]
    c.sh(f"kill -9 {before['MainPID']}")
    wait(lambda: show(c, unit, "NRestarts")["NRestarts"] == str(int(before["NRestarts"]) + 1)
           and show(c, unit, "ActiveState")["ActiveState"] == "active", 30,
           f"{unit} restarted by systemd")
    assert show(c, unit, "MainPID")["MainPID"] != before["MainPID"]
    wait(lambda: hosts(c), 15, "the agent answers")
    assert hosts(c)["controller-0"]["administrative"] == "locked"
    assert [a["raised_at"] for a in active_200_003(c)] == raised


def test_the_alarm_clears_and_the_lock_is_undone(box):
    c = box
    lose_worker_pxeboot(c, False)
    wait(lambda: not active_200_003(c), 90, "200.003 cleared")
    c.sh("mtce unlock controller-0", timeout=30)
    assert hosts(c)["controller-0"]["administrative"] == "unlocked"
    log = c.result("alarms.log")
    assert log.count('"raise"') == 1 and log.count('"clear"') == 1, log


# -- 4. the failsafe outlives its service --------------------------------------------------------

def test_the_failsafe_fires_after_its_service_is_stopped(box):
    c = box
    wait(lambda: all_ok(c), 60, "every host ok")
    r = c.sh("mtce reboot controller-0 --wait 30", check=False, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    wait(lambda: "reboot" in actions(c, "controller-0"), 10, "[actions] reboot run")
    launched = time.monotonic()
    c.sh("systemctl stop mtcclient", timeout=60)
    assert show(c, "mtcclient", "ActiveState")["ActiveState"] == "inactive"
    units = c.sh("systemctl list-units --all --no-legend 'mtce-failsafe-*'").stdout
    assert re.search(r"mtce-failsafe-reboot-\d+-\d+\.service +loaded +active", units), units
    # dpkg runs `systemctl daemon-reload` in most maintainer scripts: reloads during the
    # window neither postpone the failsafe (a transient timer's OnActiveSec= was re-armed by
    # each) nor change its command (attack on issue 24).
    for _ in range(2 * FAILSAFE_DELAY_S + 4):
        if "failsafe" in actions(c, "controller-0"):
            break
        c.sh("systemctl daemon-reload", timeout=60)
        time.sleep(0.5)
    wait(lambda: "failsafe" in actions(c, "controller-0"), 5,
           "the failsafe fired with mtcclient stopped")
    fired = time.monotonic() - launched
    assert 1.0 < fired < FAILSAFE_DELAY_S + 2.5, fired
    assert c.result("controller-0.actions").splitlines()[-1] == "failsafe fired ok"
    assert "failsafe reboot script launched" in journal(c, "mtcclient")
    # The host "rebooted": /var/run is empty again, and the client starts over.
    c.sh("rm -f /var/run/.node_reset /run/.node_reset && systemctl start mtcclient",
         timeout=60)
    wait(lambda: all_ok(c), 60, "controller-0 ok again after its simulated reboot")


# -- 5. the journal and logrotate ----------------------------------------------------------------

def test_the_logs_are_in_the_journal_with_the_originals_wording(box):
    c = box
    agent = journal(c, "mtcagent")
    client = journal(c, "mtcclient")
    assert re.search(r"mtcAgent \S+\(\d+\) \w+:\s+Info : mtce \S+ mtcAgent starting", agent)
    assert "SIGHUP: reloading" in agent
    assert re.search(r"controller-0 mtcClient .*: failsafe reboot script launched ; reboot in "
                     r"3 seconds", client), client[-3000:]
    by_id = c.sh("journalctl --no-pager -o cat -t mtcAgent -p info").stdout
    assert "mtcAgent starting" in by_id
    # and in the log file as before
    assert "mtcAgent starting" in c.read("/var/log/mtcAgent.log")


def test_logrotate_rotates_the_installed_logs_and_the_daemons_write_the_new_files(box):
    c = box
    # made by the daemons as logrotate makes the next ones (create 0640 root adm)
    modes = c.sh("stat -c '%a %U %G' /var/log/mtcAgent.log /var/log/mtcClient.log").stdout
    assert modes.split("\n")[:2] == ["640 root adm"] * 2, modes
    r = c.sh("logrotate -d /etc/logrotate.d/mtce 2>&1")
    assert "error" not in r.stdout.lower(), r.stdout
    for log in ("/var/log/mtcAgent.log", "/var/log/mtcClient.log"):
        assert f"considering log {log}" in r.stdout, r.stdout
    c.sh("logrotate -f -s /tmp/logrotate.state /etc/logrotate.d/mtce")
    c.sh("systemctl reload mtcagent")
    wait(lambda: "SIGHUP: reloading" in c.sh("cat /var/log/mtcAgent.log", check=False).stdout,
           20, "the agent writes the new /var/log/mtcAgent.log")
    assert c.sh("test -s /var/log/mtcAgent.log.1").returncode == 0


# -- 6. upgrade ------------------------------------------------------------------------------------

def repack(deb: str, version: str, out: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-R", deb, tmp + "/pkg"], check=True, timeout=120)
        control = os.path.join(tmp, "pkg", "DEBIAN", "control")
        with open(control, encoding="utf-8") as f:
            text = re.sub(r"(?m)^Version: .*$", f"Version: {version}", f.read())
        with open(control, "w", encoding="utf-8") as f:
            f.write(text)
        subprocess.run(["dpkg-deb", "--root-owner-group", "-b", tmp + "/pkg", out],
                       check=True, capture_output=True, timeout=120)
    return out


def test_an_upgrade_keeps_the_config_restarts_each_daemon_once_and_loses_nothing(box, deb):
    c = box
    c.sh("mtce lock controller-0", timeout=30)
    lose_worker_pxeboot(c, True)
    wait(lambda: active_200_003(c), 90, "200.003 raised for worker-0")
    raised = active_200_003(c)[0]["raised_at"]
    old = subprocess.run(["dpkg-deb", "-f", deb, "Version"], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    new = old + "+upgrade1"
    with tempfile.TemporaryDirectory() as tmp:
        path = c.add_deb(repack(deb, new, os.path.join(tmp, "mtce_upgrade.deb")))
    ini = c.read("/etc/mtc.ini")
    inventory = c.read("/etc/mtce/inventory.ini")
    before = {u: show(c, u, "InvocationID", "MainPID") for u in UNITS}
    since = float(c.sh("date +%s").stdout) - 1
    r = c.sh(f"dpkg -i {path}", timeout=180)
    assert c.sh("dpkg-query -W -f='${Version}' mtce").stdout == new, r.stdout
    assert c.read("/etc/mtc.ini") == ini and c.read("/etc/mtce/inventory.ini") == inventory
    for u in UNITS:
        after = show(c, u, "InvocationID", "MainPID", "ActiveState")
        assert after["ActiveState"] == "active", (u, after, r.stdout, r.stderr)
        assert after["InvocationID"] != before[u]["InvocationID"], u
        starts = len(re.findall(rf"(?m)^Started {u}\.service", journal(c, u, since)))
        assert starts == 1, (u, journal(c, u, since))
    assert hosts(c)["controller-0"]["administrative"] == "locked"
    assert [a["raised_at"] for a in active_200_003(c)] == [raised]
    lose_worker_pxeboot(c, False)


# -- 7. remove and purge ---------------------------------------------------------------------------

def mtce_processes(c: Container) -> str:
    return c.sh("ps -eo pid,args | grep '[/]usr/bin/mtce' || true").stdout


def test_remove_stops_everything_keeps_the_state_and_purge_removes_only_ours(box):
    c = box
    c.sh(f"systemctl disable --now {WORKER_UNIT} && rm /etc/systemd/system/{WORKER_UNIT} && "
         f"systemctl daemon-reload && rm -rf {LAB}", timeout=60)
    assert c.sh("test -s /var/lib/mtce/hosts.json || ls /var/lib/mtce").returncode == 0
    r = c.sh("dpkg -r mtce", timeout=120)
    assert mtce_processes(c) == "", (mtce_processes(c), r.stdout)
    for unit in UNITS:       # gone; only their enablement is kept for a reinstall (policy)
        assert show(c, unit, "LoadState", "ActiveState") == \
            {"LoadState": "not-found", "ActiveState": "inactive"}
        assert c.sh(f"test -e /lib/systemd/system/{unit}.service", check=False).returncode
    assert c.sh("ls /var/lib/mtce").stdout.strip(), "state_dir kept on remove"
    assert c.sh("test -f /etc/mtc.ini").returncode == 0    # conffiles stay on remove
    c.sh("dpkg --purge mtce", timeout=120)
    units = c.sh("systemctl daemon-reload; systemctl list-units --all --no-legend 'mtc*' "
                 "'mtce-*'; systemctl list-unit-files --no-legend 'mtc*'; true").stdout
    assert units.strip() == "", units
    for path in ("/var/lib/mtce", "/etc/mtc.ini", "/etc/mtce", "/var/log/mtcAgent.log",
                 "/var/persist/mtc"):
        assert c.sh(f"test -e {path}", check=False).returncode != 0, path
    left = files(c)
    assert sorted(left - c.files_before) == [], "purge left these behind"
    assert sorted(c.files_before - left) == [], "purge removed what was not the package's"
