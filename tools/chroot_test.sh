#!/bin/bash
# shellcheck disable=SC2016  # '${Package}', '$2' ...: dpkg-query formats, generated scripts
# tools/chroot_test.sh DEB: the .deb on a fresh Debian 12 host that has nothing but python3.
#
# 1. A debootstrap'ed bookworm (minbase + python3) is built once and cached under
#    build/chroot/base; it is rebuilt when missing or when its stamp does not match this
#    recipe (a half-built one has no stamp). The .debs of the test packages are downloaded
#    into it then, so later runs install them without the network.
# 2. Every run works on a fresh copy (build/chroot/work) and checks, as a user would:
#    dpkg -i alone succeeds (no other package is added), nothing is started or enabled,
#    a missing /etc/mtc.ini is one line and exit 2 (init script: 6), the init scripts
#    start/status/reload/restart/stop the client, dpkg -r stops it and keeps the conffiles,
#    dpkg -P removes them, and an upgrade keeps an edited /etc/mtc.ini (the older and newer
#    packages are this .deb repacked with other versions).
# 3. Then the test dependencies, tests/ copied in, and the suite runs there against
#    /usr/bin/mtce (MTCE_BIN), without the netns tests (host only) and test_packaging.py
#    (it builds the zipapp and inspects the .deb: `make test-chroot` runs it on the host).
#    Test dependencies (MTCE_CHROOT_TEST_DEPS):
#    - pinned (default): the test-only pins of requirements-dev.txt (pytest, hypothesis and
#      what they need), pure-Python wheels that the host's pip puts in a directory of their
#      own (cached under build/chroot/testdeps), copied in and put on PYTHONPATH after
#      /usr/bin/mtce. The tests are written against these versions; nothing is installed
#      into the chroot's system, and no runtime dependency of mtce may come this way.
#    - debian: python3-pytest and python3-hypothesis from bookworm (pytest 7.2, hypothesis
#      6.67): no pip at all, but older than the versions the tests are written for.
#
# Every [actions] key of the test configuration is `true`: nothing here can reboot anything.
# Mounts (proc, sys, devpts, shm) and any daemon left inside the chroot are cleaned up on
# exit, failure or interrupt. Needs root, debootstrap and deb.debian.org (first run only).
# Environment: MTCE_CHROOT_DIR (default build/chroot), MTCE_DEBIAN_MIRROR,
# MTCE_CHROOT_TEST_DEPS (pinned | debian), MTCE_PIP_PYTHON (default .venv/bin/python: a
# python with pip, for "pinned"), MTCE_CHROOT_MARKERS (pytest -m expression, default
# "not netns and not soak and not prometheus and not ha and not source_tree and not systemd":
# Prometheus,
# ocf-tester and crm_simulate are the host's, where make test installs them; source_tree tests
# read or run the source tree, which is not in the chroot), MTCE_CHROOT_PYTEST_ARGS (extra pytest arguments).

set -euo pipefail

die() { echo "chroot_test: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: $0 path/to/mtce_<version>_all.deb"
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount)"
command -v debootstrap >/dev/null || die "needs debootstrap (apt-get install debootstrap)"
DEB=$(readlink -f "$1")
[ -f "$DEB" ] || die "no such file: $1"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${MTCE_CHROOT_DIR:-$ROOT/build/chroot}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
SUITE=bookworm
MIRROR=${MTCE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
TEST_DEPS=${MTCE_CHROOT_TEST_DEPS:-pinned}
TEST_PKGS="python3-pytest python3-hypothesis"
PIP_PY=${MTCE_PIP_PYTHON:-$ROOT/.venv/bin/python}
MARKERS=${MTCE_CHROOT_MARKERS:-not netns and not soak and not prometheus and not ha and not source_tree and not systemd}
case "$TEST_DEPS" in pinned|debian) ;; *) die "MTCE_CHROOT_TEST_DEPS: pinned or debian" ;; esac
BASE=$CACHE/base
WORK=$CACHE/work
STAMP=$CACHE/base.stamp
RECIPE="recipe=2 suite=$SUITE variant=minbase include=python3 mirror=$MIRROR test-pkgs=$TEST_PKGS"
DEB_VERSION=$(dpkg-deb -f "$DEB" Version)
VERSION=${DEB_VERSION%-*}
PASSED=0
FAILED=0
T0=$(date +%s)

