"""Client factories. Each process calls these once, in its lifespan, and closes them on shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import asyncpg
import hiredis
import orjson
from redis.asyncio import Connection, Redis, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.settings import Settings


class _CheapWriteTimeout:
    """redis-py bounds every socket write with asyncio.wait_for, which on Python 3.11 wraps the
    write in a new Task: CPU spent on every command of every hot path. asyncio.timeout gives the
    same bound without the Task (reads already use it)."""

    socket_timeout: float | None

    async def send_packed_command(self, command: bytes | str | Iterable[bytes], check_health: bool = True) -> None:
        limit, self.socket_timeout = self.socket_timeout, None  # no wait_for inside; restored below
        try:
            async with asyncio.timeout(limit):
                await super().send_packed_command(command, check_health)  # type: ignore[misc]
        except TimeoutError:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = limit


_PACKED_IN_C = frozenset((str, bytes, int))


class _PackInC:
    """redis-py's asyncio client packs commands in Python, argument by argument; hiredis packs the
    same bytes in C, many times faster. That matters on the batch scripts: a worker's write of 500
    final records is 2,000 arguments. Anything but plain str, bytes and int (and a command name
    with a space in it) goes through redis-py's own packer."""

    def pack_command(self, *args: Any) -> list[bytes]:
        # The type check runs in C too (map over a frozenset): a bulk write has thousands of arguments.
        if isinstance(args[0], str) and " " not in args[0] and all(map(_PACKED_IN_C.__contains__, map(type, args))):
            return [hiredis.pack_command(args)]
        return super().pack_command(*args)  # type: ignore[misc,no-any-return]


class _TcpConnection(_PackInC, _CheapWriteTimeout, Connection):
    pass


class _UnixConnection(_PackInC, _CheapWriteTimeout, UnixDomainSocketConnection):
    pass


def create_redis(settings: Settings) -> Redis:
    # Short timeouts and one immediate retry (a pooled connection may predate a Redis restart):
    # a dead Redis must turn into a quick 503, never a hanging request. Loops retry themselves.
    client = Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        retry=Retry(NoBackoff(), 1),
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=15,
        max_connections=256,
    )
    # Set after from_url: for a unix:// URL it picks redis-py's own class, whatever we pass it.
    pool = client.connection_pool
    pool.connection_class = _UnixConnection if pool.connection_class is UnixDomainSocketConnection else _TcpConnection
    return client


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
