"""New tasks into the queue: one task, a batch (all or none), or independent submissions coalesced."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from core import keys
from core.models import TaskSpec, TaskStatus
from core.queue_base import QueueBase
from core.records import NewTask, is_scheduled, queued_records
from core.scripts import IntakeLimits, Refused, Replay
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
    @property
    def _intake_limits(self) -> IntakeLimits:
        return IntakeLimits(self.queue_max, self.recent_kept, self.queue_max_bytes)

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
        body_hash = batch_hash(submits) if idempotency_key else ""
        outcome = await self._enqueue_many(
            records,
            self._intake_limits,
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
        outcomes = await self._enqueue_each(
            records, self._intake_limits, now_ms=epoch_ms(created), count_requests=count_requests
        )
        return [
            outcome if isinstance(outcome, Refused) else Accepted(task[0], submit.type, _first_status(task), outcome)
            for task, submit, outcome in zip(records, submits, outcomes, strict=True)
        ]

    async def count_request(self) -> None:
        await self.redis.hincrby(keys.STATS, keys.STAT_REQUESTS, 1)