# -- mounts, processes and cleanup ----------------------------------------------------------

mounts_under() {  # mount points below $1, deepest first
    awk -v p="$1/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r
}

kill_chroot_processes() {  # our daemons: processes whose root directory is inside $1
    local pid root pids=()
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        root=$(readlink "/proc/$pid/root" 2>/dev/null) || continue
        case "$root" in "$1"|"$1"/*) pids+=("$pid") ;; esac
    done
    [ ${#pids[@]} -eq 0 ] && return 0
    echo "chroot_test: stopping processes left running in $1:" >&2
    for pid in "${pids[@]}"; do
        echo "  $pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-150)" >&2
    done
    kill -TERM "${pids[@]}" 2>/dev/null || true
    sleep 2
    kill -KILL "${pids[@]}" 2>/dev/null || true
}

release() {  # stop what runs in $1, unmount everything below it
    local m
    kill_chroot_processes "$1"
    for m in $(mounts_under "$1"); do
        umount "$m" 2>/dev/null || umount -l "$m" || true
    done
}

remove_tree() {  # never follows a mount: refuse if one is left
    release "$1"
    if [ -n "$(mounts_under "$1")" ]; then die "still mounted under $1; not removing it"; fi
    rm -rf --one-file-system "$1"
}

cleanup() {
    local rc=$?
    release "$WORK"
    release "$BASE.tmp"
    exit $rc
}
# One run at a time per cache directory (they share build/chroot/work); the lock is taken
# before the cleanup trap is set, so a refused run never touches the other run's chroot.
exec 9>"$CACHE/.lock"
flock -n 9 || die "another chroot test is using $CACHE"
trap cleanup EXIT
trap 'exit 130' INT TERM

mount_all() {  # the kernel file systems the programs and tests need
    mount -t proc proc "$1/proc"
    mount -t sysfs -o ro sysfs "$1/sys"
    mkdir -p "$1/dev/pts" "$1/dev/shm"
    mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$1/dev/pts"
    mount -t tmpfs -o mode=1777 tmpfs "$1/dev/shm"
    if [ ! -L "$1/dev/ptmx" ]; then rm -f "$1/dev/ptmx"; ln -s pts/ptmx "$1/dev/ptmx"; fi
}

# Run a command inside a chroot with a clean environment.
in_root() {
    local dir=$1; shift
    chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive "$@"
}
in_work() { in_root "$WORK" "$@"; }

# -- the cached base ------------------------------------------------------------------------

base_ok() {
    [ -x "$BASE/usr/bin/python3" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$RECIPE" ]
}

build_base() {
    local t
    t=$(date +%s)
    echo "== building the Debian $SUITE chroot (minbase + python3) in $BASE"
    rm -f "$STAMP"
    remove_tree "$BASE"
    remove_tree "$BASE.tmp"
    if ! debootstrap --variant=minbase --include=python3 "$SUITE" "$BASE.tmp" "$MIRROR" \
            >"$CACHE/debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE/debootstrap.log"
        die "debootstrap failed, see $CACHE/debootstrap.log"
    fi
    cp /etc/resolv.conf "$BASE.tmp/etc/resolv.conf"
    mount -t proc proc "$BASE.tmp/proc"
    # The test packages are downloaded now (not installed): runs need no network later.
    in_root "$BASE.tmp" apt-get -q -y update >/dev/null
    # shellcheck disable=SC2086  # a list of packages
    in_root "$BASE.tmp" apt-get -q -y --no-install-recommends --download-only install \
        $TEST_PKGS >/dev/null
    release "$BASE.tmp"
    mv "$BASE.tmp" "$BASE"
    echo "$RECIPE" >"$STAMP"
    echo "== chroot built in $(( $(date +%s) - t )) s"
}

# -- checks -----------------------------------------------------------------------------------

ok()   { PASSED=$((PASSED + 1)); echo "ok   $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }
check() {  # check "what" command...: passes when the command succeeds
    local what=$1; shift
    if "$@" >/tmp/mtce-chroot-check.$$ 2>&1; then ok "$what"; else
        fail "$what"; sed 's/^/     | /' /tmp/mtce-chroot-check.$$ | tail -n 15
    fi
    rm -f /tmp/mtce-chroot-check.$$
}
must() {  # like check, but the run cannot go on without it
    local before=$FAILED
    check "$@"
    [ "$FAILED" -eq "$before" ] || die "cannot go on after: $1"
}
phase() { echo; echo "== $*"; }

exists()      { [ -e "$WORK$1" ]; }
absent()      { [ ! -e "$WORK$1" ] && [ ! -L "$WORK$1" ]; }
executable()  { [ -x "$WORK$1" ]; }
same_file()   { cmp -s "$WORK$1" "$2"; }
pkg_status()  { [ "$(in_work dpkg-query -W -f='${Status}' mtce 2>/dev/null)" = "$1" ]; }
not_installed() { ! in_work dpkg-query -W -f='${Status}' mtce 2>/dev/null | grep -q .; }
pid_of()      { tr -d ' \n' <"$WORK/run/$1.pid" 2>/dev/null; }
alive() {  # a live process named mtce
    [ -n "$1" ] && [ -d "/proc/$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = mtce ]
}
not_running() { local p; p=$(pid_of "$1"); ! alive "$p" && [ ! -e "$WORK/run/$1.pid" ]; }
wait_for() {  # wait_for SECONDS command...
    local n=$(( $1 * 10 )); shift
    while [ $n -gt 0 ]; do "$@" && return 0; sleep 0.1; n=$((n - 1)); done
    "$@"
}
exit_status() {  # exit_status N command...: the command exits with status N
    local want=$1 rc=0; shift
    "$@" || rc=$?
    [ "$rc" -eq "$want" ] || { echo "exit status $rc, expected $want"; return 1; }
}
one_line_naming() {  # one_line_naming FILE command...: exit 2, one stderr line naming FILE
    local file=$1 rc=0 err; shift
    err=$("$@" 2>&1 >/dev/null) || rc=$?
    echo "$err"
    [ "$rc" -eq 2 ] && [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] && [[ "$err" == *"$file"* ]]
}
output_has() {  # output_has TEXT command...
    local text=$1 out; shift
    out=$("$@" 2>&1) || true
    echo "$out"
    [[ "$out" == *"$text"* ]]
}
log_has() { grep -q -- "$2" "$WORK/var/log/$1.log"; }
same_pid() { [ "$(pid_of "$1")" = "$2" ]; }
new_daemon() { local p; p=$(pid_of "$1"); [ "$p" != "$2" ] && alive "$p"; }
hosts_json_lists() {  # hosts_json_lists NAME...: `mtce hosts --json` names exactly these hosts
    in_work /usr/bin/mtce hosts --json | python3 -c '
import json, sys
hosts = json.load(sys.stdin)
assert [h["hostname"] for h in hosts] == sys.argv[1:], hosts' "$@"
}

# The shipped /etc/mtc.ini made harmless and local: [actions] all `true`, loopback
# addresses, ports away from the defaults; pid and log files stay at their default paths.
write_test_config() {
    python3 - "$WORK/etc/mtc.ini" <<'EOF'
import re, sys
path = sys.argv[1]
want = {
    "agent": {"mtc_agent_port": "42101", "mtc_rx_pxeboot_port": "42102",
              "mgmt_ip": "127.0.0.1", "cluster_host_ip": "127.0.0.1", "pxeboot_ip": "127.0.0.1"},
    "client": {"mtc_rx_mgmnt_port": "42118", "mtc_rx_clstr_port": "42115",
               "mtc_rx_pxeboot_port": "42119", "mgmt_ip": "127.0.0.1",
               "cluster_host_ip": "127.0.0.1", "mtcalive_period": "1"},
    "actions": {"reboot": "true", "reset": "true", "lazy_reboot": "true", "failsafe": "true",
                "wipedisk": "true"},
}
out, section = [], None
for line in open(path, encoding="utf-8").read().splitlines():
    m = re.match(r"\s*\[([^\]]+)\]", line)
    if m:
        section = m.group(1).strip()
    m = re.match(r"\s*([A-Za-z_]+)\s*=", line)
    if m and m.group(1) in want.get(section, {}):
        line = f"{m.group(1)} = {want[section][m.group(1)]}  ; chroot test"
    out.append(line)
open(path, "w", encoding="utf-8").write("\n".join(out) + "\n")
EOF
    grep -q '^reboot = true' "$WORK/etc/mtc.ini" && grep -q '^failsafe = true' "$WORK/etc/mtc.ini"
}

# Older and newer packages: this .deb with another version (the newer one also ships a
# changed /etc/mtc.ini, so that dpkg has a conffile conflict to resolve).
repack() {  # repack OUT VERSION [change-conffile]
    local out=$1 version=$2 dir
    dir=$(mktemp -d "$CACHE/repack.XXXXXX")
    dpkg-deb -R "$DEB" "$dir/pkg"
    sed -i "s/^Version: .*/Version: $version/" "$dir/pkg/DEBIAN/control"
    if [ "${3:-}" = change-conffile ]; then
        printf '; (a newer version documents one more thing here)\n' >>"$dir/pkg/etc/mtc.ini"
        (cd "$dir/pkg" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z |
            xargs -0 md5sum >DEBIAN/md5sums)
    fi
    dpkg-deb --root-owner-group -b "$dir/pkg" "$out" >/dev/null
    rm -rf "$dir"
}

