"""Only the canonical 8-4-4-4-12 form is a task id, at every route that takes one."""

from __future__ import annotations

import httpx

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
