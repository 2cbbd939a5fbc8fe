"""The Docker Compose stack, run for real by the Docker engine: built from this checkout, scaled
with `--scale`, workers killed with `docker kill`, the autoscaler acting through the socket proxy,
the load-test profile, and `./demo.sh` / `./setup.sh` in Compose mode."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core import keys
from harness.stacks import AUTOSCALED, ComposeStack, free_port, wait_for
from load_test.stack import offline_images
from native.plan import ROOT

#: Starts processes of its own: a full-stack test (see tests/conftest.py).
pytestmark = pytest.mark.stack

APP_SERVICES = ("migrate", "api-gateway", "worker-service", "monitoring", "autoscaler")


def _served_by(stack: ComposeStack, responses: int = 30) -> set[str]:
    """The gateway containers (by hostname) that answered `responses` requests through nginx."""
    return {stack.http.get("/health").headers["x-served-by"].split("-")[0] for _ in range(responses)}


def test_published_ports_listen_on_loopback_only(compose_stack: ComposeStack) -> None:
    for service, port in (("nginx", 80), ("nginx", 8000), ("nginx", 8001), ("monitoring", 8080)):
        host = compose_stack.compose("port", service, str(port)).stdout.strip()
        assert host.startswith("127.0.0.1:"), (service, port, host)
    for service, port in (("redis", 6379), ("postgres", 5432)):
        assert compose_stack.compose("port", service, str(port)).stdout.startswith("127.0.0.1:")


def test_every_python_service_runs_the_one_image(compose_stack: ComposeStack) -> None:
    containers = compose_stack.compose("ps", "-a", "-q", *APP_SERVICES).stdout.split()
    images = {compose_stack.docker.docker("inspect", "-f", "{{.Image}}", c).strip() for c in containers}
    assert len(containers) >= len(APP_SERVICES)
    assert len(images) == 1, images


def test_scale_out_to_3_workers_and_3_gateways_then_back_in_without_losing_a_task(
    compose_stack: ComposeStack,
) -> None:
    stack = compose_stack
    try:
        stack.compose("up", "-d", "--scale", "worker-service=3")
        wait_for(lambda: len(stack.heartbeats()) == 3 and stack.live_workers() == 3, 30, "3 live workers")
        stack.compose("up", "-d", "--scale", "worker-service=3", "--scale", "api-gateway=3")
        gateways = {stack.docker.served_by(n) for n in stack.docker.replicas("api-gateway")}
        assert len(gateways) == 3
        wait_for(lambda: _served_by(stack) == gateways, 10, "nginx to spread requests over 3 gateways")

        ids = [stack.submit("sleep", {"ms": 200, "i": i}) for i in range(150)]
        wait_for(lambda: stack.redis.llen(keys.SINGLE.queue) < 100, 30, "the workers to start on the backlog")
        # Scaling in stops the extra replicas with SIGTERM: a worker drains what it holds first.
        stack.compose("up", "-d", "--scale", "worker-service=1", "--scale", "api-gateway=2", timeout=120)
        results = stack.wait_all_final(ids, timeout=120)
        assert {t["status"] for t in results.values()} == {"completed"}
        assert {t["attempts"] for t in results.values()} == {1}, "a scaled-in worker's task was retried"
        rows = stack.pg("SELECT count(*) AS n, max(writes) AS w FROM tasks WHERE id = ANY($1::uuid[])", ids)
        assert (rows[0]["n"], rows[0]["w"]) == (150, 1)
        wait_for(lambda: len(stack.docker.replicas("worker-service")) == 1, 30, "one worker container left")
    finally:
        stack.compose("up", "-d", "--scale", "worker-service=2", "--scale", "api-gateway=2", "--wait")
        wait_for(lambda: stack.live_workers() == 2, 30, "2 live workers again")


def test_docker_kill_of_a_worker_while_300_tasks_run_loses_and_repeats_nothing(compose_stack: ComposeStack) -> None:
    stack = compose_stack
    ids = [stack.submit("sleep", {"ms": 500, "i": i}) for i in range(300)]

    def busy_worker() -> str | None:
        return next((str(b["worker_id"]) for b in stack.heartbeats() if b["in_flight"] > 0), None)

    victim = stack.docker.owner_of(wait_for(busy_worker, 30, "a worker with tasks in flight"))
    stack.docker.docker("kill", victim)
    try:
        results = stack.wait_all_final(ids, timeout=180)
        assert {t["status"] for t in results.values()} == {"completed"}
        assert max(t["attempts"] for t in results.values()) >= 2, "the killed worker's tasks were rerun"
        rows = stack.pg("SELECT count(*) AS n, max(writes) AS w FROM tasks WHERE id = ANY($1::uuid[])", ids)
        assert (rows[0]["n"], rows[0]["w"]) == (300, 1), "every task has one final row, written once"
        # Docker counts `docker kill` as a manual stop: the container stays down until started.
        assert not stack.docker.is_running(victim)
    finally:
        stack.docker.start(victim)
        wait_for(lambda: stack.live_workers() == 2, 30, "2 live workers again")


def test_a_crashed_worker_container_is_restarted_and_its_task_rerun(compose_stack: ComposeStack) -> None:
    stack = compose_stack
    task_id = stack.submit("sleep", {"ms": 3000})
    running = stack.wait_status(task_id, {"processing"}, timeout=20)
    victim = stack.docker.owner_of(str(running["worker_id"]))
    started = stack.docker.identity(victim)
    stack.docker.kill(victim)  # SIGKILL to the worker process: a crash, not a `docker kill`
    done = stack.wait_status(task_id, {"completed"}, timeout=60)
    assert done["attempts"] == 2
    # `restart: unless-stopped` brings the container back.
    wait_for(lambda: stack.docker.is_running(victim) and stack.docker.identity(victim) != started, 60, "the restart")
    wait_for(lambda: stack.live_workers() == 2, 30, "2 live workers again")


def test_the_load_test_profile_keeps_the_worker_count_and_writes_a_report_you_own(
    compose_stack: ComposeStack,
) -> None:
    stack = compose_stack
    reports = ROOT / "reports"
    before = set(reports.iterdir()) if reports.exists() else set()
    try:
        stack.compose("up", "-d", "--scale", "worker-service=3", "--wait")
        wait_for(lambda: stack.live_workers() == 3, 30, "3 live workers")
        run = stack.compose(
            *("--profile", "load-test", "run", "--rm", "-e", "CONCURRENT_USERS=10", "-e", "DURATION=20", "load-test"),
            timeout=300,
        )
        print(run.stdout[-2000:])
        assert "PASS" in run.stdout
        [folder] = set(reports.iterdir()) - before
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["accepted"] > 0
        assert summary["lost"] == 0
        assert summary["duplicates"] == 0
        for path in (reports, folder, *folder.iterdir()):
            assert path.stat().st_uid == os.getuid(), f"{path} is owned by uid {path.stat().st_uid}"
        # `run` starts nothing else and resets no replica count.
        assert len(stack.docker.replicas("worker-service")) == 3
    finally:
        for path in (set(reports.iterdir()) - before) if reports.exists() else ():
            shutil.rmtree(path)
        stack.compose("up", "-d", "--scale", "worker-service=2", "--wait")


@pytest.fixture(scope="module")
def autoscaled() -> Iterator[ComposeStack]:
    stack = ComposeStack(AUTOSCALED).up()
    try:
        yield stack
    finally:
        stack.down()


def test_the_autoscaler_scales_out_through_the_socket_proxy_and_back_in_draining(autoscaled: ComposeStack) -> None:
    stack = autoscaled
    wait_for(lambda: len(stack.docker.replicas("worker-service")) == 1, 60, "the stack to settle at MIN_WORKERS=1")
    burst_at = time.monotonic()
    # 1 worker x 4 slots x 0.25 s = 16 tasks/s; 400 tasks would take 25 s alone.
    ids = [stack.submit("sleep", {"ms": 250, "i": i}) for i in range(400)]
    peak = wait_for(lambda: (n := len(stack.docker.replicas("worker-service"))) >= 3 and n, 30, "a scale-out")
    scaled_out_after = time.monotonic() - burst_at
    results = stack.wait_all_final(ids, timeout=120)
    wait_for(lambda: len(stack.docker.replicas("worker-service")) == 1, 90, "scale-in back to MIN_WORKERS")
    print(f"\n[compose autoscale] {peak} workers after {scaled_out_after:.1f} s, back to 1 after "
          f"{time.monotonic() - burst_at:.1f} s")  # fmt: skip
    assert {t["status"] for t in results.values()} == {"completed"}
    assert {t["attempts"] for t in results.values()} == {1}, "scale-in drains: nothing is retried"
    assert len({t["worker_id"] for t in results.values()}) >= 3
    # The decisions show on the dashboard, applied, with their reasons.
    scaling = httpx.get(f"{stack.monitor}/api/scaling", timeout=5).json()
    assert scaling["mode"] == "on"
    decisions = scaling["decisions"]
    assert any(d["to"] > d["from"] for d in decisions)
    assert any(d["to"] < d["from"] and any("draining" in r for r in d["reasons"]) for d in decisions)
    assert all(d["applied"] and d["reasons"] for d in decisions)
    # It acted through the Engine API all along: its health check never failed.
    assert stack.compose("ps", "--format", "{{.Health}}", "autoscaler").stdout.strip() == "healthy"
    # Within the pool: it started and stopped the MAX_WORKERS=4 containers, made and removed none.
    assert peak <= 4
    assert len(stack.docker.replicas("worker-service", running_only=False)) == 4


def test_from_inside_the_autoscaler_a_privileged_container_cannot_be_created(autoscaled: ComposeStack) -> None:
    stack = autoscaled
    before = set(stack.docker.docker("ps", "-aq", "--no-trunc").split())
    # Whoever controls the autoscaler holds its DOCKER_HOST: the socket proxy, and only that.
    script = """