# -- pinned test dependencies -----------------------------------------------------------------

test_pins() {  # the name==version lines of requirements-dev.txt that requirements.txt lacks
    local runtime
    runtime=$(sed -n 's/^\([A-Za-z0-9._-]*\)==.*/\1/p' "$ROOT/requirements.txt" | tr 'A-Z_.' 'a-z--')
    sed -n 's/^\([A-Za-z0-9._-]*==[^ #]*\).*/\1/p' "$ROOT/requirements-dev.txt" |
        while IFS= read -r pin; do
            name=$(echo "${pin%%==*}" | tr 'A-Z_.' 'a-z--')
            if ! printf '%s\n' "$runtime" | grep -qx "$name"; then echo "$pin"; fi
        done
}

stage_test_deps() {  # TESTDEPS=<cache dir> with the pins for the chroot's python
    local pins py key
    [ -x "$PIP_PY" ] || { echo "no $PIP_PY (make venv, or set MTCE_PIP_PYTHON)"; return 1; }
    pins=$(test_pins)
    py=$(in_work python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    key=$(printf '%s\n%s\n' "$py" "$pins" | sha256sum | cut -c1-16)
    TESTDEPS=$CACHE/testdeps/$key
    [ -f "$TESTDEPS/.complete" ] && return 0
    rm -rf "$TESTDEPS"
    # shellcheck disable=SC2086  # a list of pins
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore "$PIP_PY" -m pip install \
        --quiet --no-compile --only-binary=:all: --python-version "$py" --target "$TESTDEPS" \
        $pins || return 1
    rm -rf "${TESTDEPS:?}/bin"
    touch "$TESTDEPS/.complete"
}

no_runtime_deps_in_test_deps() {  # the zipapp must be the only source of these
    local m found=0
    for m in pyroute2 pr2modules configobj validate daemon lockfile mtce; do
        if [ -e "$TESTDEPS/$m" ] || [ -e "$TESTDEPS/$m.py" ]; then echo "$m"; found=1; fi
    done
    [ "$found" -eq 0 ]
}

# -- run --------------------------------------------------------------------------------------

T_BASE=$(date +%s)
BUILT=no
if base_ok; then echo "== cached chroot: $BASE"; else build_base; BUILT=yes; fi
T_BASE=$(( $(date +%s) - T_BASE ))

remove_tree "$WORK"
cp -a --reflink=auto "$BASE" "$WORK"
mount_all "$WORK"
# A booted host without systemd, as far as invoke-rc.d can tell: a chroot has no init and
# no runlevel, and invoke-rc.d then blocks every action. Runlevel 2, and a policy-rc.d that
# allows what the rc2.d links allow ("(start)" in parentheses: the script is disabled).
printf '#!/bin/sh\necho "N 2"\n' >"$WORK/usr/sbin/runlevel"
printf '#!/bin/sh\ncase "$2" in "("*) exit 101 ;; esac\nexit 0\n' >"$WORK/usr/sbin/policy-rc.d"
chmod 755 "$WORK/usr/sbin/runlevel" "$WORK/usr/sbin/policy-rc.d"
cp "$DEB" "$WORK/tmp/mtce.deb"
repack "$WORK/tmp/mtce-old.deb" "$VERSION-0~chroottest1"
repack "$WORK/tmp/mtce-new.deb" "$DEB_VERSION+chroottest1" change-conffile
AGENT=no
dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/bin/mtce >"$CACHE/mtce.pyz"
if python3 -c 'import sys, zipfile
sys.exit("mtce/agent.py" not in zipfile.ZipFile(sys.argv[1]).namelist())' "$CACHE/mtce.pyz"; then
    AGENT=yes
fi

phase "install: dpkg -i on Debian $SUITE with python3 and nothing else"
in_work dpkg-query -W -f='${Package}\n' | sort >"$CACHE/packages.before"
must "dpkg -i mtce_${DEB_VERSION}_all.deb succeeds alone" in_work dpkg -i /tmp/mtce.deb
in_work dpkg-query -W -f='${Package}\n' | sort >"$CACHE/packages.after"
check "no other package was added" \
    diff <(echo mtce | sort -m - "$CACHE/packages.before") "$CACHE/packages.after"
check "dpkg --audit is clean" test -z "$(in_work dpkg --audit)"
check "mtce --version prints mtce $VERSION" \
    test "$(in_work /usr/bin/mtce --version)" = "mtce $VERSION"
check "python3 -I -S /usr/bin/mtce --version works" \
    test "$(in_work python3 -I -S /usr/bin/mtce --version)" = "mtce $VERSION"
check "/usr/bin/mtce is the zipapp, #!/usr/bin/python3" \
    test "$(head -c 19 "$WORK/usr/bin/mtce")" = "#!/usr/bin/python3"
CONFFILES="/etc/init.d/mtcAgent /etc/init.d/mtcClient /etc/logrotate.d/mtce /etc/mtc.ini"
CONFFILES="$CONFFILES /etc/mtce/inventory.ini "
check "conffiles: mtc.ini, inventory.ini, init scripts, logrotate" test "$CONFFILES" = \
    "$(in_work dpkg-query -W -f='${Conffiles}\n' mtce | awk 'NF { print $1 }' | sort | tr '\n' ' ')"
check "units and aliases installed" exists /lib/systemd/system/mtcclient.service
check "alias mtcClient.service -> mtcclient.service" \
    test "$(readlink "$WORK/lib/systemd/system/mtcClient.service")" = mtcclient.service
check "nothing started on install" not_running mtcClient
check "units not enabled" absent /etc/systemd/system/multi-user.target.wants/mtcclient.service
check "init scripts registered disabled (K links only)" \
    bash -c "ls '$WORK'/etc/rc2.d/K*mtcClient && ! ls '$WORK'/etc/rc2.d/S*mtcClient"
check "inventory example has no active host section" \
    bash -c "! grep -q '^[[:space:]]*\[' '$WORK/etc/mtce/inventory.ini'"

phase "bad input: missing configuration"
mv "$WORK/etc/mtc.ini" "$WORK/etc/mtc.ini.away"
check "mtce client: one line naming /etc/mtc.ini, exit 2" \
    one_line_naming /etc/mtc.ini in_work /usr/bin/mtce client
check "init script start: exit 6 (LSB: not configured)" \
    exit_status 6 in_work /etc/init.d/mtcClient start
check "and nothing runs" not_running mtcClient
mv "$WORK/etc/mtc.ini.away" "$WORK/etc/mtc.ini"
if [ "$AGENT" = yes ]; then
    sed 's|^inventory *=.*|inventory = /etc/mtce/nonexistent.ini|' "$WORK/etc/mtc.ini" \
        >"$WORK/tmp/agent-bad.ini"
    check "mtce agent with a missing inventory: one line naming it, exit 2" \
        one_line_naming /etc/mtce/nonexistent.ini in_work /usr/bin/mtce agent -c /tmp/agent-bad.ini
    check "and no agent runs" not_running mtcAgent
fi

phase "init script: the client with a harmless local configuration"
check "edit /etc/mtc.ini ([actions] = true, loopback)" write_test_config
cp "$WORK/etc/mtc.ini" "$CACHE/mtc.ini.edited"
check "start: exit 0" in_work /etc/init.d/mtcClient start
PID=$(pid_of mtcClient)
check "pidfile /var/run/mtcClient.pid names a live mtce process" alive "$PID"
check "status: exit 0, running" output_has "is running" in_work /etc/init.d/mtcClient status
check "log /var/log/mtcClient.log written" wait_for 5 log_has mtcClient "mtcClient starting"
check "start again: exit 0" in_work /etc/init.d/mtcClient start
check "same daemon" same_pid mtcClient "$PID"
check "reload: exit 0" in_work /etc/init.d/mtcClient reload
check "SIGHUP logged" wait_for 5 log_has mtcClient SIGHUP
check "same daemon" same_pid mtcClient "$PID"
check "restart: exit 0" in_work /etc/init.d/mtcClient restart
check "a new daemon runs" new_daemon mtcClient "$PID"
check "stop: exit 0" in_work /etc/init.d/mtcClient stop
check "stopped, pidfile removed" not_running mtcClient
check "status: exit 3, not running" exit_status 3 in_work /etc/init.d/mtcClient status
check "stop again: exit 0" in_work /etc/init.d/mtcClient stop

phase "systemd Type=notify, as far as it can be checked without systemd"
# Under systemd, PID 1 starts ExecStart itself: python-daemon sees an init parent and does
# not fork, and mtce must send READY=1 from that same process (NotifyAccess=main). Here a
# shell is PID 1 of a new pid namespace and starts mtce; the notify socket checks the
# sender's pid. Then SIGTERM must end it with status 0.
cat >"$WORK/tmp/notify_check.py" <<'EOF'
import os, socket, struct, subprocess, sys
path = "/tmp/notify.sock"
if os.path.exists(path):
    os.unlink(path)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.settimeout(20)
p = subprocess.Popen(["unshare", "--pid", "--fork", "sh", "-c",
                      "/usr/bin/mtce client -c /etc/mtc.ini & wait $!; echo exit=$?"],
                     env=dict(os.environ, NOTIFY_SOCKET=path), stdout=subprocess.PIPE,
                     text=True)


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


msg, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12))
sender = next(struct.unpack("iii", d[:12])[0] for _, t, d in anc if t == socket.SCM_CREDENTIALS)
shell = children(p.pid)[0]
main = children(shell)
print("message", msg, "sender", sender, "main", main)
ok = msg.startswith(b"READY=1") and main == [sender]
if main:
    os.kill(main[0], 15)
