"""What every app does before a route runs: Host names, JSON-only bodies, the body limit, HEAD."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest

from core import keys
from tests.inprocess.apps import MARKS, serving
from tests.inprocess.servers import Servers

pytestmark = MARKS

#: A path each app answers 200 on, with no data behind it.
HEALTH = {"api-gateway": "/health", "monitoring": "/api/health", "worker-service": "/health", "autoscaler": "/health"}


#: Host headers every service answers (any port; names from ALLOWED_HOSTS' default).
SERVED = ("localhost", "localhost:1234", "LOCALHOST.", "127.0.0.1:9", "[::1]:80", "nginx", "monitoring:8080")


def accepted(servers: Servers) -> int:
    return int(servers.redis.hget(keys.SINGLE.stats, keys.STAT_ACCEPTED) or 0)


# -- Host: no service answers a name it does not serve (DNS rebinding) ---------------------------


@pytest.mark.parametrize("service", sorted(HEALTH))
async def test_a_host_the_stack_does_not_serve_is_refused_and_its_own_are_answered(
    servers: Servers, service: str
) -> None:
    async with serving(servers, service) as client:
        for host in ("evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.nip.io"):
            refused = await client.get(HEALTH[service], headers={"Host": host})
            assert refused.status_code == 421, (host, refused.text)
            assert refused.json()["error"] == "unknown_host"
        for host in (
            "localhost",
            "localhost:1234",
            "LOCALHOST.",
            "127.0.0.1:9",
            "[::1]:80",
            "nginx",
            "monitoring:8080",
        ):
            answered = await client.get(HEALTH[service], headers={"Host": host})
            assert answered.status_code == 200, (host, answered.text)
        request = client.build_request("GET", HEALTH[service])
        del request.headers["host"]
        missing = await client.send(request)
        assert missing.status_code == 400, missing.text
        assert missing.json()["error"] == "host_required"


# -- a body must say it is JSON: 415 otherwise ----------------------------------------------------

NOT_JSON = ["text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded", "multipart/form-data", None]


async def test_a_body_that_is_not_declared_json_is_415(
    servers: Servers, gateway: httpx.AsyncClient, worker: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    before = accepted(servers)
    for content_type in NOT_JSON:
        headers = {**admin, **({"content-type": content_type} if content_type else {})}
        for client, method, path, body in (
            (gateway, "POST", "/api/task", b'{"type": "echo"}'),  # what a cross-site form or fetch() could send
            (gateway, "POST", "/api/tasks", b'{"tasks": [{"type": "echo"}]}'),
            (gateway, "POST", "/api/admin/dlq/redrive", b'{"ids": []}'),
            (gateway, "DELETE", "/api/admin/queue", b"{}"),
            (worker, "POST", "/worker/scale", b"{}"),
        ):
            response = await client.request(method, path, content=body, headers=headers)
            assert response.status_code == 415, (content_type, path, response.text)
            assert response.json()["error"] == "unsupported_media_type"
    assert accepted(servers) == before


async def test_json_with_parameters_and_bodiless_posts_pass(
    gateway: httpx.AsyncClient, worker: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await gateway.post(
        "/api/task", content=b'{"type": "echo"}', headers={"content-type": "Application/JSON; charset=UTF-8"}
    )
    assert response.status_code == 202
    # No body, no content type: nothing to take as JSON (the admin's "redrive all", /worker/scale).
    assert (await worker.post("/worker/scale", headers=admin)).status_code == 200


# -- the body limit (nginx has its own in front: test_api.py) -------------------------------------


async def test_a_body_over_64_kib_is_413_json_counted_or_declared(gateway: httpx.AsyncClient) -> None:
    body = b'{"type": "echo", "data": {"blob": "' + b"a" * 70_000 + b'"}}'
    headers = {"content-type": "application/json"}
    declared = await gateway.post("/api/task", content=body, headers=headers)
    assert declared.status_code == 413
    assert declared.json()["error"] == "payload_too_large"
    assert declared.headers["x-served-by"] == "api-gateway-1"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the gateway must count what it reads
        for _ in range(20):
            yield b"a" * 5000

    streamed = await gateway.post("/api/task", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    assert streamed.json()["error"] == "payload_too_large"


# -- HEAD answers as GET, without the body --------------------------------------------------------


async def heads_like_get(client: httpx.AsyncClient, path: str) -> httpx.Response:
    get = await client.get(path)
    head = await client.head(path)
    assert head.status_code == get.status_code == 200, (path, head.status_code, get.status_code)
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    return head


async def test_head_on_every_service(
    gateway: httpx.AsyncClient, worker: httpx.AsyncClient, dashboard: httpx.AsyncClient
) -> None:
    for path in ("/", "/health", "/api/metrics", "/openapi.json", "/docs"):
        head = await heads_like_get(gateway, path)
        assert head.headers["x-served-by"] == "api-gateway-1"
    for path in ("/health", "/worker/status"):
        await heads_like_get(worker, path)
    for path in ("/", "/api/health", "/api/metrics"):
        await heads_like_get(dashboard, path)
    static = await heads_like_get(gateway, "/static/docs-swagger.js")
    assert int(static.headers["content-length"]) == len((await gateway.get("/static/docs-swagger.js")).content)
    # A POST-only route stays POST-only; unknown paths stay 404.
    assert (await gateway.head("/api/task")).status_code == 405
    assert (await gateway.head("/api/nope")).status_code == 404


async def test_head_on_the_event_stream_ends_at_once_and_frees_its_slot(dashboard: httpx.AsyncClient) -> None:
    # More HEADs than one client may hold streams: each ends with its headers and gives its slot back.
    for _ in range(12):
        started = time.monotonic()
        head = await dashboard.head("/api/stream")
        assert head.status_code == 200, head.text
        assert head.headers["content-type"].startswith("text/event-stream")
        assert time.monotonic() - started < 2
