"""The dashboard's live loop: sample once a second, build one frame, push it to every open page.

One frame per second per process, whatever the number of browsers: each SSE connection only
waits for the next frame and sends it, so the cost of a refresh does not grow with the audience.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from core import keys, timeseries
from core.backlog import Backlog
from core.metrics import recent_tasks, summary, worker_table
from core.policy import Recommendation
from core.queue import REDIS_ERRORS, TaskQueue
from core.samples import Sample
from core.settings import Settings, new_worker_id
from core.timeutil import iso
from monitoring.alerting import Alerting

log = logging.getLogger(__name__)

PERIOD_SECONDS = 1.0
LIVE_TASKS = 25


class StreamSlots:
    """Open SSE streams, at most `per_client` per client address and `total` in all.

    An open stream costs the process a connection and a task for as long as the page stays; without
    a cap one client could hold them all. Only addresses with an open stream are kept, so the map
    never holds more than `total` entries.
    """

    def __init__(self, per_client: int, total: int) -> None:
        self.per_client = per_client
        self.total = total
        self.by_client: dict[str, int] = {}
        self.open = 0

    def acquire(self, client: str) -> str | None:
        """Take a slot for `client`; when there is none, why (and nothing is taken)."""
        if self.open >= self.total:
            return f"the dashboard serves {self.total} live streams at most; retry later"
        held = self.by_client.get(client, 0)
        if held >= self.per_client:
            return f"at most {self.per_client} live streams per client; close a dashboard tab"
        self.by_client[client] = held + 1
        self.open += 1
        return None

    def release(self, client: str) -> None:
        held = self.by_client.get(client, 0)
        if held <= 0:
            return
        self.open -= 1
        if held == 1:
            del self.by_client[client]
        else:
            self.by_client[client] = held - 1


class Hub:
    """The newest frame, a condition the SSE connections wait on, and who holds a stream."""

    def __init__(self, streams: StreamSlots) -> None:
        self.frame: dict[str, Any] | None = None
        self.seq = 0
        self._changed = asyncio.Condition()
        self.streams = streams

    async def publish(self, frame: dict[str, Any]) -> None:
        async with self._changed:
            self.frame = frame
            self.seq += 1
            self._changed.notify_all()

    async def next(self, after: int) -> tuple[int, dict[str, Any]]:
        """The first frame newer than `after` (at once if there already is one)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.seq > after and self.frame is not None)
            assert self.frame is not None
            return self.seq, self.frame


def queue_by_priority(sample: Sample) -> dict[str, int]:
    """The queue's split, under the names the gateway's /api/metrics gives it."""
    return Backlog(high=sample.queue_high, normal=sample.queue_normal, low=sample.queue_low).by_priority()


def cards(sample: Sample) -> dict[str, Any]:
    """The page's counters, by the id suffix of the element that shows each (`card-<name>`)."""
    return {
        "requests": sample.requests,
        "accepted": sample.accepted,
        "completed": sample.completed,
        "failed": sample.failed,
        "cancelled": sample.cancelled,
        "queue_length": sample.queue_length,
        **{f"queue_{priority}": count for priority, count in queue_by_priority(sample).items()},
        "scheduled": sample.scheduled,
        "in_flight": sample.in_flight,
        "active_workers": sample.workers,
        "tasks_per_minute": sample.tasks_per_minute,
        "avg_processing_time": sample.mean_processing_time,
        "p95_processing_time": sample.p95,
        "error_rate": sample.error_rate,
    }


async def build_frame(
    queue: TaskQueue,
    pool: asyncpg.Pool,
    sample: Sample,
    advice: Recommendation,
    t: float,
) -> dict[str, Any]:
    recent = await recent_tasks(queue, pool, LIVE_TASKS)
    return {
        "sample": sample.model_dump(),  # the short names, as in /api/series
        "cards": cards(sample),
        "workers": await worker_table(queue, t),
        "recent_tasks": [summary(task) for task in recent],
        "scaling": advice.to_dict(),
        "timestamp": iso(),
    }


async def scenario(redis: Redis) -> dict[str, Any] | None:
    """The scenario running or run last (load_test/scenarios.py writes it), for the page's banner."""
    raw = await redis.get(keys.SCENARIO)
    try:
        return dict(orjson.loads(raw)) if raw else None
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None


async def run(
    queue: TaskQueue, redis: Redis, pool: asyncpg.Pool, settings: Settings, hub: Hub, alerting: Alerting
) -> None:
    """Every second: sample (if we hold the lease; else read the leader's sample), evaluate the
    alerts (the leader; the others read its), then publish."""
    sampler = timeseries.Sampler(queue, redis, settings, holder=new_worker_id(settings.replica_id))
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    failures = 0
    while True:
        t = time.time()
        try:
            ticked = await sampler.tick(t)
            sample, advice = ticked or await timeseries.current(queue, redis, settings, t)
            try:
                await alerting.tick(sample, t, leading=ticked is not None)
            except REDIS_ERRORS:
                raise
            except Exception:
                # A bug in the alerts must not stop the page's frames.
                log.exception("alert evaluation failed")
            frame = await build_frame(queue, pool, sample, advice, t)
            frame["scenario"] = await scenario(redis)
            frame["alerts"] = alerting.view(t)
            await hub.publish(frame)
            failures = 0
        except REDIS_ERRORS as exc:
            failures += 1
            if failures == 1 or failures % 60 == 0:
                log.warning("sampling failed (%s); retrying every second", exc)
            # The page keeps its last figures and learns that Redis is unreachable.
            alerting.redis_down(t)
            if hub.frame is not None:
                await hub.publish({**hub.frame, "alerts": alerting.view(t)})
        except Exception:
            # A bug in one tick must not end the dashboard's only sampler.
            log.exception("sampling tick failed")
        # A fixed schedule (not sleep(1) after the work), so samples stay 1 s apart; skip missed ticks.
        next_at = max(next_at + PERIOD_SECONDS, loop.time())
        await asyncio.sleep(next_at - loop.time())
