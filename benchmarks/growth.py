"""`./demo.sh bench --growth` (issue 18): how each cost grows with the backlog and the history.

    .venv/bin/python -m benchmarks --growth [--depths 0,100000,1000000] [--rows 0,1000000,10000000]

Starts its own native stack on free ports (as `./demo.sh bench`: rate limiting off, no queue
bound, WORKER_CONCURRENCY=100), stops its workers, and measures:

1. Queue levels (workers stopped, small `echo` tasks queued through `POST /api/tasks`): Redis
   memory per queued task (used_memory over the empty stack's, per task); `POST /api/task` p99 at
   half the ingest rate measured first (wrk, benchmarks/wrk/paced.lua); `GET /api/task/{id}` p99
   of a queued task (hot) and of a final row only Postgres holds; `/api/metrics` and `/api/tasks`
   of the dashboard, p95; the time of one claim of CLAIM_BATCH ids (TaskQueue.claim_many, in
   process, as a worker calls it), the claimed ids handed back in order afterwards.
2. The drain: the stopped workers (`--drain-workers` of them) started on the deepest backlog;
   tasks/s and the time to an empty queue, then Redis memory per final record kept hot.
3. History levels (the drain's rows truncated first; rows written by SQL, growth_fill.py):
   `GET /api/task/{id}` from Postgres p99, the dashboard's endpoints and its history SQL
   (core.db.list_tasks, in process) p95, and Postgres disk per final row.

Before each level the stack is settled (AOF rewritten, Postgres checkpointed, as the main bench
does), so no figure measures the debris of the fill before it. Tears the stack down afterwards,
its Redis and Postgres data included, and writes reports/growth-<local time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from benchmarks.growth_fill import ECHO_DATA, History, fill_queue
from benchmarks.suite import CONNECTIONS, settle, write_report, wrk
from benchmarks.target import rank, say, stack_env, stop_workers
from core import db, keys
from core.claims import Claim
from core.connections import init_connection
from core.metrics import id_prefix_range
from harness.stacks import Stack, wait_for
from native.plan import ROOT

DEPTHS = (0, 100_000, 1_000_000)
ROWS = (0, 1_000_000, 10_000_000)
#: Queued tasks at the shallowest level at least, and history rows at least: what the hot and
#: Postgres reads pick from (a level of 0 means this many).
FLOOR_TASKS = 1000
FLOOR_ROWS = 20_000
#: Ids a worker claims in one call (its free slots, at most WORKER_CONCURRENCY=100).
CLAIM_BATCH = 100
CLAIM_BATCHES = 10
#: The in-process claimer's worker id; it holds nothing once a level's claims are handed back.
CLAIM_WORKER = "growth-bench-claimer"
#: Queued tasks whose record keys are sized for the layout.
LAYOUT_SAMPLE = 200
WARMUP = 5
#: A figure taken on a shared 2-core machine is the median of this many rounds (interleaved
#: requests, or wrk runs back to back): one slow moment must not decide a level's percentile.
ROUNDS = 3
#: The goals of issue 18.
GROWTH_LIMIT = 1.2
DASHBOARD_P95_MS = 50.0
QUEUED_TASK_BYTES = 250
#: The dashboard's history filters: query string for the endpoint, arguments for core.db.list_tasks.
HISTORY_FILTERS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("newest", "", {}),
    ("status=failed", "status=failed", {"status": "failed"}),
    ("type=echo", "type=echo", {"task_type": "echo"}),
)


@dataclass(frozen=True)
class Latency:
    samples: int
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @classmethod
    def of(cls, ms: Sequence[float]) -> Latency:
        ordered = sorted(ms)

        return cls(
            len(ordered),
            round(statistics.median(ordered), 3),
            round(rank(ordered, 0.95), 3),
            round(rank(ordered, 0.99), 3),
        )

    @classmethod
    def of_rounds(cls, rounds: Sequence[Sequence[float]]) -> Latency:
        """Each percentile the median of the rounds' (every sample counted in `samples`)."""
        each = [cls.of(r) for r in rounds if r]
        return cls(
            sum(r.samples for r in each),
            statistics.median(r.p50_ms for r in each),
            statistics.median(r.p95_ms for r in each),
            statistics.median(r.p99_ms for r in each),
        )


