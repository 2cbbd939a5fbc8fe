"""Backoff for operations that must eventually succeed (e.g. writing a result)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter (attempt counts from 1)."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def retry_delay(attempt: int, base: float, cap: float) -> float:
    """Backoff before retry number `attempt` (from 1): exponential, with "equal" jitter so
    retries of a burst spread out yet never come back at once."""
    delay = float(min(cap, base * 2 ** (attempt - 1)))
    return delay / 2 + random.uniform(0, delay / 2)


async def until_done(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    retry_on: tuple[type[BaseException], ...],
    base: float = 0.05,
    cap: float = 2.0,
) -> T:
    """Retry `operation` until it succeeds; only cancellation stops it."""
    attempt = 0
    while True:
        try:
            return await operation()
        except retry_on as exc:
            attempt += 1
            delay = backoff_delay(attempt, base, cap)
            if attempt == 1 or attempt % 20 == 0:
                log.warning("%s failed (%s: %s); retrying, attempt %d", what, type(exc).__name__, exc, attempt)
            await asyncio.sleep(delay)
