"""The autoscaler's 1 s loop: measure, ask the shared policy, act through the actuator, record.

It measures on its own each tick (the same `core.timeseries` code the dashboard's sampler
runs), so a dashboard that is down never stalls scaling. The policy's "current workers" is
what the actuator has asked for (running or starting, not draining), not the heartbeat count,
which lags a new worker by a second or two and would make it add the same workers twice.

A failing tick does not stop the loop: it is logged in one line (autoscaler/health.py keeps that
bounded) and, when the actuator is what failed, counted against the autoscaler's `/health`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable
from contextlib import suppress
from dataclasses import replace
from typing import Any, TypeVar

import asyncpg
import orjson
from redis.asyncio import Redis

from autoscaler.actuators import Actuator, RecommendActuator
from autoscaler.health import ActuatorHealth, RepeatLog
from core import db, keys, prom, timeseries
from core.policy import PolicyState, Recommendation, recommend
from core.queue import REDIS_ERRORS, TaskQueue
from core.samples import Sample
from core.settings import Settings, replica_of

log = logging.getLogger(__name__)
T = TypeVar("T")


def busy_by_replica(workers: list[dict[str, Any]]) -> dict[str, int]:
    """In-flight tasks per replica id (the worker id without its per-start suffix)."""
    out: dict[str, int] = {}
    for beat in workers:
        replica = replica_of(str(beat.get("worker_id", "")))
        out[replica] = out.get(replica, 0) + int(beat.get("in_flight", 0)) + int(beat.get("unpersisted", 0))
    return out


class Autoscaler:
    def __init__(
        self, queue: TaskQueue, redis: Redis, pool: asyncpg.Pool, settings: Settings, actuator: Actuator
    ) -> None:
        self.queue = queue
        self.redis = redis
        self.pool = pool
        self.settings = settings
        self.actuator = actuator
        self.mode = settings.autoscale
        self.history: deque[Sample] = deque(maxlen=int(timeseries.WINDOW_SECONDS) + 5)
        self.state = PolicyState()
        self.last: Recommendation | None = None
        self.last_recorded: tuple[int, int] | None = None
        self.health = ActuatorHealth()
        self.failures = RepeatLog(log)

    async def start(self, now: float | None = None) -> None:
        raw = await self.redis.get(keys.AUTOSCALER_STATE)
        # Redis outlives this process (and `./demo.sh down`): what an earlier run saw may be
        # hours old, or from another configuration. Scaling in waits a whole stable window of
        # load this process has seen itself, so a start does not stop workers on old evidence.
        started = time.time() if now is None else now
        self.state = replace(PolicyState.from_dict(orjson.loads(raw) if raw else None), started_at=started)
        await self.redis.set(keys.SCALING_MODE, self.mode)

    async def tick(self, now: float | None = None) -> Recommendation | None:
        t = time.time() if now is None else now
        raw = await timeseries.measure(self.queue, t)
        sample = timeseries.derive(raw, self.history)
        self.history.appendleft(sample)
        if self.mode == "off":
            return None
        if isinstance(self.actuator, RecommendActuator):
            self.actuator.live_workers = len(raw.workers)
        current = await self._act(self.actuator.current(), t)
        inputs = replace(timeseries.inputs_from(sample, self.settings), active_workers=current)
        advice = recommend(inputs, self.state, now=t, config=self.settings.policy_config())
        self.state = advice.state
        self.last = advice
        await self.redis.set(keys.AUTOSCALER_STATE, orjson.dumps(self.state.to_dict()))
        if advice.recommended_workers == current:
            self.health.succeeded()
            return advice
        changes = await self._act(self.actuator.scale_to(advice.recommended_workers, busy_by_replica(raw.workers)), t)
        self.health.succeeded()
        await self._record(t, current, advice, changes)
        return advice

    async def _act(self, call: Awaitable[T], t: float) -> T:
        # Only the actuator's own failures count against its health (see ActuatorHealth).
        try:
            return await call
        except Exception as exc:
            self.health.failed(exc, t)
            raise

    async def _record(self, t: float, current: int, advice: Recommendation, changes: list[str]) -> None:
        applied = self.mode == "on"
        pair = (current, advice.recommended_workers)
        if not applied and pair == self.last_recorded:
            return  # recommend mode: the same advice again is not a new decision
        self.last_recorded = pair
        decision = {
            "at": round(t, 3),
            "mode": self.mode,
            "from": current,
            "to": advice.recommended_workers,
            "action": advice.action.value,
            "urgency": advice.urgency,
            "applied": applied,
            "reasons": [*advice.reasons, *changes],
            "inputs": advice.numbers,
        }
        log.info("scale %s -> %s (%s): %s", current, advice.recommended_workers, self.mode, "; ".join(advice.reasons))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(keys.SCALING_DECISIONS, orjson.dumps(decision))
            pipe.ltrim(keys.SCALING_DECISIONS, 0, keys.SCALING_DECISIONS_KEPT - 1)
            await pipe.execute()
        try:
            await db.insert_decision(self.pool, decision)
        except db.UNAVAILABLE_ERRORS as exc:
            # History is best effort; the live view (Redis) has it, scaling must not wait for it.
            log.warning("decision not written to Postgres: %s", exc)

    async def step(self, now: float | None = None) -> Recommendation | None:
        """One tick of `run()`: a failing tick is logged (boundedly) and the loop goes on."""
        try:
            advice = await self.tick(now)
        except Exception as exc:  # one bad tick (Redis blip, engine error) must not stop scaling
            self.failures.failed(exc)
            await self._report_health()
            return None
        self.failures.succeeded()
        await self._report_health()
        return advice

    async def _report_health(self) -> None:
        """The actuator's health, for the dashboard's autoscaler_failing alert (it expires, so a
        stopped autoscaler leaves no stale report)."""
        # Redis down: the tick that failed already said so.
        with suppress(*REDIS_ERRORS):
            await self.redis.set(
                keys.AUTOSCALER_HEALTH, self.health.status().model_dump_json(), ex=keys.AUTOSCALER_HEALTH_TTL_SECONDS
            )
        prom.AUTOSCALER_FAILING.set(1 if self.health.failing else 0)

    async def run(self) -> None:
        await self.start()
        interval = self.settings.autoscale_tick_seconds
        while True:
            began = time.monotonic()
            await self.step()
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))
