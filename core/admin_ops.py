"""What administrators and the dashboard read and do: the counters and recent lists, dead
letters and their redrive, the purge, the audit trail. With several shards, counts are summed
over them and lists merged (newest first where their entries say when)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence

from redis.exceptions import ResponseError

from core import keys
from core.backlog import Backlog, read_backlog
from core.claims import waiting_list
from core.keys import QueueKeys
from core.models import Priority, TaskRecord, TaskStatus, new_task_id
from core.queue_base import QueueBase
from core.records import hot_record
from core.timeutil import now_ms


def _interleaved(lists: Iterable[list[str]], count: int) -> list[str]:
    """The heads of several newest-first lists, taken in turn: the first of each, then the second..."""
    merged = [v for row in itertools.zip_longest(*lists) for v in row if v is not None]
    return merged[:count]


class AdminOps(QueueBase):
    async def backlog(self) -> Backlog:
        """What waits, by priority, over every shard."""
        return await read_backlog(self.redis, self.shards)

    async def queue_length(self) -> int:
        """Tasks waiting to be claimed, over every priority (not the scheduled ones)."""
        return (await self.backlog()).queued

    async def stats(self) -> dict[str, int]:
        if len(self.shards) == 1:
            raw = await self.redis.hgetall(self.shards[0].stats)
            return {str(k): int(v) for k, v in raw.items()}
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in self.shards:
                pipe.hgetall(shard.stats)
            counters: dict[str, int] = {}
            for raw in await pipe.execute():
                for k, v in raw.items():
                    counters[str(k)] = counters.get(str(k), 0) + int(v)
        return counters

    async def _heads(self, which: Callable[[QueueKeys], str], count: int) -> list[list[str]]:
        """The first `count` entries of a list (`which` names it) in each shard."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in self.shards:
                pipe.lrange(which(shard), 0, count - 1)
            return [[str(v) for v in head] for head in await pipe.execute()]

    async def recent_durations(self, count: int = keys.DURATIONS_KEPT) -> list[tuple[float, float, str]]:
        """(completed epoch s, processing s, status) of the newest finished tasks, newest first."""
        out = []
        for head in await self._heads(lambda shard: shard.durations, count):
            for raw in head:
                ms, seconds, status = raw.split(":", 2)
                out.append((int(ms) / 1000, float(seconds), status))
        if len(self.shards) > 1:
            out.sort(key=lambda entry: entry[0], reverse=True)
        return out[:count]

    async def recent_ids(self, count: int) -> list[str]:
        # Newest first: the order matters, so no sorting here (shards taken in turn).
        return _interleaved(await self._heads(lambda shard: shard.recent, count), count)

    async def dead_ids(self, limit: int) -> tuple[int, list[str]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in self.shards:
                pipe.llen(shard.dead)
                pipe.lrange(shard.dead, 0, limit - 1)
            answers = await pipe.execute()
        total = sum(int(n) for n in answers[0::2])
        return total, _interleaved([[str(i) for i in ids] for ids in answers[1::2]], limit)

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
            shard = self.shard_for(task.id)
            if await self.redis.lrem(shard.dead, 0, task.id) == 0:
                continue  # not (or no longer) dead-lettered
            fresh = task.model_copy(
                update={"status": TaskStatus.QUEUED, "attempts": 0, "started_at": None, "completed_at": None}
            )
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(shard.task(task.id), hot_record(fresh))
                pipe.rpush(waiting_list(shard, task.priority), task.id)
                if task.priority is Priority.LOW:
                    pipe.zadd(shard.low_since, {task.id: now_ms()})
                pipe.hincrby(shard.stats, keys.STAT_FAILED, -1)
                await pipe.execute()
            moved.append(task.id)
        return moved

    async def take_queue(self) -> list[str]:
        """Atomically empty the waiting lists of every priority (an admin purge), shard by shard;
        returns the ids they held. Scheduled tasks and retries waiting out their backoff stay."""
        token = new_task_id()
        ids: list[str] = []
        for shard in self.shards:
            taken: list[str] = []
            for waiting in shard.queues:
                holding = shard.purging(f"{token}:{waiting.removeprefix(shard.prefix)}")
                try:
                    await self.redis.rename(waiting, holding)
                except ResponseError:  # no such key: that list was already empty
                    continue
                taken += [str(i) for i in await self.redis.lrange(holding, 0, -1) if i != keys.WAKE]
                await self.redis.delete(holding)
            if taken:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.hdel(shard.attempts, *taken)  # a requeued task may have counted attempts
                    pipe.zrem(shard.low_since, *taken)
                    await pipe.execute()
            ids += taken
        return ids
