"""Submitting tasks and reading them back."""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, TypeVar

import asyncpg
import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api_gateway.deps import Intake, PoolDep, QueueDep, SettingsDep, WaitersDep, count_request
from api_gateway.routes.task_types import check_task, check_tasks
from api_gateway.waiters import WAIT_MAX_SECONDS, TooManyWaiters
from core import db
from core.http import (
    RETRY_AFTER_SECONDS,
    DependencyUnavailable,
    error_responses,
    json_body_schema,
    json_error,
    parse_body,
)
from core.models import (
    TaskAccepted,
    TaskBulkAccepted,
    TaskBulkSubmit,
    TaskRecord,
    TaskStatus,
    TaskSubmit,
    parse_task_id,
)
from core.queue import Accepted, AcceptedMany, IdempotencyConflict, QueueFull, Refused, TaskQueue
from core.retention import expired, expired_response
from core.settings import Settings
from core.timeutil import now

# Submissions count their request inside the enqueue script (one Redis round trip, not two);
# reads count it with the shared dependency.
router = APIRouter(
    prefix="/api",
    tags=["tasks"],
    responses=error_responses(404, 413, 422, 503),
)


M = TypeVar("M", bound=BaseModel)

_KEY_HEADER = "Idempotency-Key"
_KEY_MAX = 200
_KEY_PATTERN = r"^[\x21-\x7e]+$"
_KEY_DESCRIPTION = "Repeat a submission safely: the same key within 24 h returns the same task"
_KEY = re.compile(_KEY_PATTERN)


def idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header, checked by the rules _KEY_PARAMETER documents (FastAPI's own
    parameter machinery costs about a tenth of the hottest route)."""
    value = request.headers.get(_KEY_HEADER)
    if value is not None and not (len(value) <= _KEY_MAX and _KEY.fullmatch(value)):
        problem = {"loc": ("header", _KEY_HEADER), "type": "string_pattern_mismatch"}
        raise RequestValidationError([{**problem, "msg": "1 to 200 printable ASCII characters, no spaces"}])
    return value


_KEY_PARAMETER = {
    "name": _KEY_HEADER,
    "in": "header",
    "required": False,
    "description": _KEY_DESCRIPTION,
    "schema": {"type": "string", "minLength": 1, "maxLength": _KEY_MAX, "pattern": _KEY_PATTERN},
}


def _submission_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI of what read_submission() reads: the JSON body and the Idempotency-Key."""
    return {**json_body_schema(model), "parameters": [_KEY_PARAMETER]}


async def read_submission(request: Request, model: type[M]) -> tuple[str | None, M]:
    # The submit routes read their header and body themselves: validated from the bytes in one
    # pass, with no per-request dependency solving (about a sixth of the hot route's cost).
    # Same rules, same 422s.
    return idempotency_key(request), parse_body(model, await request.body())


@router.post(
    "/task",
    status_code=202,
    response_model=TaskAccepted,
    responses=error_responses(409, 415),
    openapi_extra=_submission_schema(TaskSubmit),
)
async def submit_task(request: Request) -> Response:
    key, body = await read_submission(request, TaskSubmit)
    state = request.app.state
    queue: TaskQueue = state.queue
    intake: Intake = state.intake
    settings: Settings = state.settings
    check_task(body, settings)
    try:
        # A key needs its own replay check; without one, concurrent submissions share a round trip.
        accepted = await (queue.enqueue(body, key, count_request=True) if key else intake(body))
    except QueueFull as full:
        accepted = full.refused
    except IdempotencyConflict as conflict:
        # No task id: the key may be someone else's, and their task is not ours to point at.
        raise HTTPException(409, "Idempotency-Key already used with a different body; use a new key") from conflict
    if isinstance(accepted, Refused):
        return _queue_full(accepted, settings.queue_max)
    return Response(accepted_json(accepted), status_code=202, media_type=_JSON)


@router.post(
    "/tasks",
    status_code=202,
    response_model=TaskBulkAccepted,
    responses=error_responses(409, 415),
    openapi_extra=_submission_schema(TaskBulkSubmit),
)
async def submit_tasks(request: Request) -> Response:
    """Queue up to 1,000 tasks atomically: all are accepted, or none (422 names the bad task's index).

    An Idempotency-Key covers the whole batch: resending it with the same body returns the same ids.
    """
    key, body = await read_submission(request, TaskBulkSubmit)
    queue: TaskQueue = request.app.state.queue
    settings: Settings = request.app.state.settings
    check_tasks(body.tasks, settings)
    try:
        accepted = await queue.enqueue_many(body.tasks, key, count_request=True)
    except QueueFull as full:
        return _queue_full(full.refused, settings.queue_max, len(body.tasks))
    except IdempotencyConflict as conflict:
        raise HTTPException(
            409, "Idempotency-Key already used for a batch with a different body; use a new key"
        ) from conflict
    return Response(bulk_accepted_json(accepted), status_code=202, media_type=_JSON)


