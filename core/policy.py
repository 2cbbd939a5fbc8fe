"""The scaling recommendation: a pure function of a few numbers, table-tested.

Throughput model. One worker runs `concurrency` tasks at once; at a mean of `s` seconds per
task it serves `concurrency / s` tasks per second (or less, when the workers are saturated
and the measured completion rate says so). The load, in workers, is

    arrivals / per_worker  +  queue_length / (per_worker * drain_target_seconds)

i.e. enough workers to keep up with what arrives and to drain the backlog within the target.
The advice is the load divided by a target utilisation, rounded up, within min..max.

Hysteresis, so the advice does not flap: scaling up is advised at once; scaling down only when
one worker fewer would still run under `scale_down_utilization` (a band below the target) and
that has held for `scale_down_delay_seconds`, counted from no earlier than the evaluator's own
start (`PolicyState.started_at`), so a window an earlier run left open does not count. The clock
is an input (`now`) and the only memory is the `PolicyState` passed in and returned: no globals,
no clock reads, so every caller given the same sample and state gets the same advice, and
re-evaluating with the returned state at the same `now` gives the same answer again.

The autoscaler acts on the same advice, with three more rules (all in this function, so the
dashboard shows exactly what the autoscaler will do):
- panic: when the load asks for more than `panic_threshold` times the running workers (or work
  waits and none runs), scale out at once, past `max_step`, and scale in not at all for
  `panic_window_seconds`;
- max step: otherwise change by at most `max_step` workers per decision;
- scale to zero (opt in): no work queued, running or arriving for `scale_to_zero_after_seconds`
  -> 0 workers; the next task is waiting work with no worker, which is a panic: one comes back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"
    MAINTAIN = "maintain"


class Urgency(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True)
class Inputs:
    queue_length: int
    active_workers: int
    in_flight: int = 0
    #: tasks accepted per second (smoothed over a few seconds by the sampler)
    arrival_rate: float = 0.0
    #: tasks finished (completed or failed) per second
    completion_rate: float = 0.0
    #: mean processing time of recently finished tasks, seconds; None when nothing finished yet
    mean_processing_time: float | None = None
    #: failed / finished among recently finished tasks, 0..1
    error_rate: float = 0.0
    #: tasks one worker runs at once
    concurrency_per_worker: int = 8
    min_workers: int = 1
    max_workers: int = 8


@dataclass(frozen=True)
class PolicyConfig:
    target_utilization: float = 0.75
    #: scale down only if one worker fewer would run at or under this utilisation
    scale_down_utilization: float = 0.6
    drain_target_seconds: float = 30.0
    scale_down_delay_seconds: float = 30.0
    #: an error rate at or over this is called out: more workers will not fix failing tasks
    high_error_rate: float = 0.5
    #: load over this many times the running workers is a burst: scale out at once
    panic_threshold: float = 2.0
    #: after a burst, no scaling in for this long
    panic_window_seconds: float = 6.0
    #: most workers added or removed by one decision outside a burst
    max_step: int = 2
    #: 0 workers after this long with nothing to do; 0 turns scale-to-zero off
    scale_to_zero_after_seconds: float = 0.0


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between evaluations."""

    #: since when (the caller's clock, seconds) the load has allowed fewer workers; None if it does not
    low_since: float | None = None
    #: no scaling in before this time (set by a burst)
    panic_until: float | None = None
    #: since when nothing has been queued, running or arriving
    idle_since: float | None = None
    #: when the evaluator holding this state started: no window (stable, idle) opens before it,
    #: so what an earlier run saw (its state is kept in Redis) never counts towards scaling in
    started_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def opened(self, since: float | None, now: float) -> float:
        """When a window seen open since `since` (None: not yet) counts from: not before the start."""
        opened = now if since is None else since
        return opened if self.started_at is None else max(opened, self.started_at)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> PolicyState:
        if not raw:
            return cls()

        def number(name: str) -> float | None:
            value = raw.get(name)
            return float(value) if value is not None else None

        return cls(
            low_since=number("low_since"),
            panic_until=number("panic_until"),
            idle_since=number("idle_since"),
            started_at=number("started_at"),
        )


