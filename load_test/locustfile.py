"""Locust users for the platform, and the load shapes `steady`, `step` and `spike` (LOAD_SHAPE).

Users submit tasks of mixed types, poll each until it is final, and read /api/status and
/api/metrics. A 429 (nginx's rate limit) or a 503 (backpressure, a dependency down) is the
platform refusing work on purpose: it is recorded under its own name ("... [429]") as a success,
so Locust's failures are real errors only.

Beside locust and the standard library it imports only `core` (its statuses and defaults), which
the image has installed: the Compose load-test container mounts this folder into the image and
runs it as is. Run through `python -m load_test`, which sets
LOAD_TEST_DIR; there this file appends every accepted task id to `accepted.txt` (the runner
checks them against Postgres) and writes `latency.json` when the test stops.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import IO, Any, cast

import locust.stats
from locust import HttpUser, LoadTestShape, between, events, task
from locust.clients import ResponseContextManager
from locust.env import Environment

from core.models import FINAL_STATUSES
from core.settings import LoadTest

# The runner tails the stats history once a second for its progress lines; Locust's default is 10 s.
locust.stats.CSV_STATS_FLUSH_INTERVAL_SEC = 1

REJECTED = {429: "rate_limited", 503: "backpressure"}
LOAD_TEST = LoadTest()
POLL_SECONDS = 0.25
FOLLOW_SECONDS = 30.0
#: (type, data maker, weight): mostly quick work, some simulated work, a few failures.
MIX: list[tuple[str, Any, int]] = [
    ("echo", lambda: {"n": random.randrange(1000)}, 5),
    ("sleep", lambda: {"ms": random.choice((100, 250, 500))}, 3),
    ("cpu", lambda: {"iterations": 20_000}, 1),
    ("image_processing", lambda: {"work_ms": random.randrange(200, 800)}, 2),
    ("fail", dict, 1),
]


def _report_dir() -> Path | None:
    raw = os.environ.get("LOAD_TEST_DIR")
    return Path(raw) if raw else None


_accepted: IO[str] | None = None


def _record_accepted(task_id: str) -> None:
    global _accepted
    folder = _report_dir()
    if folder is None:
        return
    if _accepted is None:
        # Line-buffered: an id is on disk as soon as the 202 is read, even if Locust is killed.
        _accepted = open(folder / "accepted.txt", "a", buffering=1)  # noqa: SIM115 (open for the run)
    _accepted.write(task_id + "\n")


def _judge(response: ResponseContextManager, name: str, ok: int) -> Any:
    """The JSON body of an expected answer; None for a refusal (counted apart) or an error."""
    if response.status_code in REJECTED:
        cast(dict[str, Any], response.request_meta)["name"] = f"{name} [{response.status_code}]"
        response.success()  # type: ignore[no-untyped-call]
        return None
    if response.status_code != ok:
        response.failure(f"HTTP {response.status_code}")  # type: ignore[no-untyped-call]
        return None
    try:
        return response.json()
    except ValueError:
        response.failure("not JSON")  # type: ignore[no-untyped-call]
        return None


class PlatformUser(HttpUser):
    wait_time = between(0.2, 1.0)

    @task(6)
    def submit_and_follow(self) -> None:
        kind, make, _ = random.choices(MIX, weights=[m[2] for m in MIX])[0]
        name = "POST /api/task"
        with self.client.post("/api/task", json={"type": kind, "data": make()}, name=name, catch_response=True) as r:
            body = _judge(r, name, 202)
        if not body or "task_id" not in body:
            return
        task_id = str(body["task_id"])
        _record_accepted(task_id)
        deadline = time.monotonic() + FOLLOW_SECONDS
        while time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)  # gevent-patched: yields to the other users
            name = "GET /api/task/{id}"
            with self.client.get(f"/api/task/{task_id}", name=name, catch_response=True) as r:
                state = _judge(r, name, 200)
            if state and state.get("status") in FINAL_STATUSES:
                return

    @task(1)
    def status(self) -> None:
        with self.client.get("/api/status", catch_response=True) as r:
            _judge(r, "/api/status", 200)

    @task(1)
    def metrics(self) -> None:
        with self.client.get("/api/metrics", catch_response=True) as r:
            _judge(r, "/api/metrics", 200)


# -- shapes -----------------------------------------------------------------------------------


def profile(shape: str, t: float, duration: float, users: int, spawn_rate: float) -> tuple[int, float]:
    """(users wanted, spawn rate) at `t` seconds into a run of `duration` s peaking at `users`."""
    if shape == "step":
        # Four equal steps up to `users`.
        step = min(4, int(t / (duration / 4)) + 1)
        return max(1, users * step // 4), spawn_rate
    if shape == "spike":
        # A fifth of the users, then all of them at once for the middle fifth, then back.
        if 0.4 * duration <= t < 0.6 * duration:
            return users, max(spawn_rate, float(users))
        return max(1, users // 5), max(spawn_rate, float(users))
    if shape != "steady":
        raise ValueError(f"LOAD_SHAPE must be steady, step or spike, not {shape!r}")
    return users, spawn_rate


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    return float(raw) if raw.strip() else default


class Shape(LoadTestShape):
    # --users, --spawn-rate and --run-time set the peak, its ramp and the length; the env vars
    # (CONCURRENT_USERS, SPAWN_RATE, DURATION, as docker-compose.yml passes them) apply when they
    # are not given.
    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner else None
        users = int(getattr(options, "num_users", None) or _number("CONCURRENT_USERS", LOAD_TEST.concurrent_users))
        spawn_rate = float(getattr(options, "spawn_rate", None) or _number("SPAWN_RATE", users))
        duration = float(getattr(options, "run_time", None) or _number("DURATION", LOAD_TEST.duration))
        t = float(self.get_run_time())  # type: ignore[no-untyped-call]
        if t >= duration:
            return None
        return profile(os.environ.get("LOAD_SHAPE") or LOAD_TEST.load_shape, t, duration, users, spawn_rate)


# -- the latency summary the runner reads -----------------------------------------------------


@events.test_stop.add_listener  # type: ignore[untyped-decorator]
def _write_latency(environment: Environment, **_: Any) -> None:
    folder = _report_dir()
    if folder is None:
        return
    answered = locust.stats.StatsEntry(environment.stats, "answered", "", use_response_times_cache=False)
    refused = {name: 0 for name in REJECTED.values()}
    for entry in environment.stats.entries.values():
        code = next((c for c in REJECTED if entry.name.endswith(f"[{c}]")), None)
        if code is None:
            answered.extend(entry)
        else:
            refused[REJECTED[code]] += entry.num_requests

    def pct(q: float) -> float | None:
        return answered.get_response_time_percentile(q) if answered.num_requests else None

    summary = {
        "requests": environment.stats.total.num_requests,
        "answered": answered.num_requests,
        "errors": environment.stats.total.num_failures,
        **refused,
        "p50_ms": pct(0.5),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": answered.max_response_time if answered.num_requests else None,
        "avg_ms": answered.avg_response_time if answered.num_requests else None,
        "errors_by_kind": {f"{e.method} {e.name}: {e.error}": e.occurrences for e in environment.stats.errors.values()},
    }
    (folder / "latency.json").write_text(json.dumps(summary, indent=2))
