"""Retention: old final tasks leave Postgres batch by batch, their ids answer 410 "expired".

A clock the test controls (the prune pass takes `now`; ids are made at chosen times), a real
PostgreSQL and Redis (tests/inprocess/servers.py), the apps in this process."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from core import db
from core.models import TaskRecord, TaskStatus, new_task_id, new_task_ids
from core.retention import Pruner, prune
from core.timeutil import now
from tests.inprocess.apps import MARKS, eventually, serving
from tests.inprocess.servers import Servers

pytestmark = MARKS

DAY = timedelta(days=1)
#: The controlled "now" of the prune tests; the route tests use the real clock (the apps read it).
NOW = datetime(2030, 6, 1, tzinfo=UTC)


def v7(at: datetime) -> str:
    return new_task_ids(1, at_ms=round(at.timestamp() * 1000))[0]


def v4() -> str:
    """A random (version 4) id from before time-ordered ids, above every version 7 id of our times
    (most are: a version 7 id of 2030 begins with 01b)."""
    return "f" + str(uuid.uuid4())[1:]


def record(
    task_id: str, created: datetime, status: TaskStatus = TaskStatus.COMPLETED, completed: datetime | None = None
) -> TaskRecord:
    done = (completed or created + timedelta(seconds=1)) if status.is_final else None
    return TaskRecord(id=task_id, type="echo", status=status, created_at=created, completed_at=done)


async def insert(servers: Servers, *records: TaskRecord) -> None:
    async with servers.connect() as conn:
        await db.bulk_insert_tasks(conn, records)


async def ids_left(servers: Servers) -> set[str]:
    return {str(row["id"]) for row in await servers.pg("SELECT id FROM tasks")}


async def test_a_pass_prunes_old_final_tasks_only(servers: Servers, pool: asyncpg.Pool) -> None:
    old, recent = NOW - 40 * DAY, NOW - 5 * DAY
    gone = {
        "old completed": record(v7(old), old),
        "old failed": record(v7(old), old, TaskStatus.FAILED),
        "old cancelled": record(v7(old), old, TaskStatus.CANCELLED),
        # random ids from before time-ordered ids: most lie above the id range (the created_at
        # walk finds them), a few below it (the primary-key walk does)
        "old version 4": record(v4(), old),
        "old version 4, low id": record("00000000" + str(uuid.uuid4())[8:], old),
    }
    kept = {
        "old, still running": record(v7(old), old, TaskStatus.PROCESSING),
        "old, still queued (version 4)": record(v4(), old, TaskStatus.QUEUED),
        # scheduled far ahead: made before the window, completed inside it
        "old, completed recently": record(v7(old), old, completed=NOW - 2 * DAY),
        "old version 4, completed recently": record(v4(), old, completed=NOW - 2 * DAY),
        "recent": record(v7(recent), recent),
        "recent version 4": record(v4(), recent),
        "just inside the window": record(v7(NOW - 30 * DAY + timedelta(minutes=1)), NOW - 30 * DAY),
    }
    await insert(servers, *gone.values(), *kept.values())

    report = await prune(pool, NOW, 30, pause=0)

    left = await ids_left(servers)
    assert report.pruned == len(gone)
    assert not {name for name, task in gone.items() if task.id in left}
    assert {name for name, task in kept.items() if task.id not in left} == set()
    # Nothing is left to prune: a second pass deletes nothing.
    assert (await prune(pool, NOW, 30, pause=0)).pruned == 0
    # 0 keeps everything.
    assert (await prune(pool, NOW + 365 * DAY, 0, pause=0)).pruned == 0
    assert await ids_left(servers) == left


async def test_each_batch_reads_at_most_its_rows_and_pauses_between(servers: Servers, pool: asyncpg.Pool) -> None:
    old = NOW - 60 * DAY
    await insert(servers, *(record(v7(old + timedelta(seconds=i)), old) for i in range(250)))
    await insert(servers, *(record(v4(), old) for _ in range(120)))
    remaining: list[int] = []

    async def pause(seconds: float) -> None:
        # Called between batches: how many rows each batch left behind.
        assert seconds == 0.5
        remaining.append(len(await ids_left(servers)))

    report = await prune(pool, NOW, 30, batch_rows=100, pause=0.5, sleep=pause)

    assert report.pruned == 370
    # 250 ids below the cutoff's: 3 batches reading rows and one reading none; 120 by created_at:
    # 2 batches and one reading none.
    assert report.batches == 4 + 3
    assert remaining == [270, 170, 120, 20, 0]


async def test_pruned_ids_answer_410_fresh_ones_404(servers: Servers) -> None:
    real_now = now()
    old = real_now - 40 * DAY
    kept_old = record(v7(old), old, TaskStatus.PROCESSING)
    pruned = record(v7(old), old)
    await insert(servers, pruned, kept_old)
    token = {"Authorization": f"Bearer {servers.admin_token}"}
    async with serving(servers, "api-gateway") as gateway, serving(servers, "monitoring") as dashboard:
        assert (await gateway.get(f"/api/task/{pruned.id}")).status_code == 200
        async with asyncpg.create_pool(servers.database_url, min_size=1, max_size=1) as pg:
            assert (await prune(pg, real_now, 30, pause=0)).pruned == 1
        # The gateway cached the record in Redis when Postgres answered: its hot copy expires later.
        servers.redis.flushall()

        for path in (f"/api/task/{pruned.id}", f"/api/task/{pruned.id.upper()}", f"/api/task/{v7(old)}"):
            expired = await gateway.get(path)
            assert expired.status_code == 410, expired.text
            body = expired.json()
            assert body["error"] == "expired"
            assert "30 days" in body["detail"]
        waited = await gateway.get(f"/api/task/{pruned.id}", params={"wait": 5})
        assert waited.status_code == 410, waited.text
        cancelled = await gateway.delete(f"/api/task/{pruned.id}")
        assert cancelled.status_code == 410, cancelled.text
        at_dashboard = await dashboard.get(f"/api/tasks/{pruned.id}")
        assert at_dashboard.status_code == 410, at_dashboard.text
        assert at_dashboard.json()["error"] == "expired"
        assert (await dashboard.get(f"/api/tasks/{pruned.id}", headers=token)).status_code == 410

        # An old id that is still there answers; a missing id made inside the window, or a random
        # (version 4) id, was never pruned: 404.
        assert (await gateway.get(f"/api/task/{kept_old.id}")).json()["status"] == "processing"
        for missing in (new_task_id(), v7(real_now - 29 * DAY), str(uuid.uuid4())):
            response = await gateway.get(f"/api/task/{missing}")
            assert response.status_code == 404, (missing, response.text)
            assert response.json()["error"] == "not_found"
            assert (await dashboard.get(f"/api/tasks/{missing}")).status_code == 404
        # Malformed ids keep their 404.
        for odd in ("not-a-uuid", f"{{{pruned.id}}}", pruned.id.replace("-", ""), "1700000000000"):
            response = await gateway.get(f"/api/task/{odd}")
            assert response.status_code == 404, (odd, response.text)
            assert (await dashboard.get(f"/api/tasks/{odd}")).status_code == 404


async def test_with_retention_off_an_old_missing_id_is_404(servers: Servers) -> None:
    async with serving(servers, "api-gateway", RETENTION_DAYS="0") as gateway:
        response = await gateway.get(f"/api/task/{v7(now() - 400 * DAY)}")
        assert response.status_code == 404, response.text


async def test_the_reaper_leader_prunes_at_its_start(servers: Servers) -> None:
    # The worker's first prune pass runs once it leads, then one every PRUNE_INTERVAL_SECONDS.
    real_now = now()
    old, recent = real_now - 45 * DAY, real_now - DAY
    doomed, fresh = record(v7(old), old), record(v7(recent), recent)
    await insert(servers, doomed, fresh)
    async with serving(servers, "worker-service", RETENTION_DAYS="40"):

        async def pruned() -> bool:
            return doomed.id not in await ids_left(servers)

        await eventually(pruned, 20, "the leader's prune pass")
    assert fresh.id in await ids_left(servers)


async def test_a_pruner_runs_on_its_clock_and_survives_postgres_down(servers: Servers) -> None:
    clock = [NOW]
    created = NOW - 10 * DAY
    task = record(v7(created), created)
    await insert(servers, task)
    async with asyncpg.create_pool(servers.database_url, min_size=1, max_size=1) as pg:
        pruner = Pruner(pg, 30, interval=0.01, clock=lambda: clock[0])
        assert (await pruner.run_once()) is not None
        assert task.id in await ids_left(servers)
        clock[0] = NOW + 25 * DAY  # the task completed 35 days ago now
        pruner.tick()

        async def pruned() -> bool:
            return task.id not in await ids_left(servers)

        await eventually(pruned, 10, "the pruner's pass")
        await pruner.close()
    # The pool is closed: Postgres "unavailable". The pass logs it and the next one tries again.
    assert await pruner.run_once() is None
