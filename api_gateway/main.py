"""Builds the gateway app; the clients live for the process, created in the lifespan."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api_gateway.routes import admin, cancel, docs, info, status, task_types, tasks
from api_gateway.waiters import Waiters, release_on_sigterm
from core.coalesce import Coalescer
from core.connections import create_pg_pool, create_redis, create_subscriber, wait_for_dependencies
from core.http import build_app
from core.queue import TaskQueue
from core.settings import get_settings
from core.task_types import load_modules, module_names


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    # The types' input models check submissions; a module that fails to import stops the start.
    app.state.task_types = load_modules(module_names(settings.task_modules))
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
    # `GET /api/task/{id}?wait=S`: one subscription for all waiting requests.
    waiters = app.state.waiters = Waiters(create_subscriber(settings), settings.wait_max_waiters)
    waiters.start()
    release_on_sigterm(waiters)
    try:
        yield
    finally:
        await waiters.aclose()
        await pool.close()
        await redis.aclose()


def create_app() -> FastAPI:
    app = build_app("Serverless Scaling API gateway", "api_gateway", lifespan)
    app.include_router(info.router)
    app.include_router(tasks.router)
    app.include_router(cancel.router)
    app.include_router(task_types.router)
    app.include_router(status.router)
    app.include_router(admin.router)
    # The docs pages' assets (Swagger UI, ReDoc, their start scripts), vendored: no CDN.
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    app.include_router(docs.router)
    task_types.document(app)
    return app
