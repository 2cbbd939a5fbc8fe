"""The Compose actuator's Docker Engine API version: negotiated from `/_ping` against a tiny
engine on loopback that speaks an older API, renegotiated when the engine changes under it, and
checked against the real local Docker engine (which must answer: no engine is a failure here)."""

from __future__ import annotations

import asyncio
import http.server
import re
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from autoscaler.actuators import ComposeActuator
from autoscaler.engine import FALLBACK_API, MAX_API, Engine, EngineError, negotiated, parse_version
from tests.replies import reply

DOCKER_SOCKET = "/var/run/docker.sock"
PROJECT = "serverless-scaling"
_VERSIONED = re.compile(r"^/v(\d+\.\d+)(/.*)$")


class FakeEngine(http.server.ThreadingHTTPServer):
    """Answers like Docker Engine: `/_ping` names `max_api` in its API-Version header (none if
    None), a versioned path outside min_api..max_api gets Docker's own 400, listing containers
    answers `replicas`; `broken` makes every container call a 500."""

    def __init__(self, max_api: str | None, min_api: str = "1.12") -> None:
        super().__init__(("127.0.0.1", 0), _EngineHandler)
        self.max_api = max_api
        self.min_api = min_api
        self.replicas: list[dict[str, Any]] = []
        self.broken: str | None = None
        self.seen: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, path: str) -> tuple[int, dict[str, str], Any]:
        self.seen.append(path)
        if path == "/_ping":
            return 200, {"API-Version": self.max_api} if self.max_api else {}, "OK"
        match = _VERSIONED.match(path.split("?")[0])
        if match is None:
            return 404, {}, {"message": "page not found"}
        version, rest = match.groups()
        if self.max_api and parse_version(version) > parse_version(self.max_api):
            too_new = f"client version {version} is too new. Maximum supported API version is {self.max_api}"
            return 400, {}, {"message": too_new}
        if parse_version(version) < parse_version(self.min_api):
            too_old = (
                f"client version {version} is too old. Minimum supported API version is {self.min_api}, "
                "please upgrade your client to a newer version"
            )
            return 400, {}, {"message": too_old}
        if self.broken:
            return 500, {}, {"message": self.broken}
        if rest == "/containers/json":
            return 200, {}, self.replicas
        return 404, {}, {"message": f"no such endpoint {rest}"}


class _EngineHandler(http.server.BaseHTTPRequestHandler):
    server: FakeEngine

    def do_GET(self) -> None:
        status, headers, body = self.server.answer(self.path)
        reply(self, status, body, headers)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def engine_factory() -> Iterator[Any]:
    started: list[FakeEngine] = []

    def start(max_api: str | None, min_api: str = "1.12") -> FakeEngine:
        server = FakeEngine(max_api, min_api)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def replica(number: int) -> dict[str, Any]:
    return {
        "Id": f"{number:x}" * 64,
        "Names": [f"/{PROJECT}-worker-service-{number}"],
        "State": "running",
        "Labels": {"com.docker.compose.container-number": str(number)},
    }


async def count_through(url: str, calls: int = 1) -> tuple[list[int], ComposeActuator]:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        actuator = ComposeActuator(client, PROJECT)
        return [await actuator.current() for _ in range(calls)], actuator


# -- the version rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("1.41", "1.41"),  # Docker 20.10: its own version, never ours
        ("1.43", "1.43"),
        ("1.47", MAX_API),  # a newer engine: the newest the requests are written for
        ("1.9", "1.9"),  # by number, not by text: 1.9 < 1.41
        (None, FALLBACK_API),  # no header
        ("", FALLBACK_API),
        ("not-a-version", FALLBACK_API),
    ],
)
def test_negotiated_version(server: str | None, expected: str) -> None:
    assert negotiated(server) == expected


# -- a tiny engine on loopback ------------------------------------------------------------------


def test_an_older_engine_is_spoken_to_at_its_own_version(engine_factory: Any) -> None:
    engine = engine_factory(max_api="1.41")
    engine.replicas = [replica(1), replica(2)]
    counts, actuator = asyncio.run(count_through(engine.url, calls=3))
    assert counts == [2, 2, 2]
    assert actuator.engine.version == "1.41"
    # Negotiated once, lazily; every container call at the engine's version, none at 1.43.
    assert engine.seen[0] == "/_ping"
    assert engine.seen.count("/_ping") == 1
    assert [path.split("?")[0] for path in engine.seen[1:]] == ["/v1.41/containers/json"] * 3


