"""The database schema, its migrations and every SQL statement the services run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from core.models import TaskRecord, TaskStatus

# Ordered and append-only: a migration, once released, is never edited.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE tasks (
        id              uuid PRIMARY KEY,
        type            text NOT NULL,
        data            jsonb NOT NULL DEFAULT '{}'::jsonb,
        status          text NOT NULL,
        created_at      timestamptz NOT NULL,
        started_at      timestamptz,
        completed_at    timestamptz,
        processing_time double precision,
        worker_id       text,
        result          jsonb,
        error           text,
        attempts        integer NOT NULL DEFAULT 0,
        -- how many times a final record was written for this id: 1 unless a duplicate slipped in
        writes          integer NOT NULL DEFAULT 1,
        persisted_at    timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX tasks_status_idx ON tasks (status);
    CREATE INDEX tasks_created_at_idx ON tasks (created_at DESC);
    """,
    # The dashboard's history filters: newest rows of one type or one status, read off an index.
    """
    CREATE INDEX IF NOT EXISTS tasks_type_created_at_idx ON tasks (type, created_at DESC);
    CREATE INDEX IF NOT EXISTS tasks_status_created_at_idx ON tasks (status, created_at DESC);
    """,
    # 3: the autoscaler's decisions, with the inputs and reasons behind each.
    """
    CREATE TABLE scaling_decisions (
        id         bigserial PRIMARY KEY,
        at         timestamptz NOT NULL,
        mode       text NOT NULL,
        from_workers integer NOT NULL,
        to_workers integer NOT NULL,
        applied    boolean NOT NULL,
        reasons    jsonb NOT NULL,
        inputs     jsonb NOT NULL
    );
    CREATE INDEX scaling_decisions_at_idx ON scaling_decisions (at DESC);
    """,
    # 4: a task's priority and the time it was scheduled for.
    """
    ALTER TABLE tasks ADD COLUMN priority text NOT NULL DEFAULT 'normal';
    ALTER TABLE tasks ADD COLUMN run_at timestamptz;
    """,
)

# Any constant will do: it serialises concurrent migrators (e.g. two stacks racing at start).
_MIGRATION_LOCK = 7_245_113

#: What the driver raises when Postgres is down or unreachable (as opposed to a bad query).
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    # "terminating connection due to administrator command", "the database system is starting up"
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.InterfaceError,
)

_TASK_COLUMNS = (
    "id, type, data, status, created_at, started_at, completed_at, processing_time, worker_id, result, error,"
    " attempts, priority, run_at"
)


_SCHEMA_VERSION = "SELECT coalesce(max(version), 0) FROM schema_migrations"


async def schema_version(conn: asyncpg.Connection) -> int:
    """The newest migration applied: 0 before the first (no schema_migrations table yet)."""
    try:
        return int(await conn.fetchval(_SCHEMA_VERSION))
    except asyncpg.UndefinedTableError:
        return 0


async def migrate(conn: asyncpg.Connection) -> int:
    """Apply pending migrations; returns the schema version. Safe to run concurrently."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await conn.fetchval(_SCHEMA_VERSION)
        for version, sql in enumerate(MIGRATIONS, start=1):
            if version > current:
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
    return len(MIGRATIONS)


# Statements are composed from the constants above only, never from input.
_SELECT_ONE = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = $1"
_SELECT_MANY = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ANY($1::uuid[])"
# One statement for the whole batch: the records travel as one JSON array, serialised in one call
# (pydantic-core), and Postgres turns it into rows itself: no per-value encoding in Python, one
# parse and plan, and per row only the insert, as COPY does.
_BATCH_ROWS = f"""
INSERT INTO tasks ({_TASK_COLUMNS})
SELECT {_TASK_COLUMNS}
FROM jsonb_to_recordset($1::text::jsonb) AS batch (
    id uuid, type text, data jsonb, status text, created_at timestamptz, started_at timestamptz,
    completed_at timestamptz, processing_time double precision, worker_id text, result jsonb,
    error text, attempts integer, priority text, run_at timestamptz)
