"""Queue operations on Redis: the one protocol the gateway, workers, reaper and dashboard share.

The reliable-queue pattern: a claim atomically moves a task id from the queue into the
worker's own processing list (BLMOVE), and only an acknowledgement removes it from there.
A worker that dies leaves its ids behind; the reaper moves them back once its heartbeat
has expired. Nothing here scans the keyspace.

Memory: Redis runs with `maxmemory` and `noeviction`, so a full Redis refuses writes instead of
growing until the kernel kills it. New tasks meet a byte budget first (QUEUE_MAX_BYTES, by default
MEMORY_SHARE_FOR_INTAKE of maxmemory), checked in the enqueue scripts; the worker's scripts
(claims, results, acks, retries due) may pass maxmemory (allow-oom), so a task once accepted can
always finish, in the room the budget left.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from core import keys
from core.models import TaskRecord, TaskSpec, TaskStatus, new_task_id, new_task_ids
from core.settings import Settings
from core.timeutil import now

log = logging.getLogger(__name__)

#: Take a lease if free, or extend it if we already hold it; never steal it. Shared by every
#: leader election (the reaper here, the dashboard's sampler).
LEASE_SCRIPT = """#!lua flags=allow-oom
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""


#: What the client raises when Redis is down or unreachable (db.UNAVAILABLE_ERRORS' counterpart):
#: the errors a worker's loops retry.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)


#: Redis memory that new tasks may fill, as a share of Redis's `maxmemory`, when QUEUE_MAX_BYTES is 0.
#: The rest is headroom for what accepted tasks still write: a final record holds the data and
#: the result, and echo's result repeats the data, so a task can grow to twice its queued size;
#: the last fifth covers buffers (AOF, clients) and bookkeeping.
MEMORY_SHARE_FOR_INTAKE = 0.4

#: How long the enqueue scripts reuse one reading of Redis's memory (keys.MEMORY_ROOM), less
#: what they accepted since: INFO costs more than the rest of a one-task enqueue. What workers
#: write meanwhile is not seen for that long; the headroom covers it.
MEMORY_READING_MS = 100

# Shared by the enqueue scripts: room(key, budget) is the bytes Redis may still take for new tasks
# (a huge number when there is no byte bound), took(key, bytes) charges what was accepted. The
# budget (ARGV): > 0 bytes of used_memory; 0 MEMORY_SHARE_FOR_INTAKE of maxmemory (no bound
# without one); < 0 no bound.
_ROOM_FUNCTIONS = f"""
local function room(key, budget)
  budget = tonumber(budget)
  if budget < 0 then return math.huge end
  local known = redis.call('GET', key)
  if known then return tonumber(known) end
  local info = redis.call('INFO', 'memory')
  local free = 1e13  -- no maxmemory: no bound (an integer Lua still prints whole, for DECRBY)
  if budget == 0 then
    budget = math.floor(tonumber(string.match(info, '\\nmaxmemory:(%d+)')) * {MEMORY_SHARE_FOR_INTAKE})
  end
  if budget > 0 then free = budget - tonumber(string.match(info, 'used_memory:(%d+)')) end
  redis.call('SET', key, free, 'PX', {MEMORY_READING_MS})
  return free
end
local function took(key, budget, size)
  -- room() left the key in place: time stands still in a script, so it has not expired since.
  if tonumber(budget) >= 0 then redis.call('DECRBY', key, size) end
end
"""


def _strs(values: Iterable[Any]) -> list[str]:
    """The client decodes replies (decode_responses=True); redis-py's types can't know that."""
    return sorted(str(v) for v in values)


