"""The queue's Lua scripts, each behind a typed wrapper that builds its KEYS and ARGV.

A script is one atomic step on Redis in one round trip. Each wrapper takes named parameters and
is the only place that knows its script's argument layout; the Lua names each KEYS and ARGV
entry once at its top. Keys come from core.keys.

Memory: Redis runs with `maxmemory` and `noeviction`, so a full Redis refuses writes instead of
growing until the kernel kills it. New tasks meet a byte budget first (QUEUE_MAX_BYTES, by default
MEMORY_SHARE_FOR_INTAKE of maxmemory), checked in the enqueue scripts; the other scripts (claims,
results, acks, retries due) may pass maxmemory (allow-oom), so a task once accepted can always
finish, in the room the budget left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from redis.asyncio import Redis

from core import keys
from core.models import TaskRecord, TaskStatus
from core.records import FinalRecord

#: Redis memory that new tasks may fill, as a share of Redis's `maxmemory`, when QUEUE_MAX_BYTES is 0.
#: The rest is headroom for what accepted tasks still write: a final record holds the data and
#: the result, and echo's result repeats the data, so a task can grow to twice its queued size;
#: the last fifth covers buffers (AOF, clients) and bookkeeping.
MEMORY_SHARE_FOR_INTAKE = 0.4

#: How long the enqueue scripts reuse one reading of Redis's memory (keys.MEMORY_ROOM), less
#: what they accepted since: INFO costs more than the rest of a one-task enqueue. What workers
#: write meanwhile is not seen for that long; the headroom covers it.
MEMORY_READING_MS = 100

_TASK_PREFIX = keys.task("")


class _Script:
    """A Lua script registered on a client: run by its SHA, loaded again if Redis lost it."""

    source: ClassVar[str]

    def __init__(self, redis: Redis) -> None:
        self._run = redis.register_script(self.source)


# -- leases ------------------------------------------------------------------------------------

#: Take a lease if free, or extend it if we already hold it; never steal it. Shared by every
#: leader election (the reaper, the dashboard's sampler).
LEASE_SCRIPT = """#!lua flags=allow-oom
local lease = KEYS[1]
local holder, ttl_ms = ARGV[1], ARGV[2]
if redis.call('GET', lease) == holder then
  redis.call('PEXPIRE', lease, ttl_ms)
  return 1
end
if redis.call('SET', lease, holder, 'NX', 'PX', ttl_ms) then
  return 1
end
return 0
"""


class Lease(_Script):
    source = LEASE_SCRIPT

    async def __call__(self, *, lease: str, holder: str, ttl_ms: int) -> bool:
        """Whether `holder` holds `lease` (a key) for the next `ttl_ms`."""
        return bool(await self._run(keys=[lease], args=[holder, ttl_ms]))


# -- intake ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refused:
    """A task the queue did not take: it holds QUEUE_MAX tasks or, with `memory`, the byte budget
    for new tasks is used up. `depth` is the queue's length when it refused."""

    depth: int
    memory: bool = False

    @property
    def reason(self) -> str:
        used_up = "Redis's memory budget for new tasks is used up; " if self.memory else ""
        return f"{used_up}queue holds {self.depth} tasks"


@dataclass(frozen=True, slots=True)
class Replay:
    """An Idempotency-Key seen before: the body hash and the task ids it was first used with."""

    body_hash: str
    ids: list[str]


