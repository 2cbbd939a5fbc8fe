"""The figures alerts need beyond a sample, read from Redis: the oldest queued task's age, the
dead-letter queue's length, Redis's memory. The dashboard's alerting and every service's Prometheus
`/metrics` read them here, so the built-in alerts and monitoring/alerts.yml judge the same numbers.

Each read is bounded: the claim end of each waiting list (a few entries), the dead lists' lengths,
one INFO section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core import keys
from core.queue import TaskQueue
from core.scripts import intake_budget

#: Entries read at each waiting list's claim end: a wake-up marker (keys.WAKE) may sit there.
_TAIL = 3


async def oldest_queued_seconds(queue: TaskQueue, now: float) -> float | None:
    """How long the task next in line has waited (since it was created, or due when scheduled):
    the oldest of the tasks at each waiting list's claim end. None when nothing waits."""
    async with queue.redis.pipeline(transaction=False) as pipe:
        for shard in queue.shards:
            for waiting in shard.queues:
                pipe.lrange(waiting, -_TAIL, -1)
        tails = await pipe.execute()
    # Claims take from the right: the last entry that is no wake-up marker is next in line.
    ids = [next_id for tail in tails if (next_id := next((str(v) for v in reversed(tail) if v != keys.WAKE), None))]
    if not ids:
        return None
    ages = []
    for task in await queue.get_many(ids):
        if task is None:
            continue
        waiting_since = max(task.created_at, task.run_at) if task.run_at else task.created_at
        ages.append(max(0.0, now - waiting_since.timestamp()))
    return max(ages) if ages else None


async def dead_letter_length(queue: TaskQueue) -> int:
    total, _ = await queue.dead_ids(1)
    return total


@dataclass(frozen=True)
class RedisMemory:
    used: int
    #: maxmemory; 0 = none set
    limit: int
    #: the used_memory past which new tasks get 503 (core.scripts.intake_budget); 0 = no byte bound
    budget: int


async def redis_memory(queue: TaskQueue) -> RedisMemory:
    """Redis's used_memory, maxmemory and byte budget for new tasks: on a cluster, of the node
    nearest its budget."""
    info: dict[str, Any] = await queue.redis.info("memory")
    # A cluster client answers one dict per node.
    per_node = bool(info) and all(isinstance(v, dict) for v in info.values())
    nodes = list(info.values()) if per_node else [info]
    readings = []
    for node in nodes:
        used, limit = int(node.get("used_memory", 0)), int(node.get("maxmemory", 0))
        readings.append(RedisMemory(used, limit, intake_budget(queue.queue_max_bytes, limit)))
    return max(readings, key=lambda r: r.used / r.budget if r.budget else 0.0)
