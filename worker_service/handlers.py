"""Task handlers by type. Unknown types get simulated work, which clients of the seed API rely on."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]

MAX_SLEEP_MS = 600_000
MAX_CPU_ITERATIONS = 5_000_000


class InvalidTaskData(Exception):
    """The task's data can't be run: retrying the same input would fail the same way."""


class TaskFailed(Exception):
    """A failure a handler reports in words meant for the client (retryable). Any other exception
    is a fault of the handler: the client reads a plain message, the worker's log the details."""


class SimulatedFailure(TaskFailed):
    """The `fail` type's failure: an ordinary, retryable error."""


def _number(data: dict[str, Any], name: str, default: float, upper: float) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= upper:
        raise InvalidTaskData(f"data.{name} must be a number from 0 to {upper:g}, got {value!r}")
    return float(value)


async def echo(_: str, data: dict[str, Any]) -> Any:
    return {"echo": data}


async def sleep(_: str, data: dict[str, Any]) -> Any:
    ms = _number(data, "ms", 100, MAX_SLEEP_MS)
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}


def _hash_rounds(iterations: int) -> str:
    digest = b"serverless-scaling"
    for _ in range(iterations):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


async def cpu(_: str, data: dict[str, Any]) -> Any:
    iterations = int(_number(data, "iterations", 100_000, MAX_CPU_ITERATIONS))
    # Off the event loop, so heartbeats and claims keep flowing while it hashes.
    digest = await asyncio.to_thread(_hash_rounds, iterations)
    return {"iterations": iterations, "digest": digest}


async def fail(_: str, data: dict[str, Any]) -> Any:
    raise SimulatedFailure(str(data.get("message", "task type 'fail' always fails")))


async def simulated(task_type: str, data: dict[str, Any]) -> Any:
    """Simulated work: 1-4 s of waiting, or `data.work_ms`."""
    ms = _number(data, "work_ms", 0, MAX_SLEEP_MS) if "work_ms" in data else random.uniform(1000, 4000)
    await asyncio.sleep(ms / 1000)
    return {"message": f"Processed {task_type} task", "processed_data": data, "work_ms": round(ms, 1)}


async def crash(_: str, data: dict[str, Any]) -> Any:
    """Kills the worker running it, mid-task: a poison task, for showing how they end."""
    os._exit(int(data.get("code", 137)) & 0xFF)


REGISTRY: dict[str, Handler] = {"echo": echo, "sleep": sleep, "cpu": cpu, "fail": fail}
CHAOS: dict[str, Handler] = {"crash": crash}


def handler_for(task_type: str, *, chaos: bool = False) -> Handler:
    if chaos and task_type in CHAOS:
        return CHAOS[task_type]
    return REGISTRY.get(task_type, simulated)