@dataclass(frozen=True)
class Layout:
    """Where a queued task's bytes go (MEMORY USAGE, which counts a key's name and overheads)."""

    #: a task's record key, the mean over sampled queued tasks
    record_key_bytes: float
    #: the record's JSON alone (STRLEN), the same mean
    record_json_bytes: float
    #: the normal queue list over its length
    list_bytes_per_id: float


@dataclass(frozen=True)
class QueueLevel:
    #: tasks waiting when the level was measured (before its submissions at half rate)
    queued: int
    redis_used_bytes: int
    #: (used_memory - the empty stack's) / queued
    bytes_per_task: float | None
    layout: Layout
    #: POST /api/task at the half rate, from wrk (its p50 and p99)
    submit_p50_ms: float
    submit_p99_ms: float
    submit_rps: float
    get_hot: Latency
    get_postgres: Latency
    metrics: Latency
    tasks: Latency
    claim: Latency


@dataclass(frozen=True)
class Drain:
    tasks: int
    workers: int
    concurrency: int
    #: from starting the workers until the queue was empty and nothing was in flight
    seconds_to_empty: float
    #: tasks over the time from the first claim to the empty queue (the workers' start-up left out)
    tasks_per_s: float
    rows: int
    #: (used_memory once drained - the empty stack's) / tasks: final records kept hot (RESULT_TTL)
    hot_bytes_per_record: float


@dataclass(frozen=True)
class Timed:
    name: str
    latency: Latency


@dataclass(frozen=True)
class RowsLevel:
    rows: int
    fill_seconds: float
    disk_bytes: int
    disk_bytes_per_row: float
    get_postgres: Latency
    endpoints: list[Timed]
    history_sql: list[Timed]


@dataclass
class Growth:
    started_at: str
    cpus: int | None
    worker_concurrency: int
    ingest_rps: float
    half_rate: int
    empty_redis_bytes: int
    queue: list[QueueLevel] = field(default_factory=list)
    drain: Drain | None = None
    history: list[RowsLevel] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class Options:
    depths: Sequence[int] = DEPTHS
    rows: Sequence[int] = ROWS
    #: each wrk phase: the ingest maximum, and each level's half-rate submissions
    seconds: int = 5
    #: GETs of a task per figure per level: ROUNDS rounds of 1,000, so that a round's p99 is the
    #: 10th slowest of its GETs, not the 2nd (one scheduler hiccup would decide it)
    samples: int = 3000
    drain_workers: int = 1
    concurrency: int = 100
    #: sequential requests of each dashboard endpoint, and calls of each history query, per level:
    #: ROUNDS rounds of 200, so that a round's p95 is its 10th slowest, not one of its few slowest
    requests: int = 600


# -- measuring -----------------------------------------------------------------------------


