"""System status and metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Response
from redis.exceptions import RedisError

from api_gateway.deps import PoolDep, QueueDep, RedisDep, count_request
from core import db
from core.http import error_responses
from core.metrics import Snapshot, recent_tasks, snapshot, summary
from core.timeutil import iso

router = APIRouter(
    prefix="/api", tags=["status"], dependencies=[Depends(count_request)], responses=error_responses(413, 422)
)

# A status probe must answer fast even when a dependency hangs.
PROBE_TIMEOUT = 1.0
HEALTHY, DOWN = "healthy", "down"


@router.get("/status", responses={503: {"description": "A dependency is down; same body"}})
async def system_status(queue: QueueDep, redis: RedisDep, pool: PoolDep, response: Response) -> dict[str, Any]:
    snap = Snapshot()
    redis_ok = pg_ok = True
    try:
        snap = await asyncio.wait_for(snapshot(queue), PROBE_TIMEOUT)
    except (RedisError, TimeoutError):
        redis_ok = False
    try:
        pg_ok = await asyncio.wait_for(db.ping(pool), PROBE_TIMEOUT)
    except (*db.UNAVAILABLE_ERRORS, TimeoutError):  # type: ignore[misc]
        pg_ok = False
    workers_ok = snap.active_workers > 0
    if not (redis_ok and pg_ok and workers_ok):
        response.status_code = 503
    return {
        "api_gateway": HEALTHY,
        "worker_service": HEALTHY if workers_ok else DOWN,
        "redis": HEALTHY if redis_ok else DOWN,
        "postgres": HEALTHY if pg_ok else DOWN,
        "metrics": {
            "total_requests": snap.total_requests,
            "active_workers": snap.active_workers,
            "queue_length": snap.queue_length,
            "timestamp": iso(),
        },
    }


@router.get("/metrics", responses={503: {"description": "Redis is down; same body, redis_connected false"}})
async def system_metrics(queue: QueueDep, pool: PoolDep, response: Response) -> dict[str, Any]:
    snap = Snapshot()
    recent: list[dict[str, Any]] = []
    connected = True
    try:
        snap = await snapshot(queue)
        # Ids, types, statuses and timings only: anyone can read this, payloads are their owners'.
        recent = [summary(t) for t in await recent_tasks(queue, pool, 20)]
    except RedisError:
        connected = False
        response.status_code = 503
    return {
        "system_metrics": {
            "total_requests": snap.total_requests,
            "active_workers": snap.active_workers,
            "queue_length": snap.queue_length,
            "processing": snap.processing,
            "completed": snap.completed,
            "failed": snap.failed,
            "cancelled": snap.cancelled,
            "scheduled": snap.scheduled,
            "queue_by_priority": snap.backlog.by_priority(),
            "accepted": snap.accepted,
            "requeued": snap.requeued,
            "redis_connected": connected,
        },
        "recent_tasks": recent,
        "timestamp": iso(),
    }
