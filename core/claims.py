"""A claim's life: a worker claims a task, writes its records, and acknowledges, retries later,
hands back or discards it.

The reliable-queue pattern: a claim atomically moves a task id from the queue into the worker's
own processing list, and only an acknowledgement removes it from there. A worker that dies leaves
its ids behind for the reaper (worker_registry)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from core import keys
from core.models import TaskRecord
from core.queue_base import QueueBase
from core.records import FinalRecord
from core.timeutil import now

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """A task a worker claimed: its record (None: purged meanwhile, or unreadable) and which attempt this is."""

    id: str
    record: TaskRecord | None
    #: 1 for the first claim; counts every claim until the task is acknowledged (retries too)
    attempt: int
    #: the stored text when it is no valid task record (written by hand or by a broken client):
    #: the worker fails the task instead of running it
    unreadable: str | None = None

    @classmethod
    def read(cls, task_id: str, raw: str, attempt: int) -> Claim:
        """The claim of `task_id` whose record read `raw` ('' when there was none)."""
        if not raw:
            return cls(task_id, None, attempt)
        try:
            return cls(task_id, TaskRecord.model_validate_json(raw), attempt)
        except ValidationError as exc:
            log.warning("task %s has an unreadable record (%d validation errors)", task_id, exc.error_count())
            return cls(task_id, None, attempt, unreadable=raw)


class ClaimOps(QueueBase):
    async def claim(self, worker_id: str, block_seconds: int) -> str | None:
        """Block up to `block_seconds` for a task id, moving it into this worker's processing list."""
        task_id = await self.redis.blmove(keys.QUEUE, keys.processing(worker_id), block_seconds, "RIGHT", "LEFT")
        return None if task_id is None else str(task_id)

    async def claim_many(self, worker_id: str, count: int) -> list[Claim]:
        """Claim up to `count` ids without blocking, atomically, with their records and attempts."""
        # Each record read on its own: one unreadable record must not cost the others their claim.
        return [
            Claim.read(task_id, raw, attempt)
            for task_id, raw, attempt in await self._claim_many(worker_id=worker_id, count=count)
        ]

    async def claimed(self, task_id: str) -> Claim:
        """Read the record of an id claim() took, counting the attempt about to start."""
        raw, attempt = await self._claimed(task_id=task_id)
        return Claim.read(task_id, raw, attempt)

    async def finish(self, task: TaskRecord) -> None:
        """Write a final state and count it, atomically; the hot copy then expires.

        A failed task also enters the dead-letter queue, where it waits for a redrive.
        """
        await self.write_batch((), (task,))

    async def write_batch(self, saves: Sequence[TaskRecord], finals: Sequence[TaskRecord]) -> None:
        """save() of each of `saves` and finish() of each of `finals`, in one atomic command."""
        await self.write_encoded(saves, [FinalRecord.of(task) for task in finals])

    async def write_encoded(self, saves: Sequence[TaskRecord], finals: Sequence[FinalRecord]) -> None:
        """write_batch() of final records already encoded.

        Never refused for memory (allow-oom): the byte budget keeps room for these writes, and
        refusing them would leave accepted tasks unfinished."""
        if saves or finals:
            await self._write_batch(saves=saves, finals=finals, result_ttl=self.result_ttl, dead_kept=self.dead_kept)

    async def ack(self, worker_id: str, task_id: str) -> None:
        await self.ack_many(worker_id, [task_id])

    async def ack_many(self, worker_id: str, task_ids: Sequence[str]) -> None:
        if task_ids:
            await self._ack_many(worker_id=worker_id, task_ids=task_ids)

    async def retry_later(self, worker_id: str, task: TaskRecord, delay: float) -> None:
        """Park a failed attempt until its backoff is over; it leaves our processing list at once."""
        due_ms = int((now().timestamp() + delay) * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.task(task.id), task.model_dump_json())
            pipe.zadd(keys.DELAYED, {task.id: due_ms})
            pipe.lrem(keys.processing(worker_id), 1, task.id)
            pipe.hincrby(keys.STATS, keys.STAT_RETRIED, 1)
            await pipe.execute()

    async def promote_due(self, limit: int = 1000) -> int:
        """Queue the retries whose backoff is over (run by the leader only)."""
        return await self._promote_due(now_ms=int(now().timestamp() * 1000), limit=limit)

    async def release(self, worker_id: str, task_id: str) -> None:
        """Hand an unstarted or abandoned claim back to the head of the queue."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(keys.processing(worker_id), 1, task_id)
            pipe.rpush(keys.QUEUE, task_id)
            await pipe.execute()

    async def discard(self, worker_id: str, task_id: str) -> None:
        """Drop a claim that can never become a task (an unreadable record under an id that is no
        task id): its claim, attempt count and record go."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(keys.processing(worker_id), 1, task_id)
            pipe.hdel(keys.ATTEMPTS, task_id)
            pipe.delete(keys.task(task_id))
            await pipe.execute()
