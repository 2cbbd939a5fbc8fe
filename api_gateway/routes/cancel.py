"""Cancelling a task: `DELETE /api/task/{id}`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api_gateway.deps import PoolDep, QueueDep, SettingsDep, count_request
from api_gateway.routes.tasks import find_task, missing
from core.cancels import Outcome
from core.http import error_responses
from core.models import TaskRecord, TaskStatus, parse_task_id

router = APIRouter(prefix="/api", tags=["tasks"], responses=error_responses(404, 413, 422, 503))


class CancelRequested(BaseModel):
    """A running task's worker was asked to stop it: its record turns `cancelled` once it has."""

    task_id: str
    #: its status when asked (processing, or claimed and about to run)
    status: TaskStatus
    message: str


def _not_cancellable(task: TaskRecord) -> HTTPException:
    return HTTPException(409, f"task {task.id} is already {task.status.value}; there is nothing to cancel")


@router.delete(
    "/task/{task_id}",
    response_model=TaskRecord,
    dependencies=[Depends(count_request)],
    responses={
        202: {"model": CancelRequested, "description": "Running: its worker was asked to stop it (?running=true)"},
        **error_responses(409, 410),
    },
)
async def cancel_task(
    task_id: str,
    queue: QueueDep,
    pool: PoolDep,
    settings: SettingsDep,
    running: bool = Query(False, description="Also stop a running task: its worker cancels it cooperatively"),
) -> TaskRecord | JSONResponse:
    """Cancel a task that is `queued`, `scheduled` or `retrying`: it never runs, and its record turns
    `cancelled` (final) at once. A running task gets 409 unless `?running=true`, which asks its worker
    to stop it (202; the record turns `cancelled` once it has). Cancelling a cancelled task again
    returns it; a completed or failed one gets 409."""
    wanted = parse_task_id(task_id)
    if wanted is None:
        raise HTTPException(404, f"task {task_id!r} not found")
    result = await queue.cancel_waiting(wanted)
    task = result.task
    if result.outcome is Outcome.NOT_IN_REDIS:
        # Only a final record lives in Postgres alone (or it never existed).
        task = await find_task(queue, pool, wanted)
    if task is None:
        return missing(wanted, settings)
    if result.outcome is Outcome.CANCELLED or task.status is TaskStatus.CANCELLED:
        return task
    if task.status.is_final:
        raise _not_cancellable(task)
    if not running:
        raise HTTPException(
            409,
            f"task {wanted} is running ({task.status.value}); add ?running=true to ask its worker to stop it",
        )
    await queue.request_cancel(wanted)
    requested = CancelRequested(
        task_id=wanted,
        status=task.status,
        message="its worker was asked to stop it; its record turns cancelled once it has",
    )
    return JSONResponse(requested.model_dump(mode="json"), status_code=202)
