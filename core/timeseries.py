"""The 1 s samples every rate, percentile, chart and scaling decision is read from.

One sampler (the dashboard process that holds the SAMPLER_LEADER lease) measures once a second:
the counters, queue length, in flight, live workers and the recent processing times, derives
per-second rates and percentiles, runs the scaling policy and appends the sample
(`core.samples.Sample`, compact JSON) to a capped Redis list. Everyone else reads that list, so
every reader agrees on the rates and the advice. Reads and writes touch a fixed set of keys and
capped lists only: the cost does not grow with the history.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import orjson
from redis.asyncio import Redis

from core import keys
from core.backlog import Backlog
from core.models import TaskStatus
from core.policy import Inputs, PolicyState, Recommendation, recommend
from core.queue import TaskQueue
from core.samples import SAMPLES, Sample
from core.scripts import Lease
from core.settings import Settings

#: The window of the percentiles, error rate and tasks per minute.
WINDOW_SECONDS = 60.0
#: The window of the smoothed rates the policy uses.
RATE_WINDOW_SECONDS = 10.0
#: A head sample older than this means no sampler runs: readers measure for themselves.
STALE_SECONDS = 3.0


@dataclass
class Raw:
    """What one measurement read from Redis, before any arithmetic."""

    t: float
    stats: dict[str, int]
    in_flight: int
    workers: list[dict[str, Any]]
    backlog: Backlog = field(default_factory=Backlog)
    #: (completed epoch s, processing s, status), newest first
    durations: list[tuple[float, float, str]] = field(default_factory=list)

    def counter(self, stat: str) -> int:
        return int(self.stats.get(stat, 0))


#: The final statuses the rates, percentiles and error rate count: a cancelled task (the durations
#: list holds those stopped while running) is no throughput, and its time was cut short.
_FINISHED = frozenset({TaskStatus.COMPLETED.value, TaskStatus.FAILED.value})


# -- pure arithmetic --------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of an ascending sequence; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _per_second(now: int, then: int, elapsed: float) -> float:
    if elapsed <= 0:
        return 0.0
    # A counter that went down was reset (Redis flushed): no negative rates.
    return max(0, now - then) / elapsed


def _oldest_within(history: Sequence[Sample], t: float, seconds: float) -> Sample | None:
    """The oldest sample of `history` (newest first) no older than `seconds` before `t`."""
    found = None
    for sample in history:
        if t - sample.t > seconds + 0.5:
            break
        found = sample
    return found


def derive(raw: Raw, history: Sequence[Sample]) -> Sample:
    """A sample from a measurement and the samples before it (newest first)."""
    accepted = raw.counter(keys.STAT_ACCEPTED)
    completed = raw.counter(keys.STAT_COMPLETED)
    failed = raw.counter(keys.STAT_FAILED)
    finished = completed + failed

    def rates(older: Sample | None) -> tuple[float, float]:
        """Accepted and finished per second since `older` (0 with nothing to compare with)."""
        if older is None:
            return 0.0, 0.0
        elapsed = raw.t - older.t
        arrivals = _per_second(accepted, older.accepted, elapsed)
        finishes = _per_second(finished, older.finished, elapsed)
        return round(arrivals, 3), round(finishes, 3)

    previous = history[0] if history else None
    window_start = raw.t - WINDOW_SECONDS
    in_window = [(seconds, status) for done_at, seconds, status in raw.durations if done_at >= window_start]
    recent = [(seconds, status) for seconds, status in in_window if status in _FINISHED]
    times = sorted(seconds for seconds, _ in recent)
    errors = sum(1 for _, status in recent if status == TaskStatus.FAILED.value)
    tpm = len(recent)
    if raw.durations and len(in_window) == len(raw.durations) >= keys.DURATIONS_KEPT:
        # The capped list holds less than a minute: count from the counters instead.
        minute = _oldest_within(history, raw.t, WINDOW_SECONDS)
        if minute is not None:
            tpm = round(_per_second(finished, minute.finished, raw.t - minute.t) * WINDOW_SECONDS)
    arrival_rate, completion_rate = rates(previous)
    arrival_rate_10s, completion_rate_10s = rates(_oldest_within(history, raw.t, RATE_WINDOW_SECONDS) or previous)
    p50, p95 = percentile(times, 50), percentile(times, 95)
    return Sample(
        t=round(raw.t, 3),
        requests=raw.counter(keys.STAT_REQUESTS),
        accepted=accepted,
        completed=completed,
        failed=failed,
        cancelled=raw.counter(keys.STAT_CANCELLED),
        queue_length=raw.backlog.queued,
        queue_high=raw.backlog.high,
        queue_normal=raw.backlog.normal,
        queue_low=raw.backlog.low,
        scheduled=raw.backlog.scheduled,
        in_flight=raw.in_flight,
        workers=len(raw.workers),
        slots=sum(int(w.get("concurrency", 0) or 0) for w in raw.workers),
        arrival_rate=arrival_rate,
        completion_rate=completion_rate,
        arrival_rate_10s=arrival_rate_10s,
        completion_rate_10s=completion_rate_10s,
        tasks_per_minute=tpm,
        p50=None if p50 is None else round(p50, 4),
        p95=None if p95 is None else round(p95, 4),
        mean_processing_time=round(sum(times) / len(times), 4) if times else None,
        error_rate=round(errors / len(recent), 4) if recent else 0.0,
    )


def inputs_from(sample: Sample, settings: Settings) -> Inputs:
    """The policy's inputs, from one sample: the one translation every caller shares."""
    workers, slots = sample.workers, sample.slots
    return Inputs(
        queue_length=sample.queue_length,
        active_workers=workers,
        in_flight=sample.in_flight,
        arrival_rate=sample.arrival_rate_10s,
        completion_rate=sample.completion_rate_10s,
        mean_processing_time=sample.mean_processing_time,
        error_rate=sample.error_rate,
        concurrency_per_worker=slots // workers if workers and slots else settings.worker_concurrency,
        min_workers=settings.min_workers,
        max_workers=settings.max_workers,
    )


