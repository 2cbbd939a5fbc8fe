"""Data for the growth bench (benchmarks/growth.py): a deep queue filled through the public bulk
API, and a large history of final rows written straight into Postgres.

The queue is filled with `POST /api/tasks` (1,000 small `echo` tasks a request, a few requests in
flight), so every queued record is what the gateway writes, in whatever encoding it uses today.
History is bench-only data: one `INSERT ... SELECT generate_series` per million rows of realistic
final `echo` records (1 in 100 failed), timestamps spread evenly over HISTORY_DAYS and ids
time-ordered like UUIDv7 (48 bits of epoch ms, version 7, then md5-derived bits), so the primary
key grows at its right edge as it does for ids minted at submission.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import orjson

from core.models import BULK_MAX

#: How many bulk requests are in flight at once while filling the queue (2 gateways on 2 cores).
FILL_REQUESTS_IN_FLIGHT = 4
#: The span the history covers: inside the default RETENTION_DAYS (30), so a retention pass of the
#: bench's own stack would not prune rows the bench is about to measure.
HISTORY_DAYS = 28
#: Rows a single INSERT writes.
ROWS_PER_STATEMENT = 1_000_000
#: Every history row's worker_id ends so: the rows the bench samples its Postgres reads from.
FILL_WORKER_SUFFIX = "-growth"

ECHO_DATA = {"message": "hello"}

_FILL_SQL = """
INSERT INTO tasks (id, type, data, status, created_at, started_at, completed_at, processing_time,
                   worker_id, result, error, attempts, writes, persisted_at, priority)
SELECT (lpad(to_hex((extract(epoch FROM g.at) * 1000)::bigint), 12, '0')
        || '7' || substr(g.h, 1, 3) || '8' || substr(g.h, 4, 15))::uuid,
       'echo', '{"message": "hello"}'::jsonb,
       CASE WHEN g.failed THEN 'failed' ELSE 'completed' END,
       g.at, g.at + interval '2 ms', g.at + interval '3 ms', 0.0004,
       'worker-service-' || (1 + g.i % 2) || $5::text,
       CASE WHEN g.failed THEN NULL ELSE '{"echo": {"message": "hello"}}'::jsonb END,
       CASE WHEN g.failed THEN 'ValueError: bench failure' END,
       CASE WHEN g.failed THEN 3 ELSE 1 END,
       1, g.at + interval '15 ms', 'normal'
FROM (SELECT i,
             $3::timestamptz + make_interval(secs => i * $4::double precision) AS at,
             i % 100 = 0 AS failed,
             md5(i::text) AS h
      FROM generate_series($1::bigint, $2::bigint) AS i) AS g
"""

_SAMPLE_SQL = """
SELECT id::text FROM tasks TABLESAMPLE SYSTEM ($1::real)
WHERE worker_id LIKE '%' || $2::text
LIMIT $3
"""

# The table's whole footprint, its indexes and TOAST included; summed over its partitions when it
# has them (a partitioned parent's own size is 0, and a plain table has no partition tree).
_DISK_SQL = """
SELECT greatest(pg_total_relation_size('tasks'::regclass),
                (SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree('tasks'::regclass)))
"""


def bulk_body(count: int = BULK_MAX) -> bytes:
    """One `POST /api/tasks` body of `count` small echo tasks."""
    return orjson.dumps({"tasks": [{"type": "echo", "data": ECHO_DATA}] * count})


async def fill_queue(lb: str, tasks: int, keep_every: int = 100) -> list[str]:
    """Submit `tasks` echo tasks through the load balancer in bulk; returns every `keep_every`-th id
    accepted (ids to read back while they wait)."""
    full = bulk_body()
    kept: list[str] = []
    remaining = tasks

    async def sender(client: httpx.AsyncClient) -> None:
        nonlocal remaining
        while remaining > 0:
            count = min(BULK_MAX, remaining)
            remaining -= count
            body = full if count == BULK_MAX else bulk_body(count)
            response = await client.post(
                "/api/tasks", content=body, headers={"content-type": "application/json"}, timeout=60
            )
            if response.status_code != 202:
                raise RuntimeError(f"POST /api/tasks answered {response.status_code}: {response.text[:300]}")
            kept.extend(orjson.loads(response.content)["task_ids"][::keep_every])

    async with httpx.AsyncClient(base_url=lb) as client:
        await asyncio.gather(*(sender(client) for _ in range(FILL_REQUESTS_IN_FLIGHT)))
    return kept


@dataclass
class History:
    """The bench's history rows: how many exist, and the span their timestamps are spread over."""

    database_url: str
    #: the most rows any level will hold: the timestamps' spacing is taken from it
    most: int
    rows: int = 0
    begins: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(days=HISTORY_DAYS))
    #: ids read once already (a read from Postgres puts the record in Redis: never read twice)
    read: set[str] = field(default_factory=set)

    @property
    def step_seconds(self) -> float:
        return HISTORY_DAYS * 86400 / max(self.most, 1)

    async def fill_to(self, rows: int) -> float:
        """Insert rows up to `rows` in all, ROWS_PER_STATEMENT at a time; seconds taken, VACUUM
        included: history weeks old was vacuumed long ago (its hint bits and visibility map set),
        and an autovacuum of the fresh rows must not run through the measurements."""
        conn = await asyncpg.connect(self.database_url)
        try:
            began = asyncio.get_running_loop().time()
            while self.rows < rows:
                last = min(rows, self.rows + ROWS_PER_STATEMENT)
                await conn.execute(
                    _FILL_SQL, self.rows, last - 1, self.begins, self.step_seconds, FILL_WORKER_SUFFIX, timeout=None
                )
                self.rows = last
            await conn.execute("VACUUM (ANALYZE) tasks", timeout=None)
            return asyncio.get_running_loop().time() - began
        finally:
            await conn.close()

    async def fresh_ids(self, count: int) -> list[str]:
        """`count` ids of history rows never read before, from pages spread over the table."""
        conn = await asyncpg.connect(self.database_url)
        try:
            found: list[str] = []
            share = min(100.0, 100.0 * 4 * count / max(self.rows, 1))
            for _ in range(8):
                rows = await conn.fetch(_SAMPLE_SQL, share, FILL_WORKER_SUFFIX, 20 * count)
                fresh = [r["id"] for r in rows if r["id"] not in self.read]
                random.shuffle(fresh)
                found = fresh[:count]
                if len(found) == count:
                    break
                share = min(100.0, share * 4)
            self.read.update(found)
            return found
        finally:
            await conn.close()

    async def disk(self) -> tuple[int, int]:
        """(bytes the tasks table takes with its indexes, rows it holds)."""
        conn = await asyncpg.connect(self.database_url)
        try:
            size = int(await conn.fetchval(_DISK_SQL))
            count = int(await conn.fetchval("SELECT count(*) FROM tasks", timeout=None))
            return size, count
        finally:
            await conn.close()

    async def truncate(self) -> None:
        """Empty the table (the drain's rows), so the history levels start from nothing."""
        conn = await asyncpg.connect(self.database_url)
        try:
            await conn.execute("TRUNCATE tasks")
            self.rows = 0
            self.read.clear()
        finally:
            await conn.close()
