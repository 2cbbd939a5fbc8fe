"""The socket proxy the autoscaler reaches Docker through, run for real: the image and the options
that docker-compose.yml gives `docker-socket-proxy` (the offline stand-in's image under
OFFLINE_IMAGES=1), its rules from docker/socket-proxy/haproxy.cfg and the host's Docker socket,
published on a loopback port for this test only.

A create through it (a privileged container mounting the host's root) is refused and makes
nothing; so is every other way to change or read a container; starting and stopping a pool
replica works, and the Compose actuator scales a pool through it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from autoscaler.actuators import ComposeActuator
from harness.stacks import wait_for
from load_test.stack import offline_images
from native import compose
from native.plan import ROOT

#: Starts processes of its own: a full-stack test (see tests/conftest.py).
pytestmark = pytest.mark.stack

SERVICE = "docker-socket-proxy"
# The oldest engine the actuator supports (autoscaler.engine.FALLBACK_API) speaks it; newer ones do too.
API = "/v1.41"


def _docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr.strip()}"
    return result.stdout


def _proxy_options() -> list[str]:
    """`docker run` options for the proxy as docker-compose.yml (and its offline overlay) define it."""
    service: dict[str, Any] = compose.load(ROOT / "docker-compose.yml")["services"][SERVICE]
    image = service["image"]
    if offline_images():
        image = compose.load(ROOT / "docker-compose.offline.yml")["services"][SERVICE]["image"]
    options = ["--user", service["user"], "--read-only"] if service.get("read_only") else ["--user", service["user"]]
    options += [arg for cap in service.get("cap_drop", []) for arg in ("--cap-drop", cap)]
    options += [arg for opt in service.get("security_opt", []) for arg in ("--security-opt", opt)]
    for volume in service["volumes"]:
        source, rest = volume.split(":", 1)
        options += ["-v", f"{ROOT / source if source.startswith('./') else source}:{rest}"]
    return [*options, image]


@dataclass
class Proxy:
    project: str
    port: int
    image: str

    def name(self, what: str) -> str:
        return f"{self.project}-{what}"

    def send(self, method: str, path: str, body: dict[str, Any] | None = None) -> int:
        """The status of one request, its path sent exactly as written (no client normalises it)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            connection.request(method, path, body=payload, headers=headers)
            return connection.getresponse().status
        finally:
            connection.close()

    def state(self, name: str) -> str:
        return _docker("inspect", "--type", "container", "-f", "{{.State.Status}}", name).strip()

    def containers(self) -> set[str]:
        return set(_docker("ps", "-a", "--filter", f"name={self.project}", "--format", "{{.Names}}").split())


@pytest.fixture(scope="module")
def proxy() -> Iterator[Proxy]:
    project = f"ss-proxy-{secrets.token_hex(4)}"
    *options, image = _proxy_options()
    proxy = Proxy(project, 0, image)
    try:
        # Two pool replicas as `docker compose create --scale worker-service=2` leaves them, and
        # a bystander: a stopped container outside the pool. The proxy's image serves as theirs.
        for number in (1, 2):
            labels = {
                "com.docker.compose.project": project,
                "com.docker.compose.service": "worker-service",
                "com.docker.compose.container-number": str(number),
            }
            label_args = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
            name = proxy.name(f"worker-service-{number}")
            _docker("create", "--init", "--name", name, *label_args, image, "sleep", "600")
        _docker("create", "--init", "--name", proxy.name("bystander"), image, "sleep", "600")
        _docker("run", "-d", "--name", proxy.name("proxy"), "-p", "127.0.0.1::2375", *options, image)
        published = _docker("port", proxy.name("proxy"), "2375").split()[0]
        proxy.port = int(published.rsplit(":", 1)[1])

        def answers() -> bool:
            try:
                return proxy.send("GET", "/_ping") == 200
            except OSError:
                return False

        wait_for(answers, 20, "the socket proxy to answer /_ping")
        yield proxy
    finally:
        names = _docker("ps", "-aq", "--filter", f"name={project}").split()
        if names:
            _docker("rm", "-f", *names)


