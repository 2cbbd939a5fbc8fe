"""The alerting's Postgres reading (core.db.p95_by_type) on a real PostgreSQL: each task type's
p95 processing time over the last minute, from final rows only."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from core import db
from core.models import TaskRecord, TaskStatus, new_task_ids
from core.timeutil import now
from tests.inprocess.apps import MARKS

pytestmark = MARKS


def _finished(kind: str, seconds: list[float], status: TaskStatus, ago: timedelta) -> list[TaskRecord]:
    done = now() - ago
    return [
        TaskRecord(
            id=task_id,
            type=kind,
            status=status,
            created_at=done - timedelta(seconds=s),
            started_at=done - timedelta(seconds=s),
            completed_at=done,
            processing_time=s,
        )
        for task_id, s in zip(new_task_ids(len(seconds)), seconds, strict=True)
    ]


async def test_each_type_gets_the_p95_of_its_tasks_finished_in_the_window(pool: asyncpg.Pool) -> None:
    recent = timedelta(seconds=5)
    slow = [float(s) for s in range(1, 21)]  # 1..20 s: p95 (interpolated) 19.05 s
    fast = [0.01] * 10
    await db.upsert_tasks(
        pool,
        _finished("slow", slow, TaskStatus.COMPLETED, recent)
        + _finished("fast", fast[:5], TaskStatus.COMPLETED, recent)
        + _finished("fast", fast[5:], TaskStatus.FAILED, recent)
        # Outside the minute, or not a finished run: not counted.
        + _finished("slow", [500.0] * 5, TaskStatus.COMPLETED, timedelta(minutes=5))
        + _finished("slow", [900.0] * 5, TaskStatus.CANCELLED, recent),
    )
    found = await db.p95_by_type(pool, 60.0, 3.0)
    assert set(found) == {"slow", "fast"}
    p95, count = found["slow"]
    assert count == 20
    assert p95 == pytest.approx(19.05)
    p95, count = found["fast"]
    assert count == 10
    assert p95 == pytest.approx(0.01)


async def test_no_finished_tasks_read_as_no_types(pool: asyncpg.Pool) -> None:
    assert await db.p95_by_type(pool, 60.0, 3.0) == {}
