"""The dashboard's task routes in-process: summaries for everyone, payloads only with the admin token."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from core.metrics import SUMMARY_FIELDS
from tests.inprocess.apps import MARKS, final, submit, task

pytestmark = MARKS

PRIVATE = {"data", "result", "error"}


async def secret_tasks(gateway: httpx.AsyncClient) -> tuple[str, str, str]:
    """A completed and a failed task whose data (and so result and error) carry a marker."""
    marker = f"secret-{uuid.uuid4().hex}"
    done = await submit(gateway, "echo", {"card": marker})
    failed = await submit(gateway, "fail", {"message": marker})
    for task_id in (done, failed):
        await final(gateway, task_id)
    return marker, done, failed


def assert_summaries(tasks: list[dict[str, Any]], ids: set[str]) -> None:
    listed = {t["id"]: t for t in tasks if t["id"] in ids}
    assert set(listed) == ids
    for found in listed.values():
        assert set(found) <= SUMMARY_FIELDS
        assert not PRIVATE & set(found)
        assert {"id", "type", "status", "created_at", "completed_at", "processing_time"} <= set(found)


async def test_metrics_and_listings_carry_no_payloads(
    gateway: httpx.AsyncClient, dashboard: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    marker, done, failed = await secret_tasks(gateway)
    ids = {done, failed}

    at_gateway = await gateway.get("/api/metrics")
    assert at_gateway.status_code == 200
    assert_summaries(at_gateway.json()["recent_tasks"], ids)
    assert marker not in at_gateway.text

    at_dashboard = await dashboard.get("/api/metrics")
    assert_summaries(at_dashboard.json()["recent_tasks"], ids)
    assert marker not in at_dashboard.text

    listing = await dashboard.get("/api/tasks", params={"limit": 200})
    assert_summaries(listing.json()["tasks"], ids)
    assert marker not in listing.text

    # Whoever holds the id reads the whole task from the gateway.
    assert (await task(gateway, done))["data"] == {"card": marker}
    assert (await task(gateway, failed))["data"] == {"message": marker}


async def test_dashboard_detail_needs_the_admin_token(
    gateway: httpx.AsyncClient, dashboard: httpx.AsyncClient, worker: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    marker, done, _ = await secret_tasks(gateway)
    url = f"/api/tasks/{done}"

    anonymous = await dashboard.get(url)
    assert anonymous.status_code == 200
    assert set(anonymous.json()) <= SUMMARY_FIELDS
    assert anonymous.json()["status"] == "completed"
    assert marker not in anonymous.text

    wrong = await dashboard.get(url, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "unauthorized"
    assert marker not in wrong.text

    with_token = await dashboard.get(url, headers=admin)
    assert with_token.status_code == 200
    assert with_token.json()["data"] == {"card": marker}
    assert with_token.json()["result"]
