"""The benchmark suite behind `./demo.sh bench` (issue #8): every figure from the same run.

Starts its own native stack on free ports (temporary STATE_DIR, rate limiting off, no queue
bound) and tears it down afterwards; `--reuse` measures the running demo stack instead, only
when it was started with RATE_LIMIT_RPS=0 (the drain phase stops and starts its workers).

Load comes from wrk (C, Debian), never a Python loop: closed loop for the maxima, a Lua-paced
schedule (benchmarks/wrk/paced.lua) for "p99 at half the rate". The workers are stopped while
the HTTP figures are taken, so the gateways are measured alone; what was queued is discarded.
Before the half-rate latency, the bulk ingest, the drain and the COPY the stack is settled: the
AOF compacted (the phases before leave tens to hundreds of MB of it, and the rewrite it triggers
would otherwise land in the next phase) and Postgres checkpointed, so no figure measures the
debris of the phases before it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import psutil  # type: ignore[import-untyped]
from redis import Redis

from benchmarks import features, result_wait
from benchmarks.target import Measured, Target, live_worker, open_target, say, stop_workers
from core import keys
from core.models import TaskRecord, new_task_id
from core.records import hot_record
from core.timeutil import now
from harness.stacks import free_port, wait_for
from load_test.control import WORKER_SERVICE
from native.plan import ROOT

WRK_DIR = Path(__file__).resolve().parent / "wrk"
ARQ_VENV = ROOT / "var" / "bench-venv"
ARQ_REQUIREMENTS = Path(__file__).resolve().parent / "requirements-arq.txt"
BULK_SIZE = 1000
#: closed-loop connections for the HTTP maxima; enough to keep 2 gateways busy on 2 cores
CONNECTIONS = 64
#: alternating floor/ingest rounds; an odd number, so the median is one of them
ROUNDS = 3


# -- memory --------------------------------------------------------------------------------


def memory(target: Target) -> dict[str, dict[str, float]]:
    """RSS and PSS (MB) per program, over its process tree (postgres and nginx fork children).

    RSS counts shared pages once per process; PSS splits them, so PSS sums to the real total.
    """
    out: dict[str, dict[str, float]] = {}
    pid_file = target.plan.config.run_dir / "supervisord.pid"
    programs = [(p["name"], p["pid"]) for p in target.supervisor.processes() if p["pid"]]
    if pid_file.exists():
        programs.append(("supervisord", int(pid_file.read_text())))
    for name, pid in programs:
        if (figures := process_memory(pid, children=name != "supervisord")) is not None:
            out[name] = figures
    return out


def process_memory(pid: int, *, children: bool = True) -> dict[str, float] | None:
    """RSS and PSS (MB) of a process and, with `children`, all its descendants; None once it is gone."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)] if children else [root]
        rss = pss = 0
        for proc in tree:
            info = proc.memory_full_info()
            rss += info.rss
            pss += info.pss
    except psutil.Error:
        return None
    return {"rss_mb": round(rss / 2**20, 1), "pss_mb": round(pss / 2**20, 1)}


# -- wrk -----------------------------------------------------------------------------------


