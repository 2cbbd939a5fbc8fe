"""Starts after a differently configured run, on one native state dir (Redis keeps what each run
left behind): every start succeeds, and a fresh autoscaler scales in no sooner than its own
stable window after it started, whatever the earlier run left in Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core import keys
from harness.stacks import Stack, wait_for
from native.supervisor import Supervisor

#: Starts processes of its own: a full-stack test (see tests/conftest.py).
pytestmark = pytest.mark.stack

#: Short, so that scale-in comes quickly: during a start, and at once if an earlier run's window counted.
WINDOW = 3.0
#: A plain `./demo.sh`: two workers, the autoscaler acting (MIN_WORKERS=1, so it wants one at rest).
DEFAULT = {"WORKERS": "2", "MIN_WORKERS": "1", "AUTOSCALE": "on", "STABLE_WINDOW_SECONDS": str(WINDOW)}
#: The differently configured run before it.
OTHER = {"WORKERS": "1", "AUTOSCALE": "off", "STABLE_WINDOW_SECONDS": str(WINDOW)}
ROUNDS = 5


@pytest.fixture
def restarted() -> Iterator[Stack]:
    """A native stack not yet started: the test starts and stops it itself, on one state dir."""
    stack = Stack(DEFAULT)
    try:
        yield stack
    finally:
        stack.down()


def _autoscaler_start(stack: Stack) -> float:
    """When supervisord started the autoscaler (epoch s, whole seconds: never later than it was)."""
    # A client of its own: the stack's keeps a connection to the supervisord of an earlier start.
    supervisor = Supervisor(stack.config.supervisor_socket)
    try:
        return float(supervisor.process_info(stack.plan.of("autoscaler")[0].name)["start"])
    finally:
        supervisor.close()


def _first_tick(stack: Stack) -> Any:
    port = stack.plan.of("autoscaler")[0].port
    return httpx.get(f"http://127.0.0.1:{port}/status", timeout=2).json()["last"]


def _scale_ins_since(stack: Stack, t: float) -> list[dict[str, Any]]:
    decisions = map(json.loads, stack.redis.lrange(keys.SCALING_DECISIONS, 0, -1))
    return [d for d in decisions if d["at"] >= t and d["to"] < d["from"]]


def test_every_start_after_a_differently_configured_run_succeeds(restarted: Stack) -> None:
    base_env = dict(restarted.env)
    ups: list[float] = []
    for round_no in range(1, ROUNDS + 1):
        for name, config in (("WORKERS=1 AUTOSCALE=off", OTHER), ("default", DEFAULT)):
            restarted.env = {**base_env, **config}
            began = time.monotonic()
            result = restarted.native("up", check=False)
            ups.append(time.monotonic() - began)
            assert result.returncode == 0, f"round {round_no}, {name} start failed:\n{result.stdout}\n{result.stderr}"
            if config is DEFAULT:
                started = _autoscaler_start(restarted)
                # After its first tick it would have acted on what an earlier run left open.
                wait_for(lambda: _first_tick(restarted), 10, "the autoscaler's first tick")
                early = [d for d in _scale_ins_since(restarted, started) if d["at"] - started < WINDOW]
                assert not early, f"round {round_no}: scaled in before its own stable window: {early}"
            restarted.native("down")
    print(f"\n[restarts] {len(ups)} starts succeeded, {min(ups):.1f}-{max(ups):.1f} s each")
