"""Returns dead workers' in-flight tasks to the queue. Every worker runs it; one leads."""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from core.queue import TaskQueue

log = logging.getLogger(__name__)


async def reaper_loop(queue: TaskQueue, worker_id: str, interval: float) -> None:
    lease_ms = int(interval * 3 * 1000)
    while True:
        try:
            if await queue.lead(worker_id, lease_ms):
                requeued = await queue.reap_dead_workers()
                if requeued:
                    log.warning("requeued %d task(s) of dead workers: %s", len(requeued), requeued[:10])
        except (RedisError, OSError) as exc:
            log.warning("reaper pass failed: %s", exc)
        await asyncio.sleep(interval)
