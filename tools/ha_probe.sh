#!/bin/bash
# tools/ha_probe.sh: can real corosync and pacemaker run as a two-node cluster in network
# namespaces on this machine? (root; the first step of `mtce lab --ha`, issue 15.)
#
# Two namespaces joined by a veth pair; in each, a private mount, UTS and PID namespace with
# its own /run, /dev/shm, /var/lib/corosync and /var/lib/pacemaker (corosync 3.1.7 has no -l
# lock-file option, so /run must be private), corosync (knet, two_node quorum, token 5 s for a
# 2-core host) and pacemakerd. Prints what crm_mon sees from the first node, then removes
# everything it made. Exit 0 when both nodes are online with a DC.
set -u
PREFIX=mtce-haprobe
WORK=$(mktemp -d /tmp/mtce-haprobe.XXXXXX)
cleanup() {
    for n in 1 2; do
        ip netns pids "$PREFIX$n" 2>/dev/null | xargs -r kill -9 2>/dev/null
        ip netns del "$PREFIX$n" 2>/dev/null
    done
    ip link del "${PREFIX}a" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] || { echo "ha_probe: needs root" >&2; exit 2; }
for tool in corosync pacemakerd crm_mon; do
    command -v "$tool" >/dev/null || { echo "ha_probe: needs $tool (apt-get install corosync pacemaker)" >&2; exit 2; }
done
cleanup
WORK=$(mktemp -d /tmp/mtce-haprobe.XXXXXX)
ip netns add "${PREFIX}1" && ip netns add "${PREFIX}2"
ip link add "${PREFIX}a" type veth peer name "${PREFIX}b"
ip link set "${PREFIX}a" netns "${PREFIX}1"
ip link set "${PREFIX}b" netns "${PREFIX}2"
for n in 1 2; do
    side=$([ "$n" = 1 ] && echo a || echo b)
    ip -n "$PREFIX$n" addr add "10.231.0.$n/24" dev "$PREFIX$side"
    ip -n "$PREFIX$n" link set "$PREFIX$side" up
    ip -n "$PREFIX$n" link set lo up
done
for n in 1 2; do
    d="$WORK/n$n"
    mkdir -p "$d/lib" "$d/pcmk/cib" "$d/pcmk/pengine" "$d/pcmk/blackbox" "$d/pcmk/cores"
    chown -R hacluster:haclient "$d/pcmk"
    cat > "$d/corosync.conf" <<CONF
totem {
  version: 2
  cluster_name: mtce-lab
  transport: knet
  token: 5000
  crypto_cipher: none
  crypto_hash: none
}
nodelist {
  node {
    ring0_addr: 10.231.0.1
    name: controller-0
    nodeid: 1
  }
  node {
    ring0_addr: 10.231.0.2
    name: controller-1
    nodeid: 2
  }
}
quorum {
  provider: corosync_votequorum
  two_node: 1
}
logging {
  to_stderr: yes
  to_syslog: no
  to_logfile: no
}
CONF
    ip netns exec "$PREFIX$n" unshare --mount --uts --pid --fork --mount-proc bash -c "
        mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /dev/shm &&
        mount --bind '$d/lib' /var/lib/corosync && mount --bind '$d/pcmk' /var/lib/pacemaker &&
        mkdir -p /run/corosync /run/crm /run/pacemaker &&
        chown hacluster:haclient /run/crm /run/pacemaker &&
        hostname controller-$((n - 1)) &&
        { corosync -f -c '$d/corosync.conf' > '$d/corosync.log' 2>&1 & sleep 4; exec pacemakerd -f; }" \
        > "$d/pacemaker.log" 2>&1 &
    disown
done
pid=""
for _ in $(seq 1 60); do            # at most 60 s for both nodes and a DC
    sleep 1
    for p in $(ip netns pids "${PREFIX}1" 2>/dev/null); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = pacemakerd ] && pid=$p
    done
    [ -n "$pid" ] || continue
    out=$(nsenter -t "$pid" -n -m -u -p crm_mon -1 2>&1)
    if echo "$out" | grep -q "Online: \[ controller-0 controller-1 \]" &&
       echo "$out" | grep -q "Current DC: controller-"; then
        echo "$out"
        echo "ha_probe: ok: corosync and pacemaker run as a two-node cluster in namespaces"
        exit 0
    fi
done
echo "ha_probe: the cluster did not form in 60 s; last crm_mon:"; echo "${out:-none}"
tail -20 "$WORK"/n1/*.log
exit 1
