"""The gateway's endpoints through nginx, against the real stacks: what needs processes (workers in
either engine, two replicas, nginx's limits). Routes and error shapes alone: tests/inprocess/."""

from __future__ import annotations

import httpx
import pytest

from harness.stacks import BaseStack, Stack


def test_data_is_optional(any_stack: BaseStack) -> None:
    response = any_stack.http.post("/api/task", json={"type": "echo"})
    assert response.status_code == 202
    done = any_stack.wait_status(response.json()["task_id"], {"completed"})
    assert done["data"] == {}
    assert done["result"] == {"echo": {}}


@pytest.mark.parametrize(
    ("task_type", "data", "status", "check"),
    [
        ("sleep", {"ms": 50}, "completed", lambda t: t["result"] == {"slept_ms": 50} and t["processing_time"] >= 0.04),
        ("cpu", {"iterations": 1000}, "completed", lambda t: t["result"]["iterations"] == 1000),
        ("fail", {}, "failed", lambda t: "always fails" in t["error"] and t["result"] is None and t["attempts"] == 3),
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


def test_bad_data_of_a_known_type_is_refused_at_submit(any_stack: BaseStack) -> None:
    # The type's input model checks it at the gateway, before it is queued: 422 naming the field.
    response = any_stack.http.post("/api/task", json={"type": "sleep", "data": {"ms": "soon"}})
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "data", "ms"]]


def test_body_over_64_kib_is_413_json_at_nginx(stack: Stack) -> None:
    # nginx refuses it before a gateway sees it; each gateway's own limit: tests/inprocess/test_middleware.py.
    body = b'{"type": "echo", "data": {"blob": "' + b"a" * 70_000 + b'"}}'
    via_nginx = stack.http.post("/api/task", content=body, headers={"content-type": "application/json"})
    assert via_nginx.status_code == 413
    assert via_nginx.json()["error"] == "payload_too_large"


def test_just_under_the_limit_is_accepted(stack: Stack) -> None:
    body = b'{"type": "echo", "data": {"blob": "' + b"a" * 60_000 + b'"}}'
    response = stack.http.post("/api/task", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 202


def test_status_reports_every_part(any_stack: BaseStack) -> None:
    response = any_stack.http.get("/api/status")
    assert response.status_code == 200
    body = response.json()
    for part in ("api_gateway", "worker_service", "redis", "postgres"):
        assert body[part] == "healthy"
    assert set(body["metrics"]) == {"total_requests", "active_workers", "queue_length", "timestamp"}
    assert body["metrics"]["active_workers"] == 2


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


def test_completed_tasks_are_in_postgres_once(stack: Stack) -> None:
    ids = [stack.submit("echo", {"i": i}) for i in range(50)]
    stack.wait_all_final(ids)
    rows = stack.task_rows("id, status, writes, result", ids, 10)
    assert {row["status"] for row in rows} == {"completed"}
    assert {row["writes"] for row in rows} == {1}
    assert {row["result"]["echo"]["i"] for row in rows} == set(range(50))
