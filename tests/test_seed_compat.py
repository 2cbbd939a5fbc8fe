"""The public contract the README documents: its curl lines, ports, endpoints and field names."""

from __future__ import annotations

import json
import subprocess

from core.db import MIGRATIONS
from harness.stacks import BaseStack, Stack


def curl(*args: str) -> tuple[int, dict[str, object]]:
    out = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", *args], check=True, capture_output=True, text=True
    ).stdout
    body, _, code = out.rpartition("\n")
    return int(code), json.loads(body)


def test_readme_curl_lines(any_stack: BaseStack) -> None:
    code, status = curl(f"{any_stack.lb}/api/status")
    assert code == 200
    assert {"api_gateway", "worker_service", "redis", "metrics"} <= set(status)

    code, accepted = curl(
        "-X", "POST", f"{any_stack.lb}/api/task",
        "-H", "Content-Type: application/json",
        "-d", '{"type": "image_processing", "data": {"image_url": "https://example.com/image.jpg", "work_ms": 10}}',
    )  # fmt: skip
    assert code == 202
    assert accepted["status"] == "queued"

    task_id = str(accepted["task_id"])
    any_stack.wait_status(task_id, {"completed"})
    code, task = curl(f"{any_stack.lb}/api/task/{task_id}")
    assert code == 200
    for field in ("id", "data", "status", "created_at", "worker_id", "started_at", "result", "completed_at"):
        assert field in task
    assert "processing_time" in task

    code, metrics = curl(f"{any_stack.lb}/api/metrics")
    assert code == 200
    assert {"system_metrics", "recent_tasks", "timestamp"} <= set(metrics)


def test_gateway_port_8000_and_worker_port_8001(any_stack: BaseStack) -> None:
    code, info = curl(f"{any_stack.gateway}/")
    assert code == 200
    assert info["service"] == "API Gateway"
    code, status = curl(f"{any_stack.worker}/worker/status")
    assert code == 200
    assert {"worker_id", "status", "active_workers", "queue_length", "worker_metrics", "timestamp"} <= set(status)
    code, health = curl(f"{any_stack.worker}/health")
    assert code == 200
    assert health["status"] == "healthy"
    # Scaling advice needs the admin token.
    code, _ = curl("-X", "POST", f"{any_stack.worker}/worker/scale")
    assert code == 401
    code, scale = curl(
        "-X", "POST", f"{any_stack.worker}/worker/scale", "-H", f"Authorization: Bearer {any_stack.env['ADMIN_TOKEN']}"
    )
    assert code == 200
    recommendation = scale["recommendation"]
    assert isinstance(recommendation, dict)
    assert recommendation["action"] in {"scale_up", "scale_down", "maintain"}


def test_dashboard_port_8080(any_stack: BaseStack) -> None:
    page = any_stack.http.get(f"{any_stack.monitor}/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "Serverless Scaling" in page.text
    code, health = curl(f"{any_stack.monitor}/api/health")
    assert code == 200
    assert health["status"] == "healthy"
    code, metrics = curl(f"{any_stack.monitor}/api/metrics")
    assert code == 200
    assert {"system_health", "performance", "workers", "recent_tasks", "scaling_recommendation"} <= set(metrics)
    performance = metrics["performance"]
    assert isinstance(performance, dict)
    assert {"tasks_per_minute", "avg_processing_time"} <= set(performance)
    workers = metrics["workers"]
    assert isinstance(workers, list)
    assert all("last_seen" in w for w in workers)


def test_migration_runs_again_harmlessly(stack: Stack) -> None:
    result = subprocess.run(
        stack.plan.migrate.command, env={**stack.env, **stack.plan.migrate.env}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    versions = stack.pg("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in versions] == list(range(1, len(MIGRATIONS) + 1))
