"""The queue on a real 3-node Redis Cluster (REDIS_CLUSTER=true, QUEUE_SHARDS=3): a gateway and two
workers as processes, Postgres from the session stack. Tasks go in one by one and in a batch (with
an Idempotency-Key), both workers claim from every shard, a worker killed mid-task has its claims
requeued by the reaper, and every task lands in Postgres exactly once."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.cluster import RedisCluster

from core import keys
from core.shards import shard_of
from harness.cluster import LocalCluster, Service
from harness.stacks import Stack, wait_for

pytestmark = pytest.mark.stack

SHARDS = 3


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3) as running:
        yield running


@pytest.fixture(scope="module")
def services(cluster: LocalCluster, stack: Stack) -> Iterator[dict[str, Service]]:
    logs = Path(tempfile.mkdtemp(prefix="ss-cluster-logs-", dir="/tmp"))
    env = {
        "REDIS_URL": cluster.url,
        "REDIS_CLUSTER": "true",
        "QUEUE_SHARDS": str(SHARDS),
        "DATABASE_URL": stack.database_url,
        "ADMIN_TOKEN": secrets.token_hex(8),
        "LOG_LEVEL": "warning",
        "WORKER_CONCURRENCY": "4",
        # A killed worker is dead to the reaper after 2 s.
        "HEARTBEAT_INTERVAL_SECONDS": "0.5",
        "HEARTBEAT_TTL_SECONDS": "2",
        "REAPER_INTERVAL_SECONDS": "0.5",
    }
    running = {
        name: Service(module, name, env, logs / f"{name}.log")
        for name, module in (
            ("cluster-gateway", "api_gateway"),
            ("cluster-worker-1", "worker_service"),
            ("cluster-worker-2", "worker_service"),
        )
    }
    try:
        for service in running.values():
            wait_for(service.healthy, 30, f"{service.name} to answer /health")
        yield running
    finally:
        for service in running.values():
            service.stop()
        shutil.rmtree(logs, ignore_errors=True)


def _client(cluster: LocalCluster) -> RedisCluster:
    return RedisCluster.from_url(cluster.url, decode_responses=True)


def _final(http: httpx.Client, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Every task of `ids` once it is final, as the gateway returns it."""
    done: dict[str, dict[str, Any]] = {}

    def progress() -> bool:
        for task_id in [i for i in ids if i not in done]:
            body = http.get(f"/api/task/{task_id}").json()
            if body.get("status") in ("completed", "failed", "cancelled"):
                done[task_id] = body
        return len(done) == len(ids)

    wait_for(progress, timeout, f"{len(ids)} tasks to finish", interval=0.2)
    return done


