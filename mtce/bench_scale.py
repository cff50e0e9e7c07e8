"""`mtce bench --scale`: the agent's steady cost at several inventory sizes (docs/bench.md,
"Scale on paper"). For each size a fresh agent and generator: every simulated host on three
networks every 5 s, ready events once a minute, the pxeboot monitor running (no real
client, no silenced host); then a steady window measured from /proc (CPU, RSS), the kernel's
drop counter of the agent's sockets, the `hosts` control reply (bytes and time), and the
longest audit turn the agent noticed.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
import time

from mtce import cli_ctl
from mtce.bench_lab import FULL, BenchError, CoreMeter, _say, proc_cpu_s, proc_status_mib, udp_drops
from mtce.cli import say

SIZES = (500, 2000, 10000)
WINDOW_S = 30.0
QUICK_SIZES, QUICK_WINDOW_S = (100, 400), 3.0


def measure(hosts: int, window_s: float, quick: bool) -> dict:
    from mtce import bench
    from mtce.bench_lab import QUICK
    base = QUICK if quick else FULL
    plan = dataclasses.replace(base, hosts=hosts)
    root = tempfile.mkdtemp(prefix="mtce-bench-scale-")
    b = None
    try:
        b = bench.Bench(plan, root)
        b.start_agent()
        b.warm_up()
        pid = b.agent.pid
        rx = list(b.layout.agent_rx.values())
        count0, cpu0, drops0 = b.processed(), proc_cpu_s(pid), udp_drops(rx)
        core = CoreMeter(min(b.agent_cpus))
        t0 = time.monotonic()
        time.sleep(window_s)
        wall = time.monotonic() - t0
        cpu = proc_cpu_s(pid) - cpu0
        count = b.processed() - count0
        drops = udp_drops(rx) - drops0
        others = max(0.0, 100.0 * (core.busy_s() - cpu) / wall)
        t = time.monotonic()
        reply = cli_ctl.request(b.layout.agent_socket, {"cmd": "hosts"}, timeout=60)
        reply_s = time.monotonic() - t
        reply_bytes = len(json.dumps(reply, separators=(",", ":")))
        status = b.ctl("status")
        return row(hosts, plan.period_s, wall, cpu, count, proc_status_mib(pid), drops,
                   reply_bytes, reply_s, others, status.get("max_loop_lag_s"))
    finally:
        if b is not None:
            b.close()
        shutil.rmtree(root, ignore_errors=True)


def row(hosts: int, period_s: float, wall: float, cpu_s: float, count: int, rss_mib: float,
        drops: int, reply_bytes: int, reply_s: float, others_pct: float, lag_s) -> dict:
    """One size's figures from what was measured; per 1,000 hosts by simple division."""
    return {
        "hosts": hosts,
        "offered_rate": round(3 * hosts / period_s, 1),
        "processed_rate": round(count / wall, 1),
        "cpu_pct": round(100.0 * cpu_s / wall, 3),
        "cpu_pct_per_1000_hosts": round(100.0 * cpu_s / wall / (hosts / 1000.0), 3),
        "rss_mib": round(rss_mib, 1),
        "rss_mib_per_1000_hosts": round(rss_mib / (hosts / 1000.0), 2),
        "kernel_drops": drops,
        "hosts_reply_bytes": reply_bytes,
        "hosts_reply_s": round(reply_s, 3),
        "max_loop_lag_s": lag_s,
        "others_pct": round(others_pct, 1),
        "window_s": round(wall, 1),
    }


def table(rows: list) -> str:
    head = ("hosts", "mtcAlive/s", "agent CPU", "per 1,000 hosts", "RSS", "per 1,000 hosts",
            "kernel drops", "`hosts` reply", "others on its core")
    lines = [head]
    for r in rows:
        lines.append((f"{r['hosts']:,}", f"{r['processed_rate']:,.0f} of {r['offered_rate']:,.0f}",
                      f"{r['cpu_pct']:.2f}%", f"{r['cpu_pct_per_1000_hosts']:.2f}%",
                      f"{r['rss_mib']:.1f} MiB", f"{r['rss_mib_per_1000_hosts']:.1f} MiB",
                      f"{r['kernel_drops']:,}",
                      f"{r['hosts_reply_bytes'] / 1e6:.2f} MB in {r['hosts_reply_s']:.2f} s",
                      f"{r['others_pct']:.0f}%"))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in lines)


def main(args) -> int:
    quick = getattr(args, "quick", False)
    sizes, window = (QUICK_SIZES, QUICK_WINDOW_S) if quick else (SIZES, WINDOW_S)
    rows = []
    try:
        for n in sizes:
            _say(f"scale: {n:,} hosts, a {window:g} s steady window")
            rows.append(measure(n, window, quick))
    except (BenchError, cli_ctl.CtlError) as err:
        print(f"mtce bench: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(table(rows), file=sys.stderr)
        say(json.dumps({"scale": rows}, indent=1))
    else:
        say(table(rows))
    return 0
