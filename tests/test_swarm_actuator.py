"""The Swarm actuator against the Engine API's documented service exchange, served over HTTP.

This is NOT a live swarm: tests/fixtures/docker-api-swarm-worker-service.json was written from the
Engine API v1.43 reference (ServiceInspect, ServiceUpdate with `?version=` and a ServiceSpec body,
ErrorResponse). A real HTTP server on loopback plays it to the actuator that `build_actuator` makes
for AUTOSCALE_ENGINE=swarm, reached as DOCKER_HOST names it. The tests check each request's
method, path, query and body, that an update sends back the spec it read with only the replica
count changed, that "update out of sequence" is retried once after a fresh read (and a second one
fails the call), and that a missing service or a node outside a swarm is a failing tick of the
loop, shown on its /health, not a crash. The proxy's rules for these requests are checked here
against the cfg's own patterns, and for real in tests/test_socket_proxy.py.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import httpx
import pytest

from autoscaler.engine import EngineError
from autoscaler.health import FAILING_AFTER_TICKS
from autoscaler.loop import Autoscaler
from autoscaler.main import _docker_client, build_actuator, create_app
from autoscaler.swarm import SwarmActuator
from core.connections import create_redis
from core.queue import TaskQueue
from core.settings import Settings
from tests.replies import reply
from tests.test_autoscaler_engine_health import redis_url  # noqa: F401 - a fixture of the loop test

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "docker-api-swarm-worker-service.json"
EXCHANGES: dict[str, dict[str, Any]] = json.loads(FIXTURE.read_text())["exchanges"]
SERVICE = "serverless-scaling_worker-service"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any


def pinned(*names: str) -> list[Request]:
    """The requests the exchanges `names` hold, in that order."""
    return [Request(**EXCHANGES[name]["request"]) for name in names]


class ReplayEngine(http.server.ThreadingHTTPServer):
    """Plays the exchanges in `script` in order and keeps every request; one that is not the next
    exchange's method and path, or comes after the script ends, gets a 500 naming it."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[str] = []
        self.received: list[Request] = []

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.server_address[1]}"

    def play(self, request: Request) -> tuple[int, dict[str, str], Any]:
        self.received.append(request)
        exchange = EXCHANGES[self.script.pop(0)] if self.script else None
        if exchange is None or (exchange["request"]["method"], exchange["request"]["path"]) != (
            request.method,
            request.path,
        ):
            return 500, {}, {"message": f"unexpected {request.method} {request.path}"}
        answer = exchange["response"]
        return int(answer["status"]), answer.get("headers", {}), answer["body"]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ReplayEngine

    def _play(self) -> None:
        url = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = Request(self.command, url.path, dict(parse_qsl(url.query)), json.loads(raw) if raw else None)
        status, headers, body = self.server.play(request)
        reply(self, status, body, {"Content-Type": "application/json", **headers})

    do_GET = do_POST = _play

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def engine() -> Iterator[ReplayEngine]:
    with ReplayEngine() as server:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        yield server
        server.shutdown()


def swarm_settings(engine: ReplayEngine, **overrides: Any) -> Settings:
    return Settings(autoscale="on", autoscale_engine="swarm", docker_host=engine.url, **overrides)


def test_scaling_sends_back_the_spec_it_read_with_only_the_replicas_changed(engine: ReplayEngine) -> None:
    played = ["ping", "read_2", "read_2", "scale_out_to_4"]
    played += ["read_4", "scale_in_to_1_out_of_sequence", "read_4_moved", "scale_in_to_1"]
    engine.script = list(played)

    async def scenario() -> tuple[int, list[str], list[str]]:
        settings = swarm_settings(engine)
        async with _docker_client(settings) as client:
            actuator = build_actuator(settings, client)
            assert isinstance(actuator, SwarmActuator)
            before = await actuator.current()
            up = await actuator.scale_to(4, {})
            # `busy` does not choose tasks here: the swarm orchestrator does. The first update
            # meets a version that moved on (a rolling update's progress): read again, send again.
            down = await actuator.scale_to(1, {"c0ffee123456": 3})
            return before, up, down

    before, up, down = asyncio.run(scenario())
    assert before == 2
    assert up == [f"set service {SERVICE} from 2 to 4 replicas"]
    assert down[0] == f"set service {SERVICE} from 4 to 1 replicas"
    assert down[1].startswith("image serverless-scaling-app:1.0.0 could not be accessed on a registry")
    assert engine.received == pinned(*played)
    assert engine.script == []
    # Each body is the spec just read, whole, with one number changed, at the version just read:
    # ForceUpdate goes back as it was (no restart) and PreviousSpec is not sent.
    for read, update, count in (("read_2", "scale_out_to_4", 4), ("read_4_moved", "scale_in_to_1", 1)):
        service = EXCHANGES[read]["response"]["body"]
        spec = json.loads(json.dumps(service["Spec"]))
        spec["Mode"]["Replicated"]["Replicas"] = count
        assert EXCHANGES[update]["request"]["body"] == spec
        assert EXCHANGES[update]["request"]["query"] == {"version": str(service["Version"]["Index"])}
        assert spec["TaskTemplate"]["ForceUpdate"] == 2


