"""Every purge and redrive leaves one audit line: in the gateway's log and in a capped Redis list."""

from __future__ import annotations

import json
from typing import Any

from core import keys
from harness.stacks import Stack, wait_for


def _admin(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.env['ADMIN_TOKEN']}"}


def _newest_line(stack: Stack) -> str:
    raw = stack.redis.lindex(keys.ADMIN_AUDIT, 0)
    assert raw, "no audit entry"
    return str(raw)


def _newest(stack: Stack) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(_newest_line(stack))
    return entry


def _logged(stack: Stack, line: str) -> bool:
    logs = stack.config.log_dir.glob("api-gateway-*.log")
    return any(line in path.read_text() for path in logs)


def test_purge_and_redrive_are_audited_in_the_log_and_a_capped_list(stack: Stack, workers_paused: list[str]) -> None:
    # A full list: the next entry pushes the oldest out.
    stack.redis.delete(keys.ADMIN_AUDIT)
    stack.redis.rpush(keys.ADMIN_AUDIT, *["{}"] * keys.ADMIN_AUDIT_KEPT)
    # The workers are stopped: the queue holds these behind anything an earlier test left there.
    depth = int(stack.redis.llen(keys.SINGLE.queue))
    for i in range(3):
        stack.submit("echo", {"i": i})

    purged = stack.http.delete("/api/admin/queue", headers=_admin(stack))
    assert purged.status_code == 200, purged.text
    entry = _newest(stack)
    assert entry["action"] == "purge"
    assert entry["count"] == purged.json()["purged"] == depth + 3
    assert entry["client"] == "127.0.0.1"  # the test's own address, as nginx reported it
    assert entry["at"]
    assert stack.redis.llen(keys.ADMIN_AUDIT) == keys.ADMIN_AUDIT_KEPT
    line = _newest_line(stack)
    wait_for(lambda: _logged(stack, line), 10, "the purge's log line")

    redriven = stack.http.post("/api/admin/dlq/redrive", json={"ids": []}, headers=_admin(stack))
    assert redriven.status_code == 200, redriven.text
    entry = _newest(stack)
    assert (entry["action"], entry["count"]) == ("redrive", 0)
    assert stack.redis.llen(keys.ADMIN_AUDIT) == keys.ADMIN_AUDIT_KEPT
    line = _newest_line(stack)
    wait_for(lambda: _logged(stack, line), 10, "the redrive's log line")


def test_a_refused_admin_call_is_not_audited(stack: Stack) -> None:
    before = stack.redis.llen(keys.ADMIN_AUDIT)
    assert stack.http.delete("/api/admin/queue").status_code == 401
    assert stack.redis.llen(keys.ADMIN_AUDIT) == before
