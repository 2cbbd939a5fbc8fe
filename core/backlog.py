"""What waits: the waiting lists by priority and the tasks scheduled for later, read in one round trip.

Every reader of the queue's length (the gateway's /api/status and /api/metrics, the samples the
dashboard and the scaling policy read, Prometheus) takes it from here, so they all count every
priority and agree on the split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from core.claims import waiting_list
from core.keys import QueueKeys
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


async def read_backlog(redis: Redis, shards: Sequence[QueueKeys]) -> Backlog:
    """The three list lengths and the scheduled set's size, summed over the shards: as of one
    moment (one MULTI) for one shard, of one moment per shard for several (they sit in several
    hash slots of a cluster)."""
    async with redis.pipeline(transaction=len(shards) == 1) as pipe:
        for shard in shards:
            for priority in (Priority.HIGH, Priority.NORMAL, Priority.LOW):
                pipe.llen(waiting_list(shard, priority))
            pipe.zcard(shard.scheduled)
        counts = [int(n) for n in await pipe.execute()]
    return Backlog(high=sum(counts[0::4]), normal=sum(counts[1::4]), low=sum(counts[2::4]), scheduled=sum(counts[3::4]))
