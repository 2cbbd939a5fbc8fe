"""Alerts through the real stack: the conditions fire and resolve in the API, on the page and at a
webhook receiver on loopback; a failing or hanging webhook does not slow the sampler.

A stack of its own, with short holds and thresholds (the defaults would take minutes), and a
webhook receiver this test runs. The times from condition to alert and from recovery to resolved
are printed (pytest -s) for the README."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from core import keys
from harness.stacks import Stack, free_port, wait_for

pytestmark = pytest.mark.stack

#: Seconds, for the test's stack: a condition fires after HOLD and resolves after CLEAR.
HOLD, CLEAR = 2, 2


class Receiver:
    """A webhook endpoint on loopback: records each POST; answers 204, 500, or not at all (hang)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mode = "ok"
        self.posts: list[tuple[float, dict[str, Any]]] = []
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.posts.append((time.time(), body))
                if receiver.mode == "hang":
                    receiver.released.wait(30)
                self.send_response(500 if receiver.mode == "500" else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def events(self, name: str) -> list[str]:
        return [body["event"] for _, body in self.posts if body["alert"]["name"] == name]

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def alert_stack(receiver: Receiver) -> Iterator[Stack]:
    running = Stack(
        {
            "ALERT_WEBHOOK_URL": receiver.url,
            "ALERT_WEBHOOK_TIMEOUT_SECONDS": "1",
            "ALERT_HOLD_SECONDS": str(HOLD),
            "ALERT_DEPENDENCY_HOLD_SECONDS": str(HOLD),
            "ALERT_CLEAR_SECONDS": str(CLEAR),
            "ALERT_BACKLOG_TASKS": "3",
            "ALERT_BACKLOG_AGE_SECONDS": "2",
            "WORKERS": "2",
        }
    ).up()
    try:
        yield running
    finally:
        running.down()


def alerts(stack: Stack) -> dict[str, Any]:
    response = stack.http.get(f"{stack.monitor}/api/alerts", timeout=5)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def firing(stack: Stack) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in alerts(stack)["firing"]}


def resolved_since(stack: Stack, name: str, t: float) -> dict[str, Any] | None:
    return next((a for a in alerts(stack)["resolved"] if a["name"] == name and a["resolved_at"] >= t), None)


def report(what: str, seconds: float) -> None:
    print(f"\nALERT TIMING {what}: {seconds:.1f} s")  # the figures the README quotes


def test_paused_workers_fire_backlog_and_no_worker_alerts_then_resolve(
    alert_stack: Stack, receiver: Receiver, browser: Browser
) -> None:
    stack = alert_stack
    wait_for(lambda: stack.live_workers() == 2, 30, "two live workers")
    programs = stack.worker_programs()
    for name in programs:
        stack.supervisor.stop(name)
    paused = time.time()
    ids = [stack.submit("echo", {"n": i}) for i in range(6)]
    try:
        found = wait_for(
            lambda: (f := firing(stack)).keys() >= {"no_live_worker", "backlog_not_draining"} and f, 30, "both alerts"
        )
        report("no_live_worker: workers stopped -> firing", found["no_live_worker"]["since"] - paused)
        report("backlog_not_draining: tasks queued -> firing", found["backlog_not_draining"]["since"] - paused)
        backlog = found["backlog_not_draining"]
        assert backlog["state"] == "firing"
        assert backlog["hint"]
        figures = {f["name"]: f for f in backlog["figures"]}
        assert figures["queue_length"]["value"] == 6
        assert figures["queue_length"]["threshold"] == 3
        assert figures["oldest_queued"]["value"] > 2
        # The webhook got a Slack-style text for each, once.
        wait_for(lambda: "firing" in receiver.events("no_live_worker"), 10, "the webhook's firing notice")
        wait_for(lambda: "firing" in receiver.events("backlog_not_draining"), 10, "the webhook's firing notice")
        text = next(b["text"] for _, b in receiver.posts if b["alert"]["name"] == "no_live_worker")
        assert text.startswith("FIRING no_live_worker: Work is queued and no worker is alive")
        # The page: a banner and the list, live over the stream.
        page = browser.new_page()
        try:
            page.goto(stack.monitor)
            expect(page.locator("#alerts-banner")).to_be_visible(timeout=10_000)
            expect(page.locator("#alerts-banner")).to_contain_text("no worker is alive")
            expect(page.locator('#alerts-list li[data-name="backlog_not_draining"]')).to_contain_text("6 tasks queued")
        finally:
            page.close()
    finally:
        # Recovery starts with the first worker: supervisor's start returns only after `startsecs`,
        # by which time the alert may already have cleared.
        resumed = time.time()
        for name in programs:
            stack.supervisor.start(name)
    stack.wait_all_final(ids)
    done = wait_for(lambda: resolved_since(stack, "no_live_worker", resumed), 30, "no_live_worker resolved")
    report("no_live_worker: workers back -> resolved", done["resolved_at"] - resumed)
    done = wait_for(lambda: resolved_since(stack, "backlog_not_draining", resumed), 30, "backlog resolved")
    report("backlog_not_draining: workers back -> resolved", done["resolved_at"] - resumed)
    wait_for(lambda: receiver.events("no_live_worker").count("resolved") == 1, 10, "the resolving notice")
    assert receiver.events("no_live_worker") == ["firing", "resolved"]  # each notice once
    assert done["sent_firing"] is True
    assert done["sent_resolved"] is True


