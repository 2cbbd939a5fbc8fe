"""The queue's Lua scripts, each behind a typed wrapper that builds its KEYS and ARGV.

A script is one atomic step on Redis in one round trip. Each wrapper takes named parameters and
is the only place that knows its script's argument layout; the Lua names each KEYS and ARGV
entry once at its top. Keys come from core.keys: every key of a call is one shard's (a
keys.QueueKeys), so on a Redis Cluster each call touches one hash slot.

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
from core.keys import QueueKeys
from core.models import TaskRecord, TaskStatus
from core.records import FinalRecord, NewTask, hot_record

#: Redis memory that new tasks may fill, as a share of Redis's `maxmemory`, when QUEUE_MAX_BYTES is 0.
#: The rest is headroom for what accepted tasks still write: a final record holds the data and
#: the result (echo's result repeats the data) and every field, where a queued one leaves out its
#: id and defaults (core.records), and the allocator rounds each up to its size class, so a task
#: grows to about 2.5 times its queued size (a small echo and a 64 KiB one alike); the last
#: quarter covers buffers (AOF, clients) and bookkeeping.
MEMORY_SHARE_FOR_INTAKE = 0.3

#: How long the enqueue scripts reuse one reading of Redis's memory (QueueKeys.memory_room), less
#: what they accepted since: INFO costs more than the rest of a one-task enqueue. What workers
#: write meanwhile is not seen for that long; the headroom covers it.
MEMORY_READING_MS = 100


def intake_budget(queue_max_bytes: int, maxmemory: int) -> int:
    """The used_memory past which the enqueue scripts refuse new tasks, as room() below works it
    out in Lua (kept beside it: change both together); 0 = no byte bound."""
    if queue_max_bytes > 0:
        return queue_max_bytes
    return int(maxmemory * MEMORY_SHARE_FOR_INTAKE) if queue_max_bytes == 0 else 0


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


# A high or low task went in: wake a worker blocked on the normal list (keys.WAKE), if one may
# be, and the list is empty (else the blocked worker takes that and claims again at once).
_WAKE_RULE = f"""
local function wake_blocked(normal, blocked, now_ms)
  if redis.call('LLEN', normal) == 0
    and redis.call('ZCOUNT', blocked, tonumber(now_ms) - {keys.BLOCKED_FRESH_MS}, '+inf') > 0 then
    redis.call('LPUSH', normal, '{keys.WAKE}')
  end
end
"""

# What both enqueue scripts share: their first KEYS and ARGV, the byte budget and the rule for
# accepted tasks. room() is the bytes Redis may still take for new tasks (a huge number when there
# is no byte bound). byte_budget: > 0 bytes of used_memory; 0 MEMORY_SHARE_FOR_INTAKE of maxmemory
# (no bound without one); < 0 no bound (intake_budget above, in Python). waiting() is what the
# queue bound counts: every task waiting in a priority's list or for its scheduled time. push()
# stores accepted tasks, puts each where its route says (records.NewTask), counts them, keeps the
# newest `recent_kept` ids in the recent list and charges their bytes to the room.
_INTAKE_RULES = f"""{_WAKE_RULE}
local queue, stats, recent, room_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local high, low, low_since, scheduled, blocked = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local queue_max, recent_kept, task_prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local requests_field, byte_budget, now_ms = ARGV[4], tonumber(ARGV[5]), ARGV[6]

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

local function waiting()
  return redis.call('LLEN', queue) + redis.call('LLEN', high) + redis.call('LLEN', low)
    + redis.call('ZCARD', scheduled)
end

