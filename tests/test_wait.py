"""`GET /api/task/{id}?wait=S` through nginx on the native stack: a wait outlasting the task answers
final, one on a task nobody runs answers its state at the deadline, and a wait rides out a Redis
restart. The route's cases in-process: tests/inprocess/test_wait.py."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_gateway.waiters import WAIT_MAX_SECONDS
from harness.stacks import Stack, wait_for

NGINX = Path(__file__).resolve().parent.parent / "nginx"


def _waited(stack: Stack, task_id: str, wait: float) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.get(f"{stack.lb}/api/task/{task_id}", params={"wait": wait}, timeout=wait + 15)
    return response, time.monotonic() - started


def _waiting(stack: Stack) -> bool:
    """Whether the gateway nginx sends this /metrics to has a request waiting (round robin: a few
    polls reach each gateway)."""
    text = httpx.get(f"{stack.lb}/metrics", timeout=5).text
    found = re.search(r"^ss_result_waiters ([0-9.e+]+)$", text, re.MULTILINE)
    assert found, "the gateway's /metrics has no ss_result_waiters"
    return float(found.group(1)) >= 1


def test_a_wait_through_nginx_answers_when_the_task_is_final(stack: Stack) -> None:
    task_id = stack.submit("sleep", {"ms": 2000})
    response, took = _waited(stack, task_id, 5)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "completed"
    assert body["result"] == {"slept_ms": 2000}
    assert 1.5 < took < 5  # woken by the task's end, not by the deadline


def test_a_wait_on_a_task_nobody_runs_answers_its_state_at_the_deadline(
    stack: Stack, workers_paused: list[str]
) -> None:
    task_id = stack.submit("echo")
    response, took = _waited(stack, task_id, 2)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "queued"
    assert took >= 2


def test_bad_waits_are_422_through_nginx(stack: Stack) -> None:
    task_id = stack.submit("echo")
    for wait in ("0", "31", "soon"):
        response = httpx.get(f"{stack.lb}/api/task/{task_id}", params={"wait": wait}, timeout=10)
        assert response.status_code == 422, response.text
        assert [e["loc"] for e in response.json()["detail"]] == [["query", "wait"]]


def test_a_wait_rides_out_a_redis_restart(stack: Stack, workers_paused: list[str]) -> None:
    task_id = stack.submit("sleep", {"ms": 100})
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_waited, stack, task_id, 25)
        wait_for(lambda: _waiting(stack), 10, "the request to wait on a gateway")
        stack.supervisor.stop("redis")
        stack.supervisor.start("redis")
        # The queued task survived the restart (appendonly); a worker runs it now.
        for name in workers_paused:
            stack.supervisor.start(name)
        response, took = waiting.result(timeout=40)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    assert took < 25  # answered when it finished, not at the deadline


@pytest.mark.parametrize("config", ["nginx.conf.j2", "compose.conf"])
def test_nginx_lets_the_longest_wait_finish(config: str) -> None:
    """Both modes' nginx (native renders the template, Compose reads compose.conf): a proxy read
    timeout under the longest wait would turn it into a 504."""
    text = (NGINX / config).read_text()
    timeouts = [int(t) for t in re.findall(r"^\s*proxy_read_timeout (\d+)s;", text, re.MULTILINE)]
    assert timeouts
    assert min(timeouts) >= WAIT_MAX_SECONDS + 10
