"""The alert conditions as data, and their evaluation: a pure function of what the sampler read,
the previous alert state and the time.

Each `Rule` reads `AlertInputs` (one sample and the few more figures the dashboard's sampler reads)
and says whether its condition holds, with the numbers behind it. A condition fires once it has
held for the rule's `hold` seconds, and resolves once it has been clear for `clear` seconds, so a
blip neither pages nor flaps. A figure nobody could read (Redis down, Postgres not probed yet)
leaves its rule's state as it was: no reading is no evidence either way.

No clock reads, no I/O: tests drive `evaluate` with their own clock. monitoring/alerting.py
gathers the inputs, keeps the state in Redis and sends the webhook; monitoring/alerts.yml holds the
same conditions as Prometheus rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel

#: A minute: the window of the error rate, the per-type p95, and of the events (a worker dying,
#: tasks dead-lettered) an alert reports.
WINDOW_SECONDS = 60.0
#: Fewer finished tasks than this in the window say nothing about an error rate or a p95.
ERROR_RATE_MIN_TASKS = 10
P95_MIN_TASKS = 5


class AlertState(StrEnum):
    #: the condition holds, not yet for its hold time (not shown, not sent)
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class Figure(BaseModel):
    """One number behind an alert: what was measured, and the threshold it is held to."""

    name: str
    value: float | int | str | None
    threshold: float | int | None = None
    unit: str = ""


class Alert(BaseModel):
    """One alert of one rule, from the moment its condition first held until it resolved."""

    name: str
    state: AlertState
    summary: str
    hint: str
    #: the condition, with its numbers, in one line (the webhook's and the banner's text)
    detail: str
    figures: list[Figure]
    #: epoch seconds: the condition first held / the alert fired / the condition last cleared
    #: (while firing) / the alert resolved
    started_at: float
    since: float | None = None
    clear_since: float | None = None
    resolved_at: float | None = None
    #: the webhook took the firing / the resolving notice (persisted, so no restart resends it)
    sent_firing: bool = False
    sent_resolved: bool = False


@dataclass(frozen=True)
class Thresholds:
    """The configurable thresholds and holds: core/settings.py's ALERT_* take their defaults here."""

    #: backlog not draining: more than this many queued and the oldest older than backlog_age_seconds
    backlog_tasks: int = 100
    backlog_age_seconds: float = 60.0
    #: failed / finished over the last minute
    error_rate: float = 0.1
    #: tasks dead-lettered over the last minute
    dlq_growth: int = 1
    #: a task type's p95 processing time over the last minute, seconds
    slow_type_seconds: float = 10.0
    #: Redis's used_memory as a share of the byte budget new tasks meet (past it they get 503);
    #: the queue's length as a share of QUEUE_MAX
    redis_memory_share: float = 0.8
    queue_share: float = 0.8
    #: how long a condition holds before it fires: the levels (backlog, no worker, error rate, p95,
    #: memory, autoscaler) and Redis or Postgres unreachable; the events (a worker died with tasks,
    #: tasks dead-lettered) fire at once, the event is the evidence
    hold_seconds: float = 30.0
    dependency_hold_seconds: float = 10.0
    #: how long a fired condition must stay clear before its alert resolves
    clear_seconds: float = 15.0


@dataclass(frozen=True)
class TypeTimes:
    """One task type's finished tasks over the last minute."""

    p95: float
    count: int


class AutoscalerHealth(BaseModel, frozen=True):
    """What the autoscaler says of its actuator: in its /health and /status, and each tick in
    Redis (keys.AUTOSCALER_HEALTH) for the autoscaler_failing alert."""

    failing: bool
    failed_ticks: int = 0
    #: wall-clock time of the first failure in the current run of failures
    failing_since: float | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class AlertInputs:
    """What one evaluation reads. None: not read this time (its rules keep their state)."""

    redis_up: bool = True
    postgres_up: bool | None = None
    queue_length: int | None = None
    oldest_queued_seconds: float | None = None
    workers: int | None = None
    #: tasks the reaper requeued from dead workers over the last minute, and those workers
    requeued_in_window: int | None = None
    dead_workers: tuple[str, ...] = ()
    error_rate: float | None = None
    finished_in_window: int | None = None
    dlq_length: int | None = None
    dlq_growth: int | None = None
    p95_by_type: Mapping[str, TypeTimes] | None = None
    redis_memory_used: int | None = None
    #: the byte budget for new tasks (core.scripts.intake_budget); 0 = no byte bound
    redis_memory_budget: int | None = None
    #: QUEUE_MAX; 0 = unbounded
    queue_max: int = 0
    autoscaler: AutoscalerHealth | None = None


