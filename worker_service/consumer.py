"""The consumer loop: claim, run, record, persist, then acknowledge, up to N tasks at once."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar

from redis.exceptions import RedisError

from core import prom
from core.coalesce import Coalescer
from core.models import TaskRecord, TaskStatus
from core.queue import Claim, TaskQueue
from core.retry import retry_delay, until_done
from core.settings import Settings
from core.timeutil import iso, now
from worker_service.handlers import InvalidTaskData, handler_for
from worker_service.persister import Persister

log = logging.getLogger(__name__)
T = TypeVar("T")

CLAIM_BLOCK_SECONDS = 1
#: Most ids taken by one claim (bounded further by the free execution slots).
CLAIM_BATCH = 100
REDIS_ERRORS = (RedisError, OSError)


#: A task still running after this long gets its `processing` record written (visible to the API
#: and dashboard). Most tasks finish sooner and skip that write; their attempt is counted at claim.
SHOW_PROCESSING_AFTER = 0.05


class WriteBatcher:
    """Sends the record writes of every task that reaches that point while the last batch is on the
    wire as one atomic command (TaskQueue.write_batch): one round trip, and a few Redis commands,
    for many tasks. Writes go out in the order they were staged.
    """

    def __init__(self, queue: TaskQueue) -> None:
        self.queue = queue
        self._writes: Coalescer[tuple[TaskRecord, bool], None] = Coalescer(self._send)

    async def _send(self, items: list[tuple[TaskRecord, bool]]) -> list[None]:
        # Within a batch the saves go first: a task's save is always staged before its final write.
        await self.queue.write_batch([t for t, final in items if not final], [t for t, final in items if final])
        return [None] * len(items)

    def stage_save(self, task: TaskRecord) -> asyncio.Future[None]:
        return self._writes.stage((task, False))

    async def finish(self, task: TaskRecord) -> None:
        await self._writes((task, True))


def _log_failed_save(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and (exc := done.exception()) is not None:
        log.debug("could not show a task as processing: %s", exc)


class Consumer:
    def __init__(self, queue: TaskQueue, persister: Persister, settings: Settings, worker_id: str) -> None:
        self.queue = queue
        self.persister = persister
        self.settings = settings
        self.worker_id = worker_id
        self.writes = WriteBatcher(queue)
        self.running: dict[str, asyncio.Task[None]] = {}
        #: the tasks holding an execution slot: from their claim until their handler returns
        #: (their record writes and persisting go on outside the slots, bounded by the persister)
        self.executing: set[str] = set()
        self._timeouts: dict[str, float] = {}  # per task type, parsed once
        #: set while fewer than worker_concurrency tasks run
        self.slot_free = asyncio.Event()
        self.slot_free.set()
        self.stopping = asyncio.Event()
        self.claiming = False
        self.completed = 0
        self.failed = 0
        self.retried = 0
        self.started_at = iso()

    @property
    def status(self) -> str:
        return "draining" if self.stopping.is_set() else "running"

    def heartbeat_payload(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "status": self.status,
            "claiming": self.claiming,
            "in_flight": len(self.running),
            "unpersisted": len(self.persister),
            "completed": self.completed,
            "failed": self.failed,
            "retried": self.retried,
            "concurrency": self.settings.worker_concurrency,
            "started_at": self.started_at,
            "last_seen": iso(),
        }

    # -- the loops -------------------------------------------------------------------------

    async def claim_loop(self) -> None:
        self.claiming = True
        try:
            await self._claim_until_stopped()
        finally:
            self.claiming = False
            # Tell the others at once that we take nothing more (the next beat may be a second away).
            with suppress(*REDIS_ERRORS):
                await self.queue.beat(self.worker_id, self.heartbeat_payload(), self.settings.heartbeat_ttl_seconds)

    async def _claim_until_stopped(self) -> None:
        failures = 0
        concurrency = self.settings.worker_concurrency
        while not self.stopping.is_set():
            await self.persister.wait_for_room()
            await self.slot_free.wait()
            if self.stopping.is_set():
                break
            want = min(CLAIM_BATCH, concurrency - len(self.executing))
            try:
                # A busy queue: take a batch in one round trip. An empty one: block for the next id.
                claimed: list[Claim | str] = list(await self.queue.claim_many(self.worker_id, want))
                if not claimed:
                    task_id = await self.queue.claim(self.worker_id, CLAIM_BLOCK_SECONDS)
                    claimed = [] if task_id is None else [task_id]  # its record is read by _process
                failures = 0
            except REDIS_ERRORS as exc:
                failures += 1
                if failures == 1:
                    log.warning("claim failed (%s); retrying", exc)
                await asyncio.sleep(min(2.0, 0.05 * 2**failures))
                continue
            for claim in claimed:
                task_id = claim if isinstance(claim, str) else claim.id
                job = asyncio.create_task(self._process(claim))  # unnamed: naming costs 3 % of a drain
                self.running[task_id] = job
                self.executing.add(task_id)
                job.add_done_callback(functools.partial(self._done, task_id))
            if len(self.executing) >= concurrency:
                self.slot_free.clear()

    def _free_slot(self, task_id: str) -> None:
        if task_id in self.executing:
            self.executing.discard(task_id)
            self.slot_free.set()

    def _done(self, task_id: str, _: asyncio.Task[None]) -> None:
        self.running.pop(task_id, None)
        self._free_slot(task_id)

    async def heartbeat_loop(self) -> None:
        while True:
            try:
                await self.queue.beat(self.worker_id, self.heartbeat_payload(), self.settings.heartbeat_ttl_seconds)
            except REDIS_ERRORS as exc:
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(self.settings.heartbeat_interval_seconds)

    # -- one task --------------------------------------------------------------------------

    async def _redis(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        return await until_done(operation, what=what, retry_on=REDIS_ERRORS)

    async def _process(self, claim: Claim | str) -> None:
        task_id = claim if isinstance(claim, str) else claim.id
        try:
            if isinstance(claim, str):
                claim = await self._redis("read task", lambda: self.queue.claimed(task_id))
            task = claim.record
            if task is None:
                # Purged while queued: nothing to run, nothing to keep.
                await self._redis("ack", lambda: self.queue.ack(self.worker_id, task_id))
                return
            if not task.status.is_final:
                # The claim counted this attempt; the record knows the ones it saw written.
                attempt = max(claim.attempt, task.attempts + 1)
                if attempt > self.settings.max_attempts:
                    # Started that often and never finished: its workers died running it (poison).
                    task = await self._give_up(task.model_copy(update={"attempts": attempt - 1}))
                else:
                    outcome = await self._run(task, attempt)
                    if outcome is None:
                        return  # parked for a retry; it already left our processing list
                    task = outcome
            # Acknowledged by the persister, only after the durable copy is committed.
            self.persister.put(task)
        except Exception:
            # A bug must neither kill the loop nor strand the claim while we live (the reaper only
            # helps dead workers): hand it back after a pause, so a repeating bug can't spin.
            log.exception("unexpected error processing task %s; handing it back", task_id)
            await asyncio.sleep(1)
            with suppress(*REDIS_ERRORS):
                await self.queue.release(self.worker_id, task_id)

    def _show_processing(self, task: TaskRecord, run: dict[str, Any], shown: list[asyncio.Future[None]]) -> None:
        # Best effort, never retried: a retried save could land after the final write. Staged
        # now (not from a new task), so it goes out before any final write staged later.
        saved = self.writes.stage_save(task.model_copy(update={**run, "status": TaskStatus.PROCESSING}))
        saved.add_done_callback(_log_failed_save)
        shown.append(saved)

    async def _run(self, task: TaskRecord, attempt: int) -> TaskRecord | None:
        """Run one attempt. Returns the final record, or None when the task was parked for a retry."""
        started = now()
        # This attempt's fields; each record below is one copy of the claimed one (copies cost).
        run: dict[str, Any] = {
            "started_at": started,
            "completed_at": None,
            "worker_id": self.worker_id,
            "attempts": attempt,
        }
        shown: list[asyncio.Future[None]] = []
        show = asyncio.get_running_loop().call_later(SHOW_PROCESSING_AFTER, self._show_processing, task, run, shown)
        handler = handler_for(task.type, chaos=self.settings.chaos_tasks)
        timeout = self._timeouts.get(task.type)
        if timeout is None:
            timeout = self._timeouts[task.type] = self.settings.timeout_for(task.type)
        error: str | None = None
        retryable = True
        try:
            # asyncio.timeout, not wait_for: no extra task per run (3.11's wait_for wraps one).
            async with asyncio.timeout(timeout):
                result = await handler(task.type, task.data)
        except TimeoutError:
            error = f"timed out after {timeout:g} s"
        except InvalidTaskData as exc:
            error, retryable = f"invalid data: {exc}", False  # the same input would fail again
        except Exception as exc:  # a handler's failure is the task's outcome, not ours
            error = f"{type(exc).__name__}: {exc}"
        finally:
            show.cancel()
            # The next claim need not wait for this one's bookkeeping (a Redis and a Postgres trip).
            self._free_slot(task.id)
        finished = now()
        run["processing_time"] = (finished - started).total_seconds()

        if error is None:
            task = task.model_copy(
                update={
                    **run,
                    "status": TaskStatus.COMPLETED,
                    "result": result,
                    "error": None,
                    "completed_at": finished,
                }
            )
            self.completed += 1
        elif retryable and attempt < self.settings.max_attempts:
            delay = retry_delay(attempt, self.settings.retry_base_seconds, self.settings.retry_cap_seconds)
            note = f"attempt {attempt} of {self.settings.max_attempts} failed; next in {delay:.2f} s"
            parked = task.model_copy(update={**run, "status": TaskStatus.RETRYING, "error": f"{error} ({note})"})
            if shown:  # the parked record goes around the batcher: let the save land first
                await asyncio.wait(shown)
            await self._redis("park for retry", lambda: self.queue.retry_later(self.worker_id, parked, delay))
            self.retried += 1
            return None
        else:
            task = task.model_copy(
                update={**run, "status": TaskStatus.FAILED, "result": None, "error": error, "completed_at": finished}
            )
            self.failed += 1
        final = task
        try:
            await self.writes.finish(final)
        except REDIS_ERRORS:  # the rare path: retried until Redis answers
            await self._redis("record result", lambda: self.writes.finish(final))
        prom.observe_task(final)  # this worker's processing-time histogram (Prometheus)
        return final

    async def _give_up(self, task: TaskRecord) -> TaskRecord:
        reason = (
            f"gave up after {task.attempts} attempts: the worker running it died each time"
            f" (last: {task.error or 'unknown'})"
        )
        final = task.model_copy(update={"status": TaskStatus.FAILED, "error": reason, "completed_at": now()})
        await self._redis("dead-letter poison task", lambda: self.queue.finish(final))
        self.failed += 1
        log.warning("task %s dead-lettered as poison after %d attempts", task.id, task.attempts)
        return final

    # -- shutdown --------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Stop claiming, let in-flight tasks finish within `grace`, hand back the rest."""
        self.stopping.set()
        pending = list(self.running.values())
        if pending:
            log.info("draining %d in-flight task(s), grace %.0f s", len(pending), grace)
            _, late = await asyncio.wait(pending, timeout=grace)
            late_ids = [t for t, job in self.running.items() if job in late]
            for job in late:
                job.cancel()
            for task_id in late_ids:
                try:
                    await self.queue.release(self.worker_id, task_id)
                except REDIS_ERRORS:
                    log.warning("could not hand back %s; the reaper will", task_id)
