"""The capacity model's arithmetic (benchmarks/capacity.py), on figures whose answer is known."""

from __future__ import annotations

from typing import Any

from benchmarks import capacity


def _figures(**drain_redis: float) -> dict[str, Any]:
    per_part = dict.fromkeys(capacity.PARTS, 0.0)
    return {
        "ingest": {"cpu_us": per_part | {"nginx": 50.0, "gateway": 200.0, "redis": 20.0}, "tasks_per_s": 1},
        "bulk": {"cpu_us": per_part | {"gateway": 5.0, "redis": 5.0}, "tasks_per_s": 1},
        "drain": {"cpu_us": per_part | {"worker": 50.0, "redis": 30.0, "postgres": 25.0, **drain_redis}},
    }


def test_each_part_gets_the_cores_the_rate_costs_in_processes_at_the_planned_load() -> None:
    needs = {n.part: n for n in capacity.model(_figures(), 100_000)}
    # 100,000 tasks/s x 200 µs = 20 cores of gateway; at 70 % of a core each, 29 processes.
    assert needs["gateway"].cores == 20.0
    assert needs["gateway"].instances == 29
    # Redis pays intake and drain: 50 µs a task, 5 cores, so 8 shards of one thread each.
    assert needs["redis"].us_per_task == 50.0
    assert needs["redis"].instances == 8
    assert round(needs["redis"].ceiling) == 14_000
    # Postgres is one primary of POSTGRES_CORES: 2.5 cores fit in one.
    assert needs["postgres"].instances == 1


def test_bulk_submission_moves_the_intake_costs_only() -> None:
    single = {n.part: n for n in capacity.model(_figures(), 10_000, "ingest")}
    bulk = {n.part: n for n in capacity.model(_figures(), 10_000, "bulk")}
    assert bulk["gateway"].cores < single["gateway"].cores
    assert bulk["worker"] == single["worker"]


def test_the_first_to_give_out_is_the_part_that_cannot_add_processes_with_the_lowest_ceiling() -> None:
    assert capacity.first_to_give_out(_figures()).part == "redis"
    # A Postgres that costs more per task than 32 cores can carry past Redis's ceiling goes first.
    assert capacity.first_to_give_out(_figures(postgres=5_000.0)).part == "postgres"
