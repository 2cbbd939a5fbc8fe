"""The built-in task types, registered as any TASK_MODULES type is (core/task_types.py), and what a
worker runs for a type nobody registered: simulated work, which clients of the seed API rely on,
or under STRICT_TYPES a failure."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.settings import Settings
from core.task_types import REGISTRY, InvalidTaskData, Retry, TaskContext, TaskFailed, TaskType, task_type

__all__ = ["InvalidTaskData", "TaskFailed", "handler_for", "retry_for"]

MAX_SLEEP_MS = 600_000
MAX_CPU_ITERATIONS = 5_000_000


class SimulatedFailure(TaskFailed):
    """The `fail` type's failure: an ordinary, retryable error."""


# The input models are strict: "100" is no number and true is no count (JSON has both).


class SleepInput(BaseModel):
    model_config = ConfigDict(strict=True)

    ms: float = Field(100.0, ge=0, le=MAX_SLEEP_MS, allow_inf_nan=False, description="milliseconds to wait")


class CpuInput(BaseModel):
    model_config = ConfigDict(strict=True)

    iterations: int = Field(100_000, ge=0, le=MAX_CPU_ITERATIONS, description="SHA-256 rounds to hash")


class FailInput(BaseModel):
    model_config = ConfigDict(strict=True)

    message: str | None = Field(None, description="the error the task fails with")


@task_type("echo")
async def echo(data: dict[str, Any]) -> Any:
    """Returns its data as {"echo": data}."""
    return {"echo": data}


@task_type("sleep", input=SleepInput)
async def sleep(data: SleepInput) -> Any:
    """Waits `ms` milliseconds without using the CPU."""
    await asyncio.sleep(data.ms / 1000)
    return {"slept_ms": data.ms}


def _hash_rounds(iterations: int) -> str:
    digest = b"serverless-scaling"
    for _ in range(iterations):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@task_type("cpu", input=CpuInput)
def cpu(data: CpuInput) -> Any:
    """Hashes `iterations` SHA-256 rounds (CPU-bound; it runs in a thread, off the event loop)."""
    return {"iterations": data.iterations, "digest": _hash_rounds(data.iterations)}


@task_type("fail", input=FailInput)
async def fail(data: FailInput) -> Any:
    """Always fails (retryable), with `message` as its error."""
    raise SimulatedFailure(data.message if data.message is not None else "task type 'fail' always fails")


def _number(data: dict[str, Any], name: str, default: float, upper: float) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= upper:
        raise InvalidTaskData(f"data.{name} must be a number from 0 to {upper:g}, got {value!r}")
    return float(value)


async def simulated(data: dict[str, Any], context: TaskContext) -> Any:
    """Simulated work: 1-4 s of waiting, or `data.work_ms`."""
    ms = _number(data, "work_ms", 0, MAX_SLEEP_MS) if "work_ms" in data else random.uniform(1000, 4000)
    await asyncio.sleep(ms / 1000)
    return {"message": f"Processed {context.task_type} task", "processed_data": data, "work_ms": round(ms, 1)}


async def unknown(_: dict[str, Any], context: TaskContext) -> Any:
    raise InvalidTaskData(f"unknown task type {context.task_type!r} (STRICT_TYPES is on)")


async def crash(data: dict[str, Any]) -> Any:
    """Kills the worker running it, mid-task: a poison task, for showing how they end."""
    os._exit(int(data.get("code", 137)) & 0xFF)


# Not in REGISTRY: they stand in for types nobody registered, under one name each.
SIMULATED = TaskType("simulated", simulated, origin=f"{__name__}.simulated")
UNKNOWN = TaskType("unknown", unknown, origin=f"{__name__}.unknown")
CHAOS: dict[str, TaskType] = {"crash": TaskType("crash", crash, origin=f"{__name__}.crash")}


def handler_for(task_type: str, *, chaos: bool = False, strict: bool = False) -> TaskType:
    """What runs a task of `task_type`: its registered type, else simulated work (or under
    STRICT_TYPES a failure without retry); CHAOS_TASKS adds `crash`."""
    if chaos and task_type in CHAOS:
        return CHAOS[task_type]
    found = REGISTRY.types.get(task_type)
    if found is not None:
        return found
    return UNKNOWN if strict else SIMULATED


@functools.lru_cache(maxsize=64)
def _policy(own: Retry | None, max_attempts: int, base: float, cap: float) -> Retry:
    # Cached: every claimed task asks (the poison check), and most share one answer.
    defaults = Retry(max_attempts, base, cap)
    return own.over(defaults) if own is not None else defaults


def retry_for(kind: TaskType, settings: Settings) -> Retry:
    """The retry policy of a task of `kind`: its own, over MAX_ATTEMPTS and the worker's backoff."""
    return _policy(kind.retry, settings.max_attempts, settings.retry_base_seconds, settings.retry_cap_seconds)