-- ids and routes: parallel lists; records: key, record pairs for MSET
local function push(ids, routes, records, size)
  -- room() left the key in place: time stands still in a script, so it has not expired since.
  if byte_budget >= 0 then redis.call('DECRBY', room_key, size) end
  redis.call('MSET', unpack(records))
  local now_ids, high_ids, low_ids, later = {{}}, {{}}, {{}}, {{}}
  for i, route in ipairs(routes) do
    if route == '' then now_ids[#now_ids + 1] = ids[i]
    elseif route == 'h' then high_ids[#high_ids + 1] = ids[i]
    elseif route == 'l' then low_ids[#low_ids + 1] = ids[i]
    else later[#later + 1] = route; later[#later + 1] = ids[i] end
  end
  if #now_ids > 0 then redis.call('LPUSH', queue, unpack(now_ids)) end
  if #high_ids > 0 then redis.call('LPUSH', high, unpack(high_ids)) end
  if #low_ids > 0 then
    redis.call('LPUSH', low, unpack(low_ids))
    for _, id in ipairs(low_ids) do redis.call('ZADD', low_since, now_ms, id) end
  end
  if #later > 0 then redis.call('ZADD', scheduled, unpack(later)) end
  if (#high_ids > 0 or #low_ids > 0) then wake_blocked(queue, blocked, now_ms) end
  redis.call('HINCRBY', stats, '{keys.STAT_ACCEPTED}', #ids)
  if recent_kept > 0 then
    redis.call('LPUSH', recent, unpack(ids, math.max(1, #ids - recent_kept + 1)))
    redis.call('LTRIM', recent, 0, recent_kept - 1)
  end
end
"""


def _intake_keys(shard: QueueKeys) -> list[str]:
    """KEYS[1..9] of both enqueue scripts, in _INTAKE_RULES' order."""
    return [
        shard.queue,
        shard.stats,
        shard.recent,
        shard.memory_room,
        shard.queue_high,
        shard.queue_low,
        shard.low_since,
        shard.scheduled,
        shard.workers_blocked,
    ]


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
    shard: QueueKeys,
    limits: IntakeLimits,
    count_requests: bool,
    own: Sequence[Any],
    tasks: Sequence[NewTask],
    now_ms: int,
) -> list[Any]:
    """ARGV of an enqueue script: _INTAKE_RULES' places, the script's `own`, then id, record,
    route per task."""
    requests_field = keys.STAT_REQUESTS if count_requests else ""
    args: list[Any] = [
        limits.queue_max,
        limits.recent_kept,
        shard.task_prefix,
        requests_field,
        limits.byte_budget,
        now_ms,
        *own,
    ]
    for task in tasks:
        args += task
    return args


class EnqueueMany(_Script):
    """Accept many tasks in one atomic step: all or none.

    The queue bound refuses a batch that would take the waiting tasks past it, the byte budget one
    whose records would take Redis's memory past it. The records go in one MSET, and only the
    newest ids into the recent list: per task, one command less to run and to append to the AOF (a
    batch is at most 1,000 tasks, 3,000 values: within what Lua can unpack, about 8,000)."""

    source = (
        _INTAKE_RULES
        + """
-- without a key, body_hash is '' and KEYS[10] only names the shard's slot
local body_hash, idempotency_ttl = ARGV[7], ARGV[8]
local idempotency = body_hash ~= '' and KEYS[10] or ''
local first = 9  -- the first id; its record and route follow it
if requests_field ~= '' then redis.call('HINCRBY', stats, requests_field, 1) end
if idempotency ~= '' then
  local seen = redis.call('GET', idempotency)
  if seen then return {'duplicate', seen} end
end
local n = (#ARGV - first + 1) / 3
local depth = redis.call('LLEN', queue) + redis.call('LLEN', high) + redis.call('LLEN', low)
if queue_max > 0 and waiting() + n > queue_max then
  return {'full', tostring(depth)}
end
local ids, routes, records, size = {}, {}, {}, 0
for i = 1, n do
  local at = first + 3 * i - 3
  local id, record = ARGV[at], ARGV[at + 1]
  ids[i] = id
  routes[i] = ARGV[at + 2]
  records[2 * i - 1] = task_prefix .. id
  records[2 * i] = record
  size = size + #record
end
if size > room() then
  return {'full_memory', tostring(depth)}
end
push(ids, routes, records, size)
if idempotency ~= '' then
  redis.call('SET', idempotency, body_hash .. ':' .. table.concat(ids, ','), 'EX', idempotency_ttl)
end
return {'ok', tostring(depth)}
"""
    )

    async def __call__(
        self,
        tasks: Sequence[NewTask],
        limits: IntakeLimits,
        *,
        shard: QueueKeys,
        now_ms: int,
        count_request: bool,
        idempotency_key: str | None,
        body_hash: str,
        idempotency_ttl: int,
    ) -> int | Refused | Replay:
        """The number of tasks waiting in the priority lists before the push, the refusal, or the
        first use of `idempotency_key` (which stores the ids with `body_hash` for
        `idempotency_ttl` seconds)."""
        stored = shard.idempotency(idempotency_key) if idempotency_key else ""
        own = (body_hash if idempotency_key else "", idempotency_ttl)
        args = _intake_args(shard, limits, count_request, own, tasks, now_ms)
        # Without a key, one of the shard's stands in: '' would name another hash slot.
        outcome, value = await self._run(keys=[*_intake_keys(shard), stored or shard.queue], args=args)
        if outcome == "ok":
            return int(value)
        if outcome == "duplicate":
            seen_hash, _, seen_ids = str(value).partition(":")
            return Replay(seen_hash, seen_ids.split(","))
        return Refused(int(value), memory=outcome == "full_memory")


class EnqueueEach(_Script):
    """Accept independent submissions (concurrent requests, coalesced) in one atomic step: each is
    queued or refused on its own, in order, by the rules EnqueueMany applies to a batch of one.

    A task's position counts the tasks a worker takes before it: the high list for a high task,
    high and normal for a normal one, all three for a low one; 0 for a scheduled task."""

    source = (
        _INTAKE_RULES
        + """
local first = 7  -- the first id; its record and route follow it
local n = (#ARGV - first + 1) / 3
if requests_field ~= '' then redis.call('HINCRBY', stats, requests_field, n) end
local count = waiting()
local in_high, in_normal = redis.call('LLEN', high), redis.call('LLEN', queue)
local in_low = redis.call('LLEN', low)
local free = room()
local out, ids, routes, records, size = {}, {}, {}, {}, 0
for i = 1, n do
  local at = first + 3 * i - 3
  local record, route = ARGV[at + 1], ARGV[at + 2]
  local depth = in_high + in_normal + in_low
  if queue_max > 0 and count >= queue_max then
    out[i] = 'f' .. depth
  elseif size + #record > free then
    out[i] = 'm' .. depth
  else
    count = count + 1
    size = size + #record
    if route == '' then
      in_normal = in_normal + 1
      out[i] = in_high + in_normal
    elseif route == 'h' then
      in_high = in_high + 1
      out[i] = in_high
    elseif route == 'l' then
      in_low = in_low + 1
      out[i] = in_high + in_normal + in_low
    else
      out[i] = 0
    end
    ids[#ids + 1] = ARGV[at]
    routes[#routes + 1] = route
    records[#records + 1] = task_prefix .. ARGV[at]
    records[#records + 1] = record
  end
end
if #ids > 0 then push(ids, routes, records, size) end
return out
"""
    )

    async def __call__(
        self, tasks: Sequence[NewTask], limits: IntakeLimits, *, shard: QueueKeys, now_ms: int, count_requests: bool
    ) -> list[int | Refused]:
        """Per task, its queue position (0 when scheduled) or its refusal."""
        args = _intake_args(shard, limits, count_requests, (), tasks, now_ms)
        # Per task: its position, 'f<depth>' when the queue was full, 'm<depth>' when the byte budget was.
        raw = await self._run(keys=_intake_keys(shard), args=args)
        return [Refused(int(r[1:]), memory=r[0] == "m") if isinstance(r, str) else int(r) for r in raw]


# -- claims ------------------------------------------------------------------------------------


class ClaimMany(_Script):
    """Claim up to `count` ids at once: cancelled tasks to commit first (QueueKeys.cancelled), then high
    priority, normal, low, each moved from its list to the processing list as BLMOVE would, its
    attempt counted, with its record ('' when purged) and whether a client asked to cancel it:
    one round trip instead of 3 per task, and atomic, so a crash leaves every claimed id in the
    processing list for the reaper, its attempt already counted. A wake-up entry (keys.WAKE) it
    meets is dropped."""

    source = f"""#!lua flags=allow-oom
local processing, attempts, low_since, requests = KEYS[1], KEYS[2], KEYS[3], KEYS[8]
local sources = {{KEYS[4], KEYS[5], KEYS[6], KEYS[7]}}  -- cancelled, high, normal, low
local count, task_prefix = tonumber(ARGV[1]), ARGV[2]
local cancelling = redis.call('EXISTS', requests) == 1
local out = {{}}
local s = 1
for i = 1, count do
  local id = nil
  while s <= 4 do
    id = redis.call('LMOVE', sources[s], processing, 'RIGHT', 'LEFT')
    if not id then
      s = s + 1
    elseif id == '{keys.WAKE}' then
      redis.call('LPOP', processing)
      id = nil
    else
      break
    end
  end
  if not id then break end
  if s == 4 then redis.call('ZREM', low_since, id) end
  out[#out + 1] = id
  out[#out + 1] = redis.call('GET', task_prefix .. id) or ''
  out[#out + 1] = redis.call('HINCRBY', attempts, id, 1)
  out[#out + 1] = cancelling and redis.call('HEXISTS', requests, id) or 0
end
return out
"""

    async def __call__(self, *, shard: QueueKeys, worker_id: str, count: int) -> list[tuple[str, str, int, bool]]:
        """(id, record JSON or '', attempt, cancel requested) per claimed task, in claim order."""
        flat = await self._run(
            keys=[
                shard.processing(worker_id),
                shard.attempts,
                shard.low_since,
                shard.cancelled,
                *shard.queues,
                shard.cancel_requests,
            ],
            args=[count, shard.task_prefix],
        )
        return [
            (str(i), raw, int(n), bool(c))
            for i, raw, n, c in zip(flat[::4], flat[1::4], flat[2::4], flat[3::4], strict=True)
        ]


class Claimed(_Script):
    """ClaimMany's reads for an id a blocking claim (BLMOVE) took."""

    source = """#!lua flags=allow-oom
local task, attempts, requests = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[1]
return {redis.call('GET', task) or '', redis.call('HINCRBY', attempts, id, 1), redis.call('HEXISTS', requests, id)}
"""

    async def __call__(self, *, shard: QueueKeys, task_id: str) -> tuple[str, int, bool]:
        """(record JSON or '', attempt, cancel requested) of `task_id`, its attempt counted."""
        raw, attempt, cancel = await self._run(
            keys=[shard.task(task_id), shard.attempts, shard.cancel_requests], args=[task_id]
        )
        return raw, int(attempt), bool(cancel)


class WriteBatch(_Script):
    """The record writes of many tasks in one atomic step (the worker batches them): non-final
    states stored as they are, final ones kept for the result TTL, counted once per batch, and
    announced in one message on keys.DONE_CHANNEL (waiting `GET ?wait=` requests answer); a
    standing cancel request of a task now final goes. A failed task enters the
    dead-letter list, which keeps its newest `dead_kept` ids; older ones live on as failed rows in
    Postgres. A cancelled one is counted here only when it stopped while running (a cancel of a
    waiting task counts itself)."""

    source = f"""#!lua flags=allow-oom
local stats, dead, durations, requests = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local result_ttl, durations_kept, task_prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local saves, dead_kept, done = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local i = 7  -- (id, record) per save, then (id, record, status, durations entry) per final
for _ = 1, saves do
  redis.call('SET', task_prefix .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
local completed, failed, cancelled, entries, ids = 0, 0, 0, {{}}, {{}}
while i <= #ARGV do
  local id, record, status, entry = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  redis.call('SET', task_prefix .. id, record, 'EX', result_ttl)
  if status == '{TaskStatus.FAILED.value}' then
    failed = failed + 1
    redis.call('LREM', dead, 0, id)
    redis.call('LPUSH', dead, id)
  elseif status == '{TaskStatus.CANCELLED.value}' then
    cancelled = cancelled + 1
  else
    completed = completed + 1
  end
  entries[#entries + 1] = entry
  ids[#ids + 1] = id
  i = i + 4
end
if completed > 0 then redis.call('HINCRBY', stats, '{keys.STAT_COMPLETED}', completed) end
if failed > 0 then
  redis.call('HINCRBY', stats, '{keys.STAT_FAILED}', failed)
  redis.call('LTRIM', dead, 0, dead_kept - 1)
end
if cancelled > 0 then redis.call('HINCRBY', stats, '{keys.STAT_CANCELLED}', cancelled) end
if #entries > 0 then
  redis.call('LPUSH', durations, unpack(entries))
  redis.call('LTRIM', durations, 0, durations_kept - 1)
  redis.call('PUBLISH', done, table.concat(ids, ','))
  if redis.call('EXISTS', requests) == 1 then redis.call('HDEL', requests, unpack(ids)) end
end
return saves + #entries
"""

    async def __call__(
        self,
        *,
        shard: QueueKeys,
        saves: Sequence[TaskRecord],
        finals: Sequence[FinalRecord],
        result_ttl: int,
        dead_kept: int,
    ) -> None:
        # The channel goes in ARGV: a channel is no key, and as one it would name another slot.
        args: list[Any] = [result_ttl, keys.DURATIONS_KEPT, shard.task_prefix, len(saves), dead_kept, keys.DONE_CHANNEL]
        for task in saves:
            args += (task.id, hot_record(task))
        for final in finals:
            status = final.status.value
            # QueueKeys.durations' entry: "<completed epoch ms>:<processing seconds>:<status>"
            args += (final.id, final.raw, status, f"{final.finished_ms}:{final.processing_time:.6f}:{status}")
        await self._run(keys=[shard.stats, shard.dead, shard.durations, shard.cancel_requests], args=args)


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

    async def __call__(self, *, shard: QueueKeys, worker_id: str, task_ids: Sequence[str]) -> int:
        """How many of `task_ids` were in the worker's processing list (ARGV is the ids alone)."""
        return int(await self._run(keys=[shard.processing(worker_id), shard.attempts], args=list(task_ids)))


@dataclass(frozen=True, slots=True)
class Due:
    """A scheduled task or a retry whose time has come, as the promoter hands it to Promote."""

    id: str
    #: from the scheduled set (True) or the delayed one (a retry)
    scheduled: bool
    #: its record now queued ('' to keep the stored one: a retry stays `retrying` until claimed)
    record: str
    #: the list it joins (records.ROUTE_NOW's code)
    route: str


class Promote(_Script):
    """Queue scheduled tasks and retries whose time has come at the head of their priority's
    list, in the order given. One leaves its sorted set only once: a cancel that took it first
    wins. A record given replaces the stored one (a scheduled task becomes queued)."""

    source = f"""#!lua flags=allow-oom
{_WAKE_RULE}
local scheduled, delayed, low_since, blocked = KEYS[1], KEYS[2], KEYS[3], KEYS[7]
local lists = {{h = KEYS[4], n = KEYS[5], l = KEYS[6]}}
local task_prefix, now_ms = ARGV[1], ARGV[2]
local moved, wake = 0, false
for i = 3, #ARGV, 4 do
  local id, from_schedule, record, route = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local zset = delayed
  if from_schedule == '1' then zset = scheduled end
  if redis.call('ZREM', zset, id) == 1 then
    if record ~= '' then redis.call('SET', task_prefix .. id, record) end
    if route == '' then route = 'n' end
    redis.call('RPUSH', lists[route], id)
    if route == 'l' then redis.call('ZADD', low_since, now_ms, id) end
    if route ~= 'n' then wake = true end
    moved = moved + 1
  end
end
if wake then wake_blocked(lists.n, blocked, now_ms) end
return moved
"""

    async def __call__(self, due: Sequence[Due], *, shard: QueueKeys, now_ms: int) -> int:
        """How many of `due` moved (the others were cancelled meanwhile)."""
        args: list[Any] = [shard.task_prefix, now_ms]
        for entry in due:
            args += (entry.id, "1" if entry.scheduled else "0", entry.record, entry.route)
        return int(
            await self._run(
                keys=[
                    shard.scheduled,
                    shard.delayed,
                    shard.low_since,
                    shard.queue_high,
                    shard.queue,
                    shard.queue_low,
                    shard.workers_blocked,
                ],
                args=args,
            )
        )


class AgeLow(_Script):
    """Move low-priority tasks that waited since `cutoff_ms` or longer to the head of the normal
    list, the oldest claimed first: low priority yields to the rest, but never for ever."""

    source = """#!lua flags=allow-oom
local low, normal, low_since = KEYS[1], KEYS[2], KEYS[3]
local cutoff, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local aged = {}
while #aged < limit do
  local id = redis.call('LINDEX', low, -1)
  if not id then break end
  local since = redis.call('ZSCORE', low_since, id)
  if since and tonumber(since) > cutoff then break end
  redis.call('RPOP', low)
  redis.call('ZREM', low_since, id)
  table.insert(aged, 1, id)  -- the oldest pushed last, so it sits at the head
end
if #aged > 0 then redis.call('RPUSH', normal, unpack(aged)) end
return #aged
"""

    async def __call__(self, *, shard: QueueKeys, cutoff_ms: int, limit: int) -> int:
        """How many low-priority tasks moved."""
        return int(await self._run(keys=[shard.queue_low, shard.queue, shard.low_since], args=[cutoff_ms, limit]))


class CancelWaiting(_Script):
    """Cancel a task that waits (in a list or a sorted set) and was not claimed: its record, read
    by the caller as `expected`, becomes `cancelled` (final) and is counted, announced on its
    done channel, and its id joins its shard's cancelled list, where the next claim commits it to Postgres (a
    worker's persister, whose retries outlast an outage) and gives it the result TTL.
    Returns 'ok', 'changed' (the record moved on since it was read: read it again) or 'absent'
    (not in `source`: claimed, or waiting elsewhere)."""

    source = f"""#!lua flags=allow-oom
local task, source, stats, attempts = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local handoff, low_since = KEYS[5], KEYS[6]
local id, expected, cancelled, sorted, done = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('GET', task) ~= expected then return 'changed' end
local removed
if sorted == '1' then
  removed = redis.call('ZREM', source, id)
else
  removed = redis.call('LREM', source, 1, id)
end
if removed == 0 then return 'absent' end
redis.call('ZREM', low_since, id)
redis.call('SET', task, cancelled)
redis.call('HINCRBY', stats, '{keys.STAT_CANCELLED}', 1)
redis.call('HDEL', attempts, id)
redis.call('RPUSH', handoff, id)
redis.call('PUBLISH', done, id)
return 'ok'
"""

    async def __call__(self, *, shard: QueueKeys, task_id: str, source: str, expected: str, cancelled: str) -> str:
        """Cancel `task_id` if it still waits in `source` (a list of `shard`, or its scheduled or
        delayed set)."""
        sorted_set = source in (shard.scheduled, shard.delayed)
        return str(
            await self._run(
                keys=[
                    shard.task(task_id),
                    source,
                    shard.stats,
                    shard.attempts,
                    shard.cancelled,
                    shard.low_since,
                ],
                args=[task_id, expected, cancelled, "1" if sorted_set else "0", keys.DONE_CHANNEL],
            )
        )
