"""`python -m load_test [--out reports] [--drain S] [-- locust ...]`: a headless Locust run,
measured from both sides, into reports/<timestamp>/ (summary.json, report.html, Locust's files).

Locust runs as a subprocess (its gevent monkey-patching stays out of this process). Meanwhile the
stack is read once a second from the dashboard (queue, in flight, workers, completions), and a
progress line is printed. When the load ends, the run waits for every accepted task to reach a
final state in Postgres (or for --drain seconds); `lost` and `duplicates` are what Postgres
says about the accepted ids, in one query. Exit code 0 when nothing was lost or duplicated.

Without `-- locust ...` the command is built from CONCURRENT_USERS, SPAWN_RATE, DURATION and
TARGET_URL (default: this checkout's native stack); LOAD_SHAPE picks steady, step or spike.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from core.settings import LoadTest
from load_test import report
from load_test.stack import ROOT, Targets, decisions_between, outcomes, sample, scaling, targets, wait_until_up

HERE = Path(__file__).resolve().parent
LOAD_TEST = LoadTest()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(float(raw)) if raw else default


def locust_command(passed: list[str], host: str, folder: Path) -> list[str]:
    if passed:
        # `locust` may not be on PATH (a venv not activated): run this interpreter's.
        cmd = [sys.executable, "-m", "locust", *passed[1:]] if passed[0] == "locust" else list(passed)
    else:
        users = _env_int("CONCURRENT_USERS", LOAD_TEST.concurrent_users)
        cmd = [
            *(sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py")),
            *("--headless", "--only-summary", "--host", host, "--users", str(users)),
            *(
                "--spawn-rate",
                str(_env_int("SPAWN_RATE", users)),
                "--run-time",
                f"{_env_int('DURATION', LOAD_TEST.duration)}s",
            ),
        ]
    return [*cmd, "--csv", str(folder / "locust"), "--csv-full-history", "--html", str(folder / "locust.html")]


def new_folder(out: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        folder = out / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise SystemExit(f"cannot create a report folder under {out}")


def read_history(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        return []


def _num(raw: str | None) -> float | None:
    try:
        return float(raw) if raw not in (None, "", "N/A") else None
    except ValueError:
        return None


def progress(elapsed: float, history: list[dict[str, str]], s: dict[str, Any] | None, refused: dict[str, int]) -> str:
    last = next((r for r in reversed(history) if r.get("Name") == "Aggregated"), None)
    users = last["User Count"] if last else "-"
    rps = _num(last.get("Requests/s")) if last else None
    p50 = _num(last.get("50%")) if last else None
    p95 = _num(last.get("95%")) if last else None
    client = f"users {users:>3}  req/s {rps or 0:6.1f}  p50 {p50 or 0:5.0f} ms  p95 {p95 or 0:5.0f} ms"
    client += f"  429 {refused['429']}  503 {refused['503']}"
    stack = (
        f"queue {s['queue']:>5}  in flight {s['in_flight']:>4}  workers {s['workers']}  done {s['completed']}"
        if s
        else "dashboard not answering"
    )
    return f"[{elapsed:5.0f} s] {client} | {stack}"


def refused_counts(history: list[dict[str, str]]) -> dict[str, int]:
    latest: dict[str, int] = {}
    for row in history:
        name = row.get("Name", "")
        if name.endswith("]"):
            latest[name] = int(_num(row.get("Total Request Count")) or 0)
    return {code: sum(n for name, n in latest.items() if name.endswith(f"[{code}]")) for code in ("429", "503")}


def read_ids(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def charts(
    history: list[dict[str, str]], samples: list[dict[str, Any]], marks: list[tuple[float, str]]
) -> list[report.Chart]:
    agg = [r for r in history if r.get("Name") == "Aggregated"]
    by_t: dict[float, dict[str, float]] = {}
    for row in history:
        for code in ("429", "503"):
            if row.get("Name", "").endswith(f"[{code}]"):
                slot = by_t.setdefault(float(row["Timestamp"]), {})
                slot[code] = slot.get(code, 0.0) + (_num(row.get("Requests/s")) or 0.0)

    def col(rows: list[dict[str, str]], name: str) -> list[report.Point]:
        return [(float(r["Timestamp"]), _num(r.get(name))) for r in rows]

    times = [float(r["Timestamp"]) for r in agg]
    completions: list[report.Point] = []
    for before, after in itertools.pairwise(samples):
        dt = after["t"] - before["t"]
        completions.append((after["t"], max(0, after["completed"] - before["completed"]) / dt if dt > 0 else None))
    failures = [
        (after["t"], max(0, after["failed"] - before["failed"]) / (after["t"] - before["t"]))
        for before, after in itertools.pairwise(samples)
        if after["t"] > before["t"]
    ]

    def of(key: str) -> list[report.Point]:
        return [(s["t"], s[key]) for s in samples]

    return [
        report.Chart(
            "rate",
            "Request rate (Locust)",
            "requests/s",
            [
                report.Line("all", "#2563eb", col(agg, "Requests/s")),
                report.Line("429", "#d97706", [(t, by_t.get(t, {}).get("429", 0.0)) for t in times]),
                report.Line("503", "#dc2626", [(t, by_t.get(t, {}).get("503", 0.0)) for t in times]),
                report.Line("errors", "#111827", col(agg, "Failures/s")),
                report.Line("users", "#6b7280", col(agg, "User Count")),
            ],
        ),
        report.Chart(
            "latency",
            "Response time p50 / p95 (Locust, all answers, last 10 s window)",
            "ms",
            [report.Line("p50", "#2563eb", col(agg, "50%")), report.Line("p95", "#dc2626", col(agg, "95%"))],
        ),
        report.Chart(
            "queue",
            "Queue depth and tasks in flight (dashboard)",
            "tasks",
            [report.Line("queued", "#b45309", of("queue")), report.Line("in flight", "#2563eb", of("in_flight"))],
        ),
        report.Chart(
            "workers",
            "Live workers, scaling decisions marked",
            "workers",
            [report.Line("workers", "#15803d", of("workers"))],
            marks,
        ),
        report.Chart(
            "completions",
            "Tasks finished per second (dashboard counters)",
            "tasks/s",
            [report.Line("completed", "#0891b2", completions), report.Line("failed", "#dc2626", failures)],
        ),
    ]


def run(args: argparse.Namespace) -> int:
    where = targets()
    wait_until_up(where, args.wait)
    folder = new_folder(Path(args.out))
    cmd = locust_command(args.locust, where.host, folder)
    print(f"load test against {where.host}; stack readings from {where.monitor}; report in {folder}", flush=True)
    monitor = httpx.Client(base_url=where.monitor, timeout=2)
    samples: list[dict[str, Any]] = []
    history_path = folder / "locust_stats_history.csv"
    started = time.time()
    with (folder / "locust.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "LOAD_TEST_DIR": str(folder)}, stdout=log, stderr=log)
        try:
            next_at = time.monotonic()
            while proc.poll() is None:
                if (s := sample(monitor)) is not None:
                    samples.append(s)
                history = read_history(history_path)
                print(progress(time.time() - started, history, s, refused_counts(history)), flush=True)
                next_at = max(next_at + 1, time.monotonic())
                # Wake at the next second or as soon as Locust exits, whichever is first.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.0, next_at - time.monotonic()))
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)  # Locust writes its files on the way out
            proc.wait(timeout=30)
    load_ended = time.time()
    print(f"load ended after {load_ended - started:.0f} s (locust exit code {proc.returncode}); draining", flush=True)
    return finish(args, where, folder, monitor, samples, started, load_ended, proc.returncode)


def drain(where: Targets, ids: list[str], monitor: httpx.Client, samples: list[dict[str, Any]], limit: float) -> Any:
    deadline = time.monotonic() + limit
    while True:
        if (s := sample(monitor)) is not None:
            samples.append(s)
        found = outcomes(where.database_url, ids)
        if found.lost == 0 or time.monotonic() > deadline:
            return found
        print(
            f"  draining: {found.accepted - found.lost}/{found.accepted} accepted tasks final in Postgres", flush=True
        )
        time.sleep(1)


def finish(
    args: argparse.Namespace,
    where: Targets,
    folder: Path,
    monitor: httpx.Client,
    samples: list[dict[str, Any]],
    started: float,
    load_ended: float,
    exit_code: int | None,
) -> int:
    ids = read_ids(folder / "accepted.txt")
    found = drain(where, ids, monitor, samples, args.drain)
    ended = time.time()
    decisions = decisions_between(scaling(monitor), started, ended)
    monitor.close()
    latency_path = folder / "latency.json"
    latency: dict[str, Any] = json.loads(latency_path.read_text()) if latency_path.exists() else {}
    history = read_history(folder / "locust_stats_history.csv")
    summary: dict[str, Any] = {
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "ended_at": datetime.fromtimestamp(ended, UTC).isoformat(),
        "run": {
            "target": where.host,
            "shape": os.environ.get("LOAD_SHAPE") or LOAD_TEST.load_shape,
            "users": os.environ.get("CONCURRENT_USERS") or str(LOAD_TEST.concurrent_users),
            "load_seconds": round(load_ended - started, 1),
            "locust_exit_code": exit_code,
        },
        "accepted": found.accepted,
        "accepted_ids_repeated": len(ids) - found.accepted,
        "completed": found.completed,
        "failed": found.failed,
        "lost": found.lost,
        "duplicates": found.duplicates,
        "requests": latency.get("requests"),
        "errors": latency.get("errors"),
        "errors_by_kind": latency.get("errors_by_kind", {}),
        "rate_limited": latency.get("rate_limited", 0),
        "backpressure": latency.get("backpressure", 0),
        "p50_ms": latency.get("p50_ms"),
        "p95_ms": latency.get("p95_ms"),
        "p99_ms": latency.get("p99_ms"),
        "max_ms": latency.get("max_ms"),
        "max_workers": max((s["workers"] for s in samples), default=None),
        "min_workers": min((s["workers"] for s in samples), default=None),
        "max_queue": max((s["queue"] for s in samples), default=None),
        "scale_events": len(decisions),
        "decisions": [
            {
                "at": d.get("at"),
                "offset": round(d["t"] - started, 1),
                **{k: d.get(k) for k in ("from", "to", "reasons")},
            }
            for d in decisions
        ],
        "drain_seconds": round(ended - load_ended, 1),
        "samples": len(samples),
    }
    summary["passed"] = bool(found.accepted and found.lost == 0 and found.duplicates == 0 and latency)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    marks = [(d["t"], f"{d.get('from')}\u2192{d.get('to')}") for d in decisions]
    page = report.render(summary, charts(history, samples, marks), started, ended)
    (folder / "report.html").write_text(page)
    keys = ("accepted", "completed", "failed", "lost", "duplicates", "rate_limited", "backpressure", "errors")
    print("  ".join(f"{k} {summary[k]}" for k in keys))
    print(
        f"p50 {summary['p50_ms']} ms  p95 {summary['p95_ms']} ms  p99 {summary['p99_ms']} ms  "
        f"workers max {summary['max_workers']}  scale events {summary['scale_events']}"
    )
    print(f"{'PASS' if summary['passed'] else 'FAIL'}: report {folder / 'report.html'}", flush=True)
    return 0 if summary["passed"] else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, passed = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python -m load_test", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("REPORTS_DIR", str(ROOT / "reports")))
    parser.add_argument("--drain", type=float, default=float(os.environ.get("DRAIN_SECONDS", "120")))
    parser.add_argument("--wait", type=float, default=120, help="seconds to wait for the stack to answer")
    args = parser.parse_args(own)
    args.locust = passed
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