# The 202 bodies are encoded here and sent as they are. FastAPI's response_model path (validate the
# returned model, then dump it) is a measurable share of the submit routes' time, and pydantic dumps
# a batch's id list more slowly than orjson does. The shapes are TaskAccepted's and
# TaskBulkAccepted's (the OpenAPI schema says so); tests/test_responses.py checks the bytes against
# the models' own JSON.
_JSON = "application/json"
_REPLAYED = "Duplicate request (same Idempotency-Key): nothing new was queued"
_FIRST_WORDS = {TaskStatus.QUEUED: "Task queued for processing", TaskStatus.SCHEDULED: "Task scheduled for later"}


def accepted_json(accepted: Accepted) -> bytes:
    """A TaskAccepted: for a replay, the task's status now and position 0."""
    return orjson.dumps(
        {
            "task_id": accepted.id,
            "status": accepted.status.value,
            "message": _REPLAYED if accepted.replayed else f"{_FIRST_WORDS[accepted.status]} (type {accepted.type})",
            "queue_position": accepted.position,
        }
    )


def bulk_accepted_json(accepted: AcceptedMany) -> bytes:
    """A TaskBulkAccepted: queue_position is the first task's (0 for a replay), counted as if all
    of normal priority (the waiting tasks of every priority before the batch, plus one)."""
    count = len(accepted.ids)
    scheduled = accepted.scheduled
    # One status for the batch: scheduled when every task is, else queued (the message counts them).
    status = TaskStatus.SCHEDULED if scheduled == count else TaskStatus.QUEUED
    later = f" ({scheduled} scheduled for later)" if scheduled else ""
    return orjson.dumps(
        {
            "task_ids": accepted.ids,
            "count": count,
            "status": status.value,
            "message": _REPLAYED if accepted.replayed else f"{count} tasks queued for processing{later}",
            "queue_position": 0 if accepted.replayed else accepted.depth + 1,
        }
    )


def _queue_full(full: Refused, limit: int, batch: int = 1) -> JSONResponse:
    extra = f"; this batch of {batch} would pass it" if batch > 1 else ""
    if full.memory:
        detail = f"the queue's memory budget (QUEUE_MAX_BYTES) is used up ({full.depth} tasks wait){extra}"
    else:
        detail = f"the queue holds {full.depth} tasks (limit {limit}){extra}"
    return json_error(
        503,
        f"{detail}; retry later",
        error="queue_full",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def find_task(queue: TaskQueue, pool: asyncpg.Pool, task_id: str) -> TaskRecord | None:
    """The task's record from Redis, else from Postgres (then cached in Redis again)."""
    task = await queue.get(task_id)
    if task is not None:
        return task
    # The hot copy expires after the result TTL; the durable copy answers from then on.
    try:
        task = await db.fetch_task(pool, task_id)
    except db.UNAVAILABLE_ERRORS as exc:
        raise DependencyUnavailable("postgres") from exc
    if task is not None:
        await queue.cache(task)
    return task


_WAIT = Query(
    gt=0,
    le=WAIT_MAX_SECONDS,
    allow_inf_nan=False,
    description=(
        f"Answer as soon as the task is final (completed, failed or cancelled), or with its state"
        f" after this many seconds (0 < wait <= {WAIT_MAX_SECONDS:g}). Without it, answer at once."
    ),
)


@router.get(
    "/task/{task_id}",
    response_model=TaskRecord,
    dependencies=[Depends(count_request)],
    responses=error_responses(410),
)
async def get_task(
    task_id: str,
    queue: QueueDep,
    pool: PoolDep,
    waiters: WaitersDep,
    settings: SettingsDep,
    wait: Annotated[float | None, _WAIT] = None,
) -> TaskRecord | JSONResponse:
    wanted = parse_task_id(task_id)
    if wanted is None:
        raise HTTPException(404, f"task {task_id!r} not found")
    if wait is None:
        task = await find_task(queue, pool, wanted)
    else:
        try:
            task = await waiters.wait(wanted, wait, functools.partial(find_task, queue, pool, wanted))
        except TooManyWaiters as full:
            return json_error(
                503,
                f"{full.limit} requests already wait for results on this gateway; retry shortly, or read"
                " the task without `wait`",
                error="too_many_waiters",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
    if task is None:
        return missing(wanted, settings)
    return task


def missing(task_id: str, settings: Settings) -> JSONResponse:
    """The answer for an id found neither in Redis nor Postgres: 410 when its time says it was
    pruned (older than RETENTION_DAYS); else it raises the 404."""
    if expired(task_id, settings.retention_days, now()):
        return expired_response(task_id, settings.retention_days)
    raise HTTPException(404, f"task {task_id!r} not found")