# Accept many tasks in one atomic step: all or none. Same rules as one task; the queue bound
# refuses a batch that would take the queue past it, the byte budget one whose records would take
# Redis's memory past it. KEYS: queue, stats, recent, idempotency ('' = none), memory room.
# ARGV: queue max, recent kept, body hash, idempotency ttl, task key prefix, the stats field
# counting the request ('' = none), byte budget, then id, record pairs. Returns the queue depth before the push. The
# records go in one MSET, and only the newest ids into the recent list: per task, one command less
# to run and to append to the AOF (a batch is at most 1,000 tasks, 2,000 values: within what Lua
# can unpack, about 8,000).
_ENQUEUE_MANY_SCRIPT = (
    _ROOM_FUNCTIONS
    + """
if ARGV[6] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[6], 1) end
if KEYS[4] ~= '' then
  local seen = redis.call('GET', KEYS[4])
  if seen then return {'duplicate', seen} end
end
local n = (#ARGV - 7) / 2
local depth = redis.call('LLEN', KEYS[1])
local max = tonumber(ARGV[1])
if max > 0 and depth + n > max then
  return {'full', tostring(depth)}
end
local ids, records, size = {}, {}, 0
for i = 1, n do
  local id = ARGV[6 + 2 * i]
  local record = ARGV[7 + 2 * i]
  ids[i] = id
  records[2 * i - 1] = ARGV[5] .. id
  records[2 * i] = record
  size = size + #record
end
if size > room(KEYS[5], ARGV[7]) then
  return {'full_memory', tostring(depth)}
end
took(KEYS[5], ARGV[7], size)
redis.call('MSET', unpack(records))
redis.call('LPUSH', KEYS[1], unpack(ids))
redis.call('HINCRBY', KEYS[2], 'accepted', n)
local kept = tonumber(ARGV[2])
if kept > 0 then
  redis.call('LPUSH', KEYS[3], unpack(ids, math.max(1, n - kept + 1)))
  redis.call('LTRIM', KEYS[3], 0, kept - 1)
end
if KEYS[4] ~= '' then
  redis.call('SET', KEYS[4], ARGV[3] .. ':' .. table.concat(ids, ','), 'EX', ARGV[4])
end
return {'ok', tostring(depth)}
"""
)

# Accept independent submissions (concurrent requests, coalesced) in one atomic step: each is
# queued or refused on its own, in order, by the rules _ENQUEUE_MANY_SCRIPT applies to a batch of one.
# KEYS: queue, stats, recent, memory room. ARGV: queue max, recent kept, task key prefix, the stats
# field counting one API request per task ('' = none), byte budget, then id, record pairs. Returns per task its
# queue position, -depth when the queue was full, or 'm<depth>' when Redis's memory budget was.
_ENQUEUE_EACH_SCRIPT = (
    _ROOM_FUNCTIONS
    + """
local n = (#ARGV - 5) / 2
if ARGV[4] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[4], n) end
local max = tonumber(ARGV[1])
local depth = redis.call('LLEN', KEYS[1])
local free = room(KEYS[4], ARGV[5])
local room_before = free
local out, accepted, records = {}, {}, {}
for i = 1, n do
  local record = ARGV[5 + 2 * i]
  if max > 0 and depth >= max then
    out[i] = -depth
  elseif #record > free then
    out[i] = 'm' .. depth
  else
    local id = ARGV[4 + 2 * i]
    depth = depth + 1  -- its position once the LPUSH below has run
    free = free - #record
    out[i] = depth
    accepted[#accepted + 1] = id
    records[#records + 1] = ARGV[3] .. id
    records[#records + 1] = record
  end
end
if #accepted > 0 then
  took(KEYS[4], ARGV[5], room_before - free)
  redis.call('MSET', unpack(records))
  redis.call('LPUSH', KEYS[1], unpack(accepted))
  redis.call('HINCRBY', KEYS[2], 'accepted', #accepted)
  local kept = tonumber(ARGV[2])
  if kept > 0 then
    redis.call('LPUSH', KEYS[3], unpack(accepted, math.max(1, #accepted - kept + 1)))
    redis.call('LTRIM', KEYS[3], 0, kept - 1)
  end
end
return out
"""
)

