"""Pure pieces: Compose interpolation, the task model, record encoding, the bench's verdicts
(the scaling policy: tests/test_policy.py)."""

from __future__ import annotations

import gc
import uuid
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ValidationError
from redis.asyncio import Connection
from redis.exceptions import DataError

from benchmarks.suite import median_round, targets
from core import heap, prom
from core.connections import _TcpConnection, _UnixConnection, create_redis
from core.http import json_body_schema
from core.models import (
    Priority,
    TaskBulkSubmit,
    TaskRecord,
    TaskStatus,
    TaskSubmit,
    is_task_id,
    new_task_id,
    new_task_ids,
)
from core.queue import queued_records
from core.records import hot_record, read_record
from core.settings import Settings
from core.timeutil import now
from native.compose import InterpolationError, interpolate


@pytest.mark.parametrize(
    ("text", "variables", "expected"),
    [
        ("${A}", {"A": "1"}, "1"),
        ("$A/$$B", {"A": "x"}, "x/$B"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("redis://:${P}@${H:-redis}:${PORT:-6379}/0", {"P": "s", "H": "127.0.0.1"}, "redis://:s@127.0.0.1:6379/0"),
    ],
)
def test_interpolation(text: str, variables: dict[str, str], expected: str) -> None:
    assert interpolate(text, variables) == expected


def test_required_variables_refuse_to_start() -> None:
    with pytest.raises(InterpolationError, match=r"run \./demo\.sh"):
        interpolate({"x": ["${SECRET:?run ./demo.sh}"]}, {})


@pytest.mark.parametrize("task_type", ["echo", "a.b:c-d_e", "x" * 64, "0"])
def test_valid_types(task_type: str) -> None:
    assert TaskSubmit(type=task_type).data == {}


@pytest.mark.parametrize("task_type", ["", "x" * 65, "a b", "<script>", "é"])
def test_invalid_types(task_type: str) -> None:
    with pytest.raises(ValidationError):
        TaskSubmit(type=task_type)


def test_ids_are_random_uuids() -> None:
    ids = {new_task_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(is_task_id(i) for i in list(ids)[:10])
    assert not is_task_id("1700000000000")


def test_batch_ids_are_version_7_uuids_in_their_canonical_form() -> None:
    ids = new_task_ids(20_000)
    assert len(set(ids)) == 20_000
    for text in ids[:2000]:
        parsed = uuid.UUID(text)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text  # lower-case, hyphenated: what str(uuid.UUID) gives
    assert new_task_ids(0) == []


@pytest.mark.parametrize(
    ("data", "ok"),
    [
        ({"a": "x\x00y"}, False),
        ({"k\x00": 1}, False),
        ({"deep": [{"x": ["\x00"]}]}, False),
        ({"a": "\\u0000"}, True),  # a backslash and "u0000": text, not a NUL
        ({"a": "\\\x00"}, False),  # a backslash, then a real NUL
        ({"a": 2**64}, False),  # over 64 bits
        ({"a": "\ud800"}, False),  # a lone surrogate
        ({"a": [1, 2.5, None, "caf\u00e9"]}, True),
    ],
)
def test_data_must_be_storable(data: dict[str, Any], ok: bool) -> None:
    # The same rule for one task and for a bulk body (checked there for the whole batch at once),
    # each problem reported where it is.
    bulk = {"tasks": [{"type": "echo", "data": {"fine": 1}}, {"type": "echo", "data": data}]}
    if ok:
        assert TaskSubmit(type="echo", data=data).data == data
        assert TaskBulkSubmit.model_validate(bulk).tasks[1].data == data
    else:
        with pytest.raises(ValidationError, match="storable JSON") as single:
            TaskSubmit(type="echo", data=data)
        with pytest.raises(ValidationError) as many:
            TaskBulkSubmit.model_validate(bulk)
        [one] = single.value.errors(include_url=False, include_input=False, include_context=False)
        [other] = many.value.errors(include_url=False, include_input=False, include_context=False)
        assert (other["loc"], other["type"], other["msg"]) == (("tasks", 1, *one["loc"]), one["type"], one["msg"])


def test_a_bulk_body_reports_every_unstorable_task() -> None:
    tasks = [{"type": "echo", "data": {"n": i, "s": "\x00" if i in (2, 5) else "ok"}} for i in range(7)]
    with pytest.raises(ValidationError) as refused:
        TaskBulkSubmit.model_validate({"tasks": tasks})
    assert [e["loc"] for e in refused.value.errors()] == [("tasks", 2, "data"), ("tasks", 5, "data")]


def test_queued_records_are_byte_for_byte_what_hot_record_writes() -> None:
    created = now()
    submits = [
        TaskSubmit(type="a.b", data={"x": [1, 2.5, None, "caf\u00e9"], "y": {"z": True}}),
        TaskSubmit(type="e"),
        TaskSubmit(type="q:1-2_3", data={"s": 'say "hi"\\\n\t\u0001 \U0001f600', "big": 2**63 - 1, "f": -1.5e-10}),
    ]
    for (task_id, raw, _route), submit in zip(queued_records(submits, created), submits, strict=True):
        model = TaskRecord(id=task_id, type=submit.type, data=submit.data, created_at=created)
        assert raw == hot_record(model).encode()
        assert read_record(task_id, raw) == model


def test_a_hot_record_leaves_out_its_id_and_defaults_and_reads_back_whole() -> None:
    created = now()
    queued = TaskRecord(id="t1", type="echo", data={"message": "hello"}, created_at=created)
    hot = hot_record(queued)
    for left_out in ('"id"', "null", '"status"', '"attempts"', '"priority"'):
        assert left_out not in hot
    assert read_record("t1", hot) == queued
    retrying = queued.model_copy(update={"status": TaskStatus.RETRYING, "attempts": 2, "error": "boom"})
    assert read_record("t1", hot_record(retrying)) == retrying
    # A final record is kept whole (Postgres stores the same JSON) and reads back the same.
    final = queued.model_copy(update={"status": TaskStatus.COMPLETED, "result": {"ok": 1}, "completed_at": created})
    assert read_record("t1", final.model_dump_json()) == final


def test_queued_records_route_each_task_by_priority_and_schedule() -> None:
    created = now()
    submits = [
        TaskSubmit(type="e"),
        TaskSubmit(type="e", priority=Priority.HIGH),
        TaskSubmit(type="e", priority=Priority.LOW, data={"n": 1}),
        TaskSubmit(type="e", priority=Priority.HIGH, delay_seconds=2.5),
    ]
    new = queued_records(submits, created)
    due_ms = round(created.timestamp() * 1000) + 2500
    assert [route for _, _, route in new] == ["", "h", "l", str(due_ms)]
    records = [read_record(task_id, raw) for task_id, raw, _ in new]
    assert [r.status for r in records] == [TaskStatus.QUEUED] * 3 + [TaskStatus.SCHEDULED]
    assert [r.priority for r in records] == [Priority.NORMAL, Priority.HIGH, Priority.LOW, Priority.HIGH]
    assert records[3].run_at is not None
    assert round(records[3].run_at.timestamp() * 1000) == due_ms
    for (_, raw, _), record in zip(new, records, strict=True):
        assert raw == hot_record(record).encode()


def test_a_body_schema_has_no_refs_left_to_resolve() -> None:
    class Inner(BaseModel):
        n: int

    class Outer(BaseModel):
        items: list[Inner]
        one: Inner

    for model in (Outer, TaskBulkSubmit, TaskSubmit):
        schema = json_body_schema(model)["requestBody"]["content"]["application/json"]["schema"]
        assert "$ref" not in str(schema)
        assert "$defs" not in schema
    bulk = json_body_schema(TaskBulkSubmit)["requestBody"]["content"]["application/json"]["schema"]
    assert bulk["properties"]["tasks"]["items"]["required"] == ["type"]


def _bench(drain: float, copy: float) -> dict[str, Any]:
    return {
        "http": {
            "floor": {"rps": 1000.0},
            "ingest": {"rps": 700.0},
            "ingest_half": {"p99_ms": 3.0},
            "bulk": {"tasks_per_s": 14_000.0},
        },
        "drain": {"tasks_per_s": drain},
        "peer": {"jobs_per_s": 1000.0},
        "limits": {"copy": {"rows_per_s": copy}},
        "latency": {"p50_ms": 4.0},
        "memory": {"idle": {"worker-service-1": {"rss_mb": 60.0, "pss_mb": 40.0}}},
    }


def test_bench_targets_are_judged_on_the_unrounded_ratio() -> None:
    # 0.0997 shows as 0.100 at three places, and is still short of 0.1.
    verdicts = {what.split(" = ")[0]: met for what, _, met in targets(_bench(drain=9_970, copy=100_000))}
    assert verdicts["drain / COPY"] is False
    assert verdicts["ingest / floor"] is True  # exactly 0.7
    assert verdicts["bulk / single ingest"] is True  # exactly 20
    verdicts = {what.split(" = ")[0]: met for what, _, met in targets(_bench(drain=10_000, copy=100_000))}
    assert verdicts["drain / COPY"] is True


def test_final_states() -> None:
    assert {s for s in TaskStatus if s.is_final} == {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "0123abcd", 3, "tasks:queue", "tasks:stats", "", 3600, -1, 0),
        ("SET", "task:é", "x" * 100_000),  # non-ASCII, and bigger than redis-py's chunking cutoff
        ("SET", b"raw", b"\x00\xff"),
        ("CONFIG GET", "maxmemory"),  # a command name with a space: split as redis-py does
        ("INCRBYFLOAT", "k", 1.5),  # a float: redis-py's own packer
        ("EVALSHA", "sha", 0, *[f"id-{i}" for i in range(2000)]),
    ],
)
def test_redis_commands_are_packed_as_redis_py_packs_them(args: tuple[Any, ...]) -> None:
    expected = b"".join(Connection().pack_command(*args))
    assert b"".join(_TcpConnection().pack_command(*args)) == expected
    assert b"".join(_UnixConnection(path="/nowhere").pack_command(*args)) == expected


