"""New tasks into the queue: one task, a batch (all or none), or independent submissions coalesced.

With several shards, a task goes to the shard of its id, and a batch to one shard, its ids made to
map there: the shard of its Idempotency-Key (so a replay finds the key's record), else the next in
turn. The queue bound (QUEUE_MAX) applies per shard, a shard's share of it."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from core import keys
from core.keys import QueueKeys
from core.models import TaskSpec, TaskStatus
from core.queue_base import QueueBase
from core.records import NewTask, is_scheduled, queued_records
from core.scripts import IntakeLimits, Refused, Replay
from core.shards import ids_in_shard, shard_of, shard_of_key
from core.timeutil import epoch_ms, now


class QueueFull(Exception):
    """What enqueue() and enqueue_many() raise with their Refused; enqueue_each() returns it instead."""

    def __init__(self, refused: Refused) -> None:
        super().__init__(refused.reason)
        self.refused = refused

    @property
    def depth(self) -> int:
        return self.refused.depth

    @property
    def memory(self) -> bool:
        return self.refused.memory


class IdempotencyConflict(Exception):
    """The same Idempotency-Key came with a different body."""


@dataclass(frozen=True)
class Accepted:
    """A submission the queue took: what its 202 tells the client."""

    id: str
    type: str
    #: queued, or for a replay the task's status now
    status: TaskStatus
    position: int
    replayed: bool = False


@dataclass(frozen=True)
class AcceptedMany:
    #: the ids in the order of the submitted tasks
    ids: list[str]
    #: queue depth just before the batch went in; task i is at position depth + i + 1
    depth: int
    #: when this call built the records (for a replay, the stored ones are older)
    created_at: datetime
    replayed: bool = False
    #: how many of them wait for a scheduled time (the others are queued); 0 for a replay
    scheduled: int = 0


def batch_hash(submits: Sequence[TaskSpec]) -> str:
    """What an Idempotency-Key's body is compared by: each task's type, data and (when set)
    priority and schedule."""
    canonical = orjson.dumps(
        [
            {"type": s.type, "data": s.data}
            | s.model_dump(mode="json", include={"priority", "delay_seconds", "run_at"}, exclude_defaults=True)
            for s in submits
        ],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()[:32]


def _first_status(task: NewTask) -> TaskStatus:
    """A new task's status: scheduled when its route is a time."""
    return TaskStatus.SCHEDULED if is_scheduled(task[2]) else TaskStatus.QUEUED


