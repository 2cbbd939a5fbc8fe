"""Task ids: time-ordered version 7 UUIDs, and only their canonical 8-4-4-4-12 form is an id, at
every route that takes one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx

from core.models import lowest_task_id, new_task_ids, task_id_time
from tests.inprocess.apps import MARKS, persisted, submit
from tests.inprocess.servers import Servers

pytestmark = MARKS

ODD_FORMS = (
    "{{{id}}}",  # braces
    "urn:uuid:{id}",
    "{hex}",  # no hyphens
    "{{{hex}}}",
    "{id}x",
    " {id}",
)


def test_ids_are_version_7_with_their_time_and_sort_by_it() -> None:
    at = datetime(2031, 3, 4, 5, 6, 7, 890_000, tzinfo=UTC)
    ids = new_task_ids(2000, at_ms=round(at.timestamp() * 1000))
    assert len(set(ids)) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)
        assert task_id_time(text) == at
    # One call shares its millisecond; the rest is random, the last 12 digits above all.
    assert len({text[:13] for text in ids}) == 1
    assert len({text[-12:] for text in ids}) == 2000
    earlier = new_task_ids(1, at_ms=round(at.timestamp() * 1000) - 1)[0]
    assert earlier < lowest_task_id(at) <= min(ids)
    assert uuid.UUID(earlier) < uuid.UUID(lowest_task_id(at)) <= uuid.UUID(min(ids))  # Postgres's order
    assert task_id_time(new_task_ids(1)[0]) is not None
    assert new_task_ids(0) == []


def test_only_version_7_ids_have_a_time() -> None:
    v7 = new_task_ids(1, at_ms=0)[0]
    assert task_id_time(v7) == datetime(1970, 1, 1, tzinfo=UTC)
    assert task_id_time(v7.upper()) == task_id_time(v7)
    for other in (str(uuid.uuid4()), v7[:19] + "0" + v7[20:], "not-an-id", v7.replace("-", ""), f"{{{v7}}}"):
        assert task_id_time(other) is None, other


def odd_ids(task_id: str) -> list[str]:
    return [form.format(id=task_id, hex=task_id.replace("-", "")) for form in ODD_FORMS]


async def test_odd_task_ids_are_404_at_the_gateway_and_the_dashboard(
    servers: Servers,
    gateway: httpx.AsyncClient,
    dashboard: httpx.AsyncClient,
    worker: httpx.AsyncClient,
    admin: dict[str, str],
) -> None:
    # Persisted, so a lookup that misses Redis reaches Postgres (asyncpg's uuid encoder takes
    # braces and urn:uuid:, and would find the task by its hyphen-less form).
    task_id = await submit(gateway, "echo", {"odd": "ids"})
    await persisted(servers, gateway, task_id)
    for odd in odd_ids(task_id):
        at_gateway = await gateway.get(f"/api/task/{odd}")
        assert at_gateway.status_code == 404, (odd, at_gateway.text)
        assert at_gateway.json()["error"] == "not_found"
        at_dashboard = await dashboard.get(f"/api/tasks/{odd}", headers=admin)
        assert at_dashboard.status_code == 404, (odd, at_dashboard.text)
        assert at_dashboard.json()["error"] == "task_not_found"
    # The canonical form answers, in either case (ids are written in lowercase).
    assert (await gateway.get(f"/api/task/{task_id}")).status_code == 200
    assert (await gateway.get(f"/api/task/{task_id.upper()}")).json()["id"] == task_id
    assert (await dashboard.get(f"/api/tasks/{task_id}", headers=admin)).status_code == 200
    upper = await dashboard.get(f"/api/tasks/{task_id.upper()}", headers=admin)
    assert upper.json()["id"] == task_id, upper.text


async def test_odd_ids_in_a_redrive_are_skipped_not_a_500(
    servers: Servers, gateway: httpx.AsyncClient, worker: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    task_id = await submit(gateway, "echo", {"odd": "redrive"})
    await persisted(servers, gateway, task_id)
    # Redis is empty at the start of each test: no earlier redrive holds the one-per-second lock.
    response = await gateway.post("/api/admin/dlq/redrive", json={"ids": odd_ids(task_id)}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["redriven"] == 0