out = p.communicate(timeout=20)[0]
print(out.strip())
sys.exit(0 if ok and "exit=0" in out else 1)
EOF
check "started by an init, mtce does not fork, sends READY=1 itself, SIGTERM exits 0" \
    in_work python3 /tmp/notify_check.py
check "nothing left running" not_running mtcClient

if [ "$AGENT" = yes ]; then
    phase "init script: the agent, and mtce hosts"
    cat >"$WORK/etc/mtce/inventory.ini" <<'EOF'
[worker-0]
personality = worker
mgmt_mac = 08:00:27:1e:0a:01
mgmt_ip = 127.0.0.1
administrative = unlocked
EOF
    check "agent start: exit 0" in_work /etc/init.d/mtcAgent start
    check "agent status: running" output_has "is running" in_work /etc/init.d/mtcAgent status
    check "mtce hosts lists worker-0" wait_for 5 output_has worker-0 in_work /usr/bin/mtce hosts
    check "mtce hosts --json is a list with worker-0" hosts_json_lists worker-0
    check "agent stop: exit 0" in_work /etc/init.d/mtcAgent stop
    check "agent stopped" not_running mtcAgent
else
    phase "agent: SKIPPED, this build has no mtce/agent.py yet"
fi

phase "remove: dpkg -r stops the daemon and keeps the conffiles"
check "client started" in_work /etc/init.d/mtcClient start
PID=$(pid_of mtcClient)
must "dpkg -r mtce" in_work dpkg -r mtce
check "client stopped" bash -c "! [ -d /proc/$PID ]"
check "/usr/bin/mtce removed" absent /usr/bin/mtce
check "package state: config-files" pkg_status "deinstall ok config-files"
check "edited /etc/mtc.ini kept" same_file /etc/mtc.ini "$CACHE/mtc.ini.edited"
check "/etc/mtce/inventory.ini kept" exists /etc/mtce/inventory.ini
check "/etc/logrotate.d/mtce kept" exists /etc/logrotate.d/mtce
check "init script kept, not executable" \
    bash -c "[ -e '$WORK/etc/init.d/mtcClient' ] && [ ! -x '$WORK/etc/init.d/mtcClient' ]"
