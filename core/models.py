"""The task model and its lifecycle states, shared by the gateway, workers and dashboard."""

from __future__ import annotations

import math
import os
import re
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

TYPE_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"


class TaskStatus(StrEnum):
    #: submitted with delay_seconds or run_at: waits for its time, then is queued
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    PROCESSING = "processing"
    #: failed, waiting for its next attempt (backoff)
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    #: cancelled by a client (`DELETE /api/task/{id}`): never ran, or stopped while running
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


#: The statuses a task never leaves: its result (or error) is written and its attempts are over.
FINAL_STATUSES = frozenset((TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED))


class Priority(StrEnum):
    """Which waiting list a task joins: a worker takes high before normal before low. A low task
    that waited PRIORITY_AGING_SECONDS joins the head of the normal list (it cannot starve)."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


#: The furthest ahead a task may be scheduled (delay_seconds, or run_at from now).
MAX_DELAY_SECONDS = 30 * 24 * 3600


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    return False


class TaskSpec(BaseModel):
    """A task as a client submits it: its type and data, and when and how urgently it runs."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(pattern=TYPE_PATTERN, description="Handler name, 1-64 chars of [A-Za-z0-9_.:-]")
    data: dict[str, Any] = Field(default_factory=dict, description="Free-form payload for the handler")
    priority: Priority = Field(default=Priority.NORMAL, description="high, normal or low: workers take higher first")
    delay_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DELAY_SECONDS,
        allow_inf_nan=False,
        description=f"Run no earlier than this many seconds from now (at most {MAX_DELAY_SECONDS})",
    )
    run_at: datetime | None = Field(
        default=None, description="Run no earlier than this time (RFC 3339 with a UTC offset); not with delay_seconds"
    )

    @field_validator("run_at", mode="before")
    @classmethod
    def _text(cls, run_at: Any) -> Any:
        # pydantic also reads numbers as epoch seconds; the API speaks RFC 3339 only.
        if run_at is not None and not isinstance(run_at, str | datetime):
            raise ValueError("run_at must be an RFC 3339 time string, e.g. 2030-01-01T12:00:00Z")
        return run_at

    @field_validator("run_at")
    @classmethod
    def _aware(cls, run_at: datetime | None, info: ValidationInfo) -> datetime | None:
        # Here rather than in a model validator, which would run for every task: this one runs
        # only for a task that has run_at (delay_seconds is declared first, so it is known).
        if run_at is not None and info.data.get("delay_seconds") is not None:
            raise ValueError("give delay_seconds or run_at, not both")
        if run_at is not None and run_at.utcoffset() is None:
            raise ValueError("run_at needs a UTC offset (RFC 3339), e.g. 2030-01-01T12:00:00Z")
        if run_at is not None and (run_at - datetime.now(UTC)).total_seconds() > MAX_DELAY_SECONDS:
            raise ValueError(f"run_at may be at most {MAX_DELAY_SECONDS} s ahead")
        return run_at

    def due_ms(self, now_ms: int) -> int | None:
        """The epoch ms it may run from, when that is later than `now_ms` (else None: run now)."""
        if self.delay_seconds is not None:
            return now_ms + max(1, round(self.delay_seconds * 1000))
        if self.run_at is not None:
            due = round(self.run_at.timestamp() * 1000)
            return due if due > now_ms else None
        return None


def _may_be_unstorable(encoded: bytes) -> bool:
    """Whether orjson's encoding of data may hide data that `unstorable` refuses (then walk it).

    orjson writes U+0000 as \\u0000 and NaN or an infinity as null: without those bytes, the data
    holds neither, which two byte searches tell without a walk."""
    return b"\\u0000" in encoded or b"null" in encoded


def unstorable(data: dict[str, Any]) -> str | None:
    """Why `data` could not be stored downstream, or None when it can.

    Everything downstream (Redis, Postgres jsonb, the dashboard) stores JSON as UTF-8 with 64-bit
    integers and finite numbers; refused at submission, such data never fails later, far from the
    client, nor changes silently (a NaN stored as null)."""
    try:
        encoded = orjson.dumps(data)
    except orjson.JSONEncodeError as exc:
        return f"data must be storable JSON: {exc}"
    # orjson writes U+0000 as \\u0000 and NaN or an infinity as null: the exact walks only when unsure.
    if b"\\u0000" in encoded and _has_nul(data):
        # Postgres jsonb refuses U+0000; accepted, such a task could never reach its durable copy.
        return "data must be storable JSON: strings may not contain U+0000"
    if b"null" in encoded and _has_non_finite(data):
        # pydantic's JSON parser reads NaN, Infinity and numbers past a double's range (1e999) as
        # floats; orjson would store them as null, a silent change of the client's data.
        return "data must be storable JSON: numbers must be finite (JSON has no NaN or Infinity)"
    return None


class TaskSubmit(TaskSpec):
    """Body of `POST /api/task`."""

    @field_validator("data")
    @classmethod
    def _storable(cls, data: dict[str, Any]) -> dict[str, Any]:
        if problem := unstorable(data):
            raise ValueError(problem)
        return data


