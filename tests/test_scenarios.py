"""Every `./demo.sh scenario NAME` in its short mode, as a subprocess against a real stack of
either engine: exit 0 means its measured checks held. Scenarios that stop or kill a replica
restore it before exiting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core import keys
from harness.stacks import BaseStack, ComposeStack, Stack, wait_for
from load_test import stack as stack_module
from load_test.control import ComposeControl
from load_test.stack import nginx_rate_limit
from native.plan import ROOT

SCENARIOS = ["cache", "rate-limit", "worker-crash", "gateway-failover"]


def compose_env(stack: ComposeStack) -> dict[str, str]:
    """What `./demo.sh scenario` exports for a Compose stack, for this test's project."""
    return {
        **stack.env,
        "STACK_ENGINE": "compose",
        "TARGET_URL": stack.lb,
        "MONITOR_URL": stack.monitor,
        "DATABASE_URL": stack.database_url,
        "REDIS_URL": f"redis://:{stack.env['REDIS_PASSWORD']}@127.0.0.1:{stack.redis_port}/0",
    }


def scenario(
    stack: BaseStack, name: str, timeout: float = 150, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "load_test.scenarios", name, "--short"],
        env=env or stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(result.stdout, result.stderr[-3000:])
    return result


def assert_passed(stack: BaseStack, name: str, result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0
    assert f"PASS: {name}" in result.stdout
    # The dashboard shows the outcome.
    marker = httpx.get(stack.monitor + "/api/metrics", timeout=5).json()["scenario"]
    assert marker["name"] == name
    assert marker["state"] == "passed"
    assert json.loads(stack.redis.get(keys.SCENARIO) or "{}")["state"] == "passed"


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.usefixtures("restores_stack")
def test_scenario_passes(stack: Stack, name: str) -> None:
    assert_passed(stack, name, scenario(stack, name))


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_passes_on_compose(compose_stack: ComposeStack, name: str) -> None:
    with compose_stack.restoring():
        before = {service: compose_stack.control.replicas(service) for service in ("api-gateway", "worker-service")}
        assert_passed(compose_stack, name, scenario(compose_stack, name, env=compose_env(compose_stack)))
        # What the scenario stopped or killed runs again, under the same names.
        after = {service: compose_stack.control.replicas(service) for service in before}
        assert after == before


def test_compose_targets_read_the_environment_over_the_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("OFFLINE_IMAGES=1\nSTABLE_WINDOW_SECONDS=7\nMAX_STEP=3\n")
    (tmp_path / "nginx").mkdir()
    (tmp_path / "nginx" / "compose.conf").write_text("limit_req_zone x rate=5r/s;\nlimit_req zone=z burst=6;\n")
    monkeypatch.setattr(stack_module, "ROOT", tmp_path)
    exported = {
        "STACK_ENGINE": "compose",
        "COMPOSE_PROJECT_NAME": "ss-elsewhere",
        "TARGET_URL": "http://localhost:1",
        "MONITOR_URL": "http://localhost:2",
        "DATABASE_URL": "postgresql://x",
        "REDIS_URL": "redis://:pw@127.0.0.1:3/0",
        "MAX_STEP": "4",
        "RATE_LIMIT_RPS": "99",
    }
    for name, value in exported.items():
        monkeypatch.setenv(name, value)
    where = stack_module.targets()
    assert (where.engine, where.redis_url, where.native) == ("compose", "redis://:pw@127.0.0.1:3/0", None)
    assert (where.settings["STABLE_WINDOW_SECONDS"], where.settings["MAX_STEP"]) == ("7", "4")
    # Compose's nginx has its limit from its rendered file, whatever RATE_LIMIT_RPS says.
    assert where.rate_limit == (5, 6)
    control = where.control()
    assert isinstance(control, ComposeControl)
    assert (control.project, control.project_dir) == ("ss-elsewhere", tmp_path)
    assert control.files == [tmp_path / "docker-compose.yml", tmp_path / "docker-compose.offline.yml"]
    monkeypatch.delenv("REDIS_URL")
    with pytest.raises(SystemExit, match="REDIS_URL"):
        stack_module.targets()


def test_nginx_rate_limit_reads_rate_and_burst(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "limit_req_zone $binary_remote_addr zone=per_client:10m rate=7r/s;\n"
        "location /api/ { limit_req zone=per_client burst=9 nodelay; }\n"
    )
    assert nginx_rate_limit(conf) == (7, 9)
    conf.write_text("location /api/ { proxy_pass http://$api_gateway; }\n")
    assert nginx_rate_limit(conf) == (0, 0)


def test_burst_fails_honestly_when_the_autoscaler_does_not_act(stack: Stack) -> None:
    # The session stack runs with AUTOSCALE=off: a burst cannot show scaling, and must not pass.
    result = scenario(stack, "burst")
    assert result.returncode == 1
    assert "FAIL: burst" in result.stdout
    assert "the autoscaler acts" in result.stdout
    marker = wait_for(lambda: httpx.get(stack.monitor + "/api/metrics", timeout=5).json()["scenario"], 5, "marker")
    assert marker["state"] == "failed"


@pytest.mark.stack  # starts its own stack
def test_burst_scales_out_drains_and_scales_in() -> None:
    # Its own stack: the autoscaler acting, from one worker, with a short stable window so the
    # scale-in comes within seconds of the queue draining.
    autoscaled = Stack(
        {"AUTOSCALE": "on", "MIN_WORKERS": "1", "WORKERS": "1", "STABLE_WINDOW_SECONDS": "5", "RATE_LIMIT_RPS": "0"}
    ).up()
    try:
        result = scenario(autoscaled, "burst", timeout=180)
        assert result.returncode == 0
        assert "Scale-out 1 -> " in result.stdout
        assert "PASS: burst" in result.stdout
    finally:
        autoscaled.down()
