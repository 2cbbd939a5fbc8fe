"""Cancel, delay and priorities through nginx on the native stack: cancelled tasks never run and
reach Postgres, delayed ones run on time, workers take high before normal before low, and all of
it holds across a killed worker and a Redis restart. The routes' cases in-process:
tests/inprocess/test_cancel_delay_priority.py."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from core import keys
from harness.stacks import Stack, wait_for

#: How late a delayed task may start after its time (the issue's bound).
ON_TIME = timedelta(seconds=1)


def _post(stack: Stack, body: dict[str, Any], path: str = "/api/task") -> dict[str, Any]:
    response = stack.http.post(path, json=body)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def _cancel(stack: Stack, task_id: str, running: bool = False) -> httpx.Response:
    return stack.http.delete(f"/api/task/{task_id}", params={"running": "true"} if running else None)


def _row(stack: Stack, task_id: str, timeout: float = 30) -> dict[str, Any]:
    rows = stack.task_rows("status, priority, run_at, started_at, worker_id, result, writes", [task_id], timeout)
    return dict(rows[0])


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _start(stack: Stack, names: list[str]) -> None:
    """Start the paused workers `names`, and wait until each heartbeats."""
    for name in names:
        stack.supervisor.start(name)
    wait_for(lambda: len(stack.heartbeats()) == len(names), 30, f"{len(names)} live workers")


def _on_time(task: dict[str, Any]) -> timedelta:
    """How long after its time a delayed task started (asserting it did not start before)."""
    due, started = _when(task["run_at"]), _when(task["started_at"])
    assert started >= due, f"started {due - started} early"
    return started - due


# -- cancel ---------------------------------------------------------------------------------------


def test_a_queued_task_cancelled_never_runs_and_is_committed_as_cancelled(
    stack: Stack, workers_paused: list[str]
) -> None:
    cancelled_before = int(stack.redis.hget(keys.SINGLE.stats, keys.STAT_CANCELLED) or 0)
    task_id = stack.submit("echo", {"cancel": "me"})
    kept = stack.submit("echo", {"cancel": "not me"})
    response = _cancel(stack, task_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "cancelled"
    assert body["started_at"] is None
    assert stack.task(task_id)["status"] == "cancelled"
    # Once more: the same cancelled record, counted once.
    again = _cancel(stack, task_id)
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "cancelled"
    assert int(stack.redis.hget(keys.SINGLE.stats, keys.STAT_CANCELLED) or 0) == cancelled_before + 1

    _start(stack, workers_paused)
    assert stack.wait_status(kept, {"completed"})["result"] == {"echo": {"cancel": "not me"}}
    row = _row(stack, task_id)
    assert row["status"] == "cancelled"
    assert row["started_at"] is None
    assert row["worker_id"] is None
    assert row["result"] is None
    assert row["writes"] == 1
    final = stack.task(task_id)
    assert final["status"] == "cancelled"
    assert final["started_at"] is None
    # Final: a completed task cannot be cancelled, and a cancelled one never turns completed.
    refused = _cancel(stack, kept)
    assert refused.status_code == 409, refused.text
    assert "completed" in refused.json()["detail"]


@pytest.mark.usefixtures("restores_stack")
def test_a_running_sleep_is_409_unless_asked_and_then_stops_quickly(stack: Stack) -> None:
    task_id = stack.submit("sleep", {"ms": 30_000})
    stack.wait_status(task_id, {"processing"}, timeout=15)
    refused = _cancel(stack, task_id)
    assert refused.status_code == 409, refused.text
    assert "running=true" in refused.json()["detail"]
    asked = time.monotonic()
    response = _cancel(stack, task_id, running=True)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "processing"
    done = stack.wait_status(task_id, {"cancelled", "completed", "failed"}, timeout=10)
    took = time.monotonic() - asked
    print(f"\n[cancel running] DELETE ?running=true -> cancelled in {took * 1000:.0f} ms")
    assert done["status"] == "cancelled"
    assert done["error"] == "cancelled by a client while it ran"
    assert took < 2  # far sooner than the 30 s sleep
    row = _row(stack, task_id)
    assert row["status"] == "cancelled"
    assert row["started_at"] is not None  # it did start: it was stopped, not skipped
    assert row["writes"] == 1
    # Not parked for a retry: it stays cancelled.
    assert stack.redis.zscore(keys.SINGLE.delayed, task_id) is None


# -- delay ----------------------------------------------------------------------------------------


def test_delay_seconds_runs_no_earlier_than_due_and_within_a_second(stack: Stack) -> None:
    accepted = _post(stack, {"type": "echo", "data": {"delay": 2}, "delay_seconds": 2})
    assert accepted["status"] == "scheduled"
    task_id = accepted["task_id"]
    stored = stack.task(task_id)
    assert stored["status"] == "scheduled"
    assert timedelta(seconds=1.9) < _when(stored["run_at"]) - _when(stored["created_at"]) < timedelta(seconds=2.1)
    done = stack.wait_status(task_id, {"completed", "failed", "cancelled"}, timeout=15)
    assert done["status"] == "completed"
    late = _on_time(done)
    print(f"\n[delay] delay_seconds=2 started {late.total_seconds() * 1000:.0f} ms after its time")
    assert late < ON_TIME
    row = _row(stack, task_id)
    assert row["status"] == "completed"
    assert row["run_at"] == _when(stored["run_at"])


def test_run_at_runs_no_earlier_than_its_time_and_within_a_second(stack: Stack) -> None:
    due = datetime.now(UTC) + timedelta(seconds=2)
    text = due.isoformat().replace("+00:00", "Z")
    accepted = _post(stack, {"type": "echo", "data": {"at": text}, "run_at": text})
    assert accepted["status"] == "scheduled"
    done = stack.wait_status(accepted["task_id"], {"completed", "failed", "cancelled"}, timeout=15)
    assert done["status"] == "completed"
    assert abs(_when(done["run_at"]) - due) < timedelta(milliseconds=1)
    assert _on_time(done) < ON_TIME


def test_bulk_takes_a_delay_per_task(stack: Stack) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
    tasks = [
        {"type": "echo", "data": {"i": 0}, "delay_seconds": 1},
        {"type": "echo", "data": {"i": 1}},
        {"type": "echo", "data": {"i": 2}, "delay_seconds": 2.5},
        {"type": "echo", "data": {"i": 3}, "run_at": soon},
    ]
    body = _post(stack, {"tasks": tasks}, "/api/tasks")
    ids = body["task_ids"]
    assert "3 scheduled" in body["message"], body["message"]
    results = stack.wait_all_final(ids, timeout=20)
    done = [results[i] for i in ids]
    assert [d["status"] for d in done] == ["completed"] * 4
    assert done[1]["run_at"] is None
    for i in (0, 2, 3):
        assert _on_time(done[i]) < ON_TIME, done[i]
    started = {i: _when(done[i]["started_at"]) for i in range(4)}
    # Each waited for its own time: the immediate one first, the 2.5 s one last.
    assert started[1] < started[0] < started[3] < started[2]
    created = _when(done[0]["created_at"])
    assert started[2] - created >= timedelta(seconds=2.5)


# -- priorities -----------------------------------------------------------------------------------


def test_one_worker_takes_every_high_before_normal_before_low(stack: Stack, workers_paused: list[str]) -> None:
    before = stack.http.get("/api/status").json()["metrics"]["queue_length"]
    order = ["low", "normal", "high"] * 30
    tasks = [{"type": "echo", "data": {"i": i}, "priority": p} for i, p in enumerate(order)]
    body = _post(stack, {"tasks": tasks}, "/api/tasks")
    ids: list[str] = body["task_ids"]
    # Every priority counts in the queue length the API (and the scaling policy) sees.
    after = stack.http.get("/api/status").json()["metrics"]["queue_length"]
    assert after - before == 90
    assert [stack.redis.llen(name) >= 30 for name in keys.SINGLE.queues] == [True, True, True]

    _start(stack, workers_paused[:1])
    results = stack.wait_all_final(ids, timeout=60)
    started = {
        p: [_when(results[i]["started_at"]) for i, q in zip(ids, order, strict=True) if q == p]
        for p in ("high", "normal", "low")
    }
    print(
        "\n[priority] last high "
        f"{(max(started['high']) - min(started['high'])).total_seconds() * 1000:.0f} ms after the first; "
        f"normal {(min(started['normal']) - max(started['high'])).total_seconds() * 1000:.1f} ms later"
    )
    assert max(started["high"]) <= min(started["normal"])
    assert max(started["normal"]) <= min(started["low"])
    rows = stack.task_rows("id::text, priority, status", ids, 30)
    assert {(r["id"], r["priority"]) for r in rows} == set(zip(ids, order, strict=True))
    assert {r["status"] for r in rows} == {"completed"}


# -- reliability ----------------------------------------------------------------------------------


def test_a_high_task_whose_worker_is_killed_is_requeued_high_and_completes(
    stack: Stack, workers_paused: list[str]
) -> None:
    """One worker runs the high task and is killed; supervisord restarts it, and the new process
    fills its slots with long normal sleeps before the reaper finds the dead one's claim: the task
    then waits in the high list, where the next free slot takes it."""
    worker = workers_paused[0]
    _start(stack, [worker])
    concurrency = int(stack.heartbeats()[0]["concurrency"])
    task_id = _post(stack, {"type": "sleep", "data": {"ms": 2500}, "priority": "high"})["task_id"]
    running = stack.wait_status(task_id, {"processing"}, timeout=15)
    assert stack.program_of_worker(running["worker_id"]) == worker
    old = stack.kill(worker, signal.SIGKILL)
    sleepers = _post(stack, {"tasks": [{"type": "sleep", "data": {"ms": 60_000}}] * concurrency}, "/api/tasks")
    stack.wait_running(worker, replacing=old)

    wait_for(lambda: task_id in stack.redis.lrange(keys.SINGLE.queue_high, 0, -1), 20, "the task back in the high list")
    requeued = stack.task(task_id)
    assert requeued["status"] == "queued"
    assert "died" in (requeued["error"] or "")
    assert requeued["priority"] == "high"
    # Free the slots: the high task is the next one taken.
    for sleeper in sleepers["task_ids"]:
        assert _cancel(stack, sleeper, running=True).status_code in (200, 202)
    done = stack.wait_status(task_id, {"completed", "failed", "cancelled"}, timeout=20)
    assert done["status"] == "completed"
    assert done["attempts"] == 2
    assert done["result"] == {"slept_ms": 2500}
    row = _row(stack, task_id)
    assert (row["status"], row["priority"], row["writes"]) == ("completed", "high", 1)
    assert {r["status"] for r in stack.task_rows("status", sleepers["task_ids"], 30)} == {"cancelled"}


def test_scheduled_and_cancelled_tasks_survive_a_redis_restart(stack: Stack, workers_paused: list[str]) -> None:
    scheduled = _post(stack, {"type": "echo", "data": {"survives": "restart"}, "delay_seconds": 6})
    assert scheduled["status"] == "scheduled"
    queued = stack.submit("echo", {"cancelled": "queued"})
    later = _post(stack, {"type": "echo", "data": {"cancelled": "scheduled"}, "delay_seconds": 3})["task_id"]
    for task_id in (queued, later):
        response = _cancel(stack, task_id)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"

    stack.supervisor.stop("redis")
    stack.supervisor.start("redis")
    # No worker runs, so /api/status stays 503; its Redis line says when the gateways reconnected.
    wait_for(lambda: stack.http.get("/api/status").json()["redis"] == "healthy", 30, "the gateways' Redis")
    assert stack.task(scheduled["task_id"])["status"] == "scheduled"
    assert stack.redis.zscore(keys.SINGLE.scheduled, scheduled["task_id"]) is not None
    assert [stack.task(i)["status"] for i in (queued, later)] == ["cancelled", "cancelled"]
    _start(stack, workers_paused)

    done = stack.wait_status(scheduled["task_id"], {"completed", "failed", "cancelled"}, timeout=20)
    assert done["status"] == "completed"
    assert _on_time(done) < ON_TIME
    for task_id in (queued, later):
        row = _row(stack, task_id)
        assert (row["status"], row["started_at"], row["writes"]) == ("cancelled", None, 1)
        assert stack.task(task_id)["status"] == "cancelled"


# -- bad input ------------------------------------------------------------------------------------

_LATER = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"priority": "urgent"}, "priority"),
        ({"priority": 2}, "priority"),
        ({"priority": None}, "priority"),
        ({"delay_seconds": "soon"}, "delay_seconds"),
        ({"delay_seconds": 0}, "delay_seconds"),
        ({"delay_seconds": -1}, "delay_seconds"),
        ({"delay_seconds": 10**9}, "delay_seconds"),
        ({"delay_seconds": [1]}, "delay_seconds"),
        ({"run_at": "next tuesday"}, "run_at"),
        ({"run_at": "2030-01-01T00:00:00"}, "run_at"),
        ({"run_at": "9999-01-01T00:00:00Z"}, "run_at"),
        ({"run_at": 1_900_000_000}, "run_at"),
        ({"run_at": _LATER, "delay_seconds": 5}, None),
    ],
)
def test_bad_priority_and_schedule_are_422_through_nginx(
    stack: Stack, extra: dict[str, Any], field: str | None
) -> None:
    accepted = int(stack.redis.hget(keys.SINGLE.stats, keys.STAT_ACCEPTED) or 0)
    for path, body, where in (
        ("/api/task", {"type": "echo", **extra}, ["body"]),
        ("/api/tasks", {"tasks": [{"type": "echo"}, {"type": "echo", **extra}]}, ["body", "tasks", 1]),
    ):
        response = stack.http.post(path, json=body)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/json")
        answer = response.json()
        assert answer["error"] == "validation_error"
        locs = [e["loc"] for e in answer["detail"]]
        assert [*where, field] in locs if field else any(loc[: len(where)] == where for loc in locs), locs
    assert int(stack.redis.hget(keys.SINGLE.stats, keys.STAT_ACCEPTED) or 0) == accepted


@pytest.mark.parametrize("running", ["notabool", "2", ""])
def test_bad_running_flag_on_delete_is_422_through_nginx(stack: Stack, running: str) -> None:
    task_id = _post(stack, {"type": "echo", "delay_seconds": 60})["task_id"]
    response = stack.http.delete(f"/api/task/{task_id}", params={"running": running})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert [e["loc"] for e in response.json()["detail"]] == [["query", "running"]]
    # Refused before anything happened: it still waits, and a good request cancels it.
    assert stack.task(task_id)["status"] == "scheduled"
    assert _cancel(stack, task_id).json()["status"] == "cancelled"


def test_cancel_of_unknown_and_malformed_ids_is_404_json(stack: Stack) -> None:
    for task_id in ("not-an-id", "00000000-0000-4000-8000-000000000000"):
        for running in (False, True):
            response = _cancel(stack, task_id, running)
            assert response.status_code == 404, response.text
            assert response.headers["content-type"].startswith("application/json")
