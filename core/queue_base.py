"""What every part of the queue works with: the client, the limits, the shards, the registered
scripts, and the task record reads and writes they share. core.queue.TaskQueue puts the parts
together.

The queue is split into shards (keys.QueueKeys; one on a single Redis by default): a task lives in
the shard of its id (core.shards), reads and writes by id go there, and what counts or lists the
whole queue sums or merges the shards. Every script call touches one shard's keys, so a Redis
Cluster carries each shard in one hash slot."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from core import keys
from core.keys import QueueKeys
from core.models import TaskRecord
from core.records import hot_record, read_record
from core.scripts import (
    AckMany,
    AgeLow,
    CancelWaiting,
    Claimed,
    ClaimMany,
    EnqueueEach,
    EnqueueMany,
    Lease,
    Promote,
    WriteBatch,
)
from core.shards import by_shard, shard_of


class QueueBase:
    def __init__(
        self,
        redis: Redis,
        *,
        result_ttl: int = 3600,
        recent_kept: int = 200,
        queue_max: int = 0,
        queue_max_bytes: int = 0,
        idempotency_ttl: int = 24 * 3600,
        dead_kept: int = keys.DEAD_KEPT,
        shards: Sequence[QueueKeys] = (keys.SINGLE,),
    ) -> None:
        self.redis = redis
        #: the keys of each shard (keys.shard_keys); changing their number needs an empty queue
        self.shards = tuple(shards)
        #: the shard this queue's next claim starts at: workers start apart, so with several shards
        #: their blocking claims (ClaimOps.claim) watch different ones
        self._claim_turn = random.randrange(len(self.shards))
        #: a cluster client: a command's keys must share a slot (MGET of workers' keys does not)
        self.cluster = isinstance(redis, RedisCluster)
        self.result_ttl = result_ttl
        self.recent_kept = recent_kept
        self.queue_max = queue_max
        #: Redis memory (used_memory) past which new tasks are refused: 0 = a share of maxmemory
        #: (scripts.MEMORY_SHARE_FOR_INTAKE), < 0 = none
        self.queue_max_bytes = queue_max_bytes
        self.dead_kept = dead_kept
        self.idempotency_ttl = idempotency_ttl
        self._lease = Lease(redis)
        self._enqueue_many = EnqueueMany(redis)
        self._enqueue_each = EnqueueEach(redis)
        self._claim_many = ClaimMany(redis)
        self._claimed = Claimed(redis)
        self._write_batch = WriteBatch(redis)
        self._ack_many = AckMany(redis)
        self._promote = Promote(redis)
        self._age_low = AgeLow(redis)
        self._cancel_waiting = CancelWaiting(redis)

    def shard_for(self, task_id: str) -> QueueKeys:
        """The keys of the shard that holds `task_id`."""
        shards = self.shards
        return shards[0] if len(shards) == 1 else shards[shard_of(task_id, len(shards))]

    def group_by_shard(self, task_ids: Sequence[str]) -> list[tuple[QueueKeys, list[str]]]:
        """`task_ids` grouped by the shard that holds them."""
        if len(self.shards) == 1:
            return [(self.shards[0], list(task_ids))]
        return [(self.shards[i], ids) for i, ids in by_shard(task_ids, len(self.shards)).items()]

    async def mget_shared(self, names: Sequence[str]) -> list[str | None]:
        """MGET of keys that no shard holds (the workers' heartbeats): one GET each, pipelined,
        on a cluster, where they sit in many slots."""
        if not self.cluster:
            found = await self.redis.mget(names)
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.get(name)
                found = await pipe.execute()
        return [None if value is None else str(value) for value in found]

    async def get(self, task_id: str) -> TaskRecord | None:
        raw = await self.redis.get(self.shard_for(task_id).task(task_id))
        return read_record(task_id, raw) if raw else None

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskRecord | None]:
        if not task_ids:
            return []
        if len(self.shards) == 1:
            raws = await self.redis.mget([self.shards[0].task(t) for t in task_ids])
            return [read_record(t, r) if r else None for t, r in zip(task_ids, raws, strict=True)]
        # One MGET per shard, at once (a cluster pipeline takes no multi-key command).
        groups = self.group_by_shard(task_ids)
        answers = await asyncio.gather(*(self.redis.mget([shard.task(t) for t in ids]) for shard, ids in groups))
        found = {t: r for (_, ids), raws in zip(groups, answers, strict=True) for t, r in zip(ids, raws, strict=True)}
        return [read_record(t, r) if (r := found[t]) else None for t in task_ids]

    async def save(self, task: TaskRecord) -> None:
        """Write a non-final state (e.g. processing)."""
        await self.redis.set(self.shard_for(task.id).task(task.id), hot_record(task))

    async def cache(self, task: TaskRecord) -> None:
        """Put a record read back from Postgres into Redis again, for later reads."""
        await self.redis.set(self.shard_for(task.id).task(task.id), task.model_dump_json(), ex=self.result_ttl, nx=True)
