"""`python -m load_test.scenarios NAME [--short]`: one system-design concept, scripted and measured.

  burst             a burst of work -> the autoscaler scales out -> the queue drains -> scale-in
  worker-crash      kill -9 a worker mid-task -> its tasks are requeued and finish
  gateway-failover  stop a gateway replica under traffic -> nginx routes around it
  rate-limit        one client over its limit gets 429 + Retry-After, another does not
  cache             a task read from Redis (hot copy) vs from Postgres (durable copy)

Each narrates what it does, checks what it claims, and ends with PASS or FAIL (exit code 0 or 1).
The dashboard shows the running scenario and its outcome (Redis key keys.SCENARIO). Either engine:
replicas are killed, stopped and started through load_test.control (supervisord's programs, or
the Compose project's containers). Anything stopped is started again.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import signal
import statistics
import subprocess
import sys
import threading
import time
import xmlrpc.client
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import httpx
from redis import Redis

from core import keys
from core.models import FINAL_STATUSES
from load_test.control import GATEWAY_SERVICE, WORKER_SERVICE, ComposeControl
from load_test.stack import decisions_between, outcomes, sample, scaling, targets

T = TypeVar("T")
#: What a failed stop, kill or start raises: supervisord's faults, its socket, the docker CLI.
CONTROL_ERRORS = (xmlrpc.client.Fault, OSError, RuntimeError, subprocess.TimeoutExpired)
#: Who brings a killed replica back, per engine.
RESTARTER = {"native": "supervisord", "compose": "Docker (restart: unless-stopped)"}


class Run:
    """One scenario's clients, narration and checks."""

    def __init__(self, name: str, concept: str, short: bool) -> None:
        self.name, self.concept, self.short = name, concept, short
        self.where = targets()
        if self.where.redis_url is None:
            raise SystemExit("the scenarios read Redis: set REDIS_URL (./demo.sh scenario does)")
        self.control = self.where.control()
        self.http = httpx.Client(base_url=self.where.host, timeout=10)
        self.monitor = httpx.Client(base_url=self.where.monitor, timeout=5)
        self.redis = Redis.from_url(self.where.redis_url, decode_responses=True)
        self.started = time.time()
        self.checks: list[tuple[bool, str]] = []

    def close(self) -> None:
        self.http.close()
        self.monitor.close()
        self.redis.close()
        self.control.close()

    # -- narration and verdict ------------------------------------------------------------

    def say(self, text: str) -> None:
        print(f"[{time.time() - self.started:5.1f} s] {text}", flush=True)

    def check(self, ok: bool, claim: str) -> bool:
        self.checks.append((ok, claim))
        print(f"          {'ok  ' if ok else 'FAIL'} {claim}", flush=True)
        return ok

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(ok for ok, _ in self.checks)

    def mark(self, state: str, detail: str = "") -> None:
        """What the dashboard's banner shows; best effort (a scenario may have Redis down on purpose)."""
        marker = {
            "name": self.name,
            "concept": self.concept,
            "state": state,
            "started_at": self.started,
            "ended_at": None if state == "running" else time.time(),
            "detail": detail,
        }
        try:
            self.redis.set(keys.SCENARIO, json.dumps(marker), ex=keys.SCENARIO_TTL_SECONDS)
        except OSError:
            pass
        except Exception as exc:
            print(f"          (dashboard marker not written: {exc})", flush=True)

    # -- the stack ------------------------------------------------------------------------

    def wait(self, condition: Callable[[], T], timeout: float, interval: float = 0.1) -> T | None:
        """The first truthy value of `condition` within `timeout` s, else None."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value or time.monotonic() > deadline:
                return value or None
            time.sleep(interval)

    def submit(self, task_type: str, data: dict[str, Any], client: httpx.Client | None = None) -> str:
        deadline = time.monotonic() + 30
        while True:
            response = (client or self.http).post("/api/task", json={"type": task_type, "data": data})
            if response.status_code not in (429, 503) or time.monotonic() > deadline:
                break
            time.sleep(float(response.headers.get("retry-after", "1")) / 4)  # a polite client backs off
        if response.status_code != 202:
            raise RuntimeError(f"POST /api/task answered {response.status_code}: {response.text[:200]}")
        return str(response.json()["task_id"])

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/task/{task_id}")
        return dict(response.json()) if response.status_code == 200 else {}

    def all_final_in_postgres(self, ids: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        # The final record reaches Postgres in batches, a moment after Redis shows it.
        while (final := outcomes(self.where.database_url, ids)).lost and time.monotonic() < deadline:
            time.sleep(0.5)
        return self.check(
            final.lost == 0 and final.duplicates == 0,
            f"Postgres holds a final state for all {final.accepted} tasks (completed {final.completed}, "
            f"failed {final.failed}, lost {final.lost}, duplicates {final.duplicates})",
        )

    def restart(self, name: str) -> None:
        """Start `name`; a failed start is narrated, and the caller's wait decides the outcome."""
        try:
            self.control.start(name)
        except CONTROL_ERRORS as exc:
            self.say(f"starting {name} failed ({exc}); waiting for it to come up")

    def settle(self, timeout: float) -> None:
        """Wait until the autoscaler holds still: nothing restarts a worker it is removing."""

        def quiet() -> bool:
            advice = scaling(self.monitor) or {}
            if advice.get("mode") != "on":
                return True
            running = len(self.control.replicas(WORKER_SERVICE))
            return advice.get("action") == "maintain" and advice.get("current") == advice.get("desired") == running

        if quiet():
            return
        self.say("The autoscaler is resizing the workers; waiting for it to finish, so the one killed here is not")
        self.say("one it is removing.")
        if not self.wait(quiet, timeout, 0.5):
            self.say(f"It was still resizing after {timeout:g} s; going on.")

    def restarted(self, name: str, before: str) -> bool:
        """`name` runs, and is not the process (or container start) whose identity was `before`."""
        try:
            return self.control.is_running(name) and self.control.identity(name) != before
        except CONTROL_ERRORS:
            return False


