"""Which workers live: their heartbeats and registry, what they hold, and the reaper that
requeues what a dead one held. Nothing here scans the keyspace: the registry names every worker
that may own a processing list (one in each shard).

The registry and the heartbeats are no shard's: on a Redis Cluster they sit in many slots, so they
are written in a pipeline (not MULTI) and read by mget_shared."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from core import keys
from core.claims import waiting_list
from core.keys import QueueKeys
from core.models import Priority, TaskStatus
from core.queue_base import QueueBase
from core.timeutil import now_ms


def _strs(values: Iterable[Any]) -> list[str]:
    """The client decodes replies (decode_responses=True); redis-py's types can't know that."""
    return sorted(str(v) for v in values)


class WorkerOps(QueueBase):
    async def beat(self, worker_id: str, payload: dict[str, Any], ttl: int) -> None:
        # The beat first: a registered worker without one is dead to the reaper.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.heartbeat(worker_id), orjson.dumps(payload), ex=ttl)
            pipe.sadd(keys.WORKERS, worker_id)
            await pipe.execute()

    async def deregister(self, worker_id: str) -> None:
        """A clean exit: gone at once, not after the heartbeat TTL. Leftover claims stay for the reaper."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(keys.heartbeat(worker_id))
            for shard in self.shards:
                pipe.zrem(shard.workers_blocked, worker_id)
                pipe.llen(shard.processing(worker_id))
            left = (await pipe.execute())[2::2]
        if not any(left):
            await self.redis.srem(keys.WORKERS, worker_id)

    async def live_workers(self) -> list[dict[str, Any]]:
        """Heartbeats of workers whose heartbeat key has not expired."""
        ids = _strs(await self.redis.smembers(keys.WORKERS))
        if not ids:
            return []
        beats = await self.mget_shared([keys.heartbeat(w) for w in ids])
        return [orjson.loads(b) for b in beats if b]

    async def in_flight(self) -> int:
        """Tasks claimed and not yet acknowledged, over every registered worker and shard."""
        ids = _strs(await self.redis.smembers(keys.WORKERS))
        if not ids:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                for shard in self.shards:
                    pipe.llen(shard.processing(worker_id))
            return sum(int(n) for n in await pipe.execute())

    # -- reaper ----------------------------------------------------------------------------

    async def lead(self, holder: str, ttl_ms: int) -> bool:
        """Whether `holder` is the one reaper for the next `ttl_ms`."""
        return await self._lease(lease=keys.REAPER_LEADER, holder=holder, ttl_ms=ttl_ms)

    async def reap_dead_workers(self) -> list[str]:
        """Requeue every in-flight task of workers whose heartbeat expired, in every shard;
        returns the task ids."""
        stale_ms = now_ms() - keys.BLOCKED_FRESH_MS
        for shard in self.shards:
            await self.redis.zremrangebyscore(shard.workers_blocked, "-inf", stale_ms)
        ids = _strs(await self.redis.smembers(keys.WORKERS))
        if not ids:
            return []
        beats = await self.mget_shared([keys.heartbeat(w) for w in ids])
        requeued: list[str] = []
        for worker_id, beat in zip(ids, beats, strict=True):
            if beat:
                continue
            for shard in self.shards:
                requeued += await self._requeue(shard, worker_id)
            await self.redis.srem(keys.WORKERS, worker_id)
        return requeued

    async def _requeue(self, shard: QueueKeys, worker_id: str) -> list[str]:
        """Requeue a dead worker's claims in one shard."""
        processing = shard.processing(worker_id)
        requeued: list[str] = []
        while True:
            # One id at a time, marked before it moves: once in the queue, a claimer may finish
            # it at once (a poison task is failed on that claim), and a mark written after that
            # would turn its final record back into `queued`. Nothing but this reaper touches a
            # dead worker's list; a crash between mark and move leaves the id for the next reap.
            oldest = await self.redis.lindex(processing, -1)
            if oldest is None:
                break
            task_id = str(oldest)
            priority = await self._mark_requeued(shard, task_id, worker_id)
            await self.redis.lmove(processing, waiting_list(shard, priority), "RIGHT", "RIGHT")
            if priority is Priority.LOW:
                await self._note_low(shard, task_id)
            requeued.append(task_id)
        return requeued

    async def _mark_requeued(self, shard: QueueKeys, task_id: str, worker_id: str) -> Priority:
        """Mark a dead worker's task queued again; returns the priority whose list it goes back to."""
        task = await self.get(task_id)
        await self.redis.hincrby(shard.stats, keys.STAT_REQUEUED, 1)
        # A final record means the worker died between writing it and acking: the next
        # claimer only persists and acks it, so leave the record alone.
        if task is None or task.status.is_final:
            return Priority.NORMAL
        task.status = TaskStatus.QUEUED
        task.error = f"worker {worker_id} died while running this task; requeued"
        await self.save(task)
        return task.priority

    async def _note_low(self, shard: QueueKeys, task_id: str) -> None:
        """A task back in the low list: note since when it waits (QueueKeys.low_since). No wake-up:
        a blocked worker claims again within its blocking claim's timeout (a second)."""
        await self.redis.zadd(shard.low_since, {task_id: now_ms()}, nx=True)
