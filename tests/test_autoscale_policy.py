"""The autoscaler's rules in the shared policy, table by table: bursts (panic), the stable
window before scaling in, clamps, the step limit, flapping and noisy input, scale to zero."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.policy import Action, Inputs, PolicyConfig, PolicyState, recommend

CONFIG = PolicyConfig(
    drain_target_seconds=10.0,
    scale_down_delay_seconds=20.0,  # the stable window
    panic_window_seconds=6.0,
    max_step=2,
    scale_to_zero_after_seconds=30.0,
)
#: 0.2 s tasks, 8 slots: one worker serves 40 tasks/s.
STEADY = Inputs(
    queue_length=0,
    active_workers=2,
    in_flight=4,
    arrival_rate=40.0,
    completion_rate=40.0,
    mean_processing_time=0.2,
    min_workers=1,
    max_workers=10,
)


def run(inputs: Inputs, state: PolicyState | None = None, now: float = 0.0):
    return recommend(inputs, state, now=now, config=CONFIG)


@pytest.mark.parametrize(
    ("inputs", "state", "now", "action", "desired"),
    [
        # Steady load that 2 workers carry: nothing changes.
        (STEADY, None, 0.0, Action.MAINTAIN, 2),
        # A burst: 2,000 queued on 2 workers: 6 workers of load, over 2x -> all 9 wanted at once, past the step.
        (replace(STEADY, queue_length=2000), None, 0.0, Action.SCALE_UP, 9),
        # More than wanted but under 2x: stepwise, 2 at a time.
        (replace(STEADY, arrival_rate=150.0), None, 0.0, Action.SCALE_UP, 4),
        # Clamps: never above max, never below min.
        (replace(STEADY, queue_length=100_000, active_workers=10), None, 0.0, Action.MAINTAIN, 10),
        (
            replace(STEADY, arrival_rate=0.0, in_flight=0, active_workers=1),
            PolicyState(low_since=0.0),
            100.0,
            Action.MAINTAIN,
            1,
        ),
        # Idle after a burst: inside the panic window nothing scales in ...
        (
            replace(STEADY, arrival_rate=0.0, in_flight=0, active_workers=10),
            PolicyState(low_since=0.0, panic_until=50.0),
            45.0,
            Action.MAINTAIN,
            10,
        ),
        # ... after it, and after the stable window, in steps of 2.
        (
            replace(STEADY, arrival_rate=0.0, in_flight=0, active_workers=10),
            PolicyState(low_since=0.0, panic_until=6.0),
            45.0,
            Action.SCALE_DOWN,
            8,
        ),
        # Before the stable window has passed: hold.
        (
            replace(STEADY, arrival_rate=0.0, in_flight=0, active_workers=10),
            PolicyState(low_since=30.0),
            45.0,
            Action.MAINTAIN,
            10,
        ),
    ],
)
def test_autoscale_table(inputs: Inputs, state: PolicyState | None, now: float, action: Action, desired: int) -> None:
    advice = run(inputs, state, now)
    assert (advice.action, advice.recommended_workers) == (action, desired), advice.reasons


def test_a_burst_opens_a_panic_window_that_blocks_scale_in() -> None:
    burst = run(replace(STEADY, queue_length=2000), None, 100.0)
    assert burst.state.panic_until == 106.0
    assert any("burst" in r for r in burst.reasons)
    # Two seconds later the queue is gone, load is low, the stable window even passed: still no scale-in.
    quiet = replace(STEADY, arrival_rate=0.0, in_flight=0, active_workers=10)
    held = run(quiet, replace(burst.state, low_since=0.0), 102.0)
    assert held.action is Action.MAINTAIN
    assert any("burst window" in r for r in held.reasons)
    later = run(quiet, replace(burst.state, low_since=0.0), 107.0)
    assert later.action is Action.SCALE_DOWN


def test_flapping_input_does_not_flap_the_decision() -> None:
    # Load alternating around one worker's worth, sampled every second for two minutes.
    state, decisions = None, []
    for second in range(120):
        rate = 32.0 if second % 2 else 44.0  # 0.8 / 1.1 workers of load
        advice = run(replace(STEADY, arrival_rate=rate, active_workers=2), state, float(second))
        state = advice.state
        decisions.append(advice.recommended_workers)
    assert set(decisions) == {2}


def test_noisy_rates_scale_in_only_after_a_stable_quiet_window() -> None:
    # Quiet but noisy arrivals (0-6/s on 4 workers), with one spike back to heavy load at 15 s.
    state, changes, workers = None, [], 4
    for second in range(60):
        rate = [0.0, 6.0, 2.0, 4.0][second % 4] if second != 15 else 200.0
        advice = run(replace(STEADY, arrival_rate=rate, in_flight=0, active_workers=workers), state, float(second))
        state = advice.state
        if advice.recommended_workers != workers:
            changes.append((second, workers, advice.recommended_workers))
            workers = advice.recommended_workers
    # The spike scales out; scale-in waits for 20 quiet seconds after it (and the burst window).
    assert changes[0][0] == 15
    assert changes[0][2] > 4
    assert all(second >= 15 + 20 for second, before, after in changes[1:] if after < before)


def test_scale_to_zero_after_the_idle_period_and_back_on_the_next_task() -> None:
    idle = replace(STEADY, arrival_rate=0.0, in_flight=0, active_workers=1, min_workers=1)
    first = run(idle, None, 0.0)
    assert first.recommended_workers == 1
    assert first.state.idle_since == 0.0
    waiting = run(idle, first.state, 29.0)
    assert waiting.recommended_workers == 1
    zero = run(idle, waiting.state, 30.0)
    assert (zero.action, zero.recommended_workers) == (Action.SCALE_DOWN, 0)
    assert any("scale to zero" in r for r in zero.reasons)
    # The next task: work waiting, no worker -> one comes back at once.
    cold = run(replace(idle, queue_length=1, active_workers=0), zero.state, 31.0)
    assert (cold.action, cold.recommended_workers, cold.urgency) == (Action.SCALE_UP, 1, "high")


def test_scale_to_zero_is_off_by_default() -> None:
    idle = replace(STEADY, arrival_rate=0.0, in_flight=0, active_workers=1)
    advice = recommend(idle, PolicyState(low_since=0.0, idle_since=0.0), now=10_000.0)
    assert advice.recommended_workers == 1


#: Idle on 2 workers (MIN_WORKERS=1) at 1,000 s, under an evaluator that started at 990 s, with the
#: state an earlier run left: a stable window, an idle timer, a burst window, all opened long ago.
IDLE_TWO = replace(STEADY, arrival_rate=0.0, in_flight=0, active_workers=2)
LEFT_OVER = PolicyState(low_since=0.0, idle_since=0.0, panic_until=5.0)
RESTARTED = replace(LEFT_OVER, started_at=990.0)
#: The stable window past the idle timer, so scaling to zero is what acts first.
ZERO_FIRST = replace(CONFIG, scale_down_delay_seconds=60.0)


@pytest.mark.parametrize(
    ("state", "now", "config", "action", "desired"),
    [
        # What an earlier run left counts for nothing: the window opens at the start (990 s) ...
        (RESTARTED, 1000.0, CONFIG, Action.MAINTAIN, 2),
        (RESTARTED, 1009.0, CONFIG, Action.MAINTAIN, 2),
        # ... and a whole stable window (20 s) after the start, it scales in.
        (RESTARTED, 1010.0, CONFIG, Action.SCALE_DOWN, 1),
        # A window this evaluator opened itself, after its start, counts from when it opened.
        (PolicyState(low_since=995.0, started_at=990.0), 1014.0, CONFIG, Action.MAINTAIN, 2),
        (PolicyState(low_since=995.0, started_at=990.0), 1015.0, CONFIG, Action.SCALE_DOWN, 1),
        # Without a start (the dashboard's display): the old windows count, the idle timer too.
        (LEFT_OVER, 1000.0, CONFIG, Action.SCALE_DOWN, 0),
        # The idle timer of scale to zero (30 s) also opens no earlier than the start.
        (RESTARTED, 1019.0, ZERO_FIRST, Action.MAINTAIN, 2),
        (RESTARTED, 1020.0, ZERO_FIRST, Action.SCALE_DOWN, 0),
    ],
)
def test_windows_open_no_earlier_than_the_evaluators_start(
    state: PolicyState, now: float, config: PolicyConfig, action: Action, desired: int
) -> None:
    advice = recommend(IDLE_TWO, state, now=now, config=config)
    assert (advice.action, advice.recommended_workers) == (action, desired), advice.reasons


def test_a_fresh_start_scales_in_one_stable_window_after_it_not_before() -> None:
    # An autoscaler restarted at 1,000 s on the state of a run that saw low load from 0 s, ticking
    # once a second (time is the input): the first scale-in comes exactly 20 s after its start.
    state, first_in = replace(LEFT_OVER, started_at=1000.0), None
    for tick in range(30):
        advice = run(IDLE_TWO, state, 1000.0 + tick)
        state = advice.state
        if advice.action is Action.SCALE_DOWN:
            first_in = tick
            break
    assert first_in == 20
    assert state.low_since == 1000.0  # the returned state holds the reopened window, not the old one
