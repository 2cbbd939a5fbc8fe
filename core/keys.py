"""Every Redis key name, in one place, so producers and consumers share one protocol.

The queue's own keys (what its scripts touch) live in QueueKeys, one set per shard; the keys
every shard shares (workers, leases, channels, the dashboard's) are module constants."""

from __future__ import annotations

from dataclasses import dataclass, field

#: What the enqueue and promote scripts push onto an empty normal list when they fill the high or
#: low list while a worker blocks on the normal one (a blocking claim watches one list): it wakes
#: and claims from all three. No task id looks like it; a claim drops it.
WAKE = "~wake"
#: Entries of QueueKeys.workers_blocked older than this are stale.
BLOCKED_FRESH_MS = 3000
#: What QueueKeys.durations and QueueKeys.dead keep.
DURATIONS_KEPT = 5000
DEAD_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue shard: every key a queue script touches, under one prefix.

    The single-Redis queue has the empty prefix (SINGLE). On a Redis Cluster, shard i has the
    prefix "{q<i>}": a hash tag, so all of a shard's keys share one hash slot and each script call
    touches one slot. Scripts that build a key in Lua (task_prefix .. id) keep the tag with it."""

    prefix: str = ""
    #: Waiting task ids of normal priority. Producers LPUSH, consumers claim from the right (FIFO).
    queue: str = field(init=False)
    #: Waiting task ids of high and low priority: the same protocol as `queue`. A claim takes from
    #: queue_high first, then queue, then queue_low.
    queue_high: str = field(init=False)
    queue_low: str = field(init=False)
    #: The waiting lists, the one claimed first first.
    queues: tuple[str, str, str] = field(init=False)
    #: Ids of tasks cancelled while they waited: final already, they wait only for a worker to
    #: commit them to Postgres (claimed before queue_high, and not counted as waiting work).
    cancelled: str = field(init=False)
    #: Low-priority ids (a sorted set scored by the epoch ms they entered queue_low): the promoter
    #: moves one that waited PRIORITY_AGING_SECONDS to the head of `queue`, so low work cannot starve.
    low_since: str = field(init=False)
    #: Workers in a blocking claim on this shard now (a sorted set: worker id -> epoch ms the claim
    #: began), so a wake-up (WAKE) is pushed only when one may be waiting for it, and the queue's
    #: length is not left one too long by a wake-up nobody takes.
    workers_blocked: str = field(init=False)
    #: Counters (a hash, fields STAT_*) that survive gateway restarts; summed over the shards.
    stats: str = field(init=False)
    #: Newest task ids first, capped.
    recent: str = field(init=False)
    #: Bytes new tasks may still take (the byte budget less Redis's used_memory), read by the
    #: enqueue scripts from INFO at most every scripts.MEMORY_READING_MS and kept here meanwhile.
    memory_room: str = field(init=False)
    #: Recent finished tasks as "<completed epoch ms>:<processing seconds>:<status>", newest first,
    #: capped (DURATIONS_KEPT): the source of processing-time percentiles and completion rates.
    durations: str = field(init=False)
    #: Attempts started per unfinished task (a hash: id -> count), counted atomically with each
    #: claim: poison detection survives a worker dying mid-task without a record write per start.
    #: An entry lives from its task's first claim until its acknowledgement.
    attempts: str = field(init=False)
    #: Tasks waiting out a retry backoff: a sorted set scored by the epoch ms they are due.
    delayed: str = field(init=False)
    #: Tasks submitted with delay_seconds or run_at (status scheduled): scored by the epoch ms they
    #: are due, when the promoter queues them at the head of their priority's list.
    scheduled: str = field(init=False)
    #: The dead-letter queue: ids of tasks that failed their last attempt, newest first, capped
    #: (DEAD_KEPT; a client can fail tasks without end): older ones live on in Postgres only.
    dead: str = field(init=False)
    #: Tasks a client asked to cancel as they run (`DELETE ...?running=true`): a hash, task id ->
    #: the epoch ms the request stands until. The worker that holds the task, or the next one to
    #: claim it, ends it cancelled; a final write removes its entry, the reaper the ones past their
    #: time. A claim reads it only while it is not empty (one EXISTS per claim).
    cancel_requests: str = field(init=False)
    #: What task(id) puts before an id, for the scripts that build the key in Lua.
    task_prefix: str = field(init=False)

    def __post_init__(self) -> None:
        p = self.prefix
        named = {
            "queue": f"{p}queue:tasks",
            "queue_high": f"{p}queue:tasks:high",
            "queue_low": f"{p}queue:tasks:low",
            "cancelled": f"{p}queue:cancelled",
            "low_since": f"{p}queue:tasks:low:since",
            "workers_blocked": f"{p}workers:blocked",
            "stats": f"{p}stats:counters",
            "recent": f"{p}tasks:recent",
            "memory_room": f"{p}queue:memory-room",
            "durations": f"{p}metrics:durations",
            "attempts": f"{p}tasks:attempts",
            "delayed": f"{p}queue:delayed",
            "scheduled": f"{p}queue:scheduled",
            "dead": f"{p}queue:dead",
            "cancel_requests": f"{p}tasks:cancel-requests",
            "task_prefix": f"{p}task:",
        }
        for name, key in named.items():
            object.__setattr__(self, name, key)
        object.__setattr__(self, "queues", (named["queue_high"], named["queue"], named["queue_low"]))

    def task(self, task_id: str) -> str:
        """The hot copy of a task's record (JSON)."""
        return self.task_prefix + task_id

    def processing(self, worker_id: str) -> str:
        """A worker's in-flight list in this shard: claimed atomically from a waiting list,
        removed only on ack."""
        return f"{self.prefix}queue:processing:{worker_id}"

    def idempotency(self, key: str) -> str:
        """ "<body hash>:<task id>,..." for an Idempotency-Key, kept IDEMPOTENCY_TTL_SECONDS."""
        return f"{self.prefix}idempotency:{key}"

    def purging(self, token: str) -> str:
        """A waiting list renamed away by an admin purge (any unique token), read and deleted at once."""
        return f"{self.queue}:purging:{token}"


