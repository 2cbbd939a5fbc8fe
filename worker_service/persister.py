"""Writes final records to Postgres in batches, and acknowledges them only after the commit.

Kept apart from the execution slots: while Postgres is down, workers go on running tasks
(results wait here and in Redis, still unacknowledged in the processing list) until the
buffer is full; then claiming pauses. If this worker dies, its unacknowledged claims go back
to the queue and the next claimer, seeing the final record in Redis, only persists and acks.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from redis.exceptions import RedisError

from core import db
from core.models import TaskRecord, TaskStatus
from core.queue import TaskQueue
from core.retry import until_done

log = logging.getLogger(__name__)


class Persister:
    def __init__(
        self, queue: TaskQueue, pool: asyncpg.Pool, worker_id: str, *, batch_max: int = 500, capacity: int = 5000
    ) -> None:
        self.queue = queue
        self.pool = pool
        self.worker_id = worker_id
        self.batch_max = batch_max
        self.capacity = capacity
        self._pending: list[TaskRecord] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, task: TaskRecord) -> None:
        self._pending.append(task)
        self._idle.clear()
        self._wake.set()
        if len(self._pending) >= self.capacity:
            self._room.clear()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self.batch_max]
                await self._commit_and_ack(batch)
                del self._pending[: len(batch)]
                if len(self._pending) < self.capacity:
                    self._room.set()
            self._idle.set()

    async def _commit_and_ack(self, batch: list[TaskRecord]) -> None:
        try:
            await self._upsert(batch)
        except asyncpg.PostgresError as exc:
            # Postgres refused the batch itself (not an outage): store it row by row, so one
            # unstorable record neither blocks the others nor stops this loop.
            log.error("a batch of %d results was refused (%s); storing them one by one", len(batch), exc)
            for task in batch:
                await self._commit_one(task)
        ids = [t.id for t in batch]
        await until_done(lambda: self.queue.ack_many(self.worker_id, ids), what="ack", retry_on=(RedisError, OSError))

    async def _upsert(self, batch: list[TaskRecord]) -> None:
        await until_done(
            lambda: db.upsert_tasks(self.pool, batch), what="persist results", retry_on=db.UNAVAILABLE_ERRORS
        )

    async def _commit_one(self, task: TaskRecord) -> None:
        try:
            await self._upsert([task])
        except asyncpg.PostgresError as exc:
            # Acked without a durable row it would wait forever, and block its worker's shutdown:
            # keep a row that says what happened; the full record stays in Redis until its TTL.
            log.error("task %s cannot be stored in Postgres (%s); storing it as failed", task.id, exc)
            stand_in = task.model_copy(
                update={
                    "status": TaskStatus.FAILED,
                    "data": {},
                    "result": None,
                    "error": f"not storable in Postgres: {type(exc).__name__}: {exc}",
                }
            )
            await self._upsert([stand_in])

    async def flush(self, within: float) -> bool:
        """Wait until everything handed in is committed and acknowledged; False past `within` s."""
        try:
            await asyncio.wait_for(self._idle.wait(), max(within, 0.0))
        except TimeoutError:
            log.warning("%d result(s) not yet persisted at shutdown; their claims stay for the reaper", len(self))
            return False
        return True
