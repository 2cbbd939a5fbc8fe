"""Prometheus metrics for every service: `GET /metrics`, HTTP latency, and the shared queue state.

Several processes: every replica (gateway, worker, dashboard) is its own process with its own
`/metrics`, scraped per replica (Prometheus adds the `instance` label), so process-local series
(HTTP latency, the worker's processing-time histogram) need no multiprocess mode. What is global
(queue depth, tasks by status) lives in Redis and is read at scrape time, so every replica
reports the same truth instead of a per-process guess.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import alert_readings, db, task_types
from core.metrics import snapshot
from core.models import TaskRecord, TaskStatus
from core.queue import REDIS_ERRORS
from core.settings import Settings

HTTP_LATENCY = Histogram(
    "ss_http_request_duration_seconds",
    "HTTP request latency by route template, method and status",
    ["service", "method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
INFO = Gauge("ss_replica_info", "This process: its service and replica id", ["service", "replica"])
#: a gateway's waiting `GET /api/task/{id}?wait=S` requests (api_gateway/waiters.py)
RESULT_WAITERS = Gauge("ss_result_waiters", "Requests waiting for a task's result on this gateway process")
#: the autoscaler's actuator failed its last ticks (autoscaler/health.py; the autoscaler_failing alert)
AUTOSCALER_FAILING = Gauge("ss_autoscaler_actuator_failing", "1 while the autoscaler's actions keep failing")


class _SharedState(Collector):
    """The queue's shared truth, as last read from Redis by this scrape."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if not self.values:
            return
        depth = GaugeMetricFamily("ss_queue_depth", "Tasks waiting in the queue, every priority (Redis, shared)")
        depth.add_metric([], self.values["queue"])
        yield depth
        by_priority = GaugeMetricFamily(
            "ss_queue_depth_by_priority", "Tasks waiting in the queue, by priority (Redis, shared)", labels=["priority"]
        )
        for priority, value in self.values["by_priority"].items():
            by_priority.add_metric([priority], value)
        yield by_priority
        tasks = GaugeMetricFamily(
            "ss_tasks",
            "Tasks by status: queued, scheduled and in flight now; accepted, completed, failed, cancelled so far",
            labels=["status"],
        )
        for status, value in self.values["tasks"].items():
            tasks.add_metric([status], value)
        yield tasks
        workers = GaugeMetricFamily("ss_live_workers", "Workers with a live heartbeat (Redis, shared)")
        workers.add_metric([], self.values["workers"])
        yield workers
        for name, about, key in _ALERT_GAUGES:
            if self.values.get(key) is not None:
                gauge = GaugeMetricFamily(name, about)
                gauge.add_metric([], self.values[key])
                yield gauge


#: What monitoring/alerts.yml's rules read beyond the queue's depth (core/alert_readings.py).
_ALERT_GAUGES = (
    ("ss_oldest_queued_seconds", "How long the task next in line has waited (Redis, shared)", "oldest"),
    ("ss_dead_letter_tasks", "Tasks in the dead-letter queue (Redis, shared)", "dead_letters"),
    ("ss_redis_memory_used_bytes", "Redis's used_memory", "memory_used"),
    ("ss_redis_memory_max_bytes", "Redis's maxmemory (0: none)", "memory_max"),
    ("ss_redis_memory_budget_bytes", "Redis's used_memory past which new tasks get 503 (0: none)", "memory_budget"),
    ("ss_queue_max", "QUEUE_MAX: the waiting tasks past which new ones get 503 (0: unbounded)", "queue_max"),
)


class _Dependencies(Collector):
    """Whether this process reached Redis and Postgres at its last scrape: 1 or 0."""

    def __init__(self) -> None:
        self.up: dict[str, int] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if not self.up:
            return
        family = GaugeMetricFamily(
            "ss_dependency_up", "1 when this process reached the dependency at this scrape", labels=["dependency"]
        )
        for name, value in sorted(self.up.items()):
            family.add_metric([name], value)
        yield family


_SHARED = _SharedState()
REGISTRY.register(_SHARED)
_DEPENDENCIES = _Dependencies()
REGISTRY.register(_DEPENDENCIES)
#: How long a scrape waits for Postgres's answer.
POSTGRES_PROBE_SECONDS = 1.0


class _TaskTimes(Collector):
    """The worker's processing-time histogram and finished-task counter, by final status.

    Kept in plain lists and exposed at scrape time: prometheus_client's Histogram and Counter
    take a lock per update (three per task), a tenth of a worker's CPU on a fast drain. One
    event loop per process updates these, so nothing needs the lock.
    """

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 60.0)

    def __init__(self) -> None:
        #: per status: the count in each bucket (not cumulative; the last is +Inf), then the sum
        self.counts: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}

    def observe(self, status: str, seconds: float) -> None:
        counts = self.counts.get(status)
        if counts is None:
            counts = self.counts[status] = [0] * (len(self.BUCKETS) + 1)
            self.sums[status] = 0.0
        counts[bisect.bisect_left(self.BUCKETS, seconds)] += 1
        self.sums[status] += seconds

    def collect(self) -> Iterator[Metric]:
        histogram = HistogramMetricFamily(
            "ss_task_processing_seconds",
            "Processing time of the tasks this worker finished, by final status",
            labels=["status"],
        )
        finished = CounterMetricFamily(
            "ss_worker_tasks", "Tasks this worker finished, by final status", labels=["status"]
        )
        for status, counts in self.counts.items():
            cumulative = list(itertools.accumulate(counts))
            bounds = [*(repr(b) for b in self.BUCKETS), "+Inf"]
            histogram.add_metric([status], list(zip(bounds, cumulative, strict=True)), self.sums[status])
            finished.add_metric([status], cumulative[-1])
        yield histogram
        yield finished


