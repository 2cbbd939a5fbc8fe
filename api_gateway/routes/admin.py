"""The admin API: dead letters, redrive, purge. Every route needs the admin bearer token."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from api_gateway.deps import PoolDep, QueueDep
from core import db
from core.auth import require_admin
from core.http import DependencyUnavailable, error_responses, json_error
from core.metrics import tasks_by_id
from core.models import TaskRecord, TaskStatus, parse_task_id
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

audit_log = logging.getLogger("audit")


async def _audit(request: Request, queue: TaskQueue, action: str, count: int) -> None:
    """One JSON line per destructive admin action, in the log and in a capped Redis list.

    `client` is the peer uvicorn saw (behind the local nginx: the address nginx reported);
    `forwarded_for` is the header as received, kept as evidence rather than trusted."""
    entry = {
        "at": iso(),
        "action": action,
        "count": count,
        "client": request.client.host if request.client else None,
        "forwarded_for": request.headers.get("x-forwarded-for"),
    }
    line = orjson.dumps(entry)
    audit_log.info("%s", line.decode())
    try:
        await queue.record_audit(line)
    except RedisError:
        # The action is done and the log line written; a lost list entry must not turn it into an error.
        audit_log.warning("could not record the audit entry in Redis")


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


@router.post("/dlq/redrive", response_model=None, responses=error_responses(415, 429))
async def redrive(
    request: Request, queue: QueueDep, pool: PoolDep, body: RedriveRequest | None = None
) -> dict[str, Any] | JSONResponse:
    if not await queue.take_redrive_lock(REDRIVE_EVERY_MS):
        return json_error(
            429, "one redrive per second; retry shortly", error="rate_limited", headers={"Retry-After": "1"}
        )
    if body is not None and body.ids is not None:
        ids = [i for i in map(parse_task_id, body.ids) if i is not None]
    else:
        _, ids = await queue.dead_ids(REDRIVE_MAX)
    moved = await queue.redrive(await _records(queue, pool, ids))
    await _audit(request, queue, "redrive", len(moved))
    return {"redriven": len(moved), "task_ids": moved, "timestamp": iso()}


@router.delete("/queue")
async def purge(request: Request, queue: QueueDep, pool: PoolDep) -> dict[str, Any]:
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
    await _audit(request, queue, "purge", len(finished))
    return {"purged": len(finished), "timestamp": iso()}
