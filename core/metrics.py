"""Read-side views shared by the gateway and the dashboard: counters, workers, recent tasks.

Every read here costs the same whatever the history size: fixed keys, the small worker
registry, a capped list of recent ids, and a primary-key lookup for expired hot copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from core import db, keys
from core.models import TaskRecord
from core.queue import TaskQueue


@dataclass
class Snapshot:
    total_requests: int = 0
    accepted: int = 0
    completed: int = 0
    failed: int = 0
    requeued: int = 0
    queue_length: int = 0
    processing: int = 0
    workers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def active_workers(self) -> int:
        return len(self.workers)


async def snapshot(queue: TaskQueue) -> Snapshot:
    stats = await queue.stats()
    return Snapshot(
        total_requests=stats.get(keys.STAT_REQUESTS, 0),
        accepted=stats.get(keys.STAT_ACCEPTED, 0),
        completed=stats.get(keys.STAT_COMPLETED, 0),
        failed=stats.get(keys.STAT_FAILED, 0),
        requeued=stats.get(keys.STAT_REQUEUED, 0),
        queue_length=await queue.queue_length(),
        processing=await queue.in_flight(),
        workers=await queue.live_workers(),
    )


async def recent_tasks(queue: TaskQueue, pool: asyncpg.Pool, count: int) -> list[TaskRecord]:
    """The newest `count` tasks of any status, hot copies first, Postgres for expired ones."""
    ids = await queue.recent_ids(count)
    hot = await queue.get_many(ids)
    missing = [task_id for task_id, task in zip(ids, hot, strict=True) if task is None]
    durable: dict[str, TaskRecord] = {}
    if missing:
        try:
            durable = {t.id: t for t in await db.fetch_tasks(pool, missing)}
        except db.UNAVAILABLE_ERRORS:
            durable = {}
    out: list[TaskRecord] = []
    for task_id, task in zip(ids, hot, strict=True):
        found = task or durable.get(task_id)
        if found is not None:
            out.append(found)
    return out
