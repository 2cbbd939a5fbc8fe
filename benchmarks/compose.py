"""`python -m benchmarks --compose` (issue #13): the bench's ingest, drain and idle memory figures
on a native stack and on a Compose project side by side, from one run on one machine.

Always starts its own throwaway stacks and removes both afterwards, never the running demo stack:
a native one (harness.stacks.Stack: temporary STATE_DIR, free ports) and a Compose project
`ss-test-<random>` (harness.stacks.ComposeStack: this checkout's docker-compose.yml, plus
docker-compose.offline.yml when OFFLINE_IMAGES=1, on free loopback ports), both with the suite's
settings (rate limiting off, no queue bound, 2 gateways, 2 workers, WORKER_CONCURRENCY 100).

Both stacks run at once; the floor/ingest rounds and then the drains alternate between them (the
order flips every round), so a slow window on a shared machine lands on both columns rather than
on one, and each figure is its engine's median round. The phases are the suite's own
(benchmarks/suite.py): ingest_round, drain, settle, memory. Workers are stopped for the HTTP
rounds, as in the suite; each drain starts one worker on 20,000 queued echo tasks and times it
until the queue and its processing list are empty, then counts the persisted rows.

The committed nginx/compose.conf has a fixed rate limit (200 r/s, burst 400) that would cap the
Compose column; the bench renders the same template without it and mounts that copy over
/etc/nginx/nginx.conf through an extra override file (`-f`). The figures are taken as they are,
so they include what differs between the engines: see NOTES.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from benchmarks.suite import (
    ROUNDS,
    drain,
    ingest_round,
    median_round,
    memory,
    process_memory,
    settle,
    task_body,
    write_report,
)
from benchmarks.target import Measured, native_target, stack_env, stop_workers
from harness.stacks import ComposeStack, Stack
from load_test.stack import offline_images
from native import render
from native.plan import ROOT

NOTES = (
    f"Compose nginx: nginx/compose.conf rendered without its rate limit "
    f"({render.COMPOSE_RATE_LIMIT[0]} r/s, burst {render.COMPOSE_RATE_LIMIT[1]}) and mounted over it by an "
    "override file; native nginx runs with RATE_LIMIT_RPS=0.",
    "Compose nginx resolves the gateways by service name per request, without keepalive to them; "
    "native nginx keeps upstream connections alive.",
    "Compose services reach Redis and Postgres over TCP on the bridge network; native ones reach "
    "Redis through its unix socket and Postgres over loopback TCP.",
    "Memory: PSS/RSS are read from the host's /proc over each process tree, for both engines; "
    "'docker stats' is the container cgroup's usage less inactive page cache, so it also counts "
    "active page cache and kernel memory.",
)
#: docker stats prints binary units for memory; the decimal ones are accepted in case.
UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "kB": 1e3, "MB": 1e6, "GB": 1e9}


def _say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# -- the Compose stack ---------------------------------------------------------------------


def unlimited_nginx(folder: Path) -> Path:
    """An override file mounting a copy of the Compose nginx config without the rate limit.

    A `volumes` entry with the same target replaces the base file's, so this is the only mount.
    """
    conf = folder / "nginx-bench.conf"
    conf.write_text(render.nginx_compose(0, 0))
    conf.chmod(0o644)
    override = folder / "docker-compose.bench.yml"
    override.write_text(f"services:\n  nginx:\n    volumes:\n      - {conf}:/etc/nginx/nginx.conf:ro\n")
    return override


def megabytes(size: str) -> float:
    """'45.2MiB' -> 45.2 (MiB, as the suite counts MB)."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([A-Za-z]+)\s*", size)
    if not match or match.group(2) not in UNITS:
        raise ValueError(f"not a docker stats size: {size!r}")
    return round(float(match.group(1)) * UNITS[match.group(2)] / 2**20, 1)


def container_memory(stack: ComposeStack) -> dict[str, dict[str, float]]:
    """Per running container, as `<service>-<number>`: docker stats' MEM USAGE and the PSS and RSS
    of its process tree (read from the host, as the native figures are)."""
    listing = stack.docker.docker(
        "ps",
        "--filter",
        f"label=com.docker.compose.project={stack.project}",
        "--format",
        '{{.Names}}\t{{.Label "com.docker.compose.service"}}\t{{.Label "com.docker.compose.container-number"}}',
    )
    keys = {
        name: f"{service}-{number}"
        for name, service, number in (line.split("\t") for line in listing.splitlines() if line)
    }
    stats = stack.docker.docker("stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}", *keys)
    pids = stack.docker.docker("inspect", "--type", "container", "--format", "{{.Name}}\t{{.State.Pid}}", *keys)
    pid_of = {name.lstrip("/"): int(pid) for name, pid in (line.split("\t") for line in pids.splitlines())}
    out: dict[str, dict[str, float]] = {}
    for line in stats.splitlines():
        name, usage = line.split("\t")
        used, limit = usage.split("/")
        out[keys[name]] = {
            "stats_mb": megabytes(used),
            "limit_mb": megabytes(limit),
            **(process_memory(pid_of[name]) or {}),
        }
    return dict(sorted(out.items()))