# What both enqueue scripts share: their first KEYS and ARGV, the byte budget and the rule for
# accepted tasks. room() is the bytes Redis may still take for new tasks (a huge number when there
# is no byte bound). byte_budget: > 0 bytes of used_memory; 0 MEMORY_SHARE_FOR_INTAKE of maxmemory
# (no bound without one); < 0 no bound. push() stores and queues accepted tasks, counts them,
# keeps the newest `recent_kept` ids in the recent list and charges their bytes to the room.
_INTAKE_RULES = f"""
local queue, stats, recent, room_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local queue_max, recent_kept, task_prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local requests_field, byte_budget = ARGV[4], tonumber(ARGV[5])

local function room()
  if byte_budget < 0 then return math.huge end
  local known = redis.call('GET', room_key)
  if known then return tonumber(known) end
  local info = redis.call('INFO', 'memory')
  local free = 1e13  -- no maxmemory: no bound (an integer Lua still prints whole, for DECRBY)
  local budget = byte_budget
  if budget == 0 then
    budget = math.floor(tonumber(string.match(info, '\\nmaxmemory:(%d+)')) * {MEMORY_SHARE_FOR_INTAKE})
  end
  if budget > 0 then free = budget - tonumber(string.match(info, 'used_memory:(%d+)')) end
  redis.call('SET', room_key, free, 'PX', {MEMORY_READING_MS})
  return free
end

local function push(ids, records, size)
  -- room() left the key in place: time stands still in a script, so it has not expired since.
  if byte_budget >= 0 then redis.call('DECRBY', room_key, size) end
  redis.call('MSET', unpack(records))
  redis.call('LPUSH', queue, unpack(ids))
  redis.call('HINCRBY', stats, '{keys.STAT_ACCEPTED}', #ids)
  if recent_kept > 0 then
    redis.call('LPUSH', recent, unpack(ids, math.max(1, #ids - recent_kept + 1)))
    redis.call('LTRIM', recent, 0, recent_kept - 1)
  end
end
"""


@dataclass(frozen=True, slots=True)
class IntakeLimits:
    """The bounds both enqueue scripts apply (TaskQueue's settings)."""

    #: tasks the queue may hold; 0 = no bound
    queue_max: int
    #: ids the recent list keeps
    recent_kept: int
    #: see _INTAKE_RULES
    byte_budget: int


def _intake_args(
    limits: IntakeLimits, count_requests: bool, own: Sequence[Any], records: Sequence[tuple[str, bytes]]
) -> list[Any]:
    """ARGV of an enqueue script: _INTAKE_RULES' places, the script's `own`, then id, record pairs."""
    requests_field = keys.STAT_REQUESTS if count_requests else ""
    args: list[Any] = [limits.queue_max, limits.recent_kept, _TASK_PREFIX, requests_field, limits.byte_budget, *own]
    for task_id, record in records:
        args += (task_id, record)
    return args


class EnqueueMany(_Script):
    """Accept many tasks in one atomic step: all or none.

    The queue bound refuses a batch that would take the queue past it, the byte budget one whose
    records would take Redis's memory past it. The records go in one MSET, and only the newest ids
    into the recent list: per task, one command less to run and to append to the AOF (a batch is
    at most 1,000 tasks, 2,000 values: within what Lua can unpack, about 8,000)."""

    source = (
        _INTAKE_RULES
        + """
local idempotency, body_hash, idempotency_ttl = KEYS[5], ARGV[6], ARGV[7]
local first = 8  -- the first id; its record follows it
if requests_field ~= '' then redis.call('HINCRBY', stats, requests_field, 1) end
if idempotency ~= '' then
  local seen = redis.call('GET', idempotency)
  if seen then return {'duplicate', seen} end
end
local n = (#ARGV - first + 1) / 2
local depth = redis.call('LLEN', queue)
if queue_max > 0 and depth + n > queue_max then
  return {'full', tostring(depth)}
end
local ids, records, size = {}, {}, 0
for i = 1, n do
  local id, record = ARGV[first + 2 * i - 2], ARGV[first + 2 * i - 1]
  ids[i] = id
  records[2 * i - 1] = task_prefix .. id
  records[2 * i] = record
  size = size + #record
end
if size > room() then
  return {'full_memory', tostring(depth)}
end
push(ids, records, size)
if idempotency ~= '' then
  redis.call('SET', idempotency, body_hash .. ':' .. table.concat(ids, ','), 'EX', idempotency_ttl)
end
return {'ok', tostring(depth)}
"""
    )

    async def __call__(
        self,
        records: Sequence[tuple[str, bytes]],
        limits: IntakeLimits,
        *,
        count_request: bool,
        idempotency_key: str | None,
        body_hash: str,
        idempotency_ttl: int,
    ) -> int | Refused | Replay:
        """The queue's depth before the push, the refusal, or the first use of `idempotency_key`
        (which stores the ids with `body_hash` for `idempotency_ttl` seconds)."""
        stored = keys.idempotency(idempotency_key) if idempotency_key else ""
        args = _intake_args(limits, count_request, (body_hash, idempotency_ttl), records)
        outcome, value = await self._run(
            keys=[keys.QUEUE, keys.STATS, keys.RECENT, keys.MEMORY_ROOM, stored], args=args
        )
        if outcome == "ok":
            return int(value)
        if outcome == "duplicate":
            seen_hash, _, seen_ids = str(value).partition(":")
            return Replay(seen_hash, seen_ids.split(","))
        return Refused(int(value), memory=outcome == "full_memory")


