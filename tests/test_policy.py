"""The scaling policy, table by table: throughput, backlog, bounds, hysteresis, explanations."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.policy import Action, Inputs, PolicyConfig, PolicyState, Recommendation, recommend

IDLE = Inputs(queue_length=0, active_workers=2)
#: 8 slots per worker at 1 s per task: one worker serves 8 tasks/s.
ONE_SECOND = Inputs(queue_length=0, active_workers=2, mean_processing_time=1.0, completion_rate=1.0)


@pytest.mark.parametrize(
    ("inputs", "state", "now", "action", "desired", "urgency"),
    [
        # Nothing to do: down to min, but only after the scale-down delay (30 s).
        (IDLE, None, 0.0, Action.MAINTAIN, 2, "low"),
        (IDLE, PolicyState(low_since=0.0), 29.0, Action.MAINTAIN, 2, "low"),
        (IDLE, PolicyState(low_since=0.0), 30.0, Action.SCALE_DOWN, 1, "low"),
        (replace(IDLE, active_workers=1), None, 0.0, Action.MAINTAIN, 1, "low"),
        (replace(IDLE, active_workers=1, min_workers=0), PolicyState(low_since=0.0), 60.0, Action.SCALE_DOWN, 0, "low"),
        # No worker at all and work waiting: up at once, urgently.
        (Inputs(queue_length=5, active_workers=0), None, 0.0, Action.SCALE_UP, 1, "high"),
        # Below min: up to min, no hurry.
        (Inputs(queue_length=0, active_workers=0, min_workers=2), None, 0.0, Action.SCALE_UP, 2, "medium"),
        # 14/s arriving, 8/s per worker: 1.75 workers of load, 3 at 75 % utilisation; 2 keep up: medium.
        (replace(ONE_SECOND, arrival_rate=14.0), None, 0.0, Action.SCALE_UP, 3, "medium"),
        # 20/s: 2.5 workers of load, 4 wanted; 2 workers serve 16/s, the queue will grow: high.
        (replace(ONE_SECOND, arrival_rate=20.0), None, 0.0, Action.SCALE_UP, 4, "high"),
        # ... plus 600 queued to drain within 30 s: 2.5 more workers of load, 7 in all; backlog grows: high.
        (replace(ONE_SECOND, arrival_rate=20.0, queue_length=600), None, 0.0, Action.SCALE_UP, 7, "high"),
        # Clamped to max.
        (replace(ONE_SECOND, arrival_rate=100.0), None, 0.0, Action.SCALE_UP, 8, "high"),
        (replace(ONE_SECOND, arrival_rate=100.0, active_workers=8), None, 0.0, Action.MAINTAIN, 8, "low"),
        # Hysteresis band: 2.5 workers of load on 4 or 5 workers is inside the band: stay.
        (replace(ONE_SECOND, arrival_rate=20.0, active_workers=4), None, 0.0, Action.MAINTAIN, 4, "low"),
        (replace(ONE_SECOND, arrival_rate=20.0, active_workers=5), None, 0.0, Action.MAINTAIN, 5, "low"),
        # ... on 6 it is below: down to 5 (under 60 %) once the delay has passed.
        (replace(ONE_SECOND, arrival_rate=20.0, active_workers=6), PolicyState(0.0), 45.0, Action.SCALE_DOWN, 5, "low"),
        # Saturated workers finishing slower than their processing time promises: trust the measured rate.
        # (116 to finish + 4/s on 2/s per worker wants 6; not a burst (< 2x), so one step of 2: 4.)
        (
            Inputs(
                queue_length=100,
                active_workers=2,
                in_flight=16,
                arrival_rate=4.0,
                completion_rate=4.0,
                mean_processing_time=0.1,
            ),
            None,
            0.0,
            Action.SCALE_UP,
            4,
            "high",
        ),
        # Instant tasks (echo) at 100/s: one worker does it.
        (
            replace(ONE_SECOND, arrival_rate=100.0, mean_processing_time=0.0005),
            PolicyState(0.0),
            30.0,
            Action.SCALE_DOWN,
            1,
            "low",
        ),
        # No completion measured yet but the slots are full and more waits: estimate from slots;
        # 5.75 workers of load on 2 is a burst: all at once, urgently.
        (Inputs(queue_length=30, active_workers=2, in_flight=16), None, 0.0, Action.SCALE_UP, 8, "high"),
    ],
)
def test_policy_table(
    inputs: Inputs, state: PolicyState | None, now: float, action: Action, desired: int, urgency: str
) -> None:
    advice = recommend(inputs, state, now=now)
    assert (advice.action, advice.recommended_workers, advice.urgency) == (action, desired, urgency), advice.reasons
    assert advice.current_workers == inputs.active_workers
    assert advice.reasons
    assert all(isinstance(r, str) and r for r in advice.reasons)
    # Re-asking with the state it returned, at the same moment, gives the same answer (readers agree).
    again = recommend(inputs, advice.state, now=now)
    assert (again.action, again.recommended_workers, again.reasons) == (advice.action, desired, advice.reasons)


def _as_dict(advice: Recommendation) -> dict[str, object]:
    return advice.to_dict()


def test_reasons_carry_the_numbers() -> None:
    advice = recommend(replace(ONE_SECOND, arrival_rate=20.0, queue_length=600))
    text = " ".join(advice.reasons)
    assert "20.0/s" in text
    assert "8.00/s" in text
    assert "600 queued" in text
    assert advice.numbers["per_worker_throughput"] == 8.0
    assert advice.numbers["load_workers"] == 5.0
    body = _as_dict(advice)
    assert body["desired_workers"] == body["recommended_workers"] == 7
    assert body["reason"] == "; ".join(advice.reasons)
    assert "state" not in body


def test_scale_down_explains_the_wait() -> None:
    advice = recommend(IDLE, PolicyState(low_since=100.0), now=112.0)
    assert advice.action is Action.MAINTAIN
    assert any("waits for 30 s of low load (12 s so far)" in r for r in advice.reasons)


def test_clamp_is_explained() -> None:
    advice = recommend(replace(ONE_SECOND, arrival_rate=100.0))
    assert any("kept within 1..8 workers" in r for r in advice.reasons)


def test_high_error_rate_is_called_out() -> None:
    advice = recommend(replace(ONE_SECOND, error_rate=0.8, completion_rate=2.0))
    assert any("80% of recent tasks failed" in r for r in advice.reasons)
    calm = recommend(replace(ONE_SECOND, error_rate=0.1, completion_rate=2.0))
    assert not any("failed" in r for r in calm.reasons)


def test_load_rising_again_resets_the_scale_down_timer() -> None:
    low = recommend(IDLE, PolicyState(), now=0.0)
    assert low.state.low_since == 0.0
    busy = recommend(replace(ONE_SECOND, arrival_rate=11.0), low.state, now=10.0)  # 1.4 workers: inside the band
    assert busy.action is Action.MAINTAIN
    assert busy.state.low_since is None
    later = recommend(IDLE, busy.state, now=35.0)
    assert later.action is Action.MAINTAIN  # the 30 s start over at 35 s
    assert later.state.low_since == 35.0


def test_advice_does_not_flap_around_a_boundary() -> None:
    """Load oscillating around a threshold every second for 5 minutes, the advice followed each
    time (as an autoscaler would): one step up, then steady, never up-down-up."""
    state = PolicyState()
    workers = 3
    changes = []
    for second in range(300):
        rate = 19.0 if second % 2 else 13.0  # 2.4 / 1.6 workers of load: either side of 75 % of 3
        advice = recommend(replace(ONE_SECOND, active_workers=workers, arrival_rate=rate), state, now=float(second))
        state = advice.state
        if advice.recommended_workers != workers:
            changes.append((second, advice.action))
            workers = advice.recommended_workers
    assert changes == [(1, Action.SCALE_UP)]
    assert workers == 4


def test_a_dip_shorter_than_the_delay_never_scales_down() -> None:
    state = PolicyState()
    for second in range(120):
        # 20 s idle out of every 25: never 30 s in a row.
        rate = 0.0 if second % 25 < 20 else 20.0
        advice = recommend(replace(ONE_SECOND, active_workers=4, arrival_rate=rate), state, now=float(second))
        state = advice.state
        assert advice.action is Action.MAINTAIN, (second, advice.reasons)


def test_config_is_an_input() -> None:
    eager = PolicyConfig(scale_down_delay_seconds=0.0)
    assert recommend(IDLE, config=eager).action is Action.SCALE_DOWN
    tight = PolicyConfig(drain_target_seconds=10.0)
    assert recommend(replace(ONE_SECOND, queue_length=600), config=tight).recommended_workers == 8


def test_state_round_trips() -> None:
    assert PolicyState.from_dict(PolicyState(low_since=12.5).to_dict()) == PolicyState(low_since=12.5)
    started = PolicyState(low_since=1.0, panic_until=2.0, idle_since=3.0, started_at=4.0)
    assert PolicyState.from_dict(started.to_dict()) == started
    assert PolicyState.from_dict(None) == PolicyState()
