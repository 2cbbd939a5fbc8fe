"""The Kubernetes actuator against the scale subresource's documented exchange, served over HTTPS.

This is NOT a live cluster: tests/fixtures/kubernetes-api-scale-worker-service.json was written
from the Kubernetes API reference (read and patch the scale of a Deployment; autoscaling/v1 Scale;
meta/v1 Status). A real HTTPS server on loopback, with a certificate made here for 127.0.0.1, plays
it to the actuator built as a pod builds it: the API server from KUBERNETES_SERVICE_HOST/PORT, the
CA, token and namespace from the service account folder. The tests check each request's method,
path, headers and body, what `current()` and `scale_to()` make of the answers, that the token is
read again after the kubelet rotates it, and that a refusal (403 from RBAC, 404) or an unreachable
API server is a failing tick of the loop, shown on its /health, not a crash.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import pytest

from autoscaler.health import FAILING_AFTER_TICKS
from autoscaler.kubernetes import KubernetesActuator, KubernetesError, api_client, api_url
from autoscaler.loop import Autoscaler
from autoscaler.main import build_actuator, create_app
from core.connections import create_redis
from core.queue import TaskQueue
from core.settings import Settings
from tests.replies import reply
from tests.test_autoscaler_engine_health import redis_url  # noqa: F401 - a fixture of the loop test

FIXTURE = Path(__file__).parent / "fixtures" / "kubernetes-api-scale-worker-service.json"
EXCHANGES: dict[str, dict[str, Any]] = json.loads(FIXTURE.read_text())["exchanges"]
NAMESPACE, DEPLOYMENT = "serverless-scaling", "worker-service"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class ApiServer(http.server.ThreadingHTTPServer):
    """Answers each request with the next queued exchange's response, and keeps what it was sent;
    a request beyond the queue, or for another method or path, gets a 500."""

    def __init__(self, certificate: Path, key: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate, key)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.queued: list[str] = []
        self.seen: list[Seen] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def answer(self, seen: Seen) -> tuple[int, Any]:
        self.seen.append(seen)
        expected = EXCHANGES[self.queued.pop(0)] if self.queued else None
        if expected is None or (expected["request"]["method"], expected["request"]["path"]) != (seen.method, seen.path):
            return 500, {"kind": "Status", "message": f"unexpected {seen.method} {seen.path}"}
        return int(expected["response"]["status"]), expected["response"]["body"]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ApiServer

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        seen = Seen(self.command, self.path, dict(self.headers.items()), json.loads(raw) if raw else None)
        status, body = self.server.answer(seen)
        reply(self, status, body)

    do_GET = do_PATCH = _serve

    def log_message(self, *args: Any) -> None:
        pass


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: the server's, and the CA a client trusts."""
    certificate, key = folder / f"{name}.crt", folder / f"{name}.key"
    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key)]
    subject = ["-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        ["openssl", "req", "-x509", *ec_key, "-out", str(certificate), "-days", "1", *subject],
        check=True,
        capture_output=True,
    )
    return certificate, key


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _certificate(tmp_path_factory.mktemp("pki"), "kubernetes")


@pytest.fixture
def server(certificate: tuple[Path, Path]) -> Iterator[ApiServer]:
    running = ApiServer(*certificate)
    threading.Thread(target=running.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield running
    running.shutdown()
    running.server_close()


@pytest.fixture
def account(tmp_path: Path, certificate: tuple[Path, Path]) -> Path:
    """The service account folder as Kubernetes mounts it: token, ca.crt, namespace."""
    (tmp_path / "token").write_text("token-1\n")
    (tmp_path / "ca.crt").write_bytes(certificate[0].read_bytes())
    (tmp_path / "namespace").write_text(NAMESPACE)
    return tmp_path


def settings_for(account: Path, **overrides: Any) -> Settings:
    return Settings(
        autoscale="on",
        autoscale_engine="kubernetes",
        kubernetes_service_account_dir=str(account),
        **overrides,
    )


def in_pod(server: ApiServer) -> dict[str, str]:
    """The environment the kubelet gives every pod, pointing at `server`."""
    return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(server.port)}


def requests(*names: str) -> list[Seen]:
    """What the exchanges `names` pin: method, path, the pinned headers and body."""
    return [Seen(r["method"], r["path"], r["headers"], r["body"]) for r in (EXCHANGES[n]["request"] for n in names)]


def pinned(seen: list[Seen], *extra: str) -> list[Seen]:
    """`seen` with only the headers an exchange pins (and `extra`), so it compares to `requests`."""
    keep = {"Accept", "Content-Type", *extra}
    return [Seen(s.method, s.path, {k: v for k, v in s.headers.items() if k in keep}, s.body) for s in seen]


def test_reads_and_patches_the_scale_subresource(server: ApiServer, account: Path) -> None:
    server.queued = ["read", "scale_out", "scale_to_zero", "read_zero"]

    async def scenario() -> tuple[int, list[str], list[str], int]:
        settings = settings_for(account)
        async with api_client(settings, in_pod(server)) as client:
            actuator = build_actuator(settings, client)
            assert isinstance(actuator, KubernetesActuator)
            before = await actuator.current()
            up = await actuator.scale_to(4, {})
            # `busy` does not choose pods here: the ReplicaSet controller does.
            down = await actuator.scale_to(0, {"worker-service-7d9c-abcde": 3})
            return before, up, down, await actuator.current()

    before, up, down, after = asyncio.run(scenario())
    assert (before, after) == (2, 0)  # a Scale at 0 leaves spec.replicas out
    assert up == [f"set deployment {NAMESPACE}/{DEPLOYMENT} to 4 replicas"]
    assert down == [f"set deployment {NAMESPACE}/{DEPLOYMENT} to 0 replicas"]
    assert pinned(server.seen) == requests("read", "scale_out", "scale_to_zero", "read_zero")
    assert {s.headers["Authorization"] for s in server.seen} == {"Bearer token-1"}
    assert server.queued == []


