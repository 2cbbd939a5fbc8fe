"""The alert rules and their evaluation (core/alerts.py) on a controlled clock, and the same
conditions as Prometheus rules (monitoring/alerts.yml, checked with promtool)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from core.alerts import (
    Alert,
    AlertInputs,
    AlertState,
    AutoscalerHealth,
    Evaluation,
    Thresholds,
    TypeTimes,
    evaluate,
    rules,
    webhook_text,
)
from core.settings import Settings

TH = Thresholds(hold_seconds=30, dependency_hold_seconds=10, clear_seconds=15)
RULES = rules(TH)
#: Everything read, nothing wrong.
CALM = AlertInputs(
    redis_up=True,
    postgres_up=True,
    queue_length=0,
    oldest_queued_seconds=None,
    workers=2,
    requeued_in_window=0,
    error_rate=0.0,
    finished_in_window=100,
    dlq_length=3,
    dlq_growth=0,
    p95_by_type={"sleep": TypeTimes(0.5, 40)},
    redis_memory_used=10_000_000,
    redis_memory_budget=96_000_000,
    queue_max=10_000,
    autoscaler=AutoscalerHealth(failing=False),
)


class Clock:
    """Evaluates one reading after another, `step` seconds apart, carrying the state."""

    def __init__(self, th: Thresholds = TH) -> None:
        self.t = 1000.0
        self.th = th
        self.rules = rules(th)
        self.active: Mapping[str, Alert] = {}

    def run(self, inputs: AlertInputs, seconds: float = 0.0, step: float = 1.0) -> Evaluation:
        """Evaluate now, then every `step` s for `seconds` more; the last evaluation."""
        result = evaluate(self.rules, inputs, self.active, self.t, self.th)
        self.active = result.active
        fired, resolved = list(result.fired), list(result.resolved)
        end = self.t + seconds
        while self.t + step <= end + 1e-9:
            self.t += step
            result = evaluate(self.rules, inputs, self.active, self.t, self.th)
            self.active = result.active
            fired += result.fired
            resolved += result.resolved
        return Evaluation(result.active, fired, resolved)

    def firing(self) -> set[str]:
        return {name for name, a in self.active.items() if a.state is AlertState.FIRING}


def test_calm_inputs_raise_nothing() -> None:
    assert Clock().run(CALM, 120).active == {}


#: One bad reading per rule, and the rule it must fire.
BAD = [
    ("backlog_not_draining", replace(CALM, queue_length=500, oldest_queued_seconds=90.0)),
    ("no_live_worker", replace(CALM, queue_length=3, oldest_queued_seconds=1.0, workers=0)),
    ("worker_died", replace(CALM, requeued_in_window=2, dead_workers=("worker-service-1-ab12cd",))),
    ("error_rate_high", replace(CALM, error_rate=0.5, finished_in_window=40)),
    ("dead_letters_growing", replace(CALM, dlq_growth=4, dlq_length=7)),
    ("p95_slow", replace(CALM, p95_by_type={"sleep": TypeTimes(0.5, 40), "cpu": TypeTimes(12.5, 9)})),
    ("redis_memory_high", replace(CALM, redis_memory_used=90_000_000)),
    ("queue_near_max", replace(CALM, queue_length=9_000, oldest_queued_seconds=5.0)),
    ("redis_unreachable", AlertInputs(redis_up=False, postgres_up=True)),
    ("postgres_unreachable", replace(CALM, postgres_up=False)),
    (
        "autoscaler_failing",
        replace(
            CALM,
            autoscaler=AutoscalerHealth(failing=True, failed_ticks=5, last_error="ConnectionRefusedError: supervisord"),
        ),
    ),
]


def test_every_rule_has_a_bad_case_and_a_hint() -> None:
    assert {name for name, _ in BAD} == {rule.name for rule in RULES}
    assert all(rule.hint and rule.summary for rule in RULES)


@pytest.mark.parametrize(("name", "bad"), BAD, ids=[name for name, _ in BAD])
def test_a_condition_fires_after_its_hold_and_resolves_after_clearing(name: str, bad: AlertInputs) -> None:
    rule = next(r for r in RULES if r.name == name)
    clock = Clock()
    if rule.hold > 0:
        clock.run(bad, rule.hold - 1)
        assert name not in clock.firing(), "fired before its hold"
        assert clock.active[name].state is AlertState.PENDING
    fired = clock.run(bad, 1 if rule.hold > 0 else 0).fired
    assert [a.name for a in fired] == [name]
    alert = clock.active[name]
    assert alert.since == clock.t
    assert alert.figures
    # Clear, but not yet for clear_seconds: still firing.
    clock.t += 1
    clock.run(CALM, TH.clear_seconds - 1)
    assert name in clock.firing()
    clock.t += 1
    resolved = clock.run(CALM).resolved
    assert [a.name for a in resolved] == [name]
    assert resolved[0].state is AlertState.RESOLVED
    assert resolved[0].resolved_at == clock.t
    assert name not in clock.active


def test_a_blip_shorter_than_the_hold_never_fires() -> None:
    clock = Clock()
    backlog = BAD[0][1]
    clock.run(backlog, 20)
    clock.t += 1
    assert clock.run(CALM).active == {}
    clock.t += 1
    clock.run(backlog, 20)
    assert clock.firing() == set()  # the hold restarts with the condition


def test_a_condition_back_before_the_clear_time_keeps_its_alert() -> None:
    clock = Clock()
    bad = replace(CALM, postgres_up=False)
    clock.run(bad, TH.dependency_hold_seconds)
    since = clock.active["postgres_unreachable"].since
    clock.t += 1
    clock.run(CALM, 5)
    clock.t += 1
    result = clock.run(bad)
    assert result.fired == []
    assert result.resolved == []
    assert clock.active["postgres_unreachable"].since == since
    assert clock.active["postgres_unreachable"].clear_since is None


def test_an_unknown_figure_changes_nothing() -> None:
    clock = Clock()
    clock.run(replace(CALM, postgres_up=False), TH.dependency_hold_seconds)
    assert "postgres_unreachable" in clock.firing()
    # Redis down: nothing Redis-side is read; Postgres's alert neither resolves nor moves.
    clock.t += 1
    result = clock.run(AlertInputs(redis_up=False, postgres_up=None), 60)
    assert "postgres_unreachable" in clock.firing()
    assert result.resolved == []


def test_the_thresholds_hold_at_their_edges() -> None:
    clock = Clock(replace(TH, hold_seconds=0))
    at_edge = replace(CALM, queue_length=100, oldest_queued_seconds=60.0, error_rate=0.1)
    assert clock.run(at_edge).fired == []
    few = replace(CALM, error_rate=1.0, finished_in_window=9)  # too few tasks to judge
    assert clock.run(few).fired == []
    unbounded = replace(CALM, queue_length=50_000, oldest_queued_seconds=1.0, queue_max=0, redis_memory_budget=0)
    assert "queue_near_max" not in {a.name for a in clock.run(unbounded).fired}
    assert "redis_memory_high" not in clock.firing()


def test_p95_names_the_slow_type_and_ignores_types_with_few_tasks() -> None:
    clock = Clock(replace(TH, hold_seconds=0))
    one_slow_task = replace(CALM, p95_by_type={"cpu": TypeTimes(50.0, 2)})
    assert clock.run(one_slow_task).fired == []
    (alert,) = clock.run(BAD[5][1]).fired
    assert "cpu" in alert.detail
    assert "12.50" in alert.detail
    assert alert.figures[0].name == "p95[cpu]"
    assert alert.figures[0].threshold == TH.slow_type_seconds


def test_the_webhook_text_says_what_and_what_to_do() -> None:
    clock = Clock(replace(TH, hold_seconds=0))
    (alert,) = clock.run(BAD[1][1]).fired
    text = webhook_text(alert)
    assert text.startswith("FIRING no_live_worker")
    assert "3 tasks queued" in text
    assert alert.hint in text
    clock.t += TH.clear_seconds + 1
    clock.run(CALM)
    clock.t += TH.clear_seconds + 1
    (done,) = clock.run(CALM).resolved
    assert webhook_text(done).startswith("RESOLVED no_live_worker")


def test_the_settings_give_the_thresholds_their_defaults() -> None:
    assert Settings().alert_thresholds() == Thresholds()
    assert Settings(alert_hold_seconds=2, alert_backlog_tasks=5).alert_thresholds() == replace(
        Thresholds(), hold_seconds=2, backlog_tasks=5
    )


# -- the same conditions as Prometheus rules ---------------------------------------------------

MONITORING = Path(__file__).resolve().parent.parent / "monitoring"


def promtool(*args: str) -> str:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: apt-get install prometheus (test.sh does)"
    result = subprocess.run([tool, *args], cwd=MONITORING, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_prometheus_rules_are_valid_and_cover_every_condition() -> None:
    assert "SUCCESS: 11 rules found" in promtool("check", "rules", "alerts.yml")
    rules_text = (MONITORING / "alerts.yml").read_text()
    # One Prometheus rule per built-in condition, under the same summary.
    for rule in RULES:
        assert f"summary: {rule.summary}" in rules_text, rule.name


def test_the_prometheus_rules_fire_on_their_conditions() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")