# Claim up to ARGV[1] ids at once, each moved queue -> processing list as BLMOVE would, its
# attempt counted, and return them with their records ('' when purged): one round trip instead
# of 3 per task, and atomic, so a crash leaves every claimed id in the processing list for the
# reaper, its attempt already counted. KEYS: queue, processing, attempts. ARGV: count, task key
# prefix. Returns id, record, attempt triples.
_CLAIM_MANY_SCRIPT = """#!lua flags=allow-oom
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not id then break end
  out[#out + 1] = id
  out[#out + 1] = redis.call('GET', ARGV[2] .. id) or ''
  out[#out + 1] = redis.call('HINCRBY', KEYS[3], id, 1)
end
return out
"""

# The same for an id a blocking claim (BLMOVE) took. KEYS: task, attempts. ARGV: id.
_CLAIMED_SCRIPT = """#!lua flags=allow-oom
return {redis.call('GET', KEYS[1]) or '', redis.call('HINCRBY', KEYS[2], ARGV[1], 1)}
"""

# The record writes of many tasks in one atomic step (the worker batches them): non-final states
# stored as save() does, final ones as finish() does, counters added once per batch. The
# dead-letter list keeps its newest `dead kept` ids; older ones live on as failed rows in Postgres.
# KEYS: stats, dead, durations. ARGV: result ttl, durations kept, task key prefix, number of
# saves, dead kept, then (id, record) per save, then (id, record, status, durations entry) per final.
_WRITE_BATCH_SCRIPT = """#!lua flags=allow-oom
local saves = tonumber(ARGV[4])
local i = 6
for _ = 1, saves do
  redis.call('SET', ARGV[3] .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
local completed, failed, entries = 0, 0, {}
while i <= #ARGV do
  local id, status = ARGV[i], ARGV[i + 2]
  redis.call('SET', ARGV[3] .. id, ARGV[i + 1], 'EX', ARGV[1])
  if status == 'failed' then
    failed = failed + 1
    redis.call('LREM', KEYS[2], 0, id)
    redis.call('LPUSH', KEYS[2], id)
  else
    completed = completed + 1
  end
  entries[#entries + 1] = ARGV[i + 3]
  i = i + 4
end
if completed > 0 then redis.call('HINCRBY', KEYS[1], 'completed', completed) end
if failed > 0 then
  redis.call('HINCRBY', KEYS[1], 'failed', failed)
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
end
if #entries > 0 then
  redis.call('LPUSH', KEYS[3], unpack(entries))
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[2]) - 1)
end
return saves + #entries
"""

# Acknowledge many claims in one command; their attempt counts go with them. Claims enter the
# processing list at the head, so the oldest sit at the tail: LREM with a negative count searches
# from there and finds an acked id after a few steps, not the whole list. KEYS: processing,
# attempts. ARGV: ids.
_ACK_MANY_SCRIPT = """#!lua flags=allow-oom
local removed = 0
for _, id in ipairs(ARGV) do
  removed = removed + redis.call('LREM', KEYS[1], -1, id)
end
redis.call('HDEL', KEYS[2], unpack(ARGV))
return removed
"""

# Move retries whose backoff is over to the head of the queue. KEYS: delayed, queue.
_PROMOTE_SCRIPT = """#!lua flags=allow-oom
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('RPUSH', KEYS[2], id)
end
return #due
"""


class QueueFull(Exception):
    """Refused for the queue bound (QUEUE_MAX tasks) or, with `memory`, for the byte budget."""

    def __init__(self, depth: int, *, memory: bool = False) -> None:
        reason = "Redis's memory budget for new tasks is used up; " if memory else ""
        super().__init__(f"{reason}queue holds {depth} tasks")
        self.depth = depth
        self.memory = memory


class IdempotencyConflict(Exception):
    """The same Idempotency-Key came with a different body."""


@dataclass(frozen=True)
class Accepted:
    """A submission the queue took: what its 202 tells the client."""

    id: str
    type: str
    #: queued, or for a replay the task's status now
    status: TaskStatus
    position: int
    replayed: bool = False


