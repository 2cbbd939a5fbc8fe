"""The worker's own HTTP surface: status, liveness, the scaling recommendation."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request

from core.metrics import snapshot
from core.policy import Inputs, recommend
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


@router.post("/worker/scale")
async def worker_scale(request: Request) -> dict[str, Any]:
    queue: TaskQueue = request.app.state.queue
    settings: Settings = request.app.state.settings
    snap = await snapshot(queue)
    advice = recommend(
        Inputs(
            queue_length=snap.queue_length,
            active_workers=snap.active_workers,
            in_flight=snap.processing,
            min_workers=settings.min_workers,
            max_workers=settings.max_workers,
        )
    )
    return {"recommendation": asdict(advice), "timestamp": iso()}
