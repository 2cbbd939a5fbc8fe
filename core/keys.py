"""Every Redis key name, in one place, so producers and consumers share one protocol."""

from __future__ import annotations

#: Waiting task ids of normal priority. Producers LPUSH, consumers claim from the right (FIFO).
QUEUE = "queue:tasks"
#: Waiting task ids of high and low priority: the same protocol as QUEUE. A claim takes from
#: QUEUE_HIGH first, then QUEUE, then QUEUE_LOW.
QUEUE_HIGH = "queue:tasks:high"
QUEUE_LOW = "queue:tasks:low"
#: The waiting lists, the one claimed first first.
QUEUES = (QUEUE_HIGH, QUEUE, QUEUE_LOW)
#: Ids of tasks cancelled while they waited: final already, they wait only for a worker to commit
#: them to Postgres (claimed before QUEUE_HIGH, and not counted as waiting work).
CANCELLED = "queue:cancelled"
#: Low-priority ids (a sorted set scored by the epoch ms they entered QUEUE_LOW): the promoter
#: moves one that waited PRIORITY_AGING_SECONDS to the head of QUEUE, so low work cannot starve.
LOW_SINCE = "queue:tasks:low:since"
#: What the enqueue and promote scripts push onto an empty QUEUE when they fill QUEUE_HIGH or
#: QUEUE_LOW while a worker blocks on QUEUE (a blocking claim watches one list): it wakes and
#: claims from all three. No task id looks like it; a claim drops it.
WAKE = "~wake"
#: Workers in a blocking claim now (a sorted set: worker id -> epoch ms the claim began), so a
#: wake-up is pushed only when one may be waiting for it, and the queue's length is not left
#: one too long by a wake-up nobody takes. Entries older than BLOCKED_FRESH_MS are stale.
WORKERS_BLOCKED = "workers:blocked"
BLOCKED_FRESH_MS = 3000
#: Ids of workers that may own a processing list; the reaper walks this small set.
WORKERS = "workers:registry"
#: Shared counters (a hash) that survive gateway restarts.
STATS = "stats:counters"
#: Newest task ids first, capped.
RECENT = "tasks:recent"
#: Bytes new tasks may still take (the byte budget less Redis's used_memory), read by the enqueue
#: scripts from INFO at most every scripts.MEMORY_READING_MS and kept here meanwhile (a short TTL).
MEMORY_ROOM = "queue:memory-room"
#: Leader lock for the reaper, so only one replica requeues a dead worker's tasks.
REAPER_LEADER = "reaper:leader"
#: Recent finished tasks as "<completed epoch ms>:<processing seconds>:<status>", newest first,
#: capped: the source of processing-time percentiles and completion rates.
DURATIONS = "metrics:durations"
DURATIONS_KEPT = 5000


#: Attempts started per unfinished task (a hash: id -> count), counted atomically with each claim:
#: poison detection survives a worker dying mid-task without a record write per start. An
#: entry lives from its task's first claim until its acknowledgement.
ATTEMPTS = "tasks:attempts"

#: Tasks waiting out a retry backoff: a sorted set scored by the epoch ms they are due.
DELAYED = "queue:delayed"
#: Tasks submitted with delay_seconds or run_at (status scheduled): scored by the epoch ms they
#: are due, when the promoter queues them at the head of their priority's list.
SCHEDULED = "queue:scheduled"
#: The dead-letter queue: ids of tasks that failed their last attempt, newest first, capped (a
#: client can fail tasks without end): older ones live on as failed rows in Postgres only.
DEAD = "queue:dead"
DEAD_KEPT = 10_000
#: Held for a moment after a redrive, so redrives can't be fired in a tight loop.
REDRIVE_LOCK = "admin:redrive:lock"
#: What administrators did (purge, redrive), newest first, JSON {at, action, count, client,
#: forwarded_for}; capped, so a script hammering the admin API cannot grow it.
ADMIN_AUDIT = "admin:audit"
ADMIN_AUDIT_KEPT = 1000


def idempotency(key: str) -> str:
    """ "<body hash>:<task id>" for an Idempotency-Key, kept 24 h."""
    return f"idempotency:{key}"


def purging(token: str) -> str:
    """The waiting queue renamed away by an admin purge (any unique token), read and deleted at once."""
    return f"{QUEUE}:purging:{token}"


#: Where the ids of tasks whose record just turned final are published, comma-separated, one
#: message per batch of final writes: each gateway's result waiters (`GET /api/task/{id}?wait=S`)
#: listen there. One message per batch, not per task: a publish costs the drain as much as a write.
DONE_CHANNEL = "tasks:done"
#: Tasks a client asked to cancel as they run (`DELETE ...?running=true`): a hash, task id -> the
#: epoch ms the request stands until. The worker that holds the task, or the next one to claim it,
#: ends it cancelled; a final write removes its entry, the reaper the ones past their time. A claim
#: reads it only while it is not empty (one EXISTS per claim, not a lookup per task).
CANCEL_REQUESTS = "tasks:cancel-requests"
#: Where cancel requests are published (the message is the task id), so the worker running the
#: task stops it at once rather than at its next claim.
CANCEL_CHANNEL = "tasks:cancel"


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


# -- Scenarios (load_test/scenarios.py writes, the dashboard shows a banner) -------------------

#: The scenario running now or run last: JSON {name, concept, state (running|passed|failed),
#: started_at, ended_at, detail}. It expires SCENARIO_TTL_SECONDS after its last write, so an old
#: outcome leaves the page and a scenario killed mid-run does not show as running for ever.
SCENARIO = "scenario:current"
SCENARIO_TTL_SECONDS = 900