check "reinstall: dpkg -i" in_work dpkg -i /tmp/mtce.deb
check "edited /etc/mtc.ini still there" same_file /etc/mtc.ini "$CACHE/mtc.ini.edited"
check "init script executable again" executable /etc/init.d/mtcClient

phase "purge: dpkg -P removes the conffiles and the logs"
check "client started" in_work /etc/init.d/mtcClient start
must "dpkg -P mtce" in_work dpkg -P mtce
check "not installed" not_installed
check "client stopped" not_running mtcClient
for f in /etc/mtc.ini /etc/mtce /etc/init.d/mtcAgent /etc/init.d/mtcClient /etc/logrotate.d/mtce \
         /var/log/mtcClient.log /lib/systemd/system/mtcclient.service /usr/bin/mtce; do
    check "$f removed" absent "$f"
done
check "rc.d links removed" bash -c "! ls '$WORK'/etc/rc?.d/*mtc* 2>/dev/null"

phase "upgrade from $VERSION-0~chroottest1 keeps an edited /etc/mtc.ini"
must "install the older package" in_work dpkg -i /tmp/mtce-old.deb
check "edit /etc/mtc.ini" write_test_config
cp "$WORK/etc/mtc.ini" "$CACHE/mtc.ini.edited"
check "enable the client (update-rc.d enable)" in_work update-rc.d mtcClient enable
check "start it" in_work /etc/init.d/mtcClient start
PID=$(pid_of mtcClient)
must "dpkg -i mtce_${DEB_VERSION}_all.deb (upgrade)" in_work dpkg -i /tmp/mtce.deb
check "version is now $DEB_VERSION" \
    test "$(in_work dpkg-query -W -f='${Version}' mtce)" = "$DEB_VERSION"
