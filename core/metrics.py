"""Read-side views shared by the gateway and the dashboard: counters, workers, recent tasks.

Every read here costs the same whatever the history size: fixed keys, the small worker
registry, a capped list of recent ids, and a primary-key lookup for expired hot copies.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from core import db, keys
from core.backlog import Backlog
from core.keys import QueueKeys
from core.models import TaskRecord, TaskStatus
from core.queue import TaskQueue
from core.timeseries import epoch


@dataclass
class Snapshot:
    total_requests: int = 0
    accepted: int = 0
    completed: int = 0
    failed: int = 0
    requeued: int = 0
    cancelled: int = 0
    #: what waits, by priority, and what is scheduled for later
    backlog: Backlog = field(default_factory=Backlog)
    processing: int = 0
    workers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def active_workers(self) -> int:
        return len(self.workers)

    @property
    def queue_length(self) -> int:
        """Tasks waiting to be claimed, every priority counted (not the scheduled ones)."""
        return self.backlog.queued

    @property
    def scheduled(self) -> int:
        return self.backlog.scheduled


async def snapshot(queue: TaskQueue) -> Snapshot:
    stats = await queue.stats()
    return Snapshot(
        total_requests=stats.get(keys.STAT_REQUESTS, 0),
        accepted=stats.get(keys.STAT_ACCEPTED, 0),
        completed=stats.get(keys.STAT_COMPLETED, 0),
        failed=stats.get(keys.STAT_FAILED, 0),
        requeued=stats.get(keys.STAT_REQUEUED, 0),
        cancelled=stats.get(keys.STAT_CANCELLED, 0),
        backlog=await queue.backlog(),
        processing=await queue.in_flight(),
        workers=await queue.live_workers(),
    )


async def tasks_by_id(
    queue: TaskQueue, pool: asyncpg.Pool, ids: list[str], *, without_postgres: bool = False
) -> list[TaskRecord]:
    """Tasks by id, in that order: hot copies first, Postgres for those whose copy expired.

    `without_postgres`: when Postgres is down, return what Redis has instead of raising.
    """
    hot = await queue.get_many(ids)
    missing = [task_id for task_id, task in zip(ids, hot, strict=True) if task is None]
    durable: dict[str, TaskRecord] = {}
    if missing:
        try:
            durable = {t.id: t for t in await db.fetch_tasks(pool, missing)}
        except db.UNAVAILABLE_ERRORS:
            if not without_postgres:
                raise
    return [found for task_id, task in zip(ids, hot, strict=True) if (found := task or durable.get(task_id))]


async def recent_tasks(queue: TaskQueue, pool: asyncpg.Pool, count: int) -> list[TaskRecord]:
    """The newest `count` tasks of any status (a page of the dashboard must not fail with Postgres)."""
    return await tasks_by_id(queue, pool, await queue.recent_ids(count), without_postgres=True)


# -- Dashboard views (monitoring) -------------------------------------------------------------
# Each reads a bounded set: the small worker hashes, the capped recent list, one LRANGE of the
# queue's head, the processing lists of registered workers, and index-served LIMIT queries.

#: Heartbeat age (s) under which a worker is online; under SUSPECT_AFTER it is suspect, then dead.
ONLINE_UNDER = 3.0
SUSPECT_UNDER = 10.0


def worker_state(age: float, has_heartbeat: bool) -> str:
    """online / suspect / dead from the age of the last heartbeat (and whether its key still lives)."""
    if age < ONLINE_UNDER and has_heartbeat:
        return "online"
    if age < SUSPECT_UNDER:
        # A heartbeat key that vanished (clean exit, or expired) while recently seen: not yet dead.
        return "suspect"
    return "dead"


def worker_rows(live: list[dict[str, Any]], seen: dict[str, dict[str, Any]], t: float) -> list[dict[str, Any]]:
    """The workers table: live heartbeats plus workers seen in the last minutes, newest first."""
    beats = {str(b.get("worker_id")): b for b in live if b.get("worker_id")}
    rows = []
    for worker_id in sorted(set(beats) | set(seen)):
        beat = beats.get(worker_id) or seen[worker_id]
        last = epoch(beat.get("last_seen")) or float(beat.get("seen_at", t))
        age = max(0.0, t - last)
        rows.append(
            {
                "worker_id": worker_id,
                "pid": beat.get("pid"),
                "host": beat.get("host"),
                "state": worker_state(age, worker_id in beats),
                "status": beat.get("status"),
                "in_flight": int(beat.get("in_flight", 0) or 0),
                "completed": int(beat.get("completed", 0) or 0),
                "failed": int(beat.get("failed", 0) or 0),
                "cancelled": int(beat.get("cancelled", 0) or 0),
                "concurrency": beat.get("concurrency"),
                "last_seen": beat.get("last_seen"),
                "age_seconds": round(age, 1),
            }
        )
    rows.sort(key=lambda r: (r["state"] != "online", r["age_seconds"], r["worker_id"]))
    return rows


async def worker_table(queue: TaskQueue, t: float) -> list[dict[str, Any]]:
    live = await queue.live_workers()
    raw = await queue.redis.hgetall(keys.WORKERS_SEEN)
    seen = {str(k): orjson.loads(v) for k, v in raw.items()}
    return worker_rows(live, seen, t)


#: What listings, metrics and the live stream show of a task: ids, type, status and timings (the
#: field names the seed's clients read). Never `data`, `result` or `error` (which can quote the data): those
#: come from `GET /api/task/{id}` to whoever holds the id, or the dashboard's detail with the admin
#: token. An allow-list, so a field added to TaskRecord stays private until it is named here.
SUMMARY_FIELDS = frozenset(
    {
        "id",
        "type",
        "status",
        "priority",
        "created_at",
        "run_at",
        "started_at",
        "completed_at",
        "processing_time",
        "worker_id",
        "attempts",
    }
)


def summary(task: TaskRecord) -> dict[str, Any]:
    """A task without its payload, result or error: what lists, metrics and the live stream carry."""
    return task.model_dump(mode="json", include=set(SUMMARY_FIELDS))


_HEX = set("0123456789abcdef")


def id_prefix_range(text: str) -> tuple[str, str] | None:
    """The uuid range an id prefix ("3fa8", "3fa85f64-57") covers; None if it is not one."""
    digits = text.strip().lower().replace("-", "")
    if not digits or len(digits) > 32 or not set(digits) <= _HEX:
        return None
    return str(uuid.UUID(digits.ljust(32, "0"))), str(uuid.UUID(digits.ljust(32, "f")))


#: Where in a shard tasks of a waiting status wait in a sorted set, scored by when they are due.
_DUE_SETS: dict[str, Callable[[QueueKeys], str]] = {
    TaskStatus.SCHEDULED.value: lambda shard: shard.scheduled,
    TaskStatus.RETRYING.value: lambda shard: shard.delayed,
}
#: The statuses read from where their tasks wait or run, not only from the recent list.
LIVE_STATUSES = frozenset({TaskStatus.QUEUED.value, TaskStatus.PROCESSING.value, *_DUE_SETS})


async def _tasks_of_lists(queue: TaskQueue, status: str, limit: int) -> list[TaskRecord]:
    """Live tasks of a waiting or running status, from where they are now: queued ones from the
    head of every priority's list, scheduled and retrying ones from their sorted sets (due soonest
    first), running ones from the workers' processing lists."""
    redis = queue.redis
    if status == TaskStatus.QUEUED.value:
        async with redis.pipeline(transaction=False) as pipe:
            for shard in queue.shards:
                for waiting in shard.queues:
                    pipe.lrange(waiting, 0, limit - 1)
            listed = await pipe.execute()
        # A wake-up marker is no task (keys.WAKE).
        ids = [str(v) for head in listed for v in head if v != keys.WAKE]
    elif status in _DUE_SETS:
        due_set = _DUE_SETS[status]
        async with redis.pipeline(transaction=False) as pipe:
            for shard in queue.shards:
                pipe.zrange(due_set(shard), 0, limit - 1)
            ids = [str(v) for due in await pipe.execute() for v in due]
    else:
        workers = sorted(str(w) for w in await redis.smembers(keys.WORKERS))
        ids = []
        async with redis.pipeline(transaction=False) as pipe:
            for worker_id in workers:
                for shard in queue.shards:
                    pipe.lrange(shard.processing(worker_id), 0, limit - 1)
            for claimed in await pipe.execute():
                ids.extend(str(v) for v in claimed)
        ids = ids[:limit]
    return [t for t in await queue.get_many(ids) if t is not None and t.status.value == status]