@dataclass(frozen=True)
class Claim:
    """A task a worker claimed: its record (None: purged meanwhile, or unreadable) and which attempt this is."""

    id: str
    record: TaskRecord | None
    #: 1 for the first claim; counts every claim until the task is acknowledged (retries too)
    attempt: int
    #: the stored text when it is no valid task record (written by hand or by a broken client):
    #: the worker fails the task instead of running it
    unreadable: str | None = None


@dataclass(frozen=True, slots=True)
class FinalRecord:
    """A final record encoded once, for Redis and Postgres alike, with the few fields the write
    needs besides: what the worker holds until the record is committed (not the parsed record,
    whose data and result cost several times their JSON in Python objects)."""

    id: str
    status: TaskStatus
    finished_ms: int
    processing_time: float
    #: the TaskRecord's JSON
    raw: str

    @classmethod
    def of(cls, task: TaskRecord) -> FinalRecord:
        finished_ms = int((task.completed_at or now()).timestamp() * 1000)
        return cls(task.id, task.status, finished_ms, task.processing_time or 0.0, task.model_dump_json())


def _claim(task_id: Any, raw: Any, attempt: Any) -> Claim:
    if not raw:
        return Claim(str(task_id), None, int(attempt))
    try:
        return Claim(str(task_id), TaskRecord.model_validate_json(raw), int(attempt))
    except ValidationError as exc:
        log.warning("task %s has an unreadable record (%d validation errors)", task_id, exc.error_count())
        return Claim(str(task_id), None, int(attempt), unreadable=str(raw))


@dataclass(frozen=True)
class AcceptedMany:
    #: the ids in the order of the submitted tasks
    ids: list[str]
    #: queue depth just before the batch went in; task i is at position depth + i + 1
    depth: int
    #: when this call built the records (for a replay, the stored ones are older)
    created_at: datetime
    replayed: bool = False


def batch_hash(submits: Sequence[TaskSpec]) -> str:
    canonical = orjson.dumps([{"type": s.type, "data": s.data} for s in submits], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:32]


_TASK_PREFIX = keys.task("")


def queued_records(submits: Sequence[TaskSpec], created: datetime) -> list[tuple[str, bytes]]:
    """(id, record JSON) of new queued tasks, as TaskRecord(...).model_dump_json() writes them.

    Only id, type and data differ between new tasks, and they are the record's first fields: each
    record is those three, encoded by orjson, and the rest of one model dump per batch, as bytes.
    A record costs a third of encoding it whole (a test checks the bytes are the model's)."""
    shared = TaskRecord(id="", type="", created_at=created).model_dump(mode="json")
    rest = orjson.dumps({name: value for name, value in shared.items() if name not in _LEADING})
    tail = b"," + rest[1:]  # '"status":"queued",...}'
    dumps = orjson.dumps
    return [
        (
            task_id,
            b'{"id":"' + task_id.encode() + b'","type":' + dumps(submit.type) + b',"data":' + dumps(submit.data) + tail,
        )
        for task_id, submit in zip(new_task_ids(len(submits)), submits, strict=True)
    ]


#: The fields queued_records() writes itself, in the model's order (checked at import).
_LEADING = ("id", "type", "data")
assert tuple(TaskRecord.model_fields)[: len(_LEADING)] == _LEADING, "queued_records() relies on this order"


