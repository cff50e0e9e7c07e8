"""Asking a real agent what it knows, as an operator does (`mtce hosts --json`, `mtce alarms
--json`), for the tests that run real daemons (test_loopback_*.py, test_netns_*.py)."""

from __future__ import annotations

import json
import subprocess


def ctl(mtce_cmd, cluster, *args, check=True):
    r = subprocess.run(mtce_cmd + list(args) + ["-c", cluster.agent_ini], capture_output=True,
                       text=True, timeout=20)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def hosts_json(mtce_cmd, cluster) -> dict:
    r = ctl(mtce_cmd, cluster, "hosts", "--json", check=False)
    if r.returncode != 0:
        return {}
    return {h["hostname"]: h for h in json.loads(r.stdout)}


def all_ok(mtce_cmd, cluster, names=None):
    hosts = hosts_json(mtce_cmd, cluster)
    names = names or cluster.names
    if not all(n in hosts for n in names):
        return None
    for n in names:
        h = hosts[n]
        if h["availability"] != "online":
            return None
        if any(h["networks"][net]["state"] != "ok" or h["networks"][net]["last_seen_s"] is None
               for net in ("mgmt", "cluster-host", "pxeboot")):
            return None
    return hosts


def alarms_json(mtce_cmd, cluster) -> list:
    r = ctl(mtce_cmd, cluster, "alarms", "--json", check=False)
    return json.loads(r.stdout) if r.returncode == 0 else []