def test_a_create_through_the_proxy_is_refused_and_makes_nothing(proxy: Proxy) -> None:
    before = proxy.containers()
    # What whoever controls the autoscaler would start: privileged, the host's root mounted, and
    # named like a pool replica so no name rule is what stops it.
    attack = {
        "Image": proxy.image,
        "Cmd": ["sh", "-c", "cat /host/etc/shadow"],
        "HostConfig": {"Privileged": True, "Binds": ["/:/host"], "PidMode": "host", "NetworkMode": "host"},
    }
    name = proxy.name("worker-service-9")
    for path in (f"{API}/containers/create?name={name}", f"/containers/create?name={name}"):
        assert proxy.send("POST", path, attack) == 403, path
    assert proxy.containers() == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "{api}/containers/{pool}/exec"),
        ("POST", "{api}/containers/{pool}/kill"),
        ("POST", "{api}/containers/{pool}/restart"),
        ("POST", "{api}/containers/{pool}/update"),
        ("POST", "{api}/containers/{pool}/rename?name=x"),
        ("PUT", "{api}/containers/{pool}/archive?path=/"),
        ("DELETE", "{api}/containers/{pool}?force=true"),
        ("GET", "{api}/containers/{pool}/json"),  # inspect: every container's environment
        ("GET", "{api}/containers/{pool}/logs?stdout=1"),
        ("POST", "{api}/containers/{bystander}/start"),
        ("POST", "{api}/containers/{proxy}/stop"),
        ("POST", "{api}/containers/prune"),
        ("GET", "{api}/containers/json/../../images/json"),
        ("POST", "{api}/containers/{pool}/../../containers/create"),
        ("POST", "{api}/containers/{pool}%2F..%2Fcreate/start"),
        ("POST", "{api}/containers/..-worker-service-1/start"),
        ("GET", "{api}/containers/json?all=1&x=/../../info"),
        ("POST", "{api}/containers/{pool}/start/../exec"),
        ("GET", "{api}/images/json"),
        ("POST", "{api}/images/create?fromImage=alpine"),
        ("GET", "{api}/info"),
        ("GET", "{api}/events"),
        ("GET", "{api}/volumes"),
        ("POST", "{api}/networks/create"),
        ("POST", "{api}/build"),
        ("POST", "{api}/exec/0123456789ab/start"),
        ("GET", "{api}/swarm"),
        ("POST", "/_ping"),
        # Swarm: only GET and update of `<stack>_worker-service` pass (the Swarm actuator's two requests).
        ("GET", "{api}/services"),
        ("POST", "{api}/services/create"),
        ("POST", "{api}/services/x_api-gateway/update?version=1"),
        ("GET", "{api}/services/x_autoscaler"),
        ("DELETE", "{api}/services/x_worker-service"),
        ("POST", "{api}/services/x_worker-service"),
        ("GET", "{api}/services/x_worker-service/logs?stdout=1"),
        ("POST", "{api}/services/x_worker-service/update/../../create"),
        ("POST", "{api}/services/..%2Fx_worker-service/update"),
        ("GET", "{api}/tasks"),
        ("GET", "{api}/nodes"),
        ("GET", "{api}/secrets"),
        ("GET", "{api}/configs"),
        ("POST", "{api}/swarm/leave?force=1"),
    ],
)
def test_everything_but_list_start_and_stop_is_refused(proxy: Proxy, method: str, path: str) -> None:
    pool = proxy.name("worker-service-1")
    target = path.format(api=API, pool=pool, bystander=proxy.name("bystander"), proxy=proxy.name("proxy"))
    before = {name: proxy.state(name) for name in proxy.containers()}
    status = proxy.send(method, target, {} if method in {"POST", "PUT"} else None)
    if target.endswith("?all=1&x=/../../info"):
        # The query is not the path: this is the container list, which is allowed.
        assert status == 200
    else:
        assert status == 403, f"{method} {target} answered {status}"
    assert {name: proxy.state(name) for name in proxy.containers()} == before


def test_the_version_and_the_list_are_readable(proxy: Proxy) -> None:
    for method, path in (("GET", "/_ping"), ("HEAD", "/_ping"), ("GET", f"{API}/version"), ("GET", "/version")):
        assert proxy.send(method, path) == 200, (method, path)
    assert proxy.send("GET", f"{API}/containers/json?all=1") == 200


def test_the_worker_service_is_readable_and_updatable(proxy: Proxy) -> None:
    # Let through to the engine, which answers for itself: no such service (404; 503 from an engine
    # that wants a swarm first). Never the proxy's 403.
    name = f"{proxy.project}_worker-service"
    spec = {"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": proxy.image}}}
    assert proxy.send("GET", f"{API}/services/{name}") in (404, 503)
    assert proxy.send("POST", f"{API}/services/{name}/update?version=1", spec) in (404, 503)


def test_the_compose_actuator_scales_the_pool_through_the_proxy(proxy: Proxy) -> None:
    pool = [proxy.name(f"worker-service-{n}") for n in (1, 2)]

    async def scenario() -> tuple[int, list[str], int, list[str], int]:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxy.port}", timeout=10) as client:
            actuator = ComposeActuator(client, proxy.project, stop_timeout=5)
            before = await actuator.current()
            up = await actuator.scale_to(2, {})
            running = await actuator.current()
            down = await actuator.scale_to(1, {})
            # The stop runs in the background: SIGTERM, up to stop_timeout, then the pool keeps it.
            await asyncio.wait_for(actuator.drained(), 10)
            return before, up, running, down, await actuator.current()

    before, up, running, down, after = asyncio.run(scenario())
    assert (before, running, after) == (0, 2, 1)
    assert up == [f"started {pool[0]}", f"started {pool[1]}"]
    assert down == [f"draining {pool[1]} (0 in flight)"]
    assert [proxy.state(name) for name in pool] == ["running", "exited"]
    assert proxy.state(proxy.name("bystander")) == "created"
    _docker("stop", "--time", "1", pool[0])
