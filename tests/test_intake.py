"""The submission fast path: concurrent submissions share one enqueue, each still judged on its own."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from core import keys
from core.coalesce import Coalescer
from core.connections import create_redis
from core.models import TaskSubmit
from core.queue import Accepted, Refused
from core.settings import Settings
from harness.stacks import Stack

# -- the coalescer -------------------------------------------------------------------------


def test_concurrent_calls_share_a_batch_and_get_their_own_results() -> None:
    batches: list[list[int]] = []

    async def send(items: list[int]) -> list[int]:
        batches.append(items)
        await asyncio.sleep(0)  # a round trip: later calls pile up meanwhile
        return [i * 10 for i in items]

    async def go() -> list[int]:
        square = Coalescer(send)
        return await asyncio.gather(*(square(i) for i in range(50)))

    assert asyncio.run(go()) == [i * 10 for i in range(50)]
    assert sum(len(b) for b in batches) == 50
    assert len(batches) < 5  # shared: not one round trip each
    assert [i for b in batches for i in b] == list(range(50))  # in submission order


def test_a_lone_call_goes_out_at_once() -> None:
    async def send(items: list[str]) -> list[str]:
        return items

    async def go() -> str:
        echo: Coalescer[str, str] = Coalescer(send)
        return await asyncio.wait_for(echo("alone"), 1)

    assert asyncio.run(go()) == "alone"


def test_batches_are_capped() -> None:
    sizes: list[int] = []

    async def send(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    async def go() -> None:
        capped = Coalescer(send, max_batch=7)
        await asyncio.gather(*(capped(i) for i in range(30)))

    asyncio.run(go())
    assert sizes
    assert max(sizes) <= 7
    assert sum(sizes) == 30


def test_a_failed_batch_fails_every_caller_in_it_and_the_next_batch_still_goes() -> None:
    calls = 0

    async def send(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("redis went away")
        return items

    async def go() -> tuple[list[Any], int]:
        flaky = Coalescer(send)
        first = await asyncio.gather(*(flaky(i) for i in range(5)), return_exceptions=True)
        return first, await flaky(99)

    first, later = asyncio.run(go())
    assert all(isinstance(r, ConnectionError) for r in first)
    assert later == 99


def test_a_send_that_returns_the_wrong_count_fails_its_callers_instead_of_hanging() -> None:
    async def send(items: list[int]) -> list[int]:
        return items[:-1]

    async def go() -> None:
        short = Coalescer(send)
        await asyncio.wait_for(asyncio.gather(short(1), short(2)), 1)

    with pytest.raises(RuntimeError, match="got 1 results"):
        asyncio.run(go())


def test_callers_are_not_left_waiting_when_the_flush_is_cancelled() -> None:
    async def go() -> list[Any]:
        started = asyncio.Event()
        flushes: list[asyncio.Task[Any]] = []

        async def send(items: list[int]) -> list[int]:
            # `send` runs inside the coalescer's flush: the task to cancel, as a shutdown would.
            flush = asyncio.current_task()
            assert flush is not None
            flushes.append(flush)
            started.set()
            await asyncio.sleep(30)
            return items

        stuck = Coalescer(send)
        callers = [asyncio.ensure_future(stuck(i)) for i in range(3)]
        await started.wait()
        later = asyncio.ensure_future(stuck(99))  # staged behind the batch on the wire
        await asyncio.sleep(0)
        flushes[0].cancel()
        return await asyncio.wait_for(asyncio.gather(*callers, later, return_exceptions=True), 1)

    outcomes = asyncio.run(go())
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)


# -- enqueue_each on the real Redis ----------------------------------------------------------


def test_enqueue_each_judges_every_task_on_its_own(stack: Stack, workers_paused: list[str]) -> None:
    depth = stack.redis.llen(keys.SINGLE.queue)
    requests_before = int(stack.redis.hget(keys.SINGLE.stats, keys.STAT_REQUESTS) or 0)

    async def go() -> list[Accepted | Refused]:
        async with stack.queue(queue_max=depth + 3) as queue:
            return await queue.enqueue_each(
                [TaskSubmit(type="echo", data={"i": i}) for i in range(5)], count_requests=True
            )

    outcomes = asyncio.run(go())
    accepted = [o for o in outcomes if isinstance(o, Accepted)]
    assert [type(o) for o in outcomes] == [Accepted] * 3 + [Refused] * 2  # first come, first served
    assert [a.position for a in accepted] == [depth + 1, depth + 2, depth + 3]
    assert outcomes[3:] == [Refused(depth + 3)] * 2
    for a in accepted:
        assert stack.redis.get(keys.SINGLE.task(a.id)) is not None
        assert a.id in stack.redis.lrange(keys.SINGLE.queue, 0, -1)
    # Every request is counted, refused or not, as one by one submission counts them.
    assert int(stack.redis.hget(keys.SINGLE.stats, keys.STAT_REQUESTS) or 0) == requests_before + 5
    ids = [a.id for a in accepted]
    assert stack.redis.lrange(keys.SINGLE.recent, 0, 2) == ids[::-1]


def test_workers_run_coalesced_submissions(stack: Stack) -> None:
    async def burst() -> list[str]:
        async with httpx.AsyncClient(base_url=stack.lb, timeout=30) as client:
            responses = await asyncio.gather(*(client.post("/api/task", json={"type": "echo"}) for _ in range(40)))
        return [r.json()["task_id"] for r in responses]

    final = stack.wait_all_final(asyncio.run(burst()))
    assert {t["status"] for t in final.values()} == {"completed"}


# -- the header and body the route reads itself ------------------------------------------------


# -- a stalled Redis still fails fast ---------------------------------------------------------


def test_a_redis_that_stops_reading_times_out_a_write_and_a_read() -> None:
    """A peer that accepts and never reads or answers: the write (socket buffers full) and the
    read both give up after the configured timeout instead of hanging the request."""

    async def go() -> tuple[float, float]:
        peers: list[asyncio.StreamWriter] = []

        async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peers.append(writer)

        server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_seconds=0.5)
        redis = create_redis(settings)
        try:
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                await redis.set("big", b"x" * (64 * 2**20))  # more than loopback buffers hold
            write = time.monotonic() - started
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                await redis.get("anything")
            return write, time.monotonic() - started
        finally:
            await redis.aclose()
            for peer in peers:
                peer.close()
            server.close()
            await server.wait_closed()

    write, read = asyncio.run(go())
    assert write < 5
    assert read < 5