def timed_gets(client: httpx.Client, paths: Sequence[str]) -> Latency:
    """One sequential GET of each path, on a warm keepalive connection, the first WARMUP not
    counted; the rest in ROUNDS rounds, each percentile the median round's."""
    took: list[float] = []
    for i, path in enumerate(paths):
        began = time.perf_counter()
        response = client.get(path)
        if i >= WARMUP:
            took.append((time.perf_counter() - began) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
    return Latency.of_rounds([took[n::ROUNDS] for n in range(ROUNDS)])


def get_postgres(stack: Stack, history: History, samples: int) -> Latency:
    """GET /api/task/{id} of final rows only Postgres holds, each read once (a read caches it)."""
    ids = asyncio.run(history.fresh_ids(samples + WARMUP))
    with httpx.Client(base_url=stack.lb, timeout=10) as client:
        return timed_gets(client, [f"/api/task/{i}" for i in ids])


def dashboard(stack: Stack, queries: Sequence[str], requests: int) -> list[Timed]:
    """p95 of each dashboard path (`requests` sequential requests)."""
    with httpx.Client(base_url=stack.monitor, timeout=30) as client:
        return [Timed(q, timed_gets(client, [q] * (requests + WARMUP))) for q in queries]


async def _claim_batches(stack: Stack) -> Latency:
    """CLAIM_BATCHES claims of CLAIM_BATCH ids back to back, then every id handed back, the last
    claimed first, so the queue is as it was (each claimed task counts one attempt more)."""
    took: list[float] = []
    claimed: list[Claim] = []
    async with stack.queue() as queue:
        for _ in range(CLAIM_BATCHES):
            began = time.perf_counter()
            claimed.extend(await queue.claim_many(CLAIM_WORKER, CLAIM_BATCH))
            took.append((time.perf_counter() - began) * 1000)
        for claim in reversed(claimed):
            await queue.release(CLAIM_WORKER, claim.id, claim.priority)
    return Latency.of(took)


async def _queued(stack: Stack) -> int:
    async with stack.queue() as queue:
        return await queue.queue_length()


def queued(stack: Stack) -> int:
    return asyncio.run(_queued(stack))


def used_memory(stack: Stack) -> int:
    return int(stack.redis.info("memory")["used_memory"])


def layout(stack: Stack, hot: Sequence[str]) -> Layout:
    sample = random.sample(list(hot), min(LAYOUT_SAMPLE, len(hot)))
    shard = keys.SINGLE  # the bench's stack runs one Redis, one shard
    pipe = stack.redis.pipeline(transaction=False)
    for task_id in sample:
        pipe.memory_usage(shard.task(task_id))
        pipe.strlen(shard.task(task_id))
    sizes = [int(n or 0) for n in pipe.execute()]
    ids = int(stack.redis.llen(shard.queue))
    listed = int(stack.redis.memory_usage(shard.queue, samples=0) or 0)
    return Layout(
        record_key_bytes=round(statistics.mean(sizes[0::2]), 1),
        record_json_bytes=round(statistics.mean(sizes[1::2]), 1),
        list_bytes_per_id=round(listed / ids, 1) if ids else 0.0,
    )


def ingest_max(stack: Stack, body: Path, seconds: int) -> float:
    """The closed-loop POST /api/task rate (workers stopped), then the queue emptied again."""
    result = wrk(stack.lb, "load.lua", ["/api/task", str(body)], seconds=seconds, connections=CONNECTIONS)
    headers = {"authorization": f"Bearer {stack.env['ADMIN_TOKEN']}"}
    purged = httpx.delete(f"{stack.lb}/api/admin/queue", headers=headers, timeout=120)
    if purged.status_code != 200:
        raise RuntimeError(f"the admin purge answered {purged.status_code}: {purged.text[:300]}")
    return float(result["rps"])


def queue_level(
    stack: Stack, growth: Growth, history: History, hot: list[str], body: Path, options: Options
) -> QueueLevel:
    """The figures at the queue's current depth; the half-rate submissions go last (they add tasks)."""
    settle(stack)
    depth = queued(stack)
    used = used_memory(stack)
    where_bytes = layout(stack, hot)
    per_task = (used - growth.empty_redis_bytes) / depth if depth else None
    with httpx.Client(base_url=stack.lb, timeout=10) as client:
        get_hot = timed_gets(client, [f"/api/task/{random.choice(hot)}" for _ in range(options.samples + WARMUP)])
    from_postgres = get_postgres(stack, history, options.samples)
    metrics, tasks = dashboard(stack, ["/api/metrics", "/api/tasks"], options.requests)
    claim = asyncio.run(_claim_batches(stack))
    say(f"queue {depth:,}: POST /api/task at {growth.half_rate} req/s, {ROUNDS} rounds of {options.seconds} s")
    rounds = [
        wrk(
            stack.lb,
            "paced.lua",
            ["/api/task", str(body), str(growth.half_rate), "2"],
            seconds=options.seconds,
            connections=CONNECTIONS,
        )
        for _ in range(ROUNDS)
    ]
    submit = {k: statistics.median(float(r[k]) for r in rounds) for k in ("p50_ms", "p99_ms", "rps")}
    return QueueLevel(
        queued=depth,
        redis_used_bytes=used,
        bytes_per_task=round(per_task, 1) if per_task is not None else None,
        layout=where_bytes,
        submit_p50_ms=submit["p50_ms"],
        submit_p99_ms=submit["p99_ms"],
        submit_rps=submit["rps"],
        get_hot=get_hot,
        get_postgres=from_postgres,
        metrics=metrics.latency,
        tasks=tasks.latency,
        claim=claim,
    )


async def _drain(stack: Stack, workers: list[str]) -> tuple[int, float, float]:
    """Start `workers`; (tasks drained, seconds to empty, seconds from the first claim to empty)."""
    async with stack.queue() as queue:
        initial = await queue.queue_length()
        began = time.perf_counter()
        for name in workers:
            await asyncio.to_thread(stack.control.start, name)
        first: float | None = None
        deadline = began + 1800
        while True:
            left = await queue.queue_length()
            now = time.perf_counter()
            if first is None and left < initial:
                first = now
            if left == 0 and await queue.in_flight() == 0:
                return initial, now - began, now - (first or began)
            if now > deadline:
                raise RuntimeError(f"the drain did not finish in 30 min ({left:,} tasks left)")
            await asyncio.sleep(0.02)


def drain(stack: Stack, growth: Growth, history: History, workers: list[str], options: Options) -> Drain:
    say(f"drain: {options.drain_workers} worker(s) at concurrency {options.concurrency} on the backlog")
    _, rows_before = asyncio.run(history.disk())
    tasks, to_empty, claiming = asyncio.run(_drain(stack, workers))
    settle(stack)
    hot = (used_memory(stack) - growth.empty_redis_bytes) / tasks if tasks else 0.0
    _, rows_after = asyncio.run(history.disk())
    return Drain(
        tasks=tasks,
        workers=len(workers),
        concurrency=options.concurrency,
        seconds_to_empty=round(to_empty, 2),
        tasks_per_s=round(tasks / claiming, 1) if claiming else 0.0,
        rows=rows_after - rows_before,
        hot_bytes_per_record=round(hot, 1),
    )


async def _history_sql(database_url: str, prefix: str, calls: int) -> list[Timed]:
    """p95 of each history query the dashboard runs (core.db.list_tasks, limit 50)."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1, init=init_connection)
    try:
        filters = [
            *((name, args) for name, _, args in HISTORY_FILTERS),
            ("id prefix", {"id_range": prefix_range(prefix)}),
        ]
        out: list[Timed] = []
        for name, args in filters:
            took: list[float] = []
            for i in range(calls + WARMUP):
                began = time.perf_counter()
                await db.list_tasks(pool, limit=50, **args)
                if i >= WARMUP:
                    took.append((time.perf_counter() - began) * 1000)
            out.append(Timed(name, Latency.of_rounds([took[n::ROUNDS] for n in range(ROUNDS)])))
        return out
    finally:
        await pool.close()


def prefix_range(prefix: str) -> tuple[str, str]:
    found = id_prefix_range(prefix)
    if found is None:
        raise ValueError(f"{prefix!r} is no id prefix")
    return found


def rows_level(stack: Stack, history: History, rows: int, options: Options) -> RowsLevel:
    wanted = max(rows, FLOOR_ROWS)
    say(f"history: filling Postgres to {wanted:,} rows")
    filled = asyncio.run(history.fill_to(wanted))
    settle(stack)
    size, count = asyncio.run(history.disk())
    from_postgres = get_postgres(stack, history, options.samples)
    # An id prefix as typed in the dashboard's search: the first 8 digits of a row's id.
    prefix = asyncio.run(history.fresh_ids(1))[0][:8]
    paths = ["/api/metrics", *(f"/api/tasks?{q}" if q else "/api/tasks" for _, q, _ in HISTORY_FILTERS)]
    endpoints = dashboard(stack, [*paths, f"/api/tasks?q={prefix}"], options.requests)
    return RowsLevel(
        rows=count,
        fill_seconds=round(filled, 1),
        disk_bytes=size,
        disk_bytes_per_row=round(size / count, 1),
        get_postgres=from_postgres,
        endpoints=endpoints,
        history_sql=asyncio.run(_history_sql(stack.database_url, prefix, options.requests)),
    )


def run(options: Options) -> Growth:
    """Every figure on a stack of its own, torn down (data included) afterwards."""
    begun = time.monotonic()
    say("starting a native stack on free ports (rate limiting off)")
    # A claim measured at every level counts an attempt of the tasks it hands back: room for those.
    stack = Stack({**stack_env(options.concurrency), "MAX_ATTEMPTS": "10"}).up()
    try:
        wait_for(lambda: len(stack.heartbeats()) >= 1, 30, "a worker's heartbeat")
        workers = stop_workers(stack)
        if len(workers) < options.drain_workers:
            raise SystemExit(f"--drain-workers {options.drain_workers}: the stack runs {len(workers)}")
        history = History(stack.database_url, most=max([*options.rows, FLOOR_ROWS]))
        asyncio.run(history.fill_to(FLOOR_ROWS))
        with tempfile.TemporaryDirectory(prefix="ss-growth-") as tmp:
            body = Path(tmp) / "task.json"
            body.write_bytes(orjson.dumps({"type": "echo", "data": ECHO_DATA}))
            say(f"ingest maximum: POST /api/task, closed loop, {options.seconds} s")
            rate = ingest_max(stack, body, options.seconds)
            settle(stack)
            growth = Growth(
                started_at=dt.datetime.now(dt.UTC).isoformat(),
                cpus=os.cpu_count(),
                worker_concurrency=options.concurrency,
                ingest_rps=rate,
                half_rate=max(1, int(rate / 2)),
                empty_redis_bytes=used_memory(stack),
            )
            hot: list[str] = []
            for depth in options.depths:
                adding = max(depth, FLOOR_TASKS) - queued(stack)
                if adding > 0:
                    say(f"queue: submitting {adding:,} echo tasks in bulk")
                    hot += asyncio.run(fill_queue(stack.lb, adding, keep_every=max(1, adding // 10_000)))
                growth.queue.append(queue_level(stack, growth, history, hot, body, options))
        growth.drain = drain(stack, growth, history, workers[: options.drain_workers], options)
        stop_workers(stack)
        asyncio.run(history.truncate())
        for rows in options.rows:
            growth.history.append(rows_level(stack, history, rows, options))
    finally:
        say("stopping the stack this bench started (its data goes with it)")
        stack.down()
    growth.seconds = round(time.monotonic() - begun, 1)
    return growth


# -- report --------------------------------------------------------------------------------


def _ratio(last: float, first: float) -> float | None:
    return last / first if first > 0 else None


@dataclass(frozen=True)
class Goal:
    what: str
    wanted: str
    met: bool


def _growth_goal(what: str, first: float, last: float) -> Goal:
    ratio = _ratio(last, first)
    shown = "n/a" if ratio is None else f"{ratio:.2f}x"
    return Goal(
        f"{what}: {first:.2f} -> {last:.2f} ms ({shown})",
        f"<= {GROWTH_LIMIT}x",
        ratio is not None and ratio <= GROWTH_LIMIT,
    )


def goals(g: Growth) -> list[Goal]:
    out: list[Goal] = []
    if len(g.queue) > 1:
        first, last = g.queue[0], g.queue[-1]
        at = f"at {last.queued:,} queued"
        out += [
            _growth_goal(f"POST /api/task p99 {at}", first.submit_p99_ms, last.submit_p99_ms),
            _growth_goal(f"GET /api/task hot p99 {at}", first.get_hot.p99_ms, last.get_hot.p99_ms),
            _growth_goal(f"GET /api/task Postgres p99 {at}", first.get_postgres.p99_ms, last.get_postgres.p99_ms),
            _growth_goal(f"/api/metrics p95 {at}", first.metrics.p95_ms, last.metrics.p95_ms),
            _growth_goal(f"/api/tasks p95 {at}", first.tasks.p95_ms, last.tasks.p95_ms),
            _growth_goal(f"claim of {CLAIM_BATCH} p50 {at}", first.claim.p50_ms, last.claim.p50_ms),
        ]
    if len(g.history) > 1:
        first_rows, last_rows = g.history[0], g.history[-1]
        at = f"at {last_rows.rows:,} rows"
        out.append(
            _growth_goal(
                f"GET /api/task Postgres p99 {at}", first_rows.get_postgres.p99_ms, last_rows.get_postgres.p99_ms
            )
        )
        for a, b in zip(first_rows.endpoints, last_rows.endpoints, strict=True):
            out.append(_growth_goal(f"{_endpoint(b.name)} p95 {at}", a.latency.p95_ms, b.latency.p95_ms))
        for a, b in zip(first_rows.history_sql, last_rows.history_sql, strict=True):
            out.append(_growth_goal(f"history SQL {b.name} p95 {at}", a.latency.p95_ms, b.latency.p95_ms))
    dashboard_p95 = [lvl.metrics.p95_ms for lvl in g.queue] + [lvl.tasks.p95_ms for lvl in g.queue]
    dashboard_p95 += [t.latency.p95_ms for lvl in g.history for t in lvl.endpoints]
    if dashboard_p95:
        worst = max(dashboard_p95)
        out.append(
            Goal(
                f"dashboard endpoints, worst p95 = {worst:.1f} ms",
                f"< {DASHBOARD_P95_MS:g} ms",
                worst < DASHBOARD_P95_MS,
            )
        )
    sized = [lvl for lvl in g.queue if lvl.bytes_per_task is not None]
    if sized:
        deepest = sized[-1]
        per = deepest.bytes_per_task or 0.0
        out.append(
            Goal(
                f"Redis per queued task at {deepest.queued:,} = {per:.0f} B",
                f"<= {QUEUED_TASK_BYTES} B",
                per <= QUEUED_TASK_BYTES,
            )
        )
    return out


def _grid(title: str, levels: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    width = max(len(name) for name, _ in rows)
    cells = max(10, *(len(c) for _, cs in rows for c in cs), *(len(lv) for lv in levels))
    lines = [
        f"| {title:<{width}} | " + " | ".join(f"{lv:>{cells}}" for lv in levels) + " |",
        f"|{'-' * (width + 2)}|" + "|".join("-" * (cells + 1) + ":" for _ in levels) + "|",
    ]
    lines += [f"| {name:<{width}} | " + " | ".join(f"{c:>{cells}}" for c in cs) + " |" for name, cs in rows]
    return lines


def _endpoint(path: str) -> str:
    """A dashboard path as shown: the id prefix searched for differs per level."""
    return path.split("?q=")[0] + "?q=<8 digits>" if "?q=" in path else path


def _ms(latency: Latency, which: str) -> str:
    return f"{getattr(latency, f'{which}_ms'):.2f} ms"


def table(g: Growth) -> str:
    lines: list[str] = []
    if g.queue:
        q = g.queue
        lines += _grid(
            "queued tasks",
            [f"{lvl.queued:,}" for lvl in q],
            [
                ("Redis used_memory", [f"{lvl.redis_used_bytes / 2**20:,.1f} MB" for lvl in q]),
                ("Redis per queued task", [f"{lvl.bytes_per_task:,.0f} B" if lvl.bytes_per_task else "-" for lvl in q]),
                ("  record key (MEMORY USAGE)", [f"{lvl.layout.record_key_bytes:,.0f} B" for lvl in q]),
                ("  of which the record's JSON", [f"{lvl.layout.record_json_bytes:,.0f} B" for lvl in q]),
                ("  queue list per id", [f"{lvl.layout.list_bytes_per_id:,.0f} B" for lvl in q]),
                (f"POST /api/task p99 at {g.half_rate:,} req/s", [f"{lvl.submit_p99_ms:.2f} ms" for lvl in q]),
                ("GET /api/task/{id} hot p99", [_ms(lvl.get_hot, "p99") for lvl in q]),
                ("GET /api/task/{id} from Postgres p99", [_ms(lvl.get_postgres, "p99") for lvl in q]),
                ("dashboard /api/metrics p95", [_ms(lvl.metrics, "p95") for lvl in q]),
                ("dashboard /api/tasks p95", [_ms(lvl.tasks, "p95") for lvl in q]),
                (f"claim of {CLAIM_BATCH} ids p50", [_ms(lvl.claim, "p50") for lvl in q]),
                (f"claim of {CLAIM_BATCH} ids max of {CLAIM_BATCHES}", [_ms(lvl.claim, "p99") for lvl in q]),
            ],
        )
    if g.drain:
        d = g.drain
        lines += [
            "",
            f"drain: {d.tasks:,} echo, {d.workers} worker(s) x {d.concurrency} slots: {d.tasks_per_s:,.0f} tasks/s, "
            f"empty after {d.seconds_to_empty:.1f} s, {d.rows:,} rows; Redis per final record kept hot: "
            f"{d.hot_bytes_per_record:,.0f} B",
        ]
    if g.history:
        h = g.history
        named: list[tuple[str, Sequence[str]]] = [
            ("fill (INSERT ... generate_series, VACUUM)", [f"{lvl.fill_seconds:.1f} s" for lvl in h]),
            ("Postgres disk (tasks + indexes)", [f"{lvl.disk_bytes / 2**20:,.0f} MB" for lvl in h]),
            ("Postgres disk per final row", [f"{lvl.disk_bytes_per_row:,.0f} B" for lvl in h]),
            ("GET /api/task/{id} from Postgres p99", [_ms(lvl.get_postgres, "p99") for lvl in h]),
        ]
        for i, timed in enumerate(h[0].endpoints):
            named.append(
                (f"dashboard {_endpoint(timed.name)} p95", [_ms(lvl.endpoints[i].latency, "p95") for lvl in h])
            )
        for i, timed in enumerate(h[0].history_sql):
            named.append((f"history SQL {timed.name} p95", [_ms(lvl.history_sql[i].latency, "p95") for lvl in h]))
        lines += ["", *_grid("final rows in Postgres", [f"{lvl.rows:,}" for lvl in h], named)]
    lines += ["", "| goal | wanted | met |", "|---|---|---|"]
    lines += [f"| {goal.what} | {goal.wanted} | {'yes' if goal.met else 'NO'} |" for goal in goals(g)]
    return "\n".join(lines)


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated whole numbers, e.g. 0,10000") from exc
    if not levels or any(n < 0 for n in levels) or levels != sorted(levels):
        raise argparse.ArgumentTypeError(f"{text!r}: levels from small to large, none negative")
    return levels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=_levels, default=list(DEPTHS), help="queue depths, e.g. 0,10000")
    parser.add_argument("--rows", type=_levels, default=list(ROWS), help="final rows in Postgres, e.g. 0,100000")
    parser.add_argument("--seconds", type=int, default=Options.seconds, help="each wrk phase")
    parser.add_argument("--samples", type=int, default=Options.samples, help="GETs of a task per figure and level")
    parser.add_argument("--drain-workers", type=int, default=Options.drain_workers)
    parser.add_argument("--concurrency", type=int, default=Options.concurrency, help="WORKER_CONCURRENCY")
    parser.add_argument(
        "--requests", type=int, default=Options.requests, help="of each dashboard endpoint and history query per level"
    )
    args = parser.parse_args(argv)
    growth = run(
        Options(
            depths=args.depths,
            rows=args.rows,
            seconds=args.seconds,
            samples=args.samples,
            drain_workers=args.drain_workers,
            concurrency=args.concurrency,
            requests=args.requests,
        )
    )
    result = asdict(growth)
    result["goals"] = [asdict(goal) for goal in goals(growth)]
    path = write_report(result, "growth")
    print()
    print(table(growth))
    print(f"\n{growth.seconds} s in all; written to {path.relative_to(ROOT)}")
    return 0
