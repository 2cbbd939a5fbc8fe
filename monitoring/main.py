"""Builds the dashboard app; the clients and the sampling loop live for the process (lifespan)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from core.connections import create_pg_pool, create_redis, wait_for_dependencies
from core.http import build_app
from core.queue import TaskQueue
from core.settings import get_settings
from monitoring import live, routes
from monitoring.alerting import Alerting


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    redis = create_redis(settings)
    await wait_for_dependencies(redis, settings)
    pool = await create_pg_pool(settings, min_size=0, max_size=3)
    queue = TaskQueue.from_settings(redis, settings)
    hub = live.Hub(live.StreamSlots(settings.sse_streams_per_client, settings.sse_streams_max))
    app.state.settings, app.state.redis, app.state.pool, app.state.queue, app.state.hub = (
        settings,
        redis,
        pool,
        queue,
        hub,
    )
    alerting = Alerting(queue, redis, pool, settings)
    app.state.alerting = alerting
    alerting.start()
    sampling = asyncio.create_task(live.run(queue, redis, pool, settings, hub, alerting), name="sampler")
    try:
        yield
    finally:
        sampling.cancel()
        with suppress(asyncio.CancelledError):
            await sampling
        await alerting.stop()
        await pool.close()
        await redis.aclose()


def create_app() -> FastAPI:
    app = build_app("Serverless Scaling dashboard", "monitoring", lifespan)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    app.include_router(routes.router)
    return app
