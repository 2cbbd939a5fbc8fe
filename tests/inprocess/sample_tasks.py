"""Task types for tests/inprocess/test_task_types.py: a sync and an async function, one taking the
context, one with a short timeout and two with retry policies of their own."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from pydantic import BaseModel, ConfigDict

from core.task_types import Retry, TaskContext, TaskFailed, task_type


class Add(BaseModel):
    model_config = ConfigDict(strict=True)

    a: int
    b: int = 0


@task_type("test.add", input=Add)
def add(data: Add) -> dict[str, Any]:
    """Adds two integers, in a thread."""
    return {"sum": data.a + data.b, "main_thread": threading.current_thread() is threading.main_thread()}


@task_type("test.context")
async def with_context(data: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Reports its context, after one round trip to each store."""
    await context.redis.set(f"test.context:{context.task_id}", context.attempt)
    return {
        "data": data,
        "task_id": context.task_id,
        "attempt": context.attempt,
        "task_type": context.task_type,
        "redis": await context.redis.get(f"test.context:{context.task_id}"),
        "postgres": await context.pool.fetchval("SELECT 41 + 1"),
    }


@task_type("test.slow", timeout=0.2)
async def slow(data: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(float(data.get("seconds", 5)))
    return {}


@task_type("test.flaky", retry=Retry(max_attempts=5, base_seconds=0.01, cap_seconds=0.02))
async def flaky(_: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Fails its first three attempts."""
    if context.attempt <= 3:
        raise TaskFailed(f"attempt {context.attempt} failed on purpose")
    return {"succeeded_on": context.attempt}


@task_type("test.once", retry=Retry(max_attempts=1))
async def once(_: dict[str, Any]) -> dict[str, Any]:
    raise TaskFailed("fails, and is never retried")
