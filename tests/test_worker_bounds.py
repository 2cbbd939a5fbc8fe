"""A worker holds no state a client can grow, keeps claiming past a malformed record, and tells
clients plain reasons (no exception class names, no database text).

The first tests run a worker's parts in process (a Consumer's attempts, a Persister's buffer);
the last plants malformed records in the session stack's real queue.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any, cast

import asyncpg
import pytest
from redis.asyncio import Redis as AsyncRedis

from core import keys
from core.connections import create_pg_pool
from core.models import TaskRecord, TaskStatus, new_task_id
from core.queue import FinalRecord, TaskQueue
from core.settings import Settings
from core.task_types import REGISTRY, TaskType
from core.timeutil import now
from harness.stacks import Stack, wait_for
from worker_service.consumer import HANDLER_FAULT, UNREADABLE, Consumer
from worker_service.persister import NOT_STORABLE, Persister, batch_length

#: Names a class or a driver's message would carry into a task's error.
_INTERNAL_WORDS = ("Error", "Exception", "Postgres", "asyncpg", "jsonb", "Traceback")


def _offline_consumer(**settings: Any) -> Consumer:
    """A Consumer whose queue and pool are never reached: the tests here only run attempts
    that finish at once (no retry is parked, nothing is persisted)."""
    queue = TaskQueue(AsyncRedis(host="127.0.0.1", port=1))
    persister = Persister(queue, cast(asyncpg.Pool, None), "offline")
    return Consumer(queue, persister, Settings(**settings), "offline")


def _held(consumer: Consumer) -> int:
    """Entries in every container the consumer keeps, its attempt registry's included."""
    parts = (*vars(consumer).values(), *vars(consumer.attempts).values())
    return sum(len(v) for v in parts if isinstance(v, dict | set | list))


def _task(task_type: str, data: dict[str, Any]) -> TaskRecord:
    return TaskRecord(id=new_task_id(), type=task_type, data=data, created_at=now())


def test_task_type_names_leave_no_state_in_the_worker() -> None:
    consumer = _offline_consumer(task_timeouts="slowpoke=0.2", max_attempts=1)

    async def body() -> None:
        watch = asyncio.create_task(consumer.watch_loop())
        try:
            before = _held(consumer)
            for i in range(1000):  # client-chosen names, each new
                final = await consumer.run_attempt(_task(f"made-up-{i}", {"work_ms": 0}), 1)
                assert final is not None
                assert final.status is TaskStatus.COMPLETED
            assert _held(consumer) == before, "per-type state grew with the client's type names"
            # The configured per-type timeout still applies (the watch times the attempt out).
            slow = await consumer.run_attempt(_task("slowpoke", {"work_ms": 5000}), 1)
            assert slow is not None
            assert slow.error == "timed out after 0.2 s"
        finally:
            watch.cancel()

    asyncio.run(body())
    print(f"\n1000 distinct task types: consumer state {_held(consumer)} entries (unchanged)")


def test_a_handler_fault_reaches_the_client_as_a_plain_message(monkeypatch: pytest.MonkeyPatch) -> None:
    async def explode(data: dict[str, Any]) -> Any:
        return {"ratio": 1 / data["zero"]}

    monkeypatch.setitem(REGISTRY.types, "explode", TaskType("explode", explode))
    consumer = _offline_consumer(max_attempts=1)
    final = asyncio.run(consumer.run_attempt(_task("explode", {"zero": 0}), 1))
    assert final is not None
    assert final.status is TaskStatus.FAILED
    assert final.error == HANDLER_FAULT
    assert not any(word in final.error for word in _INTERNAL_WORDS), final.error


def _big_final(result_bytes: int) -> TaskRecord:
    return _task("echo", {}).model_copy(
        update={"status": TaskStatus.COMPLETED, "completed_at": now(), "result": {"echo": "r" * result_bytes}}
    )


def test_batches_are_cut_by_bytes() -> None:
    finals = [FinalRecord.of(_big_final(200_000)) for _ in range(5)]
    assert batch_length(finals, 500, 512 * 1024) == 2
    assert batch_length(finals, 500, 1) == 1  # one record always goes, however large
    assert batch_length(finals, 3, 1 << 30) == 3