@dataclass(frozen=True)
class Finding:
    """A rule's reading: whether its condition holds, and the numbers behind it."""

    holds: bool
    detail: str
    figures: tuple[Figure, ...] = ()


Check = Callable[[AlertInputs, Thresholds], Finding | None]


@dataclass(frozen=True)
class Rule:
    name: str
    summary: str
    #: one line: what to do
    hint: str
    #: the settings its threshold(s) come from (README's Alerts table names them)
    settings: tuple[str, ...]
    check: Check = field(repr=False)
    #: seconds the condition must hold before it fires
    hold: float = 0.0


# -- the conditions ----------------------------------------------------------------------------


def _backlog(i: AlertInputs, th: Thresholds) -> Finding | None:
    if i.queue_length is None or i.oldest_queued_seconds is None:
        return None if i.queue_length is None else Finding(False, "nothing queued")
    age = i.oldest_queued_seconds
    return Finding(
        i.queue_length > th.backlog_tasks and age > th.backlog_age_seconds,
        f"{i.queue_length} tasks queued, the oldest for {age:.0f} s",
        (
            Figure(name="queue_length", value=i.queue_length, threshold=th.backlog_tasks, unit="tasks"),
            Figure(name="oldest_queued", value=round(age, 1), threshold=th.backlog_age_seconds, unit="s"),
        ),
    )


def _no_worker(i: AlertInputs, th: Thresholds) -> Finding | None:
    if i.queue_length is None or i.workers is None:
        return None
    return Finding(
        i.queue_length > 0 and i.workers == 0,
        f"{i.queue_length} tasks queued and {i.workers} live workers",
        (
            Figure(name="queue_length", value=i.queue_length, unit="tasks"),
            Figure(name="live_workers", value=i.workers, unit="workers"),
        ),
    )


def _worker_dead(i: AlertInputs, th: Thresholds) -> Finding | None:
    if i.requeued_in_window is None:
        return None
    who = ", ".join(i.dead_workers) or "a worker"
    return Finding(
        i.requeued_in_window > 0,
        f"{who} died with {i.requeued_in_window} tasks in flight (requeued) in the last minute",
        (
            Figure(name="requeued_from_dead_workers", value=i.requeued_in_window, unit="tasks"),
            Figure(name="dead_workers", value=", ".join(i.dead_workers) or None),
        ),
    )


def _error_rate(i: AlertInputs, th: Thresholds) -> Finding | None:
    if i.error_rate is None or i.finished_in_window is None:
        return None
    return Finding(
        i.finished_in_window >= ERROR_RATE_MIN_TASKS and i.error_rate > th.error_rate,
        f"{i.error_rate:.0%} of the {i.finished_in_window} tasks finished in the last minute failed",
        (
            Figure(name="error_rate", value=i.error_rate, threshold=th.error_rate),
            Figure(name="finished_last_minute", value=i.finished_in_window, unit="tasks"),
        ),
    )


def _dlq(i: AlertInputs, th: Thresholds) -> Finding | None:
    if i.dlq_growth is None or i.dlq_length is None:
        return None
    return Finding(
        i.dlq_growth >= th.dlq_growth,
        f"{i.dlq_growth} tasks dead-lettered in the last minute ({i.dlq_length} in the dead-letter queue)",
        (
            Figure(name="dead_lettered_last_minute", value=i.dlq_growth, threshold=th.dlq_growth, unit="tasks"),
            Figure(name="dead_letter_queue", value=i.dlq_length, unit="tasks"),
        ),
    )


def _p95(i: AlertInputs, th: Thresholds) -> Finding | None:
    if i.p95_by_type is None:
        return None
    slow = sorted(
        ((name, times) for name, times in i.p95_by_type.items() if times.count >= P95_MIN_TASKS),
        key=lambda item: -item[1].p95,
    )
    over = [(name, times) for name, times in slow if times.p95 > th.slow_type_seconds]
    shown = over or slow[:1]
    return Finding(
        bool(over),
        "; ".join(f"type {name}: p95 {times.p95:.2f} s over {times.count} tasks" for name, times in shown)
        or "no type finished enough tasks",
        tuple(
            Figure(name=f"p95[{name}]", value=round(times.p95, 3), threshold=th.slow_type_seconds, unit="s")
            for name, times in shown
        ),
    )


