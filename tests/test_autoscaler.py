"""The autoscaler acting on a real native stack: a burst scales workers out, the backlog
drains, workers return to MIN_WORKERS after the stable window, and nothing is retried."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from core import keys
from harness.stacks import AUTOSCALED, Stack, wait_for

#: Starts processes of its own: a full-stack test (see tests/conftest.py).
pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def scaled() -> Iterator[Stack]:
    stack = Stack(AUTOSCALED).up()
    try:
        yield stack
    finally:
        stack.down()


def test_a_burst_scales_out_drains_and_scales_back_in(scaled: Stack) -> None:
    wait_for(
        lambda: len(scaled.worker_programs(("RUNNING", "STARTING"))) == 1, 30, "the stack to settle at MIN_WORKERS=1"
    )
    # 1 worker x 4 slots x 0.25 s = 16 tasks/s; 400 tasks would take 25 s alone.
    burst_at = time.monotonic()
    ids = [scaled.submit("sleep", {"ms": 250, "i": i}) for i in range(400)]
    peak = wait_for(lambda: (n := len(scaled.worker_programs(("RUNNING", "STARTING")))) >= 3 and n, 15, "a scale-out")
    scaled_out_after = time.monotonic() - burst_at
    results = scaled.wait_all_final(ids, timeout=90)
    drained_after = time.monotonic() - burst_at
    wait_for(lambda: len(scaled.worker_programs(("RUNNING", "STARTING"))) == 1, 60, "scale-in back to MIN_WORKERS")
    back_after = time.monotonic() - burst_at
    print(
        f"\n[autoscale] scaled out to {peak} after {scaled_out_after:.1f} s, drained after {drained_after:.1f} s, "
        f"back to 1 after {back_after:.1f} s"
    )
    assert {t["status"] for t in results.values()} == {"completed"}
    # Scale-in drains: no task was ever retried or requeued.
    assert {t["attempts"] for t in results.values()} == {1}
    workers_used = {t["worker_id"] for t in results.values()}
    assert len(workers_used) >= 3

    # The autoscaler's record of its last step can trail the process count by a tick.
    wait_for(
        lambda: json.loads(scaled.redis.lindex(keys.SCALING_DECISIONS, 0) or "{}").get("to") == 1,
        10,
        "the newest decision to be the scale-in to 1",
    )
    decisions = [json.loads(d) for d in scaled.redis.lrange(keys.SCALING_DECISIONS, 0, -1)]
    outs = [d for d in decisions if d["to"] > d["from"]]
    ins = [d for d in decisions if d["to"] < d["from"]]
    assert outs
    assert ins
    assert all(d["applied"] and d["mode"] == "on" and d["reasons"] for d in decisions)
    assert any("burst" in r for d in outs for r in d["reasons"])
    assert any("draining worker-service-" in r for d in ins for r in d["reasons"])
    # The live view and the history agree.
    api = httpx.get(f"{scaled.monitor}/api/scaling").json()
    assert api["mode"] == "on"
    assert api["decisions"][0]["to"] == decisions[0]["to"]
    # The history row follows the live one (Redis first, then Postgres): give it a moment.
    expected = [(d["from"], d["to"]) for d in reversed(decisions)]

    def history() -> list[tuple[int, int]]:
        rows = scaled.pg("SELECT from_workers, to_workers, applied FROM scaling_decisions ORDER BY at")
        return [(r["from_workers"], r["to_workers"]) for r in rows]

    wait_for(lambda: len(history()) >= len(expected), 10, "the decisions in Postgres")
    assert history() == expected


def test_autoscaler_reports_its_mode_and_last_advice(scaled: Stack) -> None:
    port = scaled.plan.of("autoscaler")[0].port
    status = httpx.get(f"http://127.0.0.1:{port}/status").json()
    assert status["mode"] == "on"
    assert status["engine"] == "native"
    assert status["last"]["reasons"]


def test_recommend_mode_decides_and_records_but_acts_on_nothing() -> None:
    stack = Stack({**AUTOSCALED, "AUTOSCALE": "recommend"}).up()
    try:
        ids = [stack.submit("sleep", {"ms": 250, "i": i}) for i in range(200)]
        decision = wait_for(
            lambda: (d := stack.redis.lindex(keys.SCALING_DECISIONS, 0)) and json.loads(d), 15, "a recorded decision"
        )
        assert decision["mode"] == "recommend"
        assert decision["applied"] is False
        assert decision["to"] > decision["from"]
        assert len(stack.worker_programs(("RUNNING", "STARTING"))) == 1  # nothing was started
        stack.wait_all_final(ids, timeout=90)
    finally:
        stack.down()
