"""Every `./demo.sh scenario NAME` in its short mode, as a subprocess against a real stack: exit 0
means its measured checks held. Scenarios that stop or kill a process restore it before exiting."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from native.plan import ROOT
from tests.harness import Stack, wait_for


def scenario(stack: Stack, name: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "load_test.scenarios", name, "--short"],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(result.stdout, result.stderr[-3000:])
    return result


@pytest.mark.parametrize("name", ["cache", "rate-limit", "worker-crash", "gateway-failover"])
def test_scenario_passes(stack: Stack, name: str) -> None:
    result = scenario(stack, name)
    assert result.returncode == 0
    assert f"PASS: {name}" in result.stdout
    # The dashboard shows the outcome.
    marker = httpx.get(stack.monitor + "/api/metrics", timeout=5).json()["scenario"]
    assert marker["name"] == name
    assert marker["state"] == "passed"
    assert json.loads(stack.redis.get("scenario:current") or "{}")["state"] == "passed"


def test_burst_fails_honestly_when_the_autoscaler_does_not_act(stack: Stack) -> None:
    # The session stack runs with AUTOSCALE=off: a burst cannot show scaling, and must not pass.
    result = scenario(stack, "burst")
    assert result.returncode == 1
    assert "FAIL: burst" in result.stdout
    assert "the autoscaler acts" in result.stdout
    marker = wait_for(lambda: httpx.get(stack.monitor + "/api/metrics", timeout=5).json()["scenario"], 5, "marker")
    assert marker["state"] == "failed"


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
