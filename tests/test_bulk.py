"""POST /api/tasks: many tasks in one request, all or none, each validated like POST /api/task."""

from __future__ import annotations

import uuid

import httpx
import pytest

from core import keys
from harness.stacks import Stack


def _bulk(n: int, start: int = 0) -> dict[str, object]:
    return {"tasks": [{"type": "echo", "data": {"i": i}} for i in range(start, start + n)]}


def test_bulk_is_202_with_ids_in_order_and_every_task_completes_and_lands_in_postgres(stack: Stack) -> None:
    response = stack.http.post("/api/tasks", json=_bulk(50))
    assert response.status_code == 202, response.text
    body = response.json()
    ids = body["task_ids"]
    assert body["count"] == 50
    assert body["status"] == "queued"
    assert len(set(ids)) == 50
    assert body["queue_position"] >= 1
    results = stack.wait_all_final(ids, timeout=60)
    for i, task_id in enumerate(ids):
        assert results[task_id]["status"] == "completed"
        assert results[task_id]["data"] == {"i": i}  # the ids come back in the order of the tasks
        assert results[task_id]["result"] == {"echo": {"i": i}}
    rows = stack.task_rows("id::text, status, writes", ids, 30)
    assert {(row["status"], row["writes"]) for row in rows} == {("completed", 1)}


def test_one_bad_task_refuses_the_batch_with_422_naming_its_index(stack: Stack) -> None:
    accepted = int(stack.redis.hget(keys.SINGLE.stats, keys.STAT_ACCEPTED) or 0)
    body = _bulk(5)
    body["tasks"][3] = {"type": "not a valid type!", "data": {}}  # type: ignore[index]
    response = stack.http.post("/api/tasks", json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"
    locs = [e["loc"] for e in response.json()["detail"]]
    assert ["body", "tasks", 3, "type"] in locs
    bad_data = {"tasks": [{"type": "echo"}, {"type": "echo", "data": [1, 2]}]}
    response = stack.http.post("/api/tasks", json=bad_data)
    assert response.status_code == 422
    assert ["body", "tasks", 1, "data"] in [e["loc"] for e in response.json()["detail"]]
    # Nothing of a refused batch was queued.
    assert int(stack.redis.hget(keys.SINGLE.stats, keys.STAT_ACCEPTED) or 0) == accepted


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"tasks": [{"type": "x"}] * 1001}, "over 1000 tasks"),
        ({"tasks": []}, "no task"),
        ({"type": "echo"}, "a single task, not a batch"),
    ],
)
def test_batch_shape_is_checked(stack: Stack, body: dict[str, object], reason: str) -> None:
    response = stack.http.post("/api/tasks", json=body)
    assert response.status_code == 422, reason
    assert response.json()["error"] == "validation_error"


def test_1000_tasks_are_accepted(stack: Stack) -> None:
    response = stack.http.post("/api/tasks", json={"tasks": [{"type": "echo"}] * 1000})
    assert response.status_code == 202
    assert len(set(response.json()["task_ids"])) == 1000


def test_the_64_kib_body_limit_applies_at_nginx_and_at_the_gateway(stack: Stack) -> None:
    body = {"tasks": [{"type": "echo", "data": {"blob": "a" * 700}} for _ in range(100)]}  # ~72 KB
    via_nginx = stack.http.post("/api/tasks", json=body)
    assert via_nginx.status_code == 413
    assert via_nginx.json()["error"] == "payload_too_large"
    replica = stack.plan.upstream_ports("api-gateway")[0]
    direct = httpx.post(f"http://127.0.0.1:{replica}/api/tasks", json=body)
    assert direct.status_code == 413
    assert direct.json()["error"] == "payload_too_large"


def test_a_batch_that_would_overflow_the_queue_is_503_and_queues_nothing(
    stack: Stack, workers_paused: list[str]
) -> None:
    limit = int(stack.plan.program("api-gateway-1").env["QUEUE_MAX"])
    filler = f"bulk-filler-{uuid.uuid4()}"
    stack.redis.lpush(keys.SINGLE.queue, *([filler] * (limit - 500 - int(stack.redis.llen(keys.SINGLE.queue)))))
    try:
        before = int(stack.redis.llen(keys.SINGLE.queue))
        refused = stack.http.post("/api/tasks", json=_bulk(501))
        assert refused.status_code == 503
        assert refused.json()["error"] == "queue_full"
        assert refused.headers["retry-after"]
        assert int(stack.redis.llen(keys.SINGLE.queue)) == before  # all or none
        fits = stack.http.post("/api/tasks", json=_bulk(500))
        assert fits.status_code == 202
        assert int(stack.redis.llen(keys.SINGLE.queue)) == limit
    finally:
        stack.redis.lrem(keys.SINGLE.queue, 0, filler)


def test_idempotency_key_covers_the_whole_batch(stack: Stack) -> None:
    key = {"Idempotency-Key": f"bulk-{uuid.uuid4()}"}
    first = stack.http.post("/api/tasks", json=_bulk(3), headers=key)
    assert first.status_code == 202
    again = stack.http.post("/api/tasks", json=_bulk(3), headers=key)
    assert again.status_code == 202
    assert again.json()["task_ids"] == first.json()["task_ids"]
    assert "Duplicate" in again.json()["message"]
    other = stack.http.post("/api/tasks", json=_bulk(3, start=10), headers=key)
    assert other.status_code == 409


def test_a_nul_character_postgres_cannot_store_is_refused_with_422(stack: Stack) -> None:
    single = stack.http.post("/api/task", json={"type": "echo", "data": {"a": "x\u0000y"}})
    assert single.status_code == 422
    body = _bulk(3)
    body["tasks"][2] = {"type": "echo", "data": {"k\u0000": 1}}  # type: ignore[index]
    bulk = stack.http.post("/api/tasks", json=body)
    assert bulk.status_code == 422
    assert ["body", "tasks", 2, "data"] in [e["loc"] for e in bulk.json()["detail"]]
