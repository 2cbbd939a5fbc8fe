"""Every port and path has a per-client cap: nginx's request rate and requests in progress on
/metrics, /openapi.json and the worker status port too; the dashboard caps its live streams."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import pytest

from harness.stacks import Stack, wait_for

#: Starts processes of its own: a full-stack test (see tests/conftest.py).
pytestmark = pytest.mark.stack

RATE, BURST, CONNS = 5, 5, 3
PER_CLIENT, STREAMS = 2, 3


@pytest.fixture(scope="module")
def limited() -> Iterator[Stack]:
    running = Stack(
        extra_env={
            "RATE_LIMIT_RPS": str(RATE),
            "RATE_LIMIT_BURST": str(BURST),
            "CONN_PER_CLIENT": str(CONNS),
            "SSE_STREAMS_PER_CLIENT": str(PER_CLIENT),
            "SSE_STREAMS_MAX": str(STREAMS),
        }
    ).up()
    try:
        yield running
    finally:
        running.down()


def client(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


@pytest.mark.parametrize(
    ("port", "path", "address"),
    [
        ("lb", "/api/status", "127.0.0.10"),
        ("lb", "/metrics", "127.0.0.2"),
        ("lb", "/openapi.json", "127.0.0.3"),
        ("gateway", "/metrics", "127.0.0.4"),
        ("worker", "/worker/status", "127.0.0.5"),
        ("worker", "/metrics", "127.0.0.6"),
    ],
)
def test_every_path_is_rate_limited_per_client(limited: Stack, port: str, path: str, address: str) -> None:
    url = f"{getattr(limited, port)}{path}"
    with client(address) as greedy, ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: greedy.get(url), range(4 * (RATE + BURST))))
    codes = {r.status_code for r in responses}
    assert codes <= {200, 429}, codes
    refused = [r for r in responses if r.status_code == 429]
    assert refused, f"{url}: nothing was limited"
    assert refused[0].json()["error"] == "rate_limited"
    assert int(refused[0].headers["retry-after"]) >= 1
    # One address's excess is its own: another gets its answer.
    with client("127.0.0.7") as polite:
        wait_for(lambda: polite.get(url).status_code == 200, 5, f"{url} for another client")


def held_request(port: int, address: str) -> socket.socket:
    """A request whose body never comes: nginx counts it as in progress until the body timeout."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(address, 0))
    sock.sendall(b"POST /api/task HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n")
    sock.sendall(b"Content-Length: 100\r\n\r\n{")
    return sock


def test_requests_in_progress_are_capped_per_client(limited: Stack) -> None:
    port = int(limited.lb.rsplit(":", 1)[1])
    held = [held_request(port, "127.0.0.8") for _ in range(CONNS)]
    try:
        with client("127.0.0.8") as same:
            over = wait_for(
                lambda: (r := same.get(f"{limited.lb}/api/status")).status_code == 429 and r, 5, "the cap to bite"
            )
        assert over.json()["error"] == "rate_limited"
        with client("127.0.0.9") as other:
            assert other.get(f"{limited.lb}/api/status").status_code == 200
    finally:
        for sock in held:
            sock.close()


def test_live_streams_are_capped_per_client_and_in_all(limited: Stack) -> None:
    url = f"{limited.monitor}/api/stream"
    with ExitStack() as open_streams:

        def open_from(address: str) -> httpx.Response:
            http = open_streams.enter_context(client(address))
            return open_streams.enter_context(http.stream("GET", url))

        first = [open_from("127.0.0.2") for _ in range(PER_CLIENT)]
        assert [r.status_code for r in first] == [200] * PER_CLIENT
        over = open_from("127.0.0.2")
        assert over.status_code == 429
        over.read()
        assert over.json()["error"] == "rate_limited"
        assert int(over.headers["retry-after"]) >= 1
        # Another client still gets one, until the dashboard's total is reached.
        assert open_from("127.0.0.3").status_code == 200
        full = open_from("127.0.0.4")
        assert full.status_code == 429
        full.read()
        assert "serves" in full.json()["detail"]  # the total, not the per-client cap

    # Closed streams give their slots back.
    def reopened() -> bool:
        with client("127.0.0.2") as http, http.stream("GET", url) as response:
            return response.status_code == 200

    wait_for(reopened, 5, "a slot to come back once the streams closed")
