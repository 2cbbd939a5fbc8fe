"""Takes final records through their three steps, in batches: written to Redis (the hot copy,
visible at once, and counted), committed to Postgres, and only then acknowledged.

Two loops, so a Postgres outage does not hide results: while Postgres is down, finished tasks
still show their final record in Redis, and workers go on running tasks (results wait here,
still unacknowledged in the processing list) until the buffer is full; then claiming pauses.
If this worker dies, its unacknowledged claims go back to the queue and the next claimer,
seeing the final record in Redis, only persists and acks.

The buffer is bounded by records and by bytes (a result may be as large as a task's data, and
client-chosen): each record is held as its JSON only, and batches are cut by bytes too, so a
write to Redis or Postgres stays a few MiB whatever the records hold.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Sequence

import asyncpg

from core import db
from core.models import TaskRecord, TaskStatus
from core.queue import REDIS_ERRORS, FinalRecord, TaskQueue
from core.retry import until_done

log = logging.getLogger(__name__)

#: Most records the buffer holds before claiming pauses, and most bytes (of their JSON).
CAPACITY = 5000
CAPACITY_BYTES = 32 * 1024 * 1024
#: Most records, and bytes, written to Redis or committed to Postgres in one step.
BATCH_MAX = 500
BATCH_BYTES = 4 * 1024 * 1024

#: What a task's error says when its final record could not be stored (the details go to the log).
NOT_STORABLE = "the task's result is not storable in the database; it was dropped"


def _size(final: FinalRecord) -> int:
    return sys.getsizeof(final.raw)


def batch_length(records: Sequence[FinalRecord], most: int, most_bytes: int) -> int:
    """How many of the first records go in the next batch: at least one, then up to `most`
    records or `most_bytes` bytes."""
    size = 0
    for n, final in enumerate(records[:most]):
        size += _size(final)
        if size > most_bytes and n > 0:
            return n
    return min(len(records), most)


class Persister:
    def __init__(
        self,
        queue: TaskQueue,
        pool: asyncpg.Pool,
        worker_id: str,
        *,
        batch_max: int = BATCH_MAX,
        batch_bytes: int = BATCH_BYTES,
        capacity: int = CAPACITY,
        capacity_bytes: int = CAPACITY_BYTES,
    ) -> None:
        self.queue = queue
        self.pool = pool
        self.worker_id = worker_id
        self.batch_max = batch_max
        self.batch_bytes = batch_bytes
        self.capacity = capacity
        self.capacity_bytes = capacity_bytes
        #: final records not yet written to Redis
        self._unrecorded: list[FinalRecord] = []
        #: written to Redis: waiting for the commit, then the ack
        self._pending: list[FinalRecord] = []
        #: bytes held in both lists
        self.held_bytes = 0
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
        final = FinalRecord.of(task, recorded=recorded)
        self.held_bytes += _size(final)
        if recorded:
            self._pending.append(final)
            self._commit_wake.set()
        else:
            self._unrecorded.append(final)
            self._record_wake.set()
        self._idle.clear()
        if not self.has_room():
            self._room.clear()

    def has_room(self) -> bool:
        """Whether claiming may go on: the buffer holds fewer records and bytes than its bounds."""
        return len(self) < self.capacity and self.held_bytes < self.capacity_bytes

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
                batch = self._unrecorded[: batch_length(self._unrecorded, self.batch_max, self.batch_bytes)]
                await until_done(
                    functools.partial(self.queue.write_encoded, (), batch), what="record results", retry_on=REDIS_ERRORS
                )
                del self._unrecorded[: len(batch)]
                self._pending += batch
                self._commit_wake.set()

    async def _commit_loop(self) -> None:
        while True:
            await self._commit_wake.wait()
            self._commit_wake.clear()
            while self._pending:
                batch = self._pending[: batch_length(self._pending, self.batch_max, self.batch_bytes)]
                await self._commit_and_ack(batch)
                del self._pending[: len(batch)]
                self.held_bytes -= sum(_size(final) for final in batch)
                if self.has_room():
                    self._room.set()
            if not self._unrecorded:
                self._idle.set()

    async def _commit_and_ack(self, batch: list[FinalRecord]) -> None:
        try:
            await until_done(
                lambda: db.upsert_records(self.pool, [(final.id, final.raw) for final in batch]),
                what="persist results",
                retry_on=db.UNAVAILABLE_ERRORS,
            )
        except asyncpg.PostgresError as exc:
            # Postgres refused the batch itself (not an outage): store it row by row, so one
            # unstorable record neither blocks the others nor stops this loop.
            log.error("a batch of %d results was refused (%s); storing them one by one", len(batch), exc)
            for final in batch:
                await self._commit_one(final)
        ids = [final.id for final in batch]
        written_before = [final.id for final in batch if final.recorded]
        if written_before:
            await until_done(
                lambda: self.queue.expire_records(written_before), what="expire results", retry_on=REDIS_ERRORS
            )
        await until_done(lambda: self.queue.ack_many(self.worker_id, ids), what="ack", retry_on=REDIS_ERRORS)

    async def _upsert(self, task: TaskRecord) -> None:
        await until_done(
            lambda: db.upsert_tasks(self.pool, [task]), what="persist results", retry_on=db.UNAVAILABLE_ERRORS
        )

    async def _commit_one(self, final: FinalRecord) -> None:
        task = TaskRecord.model_validate_json(final.raw)
        try:
            await self._upsert(task)
        except asyncpg.PostgresError as exc:
            # Acked without a durable row it would wait forever, and block its worker's shutdown:
            # keep a row that says what happened; the full record stays in Redis until its TTL.
            # The client reads a plain reason; the database's own words stay in this log.
            log.error("task %s cannot be stored in Postgres (%r); storing it as failed", task.id, exc)
            stand_in = task.model_copy(
                update={"status": TaskStatus.FAILED, "data": {}, "result": None, "error": NOT_STORABLE}
            )
            try:
                await self._upsert(stand_in)
            except asyncpg.PostgresError as again:
                # Not even the stand-in fits (the record's id or type itself): nothing durable can
                # be kept, and holding the claim would block this worker for ever.
                log.error("task %s cannot be stored in Postgres at all (%r); acked without a row", task.id, again)

    async def flush(self, within: float) -> bool:
        """Wait until everything handed in is recorded, committed and acknowledged; False past `within` s."""
        try:
            await asyncio.wait_for(self._idle.wait(), max(within, 0.0))
        except TimeoutError:
            log.warning("%d result(s) not yet persisted at shutdown; their claims stay for the reaper", len(self))
            return False
        return True
