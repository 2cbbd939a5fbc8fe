"""The autoscaler loop with a failing engine: `/health` turns 503 after a few failing ticks and
names the error, recovers on the first tick that acts, and the log stays a few lines long.

The loop runs its own code (`Autoscaler.step`, what `run()` repeats) against a real Redis and
the Compose actuator talking HTTP to the tiny engine of test_autoscaler_engine.py; only the
log's clock is played by the test.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import threading
from collections.abc import Iterator
from typing import Any, cast

import asyncpg
import httpx
import pytest
from redis import Redis as SyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError

from autoscaler.actuators import ComposeActuator
from autoscaler.health import FAILING_AFTER_TICKS
from autoscaler.loop import Autoscaler
from autoscaler.main import _docker_client, create_app
from core import keys
from core.alerts import AutoscalerHealth
from core.connections import create_redis
from core.queue import TaskQueue
from core.settings import Settings
from harness.stacks import free_port, wait_for
from tests.test_autoscaler_engine import PROJECT, FakeEngine, replica

#: Starts processes of its own: a full-stack test (see tests/conftest.py).
pytestmark = pytest.mark.stack

#: Docker 29 accepts API 1.44 and newer only: every request this autoscaler can make is refused.
REFUSING = "1.44"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    # A bare in-memory Redis: the loop's reads and its state key are all these ticks need.
    options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(
        ["redis-server", *options, "--dir", str(tmp_path_factory.mktemp("redis"))], stdout=subprocess.DEVNULL
    )
    probe = SyncRedis(port=port)
    try:
        wait_for(lambda: _answers(probe), 10, "redis-server to answer")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        probe.close()
        server.terminate()
        server.wait(timeout=10)


def _answers(probe: SyncRedis) -> bool:
    try:
        return bool(probe.ping())
    except RedisConnectionError:
        return False


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    server = FakeEngine(max_api="1.41")
    server.replicas = [replica(1)]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


class Run:
    """One autoscaler against `engine`, as `main.lifespan` builds it (settings, Redis, client)."""

    def __init__(self, redis_url: str, engine: FakeEngine) -> None:
        self.settings = Settings(
            redis_url=redis_url,
            autoscale="on",
            autoscale_engine="compose",
            docker_host=engine.url.replace("http://", "tcp://"),
            compose_project=PROJECT,
            min_workers=1,
            max_workers=4,
        )
        self.redis = create_redis(self.settings)
        self.http = _docker_client(self.settings)
        # The pool only records decisions; these ticks decide nothing (the engine runs MIN_WORKERS).
        pool = cast(asyncpg.Pool, None)
        actuator = ComposeActuator(self.http, PROJECT)
        self.scaler = Autoscaler(
            TaskQueue.from_settings(self.redis, self.settings), self.redis, pool, self.settings, actuator
        )
        self.ticks = 0

    async def step(self) -> bool:
        """One tick; True if it acted (the engine answered and nothing needed changing)."""
        self.ticks += 1
        advice = await self.scaler.step(now=1_000_000.0 + self.ticks)
        if advice is not None:
            assert advice.recommended_workers == 1  # nothing to record: see the pool above
        return advice is not None

    async def close(self) -> None:
        await self.http.aclose()
        await self.redis.aclose()


def test_health_turns_503_after_failing_ticks_and_recovers(redis_url: str, engine: FakeEngine) -> None:
    reports: list[AutoscalerHealth] = []

    async def reported(run: Run) -> None:
        """What the dashboard's autoscaler_failing alert reads, as it reads it."""
        raw = await run.redis.get(keys.AUTOSCALER_HEALTH)
        assert raw is not None
        reports.append(AutoscalerHealth.model_validate_json(raw))

    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        run = Run(redis_url, engine)
        await run.scaler.start()
        app = create_app()
        app.state.scaler = run.scaler
        answers: list[tuple[int, dict[str, Any]]] = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://autoscaler") as client:

            async def health() -> None:
                response = await client.get("/health")
                answers.append((response.status_code, response.json()))

            try:
                assert await run.step()
                await health()
                engine.min_api = REFUSING  # the engine is replaced by one that refuses our API
                for _ in range(FAILING_AFTER_TICKS):
                    assert not await run.step()
                    await health()
                await reported(run)
                engine.min_api = "1.12"
                assert await run.step()
                await health()
                await reported(run)
            finally:
                await run.close()
        return answers

    answers = asyncio.run(scenario())
    statuses = [status for status, _ in answers]
    assert statuses == [200] + [200] * (FAILING_AFTER_TICKS - 1) + [503, 200]
    unhealthy = answers[FAILING_AFTER_TICKS][1]
    assert unhealthy["status"] == "unhealthy"
    assert unhealthy["error"] == "actuator_failing"
    assert unhealthy["detail"].startswith("EngineError: Docker Engine API GET /v1.41/containers/json: 400")
    assert "Minimum supported API version is 1.44" in unhealthy["detail"]
    assert "\n" not in unhealthy["detail"]
    assert unhealthy["actuator"]["failed_ticks"] == FAILING_AFTER_TICKS
    assert unhealthy["actuator"]["failing_since"] == 1_000_002.0  # the first failing tick
    assert answers[-1][1] == {"status": "healthy", "service": "autoscaler"}
    failing, recovered = reports
    assert failing == AutoscalerHealth.model_validate(unhealthy["actuator"])
    assert failing.failing
    assert failing.last_error == unhealthy["detail"]
    assert not recovered.failing
    assert recovered.failed_ticks == 0


def test_a_repeating_failure_logs_a_few_lines_without_traceback(
    redis_url: str, engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="autoscaler")  # after: this also lowers the handler's level
    failing_ticks = 90  # a minute and a half at one tick per second

    async def scenario() -> None:
        run = Run(redis_url, engine)
        clock = [0.0]
        run.scaler.failures.clock = lambda: clock[0]
        try:
            await run.scaler.start()
            assert await run.step()  # negotiated and acting: what came before the outage
            caplog.clear()
            engine.broken = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.\nIs it running?"
            for second in range(failing_ticks):
                clock[0] = float(second)
                assert not await run.step()
            engine.broken = None
            clock[0] = float(failing_ticks)
            assert await run.step()
        finally:
            await run.close()

    asyncio.run(scenario())
    shown = [r for r in caplog.records if r.levelno >= logging.INFO]
    lines = [r.getMessage() for r in shown]
    error = (
        "EngineError: Docker Engine API GET /v1.41/containers/json: 500 Cannot connect to the Docker daemon at "
        "unix:///var/run/docker.sock. Is it running?"
    )
    # The failures: once when new, once more after a minute with the count. Then the recovery.
    assert lines == [
        f"autoscaler tick failed: {error}",
        f"autoscaler tick still failing (61 times): {error}",
        f"autoscaler tick succeeded again after {failing_ticks} failures of: {error}",
    ]
    assert all(r.exc_info is None for r in shown)
    assert "Traceback" not in "".join(caplog.handler.format(r) for r in shown)
    # The tracebacks are there for whoever turns on DEBUG.
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and r.name == "autoscaler.loop"]
    assert len(debug) == failing_ticks
    assert all(r.exc_info for r in debug)
