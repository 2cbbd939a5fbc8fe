"""The alert webhook across a restart of the dashboard's leader: a notice it already sent is not
sent again (the sent flag lives with the alert in Redis). Real Redis and PostgreSQL, a webhook
receiver on loopback, the alerting driven tick by tick with the time the test gives."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from core.models import TaskSpec
from core.queue import TaskQueue
from core.samples import Sample
from core.settings import Settings
from monitoring.alerting import Alerting
from tests.inprocess.apps import MARKS, eventually
from tests.inprocess.servers import Servers

pytestmark = MARKS


class Receiver:
    """A webhook endpoint on loopback: answers 200 and keeps each notice's event, alert name and
    Slack-compatible text."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        body = json.loads(await reader.readexactly(length))
        self.seen.append((body["event"], body["alert"]["name"], body["text"]))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    def notices(self, name: str, event: str) -> int:
        return sum(1 for e, n, text in self.seen if (e, n) == (event, name) and name in text)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    got = Receiver()
    server = await asyncio.start_server(got.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield got, f"http://127.0.0.1:{port}/hook"
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def queue(servers: Servers) -> AsyncIterator[TaskQueue]:
    async with servers.queue() as direct:
        yield direct


async def test_a_restarted_leader_does_not_resend_a_notice_already_sent(
    queue: TaskQueue, pool: asyncpg.Pool, receiver: tuple[Receiver, str]
) -> None:
    got, url = receiver
    settings = Settings(alert_webhook_url=url, alert_hold_seconds=0, alert_clear_seconds=0)
    for _ in range(3):
        await queue.enqueue(TaskSpec(type="echo"))
    t = time.time()
    stuck = Sample(t=t, queue_length=3, workers=0)  # work queued, no live worker

    first = Alerting(queue, queue.redis, pool, settings)
    first.start()
    try:

        async def fired_and_sent() -> bool:
            nonlocal t
            t += 1
            await first.tick(stuck.model_copy(update={"t": t}), t, leading=True)
            return got.notices("no_live_worker", "firing") == 1 and first.active["no_live_worker"].sent_firing

        await eventually(fired_and_sent, 10, "the no_live_worker notice sent")
    finally:
        await first.stop()

    # The next leader (a restart) takes over the stored alerts and ticks on the same condition.
    second = Alerting(queue, queue.redis, pool, settings)
    second.start()
    try:
        for _ in range(5):
            t += 1
            await second.tick(stuck.model_copy(update={"t": t}), t, leading=True)
            await asyncio.sleep(0.05)
        assert second.active["no_live_worker"].sent_firing
        assert got.notices("no_live_worker", "firing") == 1

        # It resolves once, and the resolved alert moves to the history once announced.
        calm = Sample(t=t, queue_length=0, workers=0)  # the sample, not Redis, says what is queued

        async def resolved_once() -> bool:
            nonlocal t
            t += 1
            await second.tick(calm.model_copy(update={"t": t}), t, leading=True)
            return got.notices("no_live_worker", "resolved") == 1 and not second.unsent

        await eventually(resolved_once, 10, "the resolving notice sent")
        assert got.notices("no_live_worker", "firing") == 1
    finally:
        await second.stop()
