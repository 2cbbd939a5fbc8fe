"""`python -m core.migrate`: wait for Postgres (bounded), then apply the schema once.

Run by the launcher (native) or a one-shot service (Compose) before any service starts,
so no worker ever creates tables racily.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

import asyncpg

from core import db
from core.settings import get_settings

log = logging.getLogger("migrate")


async def main(deadline_seconds: float = 60.0) -> int:
    settings = get_settings()
    deadline = time.monotonic() + deadline_seconds
    waiting = False
    while True:
        try:
            conn = await asyncpg.connect(settings.database_url, timeout=5)
            break
        except (*db.UNAVAILABLE_ERRORS, asyncpg.InvalidCatalogNameError) as exc:
            if time.monotonic() > deadline:
                log.error("postgres not reachable after %.0f s: %s", deadline_seconds, exc)
                return 1
            # Once: under a swarm nothing starts Postgres first, so this wait is normal there.
            if not waiting:
                log.warning("waiting for postgres (%s)", exc)
                waiting = True
            await asyncio.sleep(0.5)
    try:
        version = await db.migrate(conn)
    finally:
        await conn.close()
    log.info("schema at version %d", version)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main()))