def test_the_version_is_renegotiated_when_the_engine_changes(engine_factory: Any) -> None:
    engine = engine_factory(max_api="1.43")
    engine.replicas = [replica(1)]

    async def scenario() -> tuple[int, int, str | None]:
        async with httpx.AsyncClient(base_url=engine.url, timeout=5) as client:
            actuator = ComposeActuator(client, PROJECT)
            before = await actuator.current()
            engine.max_api = "1.41"  # replaced by an older engine under the running autoscaler
            engine.replicas = [replica(1), replica(2)]
            after = await actuator.current()
            return before, after, actuator.engine.version

    before, after, version = asyncio.run(scenario())
    assert (before, after, version) == (1, 2, "1.41")
    # The refused call is asked again at the new version within the same call: no failed tick.
    assert [path.split("?")[0] for path in engine.seen] == [
        "/_ping",
        "/v1.43/containers/json",
        "/v1.43/containers/json",
        "/_ping",
        "/v1.41/containers/json",
    ]


def test_a_ping_without_a_version_falls_back(engine_factory: Any) -> None:
    engine = engine_factory(max_api=None)
    counts, actuator = asyncio.run(count_through(engine.url))
    assert counts == [0]
    assert actuator.engine.version == FALLBACK_API
    assert engine.seen[1].startswith(f"/v{FALLBACK_API}/containers/json")


def test_an_engine_that_refuses_every_version_fails_in_its_own_words(engine_factory: Any) -> None:
    # An engine whose oldest API is newer than ours (Docker 29 accepts 1.44 and up only).
    engine = engine_factory(max_api="1.51", min_api="1.44")
    with pytest.raises(EngineError) as raised:
        asyncio.run(count_through(engine.url))
    assert raised.value.status == 400
    assert "\n" not in str(raised.value)
    assert "client version 1.43 is too old. Minimum supported API version is 1.44" in str(raised.value)
    # One renegotiation that changes nothing, then the error: no retry loop.
    assert [path.split("?")[0] for path in engine.seen] == [
        "/_ping",
        "/v1.43/containers/json",
        "/_ping",
    ]


# -- the real engine ----------------------------------------------------------------------------


def _docker(*args: str) -> str:
    # No engine is a failure, not a skip: the test stack is expected to run one.
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=30)
    assert result.returncode == 0, f"docker {' '.join(args)}: no Docker engine answers: {result.stderr.strip()}"
    return result.stdout


@pytest.mark.stack  # talks to the real Docker engine
def test_the_real_engine_negotiates_what_docker_reports_and_lists_containers() -> None:
    server_api = _docker("version", "--format", "{{.Server.APIVersion}}").strip()
    before = set(_docker("ps", "--all", "--quiet", "--no-trunc").split())

    async def scenario() -> tuple[str | None, list[dict[str, Any]], int, str | None]:
        transport = httpx.AsyncHTTPTransport(uds=DOCKER_SOCKET)
        async with httpx.AsyncClient(transport=transport, base_url="http://docker", timeout=10) as client:
            actuator = ComposeActuator(client, PROJECT)
            workers = await actuator.current()  # the label-filtered list the autoscaler counts
            listed = await actuator.engine.request("GET", "/containers/json", params={"all": "true"})
            negotiated_version = actuator.engine.version
            # An engine replaced by an older one: the real engine's 400 must trigger renegotiation.
            actuator.engine.version = "9.99"
            await actuator.current()
            return negotiated_version, listed.json(), workers, actuator.engine.version

    version, containers, workers, renegotiated = asyncio.run(scenario())
    after = set(_docker("ps", "--all", "--quiet", "--no-trunc").split())
    assert version == min(server_api, MAX_API, key=parse_version)
    assert renegotiated == version
    assert workers >= 0
    # Containers may come and go meanwhile; those there before and after must be listed.
    assert before & after <= {c["Id"] for c in containers}


def test_an_engine_error_keeps_its_message_on_one_line() -> None:
    error = EngineError("GET", "/v1.41/containers/json", 500, "boom")
    assert str(error) == "Docker Engine API GET /v1.41/containers/json: 500 boom"

    async def answer() -> EngineError:
        def respond(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/_ping":
                return httpx.Response(200, headers={"API-Version": "1.41"}, text="OK")
            return httpx.Response(500, json={"message": "driver failed\nprogramming external connectivity"})

        async with httpx.AsyncClient(base_url="http://engine", transport=httpx.MockTransport(respond)) as client:
            try:
                await Engine(client).request("GET", "/containers/json")
            except EngineError as exc:
                return exc
        raise AssertionError("no error raised")

    raised = asyncio.run(answer())
    message = "driver failed programming external connectivity"
    assert raised.message == message
    assert str(raised) == f"Docker Engine API GET /v1.41/containers/json: 500 {message}"
