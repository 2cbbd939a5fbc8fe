"""The dashboard's alerting: gathers core/alerts.py's inputs after each sample, evaluates the rules,
keeps the alerts in Redis and announces changes to ALERT_WEBHOOK_URL.

Only the process holding the sampler lease evaluates, writes and sends; the other dashboard
replicas read the alerts it wrote, so every replica serves the same ones. While Redis does not
answer nobody can hold the lease: each process evaluates from the alerts it last knew (so the page
it serves says Redis is unreachable), and the one that led last keeps sending; its state reaches
Redis again with its first tick once Redis answers.

The webhook is sent by a background task fed through a bounded queue: a slow or failing endpoint
never holds up a sample. Each notice is tried a few times with backoff; its success is written
with the alert (`sent_firing`, `sent_resolved`), so a restarted leader does not announce again
what was announced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import httpx
from redis.asyncio import Redis

from core import alert_readings, db, keys
from core.alerts import (
    WINDOW_SECONDS,
    Alert,
    AlertInputs,
    AlertState,
    AutoscalerHealth,
    Rule,
    Thresholds,
    TypeTimes,
    evaluate,
    rules,
    webhook_text,
)
from core.metrics import worker_table
from core.queue import REDIS_ERRORS, TaskQueue
from core.samples import Sample
from core.settings import Settings

log = logging.getLogger(__name__)

#: How often the Postgres probe runs (a ping and the per-type p95 query), and how long it waits.
PROBE_EVERY_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 3.0
#: Webhook notices waiting to be sent: past this, new ones wait for the next tick.
WEBHOOK_QUEUE_MAX = 64
#: Tries per notice, and the first backoff (doubling).
WEBHOOK_TRIES = 4
WEBHOOK_BACKOFF_SECONDS = 1.0
#: Resolved alerts the API and the stream show.
RESOLVED_SHOWN = 20

Event = Literal["firing", "resolved"]


class Window:
    """A counter's growth over the last WINDOW_SECONDS, from readings taken each tick."""

    def __init__(self, seconds: float = WINDOW_SECONDS) -> None:
        self.seconds = seconds
        self.readings: deque[tuple[float, int]] = deque()

    def growth(self, t: float, value: int) -> int:
        self.readings.append((t, value))
        while self.readings and t - self.readings[0][0] > self.seconds:
            self.readings.popleft()
        # A counter that went down was reset (Redis flushed): count from there.
        return max(0, value - min(v for _, v in self.readings))


