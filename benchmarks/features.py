"""Figures of cancel, delay and priorities (issue 17), taken through nginx on the bench's idle stack.

    cancel -> final  waiting: DELETE sent until its answer (the task is final once it is given);
                     running: DELETE ?running=true sent until the record in Redis says cancelled
                     (what GET answers), the worker having stopped the task
    delay accuracy   started_at - run_at of tasks submitted in one bulk with delays of 1 to 3 s
    priority order   a backlog of high, normal and low tasks (interleaved) queued with the
                     workers stopped, then drained: the share of pairs of different priority
                     that started out of order, and each priority's mean start position

Run alone on a stack of its own: `.venv/bin/python -m benchmarks.features`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from benchmarks.target import Measured, live_worker, rank, run_alone, say, stop_workers
from core import keys
from core.models import Priority, TaskRecord, TaskStatus
from core.records import read_record
from harness.stacks import wait_for

CANCEL_SAMPLES = 30
DELAY_TASKS = 50
DELAY_RANGE_SECONDS = (1.0, 3.0)
#: Tasks of each priority in the backlog.
PRIORITY_EACH = 100
#: Longer than any phase: a task that should be stopped or cancelled never ends by itself.
SLEEP_MS = 60_000


@dataclass(frozen=True)
class Spread:
    """Milliseconds: the median, 95th percentile and largest of `samples` figures."""

    samples: int
    p50_ms: float
    p95_ms: float
    max_ms: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        ordered = sorted(values)
        p95 = rank(ordered, 0.95)
        return cls(len(ordered), round(statistics.median(ordered), 2), round(p95, 2), round(ordered[-1], 2))


@dataclass(frozen=True)
class PriorityOrder:
    tasks: int
    #: pairs of tasks of different priority where the lower one started first, over all such pairs
    inversions: float
    #: mean 0-based position in start order, per priority (the ideal is 49.5, 149.5, 249.5 of 300)
    mean_position: dict[str, float]
    #: from the workers' start until every task was final
    drain_seconds: float


@dataclass(frozen=True)
class Figures:
    cancel_queued: Spread
    cancel_scheduled: Spread
    cancel_running: Spread
    #: started_at - run_at; `early` counts tasks that started before their time (should be 0)
    delay: Spread
    early: int
    priority: PriorityOrder
    #: what taking all of them took
    seconds: float


def _post(client: httpx.Client, body: dict[str, Any], path: str = "/api/task") -> dict[str, Any]:
    response = client.post(path, json=body)
    response.raise_for_status()
    accepted: dict[str, Any] = response.json()
    return accepted


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _until_record_says(target: Measured, task_id: str, status: TaskStatus, timeout: float) -> None:
    """Poll the task's record in Redis (what GET reads) tightly, 0.2 ms apart: a figure in
    milliseconds must not measure the poll's interval."""
    key, marker = keys.SINGLE.task(task_id), f'"status":"{status.value}"'
    deadline = time.perf_counter() + timeout
    while marker not in (target.redis.get(key) or ""):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for task {task_id} to be {status.value}")
        time.sleep(0.0002)


def _finals(target: Measured, ids: list[str], timeout: float) -> list[TaskRecord]:
    """The records of `ids`, in order, once every one is final."""
    found: dict[str, TaskRecord] = {}

    def all_final() -> bool:
        pending = [i for i in ids if i not in found]
        for task_id, raw in zip(pending, target.redis.mget([keys.SINGLE.task(i) for i in pending]), strict=True):
            record = read_record(task_id, raw) if raw else None
            if record is not None and record.status.is_final:
                found[task_id] = record
        return len(found) == len(ids)

    wait_for(all_final, timeout, f"{len(ids)} tasks to be final", interval=0.02)
    return [found[i] for i in ids]


def delay_accuracy(target: Measured, client: httpx.Client) -> tuple[Spread, int]:
    low, high = DELAY_RANGE_SECONDS
    tasks = [
        {"type": "echo", "data": {"i": i}, "delay_seconds": round(low + (high - low) * i / (DELAY_TASKS - 1), 3)}
        for i in range(DELAY_TASKS)
    ]
    ids = _post(client, {"tasks": tasks}, "/api/tasks")["task_ids"]
    late: list[float] = []
    for task in _finals(target, ids, high + 15):
        if task.status is not TaskStatus.COMPLETED or task.started_at is None or task.run_at is None:
            raise RuntimeError(f"delayed task {task.id} ended {task.status.value}: {task.error}")
        late.append((task.started_at - task.run_at).total_seconds() * 1000)
    return Spread.of(late), sum(1 for ms in late if ms < 0)


def cancel_running(target: Measured, client: httpx.Client) -> Spread:
    took: list[float] = []
    for _ in range(CANCEL_SAMPLES):
        task_id = _post(client, {"type": "sleep", "data": {"ms": SLEEP_MS}})["task_id"]
        # The watch shows an attempt as processing once it ran 50 ms: claimed, and running.
        _until_record_says(target, task_id, TaskStatus.PROCESSING, 10)
        started = time.perf_counter()
        response = client.delete(f"/api/task/{task_id}", params={"running": "true"})
        if response.status_code != 202:
            raise RuntimeError(f"cancelling a running task answered {response.status_code}: {response.text}")
        _until_record_says(target, task_id, TaskStatus.CANCELLED, 10)
        took.append(_ms_since(started))
    return Spread.of(took)


