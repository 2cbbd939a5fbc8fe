"""Redis cannot be driven out of memory: a byte budget refuses new tasks (503 + Retry-After) well
before `maxmemory`, a Redis at maxmemory answers 503 too, every accepted task still finishes, and
the dead-letter list is capped.

A stack of its own with a small maxmemory, so the budget is reached in a few hundred 64 KiB tasks.
Prints its figures (bytes offered and accepted, 503s, Redis's peak memory, maxmemory, tasks lost).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from core import keys
from core.models import TaskRecord, TaskStatus
from core.queue import MEMORY_SHARE_FOR_INTAKE
from core.timeutil import now
from harness.stacks import Stack, wait_for

#: Starts processes of its own: a full-stack test (see tests/conftest.py).
pytestmark = pytest.mark.stack

MAXMEMORY = 48 * 1024 * 1024
#: data of one task: the body stays under the gateway's 64 KiB limit
PAYLOAD = "x" * (64 * 1024 - 100)


@pytest.fixture(scope="module")
def small_redis() -> Iterator[Stack]:
    running = Stack(extra_env={"REDIS_MAXMEMORY": str(MAXMEMORY), "WORKERS": "1", "GATEWAYS": "1"}).up()
    try:
        yield running
    finally:
        running.down()


def _memory(stack: Stack) -> dict[str, int]:
    info = stack.redis.info("memory")
    return {"used": int(info["used_memory"]), "peak": int(info["used_memory_peak"]), "max": int(info["maxmemory"])}


def test_native_redis_runs_with_maxmemory_noeviction_and_the_aof_alone(small_redis: Stack) -> None:
    config = small_redis.redis.config_get("maxmemory*")
    assert config["maxmemory"] == str(MAXMEMORY)
    assert config["maxmemory-policy"] == "noeviction"
    # No RDB snapshots (docker-compose.yml says why): nothing forks the dataset every minute.
    assert small_redis.redis.config_get("appendonly") == {"appendonly": "yes"}
    assert small_redis.redis.config_get("save") == {"save": ""}


def test_a_full_budget_answers_503_and_every_accepted_task_completes(small_redis: Stack) -> None:
    stack = small_redis
    workers = stack.worker_programs()
    for name in workers:
        stack.supervisor.stop(name)
    body = {"type": "echo", "data": {"blob": PAYLOAD}}
    size = len(httpx.Request("POST", "/", json=body).content)
    accepted: list[str] = []
    refused: list[httpx.Response] = []

    def offer(_: int) -> httpx.Response:
        with httpx.Client(base_url=stack.lb, timeout=10) as client:
            return client.post("/api/task", json=body)

    try:
        offered = 0
        with ThreadPoolExecutor(8) as pool:
            # Rounds of 64 until a whole round is refused: the budget holds about 200 such tasks.
            while not refused or len(refused) < 64:
                responses = list(pool.map(offer, range(64)))
                offered += len(responses)
                assert {r.status_code for r in responses} <= {202, 503}, [r.text for r in responses][:3]
                accepted += [r.json()["task_id"] for r in responses if r.status_code == 202]
                round_refused = [r for r in responses if r.status_code == 503]
                refused += round_refused
                if len(round_refused) == len(responses):
                    break
                assert offered < 2000, "the byte budget never refused a task"
        assert all(r.headers.get("retry-after") for r in refused)
        assert all("QUEUE_MAX_BYTES" in r.json()["detail"] for r in refused), refused[0].text
        assert stack.redis.ping()
        full = _memory(stack)
        assert full["used"] < MAXMEMORY * MEMORY_SHARE_FOR_INTAKE + 1024 * 1024, full  # + what is not a task
        assert stack.redis.llen(keys.SINGLE.queue) == len(accepted)

        # Past maxmemory itself (a lower limit for a moment), Redis refuses writes: 503, never 500.
        stack.redis.config_set("maxmemory", full["used"] // 2)
        try:
            oom = stack.http.post("/api/task", json={"type": "echo", "data": {}})
            assert oom.status_code == 503, oom.text
            assert oom.headers.get("retry-after")
            assert oom.json()["error"] == "redis_full"
        finally:
            stack.redis.config_set("maxmemory", MAXMEMORY)
    finally:
        for name in workers:
            stack.supervisor.start(name)

    # Every accepted task finishes (its echo doubles its bytes) without Redis passing its limit.
    # Counted in Postgres: polling Redis for all the records would itself hold them all at once in
    # a reply buffer, which Redis counts as used memory.
    def completed() -> int:
        query = "SELECT count(*) AS n FROM tasks WHERE id = ANY($1::uuid[]) AND status = 'completed'"
        return int(stack.pg(query, accepted)[0]["n"])

    wait_for(lambda: completed() == len(accepted), 120, f"{len(accepted)} accepted tasks to complete")
    lost = len(accepted) - completed()
    assert stack.task(accepted[-1])["result"] == {"echo": {"blob": PAYLOAD}}
    after = _memory(stack)
    print(
        f"\nmemory bounds: offered {offered} x {size} B = {offered * size:,} B; accepted {len(accepted)}"
        f" = {len(accepted) * size:,} B; 503s {len(refused)}; Redis used at the budget {full['used']:,} B,"
        f" peak {after['peak']:,} B of maxmemory {MAXMEMORY:,} B; lost {lost}"
    )
    assert lost == 0
    assert after["peak"] < MAXMEMORY


def test_the_dead_letter_list_keeps_its_newest(small_redis: Stack) -> None:
    stack = small_redis
    stack.redis.lpush(keys.SINGLE.dead, *[f"old-{i}" for i in range(keys.DEAD_KEPT)])

    async def fail_one() -> str:
        async with stack.queue() as queue:
            task = TaskRecord(
                id=str(uuid.uuid4()), type="fail", status=TaskStatus.FAILED, created_at=now(), completed_at=now()
            )
            await queue.finish(task)
            return task.id

    newest = asyncio.run(fail_one())
    assert stack.redis.llen(keys.SINGLE.dead) == keys.DEAD_KEPT
    assert stack.redis.lindex(keys.SINGLE.dead, 0) == newest
    assert stack.redis.lindex(keys.SINGLE.dead, -1) == f"old-{1}"  # the oldest one went
    stack.redis.delete(keys.SINGLE.dead)