#: The most tasks one `POST /api/tasks` may carry (the 64 KiB body limit also applies).
BULK_MAX = 1000


class TaskBulkSubmit(BaseModel):
    """Body of `POST /api/tasks`: each task validated as `POST /api/task` would (errors name its index)."""

    model_config = ConfigDict(extra="ignore")

    tasks: list[TaskSpec] = Field(min_length=1, max_length=BULK_MAX, description=f"1 to {BULK_MAX} tasks")

    @model_validator(mode="after")
    def _storable(self) -> Self:
        # TaskSubmit's data rule for the whole batch in one orjson call, not a validator call per
        # task (up to a thousand per body). Only a batch that may hold a problem is walked
        # task by task, and each problem is reported where TaskSubmit's would be (tasks.i.data).
        try:
            clean = not _may_be_unstorable(orjson.dumps([task.data for task in self.tasks]))
        except orjson.JSONEncodeError:
            clean = False
        if clean:
            return self
        problems = [(i, problem) for i, task in enumerate(self.tasks) if (problem := unstorable(task.data))]
        if problems:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("value_error", "Value error, {error}", {"error": problem}),
                        loc=("tasks", i, "data"),
                        input=self.tasks[i].data,
                    )
                    for i, problem in problems
                ],
            )
        return self


class TaskBulkAccepted(BaseModel):
    #: in the order of the submitted tasks
    task_ids: list[str]
    count: int
    #: "queued"; for a replayed Idempotency-Key, the tasks may have moved on
    status: TaskStatus = TaskStatus.QUEUED
    message: str
    #: queue position of the first task; the others follow it one by one
    queue_position: int


class TaskAccepted(BaseModel):
    task_id: str
    #: "queued"; for a replayed Idempotency-Key, the task's current status
    status: TaskStatus = TaskStatus.QUEUED
    message: str
    queue_position: int


class TaskRecord(BaseModel):
    """A task as stored in Redis (hot copy) and Postgres (durable copy)."""

    id: str
    type: str
    data: dict[str, Any] = Field(default_factory=dict)
    status: TaskStatus = TaskStatus.QUEUED
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    processing_time: float | None = None
    worker_id: str | None = None
    result: Any = None
    error: str | None = None
    attempts: int = 0
    priority: Priority = Priority.NORMAL
    #: when it was scheduled to run (delay_seconds or run_at), else None
    run_at: datetime | None = None


def new_task_id() -> str:
    return new_task_ids(1)[0]


_RFC_4122_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))


def new_task_ids(count: int, at_ms: int | None = None) -> list[str]:
    """`count` time-ordered (version 7, RFC 9562) UUIDs stamped with the epoch ms `at_ms` (now by
    default), from one read of the OS's randomness: much cheaper than a uuid call per id, which a
    bulk submission pays a thousand times.

    The ids of one call share their millisecond; their 74 random bits keep them apart, and the
    last 12 hex digits are random only (a shard may be derived from them). Time-ordered ids append
    at the right edge of Postgres's primary key, and tell a pruned id's age (task_id_time)."""
    # time_ns, not core.timeutil.now_ms: a datetime per call would double a single id's cost.
    stamp = f"{time.time_ns() // 1_000_000 if at_ms is None else at_ms:012x}"
    prefix = f"{stamp[:8]}-{stamp[8:]}-7"
    # Per id, 10 random bytes: the version digit 7 takes the place of the first one's high nibble,
    # and the third byte gets the RFC variant bits.
    raw = bytearray(os.urandom(10 * count))
    raw[2::10] = raw[2::10].translate(_RFC_4122_VARIANT)
    h = raw.hex()
    return [f"{prefix}{h[i + 1 : i + 4]}-{h[i + 4 : i + 8]}-{h[i + 8 : i + 20]}" for i in range(0, 20 * count, 20)]


def task_id_time(task_id: str) -> datetime | None:
    """When a version 7 id was made (its epoch ms), or None for any other id (older random
    version 4 ids among them, or text that is no id)."""
    if not is_task_id(task_id) or task_id[14] != "7" or task_id[19] not in "89abAB":
        return None
    return datetime.fromtimestamp(int(task_id[:8] + task_id[9:13], 16) / 1000, UTC)


def lowest_task_id(at: datetime) -> str:
    """The lowest id a version 7 id made at `at` can have: every id made earlier sorts below it,
    every one made at `at` or later sorts at or above it (Postgres compares uuids byte by byte)."""
    stamp = f"{max(0, round(at.timestamp() * 1000)):012x}"
    return f"{stamp[:8]}-{stamp[8:]}-0000-0000-000000000000"


#: A task id as new_task_ids() writes it, in either case. uuid.UUID() also takes braces,
#: `urn:uuid:` and no hyphens, forms that asyncpg's uuid encoder refuses (a 500 on lookup) or
#: that match no stored key; only this form is an id, anything else is simply not found.
_TASK_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_task_id(value: str) -> bool:
    return _TASK_ID.fullmatch(value) is not None


def parse_task_id(value: str) -> str | None:
    """The stored form of a task id a client sent (ids are kept lowercase), or None if it is none."""
    return value.lower() if is_task_id(value) else None