def _redis_memory(i: AlertInputs, th: Thresholds) -> Finding | None:
    if i.redis_memory_used is None or i.redis_memory_budget is None:
        return None
    if i.redis_memory_budget <= 0:
        return Finding(False, "no byte budget for new tasks (no maxmemory, or QUEUE_MAX_BYTES=-1)")
    share = i.redis_memory_used / i.redis_memory_budget
    return Finding(
        share > th.redis_memory_share,
        f"Redis uses {share:.0%} of the memory new tasks may fill"
        f" ({i.redis_memory_used} of {i.redis_memory_budget} bytes; past it they get 503)",
        (
            Figure(name="redis_memory_share", value=round(share, 3), threshold=th.redis_memory_share),
            Figure(name="redis_used_memory", value=i.redis_memory_used, unit="bytes"),
            Figure(name="intake_byte_budget", value=i.redis_memory_budget, unit="bytes"),
        ),
    )


def _queue_near_max(i: AlertInputs, th: Thresholds) -> Finding | None:
    if i.queue_length is None:
        return None
    if i.queue_max <= 0:
        return Finding(False, "QUEUE_MAX is unbounded")
    share = i.queue_length / i.queue_max
    return Finding(
        share > th.queue_share,
        f"{i.queue_length} tasks queued of QUEUE_MAX {i.queue_max} ({share:.0%})",
        (
            Figure(name="queue_share", value=round(share, 3), threshold=th.queue_share),
            Figure(name="queue_length", value=i.queue_length, unit="tasks"),
            Figure(name="queue_max", value=i.queue_max, unit="tasks"),
        ),
    )


def _reachability(name: str, up: bool) -> Finding:
    return Finding(
        not up,
        f"{name} {'answers' if up else 'does not answer'} the dashboard",
        (Figure(name="reachable", value="yes" if up else "no"),),
    )


def _redis_down(i: AlertInputs, th: Thresholds) -> Finding:
    return _reachability("Redis", i.redis_up)


def _postgres_down(i: AlertInputs, th: Thresholds) -> Finding | None:
    return None if i.postgres_up is None else _reachability("PostgreSQL", i.postgres_up)


def _autoscaler(i: AlertInputs, th: Thresholds) -> Finding | None:
    if i.autoscaler is None:
        return None if not i.redis_up else Finding(False, "no autoscaler reports")
    a = i.autoscaler
    return Finding(
        a.failing,
        f"the autoscaler's actions failed {a.failed_ticks} ticks in a row: {a.last_error or 'no error'}",
        (Figure(name="failed_ticks", value=a.failed_ticks), Figure(name="last_error", value=a.last_error)),
    )


def rules(th: Thresholds) -> tuple[Rule, ...]:
    """Every condition the stack alerts on, with its holds from `th`."""
    level, dependency = th.hold_seconds, th.dependency_hold_seconds
    return (
        Rule(
            "backlog_not_draining",
            "The backlog is not draining",
            "Add workers (check MAX_WORKERS and the autoscaler's decisions) or slow the intake.",
            ("ALERT_BACKLOG_TASKS", "ALERT_BACKLOG_AGE_SECONDS"),
            _backlog,
            level,
        ),
        Rule(
            "no_live_worker",
            "Work is queued and no worker is alive",
            "Start workers: is AUTOSCALE on, MAX_WORKERS above 0, or are the workers crashing at start (their logs)?",
            (),
            _no_worker,
            level,
        ),
        Rule(
            "worker_died",
            "A worker died with tasks in flight",
            "Its tasks were requeued; read its log for why it died (memory limit, crash task, kill).",
            (),
            _worker_dead,
            0.0,
        ),
        Rule(
            "error_rate_high",
            "Many tasks fail",
            "Read the failed tasks' errors (dashboard, Tasks, status failed) for a common cause.",
            ("ALERT_ERROR_RATE",),
            _error_rate,
            level,
        ),
        Rule(
            "dead_letters_growing",
            "Tasks are being dead-lettered",
            "Read the dead-lettered tasks' errors (GET /admin/dead-letters); redrive them once fixed.",
            ("ALERT_DLQ_GROWTH",),
            _dlq,
            0.0,
        ),
        Rule(
            "p95_slow",
            "A task type runs slowly",
            "Check what the slow type waits on; raise its timeout or add workers if it is expected.",
            ("ALERT_SLOW_TYPE_SECONDS",),
            _p95,
            level,
        ),
        Rule(
            "redis_memory_high",
            "Redis is close to the memory new tasks may fill",
            "Drain or purge the queue, lower RESULT_TTL_SECONDS, or raise REDIS_MAXMEMORY.",
            ("ALERT_REDIS_MEMORY_SHARE",),
            _redis_memory,
            level,
        ),
        Rule(
            "queue_near_max",
            "The queue is close to QUEUE_MAX",
            "New tasks will soon get 503: add workers, or raise QUEUE_MAX if Redis has the room.",
            ("ALERT_QUEUE_SHARE",),
            _queue_near_max,
            level,
        ),
        Rule(
            "redis_unreachable",
            "Redis is unreachable",
            "Start or restart Redis (./demo.sh status); nothing is accepted or claimed meanwhile.",
            (),
            _redis_down,
            dependency,
        ),
        Rule(
            "postgres_unreachable",
            "PostgreSQL is unreachable",
            "Start or restart PostgreSQL; workers keep results in Redis and retry meanwhile.",
            (),
            _postgres_down,
            dependency,
        ),
        Rule(
            "autoscaler_failing",
            "The autoscaler's actions fail",
            "Read the autoscaler's /health and log: the engine (supervisord, Docker, Kubernetes) refuses it.",
            (),
            _autoscaler,
            level,
        ),
    )


