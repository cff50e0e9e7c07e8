#!/usr/bin/env bash
# tools/ci_lab.sh: `mtce lab --duration` for every scenario, as the end-to-end test of CI.
#
# Each scenario runs on loopback (on its own 127.N block), then, as root, in network
# namespaces (--netns); never more than two labs at once (two cores). Then, as root, each
# --ha scenario once (docs/ha.md: two controllers under corosync and Pacemaker), one at a
# time, alone: a cluster of two nodes keeps both cores busy. A lab exits 0 only when every
# host came online on every network and its scenario's promise held; this script exits 1 if
# any lab did not, after printing every lab's output. Under CI=true the --netns and --ha runs
# are required (not root: fail).
#
# Environment: PYTHON (default .venv/bin/python if present, else python3),
#              MTCE_BIN (default "$PYTHON mtce.py"; e.g. "python3 dist/mtce.pyz"),
#              CI_LAB_SCENARIOS (default "none pxeboot-loss controller-link restart burst"),
#              CI_LAB_HA_SCENARIOS (default "agent-kill node-kill swact split"; "" for none).
set -uo pipefail

cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
read -r -a MTCE <<< "${MTCE_BIN:-$PYTHON mtce.py}"
SCENARIOS=${CI_LAB_SCENARIOS:-none pxeboot-loss controller-link restart burst}
HA_SCENARIOS=${CI_LAB_HA_SCENARIOS-agent-kill node-kill swact split}
HA_DURATION=240                 # an upper bound: an --ha lab ends when its scenario does (~80 s)
declare -A DURATION=([none]=15 [pxeboot-loss]=75 [controller-link]=130 [restart]=30 [burst]=30)

OUT=$(mktemp -d "${TMPDIR:-/tmp}/ci-lab.XXXXXX")
LANES=()
cleanup() {
    local f
    for f in "$OUT"/*.pid; do [ -e "$f" ] && kill -INT "$(cat "$f")" 2>/dev/null; done
    wait
    rm -rf "$OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# lane KIND BLOCK SCENARIO...: run labs (KIND loopback, netns or ha) one after the other; each
# lab's output goes to $OUT/KIND-SCENARIO and its exit status to $OUT/KIND-SCENARIO.rc.
lane() {
    local kind=$1 block=$2 s args; shift 2
    for s in "$@"; do
        case $kind in
            ha) args=(--ha --scenario "$s" --duration "$HA_DURATION") ;;
            netns) args=(--netns --scenario "$s" --duration "${DURATION[$s]}") ;;
            *) args=(--scenario "$s" --duration "${DURATION[$s]}") ;;
        esac
        echo "ci_lab: mtce lab ${args[*]}"
        MTCE_LAB_BLOCK=127.$block "${MTCE[@]}" lab "${args[@]}" > "$OUT/$kind-$s" 2>&1 &
        echo $! > "$OUT/$kind-$s.pid"
        wait $!
        echo $? > "$OUT/$kind-$s.rc"
        rm -f "$OUT/$kind-$s.pid"
        block=$((block + 1))
    done
}

# phase KIND: at most two labs at once on two cores: the longest scenario in one lane, the
# others one after another in the second; then report every lab.
phase() {
    local kind=$1 s longest="" rest=() rc
    for s in $SCENARIOS; do
        if [ -z "$longest" ] || [ "${DURATION[$s]}" -gt "${DURATION[$longest]}" ]; then
            longest=$s
        fi
    done
    for s in $SCENARIOS; do [ "$s" = "$longest" ] || rest+=("$s"); done
    lane "$kind" 61 "$longest" & LANES+=($!)
    lane "$kind" 71 "${rest[@]}" & LANES+=($!)
    wait "${LANES[@]}"
    LANES=()
    report "$kind" $SCENARIOS
}

# report KIND SCENARIO...: print each lab's output; a lab that did not exit 0 is a failure.
report() {
    local kind=$1 s rc; shift
    for s in "$@"; do
        rc=$(cat "$OUT/$kind-$s.rc" 2>/dev/null || echo "none")
        echo "---- $kind $s: exit $rc"
        cat "$OUT/$kind-$s" 2>/dev/null
        if [ "$rc" != 0 ]; then FAILED+=("$kind $s (exit $rc)"); fi
    done
}

FAILED=()
phase loopback

if [ "$(id -u)" = 0 ] && command -v ip > /dev/null; then
    phase netns
elif [ "${CI:-}" = true ]; then
    FAILED+=("--netns (needs root and iproute2; required under CI=true)")
else
    echo "ci_lab: not root: --netns runs skipped"
fi

# phase_ha: each --ha scenario once, one after the other, nothing else running.
phase_ha() {
    local s left
    lane ha 0 $HA_SCENARIOS
    report ha $HA_SCENARIOS
    for s in $HA_SCENARIOS; do grep '^measured: ' "$OUT/ha-$s" >> "$OUT/ha-measured" 2>/dev/null; done
    # every --ha lab removes its namespaces and its cluster nodes' processes when it ends
    left=$(ip netns list | grep -c '^mtce-ha-')
    if [ "$left" != 0 ] || pgrep -x corosync > /dev/null || pgrep -x pacemakerd > /dev/null; then
        FAILED+=("--ha left $left namespaces or a corosync/pacemakerd process behind")
    fi
    if [ -s "$OUT/ha-measured" ]; then
        echo "ci_lab: --ha measured on this machine:"
        sed 's/^/  /' "$OUT/ha-measured"
    fi
}

if [ -n "$HA_SCENARIOS" ]; then
    if [ "$(id -u)" = 0 ]; then
        phase_ha
    elif [ "${CI:-}" = true ]; then
        FAILED+=("--ha (needs root; required under CI=true)")
    else
        echo "ci_lab: not root: --ha runs skipped"
    fi
fi

if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'ci_lab: FAILED: %s\n' "${FAILED[@]}"
    exit 1
fi
echo "ci_lab: every lab passed"
