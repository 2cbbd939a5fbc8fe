"""Client factories. Each process calls these once, in its lifespan, and closes them on shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, cast

import asyncpg
import hiredis
import orjson
from redis.asyncio import Connection, Redis, UnixDomainSocketConnection
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core import db
from core.settings import Settings

log = logging.getLogger(__name__)


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


def _cluster_client(settings: Settings, *, retries: int, health_check_interval: float) -> Redis:
    """A Redis Cluster client (REDIS_CLUSTER), typed as the Redis it stands in for: the queue sends
    it only commands whose keys share a slot (core.keys.QueueKeys), or pipelines without MULTI."""
    cluster = RedisCluster.from_url(
        settings.redis_url,
        decode_responses=True,
        retry=Retry(NoBackoff(), retries),
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=health_check_interval,
        max_connections=256,
    )
    return cast(Redis, cluster)


def create_redis(settings: Settings) -> Redis:
    # Short timeouts and one immediate retry (a pooled connection may predate a Redis restart):
    # a dead Redis must turn into a quick 503, never a hanging request. Loops retry themselves.
    if settings.redis_cluster:
        return _cluster_client(settings, retries=1, health_check_interval=15)
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


def create_subscriber(settings: Settings) -> Redis:
    """A client for one long-lived pub/sub connection, apart from the pool of create_redis.

    No retry and no health check inside redis-py: either would reconnect, or read a PING's
    answer, from whichever task sent a command, while the subscriber's reader task reads the
    same socket. The reader reconnects and probes the connection itself. On a cluster it is a
    plain client of the node REDIS_URL names: a publish reaches every node's subscribers."""
    return Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=0,
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


async def _missing_dependency(redis: Redis, settings: Settings) -> str | None:
    """What the service still waits for, or None once Redis answers and the schema is in place."""
    try:
        await redis.ping()
    except RedisError as exc:
        return f"redis ({exc})"
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=settings.redis_timeout_seconds)
    except (*db.UNAVAILABLE_ERRORS, asyncpg.InvalidCatalogNameError, asyncpg.InvalidPasswordError) as exc:
        return f"postgres ({exc})"
    try:
        version = await db.schema_version(conn)
    finally:
        await conn.close()
    if version < len(db.MIGRATIONS):
        return f"the schema (version {version} of {len(db.MIGRATIONS)}; core.migrate applies it)"
    return None


async def wait_for_dependencies(redis: Redis, settings: Settings) -> None:
    """Hold the service's start until Redis answers and core.migrate has applied the schema, for at
    most STARTUP_WAIT_SECONDS, logging what it waits for; past that, raise (the process exits and
    its orchestrator restarts it). Under a swarm nothing orders the services' start, as Compose's
    depends_on and the native launcher do; with the setting at 0 (their case) nothing is checked."""
    if settings.startup_wait_seconds <= 0:
        if isinstance(redis, RedisCluster):
            # A cluster client learns which node serves which slot on its first command; its
            # pub/sub does not (the worker's cancel listener may come first).
            await redis.initialize()
        return
    deadline = time.monotonic() + settings.startup_wait_seconds
    logged = ""
    while (missing := await _missing_dependency(redis, settings)) is not None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"still waiting for {missing} after {settings.startup_wait_seconds:.0f} s")
        waiting_for = missing.split(" ", 1)[0]
        if waiting_for != logged:
            log.warning("waiting for %s", missing)
            logged = waiting_for
        await asyncio.sleep(1.0)
    if logged:
        log.warning("redis, postgres and the schema are ready; starting")
