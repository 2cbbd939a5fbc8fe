"""Takes final records through their three steps, in batches: written to Redis (the hot copy,
visible at once, and counted), committed to Postgres, and only then acknowledged.

Two loops, so a Postgres outage does not hide results: while Postgres is down, finished tasks
still show their final record in Redis, and workers go on running tasks (results wait here,
still unacknowledged in the processing list) until the buffer is full; then claiming pauses.
If this worker dies, its unacknowledged claims go back to the queue and the next claimer,
seeing the final record in Redis, only persists and acks.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import asyncpg

from core import db
from core.models import TaskRecord, TaskStatus
from core.queue import REDIS_ERRORS, TaskQueue
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
        #: final records not yet written to Redis
        self._unrecorded: list[TaskRecord] = []
        #: written to Redis, with the JSON written there: waiting for the commit, then the ack
        self._pending: list[tuple[TaskRecord, str]] = []
        self._record_wake = asyncio.Event()
        self._commit_wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._unrecorded) + len(self._pending)

    def put(self, task: TaskRecord, *, recorded: bool = False) -> None:
        """Hand in a final record; `recorded`: Redis already holds it (a claim of a task whose
        worker died before the ack), so it is neither written nor counted again."""
        if recorded:
            self._pending.append((task, task.model_dump_json()))
            self._commit_wake.set()
        else:
            self._unrecorded.append(task)
            self._record_wake.set()
        self._idle.clear()
        if len(self) >= self.capacity:
            self._room.clear()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as loops:
            loops.create_task(self._record_loop())
            loops.create_task(self._commit_loop())

    async def _record_loop(self) -> None:
        while True:
            await self._record_wake.wait()
            self._record_wake.clear()
            while self._unrecorded:
                batch = self._unrecorded[: self.batch_max]
                encoded = await until_done(
                    functools.partial(self.queue.write_batch, (), batch), what="record results", retry_on=REDIS_ERRORS
                )
                del self._unrecorded[: len(batch)]
                self._pending += zip(batch, encoded, strict=True)
                self._commit_wake.set()

    async def _commit_loop(self) -> None:
        while True:
            await self._commit_wake.wait()
            self._commit_wake.clear()
            while self._pending:
                batch = self._pending[: self.batch_max]
                await self._commit_and_ack(batch)
                del self._pending[: len(batch)]
                if len(self) < self.capacity:
                    self._room.set()
            if not self._unrecorded:
                self._idle.set()

    async def _commit_and_ack(self, batch: list[tuple[TaskRecord, str]]) -> None:
        try:
            await until_done(
                lambda: db.upsert_records(self.pool, [(t.id, raw) for t, raw in batch]),
                what="persist results",
                retry_on=db.UNAVAILABLE_ERRORS,
            )
        except asyncpg.PostgresError as exc:
            # Postgres refused the batch itself (not an outage): store it row by row, so one
            # unstorable record neither blocks the others nor stops this loop.
            log.error("a batch of %d results was refused (%s); storing them one by one", len(batch), exc)
            for task, _ in batch:
                await self._commit_one(task)
        ids = [t.id for t, _ in batch]
        await until_done(lambda: self.queue.ack_many(self.worker_id, ids), what="ack", retry_on=REDIS_ERRORS)

    async def _upsert(self, task: TaskRecord) -> None:
        await until_done(
            lambda: db.upsert_tasks(self.pool, [task]), what="persist results", retry_on=db.UNAVAILABLE_ERRORS
        )

    async def _commit_one(self, task: TaskRecord) -> None:
        try:
            await self._upsert(task)
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
            await self._upsert(stand_in)

    async def flush(self, within: float) -> bool:
        """Wait until everything handed in is recorded, committed and acknowledged; False past `within` s."""
        try:
            await asyncio.wait_for(self._idle.wait(), max(within, 0.0))
        except TimeoutError:
            log.warning("%d result(s) not yet persisted at shutdown; their claims stay for the reaper", len(self))
            return False
        return True
