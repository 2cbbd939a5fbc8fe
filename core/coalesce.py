"""Many concurrent callers, one round trip: calls made while a batch is in flight share the next one.

Under load the batch grows by itself (everything that arrived while the last round trip was on
the wire goes in the next); on an idle process a call goes out at once, alone, so nothing waits
for a timer. Each caller returns only once the batch holding its item has completed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    def __init__(self, send: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_batch: int = 500) -> None:
        """`send` takes a batch and returns one result per item, in order; if it raises, every
        caller in that batch gets the error (and decides whether to retry)."""
        self._send = send
        self.max_batch = max_batch
        self._staged: list[tuple[T, asyncio.Future[R]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        return await self.stage(item)

    def stage(self, item: T) -> asyncio.Future[R]:
        """Queue `item` now and return its future: items go out in the order they were staged,
        which a caller outside a coroutine (a timer callback) can rely on too."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._staged.append((item, done))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return done

    async def _flush(self) -> None:
        # Items staged while a batch is in flight go in the next one.
        while self._staged:
            batch, self._staged = self._staged[: self.max_batch], self._staged[self.max_batch :]
            try:
                results = await self._send([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} got {len(results)} results")
            except asyncio.CancelledError:
                # Shutting down: no caller may wait for a batch that will never be sent.
                for _, done in (*batch, *self._staged):
                    done.cancel()
                self._staged = []
                raise
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), result in zip(batch, results, strict=True):
                if not done.done():  # its caller may have been cancelled meanwhile
                    done.set_result(result)
