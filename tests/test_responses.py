"""How the services answer: FastAPI's own path (a declared return type, serialized by pydantic) with
no deprecated response class, and the submit routes' hand-encoded 202s equal to their models' JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from fastapi.datastructures import DefaultPlaceholder
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

import api_gateway.main
import autoscaler.main
import monitoring.main
import worker_service.main
from api_gateway.routes.tasks import accepted_json, bulk_accepted_json
from core.models import TaskAccepted, TaskBulkAccepted, TaskStatus
from core.queue import Accepted, AcceptedMany

FACTORIES: list[Callable[[], FastAPI]] = [
    api_gateway.main.create_app,
    monitoring.main.create_app,
    worker_service.main.create_app,
    autoscaler.main.create_app,
]
IDS = ["0b0e8c1e-6f7a-4c1e-9d3a-5a0f1b2c3d4e", "1c1f9d2f-7a8b-4d2f-8e4b-6b1a2c3d4e5f"]


def _models_json(model: type[BaseModel], raw: bytes) -> bytes:
    """What FastAPI's response_model path sends for that body: the model's own JSON."""
    return model.model_validate_json(raw).model_dump_json().encode()


@pytest.mark.parametrize(
    "accepted",
    [
        Accepted(IDS[0], "echo", TaskStatus.QUEUED, 7),
        Accepted(IDS[0], "echo", TaskStatus.COMPLETED, 0, replayed=True),
    ],
    ids=["new", "replayed"],
)
def test_a_submissions_202_is_task_accepteds_json(accepted: Accepted) -> None:
    raw = accepted_json(accepted)
    assert raw == _models_json(TaskAccepted, raw)
    assert TaskAccepted.model_validate_json(raw).queue_position == accepted.position


@pytest.mark.parametrize("replayed", [False, True], ids=["new", "replayed"])
def test_a_batchs_202_is_task_bulk_accepteds_json(replayed: bool) -> None:
    raw = bulk_accepted_json(AcceptedMany(IDS, depth=4, created_at=datetime.now(UTC), replayed=replayed))
    assert raw == _models_json(TaskBulkAccepted, raw)
    body = TaskBulkAccepted.model_validate_json(raw)
    assert (body.task_ids, body.count, body.queue_position) == (IDS, 2, 0 if replayed else 5)


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__module__.split(".")[0])
def test_routes_leave_json_to_fastapi(factory: Callable[[], FastAPI]) -> None:
    """No default or per-route JSON response class: one would turn off FastAPI's pydantic path."""
    app = factory()
    assert isinstance(app.router.default_response_class, DefaultPlaceholder)
    for route in app.routes:
        if isinstance(route, APIRoute):
            assert isinstance(route.response_class, DefaultPlaceholder) or route.response_class is HTMLResponse, (
                route.path
            )


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__module__.split(".")[0])
def test_errors_answer_without_a_warning(factory: Callable[[], FastAPI]) -> None:
    """Built and answering (an unknown path, an unknown Host) with warnings as errors (pyproject):
    nothing deprecated on the way. Neither answer needs the lifespan's clients."""

    async def ask() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=factory())
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            missing = await client.get("/no-such-path")
            return missing, await client.get("/no-such-path", headers={"host": "rebound.example"})

    missing, stranger = asyncio.run(ask())
    assert (missing.status_code, missing.json()) == (404, {"error": "not_found", "detail": "Not Found"})
    assert missing.headers["content-type"] == "application/json"
    assert (stranger.status_code, stranger.json()["error"]) == (421, "unknown_host")
