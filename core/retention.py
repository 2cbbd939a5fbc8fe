"""Retention: final task records older than RETENTION_DAYS leave Postgres, a short batch at a time,
and a lookup of an id that was pruned says "expired" (410) instead of "not found".

The worker's reaper leader runs one prune pass every PRUNE_INTERVAL_SECONDS (Pruner). A pass walks
the primary key below the cutoff's lowest id (version 7 ids are time-ordered), then, for random
version 4 ids made before ids were time-ordered, the rows created before the cutoff by created_at.
Each batch reads at most PRUNE_BATCH_ROWS rows in its own short statement, with a pause between
batches: no long lock, and the dead rows are spread out for autovacuum to reclaim a few at a time.
README.md ("Retention") has the measurements behind the choice."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from fastapi.responses import JSONResponse

from core import db
from core.http import json_error
from core.models import FINAL_STATUSES, lowest_task_id, task_id_time
from core.timeutil import now

log = logging.getLogger(__name__)

#: How often the reaper leader starts a prune pass.
PRUNE_INTERVAL_SECONDS = 60.0
#: Rows one prune statement reads (and at most deletes): about 3 ms each on 1M rows (README).
PRUNE_BATCH_ROWS = 1000
#: The pause between two batches of a pass, so a long pass leaves Postgres to the services.
PRUNE_PAUSE_SECONDS = 0.05

_FINAL = sorted(status.value for status in FINAL_STATUSES)
#: Where the created_at walk starts: before any task.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def cutoff(at: datetime, retention_days: int) -> datetime:
    """Final tasks completed before this time are pruned."""
    return at - timedelta(days=retention_days)


def expired(task_id: str, retention_days: int, at: datetime) -> bool:
    """Whether an id found nowhere was pruned: a version 7 id made before the cutoff. A task made
    inside the window cannot have been pruned (it completes after it is made), so a missing id
    made inside it is not found; a made-up id older than the window reads as expired too."""
    made = task_id_time(task_id)
    return retention_days > 0 and made is not None and made < cutoff(at, retention_days)


def expired_response(task_id: str, retention_days: int) -> JSONResponse:
    """The 410 for an id that `expired` says was pruned."""
    response = json_error(
        410,
        f"task {task_id} expired: final tasks are kept {retention_days} days (RETENTION_DAYS)",
        error="expired",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@dataclass(frozen=True)
class PruneReport:
    pruned: int
    #: statements run, in both walks
    batches: int


Sleep = Callable[[float], Awaitable[None]]


async def prune(
    pool: asyncpg.Pool,
    at: datetime,
    retention_days: int,
    *,
    batch_rows: int = PRUNE_BATCH_ROWS,
    pause: float = PRUNE_PAUSE_SECONDS,
    sleep: Sleep = asyncio.sleep,
) -> PruneReport:
    """One pass: delete every final task completed before `at` - `retention_days`, batch by batch.
    Rows that are not final, or completed inside the window, stay."""
    if retention_days <= 0:
        return PruneReport(0, 0)
    before = cutoff(at, retention_days)
    below = lowest_task_id(before)
    pruned = batches = 0
    after_id = db.LOWEST_ID
    while True:
        step = await db.prune_id_range(
            pool, after_id=after_id, below_id=below, cutoff=before, statuses=_FINAL, limit=batch_rows
        )
        pruned, batches = pruned + step.pruned, batches + 1
        if step.last_id is None:
            break
        after_id = step.last_id
        await sleep(pause)
    after = (_EPOCH, db.LOWEST_ID)
    while True:
        step = await db.prune_created_range(
            pool, after=after, from_id=below, cutoff=before, statuses=_FINAL, limit=batch_rows
        )
        pruned, batches = pruned + step.pruned, batches + 1
        if step.last_id is None or step.last_at is None:
            break
        after = (step.last_at, step.last_id)
        await sleep(pause)
    return PruneReport(pruned, batches)


class Pruner:
    """The reaper leader's prune passes: at most one at a time, one every `interval` seconds, in a
    task of its own so a long pass never holds up the reaper's 100 ms loop."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        retention_days: int,
        interval: float = PRUNE_INTERVAL_SECONDS,
        clock: Callable[[], datetime] = now,
    ) -> None:
        self.pool = pool
        self.retention_days = retention_days
        self.interval = interval
        self.clock = clock
        self.passes = 0
        self._next = 0.0
        self._running: asyncio.Task[PruneReport | None] | None = None

    def tick(self) -> None:
        """Start a pass when one is due and none runs (the reaper calls this while it leads)."""
        if self.retention_days <= 0 or (self._running is not None and not self._running.done()):
            return
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.interval
        self._running = asyncio.create_task(self.run_once(), name="prune")

    async def run_once(self) -> PruneReport | None:
        """One pass now; Postgres unavailable: logged, and the next interval tries again."""
        try:
            report = await prune(self.pool, self.clock(), self.retention_days)
        except db.UNAVAILABLE_ERRORS as exc:
            log.warning("prune pass failed, next in %.0f s: %s", self.interval, exc)
            return None
        except asyncpg.PostgresError:
            log.exception("prune pass failed, next in %.0f s", self.interval)
            return None
        self.passes += 1
        if report.pruned:
            log.info("pruned %d final task(s) older than %d days", report.pruned, self.retention_days)
        return report

    async def close(self) -> None:
        if self._running is not None:
            self._running.cancel()
            with suppress(asyncio.CancelledError):
                await self._running
