"""Batch claims: atomic moves into the processing list, ack only after commit, a dead worker's batch requeued."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from core import db, keys
from core.connections import create_pg_pool
from core.models import TaskRecord, TaskStatus, TaskSubmit
from core.queue import Claim, TaskQueue
from core.settings import Settings
from core.timeutil import now
from harness.stacks import Stack
from worker_service.persister import Persister


@pytest.fixture
def paused(stack: Stack) -> Iterator[None]:
    """Real workers stopped and every list a claim takes from set aside, so only the test claims
    from them, and only what it queued."""
    with stack.restoring():  # starts the workers again and waits for their heartbeats
        for name in stack.worker_programs():
            stack.supervisor.stop(name)
        token = uuid.uuid4()
        aside = {name: f"{name}:aside-{token}" for name in (keys.SINGLE.cancelled, *keys.SINGLE.queues)}
        held = [name for name in aside if stack.redis.exists(name)]
        for name in held:
            stack.redis.rename(name, aside[name])
        try:
            yield
        finally:
            for name in held:
                # Put the backlog back behind whatever the test left (it runs after them).
                while stack.redis.lmove(aside[name], name, "LEFT", "LEFT") is not None:
                    pass


def _run(stack: Stack, body: Any) -> Any:
    async def go() -> Any:
        async with stack.queue() as queue:
            return await body(queue)

    return asyncio.run(go())


def test_claim_many_moves_exactly_n_ids_oldest_first_with_their_records(stack: Stack, paused: None) -> None:
    worker = f"test-claims-{uuid.uuid4().hex[:6]}"

    async def body(queue: TaskQueue) -> None:
        submitted = [(await queue.enqueue(TaskSubmit(type="echo", data={"i": i}))).id for i in range(10)]
        claimed = await queue.claim_many(worker, 4)
        assert [c.id for c in claimed] == submitted[:4]
        assert [c.record.data for c in claimed if c.record] == [{"i": i} for i in range(4)]
        assert [c.attempt for c in claimed] == [1] * 4
        held = await queue.redis.lrange(keys.SINGLE.processing(worker), 0, -1)
        assert sorted(held) == sorted(submitted[:4])
        assert await queue.redis.llen(keys.SINGLE.queue) == 6
        rest = await queue.claim_many(worker, 100)
        assert [c.id for c in rest] == submitted[4:]
        assert await queue.claim_many(worker, 5) == []
        assert await queue.redis.llen(keys.SINGLE.processing(worker)) == 10
        await queue.ack_many(worker, submitted)
        assert await queue.redis.llen(keys.SINGLE.processing(worker)) == 0

    _run(stack, body)


def test_concurrent_claims_never_share_an_id(stack: Stack, paused: None) -> None:
    async def body(queue: TaskQueue) -> None:
        submitted = await queue.enqueue_many([TaskSubmit(type="echo", data={"i": i}) for i in range(300)])
        batches = await asyncio.gather(*(queue.claim_many(f"test-race-{n}", 7) for n in range(60)))
        got = [c.id for batch in batches for c in batch]
        assert sorted(got) == sorted(submitted.ids)  # each exactly once
        for n in range(60):
            await queue.redis.delete(keys.SINGLE.processing(f"test-race-{n}"))

    _run(stack, body)


def test_a_purged_record_is_claimed_as_none(stack: Stack, paused: None) -> None:
    worker = f"test-purged-{uuid.uuid4().hex[:6]}"

    async def body(queue: TaskQueue) -> None:
        task_id = (await queue.enqueue(TaskSubmit(type="echo"))).id
        await queue.redis.delete(keys.SINGLE.task(task_id))
        assert await queue.claim_many(worker, 3) == [Claim(task_id, None, 1)]
        await queue.ack(worker, task_id)

    _run(stack, body)


def test_a_dead_workers_whole_batch_is_requeued(stack: Stack, paused: None) -> None:
    worker = f"test-dead-{uuid.uuid4().hex[:6]}"

    async def body(queue: TaskQueue) -> None:
        ids = (await queue.enqueue_many([TaskSubmit(type="echo") for _ in range(25)])).ids
        await queue.beat(worker, {"worker_id": worker}, ttl=1)
        assert len(await queue.claim_many(worker, 25)) == 25
        await queue.redis.delete(keys.heartbeat(worker))  # as if it died: the heartbeat expired
        requeued = await queue.reap_dead_workers()
        assert sorted(requeued) == sorted(ids)
        assert await queue.redis.llen(keys.SINGLE.processing(worker)) == 0
        assert sorted(await queue.redis.lrange(keys.SINGLE.queue, 0, -1)) == sorted(ids)
        records = await queue.get_many(ids)
        assert {r.status for r in records if r} == {TaskStatus.QUEUED}

    _run(stack, body)


def test_every_claim_counts_an_attempt_until_the_ack(stack: Stack, paused: None) -> None:
    """A worker that dies mid-task wrote nothing, yet the next claim knows it is attempt 2."""
    worker = f"test-attempts-{uuid.uuid4().hex[:6]}"

    async def body(queue: TaskQueue) -> None:
        task_id = (await queue.enqueue(TaskSubmit(type="echo"))).id
        await queue.beat(worker, {"worker_id": worker}, ttl=1)
        assert [c.attempt for c in await queue.claim_many(worker, 1)] == [1]
        await queue.redis.delete(keys.heartbeat(worker))  # it died running the task
        assert await queue.reap_dead_workers() == [task_id]
        # The blocking path counts the same way as the batch path.
        assert await queue.claim(worker, 1) == task_id
        again = await queue.claimed(task_id)
        assert again.attempt == 2
        assert again.record is not None
        await queue.ack(worker, task_id)
        assert await queue.redis.hexists(keys.SINGLE.attempts, task_id) == 0  # gone with its claim

    _run(stack, body)


@asynccontextmanager
async def persisting(
    stack: Stack, queue: TaskQueue, worker: str
) -> AsyncIterator[tuple[Persister, asyncpg.Pool, asyncio.Task[None]]]:
    """A persister of its own running for `worker`, its Postgres pool and its loop's task."""
    pool = await create_pg_pool(Settings(database_url=stack.database_url), min_size=0, max_size=2)
    persister = Persister(queue, pool, worker)
    runner = asyncio.create_task(persister.run())
    try:
        yield persister, pool, runner
    finally:
        runner.cancel()
        await pool.close()


