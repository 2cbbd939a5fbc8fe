"""The gateway's endpoints and errors, through nginx, against the real stack."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from core import keys
from harness.stacks import BaseStack, Stack, wait_for

TASK_FIELDS = {
    "id", "type", "data", "status", "created_at", "started_at", "completed_at",
    "processing_time", "worker_id", "result", "error", "attempts",
}  # fmt: skip


def test_submit_returns_202_with_the_earlier_demo_fields(any_stack: BaseStack) -> None:
    response = any_stack.http.post("/api/task", json={"type": "echo", "data": {"n": 1}})
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"task_id", "status", "message", "queue_position"}
    assert body["status"] == "queued"
    assert uuid.UUID(body["task_id"]).version == 4
    assert body["queue_position"] >= 1


def test_data_is_optional(any_stack: BaseStack) -> None:
    response = any_stack.http.post("/api/task", json={"type": "echo"})
    assert response.status_code == 202
    done = any_stack.wait_status(response.json()["task_id"], {"completed"})
    assert done["data"] == {}
    assert done["result"] == {"echo": {}}


def test_task_ids_are_unique_under_a_burst(stack: Stack) -> None:
    ids = [stack.submit("echo", {"i": i}) for i in range(200)]
    assert len(set(ids)) == 200


def test_get_task_has_every_field_and_completes(stack: Stack) -> None:
    task_id = stack.submit("echo", {"hello": "world"})
    task = stack.wait_status(task_id, {"completed"})
    assert set(task) == TASK_FIELDS
    assert task["id"] == task_id
    assert task["type"] == "echo"
    assert task["result"] == {"echo": {"hello": "world"}}
    assert task["attempts"] == 1
    assert task["worker_id"].startswith("worker-service-")
    assert task["processing_time"] >= 0
    assert task["created_at"] <= task["started_at"] <= task["completed_at"]


@pytest.mark.parametrize(
    ("task_type", "data", "status", "check"),
    [
        ("sleep", {"ms": 50}, "completed", lambda t: t["result"] == {"slept_ms": 50} and t["processing_time"] >= 0.04),
        ("cpu", {"iterations": 1000}, "completed", lambda t: t["result"]["iterations"] == 1000),
        ("fail", {}, "failed", lambda t: "always fails" in t["error"] and t["result"] is None and t["attempts"] == 3),
        # invalid input is not retried: the same data would fail the same way
        ("sleep", {"ms": "soon"}, "failed", lambda t: "data.ms must be a number" in t["error"] and t["attempts"] == 1),
        (
            "slowpoke",
            {"work_ms": 2000},
            "failed",
            lambda t: "timed out after 0.3 s" in t["error"] and t["attempts"] == 3,
        ),
        ("legacy-job", {"work_ms": 20}, "completed", lambda t: t["result"]["message"] == "Processed legacy-job task"),
    ],
)
def test_handlers(any_stack: BaseStack, task_type: str, data: dict[str, object], status: str, check: object) -> None:
    task = any_stack.wait_status(any_stack.submit(task_type, data), {"completed", "failed"})
    assert task["status"] == status, task
    assert callable(check)
    assert check(task), task


def test_unknown_task_is_404_json(any_stack: BaseStack) -> None:
    for task_id in (str(uuid.uuid4()), "not-a-uuid", "1700000000000"):
        response = any_stack.http.get(f"/api/task/{task_id}")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"type": "echo", "data": ', {"content-type": "application/json"}),  # malformed JSON
        (b"not json at all", {"content-type": "application/json"}),
        (b'{"data": {}}', {"content-type": "application/json"}),  # type missing
        (b'{"type": "a b"}', {"content-type": "application/json"}),  # bad characters
        (b'{"type": "' + b"x" * 65 + b'"}', {"content-type": "application/json"}),  # too long
        (b'{"type": ""}', {"content-type": "application/json"}),
        (b'{"type": "echo", "data": [1, 2]}', {"content-type": "application/json"}),  # data not an object
        (b'{"type": 5}', {"content-type": "application/json"}),
        (b"[]", {"content-type": "application/json"}),
        (b"", {"content-type": "application/json"}),
    ],
)
def test_bad_bodies_are_422_json(any_stack: BaseStack, content: bytes, headers: dict[str, str]) -> None:
    before = int(any_stack.redis.hget(keys.STATS, keys.STAT_ACCEPTED) or 0)
    response = any_stack.http.post("/api/task", content=content, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"
    assert int(any_stack.redis.hget(keys.STATS, keys.STAT_ACCEPTED) or 0) == before


def test_body_over_64_kib_is_413_json_at_nginx_and_at_the_gateway(stack: Stack) -> None:
    body = b'{"type": "echo", "data": {"blob": "' + b"a" * 70_000 + b'"}}'
    headers = {"content-type": "application/json"}
    via_nginx = stack.http.post("/api/task", content=body, headers=headers)
    assert via_nginx.status_code == 413
    assert via_nginx.json()["error"] == "payload_too_large"
    replica = stack.plan.upstream_ports("api-gateway")[0]
    direct = httpx.post(f"http://127.0.0.1:{replica}/api/task", content=body, headers=headers)
    assert direct.status_code == 413
    assert direct.json()["error"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the gateway must count what it reads
        for _ in range(20):
            yield b"a" * 5000

    streamed = httpx.post(f"http://127.0.0.1:{replica}/api/task", content=chunks(), headers=headers)
    assert streamed.status_code == 413


def test_just_under_the_limit_is_accepted(stack: Stack) -> None:
    body = b'{"type": "echo", "data": {"blob": "' + b"a" * 60_000 + b'"}}'
    response = stack.http.post("/api/task", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 202


def test_unknown_route_and_method_are_json(any_stack: BaseStack) -> None:
    for path in ("/api/nope", "/definitely/not/here"):
        response = any_stack.http.get(path)
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
    response = any_stack.http.delete("/api/task")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def test_root_and_health(any_stack: BaseStack) -> None:
    root = any_stack.http.get("/").json()
    assert root["service"] == "API Gateway"
    assert "submit_task" in root["endpoints"]
    health = any_stack.http.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "healthy"


def test_status_reports_every_part(any_stack: BaseStack) -> None:
    response = any_stack.http.get("/api/status")
    assert response.status_code == 200
    body = response.json()
    for part in ("api_gateway", "worker_service", "redis", "postgres"):
        assert body[part] == "healthy"
    assert set(body["metrics"]) == {"total_requests", "active_workers", "queue_length", "timestamp"}
    assert body["metrics"]["active_workers"] == 2


def test_metrics_lists_newest_tasks_of_any_status(stack: Stack) -> None:
    failed = stack.submit("fail")
    done = stack.submit("echo", {"x": 1})
    stack.wait_all_final([failed, done])
    body = stack.http.get("/api/metrics").json()
    metrics = body["system_metrics"]
    for name in ("total_requests", "active_workers", "queue_length", "processing", "completed", "failed"):
        assert isinstance(metrics[name], int)
    assert metrics["redis_connected"] is True
    assert metrics["failed"] >= 1
    recent = body["recent_tasks"]
    assert len(recent) <= 20
    assert [t["id"] for t in recent[:2]] == [done, failed]
    assert {t["status"] for t in recent[:2]} == {"completed", "failed"}


def test_round_robin_over_both_gateway_replicas(stack: Stack) -> None:
    served = [stack.http.get("/health").headers["x-served-by"] for _ in range(20)]
    assert set(served) == {"api-gateway-1", "api-gateway-2"}
    assert min(served.count("api-gateway-1"), served.count("api-gateway-2")) >= 8


def test_counters_are_shared_across_replicas(stack: Stack) -> None:
    replicas = [f"http://127.0.0.1:{p}" for p in stack.plan.upstream_ports("api-gateway")]

    def accepted(base: str) -> int:
        return int(httpx.get(f"{base}/api/metrics").json()["system_metrics"]["accepted"])

    before = [accepted(r) for r in replicas]
    assert before[0] == before[1]
    for base in replicas:
        for _ in range(3):
            assert httpx.post(f"{base}/api/task", json={"type": "echo"}).status_code == 202
    after = [accepted(r) for r in replicas]
    assert after[0] == after[1] == before[0] + 6


def test_expired_hot_copy_is_read_from_postgres_and_cached_back(stack: Stack) -> None:
    task_id = stack.submit("echo", {"durable": True})
    original = stack.wait_status(task_id, {"completed"})
    wait_for(lambda: stack.pg("SELECT 1 FROM tasks WHERE id = $1", task_id), 10, "the row")
    stack.redis.delete(keys.task(task_id))  # what the result TTL does, sooner
    again = stack.task(task_id)
    assert again == original
    assert stack.redis.exists(keys.task(task_id)) == 1


def test_completed_tasks_are_in_postgres_once(stack: Stack) -> None:
    ids = [stack.submit("echo", {"i": i}) for i in range(50)]
    stack.wait_all_final(ids)
    rows = wait_for(
        lambda: (
            (r := stack.pg("SELECT id, status, writes, result FROM tasks WHERE id = ANY($1::uuid[])", ids))
            and len(r) == 50
            and r
        ),
        10,
        "50 rows",
    )
    assert {row["status"] for row in rows} == {"completed"}
    assert {row["writes"] for row in rows} == {1}
    assert {row["result"]["echo"]["i"] for row in rows} == set(range(50))


def test_queue_position_counts_the_backlog(stack: Stack) -> None:
    # Stop both workers so the queue holds still, then look at positions.
    workers = [p.name for p in stack.plan.of("worker-service") if p.autostart]
    for name in workers:
        stack.supervisor.stop(name)
    try:
        positions = [stack.http.post("/api/task", json={"type": "echo"}).json()["queue_position"] for _ in range(5)]
        assert positions == list(range(positions[0], positions[0] + 5))
    finally:
        for name in workers:
            stack.supervisor.start(name)
    wait_for(lambda: stack.http.get("/api/metrics").json()["system_metrics"]["queue_length"] == 0, 30, "drain")
