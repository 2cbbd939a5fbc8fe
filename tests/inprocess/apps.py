"""Each service's app in this process, with its lifespan entered and the environment the native
launcher gives it, answered through `httpx.ASGITransport`: no sockets, no nginx, no supervisord."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI

import api_gateway.main
import autoscaler.main
import monitoring.main
import worker_service.main
from core.models import FINAL_STATUSES
from core.settings import get_settings
from tests.inprocess.servers import Servers

T = TypeVar("T")

#: The compose service each app factory builds.
FACTORIES: dict[str, Callable[[], FastAPI]] = {
    "api-gateway": api_gateway.main.create_app,
    "monitoring": monitoring.main.create_app,
    "worker-service": worker_service.main.create_app,
    "autoscaler": autoscaler.main.create_app,
}

#: Every in-process test module's `pytestmark`: its tests are coroutines run by anyio's plugin.
MARKS = [pytest.mark.anyio]


@asynccontextmanager
async def serving(servers: Servers, service: str, **overrides: str) -> AsyncIterator[httpx.AsyncClient]:
    """`service`'s app with its lifespan running (its loops too: a worker claims and runs tasks)
    and a client for it; `overrides` are environment variables over the launcher's."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in {**servers.env(service), **overrides}.items():
            env.setenv(name, value)
        get_settings.cache_clear()
        app = FACTORIES[service]()
        # The worker chains its SIGTERM handler to the one before: give that one back afterwards.
        sigterm = signal.getsignal(signal.SIGTERM)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
    get_settings.cache_clear()  # the lifespan has read them: the next app reads its own
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=10) as client:
            yield client
    finally:
        await lifespan.__aexit__(None, None, None)
        signal.signal(signal.SIGTERM, sigterm)


async def eventually(condition: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    """Poll `condition` until it returns something truthy, yielding to the apps' loops meanwhile."""
    deadline = time.monotonic() + timeout
    while not (found := await condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
    return found


async def submit(gateway: httpx.AsyncClient, task_type: str = "echo", data: dict[str, Any] | None = None) -> str:
    response = await gateway.post("/api/task", json={"type": task_type, "data": data or {}})
    assert response.status_code == 202, response.text
    return str(response.json()["task_id"])


async def task(gateway: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    response = await gateway.get(f"/api/task/{task_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def final(gateway: httpx.AsyncClient, task_id: str, timeout: float = 20) -> dict[str, Any]:
    """The task once it is completed or failed (a worker app must be serving)."""

    async def done() -> dict[str, Any] | None:
        found = await task(gateway, task_id)
        return found if found["status"] in FINAL_STATUSES else None

    return await eventually(done, timeout, f"task {task_id} to finish")


async def persisted(servers: Servers, gateway: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    """The task once final in Redis and its row is in Postgres."""
    found = await final(gateway, task_id)

    async def row() -> bool:
        return bool(await servers.pg("SELECT 1 FROM tasks WHERE id = $1::uuid", task_id))

    await eventually(row, 10, f"task {task_id}'s Postgres row")
    return found
