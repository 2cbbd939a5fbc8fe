"""The fast layer: every app in this process against one real Redis and PostgreSQL for the session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.inprocess.apps import serving
from tests.inprocess.servers import Servers


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    running = Servers().up()
    try:
        yield running
    finally:
        running.down()


@pytest.fixture(autouse=True)
def _empty(servers: Servers) -> None:
    """Each test starts on an empty Redis and empty tables: the order of tests does not matter."""
    servers.reset()


def _app(name: str, service: str, doc: str) -> Any:
    """The fixture `name`: an httpx client of `service`'s app, running in this process for one test."""

    async def client(servers: Servers) -> AsyncIterator[httpx.AsyncClient]:
        async with serving(servers, service) as running:
            yield running

    client.__doc__ = doc
    return pytest.fixture(client, name=name)


gateway = _app("gateway", "api-gateway", "The gateway app.")
dashboard = _app("dashboard", "monitoring", "The dashboard app.")
worker = _app("worker", "worker-service", "A worker app: its consumer claims and runs what the gateway queues.")
autoscaler = _app("autoscaler", "autoscaler", "The autoscaler's app.")


@pytest.fixture
async def pool(servers: Servers) -> AsyncIterator[asyncpg.Pool]:
    """A small asyncpg pool on the session's PostgreSQL, for tests that read or write rows."""
    created = await asyncpg.create_pool(servers.database_url, min_size=1, max_size=2)
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
def admin(servers: Servers) -> dict[str, str]:
    return {"Authorization": f"Bearer {servers.admin_token}"}
