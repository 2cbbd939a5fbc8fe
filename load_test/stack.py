"""Where the stack under test is, and the readings the runner and the scenarios take from it.

Targets come from the environment first (Compose sets TARGET_URL, MONITOR_URL, DATABASE_URL),
else from the native plan (`.env` + the shell, as `./demo.sh` and the test harness use), so a
subprocess given a test stack's environment measures that stack.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from core import db

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Targets:
    host: str
    monitor: str
    database_url: str
    #: the native plan's config (ports, supervisor socket, secrets); None under Compose
    native: Any = None


def targets() -> Targets:
    env = os.environ
    if env.get("TARGET_URL") and env.get("MONITOR_URL") and env.get("DATABASE_URL"):
        return Targets(env["TARGET_URL"], env["MONITOR_URL"], env["DATABASE_URL"])
    # Imported here: the Compose container needs none of the native machinery.
    from native.plan import NativeConfig, build

    config = NativeConfig.from_env(ROOT)
    plan = build(config, resolve_binaries=False)
    return Targets(
        host=env.get("TARGET_URL") or f"http://127.0.0.1:{plan.listeners['lb']}",
        monitor=env.get("MONITOR_URL") or f"http://127.0.0.1:{config.monitor_port}",
        database_url=env.get("DATABASE_URL") or str(plan.migrate.env["DATABASE_URL"]),
        native=config,
    )


def sample(monitor: httpx.Client) -> dict[str, Any] | None:
    """One reading of the stack from the dashboard's /api/metrics; None when it does not answer."""
    t = time.time()
    try:
        response = monitor.get("/api/metrics")
        body = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        body = None
    if not body:
        return None
    health, perf = body["system_health"], body["performance"]
    return {
        "t": t,
        "queue": health["queue_length"],
        "in_flight": health["processing"],
        "workers": health["active_workers"],
        "completed": perf["completed"],
        "failed": perf["failed"],
        "accepted": perf["accepted"],
    }


def wait_until_up(where: Targets, timeout: float) -> None:
    """Block until the target's /health and the dashboard answer 200: a load test started beside
    the stack (Compose's `run` has no depends_on here) must not count the stack's start as errors."""
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        try:
            up = all(httpx.get(url, timeout=2).status_code == 200 for url in (f"{where.host}/health", where.monitor))
        except httpx.HTTPError:
            up = False
        if up:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{where.host} or {where.monitor} did not answer within {timeout:.0f} s")
        if not announced:
            print(f"waiting for {where.host} and {where.monitor} to answer", flush=True)
            announced = True
        time.sleep(0.5)


def scaling(monitor: httpx.Client) -> dict[str, Any] | None:
    try:
        response = monitor.get("/api/scaling")
        return dict(response.json()) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def epoch(value: Any) -> float | None:
    """A decision's `at`: epoch seconds or ISO 8601, whichever the autoscaler writes."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def decisions_between(scaling_body: dict[str, Any] | None, start: float, end: float) -> list[dict[str, Any]]:
    found = []
    for decision in (scaling_body or {}).get("decisions") or []:
        at = epoch(decision.get("at"))
        if at is not None and start <= at <= end:
            found.append({**decision, "t": at})
    return sorted(found, key=lambda d: d["t"])


def outcomes(database_url: str, task_ids: Sequence[str]) -> db.Outcomes:
    async def run() -> db.Outcomes:
        conn = await asyncpg.connect(database_url, timeout=10)
        try:
            return await db.outcomes(conn, task_ids)
        finally:
            await conn.close()

    return asyncio.run(run())
