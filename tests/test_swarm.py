"""Docker Swarm: the stack file rendered from docker-compose.yml (native/swarm.py), and one real
`./demo.sh --swarm` deploy on this machine's engine, driven through its published ports."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]
import pytest

from harness.stacks import isolated_env, wait_for
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


# -- one real deploy -----------------------------------------------------------------------------


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout


def labelled(kind: str, stack: str) -> list[str]:
    listing = {"service": ["service", "ls"], "container": ["ps", "-a"], "volume": ["volume", "ls"]}[kind]
    return docker(*listing, "-q", "--filter", f"label=com.docker.stack.namespace={stack}").split()


def test_demo_deploys_serves_and_removes_a_swarm_stack() -> None:
    assert subprocess.run(["docker", "info"], capture_output=True).returncode == 0, "no engine; ./test.sh starts one"
    was_in_swarm = docker("info", "-f", "{{.Swarm.LocalNodeState}}").strip() == "active"
    stack = f"ss-swarm-{secrets.token_hex(4)}"
    env = isolated_env({"SWARM_STACK": stack, "SWARM_DEADLINE": "150"})
    env.pop("COMPOSE_FILE", None)

    def demo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ROOT / "demo.sh"), "--swarm", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )

    try:
        up = demo("up")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert "up (swarm mode)" in up.stdout
        assert ": completed" in up.stdout
        lb = f"http://127.0.0.1:{env['LB_PORT']}"
        with httpx.Client(base_url=lb, timeout=10) as http:
            # The seed README's curl flow, through nginx's published port.
            reply = http.post("/api/task", json={"type": "echo", "data": {"hello": "swarm"}})
            assert reply.status_code == 202, reply.text
            task_id = reply.json()["task_id"]
            done = wait_for(
                lambda: (body := http.get(f"/api/task/{task_id}").json())["status"] == "completed" and body,
                30,
                "the task to complete",
                interval=0.2,
            )
            assert done["result"]
            status = http.get("/api/status")
            assert status.status_code == 200
            assert status.json()["redis"] == "healthy"
        metrics = httpx.get(f"http://127.0.0.1:{env['MONITOR_PORT']}/api/metrics", timeout=10)
        assert metrics.status_code == 200
        assert "system_health" in metrics.json()
        replicas = docker("service", "ls", "--filter", f"name={stack}_worker-service", "--format", "{{.Replicas}}")
        assert replicas.strip() == "2/2"

        down = demo("down")
        assert down.returncode == 0, down.stderr
        assert not labelled("service", stack)
        assert not labelled("container", stack)
        assert len(labelled("volume", stack)) == 2, "down keeps the data volumes"
        # What ./setup.sh runs (the whole script would delete the checkout's own state too).
        removal = 'source scripts/common.sh && source scripts/swarm.sh && swarm_remove "$(swarm_stack)" --volumes'
        cleaned = subprocess.run(
            ["bash", "-c", removal], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
        )
        assert cleaned.returncode == 0, cleaned.stderr
        assert not labelled("volume", stack)
    finally:
        subprocess.run(["docker", "stack", "rm", stack], capture_output=True, timeout=60)
        wait_for(lambda: not labelled("container", stack), 120, "the stack's containers to go", interval=0.5)
        for volume in labelled("volume", stack):
            docker("volume", "rm", volume)
        (swarm.OUTPUT_DIR / f"{stack}.yml").unlink(missing_ok=True)
        if not was_in_swarm:
            docker("swarm", "leave", "--force")
    assert not labelled("volume", stack)
