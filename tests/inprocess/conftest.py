"""The fast layer: every app in this process against one real Redis and PostgreSQL for the session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

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


@pytest.fixture
async def gateway(servers: Servers) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(servers, "api-gateway") as client:
        yield client


@pytest.fixture
async def dashboard(servers: Servers) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(servers, "monitoring") as client:
        yield client


@pytest.fixture
async def worker(servers: Servers) -> AsyncIterator[httpx.AsyncClient]:
    """A worker app: its consumer claims and runs what the gateway queues."""
    async with serving(servers, "worker-service") as client:
        yield client


@pytest.fixture
async def autoscaler(servers: Servers) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(servers, "autoscaler") as client:
        yield client


@pytest.fixture
def admin(servers: Servers) -> dict[str, str]:
    return {"Authorization": f"Bearer {servers.admin_token}"}
