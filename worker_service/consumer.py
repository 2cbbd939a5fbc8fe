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

import asyncpg
from redis.exceptions import RedisError

from core import db, prom
from core.models import TaskRecord, TaskStatus
from core.queue import TaskQueue
from core.retry import until_done
from core.settings import Settings
from core.timeutil import iso, now
from worker_service.handlers import handler_for

log = logging.getLogger(__name__)
T = TypeVar("T")

CLAIM_BLOCK_SECONDS = 1
REDIS_ERRORS = (RedisError, OSError)


class Consumer:
    def __init__(self, queue: TaskQueue, pool: asyncpg.Pool, settings: Settings, worker_id: str) -> None:
        self.queue = queue
        self.pool = pool
        self.settings = settings
        self.worker_id = worker_id
        self.slots = asyncio.Semaphore(settings.worker_concurrency)
        self.running: dict[str, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()
        self.claiming = False
        self.completed = 0
        self.failed = 0
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
            "completed": self.completed,
            "failed": self.failed,
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
            await self.slots.acquire()
            if self.stopping.is_set():
                self.slots.release()
                break
            try:
                task_id = await self.queue.claim(self.worker_id, CLAIM_BLOCK_SECONDS)
                failures = 0
            except REDIS_ERRORS as exc:
                self.slots.release()
                failures += 1
                if failures == 1:
                    log.warning("claim failed (%s); retrying", exc)
                await asyncio.sleep(min(2.0, 0.05 * 2**failures))
                continue
            if task_id is None:
                self.slots.release()
                continue
            job = asyncio.create_task(self._process(task_id), name=f"task-{task_id}")
            self.running[task_id] = job
            job.add_done_callback(functools.partial(self._done, task_id))

    def _done(self, task_id: str, _: asyncio.Task[None]) -> None:
        self.running.pop(task_id, None)
        self.slots.release()

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

    async def _process(self, task_id: str) -> None:
        try:
            task = await self._redis("read task", lambda: self.queue.get(task_id))
            if task is None:
                # Purged while queued: nothing to run, nothing to keep.
                await self._redis("ack", lambda: self.queue.ack(self.worker_id, task_id))
                return
            if not task.status.is_final:
                task = await self._run(task)
            # Acknowledge only after the durable copy is committed.
            await until_done(
                lambda: db.upsert_tasks(self.pool, [task]), what="persist result", retry_on=db.UNAVAILABLE_ERRORS
            )
            await self._redis("ack", lambda: self.queue.ack(self.worker_id, task_id))
        except Exception:
            # A bug must not kill the loop; the claim stays in our processing list for the reaper.
            log.exception("unexpected error processing task %s", task_id)

    async def _run(self, task: TaskRecord) -> TaskRecord:
        started = now()
        task = task.model_copy(
            update={
                "status": TaskStatus.PROCESSING,
                "started_at": started,
                "worker_id": self.worker_id,
                "attempts": task.attempts + 1,
                "error": None,
            }
        )
        await self._redis("mark processing", lambda: self.queue.save(task))
        handler = handler_for(task.type)
        update: dict[str, Any]
        try:
            result = await asyncio.wait_for(handler(task.type, task.data), self.settings.task_timeout_seconds)
            update = {"status": TaskStatus.COMPLETED, "result": result}
            self.completed += 1
        except TimeoutError:
            update = {"status": TaskStatus.FAILED, "error": f"timed out after {self.settings.task_timeout_seconds:g} s"}
            self.failed += 1
        except Exception as exc:  # a handler's failure is the task's outcome, not ours
            update = {"status": TaskStatus.FAILED, "error": f"{type(exc).__name__}: {exc}"}
            self.failed += 1
        finished = now()
        update |= {"completed_at": finished, "processing_time": (finished - started).total_seconds()}
        task = task.model_copy(update=update)
        await self._redis("record result", lambda: self.queue.finish(task))
        prom.observe_task(task)  # this worker's processing-time histogram (Prometheus)
        return task

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