@pytest.mark.parametrize(
    ("bad", "error"),
    [(True, DataError), (None, DataError), (object(), DataError), ("\ud800", UnicodeEncodeError)],
)
def test_unpackable_redis_arguments_fail_as_redis_py_fails(bad: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        Connection().pack_command("SET", "k", bad)
    with pytest.raises(error):
        _TcpConnection().pack_command("SET", "k", bad)


@pytest.mark.parametrize(
    ("url", "expected"),
    [("redis://127.0.0.1:6379/0", _TcpConnection), ("unix:///run/redis.sock?db=0", _UnixConnection)],
)
def test_every_redis_client_uses_our_connection_class(url: str, expected: type) -> None:
    client = create_redis(Settings(redis_url=url))
    assert client.connection_pool.connection_class is expected
    assert type(client.connection_pool.make_connection()) is expected  # type: ignore[no-untyped-call]


def test_the_workers_task_metrics_read_as_prometheus_clients_own_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    times = prom._TaskTimes()
    ours.register(times)
    labels = ["status"]
    about = "Processing time of the tasks this worker finished, by final status"
    histogram = Histogram("ss_task_processing_seconds", about, labels, buckets=times.BUCKETS, registry=theirs)
    counter = Counter("ss_worker_tasks", "Tasks this worker finished, by final status", labels, registry=theirs)
    for status, seconds in [
        ("completed", 0.003),
        ("completed", 0.05),
        ("failed", 0.7),
        ("completed", 100.0),
        ("completed", 0.005),
    ]:
        times.observe(status, seconds)
        histogram.labels(status).observe(seconds)
        counter.labels(status).inc()
    expected = [line for line in generate_latest(theirs).decode().splitlines() if "_created" not in line]
    assert sorted(generate_latest(ours).decode().splitlines()) == sorted(expected)


def test_a_started_service_freezes_its_heap_and_collects_less_often() -> None:
    before = gc.get_threshold()
    try:
        heap.settle()
        assert gc.get_freeze_count() > 0  # start-up's objects are out of the collector's sight
        assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_bench_takes_the_median_round_whole() -> None:
    rounds = [{"rps": 900.0, "p99_ms": 9.0}, {"rps": 300.0, "p99_ms": 90.0}, {"rps": 600.0, "p99_ms": 6.0}]
    assert median_round(rounds) == {"rps": 600.0, "p99_ms": 6.0}  # its own p99, not another round's
