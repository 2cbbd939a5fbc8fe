"""Submitting tasks and reading them back."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from api_gateway.deps import PoolDep, QueueDep, count_request
from core import db
from core.http import DependencyUnavailable
from core.models import TaskAccepted, TaskRecord, TaskSubmit, is_task_id

router = APIRouter(prefix="/api", tags=["tasks"], dependencies=[Depends(count_request)])


@router.post("/task", status_code=202, response_model=TaskAccepted)
async def submit_task(body: TaskSubmit, queue: QueueDep) -> TaskAccepted:
    task, position = await queue.enqueue(body)
    return TaskAccepted(
        task_id=task.id,
        message=f"Task queued for processing (type {task.type})",
        queue_position=position,
    )


@router.get(
    "/task/{task_id}",
    response_model=TaskRecord,
    responses={404: {"description": "No task with this id was ever accepted"}},
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
