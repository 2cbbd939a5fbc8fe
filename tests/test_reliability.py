"""No accepted task is lost, failures retry then dead-letter, the admin surface is locked.

Each test prints its figures (tasks, kills, lost, duplicates, recovery seconds).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from core import keys
from core.models import TaskStatus
from core.records import read_record
from harness.stacks import BaseStack, Stack, wait_for
from native.plan import ROOT


def _admin(stack: BaseStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.env['ADMIN_TOKEN']}"}


def _submit_many(stack: Stack, count: int, task_type: str, data: dict[str, object]) -> list[str]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda i: stack.submit(task_type, {**data, "i": i}), range(count)))


def _persisted(stack: Stack, ids: list[str]) -> dict[str, tuple[str, int]]:
    rows = stack.pg("SELECT id::text, status, writes FROM tasks WHERE id = ANY($1::uuid[])", ids)
    return {r["id"]: (r["status"], r["writes"]) for r in rows}


# -- 1. kill -9 storm -------------------------------------------------------------------------


@pytest.mark.usefixtures("restores_stack")
def test_kill_9_a_random_worker_every_2_s_while_2000_tasks_run(stack: Stack) -> None:
    ids = _submit_many(stack, 2000, "sleep", {"ms": 150})
    kills = 0
    pending = set(ids)
    start = time.monotonic()
    while pending and time.monotonic() - start < 120:
        victims = stack.worker_programs()
        if victims:
            stack.kill(random.choice(victims), signal.SIGKILL)
            kills += 1
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and pending:
            raws = stack.redis.mget([keys.SINGLE.task(t) for t in pending])
            pending -= {
                t
                for t, raw in zip(list(pending), raws, strict=True)
                if raw and read_record(t, raw).status is TaskStatus.COMPLETED
            }
            time.sleep(0.2)
    results = stack.wait_all_final(ids, timeout=90)
    rows = wait_for(lambda: (r := _persisted(stack, ids)) and len(r) == len(ids) and r, 60, "all 2000 rows")
    statuses = Counter(t["status"] for t in results.values())
    retried = sum(1 for t in results.values() if t["attempts"] > 1)
    lost = len(ids) - len(rows)
    duplicates = sum(1 for _, writes in rows.values() if writes != 1)
    print(
        f"\n[storm] tasks={len(ids)} kills={kills} completed={statuses['completed']} rerun={retried} "
        f"lost={lost} duplicate_writes={duplicates} seconds={time.monotonic() - start:.1f}"
    )
    assert kills >= 3
    assert statuses == {"completed": 2000}
    assert lost == 0
    assert duplicates == 0
    assert {status for status, _ in rows.values()} == {"completed"}


# -- 2. a gateway dies under load ------------------------------------------------------------


@pytest.mark.usefixtures("restores_stack")
def test_killing_a_gateway_under_load_loses_no_accepted_task(stack: Stack) -> None:
    accepted: list[str] = []
    refused: list[int] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=stack.lb, timeout=10) as http:
            while not stop.is_set():
                try:
                    response = http.post("/api/task", json={"type": "echo", "data": {}})
                except httpx.TransportError:
                    # The killed gateway's answer cut off mid-way: never a 202, so not an accepted task.
                    cut.append(1)
                    continue
                if response.status_code == 202:
                    accepted.append(response.json()["task_id"])
                elif response.status_code == 429:
                    # The harness's rate limit (500/s), not the failover: back off as a client should.
                    rate_limited.append(429)
                    time.sleep(random.uniform(0.05, 0.2))
                else:
                    refused.append(response.status_code)

    rate_limited: list[int] = []
    cut: list[int] = []
    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(accepted) > 100, 20, "load to build up")
    old = stack.kill("api-gateway-1", signal.SIGKILL)
    wait_for(lambda: len(accepted) > 400, 30, "more load after the kill")
    stop.set()
    for thread in threads:
        thread.join()
    stack.wait_running("api-gateway-1", replacing=old)
    results = stack.wait_all_final(accepted, timeout=60)
    rows = wait_for(lambda: (r := _persisted(stack, accepted)) and len(r) == len(accepted) and r, 30, "rows")
    print(
        f"\n[gateway kill] accepted={len(accepted)} refused={Counter(refused)} rate_limited={len(rate_limited)}"
        f" cut={len(cut)} lost={len(accepted) - len(rows)}"
    )
    assert set(refused) <= {503}
    assert len(cut) <= len(threads), "at most the requests in flight at the kill lose their answer"
    assert {t["status"] for t in results.values()} == {"completed"}
    assert len(rows) == len(accepted)


# -- 3. Redis stops with a backlog -----------------------------------------------------------


def test_redis_stop_and_restart_with_a_backlog_loses_nothing(stack: Stack, workers_paused: list[str]) -> None:
    depth = int(stack.redis.llen(keys.SINGLE.queue))
    ids = _submit_many(stack, 500, "echo", {})
    assert int(stack.redis.llen(keys.SINGLE.queue)) == depth + 500
    stack.supervisor.stop("redis")
    stopped = time.monotonic()
    # Meanwhile the gateway answers fast and clearly.
    began = time.perf_counter()
    response = httpx.post(f"{stack.lb}/api/task", json={"type": "echo"}, timeout=5)
    answered_ms = (time.perf_counter() - began) * 1000
    assert response.status_code == 503
    assert response.json()["error"] == "redis_unavailable"
    assert response.headers["retry-after"]
    stack.supervisor.start("redis")
    for name in workers_paused:
        stack.supervisor.start(name)
    results = stack.wait_all_final(ids, timeout=60)
    recovered = time.monotonic() - stopped
    print(f"\n[redis restart] tasks={len(ids)} 503_in_ms={answered_ms:.1f} recovery_s={recovered:.1f}")
    assert answered_ms < 1000  # bounded, never hanging (the figure itself is reported)
    assert {t["status"] for t in results.values()} == {"completed"}


# -- 4. Postgres stops while workers finish tasks --------------------------------------------


@pytest.mark.usefixtures("restores_stack")
def test_postgres_stop_and_restart_loses_no_result(stack: Stack) -> None:
    stack.supervisor.stop("postgres")
    down_at = time.monotonic()
    ids = _submit_many(stack, 300, "sleep", {"ms": 20})
    # Workers keep running tasks: results wait in Redis, their claims stay unacknowledged.
    stack.wait_all_final(ids, timeout=60)
    unacked = _unacked(stack)
    stack.supervisor.start("postgres")
    rows = wait_for(lambda: (r := _persisted(stack, ids)) and len(r) == len(ids) and r, 60, "all rows")
    recovery = time.monotonic() - down_at
    print(f"\n[postgres restart] tasks={len(ids)} unacked_while_down={unacked} recovery_s={recovery:.1f}")
    assert unacked >= 300
    assert set(rows.values()) == {("completed", 1)}
    wait_for(lambda: _unacked(stack) == 0, 30, "every claim acknowledged after the commit")


def _unacked(stack: Stack) -> int:
    return sum(int(stack.redis.llen(keys.SINGLE.processing(str(w)))) for w in stack.redis.smembers(keys.WORKERS))


# -- retries, dead letters, poison, idempotency ------------------------------------------------


def test_failures_retry_visibly_then_dead_letter(any_stack: BaseStack) -> None:
    task_id = any_stack.submit("fail", {"message": "boom"})
    seen = wait_for(lambda: (t := any_stack.task(task_id))["status"] == "retrying" and t, 20, "status retrying")
    assert seen["attempts"] >= 1
    assert "boom" in seen["error"]
    assert "attempt" in seen["error"]
    final = any_stack.wait_status(task_id, {"failed"})
    assert final["attempts"] == 3
    dlq = httpx.get(f"{any_stack.lb}/api/admin/dlq", headers=_admin(any_stack)).json()
    assert task_id in [t["id"] for t in dlq["tasks"]]
    assert dlq["count"] >= 1
    entry = next(t for t in dlq["tasks"] if t["id"] == task_id)
    assert "boom" in entry["error"]


@pytest.mark.usefixtures("restores_stack")
def test_a_task_that_kills_its_worker_ends_in_the_dead_letter_queue(stack: Stack) -> None:
    task_id = stack.submit("crash", {})
    try:
        final = stack.wait_status(task_id, {"failed"}, timeout=90)
    except AssertionError:
        # Seen once in several full runs, never alone: say where the task and the workers were.
        lists = {k: stack.redis.lrange(k, 0, 20) for k in stack.redis.scan_iter() if stack.redis.type(k) == "list"}
        raise AssertionError(
            f"task {stack.task(task_id)}; supervisord {stack.supervisor.states()}; "
            f"workers {stack.redis.smembers(keys.WORKERS)}; lists {lists}"
        ) from None
    assert "gave up after 3 attempts" in final["error"]
    dlq = httpx.get(f"{stack.lb}/api/admin/dlq", headers=_admin(stack)).json()
    assert task_id in [t["id"] for t in dlq["tasks"]]


def test_idempotency_key_replays_and_conflicts(any_stack: BaseStack) -> None:
    key = f"order-{random.randrange(10**9)}"
    headers = {"Idempotency-Key": key}
    first = any_stack.http.post("/api/task", json={"type": "echo", "data": {"n": 1}}, headers=headers)
    accepted_before = int(any_stack.redis.hget(keys.SINGLE.stats, keys.STAT_ACCEPTED) or 0)
    again = any_stack.http.post("/api/task", json={"type": "echo", "data": {"n": 1}}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["task_id"] == first.json()["task_id"]
    # Nothing new queued.
    assert int(any_stack.redis.hget(keys.SINGLE.stats, keys.STAT_ACCEPTED) or 0) == accepted_before
    conflict = any_stack.http.post("/api/task", json={"type": "echo", "data": {"n": 2}}, headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "conflict"
    assert any_stack.redis.ttl(keys.SINGLE.idempotency(key)) > 23 * 3600


# -- 7. the admin API is locked --------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/api/admin/dlq"),
        ("POST", "/api/admin/dlq/redrive"),
        ("DELETE", "/api/admin/queue"),
        ("POST", "WORKER/worker/scale"),
    ],
)
@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", "Basic dXNlcjpwYXNz", "Bearer", "bearer x"])
def test_admin_endpoints_refuse_missing_and_wrong_tokens(
    any_stack: BaseStack, method: str, url: str, auth: str | None
) -> None:
    full = url.replace("WORKER", any_stack.worker) if url.startswith("WORKER") else f"{any_stack.lb}{url}"
    headers = {"Authorization": auth} if auth else {}
    response = httpx.request(method, full, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


def test_admin_redrive_and_purge_with_the_token(stack: Stack, workers_paused: list[str]) -> None:
    failed = stack.submit("fail")
    for name in workers_paused:
        stack.supervisor.start(name)
    stack.wait_status(failed, {"failed"})
    for name in workers_paused:
        stack.supervisor.stop(name)
    first = wait_for(
        lambda: (r := httpx.post(f"{stack.lb}/api/admin/dlq/redrive", headers=_admin(stack))).status_code == 200 and r,
        5,
        "a redrive outside the rate limit",
    )
    assert failed in first.json()["task_ids"]
    # a second one at once is rate-limited
    second = httpx.post(f"{stack.lb}/api/admin/dlq/redrive", headers=_admin(stack))
    assert second.status_code == 429
    assert second.headers["retry-after"] == "1"
    assert stack.task(failed)["status"] == "queued"
    assert stack.task(failed)["attempts"] == 0

    waiting = _submit_many(stack, 20, "echo", {})
    # The workers are stopped: the queue holds what this test queued, behind anything left before.
    depth = int(stack.redis.llen(keys.SINGLE.queue))
    assert depth >= 21
    purge = httpx.delete(f"{stack.lb}/api/admin/queue", headers=_admin(stack))
    assert purge.status_code == 200
    assert purge.json()["purged"] == depth
    assert stack.redis.llen(keys.SINGLE.queue) == 0
    for task_id in [*waiting, failed]:
        task = stack.task(task_id)
        assert task["status"] == "failed"
        assert task["error"] == "purged by an administrator"
    rows = _persisted(stack, waiting)
    assert {v[0] for v in rows.values()} == {"failed"}
    assert len(rows) == 20


def test_worker_scale_answers_with_the_token(stack: Stack) -> None:
    ok = httpx.post(f"{stack.worker}/worker/scale", headers=_admin(stack))
    assert ok.status_code == 200
    assert "recommendation" in ok.json()


# -- 6. schemathesis over the gateway's OpenAPI ----------------------------------------------


def test_schemathesis_finds_no_5xx_and_no_schema_mismatch(stack: Stack) -> None:
    replica = f"http://127.0.0.1:{stack.plan.upstream_ports('api-gateway')[0]}"
    result = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "run", f"{replica}/openapi.json",
            "--checks", "not_a_server_error,response_schema_conformance,status_code_conformance",
            "--max-examples", "25",
            # GET /api/task/{id}?wait=S on a task that is not final answers after up to 30 s.
            "--request-timeout", "40",
            "--exclude-method", "DELETE",  # the purge would empty the shared test queue
            "--seed", "7",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


# -- 5. 3x overload for 30 s -----------------------------------------------------------------

OVERLOAD_ENV = {
    # A small, known capacity: 1 worker x 4 slots x 100 ms = 40 tasks/s; a queue bound of 300.
    "WORKERS": "1",
    "WORKER_CONCURRENCY": "4",
    "QUEUE_MAX": "300",
    "RATE_LIMIT_RPS": "1000",
    "RATE_LIMIT_BURST": "1000",
}


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.mark.stack  # starts its own stack
def test_three_times_overload_for_30_s_stays_bounded() -> None:
    small = Stack(OVERLOAD_ENV).up()
    try:
        capacity = 40.0
        offered = 3 * capacity
        duration = 30.0
        codes: Counter[int] = Counter()
        accepted: list[str] = []
        depths: list[int] = []
        lock = threading.Lock()
        start = time.monotonic()

        def sender(offset: int) -> None:
            # Paced, not flat out: 4 senders x 30/s = 120 tasks/s offered, 3x what drains.
            with httpx.Client(base_url=small.lb, timeout=10) as http:
                n = 0
                while (elapsed := time.monotonic() - start) < duration:
                    due = n / (offered / 4) + offset / offered
                    if due > elapsed:
                        time.sleep(due - elapsed)
                    response = http.post("/api/task", json={"type": "sleep", "data": {"ms": 100}})
                    with lock:
                        codes[response.status_code] += 1
                        if response.status_code == 202:
                            accepted.append(response.json()["task_id"])
                    n += 1

        threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            depths.append(int(small.redis.llen(keys.SINGLE.queue)))
            time.sleep(0.5)
        for thread in threads:
            thread.join()
        rss = {
            name: _rss_mb(small.pid(name)) for name in ("api-gateway-1", "api-gateway-2", "worker-service-1", "redis")
        }
        redis_mb = int(small.redis.info("memory")["used_memory"]) / 2**20
        total = sum(codes.values())
        print(
            f"\n[overload] offered={total / duration:.0f}/s capacity~{capacity:.0f}/s codes={dict(codes)} "
            f"max_queue={max(depths)} redis_used_mb={redis_mb:.1f} rss_mb={ {k: round(v) for k, v in rss.items()} }"
        )
        assert total >= 0.8 * offered * duration  # the load really was ~3x
        assert set(codes) <= {202, 429, 503}
        assert codes[503] > 0  # backpressure engaged
        assert max(depths) <= 300
        assert redis_mb < 64
        assert all(mb < 300 for mb in rss.values())
        results = small.wait_all_final(accepted, timeout=120)
        assert {t["status"] for t in results.values()} == {"completed"}
    finally:
        small.down()
