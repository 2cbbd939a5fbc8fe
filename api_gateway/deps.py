"""Request dependencies: the clients the lifespan created, as typed aliases.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in its thread pool, a
thread hop per request for a dictionary lookup."""

from __future__ import annotations

from contextlib import suppress
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api_gateway.waiters import Waiters
from core.coalesce import Coalescer
from core.models import TaskSubmit
from core.queue import Accepted, Refused, TaskQueue
from core.settings import Settings


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _queue(request: Request) -> TaskQueue:
    queue: TaskQueue = request.app.state.queue
    return queue


Intake = Coalescer[TaskSubmit, Accepted | Refused]


async def _redis(request: Request) -> Redis:
    redis: Redis = request.app.state.redis
    return redis


async def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


SettingsDep = Annotated[Settings, Depends(_settings)]
QueueDep = Annotated[TaskQueue, Depends(_queue)]
RedisDep = Annotated[Redis, Depends(_redis)]
PoolDep = Annotated[asyncpg.Pool, Depends(_pool)]


async def _waiters(request: Request) -> Waiters:
    waiters: Waiters = request.app.state.waiters
    return waiters


WaitersDep = Annotated[Waiters, Depends(_waiters)]


async def count_request(queue: QueueDep) -> None:
    """Count an API request in the shared counters; best effort, never the reason a request fails."""
    with suppress(RedisError):
        await queue.count_request()
