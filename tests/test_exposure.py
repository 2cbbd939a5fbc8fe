"""Through nginx and a live stream: task data never rides the dashboard's stream, and no port
answers a Host the stack does not serve (DNS rebinding). Each app's own checks: tests/inprocess/."""

from __future__ import annotations

import json
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


def test_the_stream_carries_no_payloads(stack: Stack) -> None:
    # A live SSE stream needs a server; the metrics and listings: tests/inprocess/test_dashboard_routes.py.
    marker, done, failed = secret_tasks(stack)
    assert marker not in first_frame_with(stack, {done, failed})


def bases(stack: Stack) -> dict[str, str]:
    """Every port nginx listens on, and a path each answers 200 on (each app's own Host check:
    tests/inprocess/test_middleware.py)."""
    return {
        f"{stack.lb}/api/status": "nginx to a gateway",
        f"{stack.gateway}/health": "the gateway port",
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