@dataclass(frozen=True)
class Recommendation:
    action: Action
    current_workers: int
    recommended_workers: int
    urgency: str
    reasons: list[str] = field(default_factory=list)
    #: the figures behind the reasons (rates, per-worker throughput, load, utilisation)
    numbers: dict[str, float | None] = field(default_factory=dict)
    state: PolicyState = field(default_factory=PolicyState)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape every endpoint shows (the state stays internal)."""
        return {
            "action": self.action.value,
            "current_workers": self.current_workers,
            "recommended_workers": self.recommended_workers,
            # recommended_workers under the name the seed's clients read
            "desired_workers": self.recommended_workers,
            "urgency": self.urgency,
            "reason": "; ".join(self.reasons),
            "reasons": list(self.reasons),
            "numbers": dict(self.numbers),
        }


DEFAULT_CONFIG = PolicyConfig()


def _fmt(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def recommend(
    i: Inputs, state: PolicyState | None = None, *, now: float = 0.0, config: PolicyConfig = DEFAULT_CONFIG
) -> Recommendation:
    state = state or PolicyState()
    current = max(0, i.active_workers)
    lo, hi = max(0, i.min_workers), max(i.min_workers, i.max_workers)
    slots = max(1, i.concurrency_per_worker)
    reasons: list[str] = []
    numbers: dict[str, float | None] = {
        "queue_length": i.queue_length,
        "in_flight": i.in_flight,
        "arrival_rate": round(i.arrival_rate, 3),
        "completion_rate": round(i.completion_rate, 3),
        "mean_processing_time": None if i.mean_processing_time is None else round(i.mean_processing_time, 4),
        "error_rate": round(i.error_rate, 3),
        "concurrency_per_worker": slots,
    }
    work_waiting = i.queue_length > 0 or i.in_flight > 0

    per_worker = _per_worker_throughput(i, slots, reasons)
    numbers["per_worker_throughput"] = None if per_worker is None else round(per_worker, 3)

    if per_worker is None:
        # Nothing finished yet: no throughput to reason with, so fall back to slots.
        load = (i.queue_length + i.in_flight) / slots
        reasons.append(
            f"no task has finished recently, so the load is estimated from slots: "
            f"{i.queue_length} queued + {i.in_flight} running over {slots} slots per worker"
        )
    else:
        serve = i.arrival_rate / per_worker
        # Work already claimed counts too (KEDA's list scaler sees only what waits): a burst
        # that fills every slot must not look like an idle queue.
        backlog = i.queue_length + i.in_flight
        drain = backlog / (per_worker * config.drain_target_seconds)
        load = serve + drain
        reasons.append(
            f"tasks arrive at {_fmt(i.arrival_rate)}/s and one worker serves {_fmt(per_worker)}/s, "
            f"so keeping up takes {_fmt(serve)} worker(s)"
        )
        if backlog:
            reasons.append(
                f"finishing the {i.queue_length} queued + {i.in_flight} running within "
                f"{config.drain_target_seconds:g} s takes {_fmt(drain)} more worker(s)"
            )
    numbers["load_workers"] = round(load, 3)
    numbers["utilization"] = round(load / current, 3) if current else None

    want = math.ceil(load / config.target_utilization - 1e-9)
    if work_waiting:
        want = max(want, 1)
    desired_up = max(lo, min(hi, want))
    if want != desired_up:
        reasons.append(f"kept within {lo}..{hi} workers (the load asks for {want})")

    if desired_up > current:
        state = replace(state, low_since=None)
        action = Action.SCALE_UP
        desired = desired_up
        reasons.append(
            f"{_plural(desired, 'worker')} keep utilisation under {config.target_utilization:.0%}; {current} running"
        )
        urgency = _up_urgency(i, current, per_worker, config)
    else:
        # Down only to a count that keeps utilisation under the lower band: the gap between the
        # two thresholds is the hysteresis that stops the advice flapping around one boundary.
        want_down = math.ceil(load / config.scale_down_utilization - 1e-9)
        if work_waiting:
            want_down = max(want_down, 1)
        desired_down = max(lo, min(hi, want_down))
        if desired_down < current:
            low_since = state.opened(state.low_since, now)
            state = replace(state, low_since=low_since)
            waited = now - low_since
            if waited >= config.scale_down_delay_seconds:
                action, desired, urgency = Action.SCALE_DOWN, desired_down, Urgency.LOW
                reasons.append(
                    f"{_plural(desired, 'worker')} would still run under {config.scale_down_utilization:.0%} "
                    f"utilisation, and the load has been this low for {waited:.0f} s"
                )
            else:
                action, desired, urgency = Action.MAINTAIN, current, Urgency.LOW
                reasons.append(
                    f"{_plural(desired_down, 'worker')} would do, but scaling down waits for "
                    f"{config.scale_down_delay_seconds:g} s of low load ({waited:.0f} s so far)"
                )
        else:
            state = replace(state, low_since=None)
            action, desired, urgency = Action.MAINTAIN, current, Urgency.LOW
            reasons.append(f"{_plural(current, 'worker')} fit the load")

    action, desired, urgency, state = _act_on_bursts_steps_and_idleness(
        i, state, now, config, current, load, desired_up, action, desired, urgency, work_waiting, reasons
    )

    if i.error_rate >= config.high_error_rate and i.completion_rate > 0:
        reasons.append(f"{i.error_rate:.0%} of recent tasks failed: more workers will not fix failing tasks")

    return Recommendation(action, current, desired, urgency.value, reasons, numbers, state)


def _act_on_bursts_steps_and_idleness(
    i: Inputs,
    state: PolicyState,
    now: float,
    config: PolicyConfig,
    current: int,
    load: float,
    desired_up: int,
    action: Action,
    desired: int,
    urgency: Urgency,
    work_waiting: bool,
    reasons: list[str],
) -> tuple[Action, int, Urgency, PolicyState]:
    """The autoscaler's rules on top of the throughput advice: panic, max step, scale to zero."""
    burst = (current == 0 and work_waiting) or (current > 0 and load > config.panic_threshold * current)
    if burst:
        state = replace(state, panic_until=now + config.panic_window_seconds)
        if desired_up > current:
            reasons.append(
                f"burst: the load ({_fmt(load)} workers) is over {config.panic_threshold:g}x the {current} running, "
                f"so all {desired_up} at once, and no scaling in for {config.panic_window_seconds:g} s"
            )
            return Action.SCALE_UP, desired_up, Urgency.HIGH, replace(state, idle_since=None)
    panicking = state.panic_until is not None and now < state.panic_until
    if action is Action.SCALE_DOWN and panicking:
        assert state.panic_until is not None
        reasons.append(f"no scaling in during the burst window ({state.panic_until - now:.0f} s left)")
        action, desired, urgency = Action.MAINTAIN, current, Urgency.LOW

    idle = not work_waiting and i.arrival_rate < 0.01
    if config.scale_to_zero_after_seconds > 0 and idle:
        idle_since = state.opened(state.idle_since, now)
        state = replace(state, idle_since=idle_since)
        if current > 0 and now - idle_since >= config.scale_to_zero_after_seconds and not panicking:
            reasons.append(
                f"nothing queued, running or arriving for {now - idle_since:.0f} s: scale to zero "
                f"(the next task brings a worker back)"
            )
            return Action.SCALE_DOWN, 0, Urgency.LOW, state
    else:
        state = replace(state, idle_since=None)

    if abs(desired - current) > config.max_step:
        stepped = current + config.max_step if desired > current else current - config.max_step
        reasons.append(f"at most {config.max_step} worker(s) per step: {stepped} now, {desired} wanted")
        desired = stepped
    return action, desired, urgency, state