class PostgresProbe:
    """Every few seconds, apart from the sampler (a slow Postgres must not delay a sample): whether
    Postgres answers, and each task type's p95 over the last minute (core.db.p95_by_type)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        #: None until the first probe
        self.up: bool | None = None
        self.p95_by_type: dict[str, TypeTimes] | None = None

    async def probe(self) -> None:
        try:
            found = await asyncio.wait_for(
                db.p95_by_type(self.pool, WINDOW_SECONDS, PROBE_TIMEOUT_SECONDS), PROBE_TIMEOUT_SECONDS + 1
            )
        except db.UNAVAILABLE_ERRORS as exc:
            if self.up is not False:
                log.warning("alerts: PostgreSQL does not answer (%s)", exc)
            self.up, self.p95_by_type = False, None
            return
        self.up = True
        self.p95_by_type = {name: TypeTimes(p95, count) for name, (p95, count) in found.items()}

    async def run(self) -> None:
        while True:
            try:
                await self.probe()
            except Exception:
                # A bug in one probe must not end the loop; its figures stay unknown meanwhile.
                log.exception("alerts: Postgres probe failed")
                self.p95_by_type = None
            await asyncio.sleep(PROBE_EVERY_SECONDS)


@dataclass(frozen=True)
class Notice:
    key: str
    event: Event
    alert: Alert


class Webhook:
    """Sends notices to ALERT_WEBHOOK_URL from its own task; `offer` never waits."""

    def __init__(self, url: str, timeout: float, on_sent: Any) -> None:
        self.url = url
        self.queue: asyncio.Queue[Notice] = asyncio.Queue(maxsize=WEBHOOK_QUEUE_MAX)
        self.client = httpx.AsyncClient(timeout=timeout)
        self.on_sent = on_sent
        #: notices queued or tried by this process: each is offered once
        self.offered: set[tuple[str, Event, float | None]] = set()

    def offer(self, key: str, event: Event, alert: Alert) -> None:
        ident = (key, event, alert.since)
        if ident in self.offered:
            return
        try:
            self.queue.put_nowait(Notice(key, event, alert))
        except asyncio.QueueFull:
            return  # offered again next tick
        self.offered.add(ident)

    async def send(self, notice: Notice) -> bool:
        body = {
            "text": webhook_text(notice.alert),
            "event": notice.event,
            "alert": notice.alert.model_dump(mode="json"),
        }
        delay = WEBHOOK_BACKOFF_SECONDS
        for attempt in range(1, WEBHOOK_TRIES + 1):
            try:
                response = await self.client.post(self.url, json=body)
                if response.status_code < 300:
                    return True
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt == WEBHOOK_TRIES:
                log.warning(
                    "alerts: webhook gave up on %s %s after %d tries: %s", notice.key, notice.event, attempt, problem
                )
                return False
            await asyncio.sleep(delay)
            delay *= 2
        return False

    async def run(self) -> None:
        while True:
            notice = await self.queue.get()
            try:
                sent = await self.send(notice)
                await self.on_sent(notice, sent)
            except Exception:
                log.exception("alerts: webhook notice failed")
            # Done with: the alert now says it was sent, or has moved to the history.
            self.offered.discard((notice.key, notice.event, notice.alert.since))

    async def aclose(self) -> None:
        await self.client.aclose()


def _key_of_resolved(alert: Alert) -> str:
    """The ALERTS_ACTIVE field of a resolved alert waiting for its notice: apart from the rule's
    own field, which a new alert of the same rule may take meanwhile."""
    return f"{alert.name}@{alert.since}"


class Alerting:
    """The alerts as this process knows them, and (while it leads) their evaluation."""

    def __init__(self, queue: TaskQueue, redis: Redis, pool: asyncpg.Pool, settings: Settings) -> None:
        self.queue = queue
        self.redis = redis
        self.settings = settings
        self.thresholds: Thresholds = settings.alert_thresholds()
        self.rules: tuple[Rule, ...] = rules(self.thresholds)
        self.probe = PostgresProbe(pool)
        #: rule name -> pending or firing alert
        self.active: dict[str, Alert] = {}
        #: resolved alerts whose resolving notice is not sent yet (by _key_of_resolved)
        self.unsent: dict[str, Alert] = {}
        self.resolved: list[Alert] = []
        #: keys of `unsent` whose resolving notice the webhook is done with
        self.announced: set[str] = set()
        self.leading = False
        self.requeued = Window()
        self.dead_letters = Window()
        self.webhook = (
            Webhook(settings.alert_webhook_url, settings.alert_webhook_timeout_seconds, self._sent)
            if settings.alert_webhook_url
            else None
        )
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self.probe.run(), name="alerts-postgres-probe"))
        if self.webhook is not None:
            self._tasks.append(asyncio.create_task(self.webhook.run(), name="alerts-webhook"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task
        if self.webhook is not None:
            await self.webhook.aclose()

    # -- each tick -----------------------------------------------------------------------------

    async def tick(self, sample: Sample, t: float, leading: bool) -> None:
        """After a sample: evaluate and write (leader), or read what the leader wrote."""
        if not leading:
            self.leading = False
            await self._load()
            return
        if not self.leading:
            await self._load()  # taking over: continue from the previous leader's alerts
            self.leading = True
        inputs = await self._inputs(sample, t)
        self._apply(inputs, t)
        await self._store()

    def redis_down(self, t: float) -> None:
        """A tick that could not reach Redis: evaluate what is known (Redis itself down)."""
        self._apply(AlertInputs(redis_up=False, postgres_up=self.probe.up, queue_max=self.settings.queue_max), t)

    def _apply(self, inputs: AlertInputs, t: float) -> None:
        result = evaluate(self.rules, inputs, self.active, t, self.thresholds)
        self.active = result.active
        for alert in result.resolved:
            self.unsent[_key_of_resolved(alert)] = alert
        if self.leading:
            self._offer()

    def _offer(self) -> None:
        if self.webhook is None:
            # Nothing to announce: resolved alerts go straight to the history.
            return
        for name, alert in self.active.items():
            if alert.state is AlertState.FIRING and not alert.sent_firing:
                self.webhook.offer(name, "firing", alert)
        for key, alert in self.unsent.items():
            if not alert.sent_firing and alert.since is not None:
                self.webhook.offer(alert.name, "firing", alert)
            self.webhook.offer(key, "resolved", alert)

    async def _sent(self, notice: Notice, sent: bool) -> None:
        """The webhook task's report: mark the alert, and keep it in Redis at once."""
        if notice.event == "firing":
            if sent:
                for table in (self.active, self.unsent):
                    for key, alert in table.items():
                        if alert.name == notice.alert.name and alert.since == notice.alert.since:
                            table[key] = alert.model_copy(update={"sent_firing": True})
        elif (resolved := self.unsent.get(notice.key)) is not None:
            # Sent or given up on, it goes to the history (a notice given up on stays unsent).
            self.unsent[notice.key] = resolved.model_copy(update={"sent_resolved": sent})
            self.announced.add(notice.key)
        if self.leading:
            with suppress(*REDIS_ERRORS):
                await self._store()

    # -- Redis -----------------------------------------------------------------------------------

    async def _store(self) -> None:
        """Write this process's alerts as the shared ones (the leader only)."""
        done_keys = [k for k in self.unsent if self.webhook is None or k in self.announced]
        done = [self.unsent.pop(k) for k in done_keys]
        self.announced.difference_update(done_keys)
        fields = {name: a.model_dump_json() for name, a in self.active.items()}
        fields |= {key: a.model_dump_json() for key, a in self.unsent.items()}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.ALERTS_ACTIVE)
            if fields:
                pipe.hset(keys.ALERTS_ACTIVE, mapping=fields)  # type: ignore[arg-type]
            if done:
                pipe.lpush(keys.ALERTS_HISTORY, *(a.model_dump_json() for a in done))
                pipe.ltrim(keys.ALERTS_HISTORY, 0, keys.ALERTS_HISTORY_KEPT - 1)
            pipe.lrange(keys.ALERTS_HISTORY, 0, RESOLVED_SHOWN - 1)
            answers = await pipe.execute()
        self.resolved = _alerts(answers[-1])

    async def _load(self) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.ALERTS_ACTIVE)
            pipe.lrange(keys.ALERTS_HISTORY, 0, RESOLVED_SHOWN - 1)
            stored, history = await pipe.execute()
        alerts = {str(k): Alert.model_validate_json(v) for k, v in stored.items()}
        self.active = {k: a for k, a in alerts.items() if "@" not in k}
        self.unsent = {k: a for k, a in alerts.items() if "@" in k}
        self.resolved = _alerts(history)

    async def _inputs(self, sample: Sample, t: float) -> AlertInputs:
        queue = self.queue
        stats = await queue.stats()
        requeued = self.requeued.growth(t, int(stats.get(keys.STAT_REQUEUED, 0)))
        dead_letters = await alert_readings.dead_letter_length(queue)
        memory = await alert_readings.redis_memory(queue)
        oldest = await alert_readings.oldest_queued_seconds(queue, t) if sample.queue_length else None
        dead: tuple[str, ...] = ()
        if requeued:
            rows = await worker_table(queue, t)
            dead = tuple(r["worker_id"] for r in rows if r["state"] != "online" and r["in_flight"] > 0)
        health = await self.redis.get(keys.AUTOSCALER_HEALTH)
        return AlertInputs(
            redis_up=True,
            postgres_up=self.probe.up,
            queue_length=sample.queue_length,
            oldest_queued_seconds=oldest,
            workers=sample.workers,
            requeued_in_window=requeued,
            dead_workers=dead,
            error_rate=sample.error_rate,
            finished_in_window=sample.tasks_per_minute,
            dlq_length=dead_letters,
            dlq_growth=self.dead_letters.growth(t, dead_letters),
            p95_by_type=self.probe.p95_by_type,
            redis_memory_used=memory.used,
            redis_memory_budget=memory.budget,
            queue_max=self.settings.queue_max,
            autoscaler=None if health is None else AutoscalerHealth.model_validate_json(health),
        )

    # -- what the page and the API show ----------------------------------------------------------

    def view(self, now: float | None = None) -> dict[str, Any]:
        """Firing, pending and recently resolved alerts, newest first: `GET /api/alerts` and the
        stream's `alerts`."""
        by_state: dict[AlertState, list[Alert]] = {state: [] for state in AlertState}
        for alert in self.active.values():
            by_state[alert.state].append(alert)
        resolved = sorted(self.unsent.values(), key=lambda a: -(a.resolved_at or 0)) + self.resolved
        return {
            "firing": _dump(sorted(by_state[AlertState.FIRING], key=lambda a: -(a.since or 0))),
            "pending": _dump(sorted(by_state[AlertState.PENDING], key=lambda a: -a.started_at)),
            "resolved": _dump(resolved[:RESOLVED_SHOWN]),
            "evaluated_at": round(time.time() if now is None else now, 3),
        }


def _alerts(raws: Iterable[str]) -> list[Alert]:
    return [Alert.model_validate_json(raw) for raw in raws]


def _dump(alerts: Iterable[Alert]) -> list[dict[str, Any]]:
    return [a.model_dump(mode="json") for a in alerts]
