"""One metrics sample: what the sampler measures each second and every reader reads.

Python code uses the long field names; the JSON (in Redis under `keys.SERIES`, in `/api/series`
and in the dashboard's stream) uses the short alias beside each field, because 900 samples are
kept and sent to browsers at once. `Sample.model_validate_json` reads that JSON and
`Sample.model_dump()` / `model_dump_json()` write it: the aliases are the wire format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class Sample(BaseModel):
    """A 1 s measurement of the shared counters and the rates and percentiles derived from them."""

    # The alias sits in `Annotated`, not in the default, so type checkers know the fields by their
    # long names (the constructor takes those); pydantic reads and writes the short ones.
    model_config = ConfigDict(frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    #: epoch seconds of the measurement
    t: float
    #: the shared counters: requests, accepted, completed, failed and cancelled tasks
    requests: Annotated[int, Field(alias="req")] = 0
    accepted: Annotated[int, Field(alias="acc")] = 0
    completed: Annotated[int, Field(alias="done")] = 0
    failed: Annotated[int, Field(alias="fail")] = 0
    cancelled: Annotated[int, Field(alias="cxl")] = 0
    #: tasks waiting in the queue, every priority counted, and the split by priority
    queue_length: Annotated[int, Field(alias="q")] = 0
    queue_high: Annotated[int, Field(alias="qh")] = 0
    queue_normal: Annotated[int, Field(alias="qn")] = 0
    queue_low: Annotated[int, Field(alias="ql")] = 0
    #: tasks scheduled for later (delay_seconds, run_at), not yet queued
    scheduled: Annotated[int, Field(alias="sch")] = 0
    #: tasks claimed and not yet acknowledged
    in_flight: Annotated[int, Field(alias="f")] = 0
    #: workers with a live heartbeat, and the task slots they have between them
    workers: Annotated[int, Field(alias="w")] = 0
    slots: int = 0
    #: accepted / finished (completed + failed) per second since the previous sample; a cancelled
    #: task is no throughput (most never ran), so it counts in `cancelled` only
    arrival_rate: Annotated[float, Field(alias="ar")] = 0.0
    completion_rate: Annotated[float, Field(alias="cr")] = 0.0
    #: the same over the last ~10 s: steadier, what the scaling policy uses
    arrival_rate_10s: Annotated[float, Field(alias="ar10")] = 0.0
    completion_rate_10s: Annotated[float, Field(alias="cr10")] = 0.0
    #: tasks finished (completed or failed) in the last 60 s
    tasks_per_minute: Annotated[int, Field(alias="tpm")] = 0
    #: processing-time percentiles and mean (s) over the last 60 s, of completed and failed tasks
    #: (a task cancelled while it ran stopped early: its time says nothing of the work's); None
    #: when nothing finished
    p50: float | None = None
    p95: float | None = None
    mean_processing_time: Annotated[float | None, Field(alias="avg")] = None
    #: failed / finished over the last 60 s, 0..1
    error_rate: Annotated[float, Field(alias="err")] = 0.0

    @property
    def finished(self) -> int:
        return self.completed + self.failed


#: A JSON array of samples in one call (faster than one `model_validate_json` per sample).
SAMPLES = TypeAdapter(list[Sample])


def chart_columns(samples: Sequence[Sample]) -> dict[str, list[float | None]]:
    """What the dashboard's charts draw: one array per field, under its short name (`/api/series`)."""
    return {
        "t": [s.t for s in samples],
        "q": [s.queue_length for s in samples],
        "f": [s.in_flight for s in samples],
        "w": [s.workers for s in samples],
        "ar": [s.arrival_rate for s in samples],
        "cr": [s.completion_rate for s in samples],
        "p50": [s.p50 for s in samples],
        "p95": [s.p95 for s in samples],
    }
