"""Task records as the queue writes them to Redis: a new task's queued record, a final record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from core.models import TaskRecord, TaskSpec, TaskStatus, new_task_ids
from core.timeutil import now

#: The fields queued_records() writes itself, in the model's order.
_LEADING = ("id", "type", "data")

# A real check, not an assert (which `python -O` strips): a reordered model would make
# queued_records() write records that differ from the model's own JSON.
if tuple(TaskRecord.model_fields)[: len(_LEADING)] != _LEADING:
    raise RuntimeError(f"queued_records() needs TaskRecord's first fields to be {_LEADING}")


def queued_records(submits: Sequence[TaskSpec], created: datetime) -> list[tuple[str, bytes]]:
    """(id, record JSON) of new queued tasks, as TaskRecord(...).model_dump_json() writes them.

    Only id, type and data differ between new tasks, and they are the record's first fields: each
    record is those three, encoded by orjson, and the rest of one model dump per batch, as bytes.
    A record costs a third of encoding it whole (a test checks the bytes are the model's)."""
    shared = TaskRecord(id="", type="", created_at=created).model_dump(mode="json")
    rest = orjson.dumps({name: value for name, value in shared.items() if name not in _LEADING})
    tail = b"," + rest[1:]  # '"status":"queued",...}'
    dumps = orjson.dumps
    return [
        (
            task_id,
            b'{"id":"' + task_id.encode() + b'","type":' + dumps(submit.type) + b',"data":' + dumps(submit.data) + tail,
        )
        for task_id, submit in zip(new_task_ids(len(submits)), submits, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class FinalRecord:
    """A final record encoded once, for Redis and Postgres alike, with the few fields the write
    needs besides: what the worker holds until the record is committed (not the parsed record,
    whose data and result cost several times their JSON in Python objects)."""

    id: str
    status: TaskStatus
    finished_ms: int
    processing_time: float
    #: the TaskRecord's JSON
    raw: str

    @classmethod
    def of(cls, task: TaskRecord) -> FinalRecord:
        finished_ms = int((task.completed_at or now()).timestamp() * 1000)
        return cls(task.id, task.status, finished_ms, task.processing_time or 0.0, task.model_dump_json())
