"""Throughput of the running native stack, and each process's memory.

    .venv/bin/python -m benchmarks.pipeline [--tasks 1000] [--concurrency 32]

Two figures for N `echo` tasks:
- ingest: submitted through nginx by `concurrency` async clients (the client, in Python, is
  part of what is measured; wrk gives the gateway's own ceiling);
- drain: the same N queued with the workers stopped, then the running workers started and
  timed until every task is persisted in Postgres (the worker pipeline's throughput).
Then the RSS (now and peak) of every process of the stack.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import asyncpg
import httpx

from native.plan import NativeConfig, build
from native.supervisor import Supervisor


def _rss(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def run(tasks: int, concurrency: int) -> None:
    config = NativeConfig.from_env()
    plan = build(config)
    base = f"http://127.0.0.1:{plan.listeners['lb']}"
    ids: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        before = (await client.get("/api/metrics")).json()["system_metrics"]
        done_before = before["completed"] + before["failed"]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(tasks):
            queue.put_nowait(i)

        async def submitter() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                while True:
                    response = await client.post("/api/task", json={"type": "echo", "data": {"i": i}})
                    if response.status_code == 202:
                        ids.append(response.json()["task_id"])
                        break
                    await asyncio.sleep(0.05)  # 429 from the rate limit: back off like a client would

        sup = Supervisor(config.supervisor_socket)
        workers = [p.name for p in plan.of("worker-service") if sup.states()[p.name] == "RUNNING"]
        for name in workers:
            sup.stop(name)
        start = time.perf_counter()
        await asyncio.gather(*(submitter() for _ in range(concurrency)))
        submitted = time.perf_counter() - start
        drain_start = time.perf_counter()
        for name in workers:
            sup.start(name, wait=False)
        while True:
            m = (await client.get("/api/metrics")).json()["system_metrics"]
            if m["completed"] + m["failed"] - done_before >= tasks:
                break
            await asyncio.sleep(0.01)
        final_in_redis = time.perf_counter() - drain_start
    conn = await asyncpg.connect(plan.migrate.env["DATABASE_URL"])
    try:
        # Polling another process's database: there is no event to wait on.
        while await conn.fetchval("SELECT count(*) FROM tasks WHERE id = ANY($1::uuid[])", ids) < tasks:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    finally:
        await conn.close()
    persisted = time.perf_counter() - drain_start

    print(f"tasks                      {tasks}")
    print(f"workers                    {len(workers)} (incl. their start-up)")
    print(f"ingest                     {tasks / submitted:8.0f} tasks/s  ({submitted:.2f} s)")
    print(f"drain (all final)          {tasks / final_in_redis:8.0f} tasks/s  ({final_in_redis:.2f} s)")
    print(f"drain (all persisted)      {tasks / persisted:8.0f} tasks/s  ({persisted:.2f} s)")
    print("\nprocess               RSS MB   peak MB")
    total = 0.0
    for proc in sup.processes():
        if proc["pid"]:
            now, peak = _rss(proc["pid"])
            total += now
            print(f"{proc['name']:<20} {now:8.1f} {peak:9.1f}")
    sup.close()
    print(f"{'total':<20} {total:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(run(args.tasks, args.concurrency))


if __name__ == "__main__":
    main()
