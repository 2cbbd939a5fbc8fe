"""`python -m benchmarks --growth` at tiny levels on a real stack of its own: every figure taken,
each in a sensible range, the report's table and goals built from them; and its options."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import growth
from benchmarks.growth import Latency, Options


def _sane(latency: Latency, most_ms: float = 2000) -> None:
    assert latency.samples > 0
    assert 0 < latency.p50_ms <= latency.p95_ms <= latency.p99_ms < most_ms


@pytest.mark.stack
def test_a_tiny_growth_run_takes_every_figure() -> None:
    more_rows = growth.FLOOR_ROWS + 5000  # a level above the floor the "0" level fills to
    figures = growth.run(Options(depths=(0, 2000), rows=(0, more_rows), seconds=1, samples=30, requests=30))

    assert figures.ingest_rps > 100
    assert figures.half_rate == int(figures.ingest_rps / 2)
    assert figures.queue[0].queued >= growth.FLOOR_TASKS
    assert figures.queue[-1].queued >= 2000
    for level in figures.queue:
        assert level.bytes_per_task is not None
        assert 20 < level.bytes_per_task < 5000
        assert 0 < level.layout.record_json_bytes < level.layout.record_key_bytes < 5000
        assert 0 < level.layout.list_bytes_per_id < 200
        assert 0 < level.submit_p99_ms < 2000
        assert level.submit_rps > 0
        for latency in (level.get_hot, level.get_postgres, level.metrics, level.tasks, level.claim):
            _sane(latency)
        assert level.claim.samples == growth.CLAIM_BATCHES

    drain = figures.drain
    assert drain is not None
    # Every task queued was drained into its own row: the claims measured handed theirs back.
    assert drain.tasks >= figures.queue[-1].queued
    assert drain.rows == drain.tasks
    assert drain.tasks_per_s > 0
    assert drain.seconds_to_empty > 0
    assert 20 < drain.hot_bytes_per_record < 10_000

    assert [level.rows for level in figures.history] == [growth.FLOOR_ROWS, more_rows]
    for rows in figures.history:
        assert 50 < rows.disk_bytes_per_row < 10_000
        _sane(rows.get_postgres)
        assert len(rows.endpoints) == len(growth.HISTORY_FILTERS) + 2
        assert len(rows.history_sql) == len(growth.HISTORY_FILTERS) + 1
        for timed in [*rows.endpoints, *rows.history_sql]:
            _sane(timed.latency)

    shown = growth.table(figures)
    assert "Redis per queued task" in shown
    assert "Postgres disk per final row" in shown
    assert any("Redis per queued task" in goal.what for goal in growth.goals(figures))


def test_levels_are_counts_from_small_to_large() -> None:
    assert growth._levels("0,10_000,1000000") == [0, 10_000, 1_000_000]
    for bad in ("", "10,0", "-1,5", "a,b"):
        with pytest.raises(argparse.ArgumentTypeError):
            growth._levels(bad)


def test_percentiles_of_a_latency() -> None:
    latency = Latency.of([float(n) for n in range(1, 101)])
    assert (latency.samples, latency.p50_ms, latency.p95_ms, latency.p99_ms) == (100, 50.5, 95.0, 99.0)
