"""Every app's errors leave as `{"error": ..., "detail": ...}` JSON with the status that says what
went wrong: 404 and 405 from routing, 413 and 415 from the edge middleware, 422 from validation,
401 from the admin token. No route answers 403: an unset ADMIN_TOKEN locks the admin API with 401.
(421 and 400 for the Host header: test_middleware.py.)"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from tests.inprocess.apps import MARKS, serving
from tests.inprocess.servers import Servers

pytestmark = MARKS

TOO_LARGE = b'{"blob": "' + b"a" * 70_000 + b'"}'


class Case(NamedTuple):
    method: str
    path: str
    status: int
    error: str
    body: bytes | None = None
    content_type: str = "application/json"
    #: "admin": the right bearer token; any other text is sent as the Authorization header
    authorization: str | None = None


#: For every app: each status its routes and middleware answer a client's mistake with.
CASES: dict[str, list[Case]] = {
    "api-gateway": [
        Case("GET", "/api/nope", 404, "not_found"),
        Case("GET", "/definitely/not/here", 404, "not_found"),
        Case("DELETE", "/api/task", 405, "method_not_allowed"),
        Case("POST", "/api/task", 413, "payload_too_large", TOO_LARGE),
        Case("POST", "/api/task", 415, "unsupported_media_type", b'{"type": "echo"}', "text/plain"),
        Case("POST", "/api/task", 422, "validation_error", b'{"type": ""}'),
        Case("GET", "/api/admin/dlq?limit=0", 422, "validation_error", authorization="admin"),
        Case("GET", "/api/admin/dlq", 401, "unauthorized"),
        Case("GET", "/api/admin/dlq", 401, "unauthorized", authorization="Bearer not-the-token"),
        Case("DELETE", "/api/admin/queue", 401, "unauthorized", authorization="Basic YWRtaW46YWRtaW4="),
    ],
    "monitoring": [
        Case("GET", "/api/nope", 404, "not_found"),
        Case("POST", "/api/metrics", 405, "method_not_allowed"),
        Case("POST", "/api/health", 413, "payload_too_large", TOO_LARGE),
        Case("POST", "/api/health", 415, "unsupported_media_type", b"{}", "application/x-www-form-urlencoded"),
        Case("GET", "/api/tasks?limit=0", 422, "validation_error"),
        Case("GET", "/api/tasks?status=lost", 422, "validation_error"),
        Case("GET", "/api/series?minutes=16", 422, "validation_error"),
        Case("GET", "/api/tasks/00000000-0000-4000-8000-000000000000", 404, "task_not_found"),
        Case("GET", "/api/tasks/00000000-0000-4000-8000-000000000000", 401, "unauthorized", authorization="Bearer x"),
    ],
    "worker-service": [
        Case("GET", "/api/task", 404, "not_found"),
        Case("GET", "/worker/scale", 405, "method_not_allowed"),
        Case("POST", "/worker/scale", 413, "payload_too_large", TOO_LARGE),
        Case("POST", "/worker/scale", 415, "unsupported_media_type", b"{}", "text/plain"),
        Case("POST", "/worker/scale", 401, "unauthorized"),
        Case("POST", "/worker/scale", 401, "unauthorized", authorization="Bearer not-the-token"),
    ],
    "autoscaler": [
        Case("GET", "/nope", 404, "not_found"),
        Case("POST", "/status", 405, "method_not_allowed"),
        Case("POST", "/status", 413, "payload_too_large", TOO_LARGE),
        Case("POST", "/status", 415, "unsupported_media_type", b"{}", "text/plain"),
    ],
}


@pytest.mark.parametrize("service", sorted(CASES))
async def test_every_error_is_json_with_its_status(servers: Servers, service: str) -> None:
    async with serving(servers, service) as client:
        for case in CASES[service]:
            headers = {"content-type": case.content_type} if case.body is not None else {}
            if case.authorization is not None:
                admin = f"Bearer {servers.admin_token}"
                headers["authorization"] = admin if case.authorization == "admin" else case.authorization
            response = await client.request(case.method, case.path, content=case.body, headers=headers)
            assert response.status_code == case.status, (case, response.text)
            assert response.headers["content-type"] == "application/json", case
            assert set(response.json()) == {"error", "detail"}, (case, response.text)
            assert response.json()["error"] == case.error, (case, response.text)
            if case.status == 401:
                assert response.headers["www-authenticate"] == "Bearer", case


@pytest.mark.parametrize(
    ("service", "method", "path"),
    [("api-gateway", "GET", "/api/admin/dlq"), ("worker-service", "POST", "/worker/scale")],
)
async def test_an_unset_admin_token_locks_the_admin_routes(
    servers: Servers, service: str, method: str, path: str
) -> None:
    async with serving(servers, service, ADMIN_TOKEN="") as client:
        for authorization in ("Bearer ", "Bearer", f"Bearer {servers.admin_token}"):
            response = await client.request(method, path, headers={"authorization": authorization})
            assert response.status_code == 401, (authorization, response.text)
            assert response.json()["error"] == "unauthorized"