"""
# A completed row is never overwritten: at-least-once delivery may write twice, the row stays one.
_UPSERT = f"""{_BATCH_ROWS}
ON CONFLICT (id) DO UPDATE SET
    status = EXCLUDED.status,
    started_at = EXCLUDED.started_at,
    completed_at = EXCLUDED.completed_at,
    processing_time = EXCLUDED.processing_time,
    worker_id = EXCLUDED.worker_id,
    result = EXCLUDED.result,
    error = EXCLUDED.error,
    attempts = EXCLUDED.attempts,
    writes = tasks.writes + 1,
    persisted_at = now()
WHERE tasks.status <> 'completed'
"""


async def upsert_tasks(pool: asyncpg.Pool, tasks: Sequence[TaskRecord]) -> None:
    """Persist final records in one statement (so one transaction); callers acknowledge only
    after this returns."""
    await upsert_records(pool, [(t.id, t.model_dump_json()) for t in tasks])


async def upsert_records(pool: asyncpg.Pool, records: Sequence[tuple[str, str]]) -> None:
    """upsert_tasks() of records already encoded: (id, TaskRecord JSON) pairs. The worker encodes
    a final record once, for Redis, and sends the same text here."""
    if not records:
        return
    # One row per id: a statement may not update the same row twice. The latest record wins.
    unique = dict(records)
    await pool.execute(_UPSERT, _json_array(unique.values()))


def _json_array(records: Iterable[str]) -> str:
    return "[" + ",".join(records) + "]"


def _record(row: asyncpg.Record) -> TaskRecord:
    values = dict(row)
    values["id"] = str(values["id"])
    return TaskRecord.model_validate(values)


async def fetch_task(pool: asyncpg.Pool, task_id: str) -> TaskRecord | None:
    row = await pool.fetchrow(_SELECT_ONE, task_id)
    return _record(row) if row else None


async def fetch_tasks(pool: asyncpg.Pool, task_ids: Sequence[str]) -> list[TaskRecord]:
    if not task_ids:
        return []
    rows = await pool.fetch(_SELECT_MANY, list(task_ids))
    return [_record(r) for r in rows]


async def ping(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval("SELECT 1"))


async def ensure_database(admin_dsn: str, name: str) -> None:
    """Create the application database if missing (native mode; Compose's image does this itself)."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"unsafe database name {name!r}")
    conn = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


# -- Dashboard history (monitoring) -----------------------------------------------------------
# Every statement ends in LIMIT and is served by an index: the newest rows by created_at (or by
# (type, created_at) / (status, created_at)), or a primary-key range for an id prefix. The cost
# does not grow with the table. Statements are composed from the constant fragments below only.

_HISTORY_SELECT = f"SELECT {_TASK_COLUMNS} FROM tasks"
_BY_STATUS = "status = ${n}"
_BY_TYPE = "type = ${n}"
_BY_ID_RANGE = "id BETWEEN ${n}::uuid AND ${m}::uuid"


async def list_tasks(
    pool: asyncpg.Pool,
    *,
    limit: int,
    status: str | None = None,
    task_type: str | None = None,
    id_range: tuple[str, str] | None = None,
) -> list[TaskRecord]:
    """The newest `limit` persisted tasks matching the filters (ids in a range: lowest ids first)."""
    conditions: list[str] = []
    args: list[Any] = []
    if status is not None:
        args.append(status)
        conditions.append(_BY_STATUS.format(n=len(args)))
    if task_type is not None:
        args.append(task_type)
        conditions.append(_BY_TYPE.format(n=len(args)))
    if id_range is not None:
        args.extend(id_range)
        conditions.append(_BY_ID_RANGE.format(n=len(args) - 1, m=len(args)))
    args.append(limit)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    # An id prefix walks the primary key (bounded by LIMIT); the rest walk a created_at index.
    order = " ORDER BY id" if id_range is not None else " ORDER BY created_at DESC"
    rows = await pool.fetch(f"{_HISTORY_SELECT}{where}{order} LIMIT ${len(args)}", *args)
    return [_record(r) for r in rows]


async def bulk_insert_tasks(conn: asyncpg.Connection, tasks: Sequence[TaskRecord]) -> None:
    """Insert many new final records in one statement (the dashboard benchmark fills history with it)."""
    await conn.execute(_BATCH_ROWS, _json_array(t.model_dump_json() for t in tasks))


# -- Retention: final tasks older than RETENTION_DAYS leave, a short statement at a time --------
# Each statement reads at most `limit` rows of one index range, from where the previous batch
# stopped (a keyset: a row that stays is read once per pass, not once per batch), and deletes
# those among them that are final and completed before the cutoff; the DELETE rechecks both on the
# row it locks, so a record rewritten meanwhile is judged as it is now. Version 7 ids are
# time-ordered: every id made before the cutoff sorts below the cutoff's lowest id, so they are one
# primary-key range, read in the order they were written.

_PRUNE_BY_ID = """
WITH scanned AS (
    SELECT id FROM tasks WHERE id > $1::uuid AND id < $2::uuid ORDER BY id LIMIT $3
), pruned AS (
    DELETE FROM tasks USING scanned
    WHERE tasks.id = scanned.id AND tasks.status = ANY($4::text[]) AND tasks.completed_at < $5
    RETURNING 1
)
SELECT (SELECT id FROM scanned ORDER BY id DESC LIMIT 1) AS last_id, NULL::timestamptz AS last_at,
       (SELECT count(*) FROM pruned) AS pruned
"""
# Random (version 4) ids, made before ids were time-ordered, lie anywhere in the id space: those
# above the range are walked by created_at (a task completes after it is created, so only a row
# created before the cutoff can go), in (created_at, id) order.
_PRUNE_BY_CREATED_AT = """
WITH scanned AS (
    SELECT id, created_at FROM tasks
    WHERE created_at >= $6 AND created_at < $5 AND (created_at > $6 OR id > $1::uuid) AND id >= $2::uuid
    ORDER BY created_at, id LIMIT $3
), pruned AS (
    DELETE FROM tasks USING scanned
    WHERE tasks.id = scanned.id AND tasks.status = ANY($4::text[]) AND tasks.completed_at < $5
    RETURNING 1
)
SELECT last.id AS last_id, last.created_at AS last_at, (SELECT count(*) FROM pruned) AS pruned
FROM (SELECT NULL) AS one LEFT JOIN LATERAL (
    SELECT id, created_at FROM scanned ORDER BY created_at DESC, id DESC LIMIT 1
) AS last ON true
"""

#: Below every id: where a walk of the primary key starts.
LOWEST_ID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class PruneStep:
    """Where a prune walk stands after one batch: the last row it read, and how many it deleted."""

    #: None: the batch read no row, the walk is over
    last_id: str | None
    #: the walk by created_at: the last row's created_at (None in the primary-key walk)
    last_at: datetime | None
    pruned: int


def _step(row: asyncpg.Record) -> PruneStep:
    last_id = row["last_id"]
    return PruneStep(None if last_id is None else str(last_id), row["last_at"], int(row["pruned"]))


async def prune_id_range(
    pool: asyncpg.Pool, *, after_id: str, below_id: str, cutoff: datetime, statuses: Sequence[str], limit: int
) -> PruneStep:
    """One short transaction of the primary-key walk: of the next `limit` ids after `after_id` and
    below `below_id`, delete the rows whose status is one of `statuses`, completed before `cutoff`."""
    return _step(await pool.fetchrow(_PRUNE_BY_ID, after_id, below_id, limit, list(statuses), cutoff))


async def prune_created_range(
    pool: asyncpg.Pool,
    *,
    after: tuple[datetime, str],
    from_id: str,
    cutoff: datetime,
    statuses: Sequence[str],
    limit: int,
) -> PruneStep:
    """One short transaction of the created_at walk: of the next `limit` rows after `after`
    (created_at, id) that were created before `cutoff` and whose ids are `from_id` or above, delete
    those whose status is one of `statuses`, completed before `cutoff`."""
    after_at, after_id = after
    return _step(await pool.fetchrow(_PRUNE_BY_CREATED_AT, after_id, from_id, limit, list(statuses), cutoff, after_at))


# -- Load test and scenarios: what became of the tasks a client was told were accepted ---------
# One statement over all the ids (a LEFT JOIN of the id array): a run with 100,000 accepted ids is
# still one round trip, and an id with no row at all is counted, not skipped.

_OUTCOMES = """
SELECT count(*) FILTER (WHERE t.status = 'completed') AS completed,
       count(*) FILTER (WHERE t.status = 'failed') AS failed,
       count(*) FILTER (WHERE t.status = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE t.writes > 1) AS duplicates
FROM unnest($1::uuid[]) AS accepted(id) LEFT JOIN tasks t ON t.id = accepted.id
"""


@dataclass(frozen=True)
class Outcomes:
    accepted: int
    completed: int
    failed: int
    #: tasks whose final record was written more than once (ran to the end twice)
    duplicates: int
    cancelled: int = 0

    @property
    def lost(self) -> int:
        """Accepted tasks with no final state in Postgres."""
        return self.accepted - self.completed - self.failed - self.cancelled


async def outcomes(conn: asyncpg.Connection, task_ids: Sequence[str]) -> Outcomes:
    """The final states in Postgres of distinct accepted task ids."""
    unique = sorted(set(task_ids))
    row = await conn.fetchrow(_OUTCOMES, unique)
    return Outcomes(
        len(unique), int(row["completed"]), int(row["failed"]), int(row["duplicates"]), int(row["cancelled"])
    )


# -- scaling decisions (the autoscaler) ---------------------------------------------------------


async def insert_decision(pool: asyncpg.Pool, decision: dict[str, Any]) -> None:
    await pool.execute(
        "INSERT INTO scaling_decisions (at, mode, from_workers, to_workers, applied, reasons, inputs)"
        " VALUES (to_timestamp($1), $2, $3, $4, $5, $6, $7)",
        decision["at"],
        decision["mode"],
        decision["from"],
        decision["to"],
        decision["applied"],
        decision["reasons"],
        decision["inputs"],
    )


# -- alerts (the dashboard's sampler) -----------------------------------------------------------

#: The per-type p95 reads the newest tasks created in the last 15 minutes, at most this many, off
#: the created_at index: bounded whatever the history (a task that waited longer before it finished
#: is not counted).
P95_ROWS_READ = 20_000

_P95_BY_TYPE = """
SELECT type, percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_time) AS p95, count(*) AS n
FROM (SELECT type, status, processing_time, completed_at FROM tasks
      WHERE created_at > now() - interval '15 minutes' ORDER BY created_at DESC LIMIT $2) recent
WHERE completed_at > now() - make_interval(secs => $1) AND status = ANY($3::text[])
      AND processing_time IS NOT NULL
GROUP BY type
"""


async def p95_by_type(pool: asyncpg.Pool, window_seconds: float, wait_seconds: float) -> dict[str, tuple[float, int]]:
    """type -> (p95 processing seconds, tasks) of the completed and failed tasks that finished in
    the last `window_seconds`; the query waits at most `wait_seconds`."""
    ran = [TaskStatus.COMPLETED.value, TaskStatus.FAILED.value]
    rows = await pool.fetch(_P95_BY_TYPE, window_seconds, P95_ROWS_READ, ran, timeout=wait_seconds)
    return {str(r["type"]): (float(r["p95"]), int(r["n"])) for r in rows}