class EnqueueEach(_Script):
    """Accept independent submissions (concurrent requests, coalesced) in one atomic step: each is
    queued or refused on its own, in order, by the rules EnqueueMany applies to a batch of one."""

    source = (
        _INTAKE_RULES
        + """
local first = 6  -- the first id; its record follows it
local n = (#ARGV - first + 1) / 2
if requests_field ~= '' then redis.call('HINCRBY', stats, requests_field, n) end
local depth = redis.call('LLEN', queue)
local free = room()
local out, ids, records, size = {}, {}, {}, 0
for i = 1, n do
  local record = ARGV[first + 2 * i - 1]
  if queue_max > 0 and depth >= queue_max then
    out[i] = -depth
  elseif size + #record > free then
    out[i] = 'm' .. depth
  else
    local id = ARGV[first + 2 * i - 2]
    depth = depth + 1  -- its position once push() has run
    size = size + #record
    out[i] = depth
    ids[#ids + 1] = id
    records[#records + 1] = task_prefix .. id
    records[#records + 1] = record
  end
end
if #ids > 0 then push(ids, records, size) end
return out
"""
    )

    async def __call__(
        self, records: Sequence[tuple[str, bytes]], limits: IntakeLimits, *, count_requests: bool
    ) -> list[int | Refused]:
        """Per record, its queue position or its refusal."""
        args = _intake_args(limits, count_requests, (), records)
        # Per task: its position, -depth when the queue was full, 'm<depth>' when the byte budget was.
        raw = await self._run(keys=[keys.QUEUE, keys.STATS, keys.RECENT, keys.MEMORY_ROOM], args=args)
        return [
            Refused(int(r[1:]), memory=True) if isinstance(r, str | bytes) else r if r > 0 else Refused(-r) for r in raw
        ]


# -- claims ------------------------------------------------------------------------------------


class ClaimMany(_Script):
    """Claim up to `count` ids at once, each moved queue -> processing list as BLMOVE would, its
    attempt counted, with its record ('' when purged): one round trip instead of 3 per task, and
    atomic, so a crash leaves every claimed id in the processing list for the reaper, its attempt
    already counted."""

    source = """#!lua flags=allow-oom
local queue, processing, attempts = KEYS[1], KEYS[2], KEYS[3]
local count, task_prefix = tonumber(ARGV[1]), ARGV[2]
local out = {}
for i = 1, count do
  local id = redis.call('LMOVE', queue, processing, 'RIGHT', 'LEFT')
  if not id then break end
  out[#out + 1] = id
  out[#out + 1] = redis.call('GET', task_prefix .. id) or ''
  out[#out + 1] = redis.call('HINCRBY', attempts, id, 1)
end
return out
"""

    async def __call__(self, *, worker_id: str, count: int) -> list[tuple[str, str, int]]:
        """(id, record JSON or '', attempt) per claimed task, oldest first."""
        flat = await self._run(keys=[keys.QUEUE, keys.processing(worker_id), keys.ATTEMPTS], args=[count, _TASK_PREFIX])
        return [(str(i), raw, int(n)) for i, raw, n in zip(flat[::3], flat[1::3], flat[2::3], strict=True)]


class Claimed(_Script):
    """ClaimMany's reads for an id a blocking claim (BLMOVE) took."""

    source = """#!lua flags=allow-oom
local task, attempts = KEYS[1], KEYS[2]
local id = ARGV[1]
return {redis.call('GET', task) or '', redis.call('HINCRBY', attempts, id, 1)}
"""

    async def __call__(self, *, task_id: str) -> tuple[str, int]:
        """(record JSON or '', attempt) of `task_id`, its attempt counted."""
        raw, attempt = await self._run(keys=[keys.task(task_id), keys.ATTEMPTS], args=[task_id])
        return raw, int(attempt)


