"""Starts the real stack on free ports, for tests: natively (the same launcher ./demo.sh uses) or as
a Compose project of its own (the same docker-compose.yml, built and run by the Docker engine).

Both kinds answer the same helpers (submit, task, wait_all_final, redis, pg, control), so a
black-box test takes either one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from core import keys
from core.connections import init_connection
from core.models import FINAL_STATUSES
from core.queue import TaskQueue
from core.records import read_record
from core.settings import replica_of
from load_test.control import WORKER_SERVICE, ComposeControl, Control, NativeControl
from load_test.stack import compose_files
from native.plan import ROOT, NativeConfig, Plan, build
from native.supervisor import Supervisor

T = TypeVar("T")


#: Where test ports come from: below the kernel's ephemeral range (32768-60999), which Docker also
#: draws from for the ports it publishes unasked (`127.0.0.1::6379`): a port found free there can be
#: taken by a container before the test's own service binds it.
TEST_PORTS = (20000, 32000)
#: Ports this process handed out already: a port found free twice must not serve two services.
_handed_out: set[int] = set()


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free loopback port, outside the ephemeral range (TEST_PORTS)."""
    return _free_range(1) + 1


def _free_range(length: int) -> int:
    """A base port with `length` free ports after it, outside the ephemeral range (TEST_PORTS)."""
    for _ in range(500):
        base = random.randrange(TEST_PORTS[0], TEST_PORTS[1] - length - 1)
        ports = range(base + 1, base + length + 1)
        if not _handed_out.intersection(ports) and all(_bindable(port) for port in ports):
            _handed_out.update(ports)
            return base
    raise RuntimeError("no free port range")


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
        last = condition()
    return last


#: A stack whose autoscaler acts, quickly: one worker at rest, up to 4 under a burst.
AUTOSCALED = {
    "AUTOSCALE": "on",
    "WORKERS": "1",
    "MIN_WORKERS": "1",
    "MAX_WORKERS": "4",
    "WORKER_CONCURRENCY": "4",
    "TARGET_DRAIN_SECONDS": "5",
    "STABLE_WINDOW_SECONDS": "4",
    "PANIC_WINDOW_SECONDS": "3",
}


def isolated_env(extra_env: dict[str, str] | None) -> dict[str, str]:
    """What every test stack runs with, either engine: fresh secrets and quick failure paths."""
    return {
        **os.environ,
        "LB_PORT": str(free_port()),
        "GATEWAY_PORT": str(free_port()),
        "WORKER_PORT": str(free_port()),
        "MONITOR_PORT": str(free_port()),
        "REDIS_PASSWORD": secrets.token_hex(12),
        "POSTGRES_PASSWORD": secrets.token_hex(12),
        "ADMIN_TOKEN": secrets.token_hex(12),
        "MAX_WORKERS": "4",
        # The shared test stack is scaled by the tests themselves; autoscaler tests start their own.
        "AUTOSCALE": "off",
        # Quick retries and a chaos task type keep the failure tests short.
        "RETRY_BASE_SECONDS": "0.05",
        "RETRY_CAP_SECONDS": "0.2",
        "CHAOS_TASKS": "true",
        # Bulk tests submit thousands of tasks from one address.
        "RATE_LIMIT_RPS": "500",
        "RATE_LIMIT_BURST": "500",
        "TASK_TIMEOUTS": "slowpoke=0.3",
        # The README's example task types, as a user's own module would load (tests/test_task_plugins.py).
        "TASK_MODULES": "examples.tasks",
        **(extra_env or {}),
    }


