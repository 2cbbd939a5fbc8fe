"""The dashboard's API on the real stack: samples, metrics, scaling, stream, workers, tasks, /metrics."""

from __future__ import annotations

import functools
import itertools
import json
import time
import uuid
from datetime import datetime
from typing import Any

import httpx

from core import keys
from harness.stacks import BaseStack, Stack, wait_for


def get(stack: BaseStack, path: str, *, admin: bool = False, **params: Any) -> Any:
    headers = {"Authorization": f"Bearer {stack.env['ADMIN_TOKEN']}"} if admin else {}
    response = stack.http.get(f"{stack.monitor}{path}", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def samples(stack: Stack) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in stack.redis.lrange(keys.SERIES, 0, 9)]


def test_one_sample_a_second(stack: Stack) -> None:
    wait_for(lambda: len(samples(stack)) >= 4, 10, "four samples")
    newest = samples(stack)[:4]
    gaps = [a["t"] - b["t"] for a, b in itertools.pairwise(newest)]
    assert all(0.7 <= gap <= 1.5 for gap in gaps), gaps
    assert time.time() - newest[0]["t"] < 2.5
    assert {"t", "req", "acc", "done", "fail", "q", "f", "w", "ar", "cr", "ar10", "cr10", "tpm", "p50", "p95"} <= set(
        newest[0]
    )
    assert stack.redis.llen(keys.SERIES) <= keys.SERIES_KEPT


def test_rates_and_percentiles_follow_traffic(stack: Stack) -> None:
    # Other tests share the stack: compare with the counters before, not with absolute figures.
    before = samples(stack)[0]
    ids = [stack.submit("sleep", {"ms": 60}) for _ in range(12)]
    stack.wait_all_final(ids)

    def measured() -> dict[str, Any] | None:
        head = samples(stack)[0]
        finished = head["done"] + head["fail"] - before["done"] - before["fail"]
        return head if finished >= 12 and head["p95"] is not None and head["tpm"] >= 12 else None

    head = wait_for(measured, 5, "a sample counting the sleeps")
    assert head["acc"] - before["acc"] >= 12
    assert head["p50"] is not None
    assert 0 <= head["p50"] <= head["p95"]
    assert head["avg"] is not None
    # The 12 arrivals and completions show up as per-second rates in the last samples.
    series = get(stack, "/api/series", minutes=1)
    assert len(series["t"]) >= 3
    assert sum(series["ar"]) >= 1
    assert sum(series["cr"]) >= 1
    assert set(series) == {"t", "q", "f", "w", "ar", "cr", "p50", "p95"}


def test_metrics_have_their_documented_shape_and_agree_with_the_worker(any_stack: BaseStack) -> None:
    headers = {"Authorization": f"Bearer {any_stack.env['ADMIN_TOKEN']}"}

    def same_sample() -> tuple[dict[str, Any], dict[str, Any]] | None:
        metrics = get(any_stack, "/api/metrics")
        scale = any_stack.http.post(f"{any_stack.worker}/worker/scale", headers=headers)
        assert scale.status_code == 200, scale.text
        body = scale.json()
        # Two reads may straddle a sampling tick; agreement is about the same sample.
        return (metrics, body) if body["sampled_at"] == metrics["performance"]["sampled_at"] else None

    metrics, scale = wait_for(same_sample, 10, "/api/metrics and /worker/scale on the same sample")
    assert metrics["scaling_recommendation"] == scale["recommendation"]
    advice = metrics["scaling_recommendation"]
    assert advice["action"] in {"scale_up", "scale_down", "maintain"}
    assert advice["reasons"]
    assert advice["current_workers"] == metrics["system_health"]["active_workers"]
    assert {"tasks_per_minute", "avg_processing_time", "p95_processing_time", "error_rate"} <= set(
        metrics["performance"]
    )
    assert metrics["workers"]
    assert all("last_seen" in w and w["state"] in {"online", "suspect", "dead"} for w in metrics["workers"])


def test_scaling_endpoint(stack: Stack) -> None:
    scaling = get(stack, "/api/scaling")
    assert scaling["mode"] == "off"  # the shared test stack runs the autoscaler with AUTOSCALE=off
    assert scaling["decisions"] == []
    assert isinstance(scaling["current"], int)
    assert isinstance(scaling["desired"], int)
    assert scaling["reasons"]
    assert all(isinstance(r, str) for r in scaling["reasons"])
    # The first sample's advice is recorded, then only changes.
    assert scaling["history"]
    assert {"at", "action", "current_workers", "desired_workers", "reasons"} <= set(scaling["history"][0])


