"""Waiting for a task to become final without a polling loop: `GET /api/task/{id}?wait=S`.

Every batch of final-record writes PUBLISHes the ids it made final, comma-separated, on
keys.DONE_CHANNEL in the same script (core/scripts.py), and so does a cancel. One pub/sub
connection per gateway process, subscribed to that one channel for good, serves every waiting
request: its reader splits each message and wakes the waiters of those ids, which then read the
record again. The gateway is subscribed only while a request waits: the channel carries every
final write of the stack, and reading all of it would cost an idle gateway CPU that the workers
need (a drain measured 4-5 us a task of gateway time); one channel for all, not one per task,
because a publish per task would cost Redis as much again.

A waiter registers before it reads the record, so a final write lands either before that read
(the read sees it) or after the registration (its id wakes it), as long as the subscription is
live; the first waiter's subscription turns live a moment later, and every waiter reads again
then. While the connection is down (a Redis restart), waiters read the record every
POLL_SECONDS until their deadline and the reader reconnects every RECONNECT_SECONDS; when the
subscription is live again every waiter reads once more, which makes up for a message missed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from types import FrameType
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from core import keys, prom
from core.http import DependencyUnavailable
from core.models import TaskRecord

log = logging.getLogger(__name__)

#: The longest wait a request may ask for (seconds); nginx's proxy_read_timeout leaves room above it.
WAIT_MAX_SECONDS = 30.0
#: How often a waiter reads its record while its channel is not confirmed (connection down).
POLL_SECONDS = 1.0
#: How long the reader waits between attempts to reconnect.
RECONNECT_SECONDS = 1.0
#: After this long without a message the reader sends a PING; without an answer within as long
#: again, it takes the connection for dead (a peer that vanished without closing it).
KEEPALIVE_SECONDS = 30.0
#: How long aclose() gives the reader to end after each cancel.
STOP_SECONDS = 0.1

Read = Callable[[], Awaitable[TaskRecord | None]]
#: What a read may raise while a store is down: a waiting request reads again until its deadline.
READ_ERRORS = (RedisError, OSError, DependencyUnavailable)


class TooManyWaiters(Exception):
    """Raised when a request would wait while `limit` requests already wait on this gateway."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class Waiters:
    """The waiting requests of one gateway process, at most `limit` at once, and the reader that
    wakes them. start() in the lifespan, aclose() at its end."""

    def __init__(self, client: Redis, limit: int) -> None:
        #: a client of its own (core.connections.create_subscriber): its one connection is held
        #: by the subscription, and only the reader reconnects it
        self._client = client
        self.limit = limit
        #: the events of the requests waiting on each task id
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._waiting = 0
        #: SUBSCRIBEs sent on the current connection and not yet confirmed: an UNSUBSCRIBE waits
        #: for none to be in flight, so a confirmation always means subscribed now
        self._pending = 0
        #: Redis confirmed the subscription on the current connection: every final write from
        #: now on reaches the reader
        self._live = False
        #: the current connection's, None while it is down
        self._pubsub: PubSub | None = None
        self._releasing = False
        self._stopping = False
        #: the current session got as far as a connection (its loss is worth a warning)
        self._session_connected = False
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read_forever(), name="result-waiters")

    async def aclose(self) -> None:
        self._stopping = True
        self.release()
        reader = self._reader
        if reader is not None:
            # redis-py's connect can swallow a cancellation (seen with redis 8.1 on Python 3.11.2,
            # about a third of the cancels that land in its handshake); cancel again until it ends.
            while not reader.done():
                reader.cancel()
                await asyncio.wait({reader}, timeout=STOP_SECONDS)
            with suppress(asyncio.CancelledError):
                await reader
        await self._client.aclose()

    def release(self) -> None:
        """Answer every waiting request now with its task's current state, and let no new one
        wait: the gateway is stopping and should not hold its shutdown for up to S seconds."""
        self._releasing = True
        self._wake_all()

    async def wait(self, task_id: str, seconds: float, read: Read) -> TaskRecord | None:
        """The task once final, else as it is after `seconds`; None when there is no such task
        (at once: nothing waits for an unknown id). `read` reads the record from where it is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        if self._waiting >= self.limit:
            # A final task still answers: it never has to wait.
            task = await read()
            if task is None or task.status.is_final or self._releasing:
                return task
            raise TooManyWaiters(self.limit)
        async with self._watching(task_id) as woken:
            while True:
                live = self._live
                woken.clear()
                try:
                    task = await read()
                except READ_ERRORS:
                    # Redis restarting, most likely: the deadline is what the client asked for.
                    if deadline - loop.time() <= 0:
                        raise
                    await _wait(woken, min(deadline - loop.time(), POLL_SECONDS))
                    continue
                if task is None or task.status.is_final or self._releasing:
                    return task
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return task
                await _wait(woken, remaining if live else min(remaining, POLL_SECONDS))

    @asynccontextmanager
    async def _watching(self, task_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set when the task may have news: its id published, the subscription lost or
        live, the gateway stopping. The first waiter subscribes, the last one out unsubscribes."""
        woken = asyncio.Event()
        self._waiters.setdefault(task_id, set()).add(woken)
        self._waiting += 1
        prom.RESULT_WAITERS.inc()
        try:
            if self._waiting == 1 and not self._live and not self._pending:
                await self._subscribe()
            yield woken
        finally:
            self._waiting -= 1
            prom.RESULT_WAITERS.dec()
            events = self._waiters[task_id]
            events.discard(woken)
            if not events:
                del self._waiters[task_id]
            if not self._waiting and self._live:
                await self._unsubscribe()

    async def _subscribe(self) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return  # the reader subscribes when it reconnects, if anyone waits then
        self._pending += 1
        try:
            await pubsub.subscribe(keys.DONE_CHANNEL)
        except RedisError as exc:
            # The connection is broken: the reader's next read fails too and it reconnects.
            log.info("result-wait subscribe failed: %s", exc)

    async def _unsubscribe(self) -> None:
        pubsub = self._pubsub
        self._live = False
        if pubsub is None:
            return
        try:
            await pubsub.unsubscribe(keys.DONE_CHANNEL)
        except RedisError as exc:
            log.info("result-wait unsubscribe failed: %s", exc)

    async def _read_forever(self) -> None:
        while not self._stopping:
            self._session_connected = False
            try:
                await self._session()
            except RedisError as exc:
                # Once per outage; the attempts to reconnect (every RECONNECT_SECONDS) log quietly.
                level = logging.WARNING if self._session_connected else logging.DEBUG
                log.log(level, "result-wait subscription down (%s); waiters read every %.0f s", exc, POLL_SECONDS)
            except Exception:
                # Whatever broke the connection, the waiters must not wait on a reader that is gone.
                log.exception("result-wait reader failed; reconnecting")
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _session(self) -> None:
        """One connection's life: subscribe, then pass ids on until it breaks. Waiters are woken
        when the subscription turns live (to read once more) and when it ends (to read at the
        coarse interval meanwhile)."""
        pubsub = self._client.pubsub()
        try:
            await pubsub.connect()  # type: ignore[no-untyped-call]
            if self._stopping:
                return
            self._session_connected = True
            self._pending = 0
            self._pubsub = pubsub
            if self._waiting:
                await self._subscribe()
            probing = False
            while True:
                message = await pubsub.get_message(timeout=KEEPALIVE_SECONDS)
                if message is None:
                    if probing:
                        raise RedisConnectionError(f"no answer to PING within {KEEPALIVE_SECONDS:.0f} s")
                    await pubsub.ping()
                    probing = True
                    continue
                probing = False
                await self._dispatch(message)
        finally:
            self._pubsub = None
            self._live = False
            self._wake_all()
            with suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            if self._waiters:
                waiting = self._waiters
                for task_id in str(message["data"]).split(","):
                    for event in waiting.get(task_id, ()):
                        event.set()
        elif kind == "subscribe":
            self._pending -= 1
            if self._pending:
                return  # another SUBSCRIBE is in flight: its confirmation decides
            if self._waiting:
                self._live = True
                self._wake_all()  # each reads once more: a write before the subscription is seen
            else:
                await self._unsubscribe()  # its waiters left before it was confirmed

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()


async def _wait(event: asyncio.Event, seconds: float) -> None:
    if seconds > 0:
        with suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()


def release_on_sigterm(waiters: Waiters) -> None:
    """Answer the waiting requests the moment SIGTERM arrives: uvicorn waits for open requests
    before the lifespan ends, and a wait could hold the shutdown for up to WAIT_MAX_SECONDS.

    uvicorn installs its own handler before the lifespan starts; chain to it.
    """
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(waiters.release)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
