"""Service info and liveness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api_gateway.deps import SettingsDep
from core.timeutil import iso

router = APIRouter(tags=["info"])


@router.get("/")
async def root(settings: SettingsDep) -> dict[str, Any]:
    return {
        "service": "API Gateway",
        "message": "Serverless Scaling API gateway",
        "version": "1.0.0",
        "replica": settings.replica_id,
        "endpoints": {
            "submit_task": "POST /api/task",
            "get_task": "GET /api/task/{task_id} (?wait=S for the result)",
            "cancel_task": "DELETE /api/task/{task_id} (?running=true to stop a running one)",
            "status": "GET /api/status",
            "metrics": "GET /api/metrics",
            "health": "GET /health",
            "docs": "GET /docs (Swagger UI), GET /redoc (ReDoc), GET /openapi.json",
        },
        "timestamp": iso(),
    }


@router.get("/health")
async def health(settings: SettingsDep) -> dict[str, str]:
    # Liveness only: no I/O, so a slow dependency never gets a live gateway restarted.
    return {"status": "healthy", "service": "api-gateway", "replica": settings.replica_id}
