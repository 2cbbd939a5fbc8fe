"""The result-wait figure (issue 17): on the bench's idle stack, how long after a task's end the
request waiting for it (`GET /api/task/{id}?wait=S`) has its answer.

Each sample submits a `sleep` task of SLEEP_MS through nginx and at once asks for it with
?wait=WAIT_SECONDS; the figure is the moment the answer has arrived less the task's completed_at
(the worker's clock: the same machine's). It covers the worker's final write and its PUBLISH,
the gateway's wake-up and read, and the way back through nginx. The target: p50 under 10 ms.

Run alone on a stack of its own: `.venv/bin/python -m benchmarks.result_wait`.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import httpx

from benchmarks.features import Spread
from benchmarks.target import Measured, run_alone, say
from core.models import TaskRecord, TaskStatus

SAMPLES = 100
#: the first few warm the connection pools and the gateways' subscriptions
WARMUP = 5
SLEEP_MS = 200
WAIT_SECONDS = 5.0
#: what the p50 should stay under
TARGET_P50_MS = 10.0


def measure(target: Measured, samples: int = SAMPLES) -> dict[str, Any]:
    """completed_at -> answer, in ms, over `samples` tasks, one at a time (the workers run)."""
    say(f"result wait: {samples} sleep tasks of {SLEEP_MS} ms, each read with ?wait={WAIT_SECONDS:g}")
    took: list[float] = []
    with httpx.Client(base_url=target.lb, timeout=WAIT_SECONDS + 10) as client:
        client.get("/health")  # a warm keepalive connection, as a real client has
        for i in range(samples + WARMUP):
            submitted = client.post("/api/task", json={"type": "sleep", "data": {"ms": SLEEP_MS}})
            submitted.raise_for_status()
            response = client.get(f"/api/task/{submitted.json()['task_id']}", params={"wait": WAIT_SECONDS})
            arrived = datetime.now(UTC)
            response.raise_for_status()
            task = TaskRecord.model_validate_json(response.content)
            if task.status is not TaskStatus.COMPLETED or task.completed_at is None:
                raise RuntimeError(f"a wait of {WAIT_SECONDS:g} s answered {task.status.value}, not completed")
            if i >= WARMUP:
                took.append((arrived - task.completed_at).total_seconds() * 1000)
    return asdict(Spread.of(took))


def rows(figures: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """The bench table's row for this figure (none when it was not taken)."""
    if not figures:
        return []
    return [
        (
            "result wait: completion -> answer (idle)",
            f"p50 {figures['p50_ms']:.2f} ms",
            f"p95 {figures['p95_ms']:.1f} ms, max {figures['max_ms']:.1f} ms",
        )
    ]


def target(figures: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    """The bench's target line for this figure (none when it was not taken)."""
    if not figures:
        return []
    p50 = figures["p50_ms"]
    return [(f"result wait completion->answer p50 = {p50} ms", f"< {TARGET_P50_MS:g} ms", p50 < TARGET_P50_MS)]


def main() -> int:
    """This figure alone, on a native stack of their own set up as the bench's."""
    run_alone(measure, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
