"""Pure pieces of the dashboard: percentiles, rates from samples, their JSON, worker states, id prefixes."""

from __future__ import annotations

import orjson
import pytest

from core import keys
from core.backlog import Backlog
from core.metrics import id_prefix_range, worker_rows, worker_state
from core.samples import SAMPLES, Sample, chart_columns
from core.settings import Settings
from core.timeseries import Raw, derive, inputs_from, percentile

#: The sample's JSON names: what Redis holds and browsers and the load-test report read.
MEASURED = {"t", "req", "acc", "done", "fail", "cxl", "q", "qh", "qn", "ql", "sch", "f", "w", "slots"}
DERIVED = {"ar", "cr", "ar10", "cr10", "tpm", "p50", "p95", "avg", "err"}
WIRE_NAMES = MEASURED | DERIVED


def raw(t: float, accepted: int, completed: int, failed: int = 0, **extra: object) -> Raw:
    stats = {keys.STAT_ACCEPTED: accepted, keys.STAT_COMPLETED: completed, keys.STAT_FAILED: failed}
    return Raw(t=t, stats=stats, in_flight=0, workers=[], **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 50, None), ([1.0], 95, 1.0), ([1, 2, 3, 4], 50, 2), ([*range(1, 101)], 95, 95), ([*range(1, 101)], 100, 100)],
)
def test_percentile_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_rates_from_counter_deltas() -> None:
    history: list[Sample] = []
    for second in range(12):
        history.insert(0, derive(raw(100.0 + second, accepted=5 * second, completed=3 * second), history))
    head = history[0]
    assert head.arrival_rate == 5.0
    assert head.completion_rate == 3.0
    assert head.arrival_rate_10s == pytest.approx(5.0)
    assert head.completion_rate_10s == pytest.approx(3.0)


def test_a_counter_reset_is_no_negative_rate() -> None:
    before = derive(raw(10.0, accepted=500, completed=400), [])
    after = derive(raw(11.0, accepted=3, completed=1), [before])
    assert after.arrival_rate == 0.0
    assert after.completion_rate == 0.0


def test_percentiles_and_error_rate_over_the_last_minute() -> None:
    durations = [(99.0, 0.2, "completed"), (98.0, 0.4, "failed"), (97.0, 0.1, "completed"), (10.0, 9.0, "completed")]
    sample = derive(raw(100.0, 0, 0, durations=durations), [])
    assert sample.tasks_per_minute == 3  # the 9 s task finished 90 s ago: outside the window
    assert sample.p50 == 0.2
    assert sample.p95 == 0.4
    assert sample.mean_processing_time == pytest.approx(0.2333, abs=1e-3)
    assert sample.error_rate == pytest.approx(1 / 3, abs=1e-3)


def test_cancelled_tasks_are_counted_apart_from_the_finished_ones() -> None:
    # Cancelled while running: keys.SINGLE.durations holds them, cut short; they are no throughput or error.
    durations = [(99.0, 0.2, "completed"), (98.5, 5.0, "cancelled"), (98.0, 0.4, "failed"), (97.0, 0.01, "cancelled")]
    stats = {keys.STAT_ACCEPTED: 6, keys.STAT_COMPLETED: 1, keys.STAT_FAILED: 1, keys.STAT_CANCELLED: 3}
    before = derive(Raw(t=99.0, stats={}, in_flight=0, workers=[]), [])
    sample = derive(Raw(t=100.0, stats=stats, in_flight=0, workers=[], durations=durations), [before])
    assert sample.cancelled == 3
    assert sample.tasks_per_minute == 2
    assert (sample.p50, sample.p95) == (0.2, 0.4)
    assert sample.error_rate == 0.5
    assert sample.completion_rate == 2.0  # completed + failed per second: the 3 cancelled are not in it
    assert sample.finished == 2


