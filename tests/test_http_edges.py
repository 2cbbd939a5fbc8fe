"""The HTTP edges every service shares: odd task ids, non-JSON numbers, JSON-only bodies, HEAD."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from core import keys
from harness.stacks import Stack, wait_for

ODD_FORMS = (
    "{{{id}}}",  # braces
    "urn:uuid:{id}",
    "{hex}",  # no hyphens
    "{{{hex}}}",
    "{id}x",
    " {id}",
)


def _odd_ids(task_id: str) -> list[str]:
    return [form.format(id=task_id, hex=task_id.replace("-", "")) for form in ODD_FORMS]


def _admin(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.env['ADMIN_TOKEN']}"}


def _persisted(stack: Stack, task_id: str) -> str:
    stack.wait_status(task_id, {"completed"})
    wait_for(lambda: stack.pg("SELECT 1 FROM tasks WHERE id = $1::uuid", task_id), 10, "the task's Postgres row")
    return task_id


# -- 1. only the canonical 8-4-4-4-12 form is a task id --------------------------------------


def test_odd_task_ids_are_404_at_the_gateway_and_the_dashboard(stack: Stack) -> None:
    # Persisted, so a lookup that misses Redis reaches Postgres (where braces and urn:uuid: were
    # a 500 from asyncpg's uuid encoder, and the hyphen-less form found the task).
    task_id = _persisted(stack, stack.submit("echo", {"odd": "ids"}))
    for odd in _odd_ids(task_id):
        at_gateway = stack.http.get(f"/api/task/{odd}")
        assert at_gateway.status_code == 404, (odd, at_gateway.text)
        assert at_gateway.json()["error"] == "not_found"
        at_dashboard = httpx.get(f"{stack.monitor}/api/tasks/{odd}", headers=_admin(stack))
        assert at_dashboard.status_code == 404, (odd, at_dashboard.text)
        assert at_dashboard.json()["error"] == "task_not_found"
    # The canonical form answers, in either case (ids are written in lowercase).
    assert stack.http.get(f"/api/task/{task_id}").status_code == 200
    assert stack.http.get(f"/api/task/{task_id.upper()}").json()["id"] == task_id
    assert httpx.get(f"{stack.monitor}/api/tasks/{task_id}", headers=_admin(stack)).status_code == 200
    upper = httpx.get(f"{stack.monitor}/api/tasks/{task_id.upper()}", headers=_admin(stack))
    assert upper.json()["id"] == task_id, upper.text


def test_odd_ids_in_a_redrive_are_skipped_not_a_500(stack: Stack) -> None:
    task_id = _persisted(stack, stack.submit("echo", {"odd": "redrive"}))
    body = {"ids": _odd_ids(task_id)}

    def redrive() -> httpx.Response | None:
        response = httpx.post(f"{stack.lb}/api/admin/dlq/redrive", json=body, headers=_admin(stack))
        return None if response.status_code == 429 else response  # one redrive per second

    response = wait_for(redrive, 10, "a redrive outside the rate limit", interval=0.2)
    assert response.status_code == 200, response.text
    assert response.json()["redriven"] == 0


# -- 3. NaN and infinities are not JSON: 422, nothing stored ---------------------------------


def _accepted(stack: Stack) -> int:
    return int(stack.redis.hget(keys.STATS, keys.STAT_ACCEPTED) or 0)


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
def test_non_finite_numbers_are_422(stack: Stack, path: str, body: bytes) -> None:
    before = _accepted(stack)
    response = stack.http.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    problem = response.json()["detail"][-1]
    assert "finite" in problem["msg"]
    assert problem["loc"][-1] == "data"
    if path == "/api/tasks":
        assert problem["loc"][:3] == ["body", "tasks", 1]  # the bad task's index
    assert _accepted(stack) == before


def test_null_and_number_like_strings_still_pass(stack: Stack) -> None:
    data: dict[str, Any] = {"n": None, "s": "NaN", "t": "null", "big": 1.7976931348623157e308}
    task_id = stack.submit("echo", data)
    stored = stack.task(task_id)["data"]
    assert stored == data


# -- 4. a body must say it is JSON: 415 otherwise --------------------------------------------

NOT_JSON = ["text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded", "multipart/form-data", None]


@pytest.mark.parametrize("content_type", NOT_JSON)
def test_a_body_that_is_not_declared_json_is_415(stack: Stack, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    replica = f"http://127.0.0.1:{stack.plan.upstream_ports('api-gateway')[0]}"
    before = _accepted(stack)
    for base, path, body in (
        (stack.lb, "/api/task", b'{"type": "echo"}'),  # what a cross-site form or fetch() could send
        (replica, "/api/task", b'{"type": "echo"}'),
        (stack.lb, "/api/tasks", b'{"tasks": [{"type": "echo"}]}'),
        (stack.lb, "/api/admin/dlq/redrive", b'{"ids": []}'),
        (stack.lb, "/api/admin/queue", b"{}"),  # DELETE below
        (stack.worker, "/worker/scale", b"{}"),
    ):
        method = "DELETE" if path == "/api/admin/queue" else "POST"
        response = httpx.request(method, base + path, content=body, headers={**headers, **_admin(stack)})
        assert response.status_code == 415, (base, path, response.text)
        assert response.json()["error"] == "unsupported_media_type"
    assert _accepted(stack) == before


def test_json_with_parameters_and_bodiless_posts_pass(stack: Stack) -> None:
    response = stack.http.post(
        "/api/task", content=b'{"type": "echo"}', headers={"content-type": "Application/JSON; charset=UTF-8"}
    )
    assert response.status_code == 202
    # No body, no content type: nothing to take as JSON (the admin's "redrive all", /worker/scale).
    scale = httpx.post(f"{stack.worker}/worker/scale", headers=_admin(stack))
    assert scale.status_code == 200


# -- 5. HEAD answers as GET, without the body ------------------------------------------------


def _heads_like_get(url: str) -> httpx.Response:
    get = httpx.get(url)
    head = httpx.head(url, timeout=5)
    assert head.status_code == get.status_code == 200, (url, head.status_code, get.status_code)
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    return head


def test_head_on_every_service(stack: Stack) -> None:
    replica = f"http://127.0.0.1:{stack.plan.upstream_ports('api-gateway')[0]}"
    for base in (stack.lb, stack.gateway, replica):
        for path in ("/", "/health", "/api/status", "/openapi.json", "/docs"):
            head = _heads_like_get(base + path)
            assert "x-served-by" in head.headers
    for path in ("/health", "/worker/status"):
        _heads_like_get(stack.worker + path)
    for path in ("/", "/api/health", "/api/metrics"):
        _heads_like_get(stack.monitor + path)
    static = _heads_like_get(f"{stack.gateway}/static/docs-swagger.js")
    assert int(static.headers["content-length"]) == len(httpx.get(f"{stack.gateway}/static/docs-swagger.js").content)
    # A POST-only route stays POST-only; unknown paths stay 404.
    assert httpx.head(f"{stack.lb}/api/task").status_code == 405
    assert httpx.head(f"{stack.lb}/api/nope").status_code == 404


def test_head_on_the_event_stream_ends_at_once_and_frees_its_slot(stack: Stack) -> None:
    # More HEADs than one client may hold streams: each ends with its headers and gives its slot back.
    for _ in range(12):
        started = time.monotonic()
        head = httpx.head(f"{stack.monitor}/api/stream", timeout=5)
        assert head.status_code == 200, head.text
        assert head.headers["content-type"].startswith("text/event-stream")
        assert time.monotonic() - started < 2
