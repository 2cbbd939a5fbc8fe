"""Client factories. Each process calls these once, in its lifespan, and closes them on shutdown."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from core.settings import Settings


def create_redis(settings: Settings) -> Redis:
    # Short timeouts and one immediate retry (a pooled connection may predate a Redis restart):
    # a dead Redis must turn into a quick 503, never a hanging request. Loops retry themselves.
    return Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        retry=Retry(NoBackoff(), 1),
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=15,
        max_connections=256,
    )


async def init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name,
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pg_pool(settings: Settings, *, min_size: int = 1, max_size: int = 5) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        command_timeout=10,
        timeout=5,
    )
    return pool


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