async def find_tasks(
    queue: TaskQueue,
    pool: asyncpg.Pool,
    *,
    limit: int,
    status: str | None = None,
    task_type: str | None = None,
    q: str | None = None,
) -> list[TaskRecord]:
    """Newest tasks of any status matching the filters: Redis for live ones, Postgres for history.

    Postgres holds final records only; waiting and running tasks live in Redis. Every source is
    bounded by `limit`, so the cost does not grow with the history.
    """
    id_range = id_prefix_range(q) if q else None
    if q and id_range is None:
        return []
    found: dict[str, TaskRecord] = {}
    # The recent list (capped) covers every status, including the non-final ones.
    for task in await recent_tasks(queue, pool, queue.recent_kept):
        found[task.id] = task
    if status in LIVE_STATUSES and not q:
        for task in await _tasks_of_lists(queue, status, limit):
            found[task.id] = task
    try:
        for task in await db.list_tasks(pool, limit=limit, status=status, task_type=task_type, id_range=id_range):
            found.setdefault(task.id, task)
    except db.UNAVAILABLE_ERRORS:
        pass  # history is down: the live part still answers
    # An exact id may wait or run (not in Postgres yet, maybe off the recent list).
    if q and id_range is not None and id_range[0] == id_range[1] and id_range[0] not in found:
        live = await queue.get(id_range[0])
        if live is not None:
            found[live.id] = live

    def keep(task: TaskRecord) -> bool:
        if status and task.status.value != status:
            return False
        if task_type and task.type != task_type:
            return False
        return not (id_range and not id_range[0] <= task.id <= id_range[1])

    kept = [t for t in found.values() if keep(t)]
    if status == TaskStatus.SCHEDULED.value:
        # Soonest due first: the order they will run in.
        kept.sort(key=lambda t: t.run_at or t.created_at)
    else:
        kept.sort(key=lambda t: t.created_at, reverse=True)
    return kept[:limit]


async def find_task(queue: TaskQueue, pool: asyncpg.Pool, task_id: str) -> TaskRecord | None:
    """One task: the hot copy, else the durable one (None while Postgres is down)."""
    found = await tasks_by_id(queue, pool, [task_id], without_postgres=True)
    return found[0] if found else None