async def claimed_tasks(queue: TaskQueue, worker: str, count: int) -> tuple[list[str], list[TaskRecord]]:
    """`count` echo tasks queued and claimed by `worker`: their ids and claimed records."""
    ids = (await queue.enqueue_many([TaskSubmit(type="echo", data={"i": i}) for i in range(count)])).ids
    records = [claim.record for claim in await queue.claim_many(worker, count)]
    assert None not in records
    return ids, [r for r in records if r is not None]


def test_the_persister_acks_only_after_the_commit(stack: Stack, paused: None, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = f"test-ack-{uuid.uuid4().hex[:6]}"

    async def body(queue: TaskQueue) -> None:
        committing, commit_may_finish = asyncio.Event(), asyncio.Event()
        real_upsert = db.upsert_records

        async def held_upsert(pool: Any, records: Any) -> None:
            committing.set()
            await commit_may_finish.wait()
            await real_upsert(pool, records)

        monkeypatch.setattr(db, "upsert_records", held_upsert)
        async with persisting(stack, queue, worker) as (persister, pool, _):
            ids, records = await claimed_tasks(queue, worker, 5)
            for record in records:
                persister.put(record.model_copy(update={"status": TaskStatus.COMPLETED, "completed_at": now()}))
            await asyncio.wait_for(committing.wait(), 10)
            # Recorded in Redis and being committed, not committed yet: every claim is still held.
            assert await queue.redis.llen(keys.SINGLE.processing(worker)) == 5
            commit_may_finish.set()
            assert await persister.flush(10)
            assert await queue.redis.llen(keys.SINGLE.processing(worker)) == 0
            rows = await pool.fetch("SELECT status FROM tasks WHERE id = ANY($1::uuid[])", ids)
            assert [r["status"] for r in rows] == ["completed"] * 5

    _run(stack, body)


def test_a_record_postgres_refuses_neither_blocks_the_batch_nor_stops_the_persister(stack: Stack, paused: None) -> None:
    worker = f"test-refused-{uuid.uuid4().hex[:6]}"

    async def body(queue: TaskQueue) -> None:
        async with persisting(stack, queue, worker) as (persister, pool, runner):
            ids, records = await claimed_tasks(queue, worker, 3)
            for n, record in enumerate(records):
                # The middle one carries a result jsonb cannot hold (U+0000), as a handler might return.
                result = {"bad": "x\x00y"} if n == 1 else {"ok": n}
                persister.put(
                    record.model_copy(update={"status": TaskStatus.COMPLETED, "completed_at": now(), "result": result})
                )
            assert await persister.flush(15)
            assert await queue.redis.llen(keys.SINGLE.processing(worker)) == 0
            rows = await pool.fetch("SELECT id::text, status, error FROM tasks WHERE id = ANY($1::uuid[])", ids)
            by_id = {r["id"]: r for r in rows}
            assert [by_id[i]["status"] for i in ids] == ["completed", "failed", "completed"]
            assert "not storable" in by_id[ids[1]]["error"]
            assert not runner.done()  # the loop lives on

    _run(stack, body)
