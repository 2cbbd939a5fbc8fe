"""Processes dying and stopping: nothing accepted is lost, and everything comes back by itself."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from core import keys
from harness.stacks import BaseStack, Stack, wait_for


def _running_on(stack: Stack, task_id: str) -> dict[str, object]:
    return stack.wait_status(task_id, {"processing"}, timeout=20)


@pytest.mark.usefixtures("restores_any_stack")
def test_worker_killed_mid_task_the_task_still_completes(any_stack: BaseStack) -> None:
    stack, control = any_stack, any_stack.control
    task_id = stack.submit("sleep", {"ms": 3000})
    running = stack.wait_status(task_id, {"processing"}, timeout=20)
    worker = control.owner_of(str(running["worker_id"]))
    requeued_before = int(stack.redis.hget(keys.SINGLE.stats, keys.STAT_REQUEUED) or 0)

    before = control.identity(worker)
    control.kill(worker, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(
        lambda: stack.task(task_id)["status"] != "processing" or stack.task(task_id)["attempts"] > 1,
        20,
        "the reaper to requeue the dead worker's task",
    )
    print(f"requeued {time.monotonic() - killed_at:.1f} s after kill -9")

    done = stack.wait_status(task_id, {"completed"}, timeout=30)
    assert done["attempts"] == 2
    assert done["result"] == {"slept_ms": 3000}
    assert int(stack.redis.hget(keys.SINGLE.stats, keys.STAT_REQUEUED) or 0) == requeued_before + 1
    # The final record reaches Redis first and Postgres a moment later.
    rows = wait_for(lambda: stack.pg("SELECT status, writes FROM tasks WHERE id = $1", task_id), 10, "the row")
    assert [(r["status"], r["writes"]) for r in rows] == [("completed", 1)]
    # supervisord, or Compose's `restart: unless-stopped`, brings the worker back.
    wait_for(lambda: control.is_running(worker) and control.identity(worker) != before, 30, f"{worker} to restart")


@pytest.mark.usefixtures("restores_stack")
def test_sigterm_drains_in_flight_work_and_exits_cleanly(stack: Stack) -> None:
    task_id = stack.submit("sleep", {"ms": 2000})
    running = _running_on(stack, task_id)
    program = stack.program_of_worker(str(running["worker_id"]))
    stack.supervisor.stop(program, wait=False)  # SIGTERM
    wait_for(
        lambda: any(w["worker_id"] == running["worker_id"] and not w["claiming"] for w in stack.heartbeats()),
        10,
        "the worker to stop claiming",
    )
    # While draining it claims nothing new: these go to the other worker.
    others = [stack.submit("echo", {"i": i}) for i in range(10)]
    results = stack.wait_all_final(others, timeout=30)
    assert all(t["worker_id"] != running["worker_id"] for t in results.values())

    done = stack.wait_status(task_id, {"completed"}, timeout=30)
    assert done["attempts"] == 1  # finished by the same worker, not retried
    assert done["worker_id"] == running["worker_id"]
    info = wait_for(
        lambda: (i := stack.supervisor.process_info(program))["statename"] == "STOPPED" and i,
        30,
        "the worker to exit",
    )
    assert info["exitstatus"] == 0
    live = {w["worker_id"] for w in stack.heartbeats()}
    assert running["worker_id"] not in live  # deregistered at once, not after the TTL


def test_only_live_heartbeats_count_as_workers(stack: Stack) -> None:
    wait_for(lambda: len(stack.heartbeats()) == 2, 20, "two live workers")
    # A stale registration (a worker that vanished) must not count, and the reaper drops it.
    stack.redis.sadd(keys.WORKERS, "worker-service-9-ghost")
    assert stack.http.get("/api/status").json()["metrics"]["active_workers"] == 2
    wait_for(lambda: not stack.redis.sismember(keys.WORKERS, "worker-service-9-ghost"), 10, "the ghost to go")


@pytest.mark.usefixtures("restores_stack")
def test_status_is_503_quickly_while_redis_is_stopped(stack: Stack) -> None:
    stack.supervisor.stop("redis")
    try:
        # The gateway answers at once instead of hanging on the lost connection.
        began = time.perf_counter()
        response = stack.http.get("/api/status")
        answered_s = time.perf_counter() - began
    finally:
        stack.supervisor.start("redis")
    print(f"503 in {answered_s * 1000:.0f} ms")
    assert response.status_code == 503
    assert response.json()["redis"] == "down"
    assert answered_s < 1.0


@pytest.mark.usefixtures("restores_stack")
def test_killed_redis_comes_back_and_the_stack_recovers(stack: Stack) -> None:
    task_id = stack.submit("echo", {"before": "redis kill"})
    stack.wait_status(task_id, {"completed"})
    old = stack.kill("redis", signal.SIGKILL)
    stack.wait_running("redis", replacing=old)
    wait_for(lambda: stack.http.get("/api/status").status_code == 200, 30, "healthy status after redis restart")
    after = stack.submit("echo", {"after": "redis kill"})
    assert stack.wait_status(after, {"completed"})["result"] == {"echo": {"after": "redis kill"}}
    # The counters and the finished task survived the restart (AOF).
    assert stack.task(task_id)["status"] == "completed"


@pytest.mark.usefixtures("restores_any_stack")
def test_killed_gateway_is_routed_around_and_restarted(any_stack: BaseStack) -> None:
    stack, control = any_stack, any_stack.control
    victim, survivor = control.replicas("api-gateway")
    before = control.identity(victim)
    control.kill(victim, signal.SIGKILL)
    responses = [stack.http.post("/api/task", json={"type": "echo"}) for _ in range(20)]
    # A POST already sent on a pooled connection to the dead replica is not replayed (nginx cannot
    # know whether it was processed): the client gets 503 + Retry-After. Everything else fails over.
    refused = [r for r in responses if r.status_code == 503]
    assert all(r.headers["retry-after"] and r.json()["error"] == "service_unavailable" for r in refused)
    accepted = [r.json()["task_id"] for r in responses if r.status_code == 202]
    assert len(accepted) + len(refused) == 20
    assert len(accepted) >= 17, [r.status_code for r in responses]
    # The survivor takes the traffic; a container restarts fast enough to rejoin within it.
    served = [stack.replica_serving(r) for r in responses if r.status_code == 202]
    assert served.count(survivor) >= len(served) // 2, served
    stack.wait_all_final(accepted)
    wait_for(lambda: control.is_running(victim) and control.identity(victim) != before, 30, f"{victim} to restart")
    wait_for(
        lambda: {stack.replica_serving(stack.http.get("/health")) for _ in range(10)} == {victim, survivor},
        20,
        "both replicas serving again",
    )


@pytest.mark.usefixtures("restores_stack")
def test_status_is_503_with_the_same_body_when_postgres_is_down(stack: Stack) -> None:
    stack.supervisor.stop("postgres")
    try:
        response = stack.http.get("/api/status")
        assert response.status_code == 503
        body = response.json()
        assert body["postgres"] == "down"
        assert body["redis"] == "healthy"
        assert "metrics" in body
        # Submitting still works: Postgres is only needed for the durable copy.
        task_id = stack.submit("echo", {"pg": "down"})
    finally:
        stack.supervisor.start("postgres")
    done = stack.wait_status(task_id, {"completed"}, timeout=30)
    wait_for(lambda: stack.pg("SELECT 1 FROM tasks WHERE id = $1", task_id), 30, "the result to be persisted")
    assert done["result"] == {"echo": {"pg": "down"}}
    wait_for(lambda: stack.http.get("/api/status").status_code == 200, 30, "healthy again")


def test_rate_limit_answers_429_json_with_retry_after_per_client(stack: Stack) -> None:
    limit = stack.config.rate_limit_rps + stack.config.rate_limit_burst
    greedy = httpx.Client(base_url=stack.lb, transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10)
    polite = httpx.Client(base_url=stack.lb, transport=httpx.HTTPTransport(local_address="127.0.0.3"), timeout=10)
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: greedy.get("/api/nope"), range(limit * 2)))
    limited = [r for r in responses if r.status_code == 429]
    assert limited, "no request was rate limited"
    assert {r.status_code for r in responses} <= {404, 429}
    assert limited[0].json()["error"] == "rate_limited"
    assert int(limited[0].headers["retry-after"]) >= 1
    # Another client is not affected.
    assert polite.get("/api/status").status_code == 200
    greedy.close()
    polite.close()
