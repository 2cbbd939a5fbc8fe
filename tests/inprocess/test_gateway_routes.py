"""The gateway's routes in-process: submission, read-back, idempotency, the queue bound, the schema."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from core import keys
from core.models import TaskSubmit
from tests.inprocess.apps import MARKS, final, persisted, serving, submit, task
from tests.inprocess.servers import Servers

pytestmark = MARKS

TASK_FIELDS = {
    "id", "type", "data", "status", "created_at", "started_at", "completed_at",
    "processing_time", "worker_id", "result", "error", "attempts", "priority", "run_at",
}  # fmt: skip
JSON = {"content-type": "application/json"}


def accepted(servers: Servers) -> int:
    return int(servers.redis.hget(keys.SINGLE.stats, keys.STAT_ACCEPTED) or 0)


# -- submitting ---------------------------------------------------------------------------------


async def test_submit_returns_202_with_its_fields(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post("/api/task", json={"type": "echo", "data": {"n": 1}})
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"task_id", "status", "message", "queue_position"}
    assert body["status"] == "queued"
    assert uuid.UUID(body["task_id"]).version == 7
    assert body["queue_position"] >= 1


async def test_task_ids_are_unique_under_a_burst(gateway: httpx.AsyncClient) -> None:
    ids = [await submit(gateway, "echo", {"i": i}) for i in range(200)]
    assert len(set(ids)) == 200


async def test_queue_position_counts_the_backlog(gateway: httpx.AsyncClient) -> None:
    # No worker serves: the queue holds still.
    positions = [(await gateway.post("/api/task", json={"type": "echo"})).json()["queue_position"] for _ in range(5)]
    assert positions == [1, 2, 3, 4, 5]


async def test_concurrent_submissions_are_all_accepted_with_distinct_ids_and_positions(
    gateway: httpx.AsyncClient,
) -> None:
    responses = await asyncio.gather(
        *(gateway.post("/api/task", json={"type": "echo", "data": {"i": i}}) for i in range(60))
    )
    assert {r.status_code for r in responses} == {202}
    bodies = [r.json() for r in responses]
    assert len({b["task_id"] for b in bodies}) == 60
    assert sorted(b["queue_position"] for b in bodies) == list(range(1, 61))
    # Every record is stored under its id with the data its request sent.
    for body, i in zip(bodies, range(60), strict=True):
        assert (await task(gateway, body["task_id"]))["data"] == {"i": i}


async def test_the_queue_bound_refuses_coalesced_submissions(servers: Servers) -> None:
    async with serving(servers, "api-gateway", QUEUE_MAX="5") as gateway:
        responses = await asyncio.gather(*(gateway.post("/api/task", json={"type": "echo"}) for _ in range(20)))
    assert sorted(r.status_code for r in responses) == [202] * 5 + [503] * 15
    refused = [r for r in responses if r.status_code == 503]
    assert all(r.json()["error"] == "queue_full" and r.headers["retry-after"] for r in refused)
    assert servers.redis.llen(keys.SINGLE.queue) == 5


# -- what a body may hold -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b'{"type": "echo", "data": ',  # malformed JSON
        b"not json at all",
        b'{"data": {}}',  # type missing
        b'{"type": "a b"}',  # bad characters
        b'{"type": "' + b"x" * 65 + b'"}',  # too long
        b'{"type": ""}',
        b'{"type": "echo", "data": [1, 2]}',  # data not an object
        b'{"type": 5}',
        b"[]",
        b"",
    ],
)
async def test_bad_bodies_are_422_json(servers: Servers, gateway: httpx.AsyncClient, content: bytes) -> None:
    before = accepted(servers)
    response = await gateway.post("/api/task", content=content, headers=JSON)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"
    assert accepted(servers) == before


async def test_a_body_error_names_the_field_under_body(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post("/api/task", json={"type": "bad type!"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "type"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/task", b'{"type": "echo", "data": {"x": NaN}}'),
        ("/api/task", b'{"type": "echo", "data": {"x": Infinity}}'),
        ("/api/task", b'{"type": "echo", "data": {"x": [1, -Infinity]}}'),
        ("/api/task", b'{"type": "echo", "data": {"x": {"y": 1e999}}}'),
        ("/api/task", b'{"type": "echo", "data": {"x": -1e400, "y": null}}'),
        ("/api/task", b'{"type": "echo", "data": {"x": 1' + b"0" * 400 + b".5}}"),
        ("/api/tasks", b'{"tasks": [{"type": "echo"}, {"type": "echo", "data": {"x": NaN}}]}'),
        ("/api/tasks", b'{"tasks": [{"type": "echo", "data": {"n": null}}, {"type": "echo", "data": {"x": 2e308}}]}'),
    ],
)
async def test_non_finite_numbers_are_422(servers: Servers, gateway: httpx.AsyncClient, path: str, body: bytes) -> None:
    before = accepted(servers)
    response = await gateway.post(path, content=body, headers=JSON)
    assert response.status_code == 422, response.text
    problem = response.json()["detail"][-1]
    assert "finite" in problem["msg"]
    assert problem["loc"][-1] == "data"
    if path == "/api/tasks":
        assert problem["loc"][:3] == ["body", "tasks", 1]  # the bad task's index
    assert accepted(servers) == before


async def test_null_and_number_like_strings_still_pass(gateway: httpx.AsyncClient) -> None:
    data: dict[str, Any] = {"n": None, "s": "NaN", "t": "null", "big": 1.7976931348623157e308}
    task_id = await submit(gateway, "echo", data)
    assert (await task(gateway, task_id))["data"] == data


# -- the Idempotency-Key header ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "has space", "x" * 201, "tab\there", "caf\u00e9"])
async def test_a_bad_idempotency_key_is_422_and_queues_nothing(
    servers: Servers, gateway: httpx.AsyncClient, value: str
) -> None:
    before = accepted(servers)
    response = await gateway.post("/api/task", json={"type": "echo"}, headers={b"Idempotency-Key": value.encode()})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert body["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert accepted(servers) == before


async def test_the_longest_idempotency_key_is_accepted(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post("/api/task", json={"type": "echo"}, headers={"Idempotency-Key": "k" * 199 + "!"})
    assert response.status_code == 202, response.text


async def test_idempotency_conflicts_name_no_task(gateway: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": f"exposure-{uuid.uuid4()}"}
    first = await gateway.post("/api/task", json={"type": "echo", "data": {"n": 1}}, headers=key)
    assert first.status_code == 202
    conflict = await gateway.post("/api/task", json={"type": "echo", "data": {"n": 2}}, headers=key)
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "conflict"
    assert first.json()["task_id"] not in conflict.text

    bulk_key = {"Idempotency-Key": f"exposure-bulk-{uuid.uuid4()}"}
    batch = await gateway.post("/api/tasks", json={"tasks": [{"type": "echo"}, {"type": "echo"}]}, headers=bulk_key)
    assert batch.status_code == 202
    other = await gateway.post("/api/tasks", json={"tasks": [{"type": "echo", "data": {"x": 1}}]}, headers=bulk_key)
    assert other.status_code == 409
    assert not any(task_id in other.text for task_id in batch.json()["task_ids"])
    # Neither 409 leaks a uuid of any kind.
    for text in (conflict.text, other.text):
        assert not any(len(word.strip("(),.;")) == 36 and word.count("-") == 4 for word in text.split())


async def test_the_schema_documents_the_body_and_the_header(gateway: httpx.AsyncClient) -> None:
    operation = (await gateway.get("/openapi.json")).json()["paths"]["/api/task"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["type"]
    assert schema["properties"]["type"]["pattern"] == TaskSubmit.model_json_schema()["properties"]["type"]["pattern"]
    (header,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert header["in"] == "header"
    assert header["schema"]["maxLength"] == 200


# -- reading tasks back ---------------------------------------------------------------------------


async def test_get_task_has_every_field_and_completes(gateway: httpx.AsyncClient, worker: httpx.AsyncClient) -> None:
    task_id = await submit(gateway, "echo", {"hello": "world"})
    found = await final(gateway, task_id)
    assert set(found) == TASK_FIELDS
    assert found["status"] == "completed"
    assert found["id"] == task_id
    assert found["type"] == "echo"
    assert found["result"] == {"echo": {"hello": "world"}}
    assert found["attempts"] == 1
    assert found["worker_id"].startswith("worker-service-")
    assert found["processing_time"] >= 0
    assert found["created_at"] <= found["started_at"] <= found["completed_at"]


async def test_unknown_task_is_404_json(gateway: httpx.AsyncClient) -> None:
    for task_id in (str(uuid.uuid4()), "not-a-uuid", "1700000000000"):
        response = await gateway.get(f"/api/task/{task_id}")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"] == "not_found"


async def test_expired_hot_copy_is_read_from_postgres_and_cached_back(
    servers: Servers, gateway: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    task_id = await submit(gateway, "echo", {"durable": True})
    original = await persisted(servers, gateway, task_id)
    servers.redis.delete(keys.SINGLE.task(task_id))  # what the result TTL does, sooner
    assert await task(gateway, task_id) == original
    assert servers.redis.exists(keys.SINGLE.task(task_id)) == 1


async def test_root_and_health(gateway: httpx.AsyncClient) -> None:
    root = (await gateway.get("/")).json()
    assert root["service"] == "API Gateway"
    assert "submit_task" in root["endpoints"]
    health = await gateway.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "healthy"


async def test_metrics_lists_newest_tasks_of_any_status(gateway: httpx.AsyncClient, worker: httpx.AsyncClient) -> None:
    failed = await submit(gateway, "fail")
    done = await submit(gateway, "echo", {"x": 1})
    for task_id in (failed, done):
        await final(gateway, task_id)
    body = (await gateway.get("/api/metrics")).json()
    metrics = body["system_metrics"]
    for name in ("total_requests", "active_workers", "queue_length", "processing", "completed", "failed"):
        assert isinstance(metrics[name], int)
    assert metrics["redis_connected"] is True
    assert metrics["failed"] >= 1
    recent = body["recent_tasks"]
    assert len(recent) <= 20
    assert [t["id"] for t in recent[:2]] == [done, failed]
    assert {t["status"] for t in recent[:2]} == {"completed", "failed"}
