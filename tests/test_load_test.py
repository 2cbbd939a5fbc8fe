"""`python -m load_test` against the session stack, as a subprocess (Locust's gevent patching stays
out of pytest): a few seconds of load, summary.json checked, report.html drawn in headless Chromium."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from playwright.sync_api import Browser, Request, Route

from harness.stacks import Stack
from native.plan import ROOT
from tests.test_dashboard_browser import ARTIFACTS

FIELDS = {
    "accepted",
    "completed",
    "failed",
    "lost",
    "duplicates",
    "rate_limited",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_workers",
    "scale_events",
}


def test_short_load_test_writes_a_verified_summary_and_an_offline_report(
    stack: Stack, tmp_path: Path, browser: Browser
) -> None:
    env = {**stack.env, "CONCURRENT_USERS": "12", "SPAWN_RATE": "12", "DURATION": "6", "LOAD_SHAPE": "step"}
    result = subprocess.run(
        [sys.executable, "-m", "load_test", "--out", str(tmp_path), "--drain", "60"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    print(result.stdout[-3000:], result.stderr[-3000:])
    assert result.returncode == 0
    assert "] users" in result.stdout  # progress lines while it ran
    [folder] = [p for p in tmp_path.iterdir() if p.is_dir()]
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary) >= FIELDS
    assert summary["accepted"] > 10
    # `lost` comes from Postgres: every accepted id has a final row after the drain.
    assert summary["lost"] == 0
    assert summary["duplicates"] == 0
    assert summary["completed"] + summary["failed"] == summary["accepted"]
    assert summary["failed"] >= 0
    assert summary["completed"] > 0
    assert len((folder / "accepted.txt").read_text().split()) == summary["accepted"]
    assert 0 <= summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"]
    assert summary["max_workers"] >= 1
    assert summary["scale_events"] == len(summary["decisions"])
    assert summary["rate_limited"] == 0
    assert summary["errors"] == 0
    assert summary["passed"] is True
    assert (folder / "locust_stats_history.csv").exists()

    fetched: list[str] = []

    def offline(route: Route, request: Request) -> None:
        if request.url.startswith("file://"):
            route.continue_()
        else:
            fetched.append(request.url)
            route.abort()

    page = browser.new_page(viewport={"width": 1100, "height": 1800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.route("**/*", offline)
    page.goto((folder / "report.html").as_uri())
    assert page.text_content("#verdict") == "PASS"
    charts = {
        c: page.locator(f'svg.chart[data-chart="{c}"]') for c in ("rate", "latency", "queue", "workers", "completions")
    }
    for name, chart in charts.items():
        assert chart.count() == 1, name
        assert chart.bounding_box()["height"] > 100, name  # type: ignore[index]
    # Locust's rate and latency, and the dashboard's queue/workers/completions, all have lines.
    for name in ("rate", "latency", "workers", "completions"):
        assert charts[name].locator("polyline").count() >= 1, name
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "load-test-report.png"), full_page=True)
    assert not errors
    assert not fetched
