"""When the agent reads its sockets (mtce/agent_pacing.py, docs/bench.md issue 13), with `now` in:
the tick grid the audit runs on, the pause at light load, the pause bounded by what may pile
up at higher rates, none after a full batch or when it would be too short to pay."""

from __future__ import annotations

import pytest

from mtce.agent_pacing import COALESCE_MAX_PILE, COALESCE_MIN_S, Pacer


@pytest.mark.parametrize("period, tick", [(0.05, 0.05), (0.1, 0.1), (0.25, 0.25 / 3),
                                          (1.0, 0.1), (0.3, 0.1)])
def test_the_grid_divides_the_audit_period_and_is_at_most_100_ms(period, tick):
    p = Pacer(period, 0.0)
    assert p.tick_s() == pytest.approx(tick)
    assert period / p.tick_s() == pytest.approx(round(period / p.tick_s()))
    assert p.next_tick(1000.0) == pytest.approx(1000.0 + tick)
    assert p.next_tick(1000.0 + tick / 2) == pytest.approx(1000.0 + tick)


def test_at_light_load_the_pause_ends_on_the_next_tick():
    p = Pacer(0.1, 1000.0)
    p.count(1001.0, 1200)                     # 1,200 a second
    assert p.rate == pytest.approx(1200)
    assert p.pause(1001.03) == pytest.approx(0.07)


def test_at_a_higher_rate_the_pause_is_the_time_the_pile_takes():
    p = Pacer(0.1, 1000.0)
    p.count(1001.0, 20000)
    assert p.pause(1001.0) == pytest.approx(COALESCE_MAX_PILE / 20000)
    p.count(1002.0, 20000 + 60000)            # 60,000 a second: under COALESCE_MIN_S
    assert COALESCE_MAX_PILE / 60000 < COALESCE_MIN_S
    assert p.pause(1002.0) == 0.0


def test_after_a_full_batch_one_turn_without_a_pause():
    p = Pacer(0.1, 1000.0)
    p.saturated = True
    assert p.pause(1000.02) == 0.0
    assert p.pause(1000.02) == pytest.approx(0.08)


def test_the_rate_is_sampled_over_half_a_second_at_least_and_a_reload_moves_the_grid():
    p = Pacer(0.1, 1000.0)
    p.count(1000.2, 5000)                     # too short a sample: kept
    assert p.rate == 0.0
    p.count(1000.5, 5000)
    assert p.rate == pytest.approx(10000)
    p.reconfigure(0.05)
    assert p.tick_s() == pytest.approx(0.05)


def test_a_load_step_shortens_the_next_pause_at_once():
    """Attack on issue 25: the rate sampled at audits (over half a second at least) learns of a
    step from idle too late; what the last turn read, over the time since the turn before,
    bounds the next pause at once, and a quiet turn does not lengthen it beyond the tick."""
    p = Pacer(0.1, 1000.0)
    p.max_pile = 3640
    assert p.pause(1000.0) == pytest.approx(0.1)      # idle: the whole tick
    p.read(7000)                                      # 70,000 a second arrived meanwhile
    assert p.pause(1000.1) == pytest.approx(3640 / 70000)
    p.read(100)
    assert p.pause(1000.2) == pytest.approx(0.1), "back on the grid once the step is over"


@pytest.mark.parametrize("period, audit, window, long_s", [
    (0.1, 9.0, 10.0, 1.0), (0.1, 2.0, 6.0, 1.0), (0.1, 9.0, 2.5, 0.5), (0.1, 9.0, 1.5, 0.5),
    (0.1, 9.0, 0.7, 0.7), (0.05, 1.0, 1.0, 0.5), (0.1, 0.3, 10.0, 0.1), (0.1, 9.0, 0.25, 0.1)])
def test_the_long_grid_is_fine_ticks_that_divide_the_pxeboot_window(period, audit, window,
                                                                      long_s):
    """Issue 25 item 3: at most a second and half an offline audit, a whole number of fine
    ticks, and a divisor of pxeboot_mtcalive_window, so that every window ends on a read."""
    p = Pacer(period, 0.0, audit, window)
    assert p.long_s() == pytest.approx(long_s)
    p.long = True
    now = 1000.0 + long_s / 3
    nxt = p.next_tick(now)
    assert 0 < nxt - now <= long_s + 1e-9
    assert nxt / long_s == pytest.approx(round(nxt / long_s))
