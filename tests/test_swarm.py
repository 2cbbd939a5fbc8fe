"""Docker Swarm: the stack file rendered from docker-compose.yml (native/swarm.py), and one real
`./demo.sh --swarm` deploy on this machine's engine, shared by the live tests: the README flow
through its published ports, the autoscaler's scale-out and back in, a rolling restart of the
workers under load, and the removal."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]
import pytest

from core.db import Outcomes
from harness.stacks import AUTOSCALED, BaseStack, isolated_env, wait_for
from native import compose, swarm
from native.plan import ROOT

#: The deploy test runs containers of its own: a full-stack test (see tests/conftest.py).
pytestmark = pytest.mark.stack

SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
PROJECT = "ss-swarm-render"
#: Fixed inputs: the example secrets, and OFFLINE_IMAGES as each case sets it.
EXAMPLE = compose.read_dotenv(ROOT / ".env.example")


def source(offline: bool) -> dict[str, Any]:
    """docker-compose.yml (and its offline overlay) as Compose reads it, interpolated the same way."""
    values = swarm.variables(PROJECT, EXAMPLE)
    document: dict[str, Any] = {}
    for path in [ROOT / "docker-compose.yml"] + ([ROOT / "docker-compose.offline.yml"] if offline else []):
        document = swarm.merge(document, compose.load(path))
    result: dict[str, Any] = compose.interpolate(document, values)
    return result


def rendered(offline: bool) -> dict[str, Any]:
    return swarm.render(PROJECT, EXAMPLE | {"OFFLINE_IMAGES": "1" if offline else "0"})


@pytest.fixture(params=[False, True], ids=["registry", "offline"])
def pair(request: pytest.FixtureRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    return source(request.param), rendered(request.param)


def test_every_service_but_the_profiled_ones_is_deployed(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    original, stack = pair
    expected = {name for name, service in original["services"].items() if not service.get("profiles")}
    assert set(stack["services"]) == expected
    assert "load-test" not in stack["services"]
    for name in expected:
        assert stack["services"][name]["image"] == original["services"][name]["image"]


def test_every_variable_keeps_its_value(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    original, stack = pair
    for name, service in stack["services"].items():
        env = compose.environment(service)
        overridden = swarm.autoscaler_env(PROJECT) if name == "autoscaler" else {}
        for key, value in compose.environment(original["services"][name]).items():
            assert env.get(key) == overridden.get(key, value), f"{name}: {key}"


def test_ports_volumes_and_networks_carry_over(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    original, stack = pair
    for name, service in stack["services"].items():
        want = {(int(host), target) for host, target in compose.container_ports(original["services"][name]) if host}
        have = {(port["published"], port["target"]) for port in service.get("ports", [])}
        assert have == want, name
        assert all(port["mode"] == "host" for port in service.get("ports", []))
        volumes = [str(v).replace(f"{ROOT}/", "./") for v in service.get("volumes", [])]
        assert volumes == original["services"][name].get("volumes", []), name
        assert service.get("networks") == original["services"][name].get("networks"), name
    assert stack["volumes"] == original["volumes"]
    assert stack["networks"] == original["networks"]


def test_storage_ports_compose_keeps_on_loopback_are_not_published() -> None:
    stack = rendered(False)
    assert "ports" not in stack["services"]["redis"]
    assert "ports" not in stack["services"]["postgres"]


def test_compose_only_fields_become_deploy(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    original, stack = pair
    for name, service in stack["services"].items():
        assert not set(swarm.DROPPED) & set(service), name
        deploy = service["deploy"]
        assert deploy["replicas"] == compose.replicas(original["services"][name])
        assert deploy["endpoint_mode"] == "dnsrr"
        assert service.get("stop_grace_period") == original["services"][name].get("stop_grace_period")
        assert service.get("healthcheck") == original["services"][name].get("healthcheck")
        assert deploy.get("resources") == original["services"][name]["deploy"].get("resources")
    # The one-shot reruns until it succeeds; the others always restart.
    assert stack["services"]["migrate"]["deploy"]["restart_policy"]["condition"] == "on-failure"
    assert stack["services"]["nginx"]["deploy"]["restart_policy"]["condition"] == "any"


def test_app_services_wait_for_their_dependencies_and_the_autoscaler_scales_the_stack() -> None:
    stack = rendered(False)["services"]
    app = {name for name, service in stack.items() if service["image"].startswith("serverless-scaling-app")}
    assert app == {"migrate", "api-gateway", "worker-service", "autoscaler", "monitoring"}
    for name in app:
        assert float(stack[name]["environment"]["STARTUP_WAIT_SECONDS"]) > 0
    assert stack["autoscaler"]["environment"]["AUTOSCALE_ENGINE"] == "swarm"
    assert stack["autoscaler"]["environment"]["SWARM_STACK"] == PROJECT


def test_the_rendered_file_matches_the_compose_spec(tmp_path: Path) -> None:
    path = swarm.write(PROJECT, tmp_path / "stack.yml", EXAMPLE)
    assert path.stat().st_mode & 0o077 == 0, "it holds the secrets: its owner's only"
    text = path.read_text()
    assert "IPVS" in text, "the header says why every service uses dnsrr"
    document = compose.load(path)
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(document), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_docker_stack_config_accepts_it(tmp_path: Path) -> None:
    """The docker CLI's own stack loader (client side: no engine needed) reads it without a warning."""
    docker = shutil.which("docker")
    assert docker, "the docker CLI is not installed; ./test.sh installs it"
    path = swarm.write(PROJECT, tmp_path / "stack.yml", EXAMPLE)
    done = subprocess.run([docker, "stack", "config", "-c", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "unsupported" not in done.stderr.lower(), done.stderr
    assert "endpoint_mode: dnsrr" in done.stdout


# -- one real deploy, shared by the live tests -----------------------------------------------------


def docker(*args: str, check: bool = True, stdin: str | None = None) -> str:
    done = subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args[:3])}: {done.stderr}"
    return done.stdout


