"""Cancelling a task: at once while it waits (queued, scheduled or retrying), or by asking the
worker that runs it to stop it.

A waiting task is cancelled by one atomic step (scripts.CancelWaiting) that takes it out of the
list or sorted set it waits in; if a worker claimed it first, the step finds it gone and the task
counts as running. The step compares the record with the copy read just before, so a task that
moves on meanwhile (a scheduled task promoted, a retry queued) is read again and tried where it
is now."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from core import keys
from core.claims import waiting_list
from core.keys import QueueKeys
from core.models import Priority, TaskRecord, TaskStatus
from core.queue_base import QueueBase
from core.records import read_record
from core.timeutil import now, now_ms

#: How long a request to stop a running task stays for the worker that holds it or the next one
#: to claim it (a worker that died with it hands it on through the reaper within seconds).
CANCEL_REQUEST_TTL_SECONDS = 3600
#: The error of a task cancelled before it ran, and of one stopped while running.
CANCELLED_WAITING = "cancelled by a client before it ran"
CANCELLED_RUNNING = "cancelled by a client while it ran"
#: Reads of a record that keeps moving on before a cancel gives up and calls it running.
_TRIES = 5


def _lists(shard: QueueKeys, priority: Priority) -> tuple[str, ...]:
    """The lists a waiting task of `priority` may be in: a low one that waited long enough moves to
    the normal list (QueueKeys.low_since)."""
    own = waiting_list(shard, priority)
    return (own, shard.queue) if priority is Priority.LOW else (own,)


class Outcome(enum.Enum):
    #: it waited and is cancelled now
    CANCELLED = "cancelled"
    #: it was final already (cancelled before, completed or failed)
    FINAL = "final"
    #: a worker holds it: it runs, or is about to
    RUNNING = "running"
    #: its record is not in Redis (expired to Postgres, or never existed)
    NOT_IN_REDIS = "not_in_redis"


@dataclass(frozen=True, slots=True)
class CancelResult:
    outcome: Outcome
    #: the record after the cancel (CANCELLED), or as found
    task: TaskRecord | None


def _places(shard: QueueKeys, task: TaskRecord) -> tuple[str, ...]:
    """Where in its shard a task of this status may wait, the likeliest first."""
    lists = _lists(shard, task.priority)
    if task.status is TaskStatus.SCHEDULED:
        return (shard.scheduled,)
    if task.status is TaskStatus.RETRYING:
        return (shard.delayed, *lists)
    if task.status is TaskStatus.QUEUED:
        return lists
    return ()


class CancelOps(QueueBase):
    async def cancel_waiting(self, task_id: str) -> CancelResult:
        """Cancel `task_id` if it waits; otherwise say why not."""
        shard = self.shard_for(task_id)
        for _ in range(_TRIES):
            raw = await self.redis.get(shard.task(task_id))
            if not raw:
                return CancelResult(Outcome.NOT_IN_REDIS, None)
            task = read_record(task_id, raw)
            if task.status.is_final:
                return CancelResult(Outcome.FINAL, task)
            cancelled = task.model_copy(
                update={"status": TaskStatus.CANCELLED, "completed_at": now(), "error": CANCELLED_WAITING}
            )
            moved_on = False
            for place in _places(shard, task):
                done = await self._cancel_waiting(
                    shard=shard, task_id=task_id, source=place, expected=str(raw), cancelled=cancelled.model_dump_json()
                )
                if done == "ok":
                    return CancelResult(Outcome.CANCELLED, cancelled)
                if done == "changed":
                    moved_on = True
                    break
            if not moved_on:
                return CancelResult(Outcome.RUNNING, task)
        return CancelResult(Outcome.RUNNING, task)

    async def request_cancel(self, task_id: str) -> None:
        """Ask the worker running `task_id` to stop it (or the next claimer not to run it)."""
        until_ms = round((now().timestamp() + CANCEL_REQUEST_TTL_SECONDS) * 1000)
        requests = self.shard_for(task_id).cancel_requests
        if self.cluster:
            # A cluster pipeline takes no PUBLISH: the request stands first, then its worker hears.
            await self.redis.hset(requests, task_id, until_ms)
            await self.redis.publish(keys.CANCEL_CHANNEL, task_id)
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(requests, task_id, until_ms)
            pipe.publish(keys.CANCEL_CHANNEL, task_id)
            await pipe.execute()

    async def drop_stale_cancel_requests(self) -> int:
        """Forget cancel requests past their time (their task ended elsewhere, or never ran);
        the hash stays as small as the requests that still matter."""
        dropped = 0
        for shard in self.shards:
            standing = await self.redis.hgetall(shard.cancel_requests)
            current = now_ms()
            stale = [task_id for task_id, until in standing.items() if int(until) < current]
            if stale:
                await self.redis.hdel(shard.cancel_requests, *stale)
            dropped += len(stale)
        return dropped
