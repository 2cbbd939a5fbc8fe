"""Builds the autoscaler app: a health/status surface around the scaling loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response

from autoscaler import kubernetes
from autoscaler.actuators import Actuator, ComposeActuator, NativeActuator, RecommendActuator
from autoscaler.loop import Autoscaler
from autoscaler.swarm import SwarmActuator
from core.connections import create_pg_pool, create_redis, wait_for_dependencies
from core.http import build_app
from core.queue import TaskQueue
from core.settings import Settings, get_settings
from core.timeutil import iso


def build_actuator(settings: Settings, http: httpx.AsyncClient | None) -> Actuator:
    if settings.autoscale != "on":
        return RecommendActuator()
    if settings.autoscale_engine == "native":
        if not settings.supervisor_socket:
            raise RuntimeError("AUTOSCALE_ENGINE=native needs SUPERVISOR_SOCKET")
        return NativeActuator(settings.supervisor_socket)
    assert http is not None
    if settings.autoscale_engine == "kubernetes":
        return kubernetes.KubernetesActuator.from_settings(http, settings)
    if settings.autoscale_engine == "swarm":
        return SwarmActuator.from_settings(http, settings)
    return ComposeActuator(http, settings.compose_project)


def _quiet_httpx() -> None:
    # httpx logs every request at INFO: a line per engine call each tick, healthy or not.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _docker_client(settings: Settings) -> httpx.AsyncClient:
    _quiet_httpx()
    # DOCKER_HOST=tcp://proxy:2375 (the socket proxy); the raw socket is never mounted here.
    return httpx.AsyncClient(base_url=settings.docker_host.replace("tcp://", "http://"), timeout=10)


def _engine_client(settings: Settings) -> httpx.AsyncClient | None:
    """The HTTP client of an engine reached over HTTP (Docker, Kubernetes); None for supervisord
    and when the autoscaler acts on nothing (a pod may then have no service account token)."""
    if settings.autoscale != "on":
        return None
    if settings.autoscale_engine in ("compose", "swarm"):
        return _docker_client(settings)
    if settings.autoscale_engine == "kubernetes":
        _quiet_httpx()
        return kubernetes.api_client(settings)
    return None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    redis = create_redis(settings)
    await wait_for_dependencies(redis, settings)
    pool = await create_pg_pool(settings, min_size=0, max_size=2)
    http = _engine_client(settings)
    scaler = Autoscaler(TaskQueue.from_settings(redis, settings), redis, pool, settings, build_actuator(settings, http))
    app.state.scaler = scaler
    loop = asyncio.create_task(scaler.run(), name="autoscaler")
    try:
        yield
    finally:
        loop.cancel()
        with suppress(asyncio.CancelledError):
            await loop
        if http is not None:
            await http.aclose()
        await pool.close()
        await redis.aclose()


def create_app() -> FastAPI:
    app = build_app("Serverless Scaling autoscaler", "autoscaler", lifespan)

    @app.get("/health", responses={503: {"description": "The actuator keeps failing; the body names the error"}})
    async def health(request: Request, response: Response) -> dict[str, Any]:
        # Healthy means the autoscaler can act: a loop whose every tick fails must not pass a
        # healthcheck while the dashboard shows advice nobody follows.
        scaler: Autoscaler = request.app.state.scaler
        if not scaler.health.failing:
            return {"status": "healthy", "service": "autoscaler"}
        response.status_code = 503
        return {
            "status": "unhealthy",
            "service": "autoscaler",
            "engine": scaler.actuator.name,
            "error": "actuator_failing",
            "detail": scaler.health.last_error,
            "actuator": scaler.health.status(),
        }

    @app.get("/status")
    async def status(request: Request) -> dict[str, Any]:
        scaler: Autoscaler = request.app.state.scaler
        last = scaler.last
        return {
            "mode": scaler.mode,
            "engine": scaler.actuator.name,
            "last": None if last is None else last.to_dict(),
            "state": asdict(scaler.state),
            "actuator": scaler.health.status(),
            "timestamp": iso(),
        }

    return app