import json, os, httpx
proxy = httpx.Client(base_url=os.environ["DOCKER_HOST"].replace("tcp://", "http://"), timeout=10)
attack = {"Image": "serverless-scaling-app:1.0.0", "Cmd": ["cat", "/host/etc/shadow"],
          "HostConfig": {"Privileged": True, "Binds": ["/:/host"]}}
create = proxy.post("/v1.41/containers/create", params={"name": "pwn-worker-service-1"}, json=attack)
print(json.dumps([create.status_code, proxy.get("/v1.41/containers/json").status_code]))
"""
    out = stack.compose("exec", "-T", "autoscaler", "python", "-c", script).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [403, 200]
    assert set(stack.docker.docker("ps", "-aq", "--no-trunc").split()) == before


# -- ./demo.sh and ./setup.sh in Compose mode, in a copy of the checkout ------------------------


def _copy_checkout(into: Path) -> Path:
    """The tracked files (and the prepared wheels) in a folder of their own, as a fresh clone has them."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for wheel in (ROOT / "docker" / "wheels").iterdir():
        shutil.copy2(wheel, into / "docker" / "wheels" / wheel.name)
    return into


def test_demo_sh_down_keeps_the_data_and_setup_sh_leaves_nothing(tmp_path: Path) -> None:
    checkout = _copy_checkout(tmp_path / "checkout")
    project = f"ss-demo-{os.urandom(3).hex()}"
    ports = {name: free_port() for name in ("LB_PORT", "GATEWAY_PORT", "WORKER_PORT", "MONITOR_PORT")}
    # demo.sh writes the secrets; this copy gets its own project name and ports through .env.
    (checkout / ".env").write_text(
        "".join(f"{k}={v}\n" for k, v in ports.items()) + f"COMPOSE_PROJECT_NAME={project}\nAUTOSCALE=off\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    env["OFFLINE_IMAGES"] = "1" if offline_images() else "0"

    def demo(*args: str, script: str = "./demo.sh") -> subprocess.CompletedProcess[str]:
        result = subprocess.run([script, *args], cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{script} {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result

    def ours(kind: str) -> list[str]:
        listing = ["docker", kind, "ls", "-q"] if kind != "container" else ["docker", "ps", "-aq"]
        label = f"label=com.docker.compose.project={project}"
        return subprocess.run([*listing, "--filter", label], capture_output=True, text=True).stdout.split()

    def workers() -> list[str]:
        labels = [f"label=com.docker.compose.project={project}", "label=com.docker.compose.service=worker-service"]
        listing = ["docker", "ps", "-q", *(arg for label in labels for arg in ("--filter", label))]
        return subprocess.run(listing, capture_output=True, text=True).stdout.split()

    lb = f"http://127.0.0.1:{ports['LB_PORT']}"
    try:
        started = demo()  # auto mode: an engine answers, so Compose
        assert "Serverless Scaling is up (docker mode)" in started.stdout
        assert f"http://localhost:{ports['MONITOR_PORT']}" in started.stdout
        task_id = httpx.post(f"{lb}/api/task", json={"type": "echo", "data": {"keep": "me"}}).json()["task_id"]
        wait_for(lambda: httpx.get(f"{lb}/api/task/{task_id}").json()["status"] == "completed", 30, "the task")
        assert "worker-service" in demo("status").stdout
        demo("scale", "3")
        assert len(workers()) == 3
        demo()  # a restart keeps the count the user (or the autoscaler) set
        assert len(workers()) == 3
        assert "worker-service" in demo("logs", "worker-service").stdout

        demo("down")
        assert not ours("container")
        assert ours("volume"), "down keeps the volumes"
        demo("--docker")
        task = httpx.get(f"{lb}/api/task/{task_id}").json()
        assert (task["status"], task["result"]) == ("completed", {"echo": {"keep": "me"}})
    finally:
        demo(script="./setup.sh")
    assert not ours("container")
    assert not ours("network")
    assert not ours("volume")
