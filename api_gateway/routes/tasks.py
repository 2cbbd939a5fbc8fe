"""Submitting tasks and reading them back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException
from fastapi.responses import ORJSONResponse

from api_gateway.deps import PoolDep, QueueDep, SettingsDep, count_request
from core import db
from core.http import RETRY_AFTER_SECONDS, DependencyUnavailable, error_responses, json_error
from core.models import TaskAccepted, TaskRecord, TaskSubmit, is_task_id
from core.queue import IdempotencyConflict, QueueFull

router = APIRouter(
    prefix="/api",
    tags=["tasks"],
    dependencies=[Depends(count_request)],
    responses=error_responses(404, 413, 422, 503),
)


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeat a submission safely: the same key within 24 h returns the same task",
    ),
]


@router.post(
    "/task",
    status_code=202,
    response_model=TaskAccepted,
    responses=error_responses(409),
)
async def submit_task(
    body: TaskSubmit, queue: QueueDep, settings: SettingsDep, idempotency_key: IdempotencyKey = None
) -> TaskAccepted | ORJSONResponse:
    try:
        accepted = await queue.enqueue(body, idempotency_key)
    except QueueFull as full:
        return json_error(
            503,
            f"the queue holds {full.depth} tasks (limit {settings.queue_max}); retry later",
            error="queue_full",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    except IdempotencyConflict as conflict:
        raise HTTPException(
            409, f"Idempotency-Key already used for task {conflict} with a different body"
        ) from conflict
    task = accepted.task
    if accepted.replayed:
        return TaskAccepted(
            task_id=task.id,
            status=task.status,
            message="Duplicate request (same Idempotency-Key): nothing new was queued",
            queue_position=0,
        )
    return TaskAccepted(
        task_id=task.id,
        message=f"Task queued for processing (type {task.type})",
        queue_position=accepted.position,
    )


@router.get(
    "/task/{task_id}",
    response_model=TaskRecord,
)
async def get_task(task_id: str, queue: QueueDep, pool: PoolDep) -> TaskRecord:
    if not is_task_id(task_id):
        raise HTTPException(404, f"task {task_id!r} not found")
    task = await queue.get(task_id)
    if task is not None:
        return task
    # The hot copy expires after the result TTL; the durable copy answers from then on.
    try:
        task = await db.fetch_task(pool, task_id)
    except db.UNAVAILABLE_ERRORS as exc:
        raise DependencyUnavailable("postgres") from exc
    if task is None:
        raise HTTPException(404, f"task {task_id!r} not found")
    await queue.cache(task)
    return task