class BaseStack:
    """The helpers every test stack has; subclasses set the URLs, `redis`, `control` and `database_url`."""

    engine: str
    env: dict[str, str]
    lb: str
    gateway: str
    worker: str
    monitor: str
    http: httpx.Client
    redis: Redis
    control: Control
    redis_port: int

    # -- helpers ---------------------------------------------------------------------------

    def _polite(self, send: Callable[[], httpx.Response]) -> httpx.Response:
        # Like a well-behaved client: a 429 from nginx's rate limit means "wait a moment, resend"
        # (reading 2,000 results back can pass the harness's 500 requests/s limit too).
        deadline = time.monotonic() + 60
        while True:
            response = send()
            if response.status_code != 429 or time.monotonic() > deadline:
                return response
            time.sleep(random.uniform(0.05, 0.2))

    def submit(self, task_type: str = "echo", data: dict[str, Any] | None = None, **kwargs: Any) -> str:
        response = self._polite(
            lambda: self.http.post("/api/task", json={"type": task_type, "data": data or {}}, **kwargs)
        )
        assert response.status_code == 202, response.text
        return str(response.json()["task_id"])

    def task(self, task_id: str) -> dict[str, Any]:
        response = self._polite(lambda: self.http.get(f"/api/task/{task_id}"))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_status(self, task_id: str, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
        found: dict[str, Any] = wait_for(
            lambda: (t := self.task(task_id))["status"] in statuses and t,
            timeout,
            f"task {task_id} to reach {statuses}",
        )
        return found

    def wait_all_final(self, task_ids: list[str], timeout: float = 60) -> dict[str, dict[str, Any]]:
        pending = set(task_ids)
        done: dict[str, dict[str, Any]] = {}

        def progress() -> bool:
            ids = list(pending)
            for task_id, raw in zip(ids, self.redis.mget([keys.SINGLE.task(t) for t in ids]), strict=True):
                if raw and read_record(task_id, raw).status in FINAL_STATUSES:
                    pending.discard(task_id)
            return not pending

        wait_for(progress, timeout, f"{len(task_ids)} tasks to finish ({len(pending)} left)")
        for task_id in task_ids:
            done[task_id] = self.task(task_id)
        return done

    @contextlib.asynccontextmanager
    async def queue(self, **options: Any) -> AsyncIterator[TaskQueue]:
        """The shared queue protocol on its own client, for tests that act as a producer or worker."""
        redis = AsyncRedis(
            host="127.0.0.1", port=self.redis_port, password=self.env["REDIS_PASSWORD"], decode_responses=True
        )
        try:
            yield TaskQueue(redis, **options)
        finally:
            await redis.aclose()

    def pg(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.database_url)
            await init_connection(conn)
            try:
                return list(await conn.fetch(query, *args))
            finally:
                await conn.close()

        return asyncio.run(run())

    def task_rows(self, columns: str, ids: list[str], timeout: float) -> list[asyncpg.Record]:
        """`columns` of the tasks `ids` in Postgres, once every one of them has its row."""
        query = f"SELECT {columns} FROM tasks WHERE id = ANY($1::uuid[])"  # noqa: S608 (the test's own columns)
        rows: list[asyncpg.Record] = wait_for(
            lambda: (found := self.pg(query, ids)) and len(found) == len(ids) and found,
            timeout,
            f"{len(ids)} rows in Postgres",
        )
        return rows

    @property
    def database_url(self) -> str:
        raise NotImplementedError

    def replica_serving(self, response: httpx.Response) -> str:
        """The gateway replica that answered, by its X-Served-By header (its REPLICA_ID, or in a
        container its "<hostname>-<pid>")."""
        served = response.headers["x-served-by"]
        ids = {self.control.served_by(name): name for name in self.control.replicas("api-gateway", running_only=False)}
        return next((name for sid, name in ids.items() if served == sid or served.startswith(f"{sid}-")), served)

    def heartbeats(self) -> list[dict[str, Any]]:
        """The live workers' heartbeat records (a registered worker whose beat expired is absent)."""
        ids = [str(w) for w in self.redis.smembers(keys.WORKERS)]
        beats = self.redis.mget([keys.heartbeat(w) for w in ids]) if ids else []
        return [json.loads(b) for b in beats if b]

    def live_workers(self) -> int:
        return int(self.http.get("/api/status").json()["metrics"]["active_workers"])

    # -- isolation -------------------------------------------------------------------------

    def running(self) -> set[str]:
        """What runs now or is on its way back by itself (a killed process restarting):
        supervisord's programs (native) or the project's containers (Compose)."""
        raise NotImplementedError

    def serving(self) -> set[str]:
        """What of running() has finished starting."""
        return self.running()

    @contextlib.contextmanager
    def restoring(self, timeout: float = 60) -> Iterator[None]:
        """Around a test that kills, stops or rescales parts of a shared stack: afterwards (pass or
        fail) the same processes run and serve again, so no later test depends on the order."""
        before = self.running()
        try:
            yield
        finally:
            self.restore(before, timeout)

    def restore(self, running: set[str], timeout: float = 60) -> None:
        """Start what of `running` does not run, stop what runs beyond it, then wait until each
        worker heartbeats exactly once (a killed one's beat has expired) and /api/status is 200."""
        # A killed process is coming back by itself already; starting it again is a no-op.
        for name in sorted(running - self.running()):
            self.control.start(name)
        for name in sorted(self.running() - running):
            self.control.stop(name)
        wait_for(lambda: self.serving() == running, timeout, f"exactly {sorted(running)} to run")
        workers = len(self.control.replicas(WORKER_SERVICE))
        wait_for(lambda: len(self.heartbeats()) == workers, timeout, f"{workers} live workers")
        wait_for(lambda: self.http.get("/api/status").status_code == 200, timeout, "/api/status to answer 200")


class Stack(BaseStack):
    """The native stack: supervisord, redis-server, PostgreSQL and nginx under a temporary STATE_DIR."""

    engine = "native"

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="ss-test-", dir="/tmp"))
        self.state.chmod(0o755)
        self.env = isolated_env(
            {
                "STATE_DIR": str(self.state),
                "REDIS_PORT": str(free_port()),
                "POSTGRES_PORT": str(free_port()),
                "REPLICA_PORT_BASE": str(_free_range(24)),
                **(extra_env or {}),
            }
        )
        self.config = NativeConfig.from_env(ROOT, self.env)
        self.plan: Plan = build(self.config)
        self.lb = f"http://127.0.0.1:{self.config.lb_port}"
        self.gateway = f"http://127.0.0.1:{self.config.gateway_port}"
        self.worker = f"http://127.0.0.1:{self.config.worker_port}"
        self.monitor = f"http://127.0.0.1:{self.config.monitor_port}"
        self.http = httpx.Client(base_url=self.lb, timeout=10)
        self.redis = Redis(
            host="127.0.0.1", port=self.config.redis_port, password=self.env["REDIS_PASSWORD"], decode_responses=True
        )
        self.supervisor = Supervisor(self.config.supervisor_socket)
        self.control = NativeControl(self.config.supervisor_socket)
        self.redis_port = self.config.redis_port

    # -- lifecycle -------------------------------------------------------------------------

    def native(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "native", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"native {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def up(self) -> Stack:
        self.native("up")
        return self

    def down(self) -> None:
        self.http.close()
        self.redis.close()
        self.supervisor.close()
        self.control.close()
        try:
            self.native("down", check=False, timeout=120)
        finally:
            pgdata = self.state / "pgdata"
            if pgdata.is_symlink():
                shutil.rmtree(pgdata.resolve().parent, ignore_errors=True)
            shutil.rmtree(self.state, ignore_errors=True)

    @property
    def database_url(self) -> str:
        return str(self.plan.migrate.env["DATABASE_URL"])

    def pid(self, program: str) -> int:
        return self.supervisor.pid(program)

    def program_of_worker(self, worker_id: str) -> str:
        # The replica id of a native worker is its supervisord program's name (REPLICA_ID).
        return replica_of(worker_id)

    def kill(self, program: str, sig: int = signal.SIGKILL) -> int:
        pid = self.pid(program)
        os.kill(pid, sig)
        return pid

    def running(self) -> set[str]:
        # A program supervisord is restarting (STARTING, or BACKOFF between tries) is meant to run:
        # a restore must not stop it.
        return {name for name, state in self.supervisor.states().items() if state in ("RUNNING", "STARTING", "BACKOFF")}

    def serving(self) -> set[str]:
        return {name for name, state in self.supervisor.states().items() if state == "RUNNING"}

    def worker_programs(self, states: tuple[str, ...] = ("RUNNING",)) -> list[str]:
        """supervisord's worker slots in one of `states` (e.g. add "STARTING" to count what was asked for)."""
        return sorted(n for n, s in self.supervisor.states().items() if n.startswith("worker-service-") and s in states)

    def wait_running(self, program: str, timeout: float = 30, *, replacing: int | None = None) -> int:
        """Wait until `program` runs (as a new process, when `replacing` names the old pid)."""

        def running() -> int:
            info = self.supervisor.process_info(program)
            fresh = info["statename"] == "RUNNING" and info["pid"] != replacing
            return info["pid"] if fresh else 0

        pid: int = wait_for(running, timeout, f"{program} to be running")
        return pid


class ComposeStack(BaseStack):
    """A Compose project of its own (`ss-test-<random>`): the checkout's docker-compose.yml (plus
    docker-compose.offline.yml where OFFLINE_IMAGES=1), published on free loopback ports."""

    engine = "compose"

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self.project = f"ss-test-{secrets.token_hex(4)}"
        # Compose's own variables from the shell would point it elsewhere: this project is named here.
        self.env = isolated_env(extra_env)
        self.env.pop("COMPOSE_FILE", None)
        self.env |= {"COMPOSE_PROJECT_NAME": self.project, "BIND_ADDRESS": "127.0.0.1"}
        self.docker = ComposeControl(self.project, compose_files(), ROOT, self.env)
        self.control = self.docker
        self.lb = f"http://127.0.0.1:{self.env['LB_PORT']}"
        self.gateway = f"http://127.0.0.1:{self.env['GATEWAY_PORT']}"
        self.worker = f"http://127.0.0.1:{self.env['WORKER_PORT']}"
        self.monitor = f"http://127.0.0.1:{self.env['MONITOR_PORT']}"
        self.http = httpx.Client(base_url=self.lb, timeout=10)
        self.redis_port = 0
        self.postgres_port = 0

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.docker.compose(*args, timeout=timeout, check=check)

    def up(self, *args: str) -> ComposeStack:
        try:
            # The autoscaler starts last: it may scale in a worker that `--wait` is still waiting for.
            self.compose(
                "up", "-d", "--build", "--wait", "--wait-timeout", "240", "--scale", "autoscaler=0", *args, timeout=600
            )
            if self.env.get("AUTOSCALE") == "on":
                self.create_worker_pool()
            self.compose("up", "-d", "--wait", "--wait-timeout", "120", "autoscaler", timeout=300)
        except RuntimeError:
            logs = self.compose("logs", "--tail", "30", check=False).stdout
            self.down()
            raise AssertionError(
                f"the Compose project {self.project} did not become healthy:\n{logs[-6000:]}"
            ) from None
        self.redis_port = self.published_port("redis", 6379)
        self.postgres_port = self.published_port("postgres", 5432)
        self.redis = Redis(
            host="127.0.0.1", port=self.redis_port, password=self.env["REDIS_PASSWORD"], decode_responses=True
        )
        return self

    def create_worker_pool(self) -> None:
        """MAX_WORKERS worker-service containers, those beyond the running ones created and not
        started, as ./demo.sh makes them: the autoscaler starts and stops these, it cannot create."""
        pool = f"worker-service={self.env['MAX_WORKERS']}"
        self.compose("--progress", "quiet", "create", "--no-recreate", "--scale", pool, "worker-service")

    def published_port(self, service: str, container_port: int) -> int:
        out = self.compose("port", service, str(container_port)).stdout.strip()
        return int(out.rsplit(":", 1)[1])

    def down(self) -> None:
        self.http.close()
        if self.redis_port:
            self.redis.close()
        # -v: the test's volumes go too; --timeout 10 is past an idle worker's drain.
        self.compose("--profile", "load-test", "down", "-v", "--remove-orphans", "--timeout", "10", check=False)

    @property
    def database_url(self) -> str:
        return f"postgresql://serverless:{self.env['POSTGRES_PASSWORD']}@127.0.0.1:{self.postgres_port}/serverless"

    def workers(self) -> list[str]:
        return self.control.replicas(WORKER_SERVICE)

    def running(self) -> set[str]:
        label = f"label=com.docker.compose.project={self.project}"
        return set(self.docker.docker("ps", "--filter", label, "--format", "{{.Names}}").split())