def test_submit_claim_kill_reap_complete_on_a_3_node_cluster(
    cluster: LocalCluster, services: dict[str, Service], stack: Stack
) -> None:
    http = httpx.Client(base_url=services["cluster-gateway"].url, timeout=10)
    redis = _client(cluster)
    try:
        wait_for(lambda: http.get("/api/status").json()["metrics"]["active_workers"] == 2, 20, "2 live workers")

        # One by one, and a batch under an Idempotency-Key, replayed.
        singles = []
        for i in range(30):
            response = http.post("/api/task", json={"type": "echo", "data": {"i": i}})
            assert response.status_code == 202, response.text
            singles.append(response.json()["task_id"])
        batch = {"tasks": [{"type": "echo", "data": {"b": i}} for i in range(30)]}
        first = http.post("/api/tasks", json=batch, headers={"Idempotency-Key": "cluster-batch"})
        again = http.post("/api/tasks", json=batch, headers={"Idempotency-Key": "cluster-batch"})
        assert first.status_code == again.status_code == 202, first.text
        bulk = first.json()["task_ids"]
        assert again.json()["task_ids"] == bulk
        assert len({shard_of(i, SHARDS) for i in bulk}) == 1  # a batch is one script call: one shard
        assert {shard_of(i, SHARDS) for i in singles} == set(range(SHARDS))

        done = _final(http, singles + bulk, 60)
        assert {t["status"] for t in done.values()} == {"completed"}
        assert done[bulk[3]]["result"] == {"echo": {"b": 3}}
        # Fair claims: each worker took tasks from several shards.
        shards_by_worker: dict[str, set[int]] = {}
        for task in done.values():
            worker = task["worker_id"].rsplit("-", 1)[0]
            shards_by_worker.setdefault(worker, set()).add(shard_of(task["id"], SHARDS))
        assert set(shards_by_worker) == {"cluster-worker-1", "cluster-worker-2"}
        assert all(len(seen) >= 2 for seen in shards_by_worker.values()), shards_by_worker

        # A worker killed mid-task: the reaper requeues its claims, the other worker completes them.
        requeued_before = http.get("/api/metrics").json()["system_metrics"]["requeued"]
        sleepers = [
            http.post("/api/task", json={"type": "sleep", "data": {"ms": 1500}}).json()["task_id"] for _ in range(8)
        ]
        victim = next(w for w in map(str, redis.smembers(keys.WORKERS)) if w.startswith("cluster-worker-1-"))
        wait_for(
            lambda: sum(int(redis.llen(shard.processing(victim))) for shard in keys.shard_keys(SHARDS, True)),
            20,
            "the victim to hold a task",
        )
        services["cluster-worker-1"].kill()
        finished = _final(http, sleepers, 60)
        assert {t["status"] for t in finished.values()} == {"completed"}
        assert any(not t["worker_id"].startswith("cluster-worker-1-") for t in finished.values())
        metrics = http.get("/api/metrics").json()["system_metrics"]
        assert metrics["requeued"] > requeued_before
        assert metrics["queue_length"] == 0

        # Nothing lost, nothing written twice.
        everything = singles + bulk + sleepers
        rows = stack.task_rows("id::text, status, writes", everything, 30)
        assert len(rows) == len(everything)
        assert {(row["status"], row["writes"]) for row in rows} == {("completed", 1)}

        # Each shard's keys live in one slot, and the three shards on three nodes.
        shards_on_node = {}
        for port in cluster.ports:
            with cluster.node(port) as node:
                shards_on_node[port] = {int(k[2]) for k in node.scan_iter(match="{q*", count=1000)}
        assert sorted(len(s) for s in shards_on_node.values()) == [1, 1, 1], shards_on_node
        assert set().union(*shards_on_node.values()) == set(range(SHARDS))
    finally:
        http.close()
        redis.close()


def test_result_waits_and_cancels_work_on_the_cluster(
    cluster: LocalCluster, services: dict[str, Service], stack: Stack
) -> None:
    gateway = services["cluster-gateway"]
    with httpx.Client(base_url=gateway.url, timeout=15) as http:
        # A result wait: the worker's final write publishes on one node, the gateway listens on another.
        waited = http.post("/api/task", json={"type": "sleep", "data": {"ms": 200}, "priority": "high"}).json()
        answer = http.get(f"/api/task/{waited['task_id']}?wait=10")
        assert answer.status_code == 200
        assert answer.json()["status"] == "completed"

        # A scheduled task cancelled in its shard's schedule; it never runs.
        later = http.post("/api/task", json={"type": "echo", "delay_seconds": 60}).json()["task_id"]
        assert http.get("/api/metrics").json()["system_metrics"]["scheduled"] >= 1
        cancelled = http.delete(f"/api/task/{later}")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"

        # A running task stopped at a client's request (the cancel channel reaches its worker).
        running = http.post("/api/task", json={"type": "sleep", "data": {"ms": 20_000}}).json()["task_id"]
        wait_for(lambda: http.get(f"/api/task/{running}").json()["status"] == "processing", 10, "the task to run")
        stop = http.delete(f"/api/task/{running}?running=true")
        assert stop.status_code in (200, 202), stop.text
        final = _final(http, [running, later], 15)
        assert final[running]["status"] == "cancelled"
        assert final[later]["status"] == "cancelled"
        rows = stack.task_rows("id::text, status", [running, later, waited["task_id"]], 30)
        assert {row["id"]: row["status"] for row in rows} == {
            running: "cancelled",
            later: "cancelled",
            waited["task_id"]: "completed",
        }
