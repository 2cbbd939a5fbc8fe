"""The admin API: dead letters, redrive, purge. Every route needs the admin bearer token."""

from __future__ import annotations

from typing import Any

import asyncpg
from fastapi import APIRouter, Depends, Query
from fastapi.responses import ORJSONResponse
from pydantic import BaseModel, Field

from api_gateway.deps import PoolDep, QueueDep
from core import db
from core.auth import require_admin
from core.http import DependencyUnavailable, error_responses, json_error
from core.metrics import tasks_by_id
from core.models import TaskRecord, TaskStatus, is_task_id
from core.queue import TaskQueue
from core.timeutil import iso, now

router = APIRouter(
    prefix="/api/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=error_responses(401, 413, 422, 503),
)

REDRIVE_MAX = 1000
#: At most one redrive per this long, so a script can't spin the queue.
REDRIVE_EVERY_MS = 1000


async def _records(queue: TaskQueue, pool: asyncpg.Pool, ids: list[str]) -> list[TaskRecord]:
    try:
        return await tasks_by_id(queue, pool, ids)
    except db.UNAVAILABLE_ERRORS as exc:
        raise DependencyUnavailable("postgres") from exc


@router.get("/dlq")
async def dead_letters(queue: QueueDep, pool: PoolDep, limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
    total, ids = await queue.dead_ids(limit)
    tasks = await _records(queue, pool, ids)
    return {"count": total, "tasks": [t.model_dump(mode="json") for t in tasks], "timestamp": iso()}


class RedriveRequest(BaseModel):
    ids: list[str] | None = Field(default=None, max_length=REDRIVE_MAX, description="omit to redrive all")


@router.post("/dlq/redrive", responses=error_responses(429))
async def redrive(queue: QueueDep, pool: PoolDep, body: RedriveRequest | None = None) -> ORJSONResponse:
    if not await queue.take_redrive_lock(REDRIVE_EVERY_MS):
        return json_error(
            429, "one redrive per second; retry shortly", error="rate_limited", headers={"Retry-After": "1"}
        )
    if body is not None and body.ids is not None:
        ids = [i for i in body.ids if is_task_id(i)]
    else:
        _, ids = await queue.dead_ids(REDRIVE_MAX)
    moved = await queue.redrive(await _records(queue, pool, ids))
    return ORJSONResponse({"redriven": len(moved), "task_ids": moved, "timestamp": iso()})


@router.delete("/queue")
async def purge(queue: QueueDep, pool: PoolDep) -> dict[str, Any]:
    """Empty the waiting queue. Purged tasks still reach a final state (failed, dead-lettered)."""
    ids = await queue.take_queue()
    finished: list[TaskRecord] = []
    for task in await _records(queue, pool, ids):
        if task.status.is_final:
            continue
        final = task.model_copy(
            update={"status": TaskStatus.FAILED, "error": "purged by an administrator", "completed_at": now()}
        )
        await queue.finish(final)
        finished.append(final)
    try:
        await db.upsert_tasks(pool, finished)
    except db.UNAVAILABLE_ERRORS as exc:
        raise DependencyUnavailable("postgres") from exc
    return {"purged": len(finished), "timestamp": iso()}
