"""The queue protocol the gateway, workers, reaper and dashboard share, on Redis.

TaskQueue puts together one class per job, all on one client (queue_base):

- intake: new tasks in (one, a batch all or none, independent submissions coalesced);
- claims: a worker claims tasks, writes their records, and acks, retries, releases or discards;
- worker_registry: heartbeats, the live workers, and the reaper that requeues a dead one's claims;
- admin_ops: counters and recent lists, dead letters, redrive, purge, audit;
- cancels: cancelling a waiting task, or asking a running one's worker to stop it.

Every multi-step atomic write is a Lua script behind a typed wrapper in core.scripts; task
record encodings are in core.records. Importers use the names here.

The queue may be split into QUEUE_SHARDS shards (keys.QueueKeys; core.shards says which holds a
task), each in one hash slot of a Redis Cluster (REDIS_CLUSTER). One shard on one Redis, the
default, keeps the unprefixed key names.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core import keys
from core.admin_ops import AdminOps
from core.cancels import CancelOps
from core.claims import Claim, ClaimOps
from core.intake import Accepted, AcceptedMany, IdempotencyConflict, IntakeOps, QueueFull, batch_hash
from core.records import FinalRecord, queued_records
from core.scripts import LEASE_SCRIPT, MEMORY_SHARE_FOR_INTAKE, Refused
from core.settings import Settings
from core.worker_registry import WorkerOps

__all__ = [
    "LEASE_SCRIPT",
    "MEMORY_SHARE_FOR_INTAKE",
    "REDIS_ERRORS",
    "Accepted",
    "AcceptedMany",
    "Claim",
    "FinalRecord",
    "IdempotencyConflict",
    "QueueFull",
    "Refused",
    "TaskQueue",
    "batch_hash",
    "queued_records",
]

#: What the client raises when Redis is down or unreachable (db.UNAVAILABLE_ERRORS' counterpart):
#: the errors a worker's loops retry.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)


class TaskQueue(IntakeOps, ClaimOps, WorkerOps, AdminOps, CancelOps):
    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> TaskQueue:
        return cls(
            redis,
            result_ttl=settings.result_ttl_seconds,
            recent_kept=settings.recent_tasks_kept,
            queue_max=settings.queue_max,
            queue_max_bytes=settings.queue_max_bytes,
            idempotency_ttl=settings.idempotency_ttl_seconds,
            shards=keys.shard_keys(settings.queue_shards, settings.redis_cluster),
        )