# -- the scenarios ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One request of the failover scenario's client."""

    at: float  # monotonic, when the answer came
    took: float  # seconds, sent to answered
    status: int  # 0: no HTTP answer
    by: str  # the replica that served it, or the error's name
    task_id: str | None


def worker_crash(run: Run) -> None:
    n, ms = (4, 2000) if run.short else (8, 4000)
    run.settle(60)
    run.say(f"Submitting {n} tasks that each sleep {ms} ms, so some are mid-run when a worker dies.")
    ids = [run.submit("sleep", {"ms": ms}) for _ in range(n)]
    victim = run.wait(lambda: next((t for i in ids if (t := run.task(i)).get("status") == "processing"), None), 20)
    if not run.check(victim is not None, "a task is being processed"):
        return
    assert victim is not None
    worker = str(victim["worker_id"])
    name = run.control.owner_of(worker)
    on_it = [i for i in ids if (t := run.task(i)).get("worker_id") == worker and t.get("status") == "processing"]
    before = run.control.identity(name)
    run.control.kill(name, signal.SIGKILL)
    killed = time.monotonic()
    run.say(f"kill -9 {name} while it runs {len(on_it)} task(s). Its heartbeat stops;")
    run.say("the reaper moves its in-flight list back to the queue once the heartbeat expires (~5 s).")
    final = run.wait(lambda: all(run.task(i).get("status") in FINAL_STATUSES for i in ids) and ids, 60, 0.25)
    run.say(f"All {n} tasks final {time.monotonic() - killed:.1f} s after the kill.")
    tasks = [run.task(i) for i in ids]
    run.check(bool(final) and all(t.get("status") == "completed" for t in tasks), f"all {n} tasks completed")
    again = [t for t in tasks if t["id"] in on_it]
    run.check(
        bool(again) and all(int(t.get("attempts", 0)) >= 2 and t.get("worker_id") != worker for t in again),
        f"the {len(on_it)} task(s) the dead worker held ran again in another worker process (attempts "
        f"{[t.get('attempts') for t in again]})",
    )
    run.all_final_in_postgres(ids, 20)
    restarter = RESTARTER.get(run.control.engine, run.control.engine)
    run.check(bool(run.wait(lambda: run.restarted(name, before), 30, 0.2)), f"{restarter} restarted {name}")


