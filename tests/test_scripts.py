"""The queue scripts' wrappers against the real Redis: each one's KEYS and ARGV land where its Lua reads them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from core import keys
from core.models import TaskRecord, TaskStatus, TaskSubmit
from core.queue import QueueFull, Refused, TaskQueue
from core.records import FinalRecord
from core.scripts import Lease
from core.timeutil import now
from harness.stacks import Stack

T = TypeVar("T")


def _run(stack: Stack, body: Callable[[TaskQueue], Awaitable[T]], **options: Any) -> T:
    async def go() -> T:
        async with stack.queue(**options) as queue:
            return await body(queue)

    return asyncio.run(go())


@pytest.fixture
def recent_kept_aside(stack: Stack) -> Iterator[None]:
    """The shared recent list as it was, put back after a test that trims it."""
    kept = stack.redis.lrange(keys.SINGLE.recent, 0, -1)
    try:
        yield
    finally:
        with stack.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.SINGLE.recent)
            if kept:
                pipe.rpush(keys.SINGLE.recent, *kept)
            pipe.execute()


def test_both_enqueue_scripts_push_count_and_trim_the_recent_list_alike(stack: Stack, recent_kept_aside: None) -> None:
    submits = [TaskSubmit(type="echo", data={"i": i}) for i in range(3)]
    accepted = int(stack.redis.hget(keys.SINGLE.stats, keys.STAT_ACCEPTED) or 0)

    many = _run(stack, lambda queue: queue.enqueue_many(submits), recent_kept=2)
    assert stack.redis.lrange(keys.SINGLE.recent, 0, -1) == many.ids[:0:-1]  # the newest two, newest first
    for task_id, submit in zip(many.ids, submits, strict=True):
        assert stack.task(task_id)["data"] == submit.data

    each = _run(stack, lambda queue: queue.enqueue_each(submits), recent_kept=2)
    ids = [outcome.id for outcome in each if not isinstance(outcome, Refused)]
    assert len(ids) == 3
    assert stack.redis.lrange(keys.SINGLE.recent, 0, -1) == ids[:0:-1]
    assert int(stack.redis.hget(keys.SINGLE.stats, keys.STAT_ACCEPTED) or 0) == accepted + 6


def test_a_used_up_byte_budget_is_one_refusal_raised_or_returned(stack: Stack) -> None:
    # A budget of one byte: Redis already uses more, so every task is refused for memory.
    submits = [TaskSubmit(type="echo"), TaskSubmit(type="echo")]
    accepted = int(stack.redis.hget(keys.SINGLE.stats, keys.STAT_ACCEPTED) or 0)
    stack.redis.delete(keys.SINGLE.memory_room)  # a reading under the gateways' budget would answer instead
    try:
        outcomes = _run(stack, lambda queue: queue.enqueue_each(submits), queue_max_bytes=1)
        assert all(isinstance(o, Refused) and o.memory for o in outcomes), outcomes
        stack.redis.delete(keys.SINGLE.memory_room)
        with pytest.raises(QueueFull) as full:
            _run(stack, lambda queue: queue.enqueue(submits[0]), queue_max_bytes=1)
        assert full.value.refused.memory
        assert "memory budget" in str(full.value)
    finally:
        stack.redis.delete(keys.SINGLE.memory_room)  # the gateways read their own budget again
    assert int(stack.redis.hget(keys.SINGLE.stats, keys.STAT_ACCEPTED) or 0) == accepted


def test_a_lease_is_held_extended_and_never_stolen(stack: Stack) -> None:
    lease = f"test:lease:{uuid.uuid4()}"

    async def body(queue: TaskQueue) -> list[bool]:
        take = Lease(queue.redis)
        try:
            return [
                await take(lease=lease, holder="a", ttl_ms=60_000),
                await take(lease=lease, holder="b", ttl_ms=60_000),
                await take(lease=lease, holder="a", ttl_ms=120_000),
            ]
        finally:
            await queue.redis.delete(lease)

    assert _run(stack, body) == [True, False, True]


def test_write_batch_stores_saves_and_finals_where_each_belongs(stack: Stack) -> None:
    saved, completed, failed = (str(uuid.uuid4()) for _ in range(3))
    started = now()
    save = TaskRecord(id=saved, type="echo", created_at=started, status=TaskStatus.PROCESSING)
    finals = [
        TaskRecord(id=task_id, type="echo", created_at=started, status=status, completed_at=started)
        for task_id, status in ((completed, TaskStatus.COMPLETED), (failed, TaskStatus.FAILED))
    ]
    encoded = [FinalRecord.of(task.model_copy(update={"processing_time": 0.25})) for task in finals]
    entries = [f"{final.finished_ms}:0.250000:{final.status.value}" for final in encoded]
    before = stack.redis.hmget(keys.SINGLE.stats, [keys.STAT_COMPLETED, keys.STAT_FAILED])

    async def body(queue: TaskQueue) -> None:
        await queue.write_encoded([save], encoded)

    try:
        _run(stack, body, result_ttl=600)
        assert stack.task(saved)["status"] == "processing"
        assert stack.redis.ttl(keys.SINGLE.task(saved)) == -1  # a non-final state does not expire
        for final in encoded:
            assert stack.redis.get(keys.SINGLE.task(final.id)) == final.raw
            assert 0 < stack.redis.ttl(keys.SINGLE.task(final.id)) <= 600
        assert failed in stack.redis.lrange(keys.SINGLE.dead, 0, 10)
        assert completed not in stack.redis.lrange(keys.SINGLE.dead, 0, -1)
        assert set(entries) <= set(stack.redis.lrange(keys.SINGLE.durations, 0, 50))
        after = stack.redis.hmget(keys.SINGLE.stats, [keys.STAT_COMPLETED, keys.STAT_FAILED])
        assert [int(a or 0) - int(b or 0) for a, b in zip(after, before, strict=True)] == [1, 1]
    finally:
        with stack.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*(keys.SINGLE.task(t) for t in (saved, completed, failed)))
            pipe.lrem(keys.SINGLE.dead, 0, failed)
            for entry in entries:
                pipe.lrem(keys.SINGLE.durations, 0, entry)
            pipe.hincrby(keys.SINGLE.stats, keys.STAT_COMPLETED, -1)
            pipe.hincrby(keys.SINGLE.stats, keys.STAT_FAILED, -1)
            pipe.execute()