#: The single-Redis queue: today's key names, no prefix.
SINGLE = QueueKeys()


def shard_keys(shards: int, cluster: bool) -> tuple[QueueKeys, ...]:
    """The keys of each shard: SINGLE alone for one shard on one Redis, else one hash tag per shard
    (on a cluster even one shard needs the tag, so its scripts' keys share a slot)."""
    if shards == 1 and not cluster:
        return (SINGLE,)
    return tuple(QueueKeys(f"{{q{i}}}") for i in range(shards))


#: Ids of workers that may own a processing list (in any shard); the reaper walks this small set.
WORKERS = "workers:registry"
#: Leader lock for the reaper, so only one replica requeues a dead worker's tasks.
REAPER_LEADER = "reaper:leader"
#: Held for a moment after a redrive, so redrives can't be fired in a tight loop.
REDRIVE_LOCK = "admin:redrive:lock"
#: What administrators did (purge, redrive), newest first, JSON {at, action, count, client,
#: forwarded_for}; capped, so a script hammering the admin API cannot grow it.
ADMIN_AUDIT = "admin:audit"
ADMIN_AUDIT_KEPT = 1000

#: Where the ids of tasks whose record just turned final are published, comma-separated, one
#: message per batch of final writes: each gateway's result waiters (`GET /api/task/{id}?wait=S`)
#: listen there. One message per batch, not per task: a publish costs the drain as much as a write.
#: A channel is no key: a publish on a cluster reaches every node's subscribers.
DONE_CHANNEL = "tasks:done"
#: Where cancel requests are published (the message is the task id), so the worker running the
#: task stops it at once rather than at its next claim.
CANCEL_CHANNEL = "tasks:cancel"


def heartbeat(worker_id: str) -> str:
    """A worker's heartbeat (JSON, with a TTL): it exists only while the worker lives."""
    return f"worker:heartbeat:{worker_id}"


# Hash fields of QueueKeys.stats.
STAT_REQUESTS = "total_requests"
STAT_ACCEPTED = "accepted"
STAT_COMPLETED = "completed"
STAT_FAILED = "failed"
STAT_REQUEUED = "requeued"
STAT_RETRIED = "retried"
STAT_CANCELLED = "cancelled"


# -- Dashboard and scaling (the monitoring service and the autoscaler) ---------------------------

#: One JSON sample per second (counters, queue, in flight, workers, rates, percentiles), newest
#: first, capped: 15 minutes at 1 s resolution. Written only by the sampler that holds SAMPLER_LEADER.
SERIES = "metrics:series"
SERIES_KEPT = 900
#: Lease of the one sampler that writes SERIES (several dashboards may run; one samples).
SAMPLER_LEADER = "metrics:sampler:leader"
#: worker id -> JSON {heartbeat..., seen_at}: outlives the 5 s heartbeat, so a worker can show as
#: suspect or dead; the sampler prunes entries not seen for WORKERS_SEEN_KEEP_SECONDS.
WORKERS_SEEN = "workers:seen"
WORKERS_SEEN_KEEP_SECONDS = 300
#: The scaling policy's hysteresis state (JSON), written with each sample.
SCALING_STATE = "scaling:state"
#: Recommendations, newest first, appended when the advice changes; capped.
SCALING_HISTORY = "scaling:history"
SCALING_HISTORY_KEPT = 200
#: Decisions the autoscaler took, newest first, JSON {at, mode, from, to, action, urgency,
#: applied, reasons, inputs}; capped. Empty while no autoscaler runs.
SCALING_DECISIONS = "scaling:decisions"
SCALING_DECISIONS_KEPT = 200
#: The autoscaler's own policy state (JSON), apart from the dashboard's SCALING_STATE: a restart
#: keeps its burst window (which only holds workers); its stable and idle windows reopen with it.
AUTOSCALER_STATE = "scaling:state:autoscaler"
#: The running autoscaler's AUTOSCALE (on, off or recommend), set at its start; absent (shown as
#: "advisory") while none has run.
SCALING_MODE = "scaling:mode"
#: The autoscaler's actuator health (core.alerts.AutoscalerHealth as JSON), written each
#: tick with a TTL of AUTOSCALER_HEALTH_TTL_SECONDS: absent while no autoscaler runs.
AUTOSCALER_HEALTH = "scaling:autoscaler:health"
AUTOSCALER_HEALTH_TTL_SECONDS = 10


# -- Alerts (the sampler that holds SAMPLER_LEADER evaluates core/alerts.py's rules) -------------

#: rule name -> JSON core.alerts.Alert: pending and firing alerts, and resolved ones whose
#: resolving notice the webhook has yet to take. Every dashboard replica serves these.
ALERTS_ACTIVE = "alerts:active"
#: Resolved alerts (JSON core.alerts.Alert), newest first, capped.
ALERTS_HISTORY = "alerts:history"
ALERTS_HISTORY_KEPT = 100


# -- Scenarios (load_test/scenarios.py writes, the dashboard shows a banner) -------------------

#: The scenario running now or run last: JSON {name, concept, state (running|passed|failed),
#: started_at, ended_at, detail}. It expires SCENARIO_TTL_SECONDS after its last write, so an old
#: outcome leaves the page and a scenario killed mid-run does not show as running for ever.
SCENARIO = "scenario:current"
SCENARIO_TTL_SECONDS = 900
