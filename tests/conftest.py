from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import Stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """One real native stack for the session: redis-server, PostgreSQL, nginx, 2 gateways, 2 workers."""
    running = Stack().up()
    try:
        yield running
    finally:
        running.down()
