"""The stack a benchmark measures: what the phases need of it, how the bench starts its own
native one, and the small helpers every phase module shares (suite, features, result_wait)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis import Redis

from core import keys
from harness.stacks import Stack, wait_for
from load_test.control import WORKER_SERVICE, Control, NativeControl
from native.plan import NativeConfig, Plan, build
from native.supervisor import Supervisor


class Measured(Protocol):
    """What the shared phases need of a stack, native or Compose: its load balancer, its Redis and
    Postgres, and a control that stops and starts its workers."""

    @property
    def lb(self) -> str: ...

    @property
    def redis(self) -> Redis: ...

    @property
    def database_url(self) -> str: ...

    @property
    def control(self) -> Control: ...


@dataclass
class Target:
    """The native stack under test, started by us (owned) or the running demo stack."""

    plan: Plan
    redis: Redis
    supervisor: Supervisor
    control: Control
    stack: Stack | None = None

    @property
    def lb(self) -> str:
        return f"http://127.0.0.1:{self.plan.listeners['lb']}"

    @property
    def database_url(self) -> str:
        return str(self.plan.migrate.env["DATABASE_URL"])


def rank(ordered: Sequence[float], share: float) -> float:
    """The value at `share` (0-1) of sorted `ordered`, by the nearest rank: each bench's percentiles."""
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def open_target(reuse: bool, concurrency: int) -> Target:
    if reuse:
        config = NativeConfig.from_env()
        sup = Supervisor(config.supervisor_socket)
        if not sup.alive():
            raise SystemExit("--reuse: no native stack is running (./demo.sh --native)")
        if config.rate_limit_rps != 0:
            raise SystemExit("--reuse needs a stack started with RATE_LIMIT_RPS=0; run without --reuse instead")
        plan = build(config)
        password = plan.config.variables.get("REDIS_PASSWORD", "")
        redis = Redis(host="127.0.0.1", port=config.redis_port, password=password, decode_responses=True)
        return Target(plan, redis, sup, NativeControl(config.supervisor_socket))
    say("starting a native stack on free ports (rate limiting off)")
    stack = Stack(stack_env(concurrency)).up()
    return native_target(stack)


def stack_env(concurrency: int) -> dict[str, str]:
    """The settings of a stack the bench starts, whichever engine runs it."""
    return {
        "RATE_LIMIT_RPS": "0",
        "CHAOS_TASKS": "false",
        # Unbounded: the HTTP maxima queue far more than the default 10,000 while workers are stopped.
        "QUEUE_MAX": "0",
        # The bulk phase queues about a million tasks with workers stopped: room for them, while
        # the byte budget (30 % of it) is still checked on every enqueue, as in production.
        "REDIS_MAXMEMORY": "6gb",
        "MAX_WORKERS": "2",
        "LOG_LEVEL": "warning",
        # The drain is compared with arq at max_jobs=100: the same number of tasks in flight.
        "WORKER_CONCURRENCY": str(concurrency),
    }


def native_target(stack: Stack) -> Target:
    return Target(stack.plan, stack.redis, stack.supervisor, stack.control, stack)


def stop_workers(target: Measured) -> list[str]:
    """Stop every running worker; returns their names, to start them again afterwards."""
    running = target.control.replicas(WORKER_SERVICE)
    for name in running:
        target.control.stop(name)
    return running


def live_worker(target: Measured) -> bool:
    return any(target.redis.exists(keys.heartbeat(str(w))) for w in target.redis.smembers(keys.WORKERS))


def run_alone(
    measure: Callable[[Target], dict[str, Any]],
    rows: Callable[[dict[str, Any]], Sequence[tuple[str, str, str]]],
) -> dict[str, Any]:
    """Take one phase's figures on a native stack of its own, set up as the bench's, and print them."""
    stack = Stack(stack_env(100)).up()
    try:
        wait_for(lambda: len(stack.heartbeats()) >= 1, 30, "a worker's heartbeat")
        figures = measure(native_target(stack))
    finally:
        stack.down()
    for what, result, more in rows(figures):
        print(f"| {what:<44} | {result:>14} | {more:<32} |")
    return figures
