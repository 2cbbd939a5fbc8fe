"""What waits: the waiting lists by priority and the tasks scheduled for later, read in one round trip.

Every reader of the queue's length (the gateway's /api/status and /api/metrics, the samples the
dashboard and the scaling policy read, Prometheus) takes it from here, so they all count every
priority and agree on the split.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from core import keys
from core.claims import waiting_list
from core.models import Priority


@dataclass(frozen=True, slots=True)
class Backlog:
    high: int = 0
    normal: int = 0
    low: int = 0
    #: submitted with delay_seconds or run_at, not yet due: not in any list, so not queued
    scheduled: int = 0

    @property
    def queued(self) -> int:
        """Tasks a worker may claim now, of every priority (the queue length)."""
        return self.high + self.normal + self.low

    def by_priority(self) -> dict[str, int]:
        return {Priority.HIGH.value: self.high, Priority.NORMAL.value: self.normal, Priority.LOW.value: self.low}


async def read_backlog(redis: Redis) -> Backlog:
    """The three list lengths and the scheduled set's size, as of one moment (one MULTI)."""
    async with redis.pipeline(transaction=True) as pipe:
        for priority in (Priority.HIGH, Priority.NORMAL, Priority.LOW):
            pipe.llen(waiting_list(priority))
        pipe.zcard(keys.SCHEDULED)
        high, normal, low, scheduled = (int(n) for n in await pipe.execute())
    return Backlog(high=high, normal=normal, low=low, scheduled=scheduled)
