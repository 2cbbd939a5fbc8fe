"""A claim's life: a worker claims a task, writes its records, and acknowledges, retries later,
hands back or discards it.

The reliable-queue pattern: a claim atomically moves a task id from the queue into the worker's
own processing list, and only an acknowledgement removes it from there. A worker that dies leaves
its ids behind for the reaper (worker_registry).

With several shards a worker has a processing list in each (in that shard's hash slot), and claims
from the shards in turn: each claim starts at the shard after the one that gave it work last, so
every shard is drained at the same pace."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from core import keys
from core.keys import QueueKeys
from core.models import Priority, TaskRecord, TaskStatus
from core.queue_base import QueueBase
from core.records import ROUTE_NOW, FinalRecord, hot_record, read_record
from core.scripts import Due
from core.timeutil import now, now_ms

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
    #: a client asked to cancel it while it runs (QueueKeys.cancel_requests): it ends cancelled, unrun
    cancel_requested: bool = False

    @property
    def priority(self) -> Priority:
        return self.record.priority if self.record is not None else Priority.NORMAL

    @classmethod
    def read(cls, task_id: str, raw: str, attempt: int, cancel_requested: bool = False) -> Claim:
        """The claim of `task_id` whose record read `raw` ('' when there was none)."""
        if not raw:
            return cls(task_id, None, attempt, cancel_requested=cancel_requested)
        try:
            return cls(task_id, read_record(task_id, raw), attempt, cancel_requested=cancel_requested)
        except ValidationError as exc:
            log.warning("task %s has an unreadable record (%d validation errors)", task_id, exc.error_count())
            return cls(task_id, None, attempt, unreadable=raw, cancel_requested=cancel_requested)


#: How long a blocking claim waits on one shard when there are several (it watches one list): a
#: task that arrives in another shard waits at most about this long, past the claims' own time.
SHARD_BLOCK_SECONDS = 0.1


def waiting_list(shard: QueueKeys, priority: Priority) -> str:
    """The list of `shard` a task of `priority` waits in."""
    return {Priority.HIGH: shard.queue_high, Priority.NORMAL: shard.queue, Priority.LOW: shard.queue_low}[priority]


def _due(task_id: str, from_schedule: bool, raw: str | None) -> Due:
    """What Promote needs of a due task: its list, and for a scheduled one its queued record."""
    if not raw:
        return Due(task_id, from_schedule, "", ROUTE_NOW[Priority.NORMAL])  # purged: a claim drops it
    try:
        task = read_record(task_id, raw)
    except ValidationError:
        return Due(task_id, from_schedule, "", ROUTE_NOW[Priority.NORMAL])  # a claim dead-letters it
    record = hot_record(task.model_copy(update={"status": TaskStatus.QUEUED})) if from_schedule else ""
    return Due(task_id, from_schedule, record, ROUTE_NOW[task.priority])


class ClaimOps(QueueBase):
    async def claim(self, worker_id: str, block_seconds: int) -> str | None:
        """Block up to `block_seconds` for a task id of the normal list, moving it into this
        worker's processing list. None also when a wake-up came instead (keys.WAKE: a high or low
        task arrived while the normal list was empty): claim_many() takes it.

        With several shards, it blocks SHARD_BLOCK_SECONDS on the next shard in turn instead."""
        timeout: float
        if len(self.shards) == 1:
            shard, timeout = self.shards[0], block_seconds
        else:
            shard, timeout = self.shards[self._claim_turn % len(self.shards)], SHARD_BLOCK_SECONDS
            self._claim_turn += 1
        async with self.redis.pipeline(transaction=False) as pipe:
            # One round trip: say we block (QueueKeys.workers_blocked), then block.
            pipe.zadd(shard.workers_blocked, {worker_id: now_ms()})
            pipe.execute_command("BLMOVE", shard.queue, shard.processing(worker_id), "RIGHT", "LEFT", timeout)
            _, task_id = await pipe.execute()
        if task_id == keys.WAKE:
            await self.redis.lrem(shard.processing(worker_id), 1, keys.WAKE)
            return None
        return None if task_id is None else str(task_id)

    async def claim_many(self, worker_id: str, count: int) -> list[Claim]:
        """Claim up to `count` ids without blocking, atomically, with their records and attempts:
        from the first shard, in turn, that has any."""
        shards = self.shards
        claimed: list[tuple[str, str, int, bool]] = []
        for step in range(len(shards)):
            at = (self._claim_turn + step) % len(shards)
            claimed = await self._claim_many(shard=shards[at], worker_id=worker_id, count=count)
            if claimed:
                self._claim_turn = at + 1
                break
        # Each record read on its own: one unreadable record must not cost the others their claim.
        return [Claim.read(task_id, raw, attempt, cancel) for task_id, raw, attempt, cancel in claimed]

    async def claimed(self, task_id: str) -> Claim:
        """Read the record of an id claim() took, counting the attempt about to start."""
        raw, attempt, cancel = await self._claimed(shard=self.shard_for(task_id), task_id=task_id)
        return Claim.read(task_id, raw, attempt, cancel)

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
        if not saves and not finals:
            return
        if len(self.shards) == 1:
            await self._write_batch(
                shard=self.shards[0], saves=saves, finals=finals, result_ttl=self.result_ttl, dead_kept=self.dead_kept
            )
            return
        per_shard: dict[QueueKeys, tuple[list[TaskRecord], list[FinalRecord]]] = {}
        for task in saves:
            per_shard.setdefault(self.shard_for(task.id), ([], []))[0].append(task)
        for final in finals:
            per_shard.setdefault(self.shard_for(final.id), ([], []))[1].append(final)
        await asyncio.gather(
            *(
                self._write_batch(
                    shard=shard, saves=own, finals=done, result_ttl=self.result_ttl, dead_kept=self.dead_kept
                )
                for shard, (own, done) in per_shard.items()
            )
        )

    async def ack(self, worker_id: str, task_id: str) -> None:
        await self.ack_many(worker_id, [task_id])

    async def ack_many(self, worker_id: str, task_ids: Sequence[str]) -> None:
        if not task_ids:
            return
        if len(self.shards) == 1:
            await self._ack_many(shard=self.shards[0], worker_id=worker_id, task_ids=task_ids)
            return
        await asyncio.gather(
            *(
                self._ack_many(shard=shard, worker_id=worker_id, task_ids=ids)
                for shard, ids in self.group_by_shard(task_ids)
            )
        )

    async def expire_records(self, task_ids: Sequence[str]) -> None:
        """Give final records written without it (a cancel's) the result TTL, once committed."""
        if task_ids:
            async with self.redis.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    pipe.expire(self.shard_for(task_id).task(task_id), self.result_ttl)
                await pipe.execute()

    async def retry_later(self, worker_id: str, task: TaskRecord, delay: float) -> None:
        """Park a failed attempt until its backoff is over; it leaves our processing list at once."""
        due_ms = int((now().timestamp() + delay) * 1000)
        shard = self.shard_for(task.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(shard.task(task.id), hot_record(task))
            pipe.zadd(shard.delayed, {task.id: due_ms})
            pipe.lrem(shard.processing(worker_id), 1, task.id)
            pipe.hincrby(shard.stats, keys.STAT_RETRIED, 1)
            await pipe.execute()

    async def promote_due(self, limit: int = 1000) -> int:
        """Queue the scheduled tasks and retries whose time has come, each at the head of its
        priority's list, the earliest due first (run by the leader only). A scheduled task's
        record turns queued as it moves; a retry stays `retrying` until claimed. Up to `limit`
        per shard."""
        moved = 0
        for shard in self.shards:
            moved += await self._promote_due(shard, limit)
        return moved

    async def _promote_due(self, shard: QueueKeys, limit: int) -> int:
        current = now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(shard.scheduled, "-inf", current, start=0, num=limit, withscores=True)
            pipe.zrangebyscore(shard.delayed, "-inf", current, start=0, num=limit, withscores=True)
            scheduled, retries = await pipe.execute()
        if not scheduled and not retries:
            return 0
        entries = sorted(
            [(score, str(task_id), True) for task_id, score in scheduled]
            + [(score, str(task_id), False) for task_id, score in retries]
        )[:limit]
        # Latest due first: each joins the head of its list, so the earliest ends up claimed first.
        entries.reverse()
        raws = await self.redis.mget([shard.task(task_id) for _, task_id, _ in entries])
        due = [
            _due(task_id, from_schedule, str(raw) if raw else None)
            for (_, task_id, from_schedule), raw in zip(entries, raws, strict=True)
        ]
        return await self._promote(due, shard=shard, now_ms=current)

    async def age_low(self, waited_seconds: float, limit: int = 1000) -> int:
        """Move low-priority tasks that waited `waited_seconds` to the head of the normal list
        (up to `limit` per shard)."""
        cutoff_ms = round((now().timestamp() - waited_seconds) * 1000)
        moved = 0
        for shard in self.shards:
            moved += await self._age_low(shard=shard, cutoff_ms=cutoff_ms, limit=limit)
        return moved

    async def release(self, worker_id: str, task_id: str, priority: Priority = Priority.NORMAL) -> None:
        """Hand an unstarted or abandoned claim back to the head of its priority's list."""
        shard = self.shard_for(task_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(shard.processing(worker_id), 1, task_id)
            pipe.rpush(waiting_list(shard, priority), task_id)
            if priority is Priority.LOW:
                pipe.zadd(shard.low_since, {task_id: now_ms()}, nx=True)
            await pipe.execute()

    async def discard(self, worker_id: str, task_id: str) -> None:
        """Drop a claim that can never become a task (an unreadable record under an id that is no
        task id): its claim, attempt count and record go. No task id names its shard, so with
        several shards every one is tried."""
        for shard in self.shards:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lrem(shard.processing(worker_id), 1, task_id)
                pipe.hdel(shard.attempts, task_id)
                pipe.delete(shard.task(task_id))
                await pipe.execute()