def test_a_rotated_token_is_sent_from_the_next_request(server: ApiServer, account: Path) -> None:
    server.queued = ["read", "read"]

    async def scenario() -> None:
        settings = settings_for(account, kubernetes_namespace=NAMESPACE)
        async with api_client(settings, in_pod(server)) as client:
            actuator = KubernetesActuator.from_settings(client, settings)
            await actuator.current()
            # The kubelet swaps in a new file (an atomic rename), as it does for a projected token.
            (account / "token.new").write_text("token-2\n")
            os.replace(account / "token.new", account / "token")
            await actuator.current()

    asyncio.run(scenario())
    assert [s.headers["Authorization"] for s in server.seen] == ["Bearer token-1", "Bearer token-2"]


def test_refusals_name_the_status_and_what_to_check(server: ApiServer, account: Path) -> None:
    server.queued = ["scale_out_forbidden", "read_not_found"]

    async def scenario() -> list[KubernetesError]:
        settings = settings_for(account)
        refused: list[KubernetesError] = []
        async with api_client(settings, in_pod(server)) as client:
            actuator = KubernetesActuator.from_settings(client, settings)
            with pytest.raises(KubernetesError) as forbidden:
                await actuator.scale_to(2, {})
            refused.append(forbidden.value)
            with pytest.raises(KubernetesError) as missing:
                await actuator.current()
            refused.append(missing.value)
        return refused

    forbidden, missing = asyncio.run(scenario())
    assert (forbidden.method, forbidden.status, forbidden.reason) == ("PATCH", 403, "Forbidden")
    assert 'cannot patch resource "deployments/scale"' in forbidden.message
    assert "Role must allow get and patch on deployments/scale" in str(forbidden)
    assert (missing.method, missing.status, missing.reason) == ("GET", 404, "NotFound")
    assert str(missing).endswith(
        f'{missing.path}: 404 NotFound: deployments.apps "{DEPLOYMENT}" not found '
        "(no such Deployment: check KUBERNETES_DEPLOYMENT and KUBERNETES_NAMESPACE)"
    )
    assert pinned(server.seen) == requests("scale_out_forbidden", "read_not_found")


def test_only_the_cluster_ca_is_trusted(
    server: ApiServer, account: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other, _ = _certificate(tmp_path_factory.mktemp("other-pki"), "other")
    (account / "ca.crt").write_bytes(other.read_bytes())

    async def scenario() -> None:
        settings = settings_for(account)
        async with api_client(settings, in_pod(server)) as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await KubernetesActuator.from_settings(client, settings).current()

    asyncio.run(scenario())
    assert server.seen == []


def test_the_api_server_is_found_as_in_cluster_clients_find_it() -> None:
    settings = Settings()
    assert api_url(settings, {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}) == (
        "https://10.96.0.1:443"
    )
    assert api_url(settings, {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}) == (
        "https://[fd00::1]:443"
    )
    assert api_url(Settings(kubernetes_api_url="https://api.example:6443"), {}) == "https://api.example:6443"
    with pytest.raises(RuntimeError, match="KUBERNETES_API_URL"):
        api_url(settings, {})


@pytest.mark.stack  # the loop needs a Redis: the bare redis-server of test_autoscaler_engine_health
def test_a_refusing_api_server_fails_ticks_not_the_loop(
    redis_url: str,  # noqa: F811 - the fixture imported above
    server: ApiServer,
    account: Path,
) -> None:
    # MIN_WORKERS=2 with 1 replica: each tick reads the scale, then patches it and is refused.
    server.queued = ["read_one", "scale_out_forbidden"] * FAILING_AFTER_TICKS + ["read_not_found"]

    async def scenario() -> tuple[list[bool], int, dict[str, Any], str]:
        settings = settings_for(account, redis_url=redis_url, min_workers=2, max_workers=4)
        redis = create_redis(settings)
        async with api_client(settings, in_pod(server)) as client:
            scaler = Autoscaler(
                TaskQueue.from_settings(redis, settings),
                redis,
                cast(asyncpg.Pool, None),  # no decision is recorded: none is applied
                settings,
                build_actuator(settings, client),
            )
            await scaler.start()
            ticks = [await scaler.step(now=2_000_000.0 + n) is not None for n in range(FAILING_AFTER_TICKS)]
            app = create_app()
            app.state.scaler = scaler
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://autoscaler") as api:
                health = await api.get("/health")
                # The Deployment is gone: the read fails too, and the loop still goes on.
                ticks.append(await scaler.step(now=2_000_010.0) is not None)
                # Unreachable: the server stops answering (every later request is refused).
                server.shutdown()
                server.server_close()
                ticks.append(await scaler.step(now=2_000_011.0) is not None)
                last = await api.get("/health")
        await redis.aclose()
        return ticks, health.status_code, health.json(), str(last.json()["actuator"]["last_error"])

    ticks, status, health, last_error = asyncio.run(scenario())
    assert ticks == [False] * (FAILING_AFTER_TICKS + 2)
    assert status == 503
    assert (health["engine"], health["error"]) == ("kubernetes", "actuator_failing")
    assert health["detail"].startswith("KubernetesError: Kubernetes API PATCH ")
    assert "403 Forbidden" in health["detail"]
    assert last_error.startswith("ConnectError: ")
    assert [s.method for s in server.seen] == ["GET", "PATCH"] * FAILING_AFTER_TICKS + ["GET"]