def test_the_persister_buffer_is_bounded_by_bytes_and_drains(stack: Stack) -> None:
    settings = Settings(database_url=stack.database_url)

    async def body(queue: TaskQueue) -> None:
        pool = await create_pg_pool(settings, min_size=0, max_size=2)
        persister = Persister(
            queue, pool, f"test-bytes-{uuid.uuid4().hex[:6]}", capacity_bytes=1024 * 1024, batch_bytes=300_000
        )
        try:
            finals = [_big_final(200_000) for _ in range(8)]
            n = 0
            while persister.held_bytes < 1024 * 1024:
                persister.put(finals[n])
                n += 1
            # Far below the record count bound (5,000), the byte bound pauses claiming.
            assert n <= 6
            assert len(persister) == n
            assert not persister.has_room()
            runner = asyncio.create_task(persister.run())
            try:
                assert await persister.flush(20)
                await asyncio.wait_for(persister.wait_for_room(), 5)
                assert persister.held_bytes == 0
            finally:
                runner.cancel()
            ids = [f.id for f in finals[:n]]
            rows = await pool.fetch("SELECT status FROM tasks WHERE id = ANY($1::uuid[])", ids)
            assert [r["status"] for r in rows] == ["completed"] * n
            print(f"\npersister: paused claiming at {n} records / {persister.capacity_bytes} bytes; all {n} committed")
        finally:
            await pool.close()

    async def go() -> None:
        async with stack.queue() as queue:
            await body(queue)

    asyncio.run(go())


def test_a_record_postgres_refuses_gets_a_plain_error(stack: Stack) -> None:
    settings = Settings(database_url=stack.database_url)

    async def go() -> None:
        async with stack.queue() as queue:
            pool = await create_pg_pool(settings, min_size=0, max_size=2)
            persister = Persister(queue, pool, f"test-refused-{uuid.uuid4().hex[:6]}")
            runner = asyncio.create_task(persister.run())
            try:
                # jsonb cannot hold U+0000, as a handler might return it.
                final = _big_final(10).model_copy(update={"result": {"bad": "x\x00y"}})
                persister.put(final)
                assert await persister.flush(15)
                row = (await pool.fetch("SELECT status, error FROM tasks WHERE id = $1::uuid", final.id))[0]
                assert (row["status"], row["error"]) == ("failed", NOT_STORABLE)
                assert not runner.done()
            finally:
                runner.cancel()
                await pool.close()

    asyncio.run(go())


@pytest.fixture
def planted(stack: Stack) -> Iterator[dict[str, str]]:
    """Malformed records pushed through the real queue keys, as a hand-written or broken client
    could: a record with wrong fields, one that is no JSON, one under an id that is no task id."""
    plants = {
        "wrong_fields": (str(uuid.uuid4()), json.dumps({"id": 5, "type": "echo", "status": "lost"})),
        "not_json": (str(uuid.uuid4()), "this is not JSON"),
        "no_task_id": (f"not-a-task-{uuid.uuid4().hex[:8]}", "{}"),
    }
    with stack.redis.pipeline(transaction=True) as pipe:
        for task_id, raw in plants.values():
            pipe.set(keys.SINGLE.task(task_id), raw)
            pipe.lpush(keys.SINGLE.queue, task_id)
        pipe.execute()
    yield {name: task_id for name, (task_id, _) in plants.items()}
    for task_id, _ in plants.values():
        stack.redis.lrem(keys.SINGLE.dead, 0, task_id)


def test_a_malformed_record_is_dead_lettered_and_claiming_goes_on(stack: Stack, planted: dict[str, str]) -> None:
    # Claimed along with good tasks (claim_many) and on their own (the blocking claim).
    good = [stack.submit("echo", {"i": i}) for i in range(20)]
    finals = stack.wait_all_final(good, timeout=30)
    assert {t["status"] for t in finals.values()} == {"completed"}

    for name in ("wrong_fields", "not_json"):
        seen = stack.wait_status(planted[name], {"failed"}, timeout=20)
        assert seen["error"] == UNREADABLE
        assert not any(word in seen["error"] for word in _INTERNAL_WORDS)
        assert seen["type"] == ("echo" if name == "wrong_fields" else "unknown")
        assert planted[name] in stack.redis.lrange(keys.SINGLE.dead, 0, -1)
    no_id = keys.SINGLE.task(planted["no_task_id"])
    wait_for(lambda: not stack.redis.exists(no_id), 10, "the id-less entry to be dropped")
    processing = [keys.SINGLE.processing(str(w)) for w in stack.redis.smembers(keys.WORKERS)]
    assert not any(planted["no_task_id"] in stack.redis.lrange(p, 0, -1) for p in processing)

    # Every live worker still claims: a new task completes, and no heartbeat says otherwise.
    assert all(beat["claiming"] for beat in stack.heartbeats())
    later = stack.submit("echo", {"after": True})
    assert stack.wait_status(later, {"completed"}, timeout=20)["result"] == {"echo": {"after": True}}