class WriteBatch(_Script):
    """The record writes of many tasks in one atomic step (the worker batches them): non-final
    states stored as they are, final ones kept for the result TTL and counted, once per batch.
    A failed task enters the dead-letter list, which keeps its newest `dead_kept` ids; older
    ones live on as failed rows in Postgres."""

    source = f"""#!lua flags=allow-oom
local stats, dead, durations = KEYS[1], KEYS[2], KEYS[3]
local result_ttl, durations_kept, task_prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local saves, dead_kept = tonumber(ARGV[4]), tonumber(ARGV[5])
local i = 6  -- (id, record) per save, then (id, record, status, durations entry) per final
for _ = 1, saves do
  redis.call('SET', task_prefix .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
local completed, failed, entries = 0, 0, {{}}
while i <= #ARGV do
  local id, record, status, entry = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  redis.call('SET', task_prefix .. id, record, 'EX', result_ttl)
  if status == '{TaskStatus.FAILED.value}' then
    failed = failed + 1
    redis.call('LREM', dead, 0, id)
    redis.call('LPUSH', dead, id)
  else
    completed = completed + 1
  end
  entries[#entries + 1] = entry
  i = i + 4
end
if completed > 0 then redis.call('HINCRBY', stats, '{keys.STAT_COMPLETED}', completed) end
if failed > 0 then
  redis.call('HINCRBY', stats, '{keys.STAT_FAILED}', failed)
  redis.call('LTRIM', dead, 0, dead_kept - 1)
end
if #entries > 0 then
  redis.call('LPUSH', durations, unpack(entries))
  redis.call('LTRIM', durations, 0, durations_kept - 1)
end
return saves + #entries
"""

    async def __call__(
        self, *, saves: Sequence[TaskRecord], finals: Sequence[FinalRecord], result_ttl: int, dead_kept: int
    ) -> None:
        args: list[Any] = [result_ttl, keys.DURATIONS_KEPT, _TASK_PREFIX, len(saves), dead_kept]
        for task in saves:
            args += (task.id, task.model_dump_json())
        for final in finals:
            status = final.status.value
            # keys.DURATIONS' entry: "<completed epoch ms>:<processing seconds>:<status>"
            args += (final.id, final.raw, status, f"{final.finished_ms}:{final.processing_time:.6f}:{status}")
        await self._run(keys=[keys.STATS, keys.DEAD, keys.DURATIONS], args=args)


class AckMany(_Script):
    """Acknowledge many claims in one command; their attempt counts go with them. Claims enter the
    processing list at the head, so the oldest sit at the tail: LREM with a negative count searches
    from there and finds an acked id after a few steps, not the whole list."""

    source = """#!lua flags=allow-oom
local processing, attempts = KEYS[1], KEYS[2]
local removed = 0
for _, id in ipairs(ARGV) do
  removed = removed + redis.call('LREM', processing, -1, id)
end
redis.call('HDEL', attempts, unpack(ARGV))
return removed
"""

    async def __call__(self, *, worker_id: str, task_ids: Sequence[str]) -> int:
        """How many of `task_ids` were in the worker's processing list (ARGV is the ids alone)."""
        return int(await self._run(keys=[keys.processing(worker_id), keys.ATTEMPTS], args=list(task_ids)))


class PromoteDue(_Script):
    """Move retries whose backoff is over to the head of the queue, the oldest due first."""

    source = """#!lua flags=allow-oom
local delayed, queue = KEYS[1], KEYS[2]
local now_ms, limit = ARGV[1], ARGV[2]
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now_ms, 'LIMIT', 0, limit)
for _, id in ipairs(due) do
  redis.call('ZREM', delayed, id)
  redis.call('RPUSH', queue, id)
end
return #due
"""

    async def __call__(self, *, now_ms: int, limit: int) -> int:
        """How many retries were due at `now_ms` (at most `limit` move)."""
        return int(await self._run(keys=[keys.DELAYED, keys.QUEUE], args=[now_ms, limit]))