class IntakeOps(QueueBase):
    _turns = itertools.count()

    @property
    def _intake_limits(self) -> IntakeLimits:
        # Each shard holds its share of the bound (rounded up), and of the recent list.
        n = len(self.shards)
        return IntakeLimits(-(-self.queue_max // n), -(-self.recent_kept // n), self.queue_max_bytes)

    def _batch_shard(self, idempotency_key: str | None) -> int:
        """Where a batch goes: its Idempotency-Key's shard, else the next in turn."""
        n = len(self.shards)
        if n == 1:
            return 0
        return shard_of_key(idempotency_key, n) if idempotency_key else next(self._turns) % n

    async def enqueue(
        self, submit: TaskSpec, idempotency_key: str | None = None, *, count_request: bool = False
    ) -> Accepted:
        """Store and queue a task atomically: enqueue_many() of one, so one set of rules (the queue
        bound, an Idempotency-Key's replay or conflict). Raises QueueFull or IdempotencyConflict.
        A replay returns the task as it is now."""
        many = await self.enqueue_many([submit], idempotency_key, count_request=count_request)
        task_id = many.ids[0]
        if many.replayed:
            stored = await self.get(task_id)
            return Accepted(task_id, submit.type, stored.status if stored else TaskStatus.QUEUED, 0, replayed=True)
        if many.scheduled:
            return Accepted(task_id, submit.type, TaskStatus.SCHEDULED, 0)
        return Accepted(task_id, submit.type, TaskStatus.QUEUED, many.depth + 1)

    async def enqueue_many(
        self, submits: Sequence[TaskSpec], idempotency_key: str | None = None, *, count_request: bool = False
    ) -> AcceptedMany:
        """Store and queue many tasks in one atomic step (all or none). Raises QueueFull or IdempotencyConflict.

        An Idempotency-Key covers the whole batch: the same key and body return the same ids.
        """
        created = now()
        records = queued_records(submits, created)
        index = self._batch_shard(idempotency_key)
        if len(self.shards) > 1:
            # A queued record leaves its id to its key (records.hot_record), so an id can change.
            moved = ids_in_shard([task_id for task_id, _, _ in records], index, len(self.shards))
            records = [(task_id, record, route) for task_id, (_, record, route) in zip(moved, records, strict=True)]
        body_hash = batch_hash(submits) if idempotency_key else ""
        outcome = await self._enqueue_many(
            records,
            self._intake_limits,
            shard=self.shards[index],
            now_ms=epoch_ms(created),
            count_request=count_request,
            idempotency_key=idempotency_key,
            body_hash=body_hash,
            idempotency_ttl=self.idempotency_ttl,
        )
        if isinstance(outcome, Refused):
            raise QueueFull(outcome)
        if isinstance(outcome, Replay):
            if outcome.body_hash != body_hash:
                raise IdempotencyConflict(outcome.ids[0])
            return AcceptedMany(outcome.ids, 0, created, replayed=True)
        return AcceptedMany(
            [task_id for task_id, _, _ in records],
            outcome,
            created,
            scheduled=sum(1 for _, _, route in records if is_scheduled(route)),
        )

    async def enqueue_each(
        self, submits: Sequence[TaskSpec], *, count_requests: bool = False
    ) -> list[Accepted | Refused]:
        """Store and queue independent tasks (no Idempotency-Key) in one round trip: each one is
        accepted or refused on its own, as enqueue() would (which raises its Refused as QueueFull).

        `count_requests` counts one API request per task, as enqueue(count_request=True) does.
        """
        created = now()
        records = queued_records(submits, created)
        limits, now_ms = self._intake_limits, epoch_ms(created)
        outcomes: Sequence[int | Refused]
        if len(self.shards) == 1:
            outcomes = await self._enqueue_each(
                records, limits, shard=self.shards[0], now_ms=now_ms, count_requests=count_requests
            )
        else:
            outcomes = await self._enqueue_each_sharded(records, limits, now_ms, count_requests)
        return [
            outcome if isinstance(outcome, Refused) else Accepted(task[0], submit.type, _first_status(task), outcome)
            for task, submit, outcome in zip(records, submits, outcomes, strict=True)
        ]

    async def _enqueue_each_sharded(
        self, records: Sequence[NewTask], limits: IntakeLimits, now_ms: int, count_requests: bool
    ) -> list[int | Refused]:
        """enqueue_each's step on each shard its tasks' ids name, at once; the outcomes in order."""
        n = len(self.shards)
        groups: dict[int, list[int]] = {}
        for at, (task_id, _, _) in enumerate(records):
            groups.setdefault(shard_of(task_id, n), []).append(at)

        async def one(shard: QueueKeys, places: list[int]) -> list[int | Refused]:
            tasks = [records[at] for at in places]
            return await self._enqueue_each(tasks, limits, shard=shard, now_ms=now_ms, count_requests=count_requests)

        outcomes: list[int | Refused] = [0] * len(records)
        answers = await asyncio.gather(*(one(self.shards[i], places) for i, places in groups.items()))
        for places, answer in zip(groups.values(), answers, strict=True):
            for at, outcome in zip(places, answer, strict=True):
                outcomes[at] = outcome
        return outcomes

    async def count_request(self) -> None:
        await self.redis.hincrby(self.shards[next(self._turns) % len(self.shards)].stats, keys.STAT_REQUESTS, 1)