class _TypeTimes(Collector):
    """The processing-time histogram of completed and failed tasks by task type (the per-type p95
    rule). Types nobody registered count as "other": clients name types, and each name would be
    a series of its own."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}

    def observe(self, task_type: str, seconds: float) -> None:
        counts = self.counts.get(task_type)
        if counts is None:
            counts = self.counts[task_type] = [0] * (len(_TaskTimes.BUCKETS) + 1)
            self.sums[task_type] = 0.0
        counts[bisect.bisect_left(_TaskTimes.BUCKETS, seconds)] += 1
        self.sums[task_type] += seconds

    def collect(self) -> Iterator[Metric]:
        histogram = HistogramMetricFamily(
            "ss_task_type_processing_seconds",
            "Processing time of the completed and failed tasks this worker finished, by task type",
            labels=["type"],
        )
        bounds = [*(repr(b) for b in _TaskTimes.BUCKETS), "+Inf"]
        for task_type, counts in self.counts.items():
            histogram.add_metric(
                [task_type], list(zip(bounds, itertools.accumulate(counts), strict=True)), self.sums[task_type]
            )
        yield histogram


_TASK_TIMES = _TaskTimes()
REGISTRY.register(_TASK_TIMES)
_TYPE_TIMES = _TypeTimes()
REGISTRY.register(_TYPE_TIMES)
_FINISHED = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED})


def observe_task(task: TaskRecord) -> None:
    """Called by the worker right after a task reached its final state."""
    seconds = task.processing_time or 0.0
    _TASK_TIMES.observe(task.status.value, seconds)
    if task.status in _FINISHED:
        _TYPE_TIMES.observe(task.type if task.type in task_types.REGISTRY else "other", seconds)


class LatencyMiddleware:
    """Pure ASGI: times each HTTP request, labelled by its route template (bounded cardinality)."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            # The template ("/api/task/{task_id}"), never the raw path: ids would explode the series.
            template = getattr(route, "path", None) or "unmatched"
            HTTP_LATENCY.labels(self.service, scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )


async def _read_shared(request: Request) -> None:
    queue = getattr(request.app.state, "queue", None)
    if queue is None:
        return
    await _probe_postgres(request)
    try:
        snap = await snapshot(queue)  # the same read the gateway's /api/metrics makes
        memory = await alert_readings.redis_memory(queue)
        oldest = await alert_readings.oldest_queued_seconds(queue, time.time()) if snap.queue_length else 0.0
        dead_letters = await alert_readings.dead_letter_length(queue)
        _SHARED.values = {
            "queue": snap.queue_length,
            "by_priority": snap.backlog.by_priority(),
            "workers": snap.active_workers,
            "tasks": {
                "queued": snap.queue_length,
                "scheduled": snap.scheduled,
                "in_flight": snap.processing,
                "accepted": snap.accepted,
                "completed": snap.completed,
                "failed": snap.failed,
                "cancelled": snap.cancelled,
                # tasks the reaper took back from dead workers: the worker_died rule's counter
                "requeued": snap.requeued,
            },
            "oldest": oldest,
            "dead_letters": dead_letters,
            "memory_used": memory.used,
            "memory_max": memory.limit,
            "memory_budget": memory.budget,
            "queue_max": queue.queue_max,
        }
        _DEPENDENCIES.up["redis"] = 1
    except REDIS_ERRORS:
        _SHARED.values = {}  # Redis down: leave the shared series out rather than report stale ones
        _DEPENDENCIES.up["redis"] = 0


async def _probe_postgres(request: Request) -> None:
    pool = getattr(request.app.state, "pool", None)
    if pool is None:
        return
    try:
        await asyncio.wait_for(db.ping(pool), POSTGRES_PROBE_SECONDS)
        _DEPENDENCIES.up["postgres"] = 1
    except db.UNAVAILABLE_ERRORS:
        _DEPENDENCIES.up["postgres"] = 0


def install_metrics(app: FastAPI, settings: Settings, service: str) -> None:
    """Mount `GET /metrics` and time every request. One call in each service's create_app()."""
    INFO.labels(service, settings.replica_id).set(1)
    app.add_middleware(LatencyMiddleware, service=service)

    async def metrics(request: Request) -> Response:
        await _read_shared(request)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
