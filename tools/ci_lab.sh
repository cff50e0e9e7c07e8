#!/usr/bin/env bash
# tools/ci_lab.sh: `mtce lab --duration` for every scenario, as the end-to-end test of CI.
#
# Each scenario runs on loopback (on its own 127.N block, all at once), then, as root, in
# network namespaces (--netns). A lab exits 0 only when every host came online on every
# network and its scenario reached its end; this script exits 1 if any lab did not, after
# printing every lab's output. Under CI=true the --netns runs are required (not root: fail).
#
# Environment: PYTHON (default .venv/bin/python if present, else python3),
#              MTCE_BIN (default "$PYTHON mtce.py"; e.g. "python3 dist/mtce.pyz"),
#              CI_LAB_SCENARIOS (default "none pxeboot-loss restart burst").
set -uo pipefail

cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
read -r -a MTCE <<< "${MTCE_BIN:-$PYTHON mtce.py}"
SCENARIOS=${CI_LAB_SCENARIOS:-none pxeboot-loss restart burst}
declare -A DURATION=([none]=15 [pxeboot-loss]=75 [restart]=30 [burst]=30)

OUT=$(mktemp -d "${TMPDIR:-/tmp}/ci-lab.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null; done
    wait
    rm -rf "$OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME ARGS...: one lab in the background, its output in $OUT/NAME.
start() {
    local name=$1; shift
    echo "ci_lab: mtce lab $* &"
    "${MTCE[@]}" lab "$@" > "$OUT/$name" 2>&1 &
    PIDS+=($!)
    NAMES+=("$name")
}

# collect: wait for every lab started since the last collect; report each.
collect() {
    local i rc
    for i in "${!PIDS[@]}"; do
        wait "${PIDS[$i]}"; rc=$?
        echo "---- ${NAMES[$i]}: exit $rc"
        cat "$OUT/${NAMES[$i]}"
        if [ "$rc" != 0 ]; then FAILED+=("${NAMES[$i]} (exit $rc)"); fi
    done
    PIDS=(); NAMES=()
}

FAILED=()
NAMES=()
block=60
for s in $SCENARIOS; do
    block=$((block + 1))
    MTCE_LAB_BLOCK=127.$block start "loopback-$s" --scenario "$s" --duration "${DURATION[$s]}"
done
collect

if [ "$(id -u)" = 0 ] && command -v ip > /dev/null; then
    for s in $SCENARIOS; do
        start "netns-$s" --netns --scenario "$s" --duration "${DURATION[$s]}"
    done
    collect
elif [ "${CI:-}" = true ]; then
    FAILED+=("--netns (needs root and iproute2; required under CI=true)")
else
    echo "ci_lab: not root: --netns runs skipped"
fi

if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'ci_lab: FAILED: %s\n' "${FAILED[@]}"
    exit 1
fi
echo "ci_lab: every lab passed"
