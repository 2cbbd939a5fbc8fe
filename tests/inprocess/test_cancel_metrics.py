"""Cancelled, scheduled and prioritised tasks in the figures: the gateway's /api/metrics and
/api/status, the dashboard's JSON, page and task lists, Prometheus, and the scaling advice."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

from core import keys
from core.samples import Sample
from monitoring.live import cards
from tests.inprocess.apps import MARKS, eventually, final, serving, task
from tests.inprocess.servers import Servers

pytestmark = MARKS


async def post(gateway: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await gateway.post("/api/task", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["task_id"])


async def cancel(gateway: httpx.AsyncClient, task_id: str) -> None:
    response = await gateway.delete(f"/api/task/{task_id}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"


async def backlog(gateway: httpx.AsyncClient) -> dict[str, list[str]]:
    """No worker runs: 2 high, 3 normal and 1 low task wait, 2 are scheduled."""
    made: dict[str, list[str]] = {"high": [], "normal": [], "low": [], "scheduled": []}
    for priority, count in (("high", 2), ("normal", 3), ("low", 1)):
        for i in range(count):
            made[priority].append(await post(gateway, {"type": "echo", "data": {"i": i}, "priority": priority}))
    for delay in (600, 900):
        made["scheduled"].append(await post(gateway, {"type": "echo", "delay_seconds": delay}))
    return made


async def cancel_two(gateway: httpx.AsyncClient, made: dict[str, list[str]]) -> list[str]:
    """Cancel a normal and a scheduled task of `made`; their ids."""
    gone = [made["normal"].pop(), made["scheduled"].pop()]
    for task_id in gone:
        await cancel(gateway, task_id)
    return gone


async def test_gateway_metrics_and_status_count_every_priority_scheduled_and_cancelled(
    gateway: httpx.AsyncClient,
) -> None:
    made = await backlog(gateway)
    metrics = (await gateway.get("/api/metrics")).json()["system_metrics"]
    assert metrics["queue_length"] == 6
    assert metrics["queue_by_priority"] == {"high": 2, "normal": 3, "low": 1}
    assert (metrics["scheduled"], metrics["cancelled"]) == (2, 0)
    # The seed's fields are all still there.
    for name in ("total_requests", "active_workers", "processing", "completed", "failed", "accepted", "requeued"):
        assert isinstance(metrics[name], int), name
    assert metrics["redis_connected"] is True
    status = await gateway.get("/api/status")
    assert status.status_code == 503  # no worker runs
    assert status.json()["metrics"]["queue_length"] == 6

    await cancel_two(gateway, made)
    metrics = (await gateway.get("/api/metrics")).json()["system_metrics"]
    assert (metrics["scheduled"], metrics["cancelled"]) == (1, 2)
    assert (metrics["completed"], metrics["failed"]) == (0, 0)
    assert metrics["queue_by_priority"]["normal"] == 2
    assert metrics["queue_length"] == sum(metrics["queue_by_priority"].values())


async def test_prometheus_shows_cancelled_scheduled_and_the_queue_by_priority(gateway: httpx.AsyncClient) -> None:
    made = await backlog(gateway)

    async def scrape() -> Callable[[str], float]:
        text = (await gateway.get("/metrics")).text

        def value(series: str) -> float:
            found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
            assert found, f"{series} not in the scrape"
            return float(found.group(1))

        return value

    value = await scrape()
    assert value("ss_queue_depth") == 6
    assert value('ss_tasks{status="queued"}') == 6
    assert value('ss_tasks{status="scheduled"}') == 2
    assert value('ss_tasks{status="cancelled"}') == 0
    for priority, count in (("high", 2), ("normal", 3), ("low", 1)):
        assert value(f'ss_queue_depth_by_priority{{priority="{priority}"}}') == count
    await cancel_two(gateway, made)
    value = await scrape()
    assert value('ss_tasks{status="scheduled"}') == 1
    assert value('ss_tasks{status="cancelled"}') == 2


async def test_dashboard_metrics_come_from_samples_that_carry_the_new_counts(
    gateway: httpx.AsyncClient, dashboard: httpx.AsyncClient, servers: Servers
) -> None:
    made = await backlog(gateway)

    async def sampled(check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        async def matching() -> dict[str, Any] | None:
            body: dict[str, Any] = (await dashboard.get("/api/metrics")).json()
            return body if check(body) else None

        return await eventually(matching, 5, "a sample with the backlog")

    body = await sampled(lambda b: b["system_health"]["queue_length"] == 6)
    health = body["system_health"]
    assert health["queue_by_priority"] == {"high": 2, "normal": 3, "low": 1}
    assert health["scheduled"] == 2
    # The 1 s sample in Redis (what the charts, the stream and the autoscaler read) holds them too.
    head = Sample.model_validate_json(servers.redis.lindex(keys.SERIES, 0) or "{}")
    assert (head.queue_length, head.queue_high, head.queue_normal, head.queue_low) == (6, 2, 3, 1)
    assert (head.scheduled, head.cancelled) == (2, 0)

    await cancel_two(gateway, made)
    body = await sampled(lambda b: b["performance"]["cancelled"] == 2)
    assert body["system_health"]["scheduled"] == 1
    assert body["performance"]["tasks_per_minute"] == 0  # a cancel is not a finish
    assert body["performance"]["error_rate"] == 0.0
    head = Sample.model_validate_json(servers.redis.lindex(keys.SERIES, 0) or "{}")
    assert (head.cancelled, head.scheduled, head.finished) == (2, 1, 0)


async def test_the_page_has_a_place_for_every_counter_and_filters_by_the_new_statuses(
    dashboard: httpx.AsyncClient,
) -> None:
    page = (await dashboard.get("/")).text
    # The script writes each card into the element `card-<name>`: every one the stream sends exists.
    for name in cards(Sample(t=0.0)):
        assert f'id="card-{name}"' in page, name
    for name in ("cancelled", "scheduled", "queue_high", "queue_normal", "queue_low"):
        assert name in cards(Sample(t=0.0))
    options = re.findall(r'<option value="([a-z]*)">', page)
    assert {"scheduled", "queued", "retrying", "cancelled", "completed", "failed"} <= set(options)
    css = (await dashboard.get("/static/dashboard.css")).text
    for status in ("scheduled", "cancelled"):
        assert f"td.status-{status}" in css


async def test_task_lists_by_the_new_statuses(gateway: httpx.AsyncClient, dashboard: httpx.AsyncClient) -> None:
    made = await backlog(gateway)
    made["cancelled"] = await cancel_two(gateway, made)
    later = await post(gateway, {"type": "echo", "delay_seconds": 1200})
    sooner = await post(gateway, {"type": "echo", "delay_seconds": 60})

    async def listed(status: str) -> list[dict[str, Any]]:
        response = await dashboard.get("/api/tasks", params={"status": status, "limit": 50})
        assert response.status_code == 200, response.text
        tasks: list[dict[str, Any]] = response.json()["tasks"]
        assert {t["status"] for t in tasks} <= {status}
        return tasks

    queued = await listed("queued")
    assert {t["id"] for t in queued} == {*made["high"], *made["normal"], *made["low"]}
    assert {t["id"]: t["priority"] for t in queued} == {
        **dict.fromkeys(made["high"], "high"),
        **dict.fromkeys(made["normal"], "normal"),
        **dict.fromkeys(made["low"], "low"),
    }
    # Soonest due first, each with the time it is due.
    scheduled = await listed("scheduled")
    assert [t["id"] for t in scheduled] == [sooner, *made["scheduled"], later]
    assert all(t["run_at"] for t in scheduled)
    assert {t["id"] for t in await listed("cancelled")} == set(made["cancelled"])
    refused = await dashboard.get("/api/tasks", params={"status": "paused"})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"][-1] == "status"


async def test_a_task_cancelled_while_running_counts_as_cancelled_not_finished(
    servers: Servers, gateway: httpx.AsyncClient, dashboard: httpx.AsyncClient
) -> None:
    done = await post(gateway, {"type": "echo"})
    stopped = await post(gateway, {"type": "sleep", "data": {"ms": 20_000}})
    async with serving(servers, "worker-service"):
        await final(gateway, done)

        async def processing() -> bool:
            return (await task(gateway, stopped))["status"] == "processing"

        await eventually(processing, 10, "the sleep to run")
        asked = await gateway.delete(f"/api/task/{stopped}?running=true")
        assert asked.status_code == 202, asked.text
        assert (await final(gateway, stopped))["status"] == "cancelled"

        async def counted() -> dict[str, Any] | None:
            body: dict[str, Any] = (await dashboard.get("/api/metrics")).json()
            rows = [w for w in body["workers"] if w["state"] == "online"]
            ready = body["performance"]["cancelled"] == 1 and rows and rows[0]["cancelled"] == 1
            return body if ready else None

        body = await eventually(counted, 10, "the cancel in the dashboard's figures and the worker's row")
    # keys.SINGLE.durations holds the cut-short sleep; the rates and percentiles leave it out.
    assert any(str(entry).endswith(":cancelled") for entry in servers.redis.lrange(keys.SINGLE.durations, 0, -1))
    performance = body["performance"]
    assert (performance["completed"], performance["failed"], performance["cancelled"]) == (1, 0, 1)
    assert performance["tasks_per_minute"] == 1
    assert performance["error_rate"] == 0.0
    assert performance["p95_processing_time"] is not None
    assert performance["p95_processing_time"] < 1.0  # the echo's time, not the sleep's


async def test_a_high_priority_backlog_with_no_worker_drives_the_advice_up(
    gateway: httpx.AsyncClient, dashboard: httpx.AsyncClient
) -> None:
    idle = (await dashboard.get("/api/scaling")).json()
    assert idle["numbers"]["queue_length"] == 0
    response = await gateway.post("/api/tasks", json={"tasks": [{"type": "echo", "priority": "high"}] * 64})
    assert response.status_code == 202, response.text

    async def advised() -> dict[str, Any] | None:
        body: dict[str, Any] = (await dashboard.get("/api/scaling")).json()
        return body if body["numbers"]["queue_length"] == 64 else None

    advice = await eventually(advised, 5, "advice that sees the high-priority backlog")
    assert advice["action"] == "scale_up"
    assert advice["current"] == 0
    # 64 tasks over 8 slots a worker is 8 workers' load: the most allowed, more than idle asks for.
    assert advice["desired"] == advice["max_workers"] > idle["desired"]