check "edited /etc/mtc.ini kept, byte for byte" same_file /etc/mtc.ini "$CACHE/mtc.ini.edited"
check "no .dpkg-dist/.dpkg-new/.dpkg-old left" bash -c "! ls '$WORK'/etc/mtc.ini.dpkg-* 2>/dev/null"
check "the old daemon was stopped for the upgrade" bash -c "! [ -d /proc/$PID ]"
check "and the enabled client runs again (a new daemon)" new_daemon mtcClient "$PID"
check "disable it (update-rc.d disable)" in_work update-rc.d mtcClient disable
check "stop it" in_work /etc/init.d/mtcClient stop

phase "upgrade to a version whose shipped /etc/mtc.ini changed (--force-confold)"
must "dpkg -i --force-confdef --force-confold (newer package)" \
    in_work dpkg -i --force-confdef --force-confold /tmp/mtce-new.deb
check "edited /etc/mtc.ini kept" same_file /etc/mtc.ini "$CACHE/mtc.ini.edited"
check "the new default is beside it as /etc/mtc.ini.dpkg-dist" \
    grep -q "a newer version documents" "$WORK/etc/mtc.ini.dpkg-dist"
must "purge" in_work dpkg -P mtce
check "purge removes /etc/mtc.ini.dpkg-dist too" absent /etc/mtc.ini.dpkg-dist