def labelled(kind: str, stack: str) -> list[str]:
    listing = {"service": ["service", "ls"], "container": ["ps", "-a"]}.get(kind, [kind, "ls"])
    return docker(*listing, "-q", "--filter", f"label=com.docker.stack.namespace={stack}").split()


#: Run in the monitoring service's container, which reaches Postgres (not published in a swarm):
#: core.db.outcomes of the task ids read from stdin, as JSON.
OUTCOMES_SCRIPT = """
import asyncio, dataclasses, json, os, sys
import asyncpg
from core.db import outcomes

async def main() -> None:
    conn = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        print(json.dumps(dataclasses.asdict(await outcomes(conn, sys.stdin.read().split()))))
    finally:
        await conn.close()

asyncio.run(main())
"""


class SwarmStack(BaseStack):
    """A stack deployed by `./demo.sh --swarm up`, autoscaled quickly (AUTOSCALED), on free ports.
    Its Redis and Postgres are not published: requests go through nginx's published port (the
    inherited `submit` and `task`), final states are read in a container of the stack, and the
    worker count from the swarm service."""

    engine = "swarm"
    #: What `./demo.sh --swarm up` printed.
    started: subprocess.CompletedProcess[str]

    def __init__(self) -> None:
        self.name = f"ss-swarm-{secrets.token_hex(4)}"
        self.env = isolated_env(AUTOSCALED | {"SWARM_STACK": self.name, "SWARM_DEADLINE": "150"})
        self.env.pop("COMPOSE_FILE", None)
        self.lb = f"http://127.0.0.1:{self.env['LB_PORT']}"
        self.monitor = f"http://127.0.0.1:{self.env['MONITOR_PORT']}"
        self.http = httpx.Client(base_url=self.lb, timeout=10)
        self.workers = f"{self.name}_worker-service"

    def demo(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ROOT / "demo.sh"), "--swarm", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def containers(self, service: str) -> list[str]:
        """The running containers of one of the stack's services, by short id (their hostname)."""
        return docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={self.name}_{service}").split()

    def replicas(self) -> int:
        """The worker service's replica count as the autoscaler last set it."""
        return int(docker("service", "inspect", "-f", "{{.Spec.Mode.Replicated.Replicas}}", self.workers))

    def settled(self, count: int) -> bool:
        """`count` replicas asked for and as many worker containers running: the others drained and exited."""
        return self.replicas() == count and len(self.containers("worker-service")) == count

    def outcomes(self, ids: list[str]) -> Outcomes:
        [container] = self.containers("monitoring")
        out = docker("exec", "-i", container, "python", "-c", OUTCOMES_SCRIPT, stdin="\n".join(ids))
        return Outcomes(**json.loads(out))

    def wait_all_final(self, task_ids: list[str], timeout: float = 60) -> dict[str, dict[str, Any]]:
        """Every task final in Postgres (polled once a second: each look starts a process in a
        container), then each one's record through the API."""
        wait_for(lambda: not self.outcomes(task_ids).lost, timeout, f"{len(task_ids)} tasks to finish", interval=1)
        return {task_id: self.task(task_id) for task_id in task_ids}