def test_stream_pushes_every_second_and_shows_a_finished_task_within_a_second(any_stack: BaseStack) -> None:
    arrivals: list[float] = []
    task_id = ""
    seen_done: float | None = None
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", f"{any_stack.monitor}/api/stream") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = ""
        deadline = time.monotonic() + 20
        for line in response.iter_lines():
            assert time.monotonic() < deadline, "no finished task in the stream within 20 s"
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "frame":
                frame = json.loads(line.split(":", 1)[1])
                arrivals.append(time.time())
                assert {"sample", "cards", "workers", "recent_tasks", "scaling"} <= set(frame)
                if len(arrivals) == 2:
                    task_id = any_stack.submit("echo", {"hello": "stream"})
                done = [t for t in frame["recent_tasks"] if t["id"] == task_id and t["status"] == "completed"]
                if done:
                    completed = datetime.fromisoformat(done[0]["completed_at"]).timestamp()
                    seen_done = arrivals[-1] - completed
                    break
    assert seen_done is not None
    assert seen_done <= 1.2, f"finished task reached the stream {seen_done:.3f} s after it completed"
    gaps = [b - a for a, b in itertools.pairwise(arrivals[1:])]
    assert all(gap <= 1.5 for gap in gaps), gaps


def test_worker_states_from_heartbeat_age(stack: Stack) -> None:
    now = time.time()

    def beat(worker_id: str, age: float) -> str:
        return json.dumps(
            {
                "worker_id": worker_id,
                "pid": 1,
                "host": "gone",
                "in_flight": 0,
                "completed": 3,
                "failed": 1,
                "last_seen": datetime.fromtimestamp(now - age).astimezone().isoformat(),
                "seen_at": now - age,
            }
        )

    suffix = uuid.uuid4().hex[:6]
    suspect, dead, forgotten = f"suspect-{suffix}", f"dead-{suffix}", f"forgotten-{suffix}"
    stack.redis.hset(
        keys.WORKERS_SEEN,
        mapping={suspect: beat(suspect, 5), dead: beat(dead, 30), forgotten: beat(forgotten, 400)},
    )

    beating = {w["worker_id"] for w in stack.heartbeats()}
    assert beating

    def table() -> dict[str, dict[str, Any]] | None:
        rows = {w["worker_id"]: w for w in get(stack, "/api/metrics")["workers"]}
        # The sampler forgets workers unseen for minutes within a tick, and lists every live one online.
        online = all(rows.get(w, {}).get("state") == "online" for w in beating)
        return rows if forgotten not in rows and online else None

    try:
        rows = wait_for(table, 5, "the long-gone worker to drop off and the live ones online")
        assert rows[suspect]["state"] == "suspect"
        assert rows[dead]["state"] == "dead"
    finally:
        stack.redis.hdel(keys.WORKERS_SEEN, suspect, dead, forgotten)


def test_task_history_filters_search_and_detail(stack: Stack) -> None:
    kind = f"dash-{uuid.uuid4().hex[:8]}"
    ok = [stack.submit(kind, {"work_ms": 5, "n": i}) for i in range(3)]
    for task_id in ok:
        stack.wait_status(task_id, {"completed"})
    failed = stack.submit("fail", {"message": f"boom {kind}"})
    stack.wait_status(failed, {"failed"}, timeout=60)

    by_type = get(stack, "/api/tasks", type=kind)["tasks"]
    assert {t["id"] for t in by_type} == set(ok)
    assert all("data" not in t for t in by_type)  # lists carry no payloads
    assert [t["created_at"] for t in by_type] == sorted((t["created_at"] for t in by_type), reverse=True)
    assert get(stack, "/api/tasks", type=kind, status="failed")["tasks"] == []
    assert failed in {t["id"] for t in get(stack, "/api/tasks", status="failed", limit=200)["tasks"]}
    assert [t["id"] for t in get(stack, "/api/tasks", q=ok[0])["tasks"]] == [ok[0]]
    assert ok[1] in {t["id"] for t in get(stack, "/api/tasks", q=ok[1][:13])["tasks"]}
    assert get(stack, "/api/tasks", q="not-an-id!")["tasks"] == []

    assert "data" not in get(stack, f"/api/tasks/{ok[0]}")  # payloads need the admin token
    detail = get(stack, f"/api/tasks/{ok[0]}", admin=True)
    assert detail["data"] == {"work_ms": 5, "n": 0}
    assert detail["result"]
    assert detail["attempts"] == 1
    assert detail["worker_id"]
    assert detail["started_at"]
    assert detail["completed_at"]

    # History is Postgres: with the hot copy and the recent entry gone, it is still found.
    stack.redis.delete(keys.SINGLE.task(ok[2]))
    stack.redis.lrem(keys.SINGLE.recent, 0, ok[2])
    assert get(stack, f"/api/tasks/{ok[2]}", admin=True)["data"] == {"work_ms": 5, "n": 2}
    assert ok[2] in {t["id"] for t in get(stack, "/api/tasks", type=kind)["tasks"]}


