"""`mtce bench --quick --json` runs for real and reports consistent numbers (docs/contract.md §7).

No timing thresholds here: the figures depend on the machine; only their presence, their
types and the arithmetic that ties them together are checked.
"""

from __future__ import annotations

import json
import math
import subprocess

import pytest

pytestmark = pytest.mark.loopback

# docs/contract.md §7, in its order
CONTRACT_KEYS = ("agent_rate", "agent_capacity", "agent_cost_us", "baseline_cost_us",
                 "baseline_rate", "ratio", "offered_rate", "lost", "kernel_drops",
                 "cpu_pct_2000_hosts", "steady_rate", "offline_detect_error",
                 "pxeboot_detect_error", "false_offline", "client_rss_mib",
                 "client_idle_cpu_pct", "first_mtcalive", "pyz_startup", "duration")
COUNTS = ("lost", "kernel_drops", "false_offline", "sustained_sent", "sustained_processed",
          "lost_by_seq", "capacity_sent", "capacity_processed", "capacity_lost",
          "capacity_lost_by_seq", "capacity_kernel_drops", "baseline_lost", "takeover_sent",
          "takeover_processed", "takeover_lost", "takeover_kernel_drops", "floor_lost",
          "floor_steady_lost")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


@pytest.fixture(scope="module")
def result(mtce_cmd):
    proc = subprocess.run(mtce_cmd + ["bench", "--quick", "--json"], capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def test_every_contract_key_is_a_number(result):
    for key in CONTRACT_KEYS:
        assert key in result, key
        if key == "pyz_startup" and result[key] is None:
            assert result["pyz_startup_note"], "a missing zipapp figure says why"
            continue
        assert _number(result[key]), (key, result[key])
    for key in COUNTS:
        assert isinstance(result[key], int) and result[key] >= 0, (key, result[key])


def test_loss_is_sent_minus_processed_and_agrees_with_sequence_numbers_and_kernel(result):
    r = result
    assert r["lost"] == r["sustained_sent"] - r["sustained_processed"]
    assert r["lost_by_seq"] == r["lost"]
    assert r["kernel_drops"] == r["lost"]
    assert r["capacity_lost"] == r["capacity_sent"] - r["capacity_processed"]
    assert r["capacity_lost_by_seq"] == r["capacity_lost"]
    assert r["capacity_kernel_drops"] == r["capacity_lost"]


def test_the_ratio_is_bare_cost_over_agent_cost_at_the_same_offered_load(result):
    """docs/contract.md §7: CPU cost per datagram of both at the sustained rate; ratio = bare
    cost / agent cost; capacity = 1 / agent cost. The flat-out rates are a second figure."""
    r = result
    assert r["agent_cost_us"] == pytest.approx(
        1e6 * r["sustained_agent_cpu_s"] / r["sustained_processed"], rel=0.01)
    assert r["agent_capacity"] == pytest.approx(1e6 / r["agent_cost_us"], rel=0.01)
    assert r["ratio"] == pytest.approx(r["baseline_cost_us"] / r["agent_cost_us"], rel=0.01)
    assert r["baseline_cost_offered_rate"] == pytest.approx(r["sustained_offered_rate"],
                                                            rel=0.1)
    assert r["flat_out_ratio"] == pytest.approx(r["agent_rate"] / r["baseline_rate"], abs=1e-3)
    assert r["baseline_generator_bound"] == (r["baseline_lost"] == 0)
    assert r["loss_counts_agree"] == (r["lost"] == r["lost_by_seq"] == r["kernel_drops"])
    assert len(r["loadavg_before"]) == 3


def test_the_floor_is_the_baseline_the_agent_is_measured_against(result):
    """Issue 25 item 4: the floor (recvmmsg every 100 ms, only counting) at the sustained and
    the steady rate; floor_ratio = floor cost / agent cost, steady_ratio = floor CPU / agent
    CPU at the steady rate. The contract's ratio (the per-wake loop) stays as it is."""
    r = result
    assert _number(r["floor_cost_us"]) and r["floor_cost_us"] > 0
    assert r["floor_ratio"] == pytest.approx(r["floor_cost_us"] / r["agent_cost_us"], rel=0.01)
    assert _number(r["floor_steady_cpu_pct"]) and r["floor_steady_cpu_pct"] > 0
    assert r["steady_ratio"] == pytest.approx(
        r["floor_steady_cpu_pct"] / r["cpu_pct_2000_hosts"], rel=0.01)
    assert {"floor_ratio", "steady_ratio"} <= set(r["met"])
    # The steady figure without the scrapes' CPU, and its ratio (the floor is not scraped).
    assert 0 < r["cpu_pct_2000_hosts_unscraped"] <= r["cpu_pct_2000_hosts"]
    assert r["steady_ratio_unscraped"] == pytest.approx(
        r["floor_steady_cpu_pct"] / r["cpu_pct_2000_hosts_unscraped"], rel=0.01)


def test_the_steady_phase_scrapes_the_metrics_endpoint(result):
    """Issue 14: the steady CPU figure is taken with the endpoint on and scraped; the cost of
    one scrape of every host is reported."""
    r = result
    assert r["scrapes"] >= 2 and r["scrapes_failed"] == 0
    assert r["scrape_bytes"] > 200 * r["hosts"], "every host's series in one scrape"
    assert r["scrape_s"] > 0 and r["scrape_cpu_s"] >= 0


def test_rates_follow_from_the_counts(result):
    r = result
    assert r["agent_rate"] == pytest.approx(r["capacity_processed"] / r["capacity_s"], rel=0.01)
    assert r["offered_rate"] == pytest.approx(r["capacity_sent"] / r["capacity_s"], rel=0.01)
    assert 0 < r["agent_rate"] <= r["offered_rate"]
    assert 0 < r["baseline_rate"] <= r["baseline_offered_rate"]
    assert r["sustained_offered_rate"] == pytest.approx(r["sustained_sent"] / r["sustained_s"],
                                                        rel=0.01)
    assert r["steady_rate"] == pytest.approx(r["steady_processed"] / r["steady_window_s"],
                                             rel=0.02)
    assert r["cpu_s_per_1000"] == pytest.approx(
        r["cpu_pct_2000_hosts"] / 100 * r["steady_window_s"] / (r["steady_processed"] / 1000),
        rel=0.05, abs=1e-4)


def test_detections_and_client_figures_are_coherent(result):
    r = result
    assert r["offline_confirmed"] and r["pxeboot_confirmed"]
    assert r["offline_detect_error"] == pytest.approx(
        r["offline_detect"] - r["offline_configured"], abs=2e-3)
    assert r["pxeboot_detect_error"] == pytest.approx(
        r["pxeboot_detect"] - r["pxeboot_configured"], abs=2e-3)
    assert r["offline_detect"] > 0 and r["pxeboot_detect"] > 0
    assert r["first_mtcalive"] == min(r["first_mtcalive_by_network"].values())
    assert set(r["first_mtcalive_by_network"]) <= {"Mgmnt", "Clstr", "Pxeboot"}
    assert 0 < r["client_rss_mib"] <= r["client_rss_peak_mib"]
    assert r["client_idle_sample_s"] > 0
    assert r["client_cpu_s_10min"] == pytest.approx(
        r["client_idle_cpu_pct"] / 100 * 600, rel=0.01, abs=1e-3)


def test_the_takeover_burst_is_accounted_and_fits_a_buffer_sized_to_the_inventory(result):
    """Issue 23 item 15 (docs/bench.md, takeover): a new agent, and every live host answering
    it at once on every network; sent - processed is what was lost, the kernel's drops are
    part of it, and with the buffer the inventory wants the kernel drops nothing."""
    r = result
    assert r["takeover_sent"] == 3 * r["hosts"] - 4, "every stream but the 4 silenced ones"
    assert r["takeover_lost"] == r["takeover_sent"] - r["takeover_processed"]
    assert 0 <= r["takeover_kernel_drops"] <= r["takeover_lost"]
    assert r["takeover_burst_s"] > 0 and r["takeover_bind_s"] > 0
    assert r["takeover_rcvbuf_wanted"] >= r["hosts"] * 4096
    if r["takeover_rcvbuf"] >= r["takeover_rcvbuf_wanted"]:
        assert r["takeover_kernel_drops"] == 0 and r["takeover_lost"] == 0
        assert r["takeover_s"] is not None and r["takeover_s"] >= 0


def test_targets_and_table(result):
    from mtce import bench_report
    assert set(result["met"]) == {t.key for t in bench_report.TARGETS}
    assert all(isinstance(v, bool) for v in result["met"].values())
    text = bench_report.table(result)
    for t in bench_report.TARGETS:
        assert t.figure in text
    assert text.count("\n") >= len(bench_report.TARGETS) + 2


def test_scale_rows_divide_by_the_inventory_size():
    """`mtce bench --scale` (docs/bench.md, "Scale on paper"): each size's figures come from
    its totals, per 1,000 hosts by division, and the table shows them."""
    from mtce import bench_scale
    r = bench_scale.row(2000, 5.0, 30.0, 0.45, 36000, 40.0, 0, 1_200_000, 0.2, 1.0, 0.1)
    assert (r["offered_rate"], r["processed_rate"]) == (1200.0, 1200.0)
    assert (r["cpu_pct"], r["cpu_pct_per_1000_hosts"]) == (1.5, 0.75)
    assert r["rss_mib_per_1000_hosts"] == 20.0
    text = bench_scale.table([r, bench_scale.row(500, 5.0, 30.0, 0.15, 9000, 30.0, 3, 300_000,
                                                 0.05, 0.0, 0.1)])
    assert "2,000" in text and "1.50%" in text and "0.75%" in text and "1.20 MB" in text
    assert len(text.splitlines()) == 3


def test_a_multi_node_failure_of_every_host_is_one_fault_and_its_cost_is_reported(result):
    """Issue 27 item 5: every host's pxeboot stops at once, for longer than the 200.003 bound,
    then flows again: the agent entered one multi-node failure holding every live host (all
    but the silenced one and the one with its own 200.003), left it, raised no 200.003, and
    the bench says what that cost."""
    r = result
    assert r["mnfa_hosts"] == r["hosts"] - 2
    assert r["mnfa_alarms_200003"] == 0
    assert 0 < r["mnfa_enter_s"] and 0 < r["mnfa_exit_s"]
    assert _number(r["mnfa_cpu_pct"]) and r["mnfa_cpu_pct"] > 0
