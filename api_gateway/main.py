"""Builds the gateway app; the clients live for the process, created in the lifespan."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api_gateway.routes import admin, docs, info, status, tasks
from core.coalesce import Coalescer
from core.connections import create_pg_pool, create_redis, wait_for_dependencies
from core.http import build_app
from core.queue import TaskQueue
from core.settings import get_settings


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    redis = create_redis(settings)
    await wait_for_dependencies(redis, settings)
    # min_size=0: the gateway starts (and serves from Redis) even while Postgres is down.
    pool = await create_pg_pool(settings, min_size=0, max_size=5)
    app.state.settings = settings
    app.state.redis = redis
    app.state.pool = pool
    queue = TaskQueue.from_settings(redis, settings)
    app.state.queue = queue
    # Concurrent submissions share one enqueue round trip (the request counted in it too).
    app.state.intake = Coalescer(functools.partial(queue.enqueue_each, count_requests=True))
    try:
        yield
    finally:
        await pool.close()
        await redis.aclose()


def create_app() -> FastAPI:
    app = build_app("Serverless Scaling API gateway", "api_gateway", lifespan)
    app.include_router(info.router)
    app.include_router(tasks.router)
    app.include_router(status.router)
    app.include_router(admin.router)
    # The docs pages' assets (Swagger UI, ReDoc, their start scripts), vendored: no CDN.
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    app.include_router(docs.router)
    return app
