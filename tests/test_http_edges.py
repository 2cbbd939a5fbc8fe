"""HEAD through nginx's ports: nginx passes it on and the app answers it as GET, without the body.
What each app does with HEAD, odd task ids, non-JSON numbers and JSON-only bodies is tested in
process: tests/inprocess/."""

from __future__ import annotations

import httpx

from harness.stacks import Stack


def test_head_through_nginx_answers_as_get_without_the_body(stack: Stack) -> None:
    for base in (stack.lb, stack.gateway):
        for path in ("/", "/health", "/api/status", "/openapi.json", "/docs"):
            get = httpx.get(base + path)
            head = httpx.head(base + path, timeout=5)
            assert head.status_code == get.status_code == 200, (base, path, head.status_code, get.status_code)
            assert head.content == b""
            assert head.headers["content-type"] == get.headers["content-type"]
            assert "x-served-by" in head.headers
    # A POST-only route stays POST-only; unknown paths stay 404.
    assert httpx.head(f"{stack.lb}/api/task").status_code == 405
    assert httpx.head(f"{stack.lb}/api/nope").status_code == 404