def gateway_failover(run: Run) -> None:
    seconds = 4.0 if run.short else 10.0
    gateways = run.control.replicas(GATEWAY_SERVICE)
    if not run.check(len(gateways) >= 2, f"two or more gateway replicas run ({', '.join(gateways) or 'none'})"):
        return
    victim, survivors = gateways[0], gateways[1:]
    # X-Served-By is a replica's id: its supervisord name, or "<container hostname>-<pid>".
    ids = {name: run.control.served_by(name) for name in gateways}

    def replica(served_by: str) -> str:
        return next((n for n, i in ids.items() if served_by == i or served_by.startswith(f"{i}-")), served_by)

    results: list[Reply] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=run.where.host, timeout=10) as client:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    r = client.post("/api/task", json={"type": "echo", "data": {"failover": True}})
                    task_id = r.json().get("task_id") if r.status_code == 202 else None
                    by = replica(r.headers.get("x-served-by", "?"))
                    results.append(Reply(time.monotonic(), time.monotonic() - sent, r.status_code, by, task_id))
                except httpx.HTTPError as exc:
                    results.append(Reply(time.monotonic(), time.monotonic() - sent, 0, type(exc).__name__, None))
                time.sleep(0.01)

    # Compose's nginx keeps Docker's DNS answer for 5 s (resolver valid=5s): until it re-resolves,
    # a request it sends first to the stopped gateway's address waits out the 1 s connect timeout
    # before the next replica serves it. The client keeps going past that.
    watch = seconds - 1.0 if run.control.engine == "native" else max(seconds - 1.0, 8.0)
    run.say(f"One client sends tasks steadily through nginx; {len(gateways)} gateways serve.")
    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    time.sleep(1.0)
    try:
        stopping_at = time.monotonic()
        run.say(f"Stopping {victim} (SIGTERM, as a rolling deploy or a scale-in would); it finishes open requests.")
        run.control.stop(victim)
        stopped_at = time.monotonic()
        run.say(
            f"{victim} exited after {stopped_at - stopping_at:.1f} s; the client goes on to {watch:g} s past the stop."
        )
        time.sleep(max(0.0, watch - (time.monotonic() - stopping_at)))
        stop.set()
        thread.join(15)
    finally:
        stop.set()
        run.say(f"Starting {victim} again.")
        run.restart(victim)
    before = [r for r in results if r.at < stopping_at]
    after = [r for r in results if r.at >= stopped_at]
    served = {name: sum(1 for r in after if r.status == 202 and r.by == name) for name in gateways}
    refused = sum(1 for r in after if r.status == 503)
    during = [r for r in results if stopping_at <= r.at < stopped_at]
    broken = [r for r in during + after if r.status not in (202, 503)]
    slow = [r for r in during + after if r.took > 0.5]
    run.say(
        f"Before the stop: {len(before)} requests, {sum(1 for r in before if r.status == 202)} accepted. "
        f"While it shut down: {len(during)}. After: {len(after)} requests, accepted by {served}, "
        f"{refused} refused with 503, {len(broken)} other."
    )
    if slow:
        run.say(
            f"{len(slow)} request(s) took over 0.5 s (slowest {max(r.took for r in slow):.1f} s), the last one "
            f"answered {max(r.at for r in slow) - stopping_at:.1f} s after the stop began."
        )
    run.check(len(before) > 0 and len(after) > 10, "traffic flowed before and after the stop")
    run.check(
        served[victim] == 0 and sum(served[name] for name in survivors) > 0,
        f"after the stop every accepted task went to {', '.join(survivors)}",
    )
    run.check(not broken, "no request failed with anything but an honest 503 + Retry-After")
    run.check(len(after) > 0 and refused <= 0.05 * len(after), f"at most 5% refused ({refused} of {len(after)})")
    run.all_final_in_postgres([r.task_id for r in results if r.task_id], 30)

    def all_serve() -> bool:
        try:
            down = not run.control.is_running(victim)
        except CONTROL_ERRORS:
            down = True
        if down:
            run.restart(victim)  # a start that failed (e.g. code mid-deploy) is asked for again
        return {replica(run.http.get("/health").headers.get("x-served-by", "?")) for _ in range(10)} == set(gateways)

    run.check(bool(run.wait(all_serve, 30, 0.5)), f"{victim} is back and nginx sends it traffic again")