def advise(sample: Sample, state: PolicyState, settings: Settings) -> Recommendation:
    # The sample's own time is the policy's clock: the same sample and state give the same advice
    # in every process, whenever it is asked.
    return recommend(inputs_from(sample, settings), state, now=sample.t, config=settings.policy_config())


def epoch(value: str | None) -> float | None:
    """An ISO timestamp (as the workers write it) as epoch seconds."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


# -- Redis ------------------------------------------------------------------------------------


async def measure(queue: TaskQueue, t: float) -> Raw:
    stats = await queue.stats()
    return Raw(
        t=t,
        stats=stats,
        backlog=await queue.backlog(),
        in_flight=await queue.in_flight(),
        workers=await queue.live_workers(),
        durations=await queue.recent_durations(),
    )


async def read_series(redis: Redis, count: int = keys.SERIES_KEPT) -> list[Sample]:
    """The newest `count` samples, oldest first (the order charts draw them in)."""
    # The client decodes replies (decode_responses=True); redis-py's types can't know that.
    raws = cast("list[str]", await redis.lrange(keys.SERIES, 0, count - 1))
    # One JSON array, parsed in one call: a chart request reads up to 900 samples.
    return SAMPLES.validate_json(f"[{','.join(reversed(raws))}]")


async def read_state(redis: Redis) -> PolicyState:
    raw = await redis.get(keys.SCALING_STATE)
    return PolicyState.from_dict(orjson.loads(raw) if raw else None)


async def current(queue: TaskQueue, redis: Redis, settings: Settings, t: float) -> tuple[Sample, Recommendation]:
    """The newest sample and the advice for it: what /api/metrics, /worker/scale and the page show.

    Read-only. With no sampler running (no fresh sample), measure now against the last sample.
    """
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lindex(keys.SERIES, 0)
        pipe.get(keys.SCALING_STATE)
        head_raw, state_raw = await pipe.execute()
    head = Sample.model_validate_json(head_raw) if head_raw else None
    state = PolicyState.from_dict(orjson.loads(state_raw) if state_raw else None)
    if head is None or t - head.t > STALE_SECONDS:
        head = derive(await measure(queue, t), [head] if head else [])
    return head, advise(head, state, settings)


class Sampler:
    """Measures once a second and appends the sample, while holding the sampler lease."""

    def __init__(self, queue: TaskQueue, redis: Redis, settings: Settings, holder: str) -> None:
        self.queue = queue
        self.redis = redis
        self.settings = settings
        self.holder = holder
        self._lease = Lease(redis)
        # Newest first; a minute and a bit, for the 10 s rates and the 60 s fallback.
        self.history: deque[Sample] = deque(maxlen=int(WINDOW_SECONDS) + 5)
        self.last_advice: tuple[str, int] | None = None

    async def lead(self, lease_seconds: float = 3.0) -> bool:
        return await self._lease(lease=keys.SAMPLER_LEADER, holder=self.holder, ttl_ms=int(lease_seconds * 1000))

    async def tick(self, t: float) -> tuple[Sample, Recommendation] | None:
        """One measurement; None when another process holds the lease (read its samples then)."""
        if not await self.lead():
            self.history.clear()
            return None
        if not self.history:
            # A restart (or a lease taken over): continue from the samples already in Redis.
            self.history.extend(reversed(await read_series(self.redis, self.history.maxlen or 1)))
            self.last_advice = None
        raw = await measure(self.queue, t)
        sample = derive(raw, self.history)
        state = await read_state(self.redis)
        advice = advise(sample, state, self.settings)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(keys.SERIES, sample.model_dump_json())
            pipe.ltrim(keys.SERIES, 0, keys.SERIES_KEPT - 1)
            pipe.set(keys.SCALING_STATE, orjson.dumps(advice.state.to_dict()))
            changed = (advice.action.value, advice.recommended_workers)
            if changed != self.last_advice:
                entry = {"at": sample.t, **advice.to_dict()}
                pipe.lpush(keys.SCALING_HISTORY, orjson.dumps(entry))
                pipe.ltrim(keys.SCALING_HISTORY, 0, keys.SCALING_HISTORY_KEPT - 1)
            await pipe.execute()
        if changed != self.last_advice:
            self.last_advice = changed
        self.history.appendleft(sample)
        await self._remember_workers(raw.workers, t)
        return sample, advice

    async def _remember_workers(self, beats: list[dict[str, Any]], t: float) -> None:
        """Keep each worker's last heartbeat past its TTL; forget those gone for minutes."""
        seen = {str(b["worker_id"]): orjson.dumps({**b, "seen_at": t}) for b in beats if b.get("worker_id")}
        if seen:
            await self.redis.hset(keys.WORKERS_SEEN, mapping=seen)  # type: ignore[arg-type]
        # The hash holds only workers of the last few minutes: small, whatever the history.
        known = await self.redis.hgetall(keys.WORKERS_SEEN)
        expired = [
            worker_id
            for worker_id, raw in known.items()
            if t - float(orjson.loads(raw).get("seen_at", 0)) > keys.WORKERS_SEEN_KEEP_SECONDS
        ]
        if expired:
            await self.redis.hdel(keys.WORKERS_SEEN, *expired)