# -- evaluation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """The alerts after one evaluation, and what changed in it."""

    #: pending and firing alerts by rule name
    active: dict[str, Alert]
    #: alerts that fired or resolved in this evaluation (what the webhook announces)
    fired: list[Alert] = field(default_factory=list)
    resolved: list[Alert] = field(default_factory=list)


def evaluate(
    rule_set: tuple[Rule, ...],
    inputs: AlertInputs,
    previous: Mapping[str, Alert],
    now: float,
    th: Thresholds,
) -> Evaluation:
    """The alerts at `now`, from the previous ones and this reading of `inputs`."""
    active: dict[str, Alert] = {}
    fired: list[Alert] = []
    resolved: list[Alert] = []
    for rule in rule_set:
        before = previous.get(rule.name)
        finding = rule.check(inputs, th)
        if finding is None:
            if before is not None:
                active[rule.name] = before  # nothing read: nothing changes
            continue
        if finding.holds:
            alert = _holding(rule, finding, before, now)
        elif before is not None and before.state is AlertState.FIRING:
            alert = _clearing(finding, before, now, th.clear_seconds)
        else:
            continue  # clear, and nothing pending or firing: no alert
        if alert.state is AlertState.RESOLVED:
            resolved.append(alert)
            continue
        if alert.state is AlertState.FIRING and (before is None or before.state is not AlertState.FIRING):
            fired.append(alert)
        active[rule.name] = alert
    return Evaluation(active, fired, resolved)


def _holding(rule: Rule, finding: Finding, before: Alert | None, now: float) -> Alert:
    figures, detail = list(finding.figures), finding.detail
    if before is None:
        pending = Alert(
            name=rule.name,
            state=AlertState.PENDING,
            summary=rule.summary,
            hint=rule.hint,
            detail=detail,
            figures=figures,
            started_at=now,
        )
        return _fire(pending, now) if rule.hold <= 0 else pending
    updated = before.model_copy(update={"detail": detail, "figures": figures, "clear_since": None})
    if updated.state is AlertState.PENDING and now - updated.started_at >= rule.hold:
        return _fire(updated, now)
    return updated


def _fire(alert: Alert, now: float) -> Alert:
    return alert.model_copy(update={"state": AlertState.FIRING, "since": now})


def _clearing(finding: Finding, before: Alert, now: float, clear_seconds: float) -> Alert:
    clear_since = before.clear_since if before.clear_since is not None else now
    if now - clear_since >= clear_seconds:
        # The numbers it fired on stay: what the resolved alert was about.
        return before.model_copy(update={"state": AlertState.RESOLVED, "resolved_at": now, "clear_since": clear_since})
    return before.model_copy(update={"clear_since": clear_since})


def webhook_text(alert: Alert) -> str:
    """The Slack-compatible one-liner of a firing or resolving alert."""
    if alert.state is AlertState.RESOLVED:
        return f"RESOLVED {alert.name}: {alert.summary}"
    return f"FIRING {alert.name}: {alert.summary} - {alert.detail}. {alert.hint}"