phase "test suite in the chroot against /usr/bin/mtce"
must "dpkg -i mtce_${DEB_VERSION}_all.deb" in_work dpkg -i /tmp/mtce.deb
rm -rf "$WORK/root/mtce-tests"
mkdir -p "$WORK/root/mtce-tests"
TESTPATH=/usr/bin/mtce
if [ "$TEST_DEPS" = debian ]; then
    # shellcheck disable=SC2086  # a list of packages
    must "apt-get install $TEST_PKGS (from the cached .debs)" \
        in_work apt-get -q -y --no-install-recommends install $TEST_PKGS
else
    must "pinned test dependencies staged: $(test_pins | tr '\n' ' ')" stage_test_deps
    check "none of mtce's runtime dependencies among them" no_runtime_deps_in_test_deps
    cp -a "$TESTDEPS" "$WORK/root/mtce-tests/_testdeps"
    TESTPATH=$TESTPATH:/root/mtce-tests/_testdeps
fi
cp -a "$ROOT/tests" "$WORK/root/mtce-tests/tests"
# pytest.ini (markers, options), etc/mtc.ini (a test compares it with the OPTIONS table), the
# reference CIB (tests/test_lab_ha.py compares the lab's with it) and docs/design.md (its module
# map: tests/test_imports.py holds the installed package to it).
[ -f "$ROOT/pytest.ini" ] && cp "$ROOT/pytest.ini" "$WORK/root/mtce-tests/"
mkdir -p "$WORK/root/mtce-tests/docs" && cp -t "$WORK/root/mtce-tests/docs/" "$ROOT"/docs/design.md
mkdir -p "$WORK/root/mtce-tests/etc/pacemaker" && cp "$ROOT/etc/mtc.ini" "$WORK/root/mtce-tests/etc/"
cp "$ROOT/etc/pacemaker/mtce-cib.xml" "$WORK/root/mtce-tests/etc/pacemaker/"
find "$WORK/root/mtce-tests" -name __pycache__ -prune -exec rm -rf {} +
T_PYTEST=$(date +%s)
PYTEST_RC=0
# test_packaging and test_docs are about the source tree (the host runs them), not the package.
# PYTHONPATH: every python a test starts imports mtce from the installed zipapp too (and
# the pinned test dependencies, after it).
# shellcheck disable=SC2086
chroot "$WORK" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    TERM=dumb MTCE_BIN=/usr/bin/mtce PYTHONPATH="$TESTPATH" CI="${CI:-}" \
    PYTHONDONTWRITEBYTECODE=1 MARKERS="$MARKERS" \
    sh -c 'cd /root/mtce-tests && exec python3 -m pytest -p no:cacheprovider -m "$MARKERS" \
           --ignore=tests/test_packaging.py --ignore=tests/test_docs.py "$@" tests' pytest ${MTCE_CHROOT_PYTEST_ARGS:-} ||
    PYTEST_RC=$?
T_PYTEST=$(( $(date +%s) - T_PYTEST ))
if [ "$PYTEST_RC" -eq 0 ]; then ok "pytest in the chroot"
else fail "pytest in the chroot (exit $PYTEST_RC)"; fi

echo
if [ "$BUILT" = yes ]; then WHAT="built in ${T_BASE}s"; else WHAT="cached"; fi
echo "chroot_test: chroot $WHAT, pytest ${T_PYTEST}s, total $(( $(date +%s) - T0 ))s"
echo "chroot: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
