"""The consumer: claims tasks and runs up to WORKER_CONCURRENCY of them at once.

The life of one attempt, and where each step happens:

    claimed     claim loop (_claim): one Claim per task (claim_many, or claim then claimed);
                Attempts.claimed registers it and takes a slot; a job (_process) carries it on
    running     _run: Attempts.start, then the handler inside the attempt's timeout; past the
                deadline the watch calls Attempts.time_out, and the timeout cancels the handler
    processing  watch_loop: still running after SHOW_PROCESSING_AFTER, its processing record is
                written (best effort; most attempts finish sooner and skip it)
    final       _run: Attempts.ran frees the slot, and the final record is built (a failure with
                attempts left is parked for a retry instead, and the attempt ends there)
    persisted   persister (worker_service/persister.py): the final record is written to Redis,
                then committed to Postgres, in batches
    acked       persister: the claim is acknowledged only after the commit

The job ends once the persister holds the final record, and Attempts.finished forgets the
attempt; the persister's buffer, not the slots, bounds what waits for the commit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar

import orjson
from redis.asyncio import Redis

from core import keys, prom
from core.cancels import CANCELLED_RUNNING
from core.coalesce import Coalescer
from core.models import TYPE_PATTERN, TaskRecord, TaskStatus, is_task_id
from core.queue import REDIS_ERRORS, Claim, TaskQueue
from core.retry import retry_delay, until_done
from core.settings import Settings
from core.task_types import TaskContext
from core.timeutil import iso, now
from worker_service.attempts import Attempt, Attempts
from worker_service.handlers import InvalidTaskData, TaskFailed, handler_for, retry_for
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

#: The longest one read of the cancel channel waits (it returns at once when a request arrives).
CANCEL_POLL = 1.0

#: How often the watch looks at running attempts: processing records and timeouts are up to this
#: late, and no attempt needs timers of its own.
WATCH_TICK = 0.05


def _log_failed_save(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and (exc := done.exception()) is not None:
        log.debug("could not show a task as processing: %s", exc)


class Consumer:
    def __init__(self, queue: TaskQueue, persister: Persister, settings: Settings, worker_id: str) -> None:
        self.queue = queue
        self.persister = persister
        self.settings = settings
        self.worker_id = worker_id
        #: every attempt held, and the execution slots
        self.attempts = Attempts(settings.worker_concurrency)
        # Processing records of attempts the watch found still running: one write for all of a tick.
        self.shows: Coalescer[TaskRecord, None] = Coalescer(self._save_batch)
        #: TASK_TIMEOUTS, parsed once: only the configured types (type names are the client's choice)
        self.timeouts = settings.timeout_table()
        self.stopping = asyncio.Event()
        self.claiming = False
        self.completed = 0
        self.failed = 0
        self.retried = 0
        self.cancelled = 0
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
            "in_flight": len(self.attempts),
            "unpersisted": len(self.persister),
            "completed": self.completed,
            "failed": self.failed,
            "retried": self.retried,
            "cancelled": self.cancelled,
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
        while not self.stopping.is_set():
            await self.persister.wait_for_room()
            await self.attempts.wait_for_slot()
            if self.stopping.is_set():
                break
            try:
                claims = await self._claim(min(CLAIM_BATCH, self.attempts.free_slots()))
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
            for claim in claims:
                attempt = self.attempts.claimed(claim)
                attempt.job = asyncio.create_task(self._process(attempt))  # unnamed: naming costs 3 % of a drain

    async def _claim(self, most: int) -> list[Claim]:
        """A busy queue: take a batch in one round trip. An empty one: block for the next id, then
        read its record (counting the attempt)."""
        claims = await self.queue.claim_many(self.worker_id, most)
        if claims:
            return claims
        task_id = await self.queue.claim(self.worker_id, CLAIM_BLOCK_SECONDS)
        if task_id is None:
            return []
        try:
            return [await self._redis("read task", lambda: self.queue.claimed(task_id))]
        except BaseException:
            # Claimed but not yet an attempt, so no drain knows it, and the reaper only helps dead
            # workers: hand it back.
            with suppress(*REDIS_ERRORS):
                await self.queue.release(self.worker_id, task_id)
            raise

    async def cancel_loop(self, subscriber: Redis) -> None:
        """Stop the tasks clients cancel while they run: each request is published on
        keys.CANCEL_CHANNEL, and the worker holding the task cancels it. A request missed while
        this loop reconnects still reaches a task not yet started (its claim reads the request).
        `subscriber` is core.connections.create_subscriber's client: its one connection is this
        loop's alone."""
        failures = 0
        while True:
            try:
                async with subscriber.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(keys.CANCEL_CHANNEL)
                    failures = 0
                    while True:
                        # A bounded read: an unbounded one would end on the client's socket timeout.
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=CANCEL_POLL)
                        if message is not None and self.attempts.cancel(str(message["data"])):
                            log.info("task %s: cancel requested by a client", message["data"])
            except REDIS_ERRORS as exc:
                failures += 1
                if failures == 1:
                    log.warning("cancel listener lost Redis (%s); reconnecting", exc)
                await asyncio.sleep(min(2.0, 0.05 * 2**failures))

    async def heartbeat_loop(self) -> None:
        while True:
            try:
                await self.queue.beat(self.worker_id, self.heartbeat_payload(), self.settings.heartbeat_ttl_seconds)
            except REDIS_ERRORS as exc:
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(self.settings.heartbeat_interval_seconds)

    async def watch_loop(self) -> None:
        """Every tick: show the attempts running longer than SHOW_PROCESSING_AFTER as processing,
        and time out the ones past their deadline. The one timer of all attempts: a timer per attempt
        costs drain throughput."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WATCH_TICK)
            now_ = loop.time()
            for attempt in self.attempts.running():
                if attempt.shown is None and now_ - attempt.started >= SHOW_PROCESSING_AFTER:
                    # Best effort, never retried: a retried save could land after the final write.
                    attempt.shown = self.shows.stage(attempt.processing_record())
                    attempt.shown.add_done_callback(_log_failed_save)
                if now_ >= attempt.deadline:
                    self.attempts.time_out(attempt)

    # -- one task --------------------------------------------------------------------------

    async def _redis(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        return await until_done(operation, what=what, retry_on=REDIS_ERRORS)

    async def _process(self, attempt: Attempt) -> None:
        claim = attempt.claim
        try:
            task = claim.record
            if task is None and claim.unreadable is not None:
                await self._unreadable(claim)
                return
            if task is None:
                # Purged while queued: nothing to run, nothing to keep.
                await self._redis("ack", lambda: self.queue.ack(self.worker_id, claim.id))
                return
            if task.status.is_final:
                # Its worker died between writing the final record and the ack, or a client
                # cancelled it while it waited (scripts.CancelWaiting): persist and ack only.
                self.persister.put(task, recorded=True)
                return
            if attempt.cancelled:
                # A client asked to stop it while a worker held it; it never started here.
                self.cancelled += 1
                self.persister.put(
                    task.model_copy(
                        update={"status": TaskStatus.CANCELLED, "completed_at": now(), "error": CANCELLED_RUNNING}
                    )
                )
                return
            # The claim counted this attempt; the record knows the ones it saw written.
            number = max(claim.attempt, task.attempts + 1)
            kind = handler_for(task.type, chaos=self.settings.chaos_tasks, strict=self.settings.strict_types)
            if number > retry_for(kind, self.settings).max_attempts:
                # Started that often and never finished: its workers died running it (poison).
                final = self._give_up(task.model_copy(update={"attempts": number - 1}))
            else:
                outcome = await self._run(attempt, task, number)
                if outcome is None:
                    return  # parked for a retry; it already left our processing list
                final = outcome
            # Recorded in Redis, committed, and only then acknowledged, by the persister.
            self.persister.put(final)
        except Exception:
            # A bug must neither kill the loop nor strand the claim while we live (the reaper only
            # helps dead workers): hand it back after a pause, so a repeating bug can't spin.
            log.exception("unexpected error processing task %s; handing it back", claim.id)
            await asyncio.sleep(1)
            with suppress(*REDIS_ERRORS):
                await self.queue.release(self.worker_id, claim.id, claim.priority)
        finally:
            self.attempts.finished(attempt)

    async def run_attempt(self, task: TaskRecord, number: int) -> TaskRecord | None:
        """Run attempt `number` of `task` outside the claim loop (nothing is claimed, acked or
        persisted; a retry is parked in the queue): its final record, or None when parked.
        It holds a slot and is watched like a claimed attempt."""
        attempt = self.attempts.claimed(Claim(task.id, task, number))
        try:
            return await self._run(attempt, task, number)
        finally:
            self.attempts.finished(attempt)

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

    async def _run(self, attempt: Attempt, task: TaskRecord, number: int) -> TaskRecord | None:
        """Run the handler once. Returns the final record, or None when the task was parked for a retry."""
        started = now()
        # This attempt's fields; each record below is one copy of the claimed one (copies cost).
        fields: dict[str, Any] = {
            "started_at": started,
            "completed_at": None,
            "worker_id": self.worker_id,
            "attempts": number,
        }
        kind = handler_for(task.type, chaos=self.settings.chaos_tasks, strict=self.settings.strict_types)
        # TASK_TIMEOUTS names the operator's choice for a type; the type's own comes next.
        seconds = self.timeouts.get(task.type) or kind.timeout or self.settings.task_timeout_seconds
        retry = retry_for(kind, self.settings)
        context = TaskContext(task.id, number, task.type, self.queue.redis, self.persister.pool)
        result: Any = None
        error: str | None = None
        retryable = True
        try:
            async with self.attempts.start(attempt, fields, seconds):
                try:
                    result = await kind.run(task.data, context)
                except InvalidTaskData as exc:
                    error, retryable = f"invalid data: {exc}", False  # the same input would fail again
                except TaskFailed as exc:  # the handler's own words for the client
                    error = str(exc) or HANDLER_FAULT
                except Exception:  # a handler's fault is the task's outcome, not ours; its details are ours
                    log.warning("task %s (type %s): handler raised", task.id, task.type, exc_info=True)
                    error = HANDLER_FAULT
        except TimeoutError:  # the attempt's own timeout (a handler's TimeoutError is caught above)
            error = CANCELLED_RUNNING if attempt.cancelled else f"timed out after {seconds:g} s"
        finally:
            self.attempts.ran(attempt)
        if attempt.shown is not None:
            # The processing record travels apart from the final one: let it land first.
            await asyncio.wait([attempt.shown])
        finished = now()
        fields["processing_time"] = (finished - started).total_seconds()

        if attempt.cancelled:
            # Stopped at a client's request (Attempts.cancel): final, never retried, whatever it returned.
            self.cancelled += 1
            status, result, error = TaskStatus.CANCELLED, None, CANCELLED_RUNNING
        elif error is None:
            self.completed += 1
            status = TaskStatus.COMPLETED
        elif retryable and number < retry.max_attempts:
            delay = retry_delay(number, retry.base_seconds or 0.0, retry.cap_seconds or 0.0)
            note = f"attempt {number} of {retry.max_attempts} failed; next in {delay:.2f} s"
            parked = task.model_copy(update={**fields, "status": TaskStatus.RETRYING, "error": f"{error} ({note})"})
            await self._redis("park for retry", lambda: self.queue.retry_later(self.worker_id, parked, delay))
            self.retried += 1
            return None
        else:
            self.failed += 1
            status, result = TaskStatus.FAILED, None
        final = task.model_copy(
            update={**fields, "status": status, "result": result, "error": error, "completed_at": finished}
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
        held = self.attempts.jobs()
        if held:
            log.info("draining %d in-flight task(s), grace %.0f s", len(held), grace)
            _, late = await asyncio.wait(held, timeout=grace)
            for job in late:
                job.cancel()
            for job in late:
                try:
                    await self.queue.release(self.worker_id, held[job].id, held[job].priority)
                except REDIS_ERRORS:
                    log.warning("could not hand back %s; the reaper will", held[job].id)
