"""`mtce bench`'s targets and its report: what each figure must reach, the table printed,
and which targets a run met."""

from __future__ import annotations

from dataclasses import dataclass

BUSY_WARN_PCT = 20.0            # other processes' share of the agent's core worth a warning


# -- targets (issue 7) -------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    key: str
    figure: str
    target: str
    met: object                 # callable(result) -> bool


TARGETS = (
    Target("agent_capacity", "agent capacity per core (1 / cost at the sustained rate)",
           ">= 250,000/s (<= 4 us)", lambda r: r["agent_capacity"] >= 250000),
    Target("ratio", "bare loop cost / agent cost, same offered load", ">= 0.4",
           lambda r: r["ratio"] >= 0.4),
    Target("floor_ratio", "floor cost / agent cost, same offered load (issue 25)", ">= 0.4",
           lambda r: r["floor_ratio"] >= 0.4),
    Target("agent_rate", "agent mtcAlive fully processed /s, flat out", ">= 50,000/s, 0 lost",
           lambda r: r["agent_rate"] >= 50000 and r["capacity_lost"] == 0
           and r["capacity_kernel_drops"] == 0),
    Target("lost", "lost at sustained rate (sent - processed, sequence, kernel)", "0",
           lambda r: r["lost"] == 0 and r["loss_counts_agree"]
           and r["sustained_offered_rate"] >= 0.98 * r["sustained_rate"]),
    Target("kernel_drops", "kernel receive-buffer drops, same phase", "0",
           lambda r: r["kernel_drops"] == 0),
    Target("cpu_pct_2000_hosts", "agent CPU at steady load, all of it delivered",
           "< 0.6% of a core", lambda r: r["cpu_pct_2000_hosts"] < 0.6
           and r["steady_rate"] >= 0.99 * r["steady_expected_rate"]),
    Target("steady_ratio", "floor CPU / agent CPU at the steady rate (issue 25)", ">= 0.5",
           lambda r: r["steady_ratio"] >= 0.5),
    Target("offline_detect_error", "offline detection, measured - configured",
           "within one audit period", lambda r: abs(r["offline_detect_error"])
           <= r["offline_audit_period"]),
    Target("pxeboot_detect_error", "pxeboot loss (200.003), measured - configured",
           "within one audit period", lambda r: abs(r["pxeboot_detect_error"])
           <= r["pxeboot_audit_period"]),
    Target("false_offline", "hosts falsely declared offline", "0",
           lambda r: r["false_offline"] == 0),
    Target("takeover_lost", "takeover: every host answers a new agent at once, x 3 networks",
           "0 lost, 0 kernel drops", lambda r: r["takeover_lost"] == 0
           and r["takeover_kernel_drops"] == 0),
    Target("client_rss_mib", "client RSS", "< 25 MiB", lambda r: r["client_rss_mib"] < 25),
    Target("client_idle_cpu_pct", "client idle CPU", "< 0.1% of a core",
           lambda r: r["client_idle_cpu_pct"] < 0.1),
    Target("first_mtcalive", "client start to first mtcAlive", "<= 1.2 s",
           lambda r: r["first_mtcalive"] <= 1.2),
    Target("pyz_startup", "zipapp `--version`", "< 150 ms",
           lambda r: r["pyz_startup"] is not None and r["pyz_startup"] < 0.150),
)


# -- report -----------------------------------------------------------------------------------

CONTRACT_KEYS = ("agent_rate", "agent_capacity", "agent_cost_us", "baseline_cost_us",
                 "baseline_rate", "ratio", "offered_rate", "lost", "kernel_drops",
                 "cpu_pct_2000_hosts", "steady_rate", "offline_detect_error",
                 "pxeboot_detect_error", "false_offline", "client_rss_mib",
                 "client_idle_cpu_pct", "first_mtcalive", "pyz_startup", "duration")


def met(r: dict) -> dict:
    return {t.key: bool(t.met(r)) for t in TARGETS}


