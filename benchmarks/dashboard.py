"""Dashboard cost with a large history, and how stale the live stream is.

    .venv/bin/python -m benchmarks.dashboard                 # against ./demo.sh's running stack
    .venv/bin/python -m benchmarks.dashboard --harness       # starts the test harness stack itself
    .venv/bin/python -m benchmarks.dashboard --monitor URL --lb URL --redis-url URL --database-url DSN

1. History: insert `--rows` (100,000) final task rows into Postgres, point Redis's capped recent
   list at 200 of them whose hot copies do not exist (so every refresh takes the Postgres path,
   the worst case) and fill the capped durations list.
2. `/api/metrics`: p50 / p95 / max over `--requests` (200) sequential requests after a warm-up;
   the same for the history filters `/api/tasks?type=` and `?status=failed`.
3. SSE staleness: with `/api/stream` open, submit `--probes` echo tasks through nginx one by one;
   for each, the time from its `completed_at` to the first frame that shows it completed.
Adds rows of type `bench-*` to the database it is pointed at.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
from redis.asyncio import Redis

from core import db, keys
from core.connections import init_connection
from core.models import TaskRecord, TaskStatus

KINDS = ("bench-resize", "bench-email", "bench-report", "bench-thumb", "bench-rare")


def _fake(i: int, start: datetime) -> TaskRecord:
    failed = i % 50 == 0
    created = start + timedelta(seconds=i * 6)  # a week of history, one row every 6 s
    seconds = random.uniform(0.01, 3.0)
    kind = KINDS[4] if i % 1000 == 0 else KINDS[i % 4]
    return TaskRecord(
        id=str(uuid.uuid4()),
        type=kind,
        data={"i": i, "note": "x" * 64},
        status=TaskStatus.FAILED if failed else TaskStatus.COMPLETED,
        created_at=created,
        started_at=created,
        completed_at=created + timedelta(seconds=seconds),
        processing_time=seconds,
        worker_id="bench-worker",
        result=None if failed else {"ok": True},
        error="bench failure" if failed else None,
        attempts=1,
    )


async def fill(database_url: str, redis: Redis, rows: int) -> None:
    start = datetime.now(UTC) - timedelta(seconds=rows * 6)
    conn = await asyncpg.connect(database_url)
    await init_connection(conn)
    try:
        began = time.perf_counter()
        ids: list[str] = []
        for offset in range(0, rows, 10_000):
            batch = [_fake(i, start) for i in range(offset, min(rows, offset + 10_000))]
            await db.bulk_insert_tasks(conn, batch)
            ids.extend(t.id for t in batch)
        await conn.execute("ANALYZE tasks")
        total = await conn.fetchval("SELECT count(*) FROM tasks")
        print(f"history: {rows} rows inserted in {time.perf_counter() - began:.1f} s; tasks table holds {total}")
    finally:
        await conn.close()
    newest = ids[-200:]
    now_ms = int(time.time() * 1000)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(keys.SINGLE.recent, *newest)
        pipe.ltrim(keys.SINGLE.recent, 0, 199)
        pipe.lpush(
            keys.SINGLE.durations,
            *[f"{now_ms - i * 10}:{random.uniform(0.01, 3):.6f}:completed" for i in range(keys.DURATIONS_KEPT)],
        )
        pipe.ltrim(keys.SINGLE.durations, 0, keys.DURATIONS_KEPT - 1)
        await pipe.execute()


def _stats(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return f"p50 {statistics.median(ordered) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"


async def latency(client: httpx.AsyncClient, path: str, requests: int) -> list[float]:
    for _ in range(20):
        (await client.get(path)).raise_for_status()
    out = []
    for _ in range(requests):
        began = time.perf_counter()
        response = await client.get(path)
        out.append(time.perf_counter() - began)
        response.raise_for_status()
    return out


async def staleness(monitor: str, lb: str, probes: int) -> list[float]:
    """Seconds from each probe task's completed_at to the first frame showing it completed."""
    pending: dict[str, float] = {}
    found: list[float] = []
    async with httpx.AsyncClient(timeout=30) as client:

        async def submit_all() -> None:
            for _ in range(probes):
                await asyncio.sleep(random.uniform(0.3, 1.3))  # land at random points of the 1 s tick
                response = await client.post(f"{lb}/api/task", json={"type": "echo", "data": {"probe": True}})
                response.raise_for_status()
                pending[response.json()["task_id"]] = 0.0

        submitter = asyncio.create_task(submit_all())
        deadline = time.monotonic() + probes * 2 + 20
        async with client.stream("GET", f"{monitor}/api/stream") as stream:
            event = ""
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "frame":
                    received = time.time()
                    for task in json.loads(line.split(":", 1)[1])["recent_tasks"]:
                        if task["id"] in pending and task["status"] == "completed" and task["completed_at"]:
                            done = datetime.fromisoformat(task["completed_at"]).timestamp()
                            found.append(received - done)
                            del pending[task["id"]]
                if (submitter.done() and not pending) or time.monotonic() > deadline:
                    break
        await submitter
    return found


async def run(monitor: str, lb: str, redis_url: str, database_url: str, rows: int, requests: int, probes: int) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        if rows:
            await fill(database_url, redis, rows)
    finally:
        await redis.aclose()
    async with httpx.AsyncClient(base_url=monitor, timeout=10) as client:
        print(f"/api/metrics ({requests} requests): {_stats(await latency(client, '/api/metrics', requests))}")
        for path in ("/api/tasks?type=bench-rare", "/api/tasks?status=failed", "/api/tasks?q=00ab"):
            print(f"{path} ({requests} requests): {_stats(await latency(client, path, requests))}")
    stale = await staleness(monitor, lb, probes)
    if stale:
        print(
            f"SSE staleness ({len(stale)} tasks): median {statistics.median(stale) * 1000:.0f} ms, "
            f"max {max(stale) * 1000:.0f} ms"
        )
    else:
        print("SSE staleness: no probe task seen in the stream")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--harness", action="store_true", help="start the test harness stack (free ports)")
    parser.add_argument("--monitor")
    parser.add_argument("--lb")
    parser.add_argument("--redis-url")
    parser.add_argument("--database-url")
    args = parser.parse_args()
    figures = (args.rows, args.requests, args.probes)
    if args.harness:
        from harness.stacks import Stack  # only this mode needs the test helpers

        stack = Stack().up()
        try:
            redis_url = f"redis://:{stack.env['REDIS_PASSWORD']}@127.0.0.1:{stack.config.redis_port}/0"
            asyncio.run(run(stack.monitor, stack.lb, redis_url, stack.database_url, *figures))
        finally:
            stack.down()
        return
    if args.monitor:
        asyncio.run(run(args.monitor, args.lb, args.redis_url, args.database_url, *figures))
        return
    from native.plan import NativeConfig, build  # the running ./demo.sh stack

    plan = build(NativeConfig.from_env())
    env = plan.migrate.env
    monitor = f"http://127.0.0.1:{plan.listeners['monitoring']}"
    lb = f"http://127.0.0.1:{plan.listeners['lb']}"
    asyncio.run(run(monitor, lb, str(env["REDIS_URL"]), str(env["DATABASE_URL"]), *figures))


if __name__ == "__main__":
    main()
