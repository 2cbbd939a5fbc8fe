"""Housekeeping every worker runs and one leads (a Redis lease): requeue the in-flight tasks
of workers whose heartbeat expired, queue scheduled tasks and retries whose time has come, and
move low-priority tasks that waited long enough up to the normal list; and, at a slower pace,
prune final tasks older than RETENTION_DAYS from Postgres (core/retention.py)."""

from __future__ import annotations

import asyncio
import logging
import time

from core.queue import REDIS_ERRORS, TaskQueue
from core.retention import Pruner

log = logging.getLogger(__name__)

#: Scheduled tasks and retries are due to the next 100 ms (and so is aging); reaping runs on the
#: slower reaper interval.
PROMOTE_INTERVAL = 0.1


async def reaper_loop(
    queue: TaskQueue, worker_id: str, interval: float, aging_seconds: float, pruner: Pruner | None = None
) -> None:
    lease_ms = int(max(interval * 3, 1.0) * 1000)
    next_reap = 0.0
    while True:
        try:
            if await queue.lead(worker_id, lease_ms):
                await queue.promote_due()
                await queue.age_low(aging_seconds)
                if pruner is not None:
                    # Starts a pass in a task of its own when one is due: it never holds this loop.
                    pruner.tick()
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + interval
                    await queue.drop_stale_cancel_requests()
                    requeued = await queue.reap_dead_workers()
                    if requeued:
                        log.warning("requeued %d task(s) of dead workers: %s", len(requeued), requeued[:10])
        except REDIS_ERRORS as exc:
            log.warning("reaper pass failed: %s", exc)
        await asyncio.sleep(PROMOTE_INTERVAL)
