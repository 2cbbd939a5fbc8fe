"""The Compose actuator against a Docker Engine API exchange.

This is NOT a live test: the exchange in tests/fixtures/docker-api-pool-worker-service.json
was written from the Engine API v1.43 reference, for an engine whose `/_ping` names 1.43.
It checks that the actuator scales within the pool of worker-service containers: scaling out
starts stopped or never-started ones, lowest number first; scaling in stops the least busy with a
grace period and removes nothing; a used-up pool is named with the command that grows it; and no
request but list, start and stop is sent. The real engine behind the real socket proxy is in
test_socket_proxy.py; version negotiation in test_autoscaler_engine.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from autoscaler.actuators import ComposeActuator, PoolExhausted

FIXTURE = Path(__file__).parent / "fixtures" / "docker-api-pool-worker-service.json"


class Replay:
    """Serves the recorded answers; fails on any request the exchange does not hold."""

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] = json.loads(FIXTURE.read_text())["exchanges"]
        self.seen: list[tuple[str, str, dict[str, str], Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        query = dict(request.url.params)
        body = json.loads(request.content) if request.content else None
        self.seen.append((request.method, request.url.path, query, body))
        for index, entry in enumerate(self.pending):
            same_call = entry["method"] == request.method and entry["path"] == request.url.path
            if same_call and all(query.get(k) == v for k, v in entry.get("query", {}).items()):
                self.pending.pop(index)
                answer = entry["response"]
                if isinstance(answer, str):  # /_ping answers plain text
                    return httpx.Response(entry["status"], headers=entry.get("headers"), text=answer)
                return httpx.Response(entry["status"], headers=entry.get("headers"), json=answer)
        raise AssertionError(f"unexpected request {request.method} {request.url}")


def test_scaling_starts_and_stops_pool_replicas_and_creates_nothing() -> None:
    replay = Replay()
    prefix = "serverless-scaling-worker-service"

    async def scenario() -> tuple[list[str], list[str], int, list[str], str]:
        async with httpx.AsyncClient(
            base_url="http://docker-socket-proxy:2375", transport=httpx.MockTransport(replay)
        ) as http:
            actuator = ComposeActuator(http, "serverless-scaling")
            up = await actuator.scale_to(3, {})
            # Replica c3 is idle, a1 runs one task, b2 runs five: the two least busy go.
            down = await actuator.scale_to(1, {"a1a1a1a1a1a1": 1, "b2b2b2b2b2b2": 5, "c3c3c3c3c3c3": 0})
            # The drains run in the background (SIGTERM, grace): wait for them.
            await asyncio.wait_for(actuator.drained(), 1)
            after = await actuator.current()
            grown = await actuator.scale_to(5, {})
            with pytest.raises(PoolExhausted) as exhausted:
                await actuator.scale_to(5, {})
            return up, down, after, grown, str(exhausted.value)

    up, down, after, grown, exhausted = asyncio.run(scenario())
    assert up == [f"started {prefix}-3"]
    assert down == [f"draining {prefix}-3 (0 in flight)", f"draining {prefix}-1 (1 in flight)"]
    assert after == 1
    assert grown[:3] == [f"started {prefix}-1", f"started {prefix}-3", f"started {prefix}-4"]
    assert grown[3].startswith("worker pool exhausted: 4 worker-service containers, 4 running, 5 wanted")
    assert "docker compose create --no-recreate --scale worker-service=5 worker-service" in grown[3]
    assert exhausted.startswith("worker pool exhausted: 4 worker-service containers, 4 running, 5 wanted")
    filters = json.loads(replay.seen[1][2]["filters"])
    assert sorted(filters["label"]) == [
        "com.docker.compose.project=serverless-scaling",
        "com.docker.compose.service=worker-service",
    ]
    # The version first, then only what the socket proxy lets through: the list, start and stop
    # of pool containers by name. Nothing is created, inspected or removed.
    assert replay.seen[0][:2] == ("GET", "/_ping")
    sent = {(method, path.rsplit("/", 1)[-1]) for method, path, _, _ in replay.seen[1:]}
    assert sent == {("GET", "json"), ("POST", "start"), ("POST", "stop")}
    assert all(
        path.startswith(("/v1.43/containers/json", f"/v1.43/containers/{prefix}-")) for _, path, _, _ in replay.seen[1:]
    )
    assert replay.pending == []
