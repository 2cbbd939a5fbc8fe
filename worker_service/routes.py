"""The worker's own HTTP surface: status, liveness, the scaling recommendation."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from core import timeseries
from core.auth import require_admin
from core.queue import TaskQueue
from core.settings import Settings
from core.timeutil import iso
from worker_service.consumer import Consumer

router = APIRouter(tags=["worker"])


def _consumer(request: Request) -> Consumer:
    consumer: Consumer = request.app.state.consumer
    return consumer


@router.get("/")
async def root(request: Request) -> dict[str, Any]:
    return {"service": "Worker Service", "worker_id": _consumer(request).worker_id, "timestamp": iso()}


@router.get("/health")
async def health(request: Request) -> dict[str, str]:
    consumer = _consumer(request)
    return {"status": "healthy", "service": "worker-service", "worker_id": consumer.worker_id}


@router.get("/worker/status")
async def worker_status(request: Request) -> dict[str, Any]:
    consumer = _consumer(request)
    queue: TaskQueue = request.app.state.queue
    workers = await queue.live_workers()
    return {
        "worker_id": consumer.worker_id,
        "status": consumer.status,
        "active_workers": len(workers),
        "queue_length": await queue.queue_length(),
        "worker_metrics": consumer.heartbeat_payload(),
        "timestamp": iso(),
    }


@router.post(
    "/worker/scale",
    dependencies=[Depends(require_admin)],
    responses={401: {"description": "Missing or wrong admin bearer token"}},
)
async def worker_scale(request: Request) -> dict[str, Any]:
    queue: TaskQueue = request.app.state.queue
    settings: Settings = request.app.state.settings
    # The dashboard's newest 1 s sample and the policy state stored with it, through the same policy:
    # this answer, GET :8080/api/metrics and the dashboard always agree.
    sample, advice = await timeseries.current(queue, queue.redis, settings, time.time())
    return {"recommendation": advice.to_dict(), "sampled_at": sample.t, "timestamp": iso()}
