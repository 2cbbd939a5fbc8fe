"""Task data reaches only who holds the id (gateway) or the admin token (dashboard); no service
answers a Host it does not serve (DNS rebinding); a 409 names nobody's task."""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any

import httpx
import pytest

from core.hosts import host_name, parse_allowed
from core.metrics import SUMMARY_FIELDS
from core.settings import Settings
from harness.stacks import Stack

PRIVATE = {"data", "result", "error"}


def secret_tasks(stack: Stack) -> tuple[str, str, str]:
    """A completed and a failed task whose data (and so result and error) carry a marker."""
    marker = f"secret-{uuid.uuid4().hex}"
    done = stack.submit("echo", {"card": marker})
    failed = stack.submit("fail", {"message": marker})
    stack.wait_all_final([done, failed])
    return marker, done, failed


def assert_summaries(tasks: list[dict[str, Any]], ids: set[str]) -> None:
    listed = {t["id"]: t for t in tasks if t["id"] in ids}
    assert set(listed) == ids
    for task in listed.values():
        assert set(task) <= SUMMARY_FIELDS
        assert not PRIVATE & set(task)
        assert {"id", "type", "status", "created_at", "completed_at", "processing_time"} <= set(task)


def first_frame_with(stack: Stack, ids: set[str]) -> str:
    with httpx.Client(timeout=10) as client, client.stream("GET", f"{stack.monitor}/api/stream") as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                frame = json.loads(line.split(":", 1)[1])
                if ids <= {t["id"] for t in frame["recent_tasks"]}:
                    assert_summaries(frame["recent_tasks"], ids)
                    return line
    raise AssertionError("the stream ended")


def test_metrics_listings_and_stream_carry_no_payloads(stack: Stack) -> None:
    marker, done, failed = secret_tasks(stack)
    ids = {done, failed}

    gateway = stack.http.get("/api/metrics")
    assert gateway.status_code == 200
    assert_summaries(gateway.json()["recent_tasks"], ids)
    assert marker not in gateway.text

    dashboard = httpx.get(f"{stack.monitor}/api/metrics", timeout=10)
    assert_summaries(dashboard.json()["recent_tasks"], ids)
    assert marker not in dashboard.text

    listing = httpx.get(f"{stack.monitor}/api/tasks", params={"limit": 200}, timeout=10)
    assert_summaries(listing.json()["tasks"], ids)
    assert marker not in listing.text

    assert marker not in first_frame_with(stack, ids)

    # Whoever holds the id reads the whole task from the gateway.
    assert stack.task(done)["data"] == {"card": marker}
    assert stack.task(failed)["data"] == {"message": marker}


def test_dashboard_detail_needs_the_admin_token(stack: Stack) -> None:
    marker, done, _ = secret_tasks(stack)
    url = f"{stack.monitor}/api/tasks/{done}"

    anonymous = httpx.get(url, timeout=10)
    assert anonymous.status_code == 200
    assert set(anonymous.json()) <= SUMMARY_FIELDS
    assert anonymous.json()["status"] == "completed"
    assert marker not in anonymous.text

    wrong = httpx.get(url, headers={"Authorization": "Bearer not-the-token"}, timeout=10)
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "unauthorized"
    assert marker not in wrong.text

    admin = httpx.get(url, headers={"Authorization": f"Bearer {stack.env['ADMIN_TOKEN']}"}, timeout=10)
    assert admin.status_code == 200
    assert admin.json()["data"] == {"card": marker}
    assert admin.json()["result"]


def bases(stack: Stack) -> dict[str, str]:
    """Every HTTP port a client can reach, and a path each answers 200 on."""
    replica = stack.plan.upstream_ports("api-gateway")[0]
    return {
        f"{stack.lb}/api/status": "nginx to a gateway",
        f"{stack.gateway}/health": "the gateway port",
        f"http://127.0.0.1:{replica}/health": "a gateway replica itself",
        f"{stack.monitor}/api/health": "the dashboard",
        f"{stack.monitor}/api/tasks": "the dashboard's task list",
        f"{stack.worker}/health": "the worker status port",
    }


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.nip.io"])
def test_a_host_the_stack_does_not_serve_is_refused(stack: Stack, host: str) -> None:
    for url, what in bases(stack).items():
        response = httpx.get(url, headers={"Host": host}, timeout=10)
        assert response.status_code == 421, (what, response.status_code, response.text)
        assert response.json()["error"] == "unknown_host", what


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:1234", "LOCALHOST.", "127.0.0.1:9", "[::1]:80", "nginx", "monitoring:8080"]
)
def test_the_hosts_it_serves_are_answered(stack: Stack, host: str) -> None:
    for url, what in bases(stack).items():
        response = httpx.get(url, headers={"Host": host}, timeout=10)
        assert response.status_code == 200, (what, response.status_code, response.text)


def test_no_host_header_is_refused(stack: Stack) -> None:
    port = int(stack.monitor.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /api/tasks HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert json.loads(body)["error"] == "host_required"


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost", "localhost"),
        ("LocalHost:8080", "localhost"),
        ("localhost.:80", "localhost"),
        ("[::1]:8080", "[::1]"),
        ("[::1]", "[::1]"),
        ("::1", "::1"),
        ("127.0.0.1:", "127.0.0.1"),
        ("localhost:http", None),
        ("[::1]x", None),
        ("", None),
        (":80", None),
    ],
)
def test_host_name_of_a_header(header: str, name: str | None) -> None:
    assert host_name(header) == name


def test_default_hosts_cover_every_internal_caller() -> None:
    allowed = parse_allowed(Settings().allowed_hosts)
    # Healthchecks (127.0.0.1), the load test (http://nginx, http://monitoring:8080), the gateway's
    # WORKER_SERVICE_URL (worker-service), and people on this machine (localhost, IPv6 loopback).
    assert {"localhost", "127.0.0.1", "[::1]", "::1", "nginx", "monitoring", "api-gateway", "worker-service"} <= allowed


def test_idempotency_conflicts_name_no_task(stack: Stack) -> None:
    key = {"Idempotency-Key": f"exposure-{uuid.uuid4()}"}
    first = stack.http.post("/api/task", json={"type": "echo", "data": {"n": 1}}, headers=key)
    assert first.status_code == 202
    conflict = stack.http.post("/api/task", json={"type": "echo", "data": {"n": 2}}, headers=key)
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "conflict"
    assert first.json()["task_id"] not in conflict.text

    bulk_key = {"Idempotency-Key": f"exposure-bulk-{uuid.uuid4()}"}
    batch = stack.http.post("/api/tasks", json={"tasks": [{"type": "echo"}, {"type": "echo"}]}, headers=bulk_key)
    assert batch.status_code == 202
    other = stack.http.post("/api/tasks", json={"tasks": [{"type": "echo", "data": {"x": 1}}]}, headers=bulk_key)
    assert other.status_code == 409
    assert not any(task_id in other.text for task_id in batch.json()["task_ids"])
    # Neither 409 leaks a uuid of any kind.
    for text in (conflict.text, other.text):
        assert not any(len(word.strip("(),.;")) == 36 and word.count("-") == 4 for word in text.split())