@pytest.fixture(scope="module")
def swarm_stack() -> Iterator[SwarmStack]:
    """One deploy (~25 s) for the live tests below; removed, with its volumes, at the end."""
    assert subprocess.run(["docker", "info"], capture_output=True).returncode == 0, "no engine; ./test.sh starts one"
    was_in_swarm = docker("info", "-f", "{{.Swarm.LocalNodeState}}").strip() == "active"
    stack = SwarmStack()
    try:
        stack.started = stack.demo("up")
        assert stack.started.returncode == 0, stack.started.stdout[-3000:] + stack.started.stderr[-3000:]
        yield stack
    finally:
        stack.http.close()
        subprocess.run(["docker", "stack", "rm", stack.name], capture_output=True, timeout=60)
        wait_for(lambda: not labelled("container", stack.name), 120, "the stack's containers to go", interval=0.5)
        for kind in ("network", "volume"):
            for name in labelled(kind, stack.name):
                docker(kind, "rm", name)
        (swarm.OUTPUT_DIR / f"{stack.name}.yml").unlink(missing_ok=True)
        if not was_in_swarm:
            docker("swarm", "leave", "--force")
    assert not labelled("volume", stack.name)


def test_demo_deploys_a_swarm_stack_that_serves_the_readme_flow(swarm_stack: SwarmStack) -> None:
    stack = swarm_stack
    assert "up (swarm mode)" in stack.started.stdout
    assert ": completed" in stack.started.stdout
    # The seed README's curl flow, through nginx's published port.
    reply = stack.http.post("/api/task", json={"type": "echo", "data": {"hello": "swarm"}})
    assert reply.status_code == 202, reply.text
    done = stack.wait_status(reply.json()["task_id"], {"completed"})
    assert done["result"]
    status = stack.http.get("/api/status")
    assert status.status_code == 200
    assert status.json()["redis"] == "healthy"
    metrics = httpx.get(f"{stack.monitor}/api/metrics", timeout=10)
    assert metrics.status_code == 200
    assert "system_health" in metrics.json()


def test_the_autoscaler_raises_the_services_replicas_for_a_burst_and_lowers_them_back(
    swarm_stack: SwarmStack,
) -> None:
    stack = swarm_stack
    # The stack file asks for docker-compose.yml's 2 workers; idle, the autoscaler lowers that to 1.
    wait_for(lambda: stack.settled(1), 90, "the autoscaler to settle the workers at MIN_WORKERS=1", interval=0.5)
    burst_at = time.monotonic()
    # 1 worker x 4 slots x 0.25 s = 16 tasks/s; 400 tasks would take 25 s alone.
    ids = [stack.submit("sleep", {"ms": 250, "i": i}) for i in range(400)]
    peak = wait_for(lambda: (n := stack.replicas()) > 1 and n, 30, "a scale-out", interval=0.5)
    scaled_out_after = time.monotonic() - burst_at
    results = stack.wait_all_final(ids, timeout=120)
    wait_for(lambda: stack.settled(1), 90, "scale-in back to MIN_WORKERS", interval=0.5)
    print(f"\n[swarm autoscale] {peak} workers after {scaled_out_after:.1f} s, back to 1 after "
          f"{time.monotonic() - burst_at:.1f} s")  # fmt: skip
    outcome = stack.outcomes(ids)
    assert (outcome.completed, outcome.duplicates) == (400, 0)
    assert {t["status"] for t in results.values()} == {"completed"}
    assert {t["attempts"] for t in results.values()} == {1}, "scale-in drains: nothing is retried"
    assert len({t["worker_id"] for t in results.values()}) >= 2
    # The decisions show on the dashboard, applied, with their reasons.
    scaling = httpx.get(f"{stack.monitor}/api/scaling", timeout=5).json()
    assert scaling["mode"] == "on"
    decisions = scaling["decisions"]
    assert any(d["to"] > d["from"] for d in decisions)
    # Swarm picks the tasks that drain; the decision records the count it set.
    scale_in = f"set service {stack.workers} from "
    assert any(d["to"] < d["from"] and any(r.startswith(scale_in) for r in d["reasons"]) for d in decisions)
    assert all(d["applied"] and d["reasons"] for d in decisions)
    print("\n".join(f"  {d['from']} -> {d['to']}: {'; '.join(d['reasons'])}" for d in decisions))


