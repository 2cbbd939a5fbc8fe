"""Waiting for a result, scheduling, cancelling and priorities, with a task type of TASK_MODULES,
through the load balancer of either engine's stack (native, and Compose, where ./examples is
mounted into the containers)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from harness.stacks import BaseStack


def _accepted(stack: BaseStack, body: dict[str, Any]) -> dict[str, Any]:
    response = stack.http.post("/api/task", json=body)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def _waited(stack: BaseStack, task_id: str, seconds: float) -> dict[str, Any]:
    response = stack.http.get(f"/api/task/{task_id}", params={"wait": seconds}, timeout=seconds + 15)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_plugin_task_of_high_priority_is_waited_for_in_one_request(any_stack: BaseStack) -> None:
    accepted = _accepted(any_stack, {"type": "word_count", "data": {"text": "one two\nthree"}, "priority": "high"})
    done = _waited(any_stack, accepted["task_id"], 20)
    assert done["status"] == "completed"
    assert done["result"] == {"words": 3, "lines": 2}
    assert done["priority"] == "high"
    refused = any_stack.http.post("/api/task", json={"type": "word_count", "data": {"text": 42}})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "data", "text"]


def test_a_delayed_task_runs_after_its_time_and_a_later_one_is_cancelled(any_stack: BaseStack) -> None:
    soon = _accepted(any_stack, {"type": "echo", "data": {"n": 1}, "delay_seconds": 1})
    later = _accepted(any_stack, {"type": "echo", "data": {"n": 2}, "delay_seconds": 120})
    assert (soon["status"], later["status"]) == ("scheduled", "scheduled")
    cancelled = any_stack.http.delete(f"/api/task/{later['task_id']}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    done = _waited(any_stack, soon["task_id"], 20)
    assert done["status"] == "completed"
    assert datetime.fromisoformat(done["started_at"]) >= datetime.fromisoformat(done["run_at"])
    rows = any_stack.task_rows("id::text AS id, status, started_at", [soon["task_id"], later["task_id"]], 30)
    by_id = {row["id"]: row for row in rows}
    assert by_id[soon["task_id"]]["status"] == "completed"
    assert by_id[later["task_id"]]["status"] == "cancelled"
    assert by_id[later["task_id"]]["started_at"] is None
    again = any_stack.http.delete(f"/api/task/{soon['task_id']}")
    assert again.status_code == 409
