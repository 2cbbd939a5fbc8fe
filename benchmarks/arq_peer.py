"""The peer: arq draining no-op jobs with one worker. Runs in its own venv (arq needs redis<6).

    var/bench-venv/bin/python benchmarks/arq_peer.py PORT JOBS MAX_JOBS

Queues JOBS no-op jobs on the Redis at PORT, then times one burst-mode worker (arq's defaults
otherwise: results kept, asyncio loop) until the queue is empty. Prints one JSON line.
Imports nothing from this project: it runs under another interpreter.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from arq import create_pool  # type: ignore[import-not-found]
from arq.connections import RedisSettings  # type: ignore[import-not-found]
from arq.worker import Worker  # type: ignore[import-not-found]


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def main(port: int, jobs: int, max_jobs: int) -> None:
    settings = RedisSettings(host="127.0.0.1", port=port)
    pool = await create_pool(settings)
    for start in range(0, jobs, 1000):
        await asyncio.gather(*(pool.enqueue_job("noop") for _ in range(min(1000, jobs - start))))
    queued = await pool.zcard("arq:queue")
    worker = Worker(functions=[noop], redis_settings=settings, max_jobs=max_jobs, burst=True, handle_signals=False)
    started = time.perf_counter()
    await worker.main()
    elapsed = time.perf_counter() - started
    await worker.close()
    await pool.aclose()
    print(json.dumps({"jobs": queued, "completed": worker.jobs_complete, "seconds": elapsed}))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
