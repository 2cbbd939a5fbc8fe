"""`GET /api/task/{id}?wait=S` in-process: answers once the task is final (a pub/sub message, not a
polling loop), else its state after S seconds; bounded per gateway; its subscriptions cleaned up;
waiting through a lost pub/sub connection."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import uuid
from typing import Any

import httpx
import pytest

from core import keys
from core.models import FINAL_STATUSES
from tests.inprocess.apps import MARKS, eventually, serving, submit, task
from tests.inprocess.servers import Servers

pytestmark = MARKS

#: Generous bounds for "at once" and "promptly": a correctness check, not a timing figure (the
#: benchmark measures that).
PROMPT = 3.0


async def waiters(gateway: httpx.AsyncClient) -> int:
    """Requests waiting on the gateway now: its ss_result_waiters gauge."""
    text = (await gateway.get("/metrics")).text
    found = re.search(r"^ss_result_waiters ([0-9.e+]+)$", text, re.MULTILINE)
    assert found, "the gateway's /metrics has no ss_result_waiters"
    return int(float(found.group(1)))


async def until_waiting(gateway: httpx.AsyncClient, servers: Servers, count: int = 1) -> None:
    """Until `count` requests wait on the gateway, which is subscribed to the done channel while
    any does (and only then)."""

    async def reached() -> bool:
        subscribed = int(dict(servers.redis.pubsub_numsub(keys.DONE_CHANNEL))[keys.DONE_CHANNEL]) >= 1
        return subscribed == (count > 0) and await waiters(gateway) == count

    await eventually(reached, 10, f"{count} waiting request(s)")


async def timed_get(client: httpx.AsyncClient, task_id: str, wait: float) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.get(f"/api/task/{task_id}", params={"wait": wait}, timeout=wait + 10)
    return response, time.monotonic() - started


def finish_by_hand(servers: Servers, record: dict[str, Any], status: str = "completed") -> None:
    """Write a final record and announce it as a worker's final write does (one script there)."""
    final = {**record, "status": status, "result": {"by": "hand"}}
    servers.redis.set(keys.SINGLE.task(record["id"]), json.dumps(final))
    servers.redis.publish(keys.DONE_CHANNEL, record["id"])


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("wait", ["0", "-1", "31", "30.0001", "abc", "nan", "inf", ""])
async def test_a_wait_out_of_range_is_a_422_naming_wait(gateway: httpx.AsyncClient, wait: str) -> None:
    task_id = await submit(gateway)
    response = await gateway.get(f"/api/task/{task_id}?wait={wait}")
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert [error["loc"] for error in body["detail"]] == [["query", "wait"]]


async def test_the_schema_documents_wait(gateway: httpx.AsyncClient) -> None:
    operation = (await gateway.get("/openapi.json")).json()["paths"]["/api/task/{task_id}"]["get"]
    (wait,) = [p for p in operation["parameters"] if p["name"] == "wait"]
    assert wait["in"] == "query"
    assert not wait.get("required", False)
    number = next(s for s in wait["schema"]["anyOf"] if s.get("type") == "number")
    assert number["exclusiveMinimum"] == 0
    assert number["maximum"] == 30


# -- answers ------------------------------------------------------------------------------------


async def test_an_unknown_task_is_a_404_at_once(gateway: httpx.AsyncClient, servers: Servers) -> None:
    response, took = await timed_get(gateway, str(uuid.uuid4()), 30)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert took < PROMPT
    not_an_id = await gateway.get("/api/task/not-an-id", params={"wait": 30})
    assert not_an_id.status_code == 404
    assert await waiters(gateway) == 0


async def test_a_final_task_answers_at_once(
    gateway: httpx.AsyncClient, worker: httpx.AsyncClient, servers: Servers
) -> None:
    task_id = await submit(gateway, "echo", {"n": 1})

    async def done() -> bool:
        return (await task(gateway, task_id))["status"] in FINAL_STATUSES

    await eventually(done, 20, "the echo task to finish")
    response, took = await timed_get(gateway, task_id, 30)
    assert response.status_code == 200
    assert response.json()["status"] == "completed"
    assert response.json()["result"]["echo"] == {"n": 1}
    assert took < PROMPT
    assert await waiters(gateway) == 0


async def test_a_task_only_in_postgres_is_final_and_answers_at_once(
    gateway: httpx.AsyncClient, worker: httpx.AsyncClient, servers: Servers
) -> None:
    task_id = await submit(gateway, "echo", {"n": 2})

    async def row() -> bool:
        return bool(await servers.pg("SELECT 1 FROM tasks WHERE id = $1::uuid", task_id))

    await eventually(row, 20, "the task's Postgres row")
    servers.redis.delete(keys.SINGLE.task(task_id))  # as when the hot copy's TTL has passed
    response, took = await timed_get(gateway, task_id, 30)
    assert response.status_code == 200
    assert response.json()["status"] == "completed"
    assert took < PROMPT


async def test_the_deadline_answers_with_the_current_state(gateway: httpx.AsyncClient, servers: Servers) -> None:
    task_id = await submit(gateway)  # no worker serves: it stays queued
    response, took = await timed_get(gateway, task_id, 0.5)
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert took >= 0.5
    assert await waiters(gateway) == 0


async def test_a_task_a_worker_finishes_during_the_wait_answers_final(
    gateway: httpx.AsyncClient, servers: Servers
) -> None:
    task_id = await submit(gateway, "sleep", {"ms": 100})
    waiting = asyncio.create_task(timed_get(gateway, task_id, 30))
    await until_waiting(gateway, servers)
    # Only now does a worker start: the answer can only come from the wait noticing the write.
    async with serving(servers, "worker-service"):
        response, took = await waiting
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed"
    assert body["result"] == {"slept_ms": 100}
    assert took < 30 - PROMPT
    assert await waiters(gateway) == 0