def test_the_queue_length_counts_every_priority_and_scheduled_stays_apart() -> None:
    backlog = Backlog(high=2, normal=10, low=1, scheduled=7)
    sample = derive(Raw(t=1.0, stats={}, in_flight=0, workers=[], backlog=backlog), [])
    assert (sample.queue_length, sample.queue_high, sample.queue_normal, sample.queue_low) == (13, 2, 10, 1)
    assert sample.scheduled == 7
    wire = orjson.loads(sample.model_dump_json())
    assert (wire["q"], wire["qh"], wire["qn"], wire["ql"], wire["sch"]) == (13, 2, 10, 1, 7)
    assert inputs_from(sample, Settings()).queue_length == 13


def test_a_sample_is_written_and_read_under_its_short_names() -> None:
    durations = [(99.0, 0.2, "completed"), (98.0, 0.4, "failed")]
    first = derive(raw(99.0, accepted=4, completed=1), [])
    sample = derive(raw(100.0, accepted=9, completed=2, failed=1, durations=durations), [first])
    wire = orjson.loads(sample.model_dump_json())
    assert set(wire) == WIRE_NAMES
    assert (wire["acc"], wire["done"], wire["fail"], wire["ar"], wire["cr"]) == (9, 2, 1, 5.0, 2.0)
    assert set(sample.model_dump()) == WIRE_NAMES  # the dashboard's stream sends the same names
    array = f"[{first.model_dump_json()},{sample.model_dump_json()}]"
    assert SAMPLES.validate_json(array) == [first, sample]
    columns = chart_columns([first, sample])
    assert set(columns) == {"t", "q", "f", "w", "ar", "cr", "p50", "p95"}
    assert columns["t"] == [99.0, 100.0]
    assert columns["ar"] == [0.0, 5.0]


def test_policy_inputs_from_a_sample() -> None:
    wire = {"t": 1.0, "q": 7, "f": 3, "w": 2, "slots": 16, "ar10": 4.0, "cr10": 3.5, "avg": 0.5, "err": 0.1}
    sample = Sample.model_validate_json(orjson.dumps(wire))  # the fields it does not name take defaults
    inputs = inputs_from(sample, Settings(min_workers=1, max_workers=6))
    assert (inputs.queue_length, inputs.in_flight, inputs.active_workers) == (7, 3, 2)
    assert (inputs.arrival_rate, inputs.completion_rate, inputs.mean_processing_time) == (4.0, 3.5, 0.5)
    assert (inputs.concurrency_per_worker, inputs.min_workers, inputs.max_workers) == (8, 1, 6)


@pytest.mark.parametrize(
    ("age", "live", "state"),
    [
        (0.5, True, "online"),
        (2.9, True, "online"),
        (1.0, False, "suspect"),
        (4.0, True, "suspect"),
        (10.0, True, "dead"),
    ],
)
def test_worker_state_from_heartbeat_age(age: float, live: bool, state: str) -> None:
    assert worker_state(age, live) == state


def test_worker_rows_merge_live_and_remembered() -> None:
    live = [{"worker_id": "a", "last_seen": "2026-01-01T00:00:09Z", "in_flight": 2, "cancelled": 3}]
    seen = {"b": {"worker_id": "b", "last_seen": "2026-01-01T00:00:00Z", "seen_at": 0.0}}
    t = 1767225610.0  # 2026-01-01T00:00:10Z
    rows = {r["worker_id"]: r for r in worker_rows(live, seen, t)}
    assert rows["a"]["state"] == "online"
    assert rows["a"]["cancelled"] == 3
    assert rows["b"]["cancelled"] == 0  # a heartbeat from before workers counted cancels
    assert rows["a"]["in_flight"] == 2
    assert rows["b"]["state"] == "dead"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3fa8", ("3fa80000-0000-0000-0000-000000000000", "3fa8ffff-ffff-ffff-ffff-ffffffffffff")),
        ("3FA85F64-57", ("3fa85f64-5700-0000-0000-000000000000", "3fa85f64-57ff-ffff-ffff-ffffffffffff")),
        ("nope", None),
        ("", None),
        ("0" * 33, None),
    ],
)
def test_id_prefix_is_a_primary_key_range(text: str, expected: tuple[str, str] | None) -> None:
    assert id_prefix_range(text) == expected
