"""Task records as the queue writes them to Redis: a new task's queued (or scheduled) record, a
final record.

A record in Redis may leave out its id (its key holds it) and every field at its default
(status queued, attempts 0, priority normal, the nulls): a small queued task then takes under 250
bytes of Redis's memory, where the whole model's JSON takes 465 (the README's growth figures).
read_record() takes either form. Final records keep every field: Postgres stores the same JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from core.models import Priority, TaskRecord, TaskSpec, TaskStatus, new_task_ids
from core.timeutil import epoch_ms, now

#: The fields queued_records() writes itself, in the model's order (the id stays in the key).
_LEADING = ("id", "type", "data")

# A real check, not an assert (which `python -O` strips): a reordered model would make
# queued_records() write records that differ from hot_record()'s.
if tuple(TaskRecord.model_fields)[: len(_LEADING)] != _LEADING:
    raise RuntimeError(f"queued_records() needs TaskRecord's first fields to be {_LEADING}")

_ID_FIELD = b'{"id":'


def hot_record(task: TaskRecord) -> str:
    """A non-final record as Redis keeps it: no id, no field at its default."""
    return task.model_dump_json(exclude={"id"}, exclude_defaults=True)


def read_record(task_id: str, raw: str | bytes) -> TaskRecord:
    """The record `raw` read from task `task_id`'s key: a hot record, or a whole one (final)."""
    data = raw.encode() if isinstance(raw, str) else raw
    if not data.startswith(_ID_FIELD):
        data = b'{"id":"' + task_id.encode() + b'",' + data[1:]
    return TaskRecord.model_validate_json(data)


#: Where the enqueue scripts put a task (NewTask.route): its priority's list now, or the schedule.
ROUTE_NOW = {Priority.NORMAL: "", Priority.HIGH: "h", Priority.LOW: "l"}


#: A new task as the enqueue scripts take it: (id, record JSON, route). The route is ROUTE_NOW's
#: entry for its priority, or the epoch ms it is scheduled for, as digits. A plain tuple: a named
#: one costs a bulk submission a tenth more per task.
NewTask = tuple[str, bytes, str]


def is_scheduled(route: str) -> bool:
    return route[:1].isdigit()


def queued_records(submits: Sequence[TaskSpec], created: datetime) -> list[NewTask]:
    """New tasks' records, as hot_record() writes them, and their routes.

    For a task of normal priority to run now (nearly all of them), only type and data differ, and
    they are the record's first fields: each record is those two, encoded by orjson, and the rest
    of one model dump per batch, as bytes. A record costs a third of encoding it whole (a test
    checks the bytes are hot_record()'s). Scheduled or prioritised tasks are encoded whole."""
    rest = hot_record(TaskRecord(id="", type="", created_at=created)).encode()
    tail = b"," + rest[rest.index(b'"created_at"') :]  # ',"created_at":"..."}'
    dumps = orjson.dumps
    normal = Priority.NORMAL
    return [
        (
            task_id,
            b'{"type":' + dumps(submit.type) + (b',"data":' + dumps(submit.data) if submit.data else b"") + tail,
            "",
        )
        if submit.priority is normal and submit.delay_seconds is None and submit.run_at is None
        else _routed(task_id, submit, created)
        for task_id, submit in zip(new_task_ids(len(submits)), submits, strict=True)
    ]


def _routed(task_id: str, submit: TaskSpec, created: datetime) -> NewTask:
    """A task with a priority or a schedule: its whole record, and where it goes."""
    due = submit.due_ms(epoch_ms(created))
    record = TaskRecord(
        id=task_id,
        type=submit.type,
        data=submit.data,
        created_at=created,
        status=TaskStatus.QUEUED if due is None else TaskStatus.SCHEDULED,
        priority=submit.priority,
        run_at=None if due is None else datetime.fromtimestamp(due / 1000, UTC),
    )
    route = ROUTE_NOW[submit.priority] if due is None else str(due)
    return (task_id, hot_record(record).encode(), route)


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
    #: Redis already holds it as final (written by an earlier worker, or by a cancel): it is only
    #: committed, given the result TTL and acknowledged
    recorded: bool = False

    @classmethod
    def of(cls, task: TaskRecord, *, recorded: bool = False) -> FinalRecord:
        finished_ms = int((task.completed_at or now()).timestamp() * 1000)
        return cls(task.id, task.status, finished_ms, task.processing_time or 0.0, task.model_dump_json(), recorded)
