"""The consumer loop: claim, run, record, persist, then acknowledge, up to N tasks at once."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from core import prom
from core.coalesce import Coalescer
from core.models import TYPE_PATTERN, TaskRecord, TaskStatus, is_task_id
from core.queue import REDIS_ERRORS, Claim, TaskQueue
from core.retry import retry_delay, until_done
from core.settings import Settings
from core.timeutil import iso, now
from worker_service.handlers import InvalidTaskData, TaskFailed, handler_for
from worker_service.persister import Persister

log = logging.getLogger(__name__)
T = TypeVar("T")

CLAIM_BLOCK_SECONDS = 1
#: Most ids taken by one claim (bounded further by the free execution slots).
CLAIM_BATCH = 100


#: A task still running after this long gets its `processing` record written (visible to the API
#: and dashboard). Most tasks finish sooner and skip that write; their attempt is counted at claim.
SHOW_PROCESSING_AFTER = 0.05
#: The error of a task whose handler raised something it did not mean for the client.
HANDLER_FAULT = "the task's handler failed with an internal error"
#: The error of a task whose stored record is not a task record (written by hand or a broken client).
UNREADABLE = "the task's stored record is malformed and cannot be run"

#: How often the watch looks at running attempts: processing records and timeouts are up to this
#: late, and no attempt needs timers of its own.
WATCH_TICK = 0.05


@dataclass(slots=True, eq=False)
class _Attempt:
    """An attempt holding an execution slot, as the watch sees it."""

    task: TaskRecord
    #: this attempt's fields (started_at, worker_id, attempts)
    run: dict[str, Any]
    started: float  # loop time
    deadline: float  # loop time
    #: the processing record's write, once staged
    shown: asyncio.Future[None] | None = None
    timed_out: bool = False


def _log_failed_save(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and (exc := done.exception()) is not None:
        log.debug("could not show a task as processing: %s", exc)


class Consumer:
    def __init__(self, queue: TaskQueue, persister: Persister, settings: Settings, worker_id: str) -> None:
        self.queue = queue
        self.persister = persister
        self.settings = settings
        self.worker_id = worker_id
        # Processing records of attempts the watch found still running: one write for all of a tick.
        self.shows: Coalescer[TaskRecord, None] = Coalescer(self._save_batch)
        self.attempts: dict[str, _Attempt] = {}
        self.running: dict[str, asyncio.Task[None]] = {}
        #: the tasks holding an execution slot: from their claim until their handler returns
        #: (their record writes and persisting go on outside the slots, bounded by the persister)
        self.executing: set[str] = set()
        #: TASK_TIMEOUTS, parsed once: only the configured types (type names are the client's choice)
        self.timeouts = settings.timeout_table()
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
            except Exception:
                # A bug must not end claiming while the heartbeat says this worker takes tasks.
                failures += 1
                log.exception("claim failed unexpectedly; retrying")
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
            if task is None and claim.unreadable is not None:
                await self._unreadable(claim)
                return
            if task is None:
                # Purged while queued: nothing to run, nothing to keep.
                await self._redis("ack", lambda: self.queue.ack(self.worker_id, task_id))
                return
            if task.status.is_final:
                # Its worker died between writing the final record and the ack: persist and ack only.
                self.persister.put(task, recorded=True)
                return
            # The claim counted this attempt; the record knows the ones it saw written.
            attempt = max(claim.attempt, task.attempts + 1)
            if attempt > self.settings.max_attempts:
                # Started that often and never finished: its workers died running it (poison).
                final = self._give_up(task.model_copy(update={"attempts": attempt - 1}))
            else:
                outcome = await self._run(task, attempt)
                if outcome is None:
                    return  # parked for a retry; it already left our processing list
                final = outcome
            # Recorded in Redis, committed, and only then acknowledged, by the persister.
            self.persister.put(final)
        except Exception:
            # A bug must neither kill the loop nor strand the claim while we live (the reaper only
            # helps dead workers): hand it back after a pause, so a repeating bug can't spin.
            log.exception("unexpected error processing task %s; handing it back", task_id)
            await asyncio.sleep(1)
            with suppress(*REDIS_ERRORS):
                await self.queue.release(self.worker_id, task_id)

    async def _unreadable(self, claim: Claim) -> None:
        """Fail (dead-letter) a claimed task whose record is not a task record; running it is
        impossible, and leaving it would stop nothing but hide it."""
        if not is_task_id(claim.id):
            log.warning("dropped queue entry %r: no task id, and its record is malformed", claim.id[:100])
            await self._redis("discard", lambda: self.queue.discard(self.worker_id, claim.id))
            return
        try:
            stored = orjson.loads(claim.unreadable or "")
        except orjson.JSONDecodeError:
            stored = None
        kind = stored.get("type") if isinstance(stored, dict) else None
        self.failed += 1
        log.warning("task %s dead-lettered: its stored record is malformed", claim.id)
        self.persister.put(
            TaskRecord(
                id=claim.id,
                type=kind if isinstance(kind, str) and re.fullmatch(TYPE_PATTERN, kind) else "unknown",
                status=TaskStatus.FAILED,
                created_at=now(),
                completed_at=now(),
                worker_id=self.worker_id,
                attempts=claim.attempt,
                error=UNREADABLE,
            )
        )

    async def _save_batch(self, tasks: list[TaskRecord]) -> list[None]:
        await self.queue.write_batch(tasks, ())
        return [None] * len(tasks)

    async def watch_loop(self) -> None:
        """Every tick: show the attempts running longer than SHOW_PROCESSING_AFTER as processing,
        and cancel the ones past their timeout. One timer for the process instead of two per task."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WATCH_TICK)
            now_ = loop.time()
            for task_id, attempt in list(self.attempts.items()):
                if attempt.shown is None and now_ - attempt.started >= SHOW_PROCESSING_AFTER:
                    # Best effort, never retried: a retried save could land after the final write.
                    record = attempt.task.model_copy(update={**attempt.run, "status": TaskStatus.PROCESSING})
                    attempt.shown = self.shows.stage(record)
                    attempt.shown.add_done_callback(_log_failed_save)
                if not attempt.timed_out and now_ >= attempt.deadline and (job := self.running.get(task_id)):
                    attempt.timed_out = True
                    job.cancel()

    async def _run(self, task: TaskRecord, attempt_no: int) -> TaskRecord | None:
        """Run one attempt. Returns the final record, or None when the task was parked for a retry."""
        started = now()
        # This attempt's fields; each record below is one copy of the claimed one (copies cost).
        run: dict[str, Any] = {
            "started_at": started,
            "completed_at": None,
            "worker_id": self.worker_id,
            "attempts": attempt_no,
        }
        handler = handler_for(task.type, chaos=self.settings.chaos_tasks)
        timeout = self.timeouts.get(task.type, self.settings.task_timeout_seconds)
        clock = asyncio.get_running_loop().time()
        attempt = self.attempts[task.id] = _Attempt(task, run, clock, clock + timeout)
        error: str | None = None
        retryable = True
        try:
            result = await handler(task.type, task.data)
        except asyncio.CancelledError:
            if not attempt.timed_out:
                raise  # shutting down
            # The watch cancelled it: its timeout, not ours to propagate.
            if (current := asyncio.current_task()) is not None:
                current.uncancel()
            error = f"timed out after {timeout:g} s"
        except InvalidTaskData as exc:
            error, retryable = f"invalid data: {exc}", False  # the same input would fail again
        except TaskFailed as exc:  # the handler's own words for the client
            error = str(exc) or HANDLER_FAULT
        except Exception:  # a handler's fault is the task's outcome, not ours; its details are ours
            log.warning("task %s (type %s): handler raised", task.id, task.type, exc_info=True)
            error = HANDLER_FAULT
        finally:
            del self.attempts[task.id]
            # The next claim need not wait for this one's bookkeeping (a Redis and a Postgres trip).
            self._free_slot(task.id)
        if attempt.shown is not None:
            # The processing record travels apart from the final one: let it land first.
            await asyncio.wait([attempt.shown])
        finished = now()
        run["processing_time"] = (finished - started).total_seconds()

        if error is None:
            self.completed += 1
            final = task.model_copy(
                update={
                    **run,
                    "status": TaskStatus.COMPLETED,
                    "result": result,
                    "error": None,
                    "completed_at": finished,
                }
            )
        elif retryable and attempt_no < self.settings.max_attempts:
            delay = retry_delay(attempt_no, self.settings.retry_base_seconds, self.settings.retry_cap_seconds)
            note = f"attempt {attempt_no} of {self.settings.max_attempts} failed; next in {delay:.2f} s"
            parked = task.model_copy(update={**run, "status": TaskStatus.RETRYING, "error": f"{error} ({note})"})
            await self._redis("park for retry", lambda: self.queue.retry_later(self.worker_id, parked, delay))
            self.retried += 1
            return None
        else:
            self.failed += 1
            final = task.model_copy(
                update={**run, "status": TaskStatus.FAILED, "result": None, "error": error, "completed_at": finished}
            )
        prom.observe_task(final)  # this worker's processing-time histogram (Prometheus)
        return final

    def _give_up(self, task: TaskRecord) -> TaskRecord:
        reason = (
            f"gave up after {task.attempts} attempts: the worker running it died each time"
            f" (last: {task.error or 'unknown'})"
        )
        self.failed += 1
        log.warning("task %s dead-lettered as poison after %d attempts", task.id, task.attempts)
        return task.model_copy(update={"status": TaskStatus.FAILED, "error": reason, "completed_at": now()})

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
