"""`./demo.sh bench --capacity`: the CPU each part of the stack spends per task, measured, and what
a target rate needs of each part, derived from it (the README's capacity model).

On a native stack of its own (the bench's settings), three phases, each with the others idle:
- ingest: wrk posts single echo tasks through nginx, the workers stopped;
- bulk ingest: wrk posts 1,000 tasks a request;
- drain: one worker process takes a preloaded backlog to Postgres.
For each, the CPU seconds every program's process tree spent (user + system, exited children
included, from psutil) are divided by the tasks it handled. Postgres's WAL bytes per task come
from pg_current_wal_lsn() around the drain.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil  # type: ignore[import-untyped]

from benchmarks import suite
from benchmarks.target import Target, open_target, say, stop_workers
from load_test.control import WORKER_SERVICE

#: The parts of the model, by the supervisord program names of a native stack (prefixes).
PARTS = {
    "nginx": "nginx",
    "gateway": "api-gateway",
    "worker": "worker-service",
    "redis": "redis",
    "postgres": "postgres",
}
#: Target rates the model is worked out for (tasks/s).
TARGETS = (10_000, 100_000, 1_000_000)
#: The share of a core planned per process: headroom for bursts, GC and the machine's own work.
PLANNED_LOAD = 0.7


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its descendants, those already exited and reaped included."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def cpu_by_part(target: Target) -> dict[str, float]:
    """CPU seconds so far of every program, summed per part."""
    out = dict.fromkeys(PARTS, 0.0)
    for info in target.supervisor.processes():
        if not info["pid"]:
            continue
        for part, prefix in PARTS.items():
            if info["name"].startswith(prefix):
                out[part] += _tree_cpu(int(info["pid"]))
    return out


@dataclass
class Meter:
    """CPU per part spent inside `with meter.measure():`."""

    target: Target
    spent: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        before, begun = cpu_by_part(self.target), time.perf_counter()
        yield
        after, self.seconds = cpu_by_part(self.target), time.perf_counter() - begun
        self.spent = {part: after[part] - before[part] for part in PARTS}

    def per_task_us(self, tasks: int) -> dict[str, float]:
        return {part: round(cpu / tasks * 1e6, 1) for part, cpu in self.spent.items()}


def ingest(target: Target, seconds: int, path: str, body: Path, connections: int, per_request: int) -> dict[str, Any]:
    """Tasks posted to `path` for `seconds` with the workers stopped, and the CPU they cost."""
    suite.settle(target)
    meter = Meter(target)
    with meter.measure():
        result = suite.wrk(target.lb, "load.lua", [path, str(body)], seconds=seconds, connections=connections)
    tasks = (result["requests"] - result["errors"]) * per_request
    suite.discard_queue(target)
    return {"tasks": tasks, "tasks_per_s": round(tasks / meter.seconds, 1), "cpu_us": meter.per_task_us(tasks)}


def drain(target: Target, tasks: int) -> dict[str, Any]:
    suite.settle(target)
    meter = Meter(target)
    wal: list[int] = []

    @contextlib.contextmanager
    def timed() -> Iterator[None]:
        wal.append(int(suite._pg_value(target, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")))
        with meter.measure():
            yield
        wal.append(int(suite._pg_value(target, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")))

    figures = suite.drain(target, tasks, timed=timed)
    return {
        **figures,
        "cpu_us": meter.per_task_us(tasks),
        "wal_bytes_per_task": round((wal[1] - wal[0]) / tasks),
    }


def measure(target: Target, seconds: int, tasks: int) -> dict[str, Any]:
    stop_workers(target)
    with tempfile.TemporaryDirectory(prefix="ss-capacity-") as tmp:
        single = suite.task_body(Path(tmp))
        bulk = Path(tmp) / "tasks.json"
        bulk.write_bytes(orjson.dumps({"tasks": [{"type": "echo", "data": {"n": i}} for i in range(suite.BULK_SIZE)]}))
        say(f"capacity: ingest, single tasks through nginx, {seconds} s")
        single_figures = ingest(target, seconds, "/api/task", single, suite.CONNECTIONS, 1)
        say(f"capacity: bulk ingest, {suite.BULK_SIZE} tasks a request, {seconds} s")
        bulk_figures = ingest(target, seconds, "/api/tasks", bulk, 8, suite.BULK_SIZE)
    say(f"capacity: drain of {tasks} echo tasks by one worker process")
    return {"ingest": single_figures, "bulk": bulk_figures, "drain": drain(target, tasks)}


@dataclass(frozen=True)
class Need:
    """What a target rate needs of one part: cores in all, and instances (processes, or Redis
    shards, or Postgres machines) at PLANNED_LOAD of a core each, except Postgres (see model())."""

    part: str
    us_per_task: float
    cores: float
    instances: int
    #: tasks/s one instance carries at PLANNED_LOAD
    ceiling: float


#: Cores of the one machine a Postgres primary is planned on: it scales up, not out.
POSTGRES_CORES = 32


def model(figures: dict[str, Any], rate: int, submit: str = "ingest") -> list[Need]:
    """The parts `rate` tasks/s need, from the measured CPU per task; `submit` is "ingest" (one
    task a request) or "bulk" (1,000 a request).

    nginx, gateways and workers scale out, one process per core. Redis runs commands on one
    thread: an instance carries PLANNED_LOAD / (its CPU per task, intake and drain), past which the
    queue is split into shards (a Redis Cluster). Postgres spreads its CPU over one backend per
    worker pool connection but is one primary: it scales up to POSTGRES_CORES, past which its
    writes must be split too."""
    intake, drained = figures[submit]["cpu_us"], figures["drain"]["cpu_us"]

    def need(part: str, us: float, per_instance_cores: float = 1.0) -> Need:
        cores = rate * us / 1e6
        per_instance = per_instance_cores * PLANNED_LOAD
        ceiling = per_instance * 1e6 / us if us else math.inf
        return Need(part, us, round(cores, 1), max(1, math.ceil(cores / per_instance)), ceiling)

    return [
        need("nginx", intake["nginx"]),
        need("gateway", intake["gateway"]),
        need("worker", drained["worker"]),
        need("redis", intake["redis"] + drained["redis"]),
        need("postgres", drained["postgres"], POSTGRES_CORES),
    ]


def first_to_give_out(figures: dict[str, Any], submit: str = "ingest") -> Need:
    """The part whose one instance carries the fewest tasks/s among those that cannot simply add
    processes: Redis (one thread per shard) or Postgres (one primary)."""
    return min((n for n in model(figures, 1, submit) if n.part in ("redis", "postgres")), key=lambda n: n.ceiling)


def table(figures: dict[str, Any]) -> str:
    lines = [
        "| CPU per task (µs) | " + " | ".join(PARTS) + " | tasks/s |",
        "| --- | " + " | ".join("---:" for _ in PARTS) + " | ---: |",
    ]
    for phase in ("ingest", "bulk", "drain"):
        row = figures[phase]
        lines.append(
            f"| {phase} | " + " | ".join(f"{row['cpu_us'][p]:,.1f}" for p in PARTS) + f" | {row['tasks_per_s']:,.0f} |"
        )
    lines.append(f"\nPostgres WAL per drained task: {figures['drain']['wal_bytes_per_task']} bytes")
    for submit in ("ingest", "bulk"):
        ceilings = " | ".join(f"{n.ceiling:,.0f}" for n in model(figures, 1, submit))
        lines += [
            "",
            f"submitted by {submit}: instances (cores) a target needs at {PLANNED_LOAD:.0%} of a core each",
            "| target tasks/s | " + " | ".join(PARTS) + " |",
            "| ---: | " + " | ".join("---:" for _ in PARTS) + " |",
            f"| one instance carries | {ceilings} |",
        ]
        for rate in TARGETS:
            needs = model(figures, rate, submit)
            lines.append(f"| {rate:,} | " + " | ".join(f"{n.instances:,} ({n.cores:,.1f})" for n in needs) + " |")
        first = first_to_give_out(figures, submit)
        lines.append(f"first to give out: {first.part}, at {first.ceiling:,.0f} tasks/s an instance")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks --capacity", description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=40_000)
    args = parser.parse_args(argv)
    target = open_target(False, 100)
    try:
        figures = measure(target, args.seconds, args.tasks)
        for name in target.control.replicas(WORKER_SERVICE, running_only=False)[:1]:
            target.control.start(name)
    finally:
        if target.stack is not None:
            target.stack.down()
    path = suite.write_report(figures, "capacity")
    print()
    print(table(figures))
    print(f"\nwritten to {path}")
    return 0