def _per_worker_throughput(i: Inputs, slots: int, reasons: list[str]) -> float | None:
    """Tasks per second one worker serves, from processing time, capped by what was measured."""
    if i.mean_processing_time is None:
        return None
    # A floor keeps instant tasks (echo) from meaning "infinite throughput".
    per_worker = slots / max(i.mean_processing_time, 0.001)
    saturated = i.active_workers > 0 and i.in_flight >= i.active_workers * slots and i.queue_length > 0
    if saturated and i.completion_rate > 0:
        measured = i.completion_rate / i.active_workers
        if measured < per_worker:
            reasons.append(
                f"every slot is busy and the workers finish {_fmt(i.completion_rate)}/s, "
                f"so one worker really serves {_fmt(measured)}/s"
            )
            per_worker = measured
    return per_worker


def _up_urgency(i: Inputs, current: int, per_worker: float | None, config: PolicyConfig) -> Urgency:
    if current == 0:
        # Nobody to run the waiting work is urgent; merely being under min is not.
        return Urgency.HIGH if i.queue_length or i.in_flight else Urgency.MEDIUM
    if per_worker is None:
        return Urgency.MEDIUM
    spare = current * per_worker - i.arrival_rate
    if spare <= 0:
        return Urgency.HIGH  # arrivals outpace the workers: the queue only grows
    # How long the spare capacity needs for the backlog: over twice the target is urgent.
    return Urgency.HIGH if i.queue_length / spare > 2 * config.drain_target_seconds else Urgency.MEDIUM
