"""Every Redis key name, in one place, so producers and consumers share one protocol."""

from __future__ import annotations

#: Waiting task ids. Producers LPUSH, consumers claim from the right (FIFO).
QUEUE = "queue:tasks"
#: Ids of workers that may own a processing list; the reaper walks this small set.
WORKERS = "workers:registry"
#: Shared counters (a hash) that survive gateway restarts.
STATS = "stats:counters"
#: Newest task ids first, capped.
RECENT = "tasks:recent"
#: Leader lock for the reaper, so only one replica requeues a dead worker's tasks.
REAPER_LEADER = "reaper:leader"
#: Recent finished tasks as "<completed epoch ms>:<processing seconds>:<status>", newest first,
#: capped: the source of processing-time percentiles and completion rates.
DURATIONS = "metrics:durations"
DURATIONS_KEPT = 5000


def task(task_id: str) -> str:
    """The hot copy of a task's record (JSON)."""
    return f"task:{task_id}"


def processing(worker_id: str) -> str:
    """A worker's in-flight list: claimed atomically from QUEUE, removed only on ack."""
    return f"queue:processing:{worker_id}"


def heartbeat(worker_id: str) -> str:
    """A worker's heartbeat (JSON, with a TTL): it exists only while the worker lives."""
    return f"worker:heartbeat:{worker_id}"


# Hash fields of STATS.
STAT_REQUESTS = "total_requests"
STAT_ACCEPTED = "accepted"
STAT_COMPLETED = "completed"
STAT_FAILED = "failed"
STAT_REQUEUED = "requeued"