class TaskQueue:
    def __init__(
        self,
        redis: Redis,
        *,
        result_ttl: int = 3600,
        recent_kept: int = 200,
        queue_max: int = 0,
        queue_max_bytes: int = 0,
        idempotency_ttl: int = 24 * 3600,
        dead_kept: int = keys.DEAD_KEPT,
    ) -> None:
        self.redis = redis
        self.result_ttl = result_ttl
        self.recent_kept = recent_kept
        self.queue_max = queue_max
        #: Redis memory (used_memory) past which new tasks are refused: 0 = a share of maxmemory
        #: (MEMORY_SHARE_FOR_INTAKE), < 0 = none
        self.queue_max_bytes = queue_max_bytes
        self.dead_kept = dead_kept
        self.idempotency_ttl = idempotency_ttl
        self._lead = redis.register_script(LEASE_SCRIPT)
        self._enqueue_many = redis.register_script(_ENQUEUE_MANY_SCRIPT)
        self._enqueue_each = redis.register_script(_ENQUEUE_EACH_SCRIPT)
        self._claim_many = redis.register_script(_CLAIM_MANY_SCRIPT)
        self._claimed = redis.register_script(_CLAIMED_SCRIPT)
        self._write_batch = redis.register_script(_WRITE_BATCH_SCRIPT)
        self._ack_many = redis.register_script(_ACK_MANY_SCRIPT)
        self._promote = redis.register_script(_PROMOTE_SCRIPT)

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> TaskQueue:
        return cls(
            redis,
            result_ttl=settings.result_ttl_seconds,
            recent_kept=settings.recent_tasks_kept,
            queue_max=settings.queue_max,
            queue_max_bytes=settings.queue_max_bytes,
            idempotency_ttl=settings.idempotency_ttl_seconds,
        )

    # -- producers -------------------------------------------------------------------------

    async def enqueue(
        self, submit: TaskSpec, idempotency_key: str | None = None, *, count_request: bool = False
    ) -> Accepted:
        """Store and queue a task atomically: enqueue_many() of one, so one set of rules (the queue
        bound, an Idempotency-Key's replay or conflict). Raises QueueFull or IdempotencyConflict.
        A replay returns the task as it is now."""
        many = await self.enqueue_many([submit], idempotency_key, count_request=count_request)
        task_id = many.ids[0]
        if many.replayed:
            stored = await self.get(task_id)
            return Accepted(task_id, submit.type, stored.status if stored else TaskStatus.QUEUED, 0, replayed=True)
        return Accepted(task_id, submit.type, TaskStatus.QUEUED, many.depth + 1)

    async def enqueue_many(
        self, submits: Sequence[TaskSpec], idempotency_key: str | None = None, *, count_request: bool = False
    ) -> AcceptedMany:
        """Store and queue many tasks in one atomic step (all or none). Raises QueueFull or IdempotencyConflict.

        An Idempotency-Key covers the whole batch: the same key and body return the same ids.
        """
        created = now()
        args: list[Any] = [
            self.queue_max,
            self.recent_kept,
            batch_hash(submits) if idempotency_key else "",
            self.idempotency_ttl,
            _TASK_PREFIX,
            keys.STAT_REQUESTS if count_request else "",
            self.queue_max_bytes,
        ]
        ids: list[str] = []
        for task_id, record in queued_records(submits, created):
            ids.append(task_id)
            args += (task_id, record)
        idempotency = keys.idempotency(idempotency_key) if idempotency_key else ""
        outcome, value = await self._enqueue_many(
            keys=[keys.QUEUE, keys.STATS, keys.RECENT, idempotency, keys.MEMORY_ROOM], args=args
        )
        if outcome == "full":
            raise QueueFull(int(value))
        if outcome == "full_memory":
            raise QueueFull(int(value), memory=True)
        if outcome == "duplicate":
            seen_hash, _, seen_ids = str(value).partition(":")
            if seen_hash != args[2]:
                raise IdempotencyConflict(seen_ids.split(",", 1)[0])
            return AcceptedMany(seen_ids.split(","), 0, created, replayed=True)
        return AcceptedMany(ids, int(value), created)

    async def enqueue_each(
        self, submits: Sequence[TaskSpec], *, count_requests: bool = False
    ) -> list[Accepted | QueueFull]:
        """Store and queue independent tasks (no Idempotency-Key) in one round trip: each one is
        accepted or refused (QueueFull, returned, not raised) on its own, as enqueue() would.

        `count_requests` counts one API request per task, as enqueue(count_request=True) does.
        """
        records = queued_records(submits, now())
        args: list[Any] = [
            self.queue_max,
            self.recent_kept,
            _TASK_PREFIX,
            keys.STAT_REQUESTS if count_requests else "",
            self.queue_max_bytes,
        ]
        for task_id, record in records:
            args += (task_id, record)
        positions = await self._enqueue_each(keys=[keys.QUEUE, keys.STATS, keys.RECENT, keys.MEMORY_ROOM], args=args)
        return [
            QueueFull(int(raw[1:]), memory=True)
            if isinstance(raw, str | bytes)
            else Accepted(task_id, submit.type, TaskStatus.QUEUED, raw)
            if raw > 0
            else QueueFull(-raw)
            for (task_id, _), submit, raw in zip(records, submits, positions, strict=True)
        ]

    async def count_request(self) -> None:
        await self.redis.hincrby(keys.STATS, keys.STAT_REQUESTS, 1)

    # -- task records ----------------------------------------------------------------------

    async def get(self, task_id: str) -> TaskRecord | None:
        raw = await self.redis.get(keys.task(task_id))
        return TaskRecord.model_validate_json(raw) if raw else None

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskRecord | None]:
        if not task_ids:
            return []
        raws = await self.redis.mget([keys.task(t) for t in task_ids])
        return [TaskRecord.model_validate_json(r) if r else None for r in raws]

    async def save(self, task: TaskRecord) -> None:
        """Write a non-final state (e.g. processing)."""
        await self.redis.set(keys.task(task.id), task.model_dump_json())

    async def cache(self, task: TaskRecord) -> None:
        """Put a record read back from Postgres into Redis again, for later reads."""
        await self.redis.set(keys.task(task.id), task.model_dump_json(), ex=self.result_ttl, nx=True)

    async def finish(self, task: TaskRecord) -> None:
        """Write a final state and count it, atomically; the hot copy then expires.

        A failed task also enters the dead-letter queue, where it waits for a redrive.
        """
        await self.write_batch((), (task,))

    async def write_batch(self, saves: Sequence[TaskRecord], finals: Sequence[TaskRecord]) -> None:
        """save() of each of `saves` and finish() of each of `finals`, in one atomic command."""
        await self.write_encoded(saves, [FinalRecord.of(task) for task in finals])

    async def write_encoded(self, saves: Sequence[TaskRecord], finals: Sequence[FinalRecord]) -> None:
        """write_batch() of final records already encoded.

        Never refused for memory (allow-oom): the byte budget keeps room for these writes, and
        refusing them would leave accepted tasks unfinished."""
        if not saves and not finals:
            return
        args: list[Any] = [self.result_ttl, keys.DURATIONS_KEPT, _TASK_PREFIX, len(saves), self.dead_kept]
        for task in saves:
            args += (task.id, task.model_dump_json())
        for final in finals:
            status = final.status.value
            args += (final.id, final.raw, status, f"{final.finished_ms}:{final.processing_time:.6f}:{status}")
        await self._write_batch(keys=[keys.STATS, keys.DEAD, keys.DURATIONS], args=args)

    async def retry_later(self, worker_id: str, task: TaskRecord, delay: float) -> None:
        """Park a failed attempt until its backoff is over; it leaves our processing list at once."""
        due_ms = int((now().timestamp() + delay) * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.task(task.id), task.model_dump_json())
            pipe.zadd(keys.DELAYED, {task.id: due_ms})
            pipe.lrem(keys.processing(worker_id), 1, task.id)
            pipe.hincrby(keys.STATS, keys.STAT_RETRIED, 1)
            await pipe.execute()

    async def promote_due(self, limit: int = 1000) -> int:
        """Queue the retries whose backoff is over (run by the leader only)."""
        return int(await self._promote(keys=[keys.DELAYED, keys.QUEUE], args=[int(now().timestamp() * 1000), limit]))

    # -- consumers -------------------------------------------------------------------------

    async def claim(self, worker_id: str, block_seconds: int) -> str | None:
        """Block up to `block_seconds` for a task id, moving it into this worker's processing list."""
        task_id = await self.redis.blmove(keys.QUEUE, keys.processing(worker_id), block_seconds, "RIGHT", "LEFT")
        return None if task_id is None else str(task_id)

    async def claim_many(self, worker_id: str, count: int) -> list[Claim]:
        """Claim up to `count` ids without blocking, atomically, with their records and attempts."""
        flat = await self._claim_many(
            keys=[keys.QUEUE, keys.processing(worker_id), keys.ATTEMPTS], args=[count, _TASK_PREFIX]
        )
        # Each record read on its own: one unreadable record must not cost the others their claim.
        return [_claim(i, raw, n) for i, raw, n in zip(flat[::3], flat[1::3], flat[2::3], strict=True)]

    async def claimed(self, task_id: str) -> Claim:
        """Read the record of an id claim() took, counting the attempt about to start."""
        raw, attempt = await self._claimed(keys=[keys.task(task_id), keys.ATTEMPTS], args=[task_id])
        return _claim(task_id, raw, attempt)

    async def ack(self, worker_id: str, task_id: str) -> None:
        await self.ack_many(worker_id, [task_id])

    async def ack_many(self, worker_id: str, task_ids: Sequence[str]) -> None:
        if task_ids:
            await self._ack_many(keys=[keys.processing(worker_id), keys.ATTEMPTS], args=list(task_ids))

    async def discard(self, worker_id: str, task_id: str) -> None:
        """Drop a claim that can never become a task (an unreadable record under an id that is no
        task id): its claim, attempt count and record go."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(keys.processing(worker_id), 1, task_id)
            pipe.hdel(keys.ATTEMPTS, task_id)
            pipe.delete(keys.task(task_id))
            await pipe.execute()

    async def release(self, worker_id: str, task_id: str) -> None:
        """Hand an unstarted or abandoned claim back to the head of the queue."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(keys.processing(worker_id), 1, task_id)
            pipe.rpush(keys.QUEUE, task_id)
            await pipe.execute()

    # -- workers ---------------------------------------------------------------------------

    async def beat(self, worker_id: str, payload: dict[str, Any], ttl: int) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.heartbeat(worker_id), orjson.dumps(payload), ex=ttl)
            pipe.sadd(keys.WORKERS, worker_id)
            await pipe.execute()

    async def deregister(self, worker_id: str) -> None:
        """A clean exit: gone at once, not after the heartbeat TTL. Leftover claims stay for the reaper."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.heartbeat(worker_id))
            pipe.llen(keys.processing(worker_id))
            _, left = await pipe.execute()
        if not left:
            await self.redis.srem(keys.WORKERS, worker_id)

    async def live_workers(self) -> list[dict[str, Any]]:
        """Heartbeats of workers whose heartbeat key has not expired."""
        ids = _strs(await self.redis.smembers(keys.WORKERS))
        if not ids:
            return []
        beats = await self.redis.mget([keys.heartbeat(w) for w in ids])
        return [orjson.loads(b) for b in beats if b]

    async def queue_length(self) -> int:
        return int(await self.redis.llen(keys.QUEUE))

    async def in_flight(self) -> int:
        """Tasks claimed and not yet acknowledged, over every registered worker."""
        ids = _strs(await self.redis.smembers(keys.WORKERS))
        if not ids:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.llen(keys.processing(worker_id))
            return sum(int(n) for n in await pipe.execute())

    async def delayed_count(self) -> int:
        return int(await self.redis.zcard(keys.DELAYED))

    # -- dead letters and admin ------------------------------------------------------------

    async def dead_ids(self, limit: int) -> tuple[int, list[str]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(keys.DEAD)
            pipe.lrange(keys.DEAD, 0, limit - 1)
            total, ids = await pipe.execute()
        return int(total), [str(i) for i in ids]

    async def record_audit(self, entry: bytes) -> None:
        """Keep an admin action's audit entry (JSON), newest first, the newest ADMIN_AUDIT_KEPT only."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(keys.ADMIN_AUDIT, entry)
            pipe.ltrim(keys.ADMIN_AUDIT, 0, keys.ADMIN_AUDIT_KEPT - 1)
            await pipe.execute()

    async def take_redrive_lock(self, hold_ms: int) -> bool:
        return bool(await self.redis.set(keys.REDRIVE_LOCK, "1", nx=True, px=hold_ms))

    async def redrive(self, tasks: Sequence[TaskRecord]) -> list[str]:
        """Put dead-lettered tasks back at the head of the queue with a fresh set of attempts."""
        moved: list[str] = []
        for task in tasks:
            if await self.redis.lrem(keys.DEAD, 0, task.id) == 0:
                continue  # not (or no longer) dead-lettered
            fresh = task.model_copy(
                update={"status": TaskStatus.QUEUED, "attempts": 0, "started_at": None, "completed_at": None}
            )
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(keys.task(task.id), fresh.model_dump_json())
                pipe.rpush(keys.QUEUE, task.id)
                pipe.hincrby(keys.STATS, keys.STAT_FAILED, -1)
                await pipe.execute()
            moved.append(task.id)
        return moved

    async def take_queue(self) -> list[str]:
        """Atomically empty the waiting queue (an admin purge); returns the ids it held."""
        holding = f"{keys.QUEUE}:purging:{new_task_id()}"
        try:
            await self.redis.rename(keys.QUEUE, holding)
        except ResponseError:  # no such key: the queue was already empty
            return []
        ids = [str(i) for i in await self.redis.lrange(holding, 0, -1)]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(holding)
            if ids:
                pipe.hdel(keys.ATTEMPTS, *ids)  # a requeued task may have counted attempts
            await pipe.execute()
        return ids

    async def stats(self) -> dict[str, int]:
        raw = await self.redis.hgetall(keys.STATS)
        return {str(k): int(v) for k, v in raw.items()}

    async def recent_durations(self, count: int = keys.DURATIONS_KEPT) -> list[tuple[float, float, str]]:
        """(completed epoch s, processing s, status) of the newest finished tasks, newest first."""
        out = []
        for raw in await self.redis.lrange(keys.DURATIONS, 0, count - 1):
            ms, seconds, status = str(raw).split(":", 2)
            out.append((int(ms) / 1000, float(seconds), status))
        return out

    async def recent_ids(self, count: int) -> list[str]:
        # Newest first: the order matters, so no sorting here.
        return [str(v) for v in await self.redis.lrange(keys.RECENT, 0, count - 1)]

    # -- reaper ----------------------------------------------------------------------------

    async def lead(self, holder: str, ttl_ms: int) -> bool:
        return bool(await self._lead(keys=[keys.REAPER_LEADER], args=[holder, ttl_ms]))

    async def reap_dead_workers(self) -> list[str]:
        """Requeue every in-flight task of workers whose heartbeat expired; returns the task ids."""
        ids = _strs(await self.redis.smembers(keys.WORKERS))
        if not ids:
            return []
        beats = await self.redis.mget([keys.heartbeat(w) for w in ids])
        requeued: list[str] = []
        for worker_id, beat in zip(ids, beats, strict=True):
            if beat:
                continue
            while True:
                # One id at a time, marked before it moves: once in the queue, a claimer may finish
                # it at once (a poison task is failed on that claim), and a mark written after that
                # would turn its final record back into `queued`. Nothing but this reaper touches a
                # dead worker's list; a crash between mark and move leaves the id for the next reap.
                oldest = await self.redis.lindex(keys.processing(worker_id), -1)
                if oldest is None:
                    break
                task_id = str(oldest)
                await self._mark_requeued(task_id, worker_id)
                await self.redis.lmove(keys.processing(worker_id), keys.QUEUE, "RIGHT", "RIGHT")
                requeued.append(task_id)
            await self.redis.srem(keys.WORKERS, worker_id)
        return requeued

    async def _mark_requeued(self, task_id: str, worker_id: str) -> None:
        task = await self.get(task_id)
        await self.redis.hincrby(keys.STATS, keys.STAT_REQUEUED, 1)
        # A final record means the worker died between writing it and acking: the next
        # claimer only persists and acks it, so leave the record alone.
        if task is None or task.status.is_final:
            return
        task.status = TaskStatus.QUEUED
        task.error = f"worker {worker_id} died while running this task; requeued"
        await self.save(task)
