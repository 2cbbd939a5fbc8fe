"""Cancel, delay and priorities through the gateway and worker apps, on the real Redis and Postgres."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from core import keys
from tests.inprocess.apps import MARKS, eventually, final, persisted, serving, task
from tests.inprocess.servers import Servers

pytestmark = MARKS


async def post(gateway: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await gateway.post("/api/task", json=body)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


async def row(servers: Servers, task_id: str) -> dict[str, Any] | None:
    rows = await servers.pg("SELECT status, priority, run_at FROM tasks WHERE id = $1::uuid", task_id)
    return dict(rows[0]) if rows else None


# -- bad input: 422 naming the field, nothing queued -----------------------------------------------


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"priority": "urgent"}, "priority"),
        ({"priority": 1}, "priority"),
        ({"delay_seconds": "abc"}, "delay_seconds"),
        ({"delay_seconds": 0}, "delay_seconds"),
        ({"delay_seconds": -5}, "delay_seconds"),
        ({"delay_seconds": 10**9}, "delay_seconds"),
        ({"run_at": "tomorrow"}, "run_at"),
        ({"run_at": "2030-01-01T00:00:00"}, "run_at"),
        ({"run_at": "2999-01-01T00:00:00Z"}, "run_at"),
        ({"run_at": 12}, "run_at"),
    ],
)
async def test_bad_schedule_or_priority_is_422_naming_the_field(
    gateway: httpx.AsyncClient, servers: Servers, extra: dict[str, Any], field: str
) -> None:
    for path, body in (
        ("/api/task", {"type": "echo", **extra}),
        ("/api/tasks", {"tasks": [{"type": "echo"}, {"type": "echo", **extra}]}),
    ):
        response = await gateway.post(path, json=body)
        assert response.status_code == 422, response.text
        locs = [error["loc"] for error in response.json()["detail"]]
        assert any(loc[-1] == field for loc in locs), locs
    assert servers.redis.llen(keys.SINGLE.queue) == 0
    assert servers.redis.zcard(keys.SINGLE.scheduled) == 0


async def test_delay_and_run_at_together_are_422(gateway: httpx.AsyncClient) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
    response = await gateway.post("/api/task", json={"type": "echo", "delay_seconds": 5, "run_at": soon})
    assert response.status_code == 422
    assert "not both" in response.text


@pytest.mark.parametrize("path", ["/api/task/{id}", "/api/task/{id}?running=true", "/api/task/{id}?running=maybe"])
async def test_cancel_of_unknown_or_malformed_ids(gateway: httpx.AsyncClient, path: str) -> None:
    for task_id in ("nope", "00000000-0000-4000-8000-000000000000"):
        response = await gateway.delete(path.format(id=task_id))
        assert response.status_code in (404, 422), response.text
        assert response.headers["content-type"] == "application/json"
        if "maybe" in path:
            assert response.status_code == 422


# -- cancel ---------------------------------------------------------------------------------------


async def test_a_queued_task_is_cancelled_at_once_and_never_runs(servers: Servers, gateway: httpx.AsyncClient) -> None:
    task_id = (await post(gateway, {"type": "echo", "data": {"n": 1}}))["task_id"]
    response = await gateway.delete(f"/api/task/{task_id}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    # It waits for a worker to commit it, but not as work: the queue is empty.
    assert (await gateway.get("/api/status")).json()["metrics"]["queue_length"] == 0
    assert servers.redis.lrange(keys.SINGLE.cancelled, 0, -1) == [task_id]
    assert (await task(gateway, task_id))["status"] == "cancelled"
    assert int(servers.redis.hget(keys.SINGLE.stats, keys.STAT_CANCELLED) or 0) == 1
    # Cancelling again returns it; the counter does not move.
    again = await gateway.delete(f"/api/task/{task_id}")
    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"
    assert int(servers.redis.hget(keys.SINGLE.stats, keys.STAT_CANCELLED) or 0) == 1
    # A worker commits it to Postgres as cancelled, never running it, and gives it the result TTL.
    async with serving(servers, "worker-service"):
        found = await persisted(servers, gateway, task_id)
        assert found["result"] is None
        assert found["started_at"] is None
        assert (await row(servers, task_id) or {})["status"] == "cancelled"
        await eventually(lambda: _has_ttl(servers, task_id), 5, "the cancelled record's TTL")
    assert servers.redis.llen(keys.SINGLE.cancelled) == 0
    assert int(servers.redis.hget(keys.SINGLE.stats, keys.STAT_COMPLETED) or 0) == 0


async def _has_ttl(servers: Servers, task_id: str) -> bool:
    return int(servers.redis.ttl(keys.SINGLE.task(task_id))) > 0


async def test_a_completed_task_cannot_be_cancelled(servers: Servers, gateway: httpx.AsyncClient) -> None:
    task_id = (await post(gateway, {"type": "echo"}))["task_id"]
    async with serving(servers, "worker-service"):
        await final(gateway, task_id)
    response = await gateway.delete(f"/api/task/{task_id}")
    assert response.status_code == 409
    assert "completed" in response.json()["detail"]


async def test_a_running_task_is_409_unless_asked_and_then_stops(servers: Servers, gateway: httpx.AsyncClient) -> None:
    task_id = (await post(gateway, {"type": "sleep", "data": {"ms": 20_000}}))["task_id"]
    async with serving(servers, "worker-service"):

        async def processing() -> bool:
            return (await task(gateway, task_id))["status"] == "processing"

        await eventually(processing, 10, "the task to run")
        refused = await gateway.delete(f"/api/task/{task_id}")
        assert refused.status_code == 409
        assert "running=true" in refused.json()["detail"]
        asked = time.monotonic()
        response = await gateway.delete(f"/api/task/{task_id}?running=true")
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "processing"
        done = await final(gateway, task_id, timeout=10)
        assert time.monotonic() - asked < 5  # far sooner than the 20 s sleep
        assert done["status"] == "cancelled"
        assert done["error"] == "cancelled by a client while it ran"
        assert (await persisted(servers, gateway, task_id))["status"] == "cancelled"
    assert int(servers.redis.hget(keys.SINGLE.stats, keys.STAT_CANCELLED) or 0) == 1
    assert servers.redis.zcard(keys.SINGLE.delayed) == 0  # not parked for a retry


async def test_a_cancel_request_reaches_a_claimed_task_before_it_starts(
    servers: Servers, gateway: httpx.AsyncClient
) -> None:
    """A claim reads a standing request: the task never runs (a worker that missed the message,
    or a task requeued after its worker died)."""
    task_id = (await post(gateway, {"type": "sleep", "data": {"ms": 20_000}}))["task_id"]
    servers.redis.hset(keys.SINGLE.cancel_requests, task_id, int((time.time() + 60) * 1000))
    async with serving(servers, "worker-service"):
        done = await final(gateway, task_id, timeout=10)
    assert done["status"] == "cancelled"
    assert done["started_at"] is None


async def test_a_scheduled_and_a_retrying_task_can_be_cancelled(servers: Servers, gateway: httpx.AsyncClient) -> None:
    scheduled = await post(gateway, {"type": "echo", "delay_seconds": 60})
    assert scheduled["status"] == "scheduled"
    assert (await gateway.delete(f"/api/task/{scheduled['task_id']}")).json()["status"] == "cancelled"
    assert servers.redis.zcard(keys.SINGLE.scheduled) == 0
    failing = (await post(gateway, {"type": "fail"}))["task_id"]
    async with serving(servers, "worker-service", RETRY_BASE_SECONDS="30", RETRY_CAP_SECONDS="30"):

        async def retrying() -> bool:
            return (await task(gateway, failing))["status"] == "retrying"

        await eventually(retrying, 10, "the failing task to wait for a retry")
        response = await gateway.delete(f"/api/task/{failing}")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        await persisted(servers, gateway, failing)
    assert servers.redis.zcard(keys.SINGLE.delayed) == 0
    assert servers.redis.hget(keys.SINGLE.attempts, failing) is None


# -- delay ----------------------------------------------------------------------------------------


async def test_a_delayed_task_runs_no_earlier_than_its_time(servers: Servers, gateway: httpx.AsyncClient) -> None:
    async with serving(servers, "worker-service"):
        accepted = await post(gateway, {"type": "echo", "data": {"n": 1}, "delay_seconds": 1.5})
        assert accepted["status"] == "scheduled"
        assert accepted["queue_position"] == 0
        stored = await task(gateway, accepted["task_id"])
        assert stored["status"] == "scheduled"
        due = datetime.fromisoformat(stored["run_at"])
        assert timedelta(seconds=1.4) < due - datetime.fromisoformat(stored["created_at"]) < timedelta(seconds=1.6)
        done = await final(gateway, accepted["task_id"], timeout=10)
        started = datetime.fromisoformat(done["started_at"])
        assert started >= due
        assert started - due < timedelta(seconds=1)
        assert (await persisted(servers, gateway, accepted["task_id"]))["status"] == "completed"
        assert (await row(servers, accepted["task_id"]) or {}).get("run_at") == due


async def test_run_at_in_the_past_runs_now_and_bulk_takes_a_schedule_per_task(
    servers: Servers, gateway: httpx.AsyncClient
) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    accepted = await post(gateway, {"type": "echo", "run_at": past})
    assert accepted["status"] == "queued"
    soon = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
    response = await gateway.post(
        "/api/tasks", json={"tasks": [{"type": "echo"}, {"type": "echo", "run_at": soon}, {"type": "echo"}]}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert "1 scheduled" in body["message"]
    statuses = [(await task(gateway, i))["status"] for i in body["task_ids"]]
    assert statuses == ["queued", "scheduled", "queued"]
    assert servers.redis.zcard(keys.SINGLE.scheduled) == 1
    assert servers.redis.llen(keys.SINGLE.queue) == 3


# -- priorities -----------------------------------------------------------------------------------


async def test_workers_take_high_then_normal_then_low(servers: Servers, gateway: httpx.AsyncClient) -> None:
    order = ["low", "normal", "high", "low", "high", "normal"]
    ids = [
        (await post(gateway, {"type": "echo", "data": {"i": i}, "priority": priority}))["task_id"]
        for i, priority in enumerate(order)
    ]
    # No worker blocks on the normal list, so no wake-up entry (keys.WAKE) lengthens it.
    lengths = [servers.redis.llen(name) for name in keys.SINGLE.queues]
    assert lengths == [2, 2, 2]
    status = await gateway.get("/api/status")
    assert status.json()["metrics"]["queue_length"] == 6
    async with serving(servers, "worker-service", WORKER_CONCURRENCY="1"):
        done = [await final(gateway, task_id) for task_id in ids]
    started = sorted(zip((d["started_at"] for d in done), order, strict=True))
    assert [priority for _, priority in started] == ["high", "high", "normal", "normal", "low", "low"]
    rows = [await row(servers, task_id) for task_id in ids]
    assert [r["priority"] if r else None for r in rows] == order


async def test_a_high_task_wakes_a_worker_blocked_on_an_empty_queue(
    servers: Servers, gateway: httpx.AsyncClient
) -> None:
    async with serving(servers, "worker-service"):
        await asyncio.sleep(0.3)  # let the worker reach its blocking claim on the empty normal list
        started = time.monotonic()
        task_id = (await post(gateway, {"type": "echo", "priority": "high"}))["task_id"]
        await final(gateway, task_id, timeout=5)
        assert time.monotonic() - started < 0.9  # woken, not found by the claim loop's 1 s timeout
    assert servers.redis.llen(keys.SINGLE.queue) == 0  # the wake-up entry is gone


async def test_low_priority_work_ages_into_the_normal_list(servers: Servers, gateway: httpx.AsyncClient) -> None:
    """One slot, busy for 2 s with the first normal task: meanwhile the low task waits past the
    aging time and joins the head of the normal list, so it runs before the normal ones behind it."""
    busy = (await post(gateway, {"type": "sleep", "data": {"ms": 2000}}))["task_id"]
    low = (await post(gateway, {"type": "echo", "priority": "low"}))["task_id"]
    normal = [(await post(gateway, {"type": "echo"}))["task_id"] for _ in range(3)]
    assert servers.redis.zscore(keys.SINGLE.low_since, low) is not None
    async with serving(servers, "worker-service", WORKER_CONCURRENCY="1", PRIORITY_AGING_SECONDS="1"):
        done = [await final(gateway, i) for i in [busy, low, *normal]]
    order = [d["id"] for d in sorted(done, key=lambda d: d["started_at"])]
    assert order == [busy, low, *normal]
    assert servers.redis.zcard(keys.SINGLE.low_since) == 0