def test_live_tasks_of_every_status(stack: Stack) -> None:
    slow = stack.submit("sleep", {"ms": 1500})
    wait_for(
        lambda: slow in {t["id"] for t in get(stack, "/api/tasks", status="processing")["tasks"]},
        5,
        "the sleeping task listed as processing",
    )
    stack.wait_status(slow, {"completed"})


def test_task_endpoints_refuse_bad_input(stack: Stack) -> None:
    assert stack.http.get(f"{stack.monitor}/api/tasks", params={"status": "nope"}).status_code == 422
    assert stack.http.get(f"{stack.monitor}/api/tasks", params={"limit": 1000}).status_code == 422
    assert stack.http.get(f"{stack.monitor}/api/tasks", params={"type": "<script>"}).status_code == 422
    missing = stack.http.get(f"{stack.monitor}/api/tasks/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert missing.json()["error"] == "task_not_found"
    assert stack.http.get(f"{stack.monitor}/api/tasks/not-a-uuid").status_code == 404


def test_page_security_headers_and_vendored_assets(stack: Stack) -> None:
    page = stack.http.get(f"{stack.monitor}/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "<script>" not in page.text  # no inline script: only files the app serves
    for asset in ("/static/dashboard.js", "/static/vendor/uplot/uPlot.iife.min.js", "/static/vendor/uplot/LICENSE"):
        response = stack.http.get(f"{stack.monitor}{asset}")
        assert response.status_code == 200, asset
    assert "https://" not in page.text  # nothing from a CDN


def scrape(url: str) -> str:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in the scrape")


def _with_latency(url: str) -> str | None:
    text = scrape(url)
    return text if "ss_http_request_duration_seconds_bucket" in text else None


def test_prometheus_on_every_service(stack: Stack) -> None:
    completed_before = value(scrape(stack.gateway), 'ss_tasks{status="completed"}')
    stack.wait_status(stack.submit("echo", {"prom": True}), {"completed"})
    for url in (stack.gateway, stack.worker, stack.monitor):
        # A process times a request once it has answered it: a replica that has served nothing
        # since it started (nginx picks one) shows its latency series from the next scrape on.
        text = wait_for(functools.partial(_with_latency, url), 5, f"{url}'s latency series")
        assert value(text, 'ss_tasks{status="completed"}') >= completed_before + 1, url
    assert 'route="/api/health"' in scrape(stack.monitor)

    def a_worker_histogram() -> bool:
        text = scrape(stack.worker)  # nginx picks a worker replica; each reports its own tasks
        return any(line.startswith("ss_task_processing_seconds_count") for line in text.splitlines())

    wait_for(a_worker_histogram, 10, "a worker's processing-time histogram")


def test_prometheus_reports_the_shared_state_read_from_redis_at_scrape_time(
    stack: Stack, workers_paused: list[str]
) -> None:
    # The workers are stopped (so is their port), so the queue and the counters hold still while
    # the gateway and the dashboard are scraped.
    depth = int(stack.redis.llen(keys.SINGLE.queue))
    for i in range(3):
        stack.submit("echo", {"i": i})
    stats = stack.redis.hgetall(keys.SINGLE.stats)
    for url in (stack.gateway, stack.monitor):
        text = scrape(url)
        assert value(text, "ss_queue_depth") == depth + 3, url
        for status, stat in (
            ("accepted", keys.STAT_ACCEPTED),
            ("completed", keys.STAT_COMPLETED),
            ("failed", keys.STAT_FAILED),
        ):
            assert value(text, f'ss_tasks{{status="{status}"}}') == int(stats.get(stat, 0)), (url, status)
