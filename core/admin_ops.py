"""What administrators and the dashboard read and do: the counters and recent lists, dead
letters and their redrive, the purge, the audit trail."""

from __future__ import annotations

from collections.abc import Sequence

from redis.exceptions import ResponseError

from core import keys
from core.backlog import read_backlog
from core.claims import waiting_list
from core.models import Priority, TaskRecord, TaskStatus, new_task_id
from core.queue_base import QueueBase
from core.timeutil import now_ms


class AdminOps(QueueBase):
    async def queue_length(self) -> int:
        """Tasks waiting to be claimed, over every priority (not the scheduled ones)."""
        return (await read_backlog(self.redis)).queued

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

    async def dead_ids(self, limit: int) -> tuple[int, list[str]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(keys.DEAD)
            pipe.lrange(keys.DEAD, 0, limit - 1)
            total, ids = await pipe.execute()
        return int(total), [str(i) for i in ids]

    async def record_audit(self, entry: bytes) -> None:
        """Keep an admin action's audit entry (JSON), newest first, the newest ADMIN_AUDIT_KEPT only."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(keys.ADMIN_AUDIT, entry)
            pipe.ltrim(keys.ADMIN_AUDIT, 0, keys.ADMIN_AUDIT_KEPT - 1)
            await pipe.execute()

    async def take_redrive_lock(self, hold_ms: int) -> bool:
        return bool(await self.redis.set(keys.REDRIVE_LOCK, "1", nx=True, px=hold_ms))

    async def redrive(self, tasks: Sequence[TaskRecord]) -> list[str]:
        """Put dead-lettered tasks back at the head of the queue with a fresh set of attempts."""
        moved: list[str] = []
        for task in tasks:
            if await self.redis.lrem(keys.DEAD, 0, task.id) == 0:
                continue  # not (or no longer) dead-lettered
            fresh = task.model_copy(
                update={"status": TaskStatus.QUEUED, "attempts": 0, "started_at": None, "completed_at": None}
            )
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(keys.task(task.id), fresh.model_dump_json())
                pipe.rpush(waiting_list(task.priority), task.id)
                if task.priority is Priority.LOW:
                    pipe.zadd(keys.LOW_SINCE, {task.id: now_ms()})
                pipe.hincrby(keys.STATS, keys.STAT_FAILED, -1)
                await pipe.execute()
            moved.append(task.id)
        return moved

    async def take_queue(self) -> list[str]:
        """Atomically empty the waiting lists of every priority (an admin purge); returns the ids
        they held. Scheduled tasks and retries waiting out their backoff stay."""
        token = new_task_id()
        ids: list[str] = []
        for waiting in keys.QUEUES:
            holding = keys.purging(f"{token}:{waiting}")
            try:
                await self.redis.rename(waiting, holding)
            except ResponseError:  # no such key: that list was already empty
                continue
            ids += [str(i) for i in await self.redis.lrange(holding, 0, -1) if i != keys.WAKE]
            await self.redis.delete(holding)
        if ids:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(keys.ATTEMPTS, *ids)  # a requeued task may have counted attempts
                pipe.zrem(keys.LOW_SINCE, *ids)
                await pipe.execute()
        return ids