def cancel_waiting(client: httpx.Client, bodies: list[dict[str, Any]]) -> Spread:
    """Submit each of `bodies`, then cancel each: the DELETE's answer carries the final record."""
    ids = [_post(client, body)["task_id"] for body in bodies]
    took: list[float] = []
    for task_id in ids:
        started = time.perf_counter()
        response = client.delete(f"/api/task/{task_id}")
        took.append(_ms_since(started))
        if response.status_code != 200 or response.json()["status"] != TaskStatus.CANCELLED.value:
            raise RuntimeError(f"cancelling a waiting task answered {response.status_code}: {response.text}")
    return Spread.of(took)


def _inversions(started: list[Priority]) -> float:
    """Of the pairs of different priority in start order, the share where the lower one came first."""
    rank = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}
    seen = dict.fromkeys(rank.values(), 0)
    inverted = pairs = 0
    for priority in started:
        r = rank[priority]
        # Every task of a lower priority already started is one pair out of order with this one.
        inverted += sum(n for other, n in seen.items() if other > r)
        pairs += sum(n for other, n in seen.items() if other != r)
        seen[r] += 1
    return inverted / pairs if pairs else 0.0


def priority_order(target: Measured, client: httpx.Client, workers: list[str]) -> PriorityOrder:
    """With `workers` stopped: queue the backlog, start them, and read the start order."""
    order = [Priority.HIGH, Priority.NORMAL, Priority.LOW] * PRIORITY_EACH
    tasks = [{"type": "echo", "data": {"i": i}, "priority": p.value} for i, p in enumerate(order)]
    ids = _post(client, {"tasks": tasks}, "/api/tasks")["task_ids"]
    started = time.perf_counter()
    for name in workers:
        target.control.start(name)
    records = _finals(target, ids, 60)
    drained = time.perf_counter() - started
    starts = [(r.started_at, i, r) for i, r in enumerate(records) if r.started_at is not None]
    if len(starts) != len(records):
        raise RuntimeError("a task of the priority backlog ended without starting")
    # Ties (the same microsecond) in submission order.
    by_start = [r for _, _, r in sorted(starts, key=lambda s: (s[0], s[1]))]
    positions: dict[str, list[int]] = {p.value: [] for p in Priority}
    for position, record in enumerate(by_start):
        positions[record.priority.value].append(position)
    return PriorityOrder(
        tasks=len(ids),
        inversions=round(_inversions([r.priority for r in by_start]), 4),
        mean_position={p: round(statistics.mean(n), 1) for p, n in positions.items()},
        drain_seconds=round(drained, 2),
    )


def measure(target: Measured) -> dict[str, Any]:
    """Every figure above; the workers run again afterwards, as they did before."""
    say(
        f"features: delay accuracy ({DELAY_TASKS} tasks), cancel ({CANCEL_SAMPLES} each), "
        f"priority order ({3 * PRIORITY_EACH} tasks)"
    )
    begun = time.perf_counter()
    with httpx.Client(base_url=target.lb, timeout=10) as client:
        delay, early = delay_accuracy(target, client)
        running = cancel_running(target, client)
        workers = stop_workers(target)
        queued = cancel_waiting(client, [{"type": "echo"}] * CANCEL_SAMPLES)
        scheduled = cancel_waiting(client, [{"type": "echo", "delay_seconds": 600}] * CANCEL_SAMPLES)
        priority = priority_order(target, client, workers)
    wait_for(lambda: live_worker(target), 30, "a worker's heartbeat")
    return asdict(Figures(queued, scheduled, running, delay, early, priority, round(time.perf_counter() - begun, 1)))


def rows(figures: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """The bench table's rows for these figures (none when they were not taken)."""
    if not figures:
        return []

    def spread(what: str, name: str) -> tuple[str, str, str]:
        f = figures[name]
        return (what, f"p50 {f['p50_ms']:.2f} ms", f"p95 {f['p95_ms']:.1f} ms, max {f['max_ms']:.1f} ms")

    order = figures["priority"]
    mean = order["mean_position"]
    return [
        spread("cancel -> final: queued", "cancel_queued"),
        spread("cancel -> final: scheduled", "cancel_scheduled"),
        spread("cancel -> final: running (?running=true)", "cancel_running"),
        spread(f"delay: started_at - run_at ({figures['early']} early)", "delay"),
        (
            f"priority: {order['tasks']} mixed, inversions",
            f"{order['inversions']:.2%}",
            f"mean pos h/n/l {mean['high']:.0f}/{mean['normal']:.0f}/{mean['low']:.0f}",
        ),
    ]


def main() -> int:
    """These figures alone, on a native stack of their own set up as the bench's."""
    figures = run_alone(measure, rows)
    print(f"{figures['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