def test_a_second_refusal_and_a_missing_service_fail_the_call(engine: ReplayEngine) -> None:
    played = ["ping", "read_4", "scale_in_to_1_out_of_sequence", "read_4_moved"]
    played += ["scale_in_to_1_out_of_sequence_again", "read_missing"]
    engine.script = list(played)

    async def scenario() -> tuple[EngineError, EngineError]:
        settings = swarm_settings(engine)
        async with _docker_client(settings) as client:
            actuator = SwarmActuator.from_settings(client, settings)
            with pytest.raises(EngineError) as again:
                await actuator.scale_to(1, {})
            with pytest.raises(EngineError) as missing:
                await actuator.current()
            return again.value, missing.value

    again, missing = asyncio.run(scenario())
    assert (again.method, again.status) == ("POST", 500)
    assert again.message == "rpc error: code = Unknown desc = update out of sequence"
    assert str(missing) == (
        f"Docker Engine API GET /v1.43/services/{SERVICE}: 404 service serverless-scaling_worker-service not found"
    )
    assert engine.received == pinned(*played)
    assert engine.script == []


def test_the_stack_names_the_service() -> None:
    async def scenario() -> str:
        async with httpx.AsyncClient() as client:
            return SwarmActuator.from_settings(client, Settings(swarm_stack="shop")).service

    assert asyncio.run(scenario()) == "shop_worker-service"


def _proxy_rules() -> tuple[dict[str, re.Pattern[str]], list[tuple[str, str]]]:
    """docker/socket-proxy/haproxy.cfg's path patterns by name, and its allow rules as (method, acl)."""
    text = (ROOT / "docker" / "socket-proxy" / "haproxy.cfg").read_text()
    patterns = {name: re.compile(rx) for name, rx in re.findall(r"^\s*acl (\S+) path -m reg (\S+)$", text, re.M)}
    allows = re.findall(r"^\s*http-request allow if METH_(\w+) (\S+)$", text, re.M)
    return patterns, allows


def _allowed(method: str, path: str) -> bool:
    patterns, allows = _proxy_rules()
    # HAProxy's METH_GET matches GET and HEAD; `path` is the path without the query.
    methods = {"GET": {"GET", "HEAD"}, "POST": {"POST"}}
    return any(method in methods[m] and patterns[acl].search(path.split("?", 1)[0]) for m, acl in allows)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", f"/v1.43/services/{SERVICE}", True),
        ("HEAD", f"/services/{SERVICE}", True),
        ("POST", f"/v1.43/services/{SERVICE}/update?version=118", True),
        ("POST", f"/v1.43/services/{SERVICE}", False),
        ("DELETE", f"/v1.43/services/{SERVICE}", False),
        ("GET", f"/v1.43/services/{SERVICE}/logs", False),
        ("POST", "/v1.43/services/serverless-scaling_api-gateway/update?version=1", False),
        ("GET", "/v1.43/services/serverless-scaling_autoscaler", False),
        ("POST", "/v1.43/services/create", False),
        ("GET", "/v1.43/services", False),
        ("POST", f"/v1.43/services/..%2F{SERVICE}/update", False),
        ("POST", f"/v1.43/services/x/../{SERVICE}/update", False),
        ("GET", "/v1.43/tasks", False),
        ("GET", "/v1.43/nodes", False),
        ("GET", "/v1.43/secrets", False),
        ("POST", "/v1.43/swarm/leave?force=1", False),
    ],
)
def test_the_proxy_lets_through_only_the_worker_service(method: str, path: str, allowed: bool) -> None:
    assert _allowed(method, path) is allowed


@pytest.mark.stack  # the loop needs a Redis: the bare redis-server of test_autoscaler_engine_health
def test_a_refusing_engine_fails_ticks_not_the_loop(
    redis_url: str,  # noqa: F811 - the fixture imported above
    engine: ReplayEngine,
) -> None:
    # Outside a swarm every read is refused (503); then the service is there at MIN_WORKERS.
    engine.script = ["ping", *["read_not_a_manager"] * FAILING_AFTER_TICKS, "read_missing", "read_2"]

    async def scenario() -> tuple[list[bool], dict[str, Any], dict[str, Any], int]:
        settings = swarm_settings(engine, redis_url=redis_url, min_workers=2, max_workers=4)
        redis = create_redis(settings)
        async with _docker_client(settings) as client:
            # The pool only records decisions: these ticks apply none.
            queue, pool = TaskQueue.from_settings(redis, settings), cast(asyncpg.Pool, None)
            scaler = Autoscaler(queue, redis, pool, settings, build_actuator(settings, client))
            await scaler.start()
            ticks = [await scaler.step(now=3_000_000.0 + n) is not None for n in range(FAILING_AFTER_TICKS + 1)]
            app = create_app()
            app.state.scaler = scaler
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://autoscaler") as api:
                failing = (await api.get("/health")).json()
                ticks.append(await scaler.step(now=3_000_010.0) is not None)
                recovered = await api.get("/health")
        await redis.aclose()
        return ticks, failing, recovered.json(), recovered.status_code

    ticks, failing, recovered, status = asyncio.run(scenario())
    assert ticks == [False] * (FAILING_AFTER_TICKS + 1) + [True]
    assert (failing["engine"], failing["error"]) == ("swarm", "actuator_failing")
    assert failing["detail"] == (
        f"EngineError: Docker Engine API GET /v1.43/services/{SERVICE}: 404 service {SERVICE} not found"
    )
    assert (status, recovered["status"]) == (200, "healthy")
    assert engine.script == []