def test_a_worker_killed_mid_task_fires_the_dead_worker_alert(alert_stack: Stack) -> None:
    stack = alert_stack
    wait_for(lambda: stack.live_workers() == 2, 30, "two live workers")
    task_id = stack.submit("sleep", {"ms": 4000})
    running = stack.wait_status(task_id, {"processing"}, timeout=10)
    program = stack.program_of_worker(running["worker_id"])
    stack.kill(program)
    killed = time.time()
    alert = wait_for(lambda: firing(stack).get("worker_died"), 30, "the worker_died alert")
    report("worker_died: kill -9 -> firing", alert["since"] - killed)
    assert {f["name"]: f["value"] for f in alert["figures"]}["requeued_from_dead_workers"] >= 1
    assert stack.wait_status(task_id, {"completed"}, timeout=30)["status"] == "completed"
    stack.wait_running(program)


def test_redis_stopped_fires_the_dependency_alert(alert_stack: Stack) -> None:
    stack = alert_stack
    stack.supervisor.stop("redis")
    stopped = time.time()
    try:
        alert = wait_for(lambda: firing(stack).get("redis_unreachable"), 30, "redis_unreachable", interval=0.2)
        report("redis_unreachable: redis stopped -> firing", alert["since"] - stopped)
    finally:
        started = time.time()
        stack.supervisor.start("redis")
    done = wait_for(lambda: resolved_since(stack, "redis_unreachable", started), 30, "redis_unreachable resolved")
    report("redis_unreachable: redis back -> resolved", done["resolved_at"] - started)
    wait_for(lambda: stack.http.get("/api/status").status_code == 200, 30, "the stack healthy again")


@pytest.mark.parametrize("mode", ["500", "hang"])
def test_a_failing_webhook_does_not_slow_the_sampler(alert_stack: Stack, receiver: Receiver, mode: str) -> None:
    stack = alert_stack
    receiver.mode = mode
    posts_before = len(receiver.posts)
    wait_for(lambda: stack.live_workers() >= 1, 30, "a live worker")
    programs = stack.worker_programs()
    for name in programs:
        stack.supervisor.stop(name)
    began = time.time()
    ids = [stack.submit("echo") for _ in range(5)]
    try:
        wait_for(lambda: "no_live_worker" in firing(stack), 30, "the alert")
        wait_for(lambda: len(receiver.posts) > posts_before, 10, "the webhook tried")
        # Let the webhook fail (500: retries with backoff; hang: timeouts) while samples go on.
        wait_for(lambda: time.time() - began > 8, 10, "eight seconds of a failing webhook")
    finally:
        for name in programs:
            stack.supervisor.start(name)
        receiver.mode = "ok"
        receiver.released.set()
    samples = [json.loads(raw) for raw in stack.redis.lrange(keys.SERIES, 0, 14)]
    newest = [s for s in samples if s["t"] >= began]
    gaps = [a["t"] - b["t"] for a, b in itertools.pairwise(newest)]
    assert len(newest) >= 7, newest
    assert max(gaps) < 1.6, gaps
    stack.wait_all_final(ids)
    receiver.released.clear()
