"""Queue operations on Redis: the one protocol the gateway, workers, reaper and dashboard share.

The reliable-queue pattern: a claim atomically moves a task id from the queue into the
worker's own processing list (BLMOVE), and only an acknowledgement removes it from there.
A worker that dies leaves its ids behind; the reaper moves them back once its heartbeat
has expired. Nothing here scans the keyspace.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from core import keys
from core.models import TaskRecord, TaskStatus, TaskSubmit, new_task_id
from core.timeutil import now

# Take the lock if free, or extend it if we already hold it; never steal it.
_LEAD_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""


def _strs(values: Iterable[Any]) -> list[str]:
    """The client decodes replies (decode_responses=True); redis-py's types can't know that."""
    return sorted(str(v) for v in values)


class TaskQueue:
    def __init__(self, redis: Redis, *, result_ttl: int = 3600, recent_kept: int = 200) -> None:
        self.redis = redis
        self.result_ttl = result_ttl
        self.recent_kept = recent_kept
        self._lead = redis.register_script(_LEAD_SCRIPT)

    # -- producers -------------------------------------------------------------------------

    async def enqueue(self, submit: TaskSubmit) -> tuple[TaskRecord, int]:
        """Store and queue a task in one MULTI; returns it and its position in the queue."""
        task = TaskRecord(id=new_task_id(), type=submit.type, data=submit.data, created_at=now())
        async with self.redis.pipeline(transaction=True) as pipe:
            # No TTL while the task is not final: the earlier demo expired queued tasks.
            pipe.set(keys.task(task.id), task.model_dump_json())
            pipe.lpush(keys.QUEUE, task.id)
            pipe.hincrby(keys.STATS, keys.STAT_ACCEPTED, 1)
            pipe.lpush(keys.RECENT, task.id)
            pipe.ltrim(keys.RECENT, 0, self.recent_kept - 1)
            replies = await pipe.execute()
        return task, int(replies[1])

    async def count_request(self) -> None:
        await self.redis.hincrby(keys.STATS, keys.STAT_REQUESTS, 1)

    # -- task records ----------------------------------------------------------------------

    async def get(self, task_id: str) -> TaskRecord | None:
        raw = await self.redis.get(keys.task(task_id))
        return TaskRecord.model_validate_json(raw) if raw else None

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskRecord | None]:
        if not task_ids:
            return []
        raws = await self.redis.mget([keys.task(t) for t in task_ids])
        return [TaskRecord.model_validate_json(r) if r else None for r in raws]

    async def save(self, task: TaskRecord) -> None:
        """Write a non-final state (e.g. processing)."""
        await self.redis.set(keys.task(task.id), task.model_dump_json())

    async def cache(self, task: TaskRecord) -> None:
        """Put a record read back from Postgres into Redis again, for later reads."""
        await self.redis.set(keys.task(task.id), task.model_dump_json(), ex=self.result_ttl, nx=True)

    async def finish(self, task: TaskRecord) -> None:
        """Write a final state and count it, atomically; the hot copy then expires."""
        counter = keys.STAT_COMPLETED if task.status is TaskStatus.COMPLETED else keys.STAT_FAILED
        finished_ms = int((task.completed_at or now()).timestamp() * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.task(task.id), task.model_dump_json(), ex=self.result_ttl)
            pipe.hincrby(keys.STATS, counter, 1)
            pipe.lpush(keys.DURATIONS, f"{finished_ms}:{task.processing_time or 0:.6f}:{task.status.value}")
            pipe.ltrim(keys.DURATIONS, 0, keys.DURATIONS_KEPT - 1)
            await pipe.execute()

    # -- consumers -------------------------------------------------------------------------

    async def claim(self, worker_id: str, block_seconds: int) -> str | None:
        """Block up to `block_seconds` for a task id, moving it into this worker's processing list."""
        task_id = await self.redis.blmove(keys.QUEUE, keys.processing(worker_id), block_seconds, "RIGHT", "LEFT")
        return None if task_id is None else str(task_id)

    async def ack(self, worker_id: str, task_id: str) -> None:
        await self.redis.lrem(keys.processing(worker_id), 1, task_id)

    async def release(self, worker_id: str, task_id: str) -> None:
        """Hand an unstarted or abandoned claim back to the head of the queue."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(keys.processing(worker_id), 1, task_id)
            pipe.rpush(keys.QUEUE, task_id)
            await pipe.execute()

    # -- workers ---------------------------------------------------------------------------

    async def beat(self, worker_id: str, payload: dict[str, Any], ttl: int) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.heartbeat(worker_id), orjson.dumps(payload), ex=ttl)
            pipe.sadd(keys.WORKERS, worker_id)
            await pipe.execute()

    async def deregister(self, worker_id: str) -> None:
        """A clean exit: gone at once, not after the heartbeat TTL. Leftover claims stay for the reaper."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.heartbeat(worker_id))
            pipe.llen(keys.processing(worker_id))
            _, left = await pipe.execute()
        if not left:
            await self.redis.srem(keys.WORKERS, worker_id)

    async def live_workers(self) -> list[dict[str, Any]]:
        """Heartbeats of workers whose heartbeat key has not expired."""
        ids = _strs(await self.redis.smembers(keys.WORKERS))
        if not ids:
            return []
        beats = await self.redis.mget([keys.heartbeat(w) for w in ids])
        return [orjson.loads(b) for b in beats if b]

    async def queue_length(self) -> int:
        return int(await self.redis.llen(keys.QUEUE))

    async def in_flight(self) -> int:
        """Tasks claimed and not yet acknowledged, over every registered worker."""
        ids = _strs(await self.redis.smembers(keys.WORKERS))
        if not ids:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.llen(keys.processing(worker_id))
            return sum(int(n) for n in await pipe.execute())

    async def stats(self) -> dict[str, int]:
        raw = await self.redis.hgetall(keys.STATS)
        return {str(k): int(v) for k, v in raw.items()}

    async def recent_durations(self, count: int = keys.DURATIONS_KEPT) -> list[tuple[float, float, str]]:
        """(completed epoch s, processing s, status) of the newest finished tasks, newest first."""
        out = []
        for raw in await self.redis.lrange(keys.DURATIONS, 0, count - 1):
            ms, seconds, status = str(raw).split(":", 2)
            out.append((int(ms) / 1000, float(seconds), status))
        return out

    async def recent_ids(self, count: int) -> list[str]:
        # Newest first: the order matters, so no sorting here.
        return [str(v) for v in await self.redis.lrange(keys.RECENT, 0, count - 1)]

    # -- reaper ----------------------------------------------------------------------------

    async def lead(self, holder: str, ttl_ms: int) -> bool:
        return bool(await self._lead(keys=[keys.REAPER_LEADER], args=[holder, ttl_ms]))

    async def reap_dead_workers(self) -> list[str]:
        """Requeue every in-flight task of workers whose heartbeat expired; returns the task ids."""
        ids = _strs(await self.redis.smembers(keys.WORKERS))
        if not ids:
            return []
        beats = await self.redis.mget([keys.heartbeat(w) for w in ids])
        requeued: list[str] = []
        for worker_id, beat in zip(ids, beats, strict=True):
            if beat:
                continue
            while True:
                # One id at a time, each move atomic: a crash mid-reap loses nothing.
                moved = await self.redis.lmove(keys.processing(worker_id), keys.QUEUE, "RIGHT", "RIGHT")
                if moved is None:
                    break
                task_id = str(moved)
                await self._mark_requeued(task_id, worker_id)
                requeued.append(task_id)
            await self.redis.srem(keys.WORKERS, worker_id)
        return requeued

    async def _mark_requeued(self, task_id: str, worker_id: str) -> None:
        task = await self.get(task_id)
        await self.redis.hincrby(keys.STATS, keys.STAT_REQUEUED, 1)
        # A final record means the worker died between writing it and acking: the next
        # claimer only persists and acks it, so leave the record alone.
        if task is None or task.status.is_final:
            return
        task.status = TaskStatus.QUEUED
        task.error = f"worker {worker_id} died while running this task; requeued"
        await self.save(task)
