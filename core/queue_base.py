"""What every part of the queue works with: the client, the limits, the registered scripts, and
the task record reads and writes they share. core.queue.TaskQueue puts the parts together."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from core import keys
from core.models import TaskRecord
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
    ) -> None:
        self.redis = redis
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