def rate_limit(run: Run) -> None:
    rps, burst = run.where.rate_limit
    if not run.check(rps > 0, f"nginx limits each client address (RATE_LIMIT_RPS={rps}, burst {burst})"):
        return
    url = httpx.URL(run.where.host)
    task_id = run.submit("echo", {"rate": "limit"})
    path = f"/api/task/{task_id}"
    budget = (rps + burst) * 4
    enough = threading.Event()
    answers: list[tuple[int, str, str]] = []
    local = threading.local()
    compose = isinstance(run.control, ComposeControl)
    # Docker's port proxy gives nginx one address for every connection from this machine (the
    # network's gateway), so under Compose the greedy client is this machine and the polite one
    # a container on the stack's network.
    greedy = "This machine (to nginx: the Docker network's gateway address)" if compose else "Client 127.0.0.2"
    source = None if compose else ("127.0.0.2", 0)

    def hit(_: int) -> None:
        if enough.is_set():
            return
        # http.client, one keep-alive connection per thread: light enough on the client side that
        # one process outruns a few hundred requests per second.
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(url.host, url.port, timeout=10, source_address=source)
        local.conn.request("GET", path)
        response = local.conn.getresponse()
        answers.append((response.status, response.getheader("Retry-After") or "", response.read().decode()))
        if response.status == 429 and sum(1 for a in answers if a[0] == 429) >= 20:
            enough.set()

    run.say(f"{greedy} polls one task's status in a tight loop, up to {budget} times (limit {rps}/s, burst {burst}).")
    started = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(hit, range(budget)))
    elapsed = time.monotonic() - started
    limited = [a for a in answers if a[0] == 429]
    polite, ask = polite_client(run)
    run.say(f"Meanwhile {polite} asks politely, 10 times.")
    polite_codes = ask(10)
    run.say(
        f"{greedy}: {len(answers)} requests in {elapsed:.1f} s, {len(answers) - len(limited)} served, "
        f"{len(limited)} answered 429. The polite client: {polite_codes.count(200)}/10 answered 200."
    )
    run.check(bool(limited), "the greedy client was rate limited (429)")
    retry_after = limited[0][1] if limited else ""
    run.check(retry_after.isdigit() and int(retry_after) >= 1, f"429 carries Retry-After ({retry_after or 'none'})")
    run.check(bool(limited) and json.loads(limited[0][2]).get("error") == "rate_limited", "429 body: rate_limited")
    run.check(429 not in polite_codes, "the other client was not limited")


def polite_client(run: Run) -> tuple[str, Callable[[int], list[int]]]:
    """Who the polite client is, and how it sends `n` GET /api/status (their status codes)."""
    if not isinstance(run.control, ComposeControl):

        def ask_natively(n: int) -> list[int]:
            transport = httpx.HTTPTransport(local_address="127.0.0.3")
            with httpx.Client(base_url=run.where.host, transport=transport, timeout=10) as client:
                return [client.get("/api/status").status_code for _ in range(n)]

        return "client 127.0.0.3", ask_natively
    control = run.control
    # A container nginx has no requests from: the dashboard reaches the workers directly, never nginx.
    container = control.replicas("monitoring")[0]

    def ask_in_network(n: int) -> list[int]:
        script = (
            "import urllib.error, urllib.request\n"
            f"for _ in range({n}):\n"
            "    try:\n"
            "        print(urllib.request.urlopen('http://nginx/api/status', timeout=10).status)\n"
            "    except urllib.error.HTTPError as exc:\n"
            "        print(exc.code)\n"
        )
        return [int(code) for code in control.docker("exec", container, "python", "-c", script).split()]

    return f"a client on the stack's network ({container})", ask_in_network


def cache(run: Run) -> None:
    n = 10 if run.short else 30
    run.say(f"Submitting {n} echo tasks and waiting for their durable copies in Postgres.")
    ids = [run.submit("echo", {"i": i}) for i in range(n)]
    if not run.all_final_in_postgres(ids, 30):
        return

    def timed(task_id: str) -> tuple[float, dict[str, Any]]:
        begin = time.perf_counter()
        body = run.task(task_id)
        return (time.perf_counter() - begin) * 1000, body

    run.say("Reading each task through the API while its hot copy is in Redis.")
    hot = [timed(i) for i in ids for _ in range(3)]
    run.say("Deleting each hot copy (as its result TTL would) and reading again: the gateway falls back to")
    run.say("Postgres and caches the record back into Redis for the next reader.")
    cold = []
    refilled = 0
    for task_id in ids:
        run.redis.delete(keys.SINGLE.task(task_id))
        cold.append(timed(task_id))
        refilled += bool(run.redis.exists(keys.SINGLE.task(task_id)))
    direct_redis, direct_pg = direct_reads(run, ids)
    hot_ms, cold_ms = statistics.median(h[0] for h in hot), statistics.median(c[0] for c in cold)
    run.say(f"API read p50: from Redis {hot_ms:.2f} ms, from Postgres {cold_ms:.2f} ms ({cold_ms / hot_ms:.1f}x).")
    run.say(f"Store read p50 (no HTTP): Redis GET {direct_redis:.3f} ms, Postgres SELECT {direct_pg:.3f} ms.")
    by_id = {body["id"]: body for _, body in hot}
    run.check(all(body == by_id.get(body.get("id")) for _, body in cold), "Postgres answers the same records")
    run.check(refilled == n, f"every cold read cached the record back into Redis ({refilled}/{n})")
    run.check(all(body.get("status") == "completed" for _, body in cold), "all reads show the final state")


