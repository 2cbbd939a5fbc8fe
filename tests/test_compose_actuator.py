"""The Compose actuator against a Docker Engine API exchange.

This is NOT a live test: the exchange in tests/fixtures/docker-api-scale-worker-service.json
was written from the Engine API v1.43 reference, for an engine whose `/_ping` names 1.43.
It checks that scaling out copies a running replica the way `docker compose up --scale` does
(image, command, env, Compose labels with the next container number, the service's network
alias, then start), and that scaling in stops the least busy replicas with a grace period
before removing them. Version negotiation and a real engine are in test_autoscaler_engine.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from autoscaler.actuators import ComposeActuator

FIXTURE = Path(__file__).parent / "fixtures" / "docker-api-scale-worker-service.json"


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


def test_scale_out_and_drain_aware_scale_in() -> None:
    replay = Replay()

    async def scenario() -> tuple[int, list[str], list[str], int]:
        async with httpx.AsyncClient(
            base_url="http://docker-socket-proxy:2375", transport=httpx.MockTransport(replay)
        ) as http:
            actuator = ComposeActuator(http, "serverless-scaling")
            up = await actuator.scale_to(3, {})
            # Replica c3 is idle, a1 runs one task, b2 runs five: the two least busy go.
            down = await actuator.scale_to(1, {"a1a1a1a1a1a1": 1, "b2b2b2b2b2b2": 5, "c3c3c3c3c3c3": 0})
            # The drains run in the background (SIGTERM, grace, then remove): wait for them.
            for _ in range(100):
                if not actuator._draining:
                    break
                await asyncio.sleep(0.01)
            return len(up), up, down, await actuator.current()

    started, up, down, after = asyncio.run(scenario())
    assert started == 1
    assert up == ["started serverless-scaling-worker-service-3"]
    assert down == [
        "draining serverless-scaling-worker-service-3 (0 in flight)",
        "draining serverless-scaling-worker-service-1 (1 in flight)",
    ]
    assert after == 1
    create = next(body for method, path, _, body in replay.seen if path.endswith("/containers/create"))
    assert create["Image"] == "serverless-scaling-app:1.0.0"
    assert create["Cmd"] == ["python", "-m", "worker_service"]
    assert create["Labels"]["com.docker.compose.container-number"] == "3"
    assert create["Labels"]["com.docker.compose.service"] == "worker-service"
    assert create["NetworkingConfig"]["EndpointsConfig"]["serverless-scaling_default"]["Aliases"] == ["worker-service"]
    assert create["HostConfig"]["Memory"] == 268435456
    filters = json.loads(replay.seen[1][2]["filters"])
    assert sorted(filters["label"]) == [
        "com.docker.compose.project=serverless-scaling",
        "com.docker.compose.service=worker-service",
    ]
    # The version first, then only container endpoints at it: what the socket proxy allows.
    assert replay.seen[0][:2] == ("GET", "/_ping")
    assert all(path.startswith("/v1.43/containers/") for _, path, _, _ in replay.seen[1:])
    assert replay.pending == []
