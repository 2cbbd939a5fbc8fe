"""redis-server and PostgreSQL for the in-process tests, started as the native launcher starts them
(the same plan, commands, accounts and first-time setup) but directly, without supervisord or
nginx: the apps themselves run inside the test process."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import asyncpg
from redis import Redis

from core import db
from core.connections import create_redis, init_connection
from core.queue import TaskQueue
from core.settings import Settings
from harness.stacks import free_port, isolated_env, wait_for
from native import accounts, postgres, render
from native.cli import postgres_ok, redis_ok
from native.plan import ROOT, NativeConfig, Plan, Program, build


class Servers:
    """One redis-server and one PostgreSQL cluster on free loopback ports, schema migrated."""

    def __init__(self) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="ss-inprocess-", dir="/tmp"))
        self.state.chmod(0o755)  # the postgres account passes through to its data folder
        env = isolated_env(
            {"STATE_DIR": str(self.state), "REDIS_PORT": str(free_port()), "POSTGRES_PORT": str(free_port())}
        )
        self.plan: Plan = build(NativeConfig.from_env(ROOT, env))
        self.processes: list[tuple[Program, subprocess.Popen[bytes]]] = []
        self.logs: list[IO[bytes]] = []
        self.redis = Redis(
            host="127.0.0.1",
            port=self.plan.config.redis_port,
            password=self.plan.redis_password,
            decode_responses=True,
        )

    def env(self, service: str) -> dict[str, str]:
        """The environment the launcher gives `service`'s first process (REPLICA_ID included)."""
        return dict(self.plan.of(service)[0].env)

    @property
    def database_url(self) -> str:
        return str(self.plan.migrate.env["DATABASE_URL"])

    @property
    def admin_token(self) -> str:
        return self.env("api-gateway")["ADMIN_TOKEN"]

    def up(self) -> Servers:
        accounts.settle(self.plan)
        render.write_all(self.plan)
        postgres.ensure_cluster(self.plan)
        for name in ("redis", "postgres"):
            self._start(self.plan.program(name))
        wait_for(redis_ok(self.plan), 30, "redis-server to answer", interval=0.1)
        wait_for(postgres_ok(self.plan), 60, "PostgreSQL to answer", interval=0.1)
        asyncio.run(self._migrate())
        return self

    def _start(self, program: Program) -> None:
        """The program's command, as its account (Popen switches user itself: no runuser between)."""
        user: dict[str, Any] = {}
        if program.user:
            uid, gid = accounts.ids(program.user)
            user = {"user": uid, "group": gid, "extra_groups": []}
        log = (self.plan.config.log_dir / f"{program.name}.log").open("ab")
        self.logs.append(log)
        process = subprocess.Popen(program.command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, **user)
        self.processes.append((program, process))

    @contextlib.asynccontextmanager
    async def queue(self) -> AsyncIterator[TaskQueue]:
        """The queue protocol on a client of its own, for tests that act as a producer or consumer
        without a gateway's checks."""
        redis = create_redis(Settings(redis_url=self.env("api-gateway")["REDIS_URL"]))
        try:
            yield TaskQueue(redis)
        finally:
            await redis.aclose()

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection of its own, set up as the services' pools set up theirs (JSON codecs)."""
        conn = await asyncpg.connect(self.database_url)
        try:
            await init_connection(conn)
            yield conn
        finally:
            await conn.close()

    async def _migrate(self) -> None:
        async with self.connect() as conn:
            await db.migrate(conn)

    async def pg(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connect() as conn:
            return list(await conn.fetch(query, *args))

    def reset(self) -> None:
        """Empty Redis and every table but the schema's version, so no test sees another's data."""
        self.redis.flushall()
        asyncio.run(self._truncate())

    async def _truncate(self) -> None:
        async with self.connect() as conn:
            tables = await conn.fetch(
                "SELECT quote_ident(tablename) AS name FROM pg_tables"
                " WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
            )
            # DELETE, not TRUNCATE: on a few rows it takes a millisecond, TRUNCATE a tenth of a second.
            # The names come from pg_tables, quoted by quote_ident.
            statements = [f"DELETE FROM {t['name']}" for t in tables]  # noqa: S608
            if statements:
                await conn.execute("; ".join(statements))

    def down(self) -> None:
        self.redis.close()
        for program, process in reversed(self.processes):
            process.send_signal(signal.Signals[f"SIG{program.stopsignal}"])
            try:
                process.wait(timeout=program.stopwaitsecs)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self.logs:
            log.close()
        pgdata = postgres.data_dir(self.plan)
        if pgdata.is_symlink():
            shutil.rmtree(pgdata.resolve().parent, ignore_errors=True)
        with contextlib.suppress(OSError):
            shutil.rmtree(self.state)