def published_through(port: int) -> str:
    """What carries wrk's connections to a published loopback port: Docker's userland proxy (a
    process copying every byte, on the same cores as the stack) unless the daemon runs without it,
    in which case iptables NAT forwards them."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        host_port = any(a == "-host-port" and b == str(port) for a, b in itertools.pairwise(cmd))
        if proc.info["name"] == "docker-proxy" and host_port:
            return "docker-proxy, Docker's userland proxy (a process copying every byte)"
    return "iptables NAT (no userland proxy)"


def notes(compose: ComposeStack) -> list[str]:
    """How the two columns differ besides the engine, as found on this run."""
    port = int(compose.env["LB_PORT"])
    images = "offline stand-ins built from Debian packages" if offline_images() else "the official images"
    return [
        f"wrk reaches the Compose nginx through its published loopback port, carried by {published_through(port)}; "
        "the native nginx listens on loopback itself.",
        *NOTES,
        f"Compose images: {images} ({', '.join(f.name for f in compose.docker.files)}).",
    ]


def native_memory(stack: Stack) -> dict[str, dict[str, float]]:
    """The suite's per-program figures, named as Compose names containers (`redis` is `redis-1`)."""
    target = native_target(stack)
    single = {p.name for p in target.plan.programs if p.name == p.service}
    return {f"{name}-1" if name in single else name: m for name, m in sorted(memory(target).items())}


# -- the run -------------------------------------------------------------------------------


def start(native: Stack, compose: ComposeStack) -> None:
    """Both stacks at once: each start is mostly waiting on health checks."""
    with ThreadPoolExecutor(2) as pool:
        native_up, compose_up = pool.submit(native.up), pool.submit(compose.up)
        native_up.result()
        compose_up.result()


def _order(stacks: dict[str, Measured], n: int) -> list[str]:
    """Round n's order of the engines: flipped every round, so neither always goes first."""
    return list(stacks) if n % 2 else list(reversed(stacks))


def ingest(stacks: dict[str, Measured], seconds: int, tmp: Path) -> dict[str, dict[str, Any]]:
    """The suite's floor/ingest rounds, alternated between the engines; the median round of each."""
    single = task_body(tmp)
    each = max(1, seconds // 2)
    rounds: dict[str, list[dict[str, dict[str, Any]]]] = {engine: [] for engine in stacks}
    for n in range(1, ROUNDS + 1):
        for engine in _order(stacks, n):
            _say(f"round {n}/{ROUNDS}, {engine}: floor (GET /health) then ingest (POST /api/task), {each} s each")
            rounds[engine].append(ingest_round(stacks[engine], each, single))
    out: dict[str, dict[str, Any]] = {}
    for engine, taken in rounds.items():
        floor = median_round([r["floor"] for r in taken])
        accepted = median_round([r["ingest"] for r in taken])
        out[engine] = {
            "floor": floor,
            "ingest": accepted,
            "ingest_per_floor": accepted["rps"] / floor["rps"] if floor["rps"] else None,
            "rounds": [{"floor_rps": r["floor"]["rps"], "ingest_rps": r["ingest"]["rps"]} for r in taken],
        }
    return out


def drains(stacks: dict[str, Measured], tasks: int) -> dict[str, dict[str, Any]]:
    """The suite's drain, alternated between the engines like the ingest rounds; the median round
    of each, and the fewest rows any round persisted."""
    rounds: dict[str, list[dict[str, Any]]] = {engine: [] for engine in stacks}
    for n in range(1, ROUNDS + 1):
        for engine in _order(stacks, n):
            settle(stacks[engine])
            _say(f"round {n}/{ROUNDS}, {engine}:")
            rounds[engine].append(drain(stacks[engine], tasks))
    return {
        engine: {
            **median_round(taken, "tasks_per_s"),
            "fewest_rows": min(r["rows"] for r in taken),
            "rounds": [r["tasks_per_s"] for r in taken],
        }
        for engine, taken in rounds.items()
    }


def run(seconds: int, tasks: int, concurrency: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="ss-bench-compose-"))
    folder.chmod(0o755)  # nginx's config is mounted from here, by whichever user the Docker daemon runs as
    native = Stack(stack_env(concurrency))
    compose = ComposeStack(stack_env(concurrency))
    compose.docker.files.append(unlimited_nginx(folder))
    result: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "worker_concurrency": concurrency,
        "compose_project": compose.project,
        "compose_files": [str(f) for f in compose.docker.files],
    }
    _say(f"starting a native stack and the Compose project {compose.project} (nginx without its rate limit)")
    try:
        start(native, compose)
        result["notes"] = notes(compose)
        stacks: dict[str, Measured] = {"native": native, "compose": compose}
        time.sleep(3)  # let start-up settle before the idle figures
        _say("idle memory: PSS/RSS per process tree, docker stats per container")
        result["memory"] = {"native": native_memory(native), "compose": container_memory(compose)}
        for stack in stacks.values():
            stop_workers(stack)
        with tempfile.TemporaryDirectory(prefix="ss-bench-") as tmp:
            result["http"] = ingest(stacks, seconds, Path(tmp))
        result["drain"] = drains(stacks, tasks)
    finally:
        _say("removing both stacks")
        try:
            native.down()
        finally:
            compose.down()
            shutil.rmtree(folder, ignore_errors=True)
    return result