def wrk(url: str, script: str, args: list[str], *, seconds: int, connections: int, threads: int = 2) -> dict[str, Any]:
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(WRK_DIR / script),
        url,
        "--",
        *args,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    match = re.search(r"^BENCH (\{.*\})$", out, re.MULTILINE)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    raw: dict[str, Any] = json.loads(match.group(1))
    ok = raw["requests"] - raw["status_errors"] - raw["socket_errors"]
    seconds_run = raw["duration_us"] / 1e6
    return {
        "rps": round(ok / seconds_run, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "requests": raw["requests"],
        "errors": raw["status_errors"] + raw["socket_errors"],
    }


def median_round(results: list[dict[str, Any]], rate: str = "rps") -> dict[str, Any]:
    """The result whose rate is the median of the rounds (all its figures, from that one round)."""
    return sorted(results, key=lambda r: float(r[rate]))[len(results) // 2]


def discard_queue(target: Measured) -> int:
    """Drop what the HTTP phases queued (records included), so the drain starts from nothing."""
    holding = f"{keys.SINGLE.queue}:bench-discard"
    if not target.redis.exists(keys.SINGLE.queue):
        return 0
    target.redis.rename(keys.SINGLE.queue, holding)
    dropped = 0
    while ids := target.redis.lpop(holding, 5000):
        target.redis.unlink(*[keys.SINGLE.task(str(i)) for i in ids])
        dropped += len(ids)
    return dropped


def task_body(tmp: Path) -> Path:
    """The body wrk posts to /api/task: one echo task."""
    single = tmp / "task.json"
    single.write_bytes(orjson.dumps({"type": "echo", "data": {"n": 1}}))
    return single


def ingest_round(target: Measured, seconds: int, single: Path) -> dict[str, dict[str, Any]]:
    """One floor (GET /health) and one ingest (POST /api/task) figure through nginx, back to back."""
    floor = wrk(target.lb, "load.lua", ["/health"], seconds=seconds, connections=CONNECTIONS)
    ingest = wrk(target.lb, "load.lua", ["/api/task", str(single)], seconds=seconds, connections=CONNECTIONS)
    discard_queue(target)
    return {"floor": floor, "ingest": ingest}


def http_phases(target: Target, seconds: int, tmp: Path) -> dict[str, Any]:
    single = task_body(tmp)
    bulk = tmp / "tasks.json"
    bulk.write_bytes(orjson.dumps({"tasks": [{"type": "echo", "data": {"n": i}} for i in range(BULK_SIZE)]}))
    out: dict[str, Any] = {}

    # The floor and ingest alternate, ROUNDS times, and each figure is the median round: on a
    # shared machine one slow window would otherwise decide a ratio taken from two windows.
    rounds: list[dict[str, dict[str, Any]]] = []
    each = max(1, seconds // 2)
    for n in range(1, ROUNDS + 1):
        say(f"round {n}/{ROUNDS}: floor (GET /health) then ingest (POST /api/task) through nginx, {each} s each")
        rounds.append(ingest_round(target, each, single))
    out["floor"] = median_round([r["floor"] for r in rounds])
    out["ingest"] = median_round([r["ingest"] for r in rounds])
    out["rounds"] = [{"floor_rps": r["floor"]["rps"], "ingest_rps": r["ingest"]["rps"]} for r in rounds]
    half = max(1, int(out["ingest"]["rps"] / 2))
    settle(target)  # a latency figure: the AOF rewrite the rounds' writes trigger must not land in it
    say(f"ingest at half that rate: {half} req/s, paced, {seconds} s")
    out["ingest_half"] = {
        "target_rps": half,
        **wrk(
            target.lb, "paced.lua", ["/api/task", str(single), str(half), "2"], seconds=seconds, connections=CONNECTIONS
        ),
    }
    discard_queue(target)
    settle(target)
    say(f"bulk ingest: POST /api/tasks with {BULK_SIZE} tasks a request, {seconds} s")
    json_type = {"content-type": "application/json"}
    probe = httpx.post(f"{target.lb}/api/tasks", content=bulk.read_bytes(), headers=json_type)
    if probe.status_code == 202:
        result = wrk(target.lb, "load.lua", ["/api/tasks", str(bulk)], seconds=seconds, connections=8)
        out["bulk"] = {**result, "tasks_per_s": round(result["rps"] * BULK_SIZE, 1), "batch": BULK_SIZE}
    else:
        out["bulk"] = {"unavailable": f"POST /api/tasks answered {probe.status_code}"}
    discard_queue(target)
    return out


# -- drain ---------------------------------------------------------------------------------


def settle(target: Measured) -> None:
    """Compact Redis's AOF and checkpoint Postgres, waiting for both, before a throughput phase."""

    def rewriting() -> bool:
        info = target.redis.info("persistence")
        return bool(info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled"))

    wait_for(lambda: not rewriting(), 120, "an AOF rewrite already running")
    if target.redis.info("persistence").get("aof_enabled"):
        target.redis.bgrewriteaof()
        wait_for(lambda: not rewriting(), 120, "the AOF rewrite", interval=0.1)

    _pg_value(target, "CHECKPOINT")


def _pg_value(target: Measured, query: str, *args: Any) -> Any:
    """One statement on a short-lived connection; its first value."""

    async def run() -> Any:
        conn = await asyncpg.connect(target.database_url)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def _processing_total(redis: Redis) -> int:
    ids = [str(w) for w in redis.smembers(keys.WORKERS)]
    if not ids:
        return 0
    pipe = redis.pipeline(transaction=False)
    for worker_id in ids:
        pipe.llen(keys.SINGLE.processing(worker_id))
    return sum(int(n) for n in pipe.execute())


def drain(
    target: Measured, tasks: int, timed: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
) -> dict[str, Any]:
    """N echo tasks queued, then one worker process persists them all; timed from release to last
    ack, inside `timed()` (the capacity bench meters CPU there)."""
    stop_workers(target)
    # Stored and listed aside first, then released in one RENAME: the worker starts on a full
    # queue and the timing covers neither the queueing nor its start-up.
    holding = f"{keys.SINGLE.queue}:bench-drain"
    ids: list[str] = []
    created = now()
    pipe = target.redis.pipeline(transaction=False)
    for i in range(tasks):
        task = TaskRecord(id=new_task_id(), type="echo", data={"i": i}, created_at=created)
        ids.append(task.id)
        pipe.set(keys.SINGLE.task(task.id), hot_record(task))
        pipe.lpush(holding, task.id)
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()
    worker = target.control.replicas(WORKER_SERVICE, running_only=False)[0]
    target.control.start(worker)
    wait_for(
        lambda: target.redis.exists(keys.SINGLE.queue) == 0 and live_worker(target), 30, "the drain worker's heartbeat"
    )
    say(f"drain: {tasks} echo tasks, one worker process ({worker})")
    with timed():
        started = time.perf_counter()
        target.redis.rename(holding, keys.SINGLE.queue)
        wait_for(
            lambda: target.redis.llen(keys.SINGLE.queue) == 0 and _processing_total(target.redis) == 0,
            300,
            "the drain to finish",
            interval=0.01,
        )
        elapsed = time.perf_counter() - started
    rows = int(_pg_value(target, "SELECT count(*) FROM tasks WHERE id = ANY($1::uuid[])", ids))
    return {"tasks": tasks, "seconds": round(elapsed, 2), "tasks_per_s": round(tasks / elapsed, 1), "rows": rows}


# -- latency -------------------------------------------------------------------------------


def latency(target: Measured, samples: int) -> dict[str, Any]:
    """Submit one echo task at a time on an idle stack; time until its record says completed."""
    durations: list[float] = []
    with httpx.Client(base_url=target.lb, timeout=10) as client:
        client.get("/health")  # a warm keepalive connection, as a real client has
        for i in range(samples + 5):
            started = time.perf_counter()
            response = client.post("/api/task", json={"type": "echo", "data": {"i": i}})
            response.raise_for_status()
            key = keys.SINGLE.task(response.json()["task_id"])
            deadline = started + 10
            while '"status":"completed"' not in (target.redis.get(key) or ""):
                if time.perf_counter() > deadline:
                    raise RuntimeError("an idle echo task did not complete within 10 s")
                time.sleep(0.0002)
            if i >= 5:  # the first few warm the connection pools
                durations.append((time.perf_counter() - started) * 1000)
            time.sleep(0.02)
    durations.sort()
    return {
        "samples": len(durations),
        "p50_ms": round(statistics.median(durations), 2),
        "p99_ms": round(durations[min(len(durations) - 1, int(len(durations) * 0.99))], 2),
    }


# -- limits --------------------------------------------------------------------------------


def redis_limits(target: Target) -> dict[str, Any]:
    password = target.plan.config.variables.get("REDIS_PASSWORD", "")
    port = str(target.plan.config.redis_port)
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", port, "-t", "lpush,rpop", "-n", "200000", "-c", "50", "--csv"]
    if password:
        cmd += ["-a", password]  # loopback only; this redis-benchmark has no --no-auth-warning
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    result: dict[str, Any] = {}
    for line in out.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if cells and cells[0] in ("LPUSH", "RPOP"):
            result[f"{cells[0].lower()}_per_s"] = float(cells[1])
            result[f"{cells[0].lower()}_p99_ms"] = float(cells[6]) if len(cells) > 6 else None
    target.redis.delete("mylist")
    return result


def copy_ceiling(target: Measured, rows: int) -> dict[str, Any]:
    """COPY N completed task rows into a table shaped like `tasks` (same indexes, logged), one transaction."""

    async def run() -> float:
        conn = await asyncpg.connect(target.database_url)
        try:
            await conn.execute("DROP TABLE IF EXISTS bench_copy; CREATE TABLE bench_copy (LIKE tasks INCLUDING ALL)")
            stamp = now()
            columns = ["id", "type", "data", "status", "created_at", "completed_at", "processing_time", "result"]
            records = [
                (new_task_id(), "echo", f'{{"i": {i}}}', "completed", stamp, stamp, 0.0001, f'{{"i": {i}}}')
                for i in range(rows)
            ]
            started = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table("bench_copy", records=records, columns=columns)
            elapsed = time.perf_counter() - started
            await conn.execute("DROP TABLE bench_copy")
            return elapsed
        finally:
            await conn.close()

    seconds = asyncio.run(run())
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1)}


# -- the peer ------------------------------------------------------------------------------


def ensure_arq_venv() -> Path:
    python = ARQ_VENV / "bin" / "python"
    wanted = ARQ_REQUIREMENTS.read_text()
    stamp = ARQ_VENV / "requirements.txt"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    say(f"creating {ARQ_VENV.relative_to(ROOT)} for the peer (arq pins redis<6, our stack redis 8)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(ARQ_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(ARQ_REQUIREMENTS)], check=True)
    stamp.write_text(wanted)
    return python


def arq_peer(jobs: int, max_jobs: int) -> dict[str, Any]:
    python = ensure_arq_venv()
    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="ss-bench-arq-"))
    # The same persistence as our Redis (AOF, fsync every second), so neither side gets a cheaper store.
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: Redis(port=port).ping(), 10, "the peer's redis-server")
        say(f"peer: arq, {jobs} no-op jobs, one worker, max_jobs={max_jobs}")
        out = subprocess.run(
            [str(python), str(Path(__file__).resolve().parent / "arq_peer.py"), str(port), str(jobs), str(max_jobs)],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        ).stdout
        raw = json.loads(out.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(data_dir, ignore_errors=True)
    return {**raw, "max_jobs": max_jobs, "jobs_per_s": round(raw["completed"] / raw["seconds"], 1)}


# -- report --------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    # Unrounded: a target is judged on the figure itself (0.097 is not 0.1); rounded for display.
    return a / b if a and b else None


def _shown(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.3f}"


def targets(r: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    http, bulk = r["http"], r["http"]["bulk"]
    ingest_floor = _ratio(http["ingest"]["rps"], http["floor"]["rps"])
    bulk_x = _ratio(bulk.get("tasks_per_s"), http["ingest"]["rps"])
    arq_x = _ratio(r["drain"]["tasks_per_s"], r["peer"]["jobs_per_s"])
    copy_x = _ratio(r["drain"]["tasks_per_s"], r["limits"]["copy"]["rows_per_s"])
    idle_total = sum(m["pss_mb"] for m in r["memory"]["idle"].values())
    idle = r["memory"]["idle"]
    idle_worker = max((m["rss_mb"] for n, m in idle.items() if n.startswith("worker-service")), default=0)
    half_p99 = http["ingest_half"]["p99_ms"]
    return [
        (f"ingest / floor = {_shown(ingest_floor)}", ">= 0.7", ingest_floor is not None and ingest_floor >= 0.7),
        (f"ingest p99 at half rate = {half_p99} ms", "<= 25 ms", half_p99 <= 25),
        (f"bulk / single ingest = {_shown(bulk_x)}", ">= 20", bulk_x is not None and bulk_x >= 20),
        (f"drain / arq = {_shown(arq_x)}", ">= 3", arq_x is not None and arq_x >= 3),
        (f"drain / COPY = {_shown(copy_x)}", ">= 0.1", copy_x is not None and copy_x >= 0.1),
        (f"idle submit->completed p50 = {r['latency']['p50_ms']} ms", "<= 5 ms", r["latency"]["p50_ms"] <= 5),
        (f"idle stack = {idle_total:.0f} MB (PSS)", "<= 600 MB", idle_total <= 600),
        (f"idle worker = {idle_worker:.0f} MB (RSS)", "<= 80 MB", idle_worker <= 80),
        *result_wait.target(r.get("result_wait")),
    ]


def table(r: dict[str, Any]) -> str:
    http = r["http"]
    bulk = http["bulk"]
    lim = r["limits"]
    rounds = f", median of {len(http['rounds'])}" if "rounds" in http else ""
    rows = [
        (
            "floor: GET /health via nginx",
            f"{http['floor']['rps']:,.0f} req/s",
            f"p99 {http['floor']['p99_ms']:.1f} ms{rounds}",
        ),
        (
            "ingest: POST /api/task",
            f"{http['ingest']['rps']:,.0f} req/s",
            f"p99 {http['ingest']['p99_ms']:.1f} ms{rounds}",
        ),
        (
            f"ingest at half rate ({http['ingest_half']['target_rps']} req/s)",
            f"{http['ingest_half']['rps']:,.0f} req/s",
            f"p99 {http['ingest_half']['p99_ms']:.1f} ms",
        ),
        (
            f"bulk ingest: POST /api/tasks x{BULK_SIZE}",
            f"{bulk['tasks_per_s']:,.0f} tasks/s" if "tasks_per_s" in bulk else "n/a",
            f"p99 {bulk['p99_ms']:.1f} ms" if "p99_ms" in bulk else bulk.get("unavailable", ""),
        ),
        (
            f"drain: {r['drain']['tasks']} echo, 1 worker",
            f"{r['drain']['tasks_per_s']:,.0f} tasks/s",
            f"{r['drain']['seconds']} s, {r['drain']['rows']} rows",
        ),
        (
            f"peer: arq, {r['peer']['completed']} no-op, max_jobs={r['peer']['max_jobs']}",
            f"{r['peer']['jobs_per_s']:,.0f} jobs/s",
            f"{r['peer']['seconds']:.2f} s",
        ),
        ("limit: redis-benchmark LPUSH", f"{lim['redis'].get('lpush_per_s', 0):,.0f} ops/s", "50 clients"),
        ("limit: redis-benchmark RPOP", f"{lim['redis'].get('rpop_per_s', 0):,.0f} ops/s", "50 clients"),
        (f"limit: Postgres COPY {lim['copy']['rows']} rows", f"{lim['copy']['rows_per_s']:,.0f} rows/s", ""),
        (
            "latency: submit -> completed (idle)",
            f"p50 {r['latency']['p50_ms']:.2f} ms",
            f"p99 {r['latency']['p99_ms']:.2f} ms",
        ),
        *features.rows(r.get("features")),
        *result_wait.rows(r.get("result_wait")),
    ]
    width = max(len(a) for a, _, _ in rows)
    lines = [f"| {'measure':<{width}} | {'result':>16} | {'':<24} |", f"|{'-' * (width + 2)}|{'-' * 18}|{'-' * 26}|"]
    lines += [f"| {a:<{width}} | {b:>16} | {c:<24} |" for a, b, c in rows]
    lines += ["", "| process | RSS idle MB | RSS after MB | PSS idle MB |", "|---|---:|---:|---:|"]
    idle, after = r["memory"]["idle"], r["memory"]["after"]
    for name in idle:
        lines.append(
            f"| {name} | {idle[name]['rss_mb']} | {after.get(name, {}).get('rss_mb', '-')} | {idle[name]['pss_mb']} |"
        )
    total_idle = sum(m["pss_mb"] for m in idle.values())
    total_after = sum(m["pss_mb"] for m in after.values())
    lines.append(f"| total (PSS) | {total_idle:.0f} | {total_after:.0f} | |")
    lines += ["", "| target | wanted | met |", "|---|---|---|"]
    lines += [f"| {what} | {wanted} | {'yes' if ok else 'NO'} |" for what, wanted, ok in targets(r)]
    return "\n".join(lines)


def write_report(result: dict[str, Any], name: str) -> Path:
    """reports/<name>-<local time>.json, indented."""
    reports = ROOT / "reports"
    reports.mkdir(exist_ok=True)
    path = reports / f"{name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="--compose: ingest, drain and idle memory on a native and a Compose stack side by side "
        "(benchmarks/compose.py; python -m benchmarks --compose --help)",
    )
    parser.add_argument("--seconds", type=int, default=8, help="duration of each wrk phase")
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks drained (ours) and jobs (arq)")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--reuse", action="store_true", help="measure the running stack (needs RATE_LIMIT_RPS=0)")
    parser.add_argument(
        "--concurrency", type=int, default=100, help="WORKER_CONCURRENCY of the bench's stack (arq: max_jobs=100)"
    )
    args = parser.parse_args(argv)
    for tool in ("wrk", "redis-benchmark", "redis-server"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (apt-get install wrk redis-tools redis-server)")

    begun = time.monotonic()
    target = open_target(args.reuse, args.concurrency)
    workers_before = target.control.replicas(WORKER_SERVICE)
    result: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "worker_concurrency": args.concurrency if target.stack else "as running",
    }
    try:
        time.sleep(3)  # let start-up settle before the idle figures
        result["memory"] = {"idle": memory(target)}
        say(f"latency: {args.latency_samples} echo tasks, one at a time, idle stack")
        result["latency"] = latency(target, args.latency_samples)
        result["result_wait"] = result_wait.measure(target)
        result["features"] = features.measure(target)
        stop_workers(target)
        with tempfile.TemporaryDirectory(prefix="ss-bench-") as tmp:
            result["http"] = http_phases(target, args.seconds, Path(tmp))
        settle(target)
        result["drain"] = drain(target, args.tasks)
        say("limits: redis-benchmark LPUSH/RPOP, Postgres COPY")
        redis_figures = redis_limits(target)
        settle(target)
        result["limits"] = {"redis": redis_figures, "copy": copy_ceiling(target, args.tasks)}
        result["peer"] = arq_peer(args.tasks, 100)
        for name in workers_before:
            target.control.start(name)
        time.sleep(2)
        result["memory"]["after"] = memory(target)
    finally:
        if target.stack is not None:
            say("stopping the stack this bench started")
            target.stack.down()
        else:
            for name in workers_before:
                target.control.start(name)
    result["seconds"] = round(time.monotonic() - begun, 1)
    result["targets"] = [{"what": w, "wanted": t, "met": ok} for w, t, ok in targets(result)]
    path = write_report(result, "bench")
    print()
    print(table(result))
    print(f"\n{result['seconds']} s in all; written to {path.relative_to(ROOT)}")
    return 0