def test_a_rolling_restart_of_the_workers_mid_load_loses_and_repeats_nothing(swarm_stack: SwarmStack) -> None:
    stack = swarm_stack
    ids = [stack.submit("sleep", {"ms": 1000, "i": i}) for i in range(300)]
    wait_for(lambda: stack.outcomes(ids).completed, 30, "the workers to start on the load", interval=0.5)
    before = set(stack.containers("worker-service"))
    restart_at = time.monotonic()
    # Replaces every worker task, one at a time: SIGTERM, the drain, then a new container.
    docker("service", "update", "--force", "--detach", stack.workers)
    assert stack.outcomes(ids).lost, "the restart began after the load was done"

    def replaced() -> bool:
        """No worker container from before left, as many running as asked for, and no update under
        way. Not only UpdateStatus "completed": each of the autoscaler's writes during the restart
        resets it, and swarm leaves it empty when no task is left to update."""
        state = docker("service", "inspect", "-f", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}", stack.workers)
        assert state.strip() != "paused", "swarm paused the rolling restart: a new task failed"
        running = set(stack.containers("worker-service"))
        return state.strip() in ("", "completed") and not running & before and len(running) == stack.replicas()

    wait_for(replaced, 150, "the rolling restart to replace every worker", interval=0.5)
    print(f"\n[swarm rolling restart] {len(before)} workers replaced in {time.monotonic() - restart_at:.1f} s")
    results = stack.wait_all_final(ids, timeout=120)
    outcome = stack.outcomes(ids)
    assert (outcome.completed, outcome.duplicates) == (300, 0), "every task completed, written once"
    assert {t["status"] for t in results.values()} == {"completed"}
    assert {t["attempts"] for t in results.values()} == {1}, "a restarted worker drains: nothing is retried"
    assert not before & set(stack.containers("worker-service")), "every worker was replaced"
    # A worker's id starts with its container's hostname, the short container id.
    hosts = {str(t["worker_id"]).split("-")[0] for t in results.values()}
    assert hosts & before, "tasks ran on the workers the restart replaced"
    assert hosts - before, "and on their replacements"


def test_demo_down_keeps_the_volumes_and_setup_removes_them(swarm_stack: SwarmStack) -> None:
    """Last: it removes the stack the tests above share."""
    stack = swarm_stack
    down = stack.demo("down")
    assert down.returncode == 0, down.stderr
    assert not labelled("service", stack.name)
    assert not labelled("container", stack.name)
    assert not labelled("network", stack.name)
    assert len(labelled("volume", stack.name)) == 2, "down keeps the data volumes"
    # What ./setup.sh runs (the whole script would delete the checkout's own state too).
    removal = 'source scripts/common.sh && source scripts/swarm.sh && swarm_remove "$(swarm_stack)" --volumes'
    cleaned = subprocess.run(
        ["bash", "-c", removal], cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=180
    )
    assert cleaned.returncode == 0, cleaned.stderr
    assert not labelled("volume", stack.name)