def _measured(key: str, r: dict) -> str:
    if key == "agent_capacity":
        return (f"{r['agent_capacity']:,.0f}/s ({r['agent_cost_us']:.2f} us of CPU per "
                f"mtcAlive at {r['sustained_offered_rate']:,.0f}/s)")
    if key == "ratio":
        return (f"{r['ratio']:.2f} (bare loop {r['baseline_cost_us']:.2f} us per datagram at "
                f"{r['baseline_cost_offered_rate']:,.0f}/s, lost "
                f"{r['baseline_cost_lost']:,}; agent {r['agent_cost_us']:.2f} us)")
    if key == "floor_ratio":
        return (f"{r['floor_ratio']:.2f} (floor {r['floor_cost_us']:.2f} us per datagram, lost "
                f"{r['floor_lost']:,}; agent {r['agent_cost_us']:.2f} us)")
    if key == "steady_ratio":
        return (f"{r['steady_ratio']:.2f} (floor {r['floor_steady_cpu_pct']:.3f}% of a core, "
                f"lost {r['floor_steady_lost']:,}; agent {r['cpu_pct_2000_hosts']:.3f}%; "
                f"without its scrapes {r['cpu_pct_2000_hosts_unscraped']:.3f}%, ratio "
                f"{r['steady_ratio_unscraped']:.2f})")
    if key == "agent_rate":
        flag = ("; the bare loop lost nothing: generator-bound, so this is agent / offered"
                if r["baseline_generator_bound"] else "")
        return (f"{r['agent_rate']:,.0f}/s of {r['offered_rate']:,.0f}/s offered "
                f"({_bound(r['capacity_lost'])}; agent CPU {r['capacity_agent_cpu_pct']:.0f}%); "
                f"bare loop {r['baseline_rate']:,.0f}/s of {r['baseline_offered_rate']:,.0f}/s, "
                f"{100 * r['flat_out_ratio']:.0f}%{flag}")
    if key == "lost":
        return (f"{r['lost']:,} (by sequence {r['lost_by_seq']:,}) of {r['sustained_sent']:,} at "
                f"{r['sustained_offered_rate']:,.0f}/s for {r['sustained_s']:g} s")
    if key == "kernel_drops":
        return f"{r['kernel_drops']:,} (flat out {r['capacity_kernel_drops']:,})"
    if key == "cpu_pct_2000_hosts":
        return (f"{r['cpu_pct_2000_hosts']:.2f}% ({r['cpu_pct_2000_hosts_unscraped']:.2f}% "
                f"without the metrics scrapes; {r['cpu_s_per_1000']} CPU-s per 1,000 over "
                f"{r['steady_window_s']:g} s, {r['hosts']} hosts x 3 every {r['period_s']:g} s; "
                f"{r['steady_rate']:,.1f}/s processed of {r['steady_expected_rate']:,.1f}/s "
                f"expected)")
    if key == "offline_detect_error":
        return (f"{r['offline_detect_error']:+.3f} s ({r['offline_detect']:.3f} vs "
                f"{r['offline_configured']:g}; audit {r['offline_audit_period']:g} s)")
    if key == "pxeboot_detect_error":
        return (f"{r['pxeboot_detect_error']:+.3f} s ({r['pxeboot_detect']:.3f} vs "
                f"{r['pxeboot_configured']:g}; window {r['pxeboot_audit_period']:g} s)")
    if key == "false_offline":
        return f"{r['false_offline']} (false pxeboot loss {r['false_pxeboot_loss']})"
    if key == "takeover_lost":
        done = ("not all processed" if r["takeover_s"] is None
                else f"all processed {r['takeover_s']:.2f} s after the first")
        return (f"{r['takeover_lost']:,} lost, {r['takeover_kernel_drops']:,} kernel drops of "
                f"{r['takeover_sent']:,} sent in {1000 * r['takeover_burst_s']:.0f} ms, "
                f"{r['takeover_bind_s']:.2f} s after the agent's start; {done}; receive buffer "
                f"{r['takeover_rcvbuf']:,} bytes (wanted {r['takeover_rcvbuf_wanted']:,})")
    if key == "client_rss_mib":
        return f"{r['client_rss_mib']:.1f} MiB (peak {r['client_rss_peak_mib']:.1f})"
    if key == "client_idle_cpu_pct":
        return (f"{r['client_idle_cpu_pct']:.3f}% ({r['client_cpu_s_10min']:.2f} CPU-s per 10 "
                f"min, from a {r['client_idle_sample_s']:g} s sample)")
    if key == "first_mtcalive":
        nets = ", ".join(f"{k} {v:.2f}" for k, v in r["first_mtcalive_by_network"].items())
        return f"{r['first_mtcalive']:.3f} s (first per network: {nets})"
    if key == "pyz_startup":
        if r["pyz_startup"] is None:
            return f"n/a: {r['pyz_startup_note']}"
        return (f"{1000 * r['pyz_startup']:.0f} ms (bare python "
                f"{1000 * r['python_startup']:.0f} ms)")
    return str(r.get(key))


def _bound(lost: int) -> str:
    """Who set the pace: a receiver that lost nothing was held back by the generator."""
    return f"lost {lost:,}: receiver-bound" if lost else "lost 0: generator-bound"


def table(r: dict) -> str:
    ok = met(r)
    rows = [("figure", "target", "measured", "met")]
    for t in TARGETS:
        rows.append((t.figure, t.target, _measured(t.key, r), "yes" if ok[t.key] else "NO"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    load = " ".join(f"{x:g}" for x in r["loadavg_before"])
    lines = [(f"mtce bench: {r['hosts']} simulated hosts, {r['cpus']} CPUs, Python "
              f"{r['python']}, load average before {load}, run took {r['duration']:g} s")]
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[3])
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ---")
    lines.append(f"generator: {r['sustained_generator_cpu_pct']:.0f}% CPU at "
                 f"{r['sustained_rate']:,}/s, {r['capacity_generator_cpu_pct']:.0f}% flat out "
                 f"({r['offered_rate']:,.0f}/s); steady schedule at most "
                 f"{1000 * r['generator_max_late_s']:.0f} ms late")
    if r.get("scrapes"):
        lines.append(f"metrics endpoint on: scraped every {r['scrape_every_s']:g} s in the "
                     f"steady window ({r['scrapes']} scrapes, {r['scrapes_failed']} failed, "
                     f"included in its CPU); one scrape of {r['hosts']:,} hosts: "
                     f"{r['scrape_bytes'] / 1e6:.2f} MB in {1000 * (r['scrape_s'] or 0):.0f} ms,"
                     f" {1000 * (r['scrape_cpu_s'] or 0):.0f} ms of agent CPU")
    lines.append(f"other processes on the agent's core: steady {r['steady_others_pct']:.0f}%, "
                 f"sustained {r['sustained_others_pct']:.0f}%, capacity "
                 f"{r['capacity_others_pct']:.0f}%, bare loop at the sustained rate "
                 f"{r['baseline_cost_others_pct']:.0f}%, flat out "
                 f"{r['baseline_others_pct']:.0f}%")
    busiest = max(r[k] for k in ("steady_others_pct", "sustained_others_pct",
                                  "capacity_others_pct", "baseline_others_pct",
                                  "baseline_cost_others_pct"))
    if busiest > BUSY_WARN_PCT:
        lines.append(f"WARNING: other processes took up to {busiest:.0f}% of the agent's core: "
                     f"rates, losses and times above are not the agent's own")
    return "\n".join(lines)


