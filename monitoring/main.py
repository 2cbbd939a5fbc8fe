"""Builds the dashboard app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse

from core.connections import create_pg_pool, create_redis
from core.http import install_edge
from core.queue import TaskQueue
from core.settings import get_settings
from monitoring import routes


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    redis = create_redis(settings)
    pool = await create_pg_pool(settings, min_size=0, max_size=3)
    app.state.settings = settings
    app.state.pool = pool
    app.state.queue = TaskQueue(redis, result_ttl=settings.result_ttl_seconds, recent_kept=settings.recent_tasks_kept)
    try:
        yield
    finally:
        await pool.close()
        await redis.aclose()


def create_app() -> FastAPI:
    app = FastAPI(
        title="Serverless Scaling dashboard", version="1.0.0", lifespan=lifespan, default_response_class=ORJSONResponse
    )
    install_edge(app, get_settings())
    app.include_router(routes.router)
    return app
