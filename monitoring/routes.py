"""Dashboard page and its JSON API (the earlier demo's shape)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, ORJSONResponse
from fastapi.templating import Jinja2Templates
from redis.exceptions import RedisError

from core.metrics import recent_tasks, snapshot
from core.models import TaskStatus
from core.policy import Inputs, recommend
from core.settings import Settings
from core.timeutil import iso, now

router = APIRouter()
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request) -> HTMLResponse:
    response = templates.TemplateResponse(request, "index.html", {"title": "Serverless Scaling"})
    response.headers.update(SECURITY_HEADERS)
    return response


@router.get("/api/health")
async def health() -> dict[str, str]:
    return {"status": "healthy", "service": "monitoring", "timestamp": iso()}


@router.get("/api/metrics")
async def metrics(request: Request) -> ORJSONResponse:
    settings: Settings = request.app.state.settings
    queue = request.app.state.queue
    try:
        snap = await snapshot(queue)
        recent = await recent_tasks(queue, request.app.state.pool, 50)
    except RedisError:
        return ORJSONResponse({"system_health": {"redis_connected": False}, "timestamp": iso()}, status_code=503)
    minute_ago = now() - timedelta(minutes=1)
    done = [t for t in recent if t.status is TaskStatus.COMPLETED and t.processing_time is not None]
    times = [t.processing_time for t in done if t.processing_time is not None]
    advice = recommend(
        Inputs(
            queue_length=snap.queue_length,
            active_workers=snap.active_workers,
            in_flight=snap.processing,
            min_workers=settings.min_workers,
            max_workers=settings.max_workers,
        )
    )
    body: dict[str, Any] = {
        "system_health": {
            "redis_connected": True,
            "queue_length": snap.queue_length,
            "processing": snap.processing,
            "active_workers": snap.active_workers,
            "total_requests": snap.total_requests,
        },
        "performance": {
            "tasks_per_minute": sum(1 for t in done if t.completed_at and t.completed_at >= minute_ago),
            "avg_processing_time": round(sum(times) / len(times), 4) if times else 0.0,
            "completed": snap.completed,
            "failed": snap.failed,
            "accepted": snap.accepted,
        },
        "workers": snap.workers,
        "recent_tasks": [t.model_dump(mode="json") for t in recent[:20]],
        "scaling_recommendation": asdict(advice),
        "timestamp": iso(),
    }
    return ORJSONResponse(body)
