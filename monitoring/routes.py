"""Dashboard page and its JSON API: metrics (the shape seed clients read), series, stream, tasks, scaling."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from core import keys, pages, timeseries
from core.auth import require_admin
from core.http import json_error
from core.metrics import find_task, find_tasks, recent_tasks, summary, worker_table
from core.models import TYPE_PATTERN, TaskStatus, parse_task_id
from core.queue import TaskQueue
from core.retention import expired, expired_response
from core.samples import chart_columns
from core.settings import Settings
from core.timeutil import iso, now
from monitoring import live
from monitoring.alerting import Alerting
from monitoring.live import Hub, queue_by_priority

router = APIRouter()
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

# The page shows live figures: never from a cache.
SECURITY_HEADERS = {**pages.HEADERS, "Cache-Control": "no-store"}


class _State:
    def __init__(self, request: Request) -> None:
        state = request.app.state
        self.settings: Settings = state.settings
        self.queue: TaskQueue = state.queue
        self.redis: Redis = state.redis
        self.pool: asyncpg.Pool = state.pool
        self.hub: Hub = state.hub


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request) -> HTMLResponse:
    response = templates.TemplateResponse(
        request,
        "index.html",
        {
            "title": "Serverless Scaling",
            "statuses": [status.value for status in TaskStatus],
            "gateway_port": request.app.state.settings.gateway_port,
        },
    )
    response.headers.update(SECURITY_HEADERS)
    return response


@router.get("/api/health")
async def health() -> dict[str, str]:
    return {"status": "healthy", "service": "monitoring", "timestamp": iso()}


@router.get("/api/metrics")
async def metrics(request: Request, response: Response) -> dict[str, Any]:
    s = _State(request)
    t = time.time()
    try:
        # One sample for every figure (and the advice), so a response never disagrees with itself.
        sample, advice = await timeseries.current(s.queue, s.redis, s.settings, t)
        workers = await worker_table(s.queue, t)
        recent = await recent_tasks(s.queue, s.pool, 20)
        running = await live.scenario(s.redis)
    except RedisError:
        response.status_code = 503
        return {"system_health": {"redis_connected": False}, "timestamp": iso()}
    body: dict[str, Any] = {
        "system_health": {
            "redis_connected": True,
            "queue_length": sample.queue_length,
            "queue_by_priority": queue_by_priority(sample),
            "scheduled": sample.scheduled,
            "processing": sample.in_flight,
            "active_workers": sample.workers,
            "total_requests": sample.requests,
        },
        "performance": {
            "tasks_per_minute": sample.tasks_per_minute,
            "avg_processing_time": sample.mean_processing_time or 0.0,
            "p50_processing_time": sample.p50,
            "p95_processing_time": sample.p95,
            "arrivals_per_second": sample.arrival_rate_10s,
            "completions_per_second": sample.completion_rate_10s,
            "error_rate": sample.error_rate,
            "completed": sample.completed,
            "failed": sample.failed,
            "cancelled": sample.cancelled,
            "accepted": sample.accepted,
            "sampled_at": sample.t,
        },
        "workers": workers,
        "recent_tasks": [summary(task) for task in recent],
        "scaling_recommendation": advice.to_dict(),
        "scenario": running,
        "timestamp": iso(),
    }
    return body


@router.get("/api/series")
async def series(request: Request, minutes: Annotated[int, Query(ge=1, le=15)] = 15) -> dict[str, Any]:
    """The last `minutes` of 1 s samples, one array per field (what the charts draw), oldest first."""
    return chart_columns(await timeseries.read_series(_State(request).redis, minutes * 60))


@router.get("/api/alerts")
async def alerts(request: Request) -> dict[str, Any]:
    """Firing, pending and recently resolved alerts (core/alerts.py), each with its condition, the
    numbers behind it, since when and a hint: the same on every replica (the sampler's leader
    evaluates them), and answered while Redis is down (it is then one of them)."""
    alerting: Alerting = request.app.state.alerting
    return {**alerting.view(), "timestamp": iso()}


@router.get("/api/scaling")
async def scaling(request: Request) -> dict[str, Any]:
    s = _State(request)
    sample, advice = await timeseries.current(s.queue, s.redis, s.settings, time.time())
    async with s.redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.SCALING_MODE)
        pipe.lrange(keys.SCALING_HISTORY, 0, 49)
        pipe.lrange(keys.SCALING_DECISIONS, 0, 49)
        mode, history, decisions = await pipe.execute()
    return {
        "mode": mode or "advisory",
        "action": advice.action.value,
        "current": advice.current_workers,
        "desired": advice.recommended_workers,
        "urgency": advice.urgency,
        "reasons": advice.reasons,
        "numbers": advice.numbers,
        "min_workers": s.settings.min_workers,
        "max_workers": s.settings.max_workers,
        "sampled_at": sample.t,
        "history": [orjson.loads(h) for h in history],
        "decisions": [orjson.loads(d) for d in decisions],
    }


#: What a refused stream tells the browser (the page retries after this long).
STREAM_RETRY_AFTER_SECONDS = 5


class _CountedStream(EventSourceResponse):
    """An SSE response that gives its slot back however it ends (closed tab, cancel, error)."""

    def __init__(self, *args: Any, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


@router.get("/api/stream", response_model=None)
async def stream(request: Request) -> EventSourceResponse | JSONResponse:
    """Server-Sent Events: one `frame` per sampling tick (1 s). The browser reconnects by itself.

    429 past the caps on open streams (per client address, and in all)."""
    hub = _State(request).hub
    client = request.client.host if request.client else "unknown"
    refused = hub.streams.acquire(client)
    if refused:
        return json_error(429, refused, error="rate_limited", headers={"Retry-After": str(STREAM_RETRY_AFTER_SECONDS)})

    async def frames() -> AsyncIterator[ServerSentEvent]:
        seq = 0
        while True:
            seq, frame = await hub.next(seq)
            yield ServerSentEvent(data=orjson.dumps(frame).decode(), event="frame", id=str(seq), retry=1000)

    # A comment line every 15 s keeps idle proxies from closing the stream.
    return _CountedStream(
        frames(),
        release=lambda: hub.streams.release(client),
        ping=15,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/api/tasks")
async def tasks(
    request: Request,
    status: TaskStatus | None = None,
    task_type: Annotated[str | None, Query(alias="type", pattern=TYPE_PATTERN)] = None,
    q: Annotated[str | None, Query(max_length=36)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Newest tasks of every status (live ones from Redis, history from Postgres), filtered."""
    s = _State(request)
    found = await find_tasks(
        s.queue,
        s.pool,
        limit=limit,
        status=status.value if status else None,
        task_type=task_type,
        q=q or None,
    )
    return {"tasks": [summary(task) for task in found], "count": len(found), "timestamp": iso()}


@router.get("/api/tasks/{task_id}", response_model=None)
async def task_detail(request: Request, task_id: str) -> dict[str, Any] | JSONResponse:
    """The task's ids, status and timings; its data, result and error only with the admin token
    (a wrong token is a 401, so the page can say so)."""
    admin = "authorization" in request.headers
    if admin:
        require_admin(request)  # a wrong token: 401, not a quiet summary
    s = _State(request)
    wanted = parse_task_id(task_id)
    task = await find_task(s.queue, s.pool, wanted) if wanted else None
    if task is None:
        if wanted and expired(wanted, s.settings.retention_days, now()):
            return expired_response(wanted, s.settings.retention_days)
        return json_error(404, f"task {task_id} not found", error="task_not_found")
    return task.model_dump(mode="json") if admin else summary(task)