async def test_the_message_wakes_the_wait(gateway: httpx.AsyncClient, servers: Servers) -> None:
    """The reader passes a task id published on the done channel to its waiter, which reads the record."""
    task_id = await submit(gateway)
    record = await task(gateway, task_id)
    waiting = asyncio.create_task(timed_get(gateway, task_id, 30))
    await until_waiting(gateway, servers)
    finish_by_hand(servers, record)
    response, took = await waiting
    assert response.json()["status"] == "completed"
    assert response.json()["result"] == {"by": "hand"}
    assert took < PROMPT


async def test_many_waiters_of_one_task_are_all_woken(gateway: httpx.AsyncClient, servers: Servers) -> None:
    task_id = await submit(gateway)
    record = await task(gateway, task_id)
    waiting = [asyncio.create_task(timed_get(gateway, task_id, 30)) for _ in range(20)]
    await until_waiting(gateway, servers, 20)
    finish_by_hand(servers, record, "failed")
    answers = await asyncio.gather(*waiting)
    assert {response.json()["status"] for response, _ in answers} == {"failed"}
    assert max(took for _, took in answers) < PROMPT
    assert await waiters(gateway) == 0


async def test_waits_on_many_tasks_leave_no_waiter_behind(gateway: httpx.AsyncClient, servers: Servers) -> None:
    ids = [await submit(gateway) for _ in range(30)]
    records = [await task(gateway, task_id) for task_id in ids]
    waiting = [asyncio.create_task(timed_get(gateway, task_id, 1 if i % 2 else 30)) for i, task_id in enumerate(ids)]
    await until_waiting(gateway, servers, 30)
    for record in records[::2]:
        finish_by_hand(servers, record)
    answers = await asyncio.gather(*waiting)
    statuses = [response.json()["status"] for response, _ in answers]
    assert statuses == ["completed" if i % 2 == 0 else "queued" for i in range(30)]
    # No request waits, so the gateway reads the done channel no more (it unsubscribed).
    await until_waiting(gateway, servers, 0)


async def test_a_client_that_gives_up_leaves_no_waiter(gateway: httpx.AsyncClient, servers: Servers) -> None:
    task_id = await submit(gateway)
    waiting = asyncio.create_task(timed_get(gateway, task_id, 30))
    await until_waiting(gateway, servers)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await until_waiting(gateway, servers, 0)


# -- the bound ----------------------------------------------------------------------------------


async def test_past_the_bound_a_wait_is_a_503_with_retry_after(servers: Servers) -> None:
    async with serving(servers, "api-gateway", WAIT_MAX_WAITERS="2") as gateway:
        ids = [await submit(gateway) for _ in range(3)]
        waiting = [asyncio.create_task(timed_get(gateway, task_id, 30)) for task_id in ids[:2]]
        await until_waiting(gateway, servers, 2)
        refused = await gateway.get(f"/api/task/{ids[2]}", params={"wait": 30})
        assert refused.status_code == 503
        assert refused.json()["error"] == "too_many_waiters"
        assert "2 requests already wait" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) > 0
        # Without `wait` the read answers as ever, and nothing of the refused wait lingers.
        assert (await gateway.get(f"/api/task/{ids[2]}")).status_code == 200
        assert await waiters(gateway) == 2
        # A place freed is a place taken.
        record = await task(gateway, ids[0])
        finish_by_hand(servers, record)
        first, _ = await waiting[0]
        assert first.json()["status"] == "completed"
        taken = asyncio.create_task(timed_get(gateway, ids[2], 30))
        await until_waiting(gateway, servers, 2)
        for pending in (waiting[1], taken):
            pending.cancel()
        await asyncio.gather(waiting[1], taken, return_exceptions=True)


# -- a lost connection --------------------------------------------------------------------------


async def test_a_wait_survives_a_lost_pubsub_connection(gateway: httpx.AsyncClient, servers: Servers) -> None:
    task_id = await submit(gateway)
    record = await task(gateway, task_id)
    waiting = asyncio.create_task(timed_get(gateway, task_id, 30))
    await until_waiting(gateway, servers)
    # As a Redis restart does to the subscriber: the connection is cut; the final write and its
    # message come while it is down, so the message is lost to the gateway.
    assert servers.redis.client_kill_filter(_type="pubsub") == 1
    finish_by_hand(servers, record)
    response, took = await waiting
    assert response.json()["status"] == "completed"
    assert took < PROMPT
    # The reader is back: a new wait is woken by its message again.
    second = await submit(gateway)
    second_record = await task(gateway, second)
    waiting = asyncio.create_task(timed_get(gateway, second, 30))
    await until_waiting(gateway, servers)
    finish_by_hand(servers, second_record)
    response, took = await waiting
    assert response.json()["status"] == "completed"
    assert took < PROMPT


# -- shutdown -----------------------------------------------------------------------------------


async def test_sigterm_answers_every_wait_at_once(gateway: httpx.AsyncClient, servers: Servers) -> None:
    """uvicorn waits for open requests before the lifespan ends: a stopping gateway answers its
    waits with their current state instead of holding its shutdown for up to 30 s."""
    task_id = await submit(gateway)
    waiting = asyncio.create_task(timed_get(gateway, task_id, 30))
    await until_waiting(gateway, servers)
    # The gateway's lifespan installed its handler; serving() puts back the one before afterwards.
    os.kill(os.getpid(), signal.SIGTERM)
    response, took = await waiting
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert took < PROMPT
