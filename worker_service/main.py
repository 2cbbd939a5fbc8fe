"""Builds the worker app: the HTTP surface plus the consumer, heartbeat and reaper loops."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from types import FrameType

from fastapi import FastAPI

from core.connections import create_pg_pool, create_redis, create_subscriber, wait_for_dependencies
from core.http import build_app
from core.queue import REDIS_ERRORS, TaskQueue
from core.retention import Pruner
from core.settings import get_settings, new_worker_id
from core.task_types import load_modules, module_names
from worker_service import routes
from worker_service.consumer import Consumer
from worker_service.persister import Persister
from worker_service.reaper import reaper_loop

log = logging.getLogger(__name__)


def _stop_claiming_on_sigterm(consumer: Consumer) -> None:
    """Stop claiming the moment SIGTERM arrives, not only when uvicorn reaches the lifespan's end.

    uvicorn installs its own handler before the lifespan starts; chain to it.
    """
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(consumer.stopping.set)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    # Before the first claim: a module that fails to import stops the start.
    load_modules(module_names(settings.task_modules))
    # A fresh id per process start: a restarted worker never adopts a dead one's claims.
    worker_id = new_worker_id(settings.replica_id)
    redis = create_redis(settings)
    await wait_for_dependencies(redis, settings)
    pool = await create_pg_pool(settings, min_size=0, max_size=max(2, settings.worker_concurrency // 2))
    queue = TaskQueue.from_settings(redis, settings)
    persister = Persister(queue, pool, worker_id)
    consumer = Consumer(queue, persister, settings, worker_id)
    app.state.settings, app.state.queue, app.state.consumer = settings, queue, consumer

    _stop_claiming_on_sigterm(consumer)
    heartbeat = asyncio.create_task(consumer.heartbeat_loop(), name="heartbeat")
    pruner = Pruner(pool, settings.retention_days)
    reaper = asyncio.create_task(
        reaper_loop(queue, worker_id, settings.reaper_interval_seconds, settings.priority_aging_seconds, pruner),
        name="reaper",
    )
    subscriber = create_subscriber(settings)
    cancels = asyncio.create_task(consumer.cancel_loop(subscriber), name="cancels")
    claims = asyncio.create_task(consumer.claim_loop(), name="claims")
    persisting = asyncio.create_task(persister.run(), name="persister")
    watch = asyncio.create_task(consumer.watch_loop(), name="watch")
    log.info("worker %s started, concurrency %d", worker_id, settings.worker_concurrency)
    try:
        yield
    finally:
        # SIGTERM: stop claiming (the claim loop ends within one block), finish what we hold.
        consumer.stopping.set()
        # Still waiting for a free slot after 2 s: nothing is half-claimed, safe to cancel.
        with suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(claims, timeout=2.0)
        drain_started = time.monotonic()
        await consumer.drain(settings.shutdown_grace_seconds)
        await persister.flush(settings.shutdown_grace_seconds - (time.monotonic() - drain_started))
        for loop_task in (heartbeat, reaper, persisting, watch, cancels):
            loop_task.cancel()
            with suppress(asyncio.CancelledError):
                await loop_task
        await pruner.close()
        with suppress(*REDIS_ERRORS):
            await queue.deregister(worker_id)
        log.info("worker %s stopped: %d completed, %d failed", worker_id, consumer.completed, consumer.failed)
        await pool.close()
        await subscriber.aclose()
        await redis.aclose()


def create_app() -> FastAPI:
    app = build_app("Serverless Scaling worker", "worker_service", lifespan)
    app.include_router(routes.router)
    return app