# -- report --------------------------------------------------------------------------------


def _versus(native: float | None, compose: float | None) -> str:
    return f"{compose / native:.2f}" if native and compose is not None else "n/a"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def figures_table(r: dict[str, Any]) -> str:
    n_http, c_http = r["http"]["native"], r["http"]["compose"]
    rows: list[tuple[str, str, str, str]] = []
    for what, key in (("floor: GET /health via nginx", "floor"), ("ingest: POST /api/task", "ingest")):
        n, c = n_http[key], c_http[key]
        rows.append((f"{what}, req/s", f"{n['rps']:,.0f}", f"{c['rps']:,.0f}", _versus(n["rps"], c["rps"])))
        rows.append((f"{what}, p99 ms", f"{n['p99_ms']:.1f}", f"{c['p99_ms']:.1f}", _versus(n["p99_ms"], c["p99_ms"])))
    rows.append(("ingest / floor", _ratio(n_http["ingest_per_floor"]), _ratio(c_http["ingest_per_floor"]), ""))
    n, c = r["drain"]["native"], r["drain"]["compose"]
    rate = (f"{n['tasks_per_s']:,.0f}", f"{c['tasks_per_s']:,.0f}", _versus(n["tasks_per_s"], c["tasks_per_s"]))
    rows.append((f"drain: {n['tasks']} echo, 1 worker, tasks/s", *rate))
    rows.append(("drain: seconds", f"{n['seconds']}", f"{c['seconds']}", _versus(n["seconds"], c["seconds"])))
    rows.append(("drain: rows persisted, fewest of any round", f"{n['fewest_rows']}", f"{c['fewest_rows']}", ""))
    width = max(len(row[0]) for row in rows)
    header = ("measure", "native", "compose", "compose/native")
    lines = [f"| {header[0]:<{width}} | {header[1]:>15} | {header[2]:>15} | {header[3]:>14} |"]
    lines.append(f"|{'-' * (width + 2)}|{'-' * 16}:|{'-' * 16}:|{'-' * 15}:|")
    lines += [f"| {a:<{width}} | {b:>15} | {c:>15} | {d:>14} |" for a, b, c, d in rows]
    return "\n".join(lines)


def memory_table(r: dict[str, Any]) -> str:
    """One row per container (Compose's `<service>-<number>`), one column per figure; `-` where an
    engine has no such process (supervisord, the socket proxy)."""
    columns = [("native", "pss_mb"), ("native", "rss_mb"), ("compose", "pss_mb"), ("compose", "rss_mb")]
    columns += [("compose", "stats_mb"), ("compose", "limit_mb")]
    idle = r["memory"]
    lines = [
        "| idle MB | native PSS | native RSS | compose PSS | compose RSS | docker stats | limit |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in sorted(idle["native"].keys() | idle["compose"].keys()):
        cells = [idle[engine].get(name, {}).get(key) for engine, key in columns]
        lines.append(f"| {name} | {' | '.join('-' if v is None else f'{v:.1f}' for v in cells)} |")
    totals = [sum(m.get(key, 0) for m in idle[engine].values()) for engine, key in columns[:-1]]
    lines.append(f"| total | {' | '.join(f'{t:.0f}' for t in totals)} | |")
    return "\n".join(lines)


def table(r: dict[str, Any]) -> str:
    notes = [f"- {note}" for note in r["notes"]]
    return "\n".join(
        [
            f"Median of {ROUNDS} alternating rounds per engine, for every figure but memory.",
            figures_table(r),
            "",
            memory_table(r),
            "",
            *notes,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks --compose", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=int, default=8, help="wrk time per round and engine (floor and ingest halve it)"
    )
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks drained by one worker, on each engine")
    parser.add_argument("--concurrency", type=int, default=100, help="WORKER_CONCURRENCY of both stacks")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found (apt-get install wrk)")

    begun = time.monotonic()
    result = run(args.seconds, args.tasks, args.concurrency)
    result["seconds"] = round(time.monotonic() - begun, 1)
    path = write_report(result, "bench-compose")
    print()
    print(table(result))
    print(f"\n{result['seconds']} s in all; written to {path.relative_to(ROOT)}")
    return 0
