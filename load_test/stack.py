"""Where the stack under test is, and the readings the runner and the scenarios take from it.

Targets come from the environment first (Compose sets TARGET_URL, MONITOR_URL, DATABASE_URL and
REDIS_URL; `./demo.sh scenario` adds STACK_ENGINE=compose), else from the native plan (`.env` +
the shell, as `./demo.sh` and the test harness use), so a subprocess given a test stack's
environment measures that stack.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import asyncpg
import httpx

from core import db

if TYPE_CHECKING:
    from load_test.control import Control
    from native.plan import NativeConfig

ROOT = Path(__file__).resolve().parent.parent
#: The name docker-compose.yml gives its project.
COMPOSE_PROJECT = "serverless-scaling"


@dataclass(frozen=True)
class Targets:
    host: str
    monitor: str
    database_url: str
    #: None where the environment names no Redis (the load test reads none)
    redis_url: str | None = None
    #: "native" or "compose"; None where only the URLs are known (inside the load-test container)
    engine: str | None = None
    #: the stack's variables as its services read them: `.env`, the shell's environment winning
    settings: Mapping[str, str] = field(default_factory=dict)
    #: nginx's per-client limit in requests/s and its burst; rate 0 when nginx limits nothing
    rate_limit: tuple[int, int] = (0, 0)
    #: the native plan's config (ports, supervisor socket, secrets); None under Compose
    native: NativeConfig | None = None

    def control(self) -> Control:
        """What stops, kills and starts this stack's replicas."""
        # Imported here: the load-test container needs neither supervisord's client nor the docker CLI.
        from load_test.control import ComposeControl, NativeControl

        if self.native is not None:
            return NativeControl(self.native.supervisor_socket)
        if self.engine == "compose":
            project = self.settings.get("COMPOSE_PROJECT_NAME") or COMPOSE_PROJECT
            return ComposeControl(project, compose_files(self.settings), ROOT, dict(os.environ))
        raise SystemExit(
            "only the stack's URLs are known: set STACK_ENGINE=compose (./demo.sh scenario does), or unset "
            "TARGET_URL, MONITOR_URL and DATABASE_URL to act on the native stack"
        )


def targets() -> Targets:
    env = os.environ
    named = ("TARGET_URL", "MONITOR_URL", "DATABASE_URL")
    if env.get("STACK_ENGINE") == "compose":
        missing = [name for name in (*named, "REDIS_URL") if not env.get(name)]
        if missing:
            raise SystemExit(f"STACK_ENGINE=compose needs {', '.join(missing)} (./demo.sh scenario sets them)")
        from native.compose import read_dotenv

        return Targets(
            env["TARGET_URL"],
            env["MONITOR_URL"],
            env["DATABASE_URL"],
            redis_url=env["REDIS_URL"],
            engine="compose",
            settings={**read_dotenv(ROOT / ".env"), **env},
            rate_limit=nginx_rate_limit(ROOT / "nginx" / "compose.conf"),
        )
    if all(env.get(name) for name in named):
        return Targets(env["TARGET_URL"], env["MONITOR_URL"], env["DATABASE_URL"], redis_url=env.get("REDIS_URL"))
    # Imported here: the Compose container needs none of the native machinery.
    from native.plan import NativeConfig, build

    config = NativeConfig.from_env(ROOT)
    plan = build(config, resolve_binaries=False)
    password = config.variables.get("REDIS_PASSWORD")
    credentials = f":{quote(password, safe='')}@" if password else ""
    return Targets(
        host=env.get("TARGET_URL") or f"http://127.0.0.1:{plan.listeners['lb']}",
        monitor=env.get("MONITOR_URL") or f"http://127.0.0.1:{config.monitor_port}",
        database_url=env.get("DATABASE_URL") or str(plan.migrate.env["DATABASE_URL"]),
        redis_url=env.get("REDIS_URL") or f"redis://{credentials}127.0.0.1:{config.redis_port}/0",
        engine="native",
        settings=config.variables,
        rate_limit=(config.rate_limit_rps, config.rate_limit_burst),
        native=config,
    )


def offline_images(settings: Mapping[str, str] | None = None) -> bool:
    """OFFLINE_IMAGES=1 as `./demo.sh` reads it: the shell's environment, else the checkout's `.env`."""
    if settings is None:
        from native.compose import read_dotenv

        settings = {**read_dotenv(ROOT / ".env"), **os.environ}
    return settings.get("OFFLINE_IMAGES") == "1"


def compose_files(settings: Mapping[str, str] | None = None) -> list[Path]:
    """The files `./demo.sh` runs Compose with: the stand-in images' overlay under OFFLINE_IMAGES=1."""
    files = [ROOT / "docker-compose.yml"]
    if offline_images(settings):
        files.append(ROOT / "docker-compose.offline.yml")
    return files


def nginx_rate_limit(conf: Path) -> tuple[int, int]:
    """The per-client rate and burst in an nginx config; Compose's nginx reads them from its file
    (rendered by `python -m native render-compose-nginx`), not from RATE_LIMIT_RPS in `.env`."""
    text = conf.read_text()
    rate = re.search(r"limit_req_zone\s.*\brate=(\d+)r/s", text)
    burst = re.search(r"limit_req\s+zone=\S+\s+burst=(\d+)", text)
    return (int(rate[1]) if rate else 0, int(burst[1]) if burst else 0)


def sample(monitor: httpx.Client) -> dict[str, Any] | None:
    """One reading of the stack from the dashboard's /api/metrics; None when it does not answer."""
    t = time.time()
    try:
        response = monitor.get("/api/metrics")
        body = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        body = None
    if not body:
        return None
    health, perf = body["system_health"], body["performance"]
    return {
        "t": t,
        "queue": health["queue_length"],
        "in_flight": health["processing"],
        "workers": health["active_workers"],
        "completed": perf["completed"],
        "failed": perf["failed"],
        "accepted": perf["accepted"],
    }


def wait_until_up(where: Targets, timeout: float) -> None:
    """Block until the target's /health and the dashboard answer 200: a load test started beside
    the stack (Compose's `run` has no depends_on here) must not count the stack's start as errors."""
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        try:
            up = all(httpx.get(url, timeout=2).status_code == 200 for url in (f"{where.host}/health", where.monitor))
        except httpx.HTTPError:
            up = False
        if up:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{where.host} or {where.monitor} did not answer within {timeout:.0f} s")
        if not announced:
            print(f"waiting for {where.host} and {where.monitor} to answer", flush=True)
            announced = True
        time.sleep(0.5)


def scaling(monitor: httpx.Client) -> dict[str, Any] | None:
    try:
        response = monitor.get("/api/scaling")
        return dict(response.json()) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def epoch(value: Any) -> float | None:
    """A decision's `at`: epoch seconds or ISO 8601, whichever the autoscaler writes."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def decisions_between(scaling_body: dict[str, Any] | None, start: float, end: float) -> list[dict[str, Any]]:
    found = []
    for decision in (scaling_body or {}).get("decisions") or []:
        at = epoch(decision.get("at"))
        if at is not None and start <= at <= end:
            found.append({**decision, "t": at})
    return sorted(found, key=lambda d: d["t"])


def outcomes(database_url: str, task_ids: Sequence[str]) -> db.Outcomes:
    async def run() -> db.Outcomes:
        conn = await asyncpg.connect(database_url, timeout=10)
        try:
            return await db.outcomes(conn, task_ids)
        finally:
            await conn.close()

    return asyncio.run(run())