def direct_reads(run: Run, ids: list[str]) -> tuple[float, float]:
    redis_ms = []
    for task_id in ids:
        begin = time.perf_counter()
        run.redis.get(keys.SINGLE.task(task_id))
        redis_ms.append((time.perf_counter() - begin) * 1000)

    async def pg() -> list[float]:
        conn = await asyncpg.connect(run.where.database_url, timeout=10)
        try:
            times = []
            for task_id in ids:
                begin = time.perf_counter()
                await conn.fetchrow("SELECT status, result FROM tasks WHERE id = $1", task_id)
                times.append((time.perf_counter() - begin) * 1000)
            return times
        finally:
            await conn.close()

    return statistics.median(redis_ms), statistics.median(asyncio.run(pg()))


def burst(run: Run) -> None:
    advice = scaling(run.monitor) or {}
    mode = advice.get("mode")
    if not run.check(mode == "on", f"the autoscaler acts (mode {mode!r}; start the stack with AUTOSCALE=on)"):
        return
    n, ms = (240, 500) if run.short else (1500, 1000)
    workers = run.control.replicas(WORKER_SERVICE)
    run.say(f"{len(workers)} worker(s) run: {', '.join(workers)}. Submitting {n} tasks of {ms} ms at once.")
    began = time.time()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: run.submit("sleep", {"ms": ms}), range(n)))

    def decision(up: bool) -> dict[str, Any] | None:
        found = decisions_between(scaling(run.monitor), began, time.time() + 1)
        return next((d for d in found if (d["to"] > d["from"]) == up and d["to"] != d["from"]), None)

    out = run.wait(lambda: decision(up=True), 30, 0.5)
    if out:
        run.say(
            f"Scale-out {out['from']} -> {out['to']} after {out['t'] - began:.1f} s: {'; '.join(out['reasons'][:2])}"
        )
    run.check(out is not None, "the autoscaler scaled out")
    peak = 0

    def drained() -> bool:
        nonlocal peak
        s = sample(run.monitor)
        peak = max(peak, s["workers"] if s else 0)
        return bool(s and s["queue"] == 0 and s["in_flight"] == 0)

    run.check(bool(run.wait(drained, 120, 0.5)), f"the queue drained (peak {peak} live workers)")
    drained_at = time.time()
    run.say(f"Queue empty {drained_at - began:.1f} s after the burst; waiting for the autoscaler to scale in.")
    stable = float(run.where.settings.get("STABLE_WINDOW_SECONDS") or 30)
    found = run.wait(lambda: decision(up=False), stable + 45, 0.5)
    if found:
        run.say(f"Scale-in {found['from']} -> {found['to']}: {'; '.join(found['reasons'][:2])}")
    run.check(found is not None, "the autoscaler scaled in once the work was done")
    run.all_final_in_postgres(ids, 30)


SCENARIOS: dict[str, tuple[str, Callable[[Run], None]]] = {
    "burst": ("queue-based architecture, auto-scaling", burst),
    "worker-crash": ("fault tolerance", worker_crash),
    "gateway-failover": ("load balancing", gateway_failover),
    "rate-limit": ("rate limiting", rate_limit),
    "cache": ("caching", cache),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_test.scenarios", description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(SCENARIOS))
    parser.add_argument("--short", action="store_true", help="a few seconds each (what ./test.sh runs)")
    args = parser.parse_args(argv)
    concept, scenario = SCENARIOS[args.name]
    run = Run(args.name, concept, args.short)
    print(f"scenario {args.name} ({concept}) against {run.where.host}", flush=True)
    run.mark("running")
    try:
        scenario(run)
    except Exception as exc:
        run.check(False, f"the scenario raised {type(exc).__name__}: {exc}")
    verdict = "passed" if run.passed else "failed"
    failed = [claim for ok, claim in run.checks if not ok]
    run.mark(verdict, "; ".join(failed) if failed else f"{len(run.checks)} checks held")
    run.close()
    print(f"{'PASS' if run.passed else 'FAIL'}: {args.name}, {len(run.checks) - len(failed)}/{len(run.checks)} checks")
    return 0 if run.passed else 1


if __name__ == "__main__":
    sys.exit(main())
