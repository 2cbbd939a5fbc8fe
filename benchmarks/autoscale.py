"""How fast the autoscaler acts, on throwaway native stacks (free ports, AUTOSCALE=on):

    .venv/bin/python -m benchmarks.autoscale

Prints: seconds from a burst's start to the scale-out decision, from that decision to a new
worker's first claim, peak workers, drain time, seconds back to MIN_WORKERS, and the cold
start from zero (SCALE_TO_ZERO_AFTER_SECONDS: submit -> completed with no worker running).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from core import keys
from core.models import TaskStatus
from core.records import read_record
from core.settings import replica_of
from core.timeseries import epoch
from harness.stacks import Stack, wait_for

BASE = {
    "AUTOSCALE": "on",
    "WORKERS": "1",
    "MIN_WORKERS": "1",
    "MAX_WORKERS": "6",
    "WORKER_CONCURRENCY": "4",
    "TARGET_DRAIN_SECONDS": "10",
    "STABLE_WINDOW_SECONDS": "10",
    "RATE_LIMIT_RPS": "0",
}


def live_workers(stack: Stack) -> list[str]:
    ids = [str(w) for w in stack.redis.smembers(keys.WORKERS)]
    return [
        w
        for w, beat in zip(ids, stack.redis.mget([keys.heartbeat(w) for w in ids]) if ids else [], strict=True)
        if beat
    ]


def burst(tasks: int = 800, ms: int = 250) -> dict[str, float]:
    stack = Stack(BASE).up()
    try:
        wait_for(lambda: len(stack.worker_programs(("RUNNING", "STARTING"))) == 1, 60, "1 worker")
        stack.redis.delete(keys.SCALING_DECISIONS)
        start = time.time()
        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(lambda i: stack.submit("sleep", {"ms": ms, "i": i}), range(tasks)))
        peak = 0
        pending = set(ids)
        while pending:
            peak = max(peak, len(stack.worker_programs(("RUNNING", "STARTING"))))
            raws = stack.redis.mget([keys.SINGLE.task(t) for t in pending])
            pending -= {
                t
                for t, r in zip(list(pending), raws, strict=True)
                if r and read_record(t, r).status is TaskStatus.COMPLETED
            }
            time.sleep(0.1)
        drained = time.time() - start
        wait_for(lambda: len(stack.worker_programs(("RUNNING", "STARTING"))) == 1, 120, "back to MIN_WORKERS")
        back = time.time() - start
        decisions = [json.loads(d) for d in reversed(stack.redis.lrange(keys.SCALING_DECISIONS, 0, -1))]
        first_out = next(d for d in decisions if d["to"] > d["from"])
        started = {r.split()[1] for r in first_out["reasons"] if r.startswith("started ")}
        rows = stack.pg("SELECT worker_id, started_at FROM tasks WHERE id = ANY($1::uuid[]) ORDER BY started_at", ids)
        first_claim = next(
            epoch(r["started_at"].isoformat()) or 0.0 for r in rows if replica_of(r["worker_id"]) in started
        )
        return {
            "tasks": tasks,
            "burst_to_decision_s": first_out["at"] - start,
            "decision_to_first_claim_s": first_claim - first_out["at"],
            "peak_workers": peak,
            "drain_s": drained,
            "back_to_min_s": back,
        }
    finally:
        stack.down()


def cold_start(samples: int = 3) -> list[float]:
    stack = Stack({**BASE, "SCALE_TO_ZERO_AFTER_SECONDS": "3"}).up()
    out = []
    try:
        for _ in range(samples):
            # Zero means no worker process at all: a draining one still finishes its last claim.
            wait_for(
                lambda: len(stack.worker_programs(("RUNNING", "STARTING"))) == 0 and not live_workers(stack),
                60,
                "scale to zero",
            )
            began = time.perf_counter()
            task_id = stack.submit("echo", {"cold": True})
            stack.wait_status(task_id, {"completed"}, timeout=60)
            out.append(time.perf_counter() - began)
    finally:
        stack.down()
    return out


def main() -> None:
    figures = burst()
    colds = cold_start()
    print("autoscaler                        value")
    print(f"burst -> scale-out decision       {figures['burst_to_decision_s']:6.2f} s")
    print(f"decision -> new worker's claim    {figures['decision_to_first_claim_s']:6.2f} s")
    print(f"peak workers                      {figures['peak_workers']:6.0f}")
    print(f"drain ({figures['tasks']:.0f} x 250 ms tasks)         {figures['drain_s']:6.2f} s")
    print(f"back to MIN_WORKERS               {figures['back_to_min_s']:6.2f} s")
    print(f"cold start from zero (submit->done) {', '.join(f'{c:.2f}' for c in colds)} s")


if __name__ == "__main__":
    main()
