"""The dashboard in headless Chromium (Debian's, never `playwright install`): live, charted, safe."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page

from harness.stacks import Stack

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[tuple[Page, list[str]]]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    opened.on("console", on_console)
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.goto(stack.monitor + "/")
    opened.wait_for_selector('#live[data-state="live"]', timeout=5000)
    try:
        yield opened, errors
    finally:
        context.close()


def test_page_renders_live_charts_with_data(page: tuple[Page, list[str]], stack: Stack) -> None:
    tab, errors = page
    for _ in range(3):
        stack.submit("echo", {"warm": True})
    for chart in ("chart-queue", "chart-workers", "chart-rates", "chart-latency"):
        tab.wait_for_selector(f"#{chart} canvas", timeout=3000)
        # uPlot holds the drawn arrays: x (time) plus one per line, filled from /api/series and the stream.
        tab.wait_for_function(f"() => charts['{chart}'].plot.data[0].length >= 3", timeout=5000)
        box = tab.locator(f"#{chart} canvas").bounding_box()
        assert box is not None
        assert box["width"] > 200
        assert box["height"] > 100
    # The workers line has the live workers in it.
    assert tab.evaluate("Math.max(...charts['chart-workers'].plot.data[1])") >= 1
    tab.wait_for_function("() => document.getElementById('card-requests').textContent !== '-'", timeout=3000)
    assert int(tab.locator("#card-active_workers").text_content() or 0) >= 1
    # Cancelled beside completed and failed, scheduled beside the queue, the queue split by priority.
    for card in ("cancelled", "scheduled", "queue_high", "queue_normal", "queue_low"):
        assert (tab.locator(f"#card-{card}").text_content() or "").isdigit(), card
    assert tab.locator("#workers tr td.state-online").count() >= 1
    assert (tab.locator("#scaling-reasons li").count()) >= 1
    # Stays live: frames keep coming, no reload (the same document the whole time).
    tab.evaluate("window.__sameDocument = true")
    first = tab.locator("#updated").text_content()
    tab.wait_for_function(f"() => document.getElementById('updated').textContent !== {first!r}", timeout=3000)
    assert tab.evaluate("window.__sameDocument") is True
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert errors == []


def test_submitted_task_appears_within_two_seconds(page: tuple[Page, list[str]], stack: Stack) -> None:
    tab, errors = page
    started = time.monotonic()
    task_id = stack.submit("echo", {"through": "nginx"})
    tab.wait_for_selector(f'#tasks tr[data-task-id="{task_id}"]', timeout=2000)
    assert time.monotonic() - started < 2.0
    assert errors == []


def test_payload_markup_shows_as_text_and_runs_nothing(page: tuple[Page, list[str]], stack: Stack) -> None:
    tab, errors = page
    attack = "<img src=x onerror=\"window.__xss='ran'\"><script>window.__xss='ran'</script>"
    task_id = stack.submit("echo", {"html": attack})
    stack.wait_status(task_id, {"completed"})
    row = tab.locator(f'#tasks tr[data-task-id="{task_id}"]')
    row.wait_for(timeout=3000)
    # Payloads need the admin token, pasted into the page (sessionStorage, never the URL).
    tab.fill("#token-input", stack.env["ADMIN_TOKEN"])
    tab.click("#token-use")
    row.click()
    tab.wait_for_selector("#task-detail:not([hidden])", timeout=3000)
    tab.wait_for_function(f"() => document.getElementById('detail-id').textContent === {task_id!r}", timeout=3000)
    tab.wait_for_selector("#detail-private:not([hidden])", timeout=3000)
    assert attack.replace('"', '\\"') in (tab.locator("#detail-data").text_content() or "")
    assert tab.locator("#task-detail img, #task-detail script").count() == 0
    assert tab.locator("body img").count() == 0
    assert tab.evaluate("window.__xss") is None
    assert errors == []


def test_filters_query_the_history(page: tuple[Page, list[str]], stack: Stack) -> None:
    tab, errors = page
    kind = f"browser-{int(time.time() * 1000)}"
    task_id = stack.submit(kind, {"work_ms": 1})
    stack.wait_status(task_id, {"completed"})
    tab.fill("#filter-type", kind)
    tab.wait_for_selector(f'#tasks tr[data-task-id="{task_id}"]', timeout=3000)
    tab.wait_for_function(
        "() => [...document.querySelectorAll('#tasks tr')].every(tr => tr.dataset.taskId)"
        " && document.querySelectorAll('#tasks tr').length === 1",
        timeout=3000,
    )
    tab.select_option("#filter-status", "failed")
    tab.wait_for_selector("#tasks tr:not([data-task-id])", timeout=3000)  # "no tasks match"
    assert errors == []


def test_detail_without_the_token_shows_no_payload(page: tuple[Page, list[str]], stack: Stack) -> None:
    tab, errors = page
    task_id = stack.submit("echo", {"private": "only-with-the-token"})
    stack.wait_status(task_id, {"completed"})
    row = tab.locator(f'#tasks tr[data-task-id="{task_id}"]')
    row.wait_for(timeout=3000)
    row.click()
    tab.wait_for_function(f"() => document.getElementById('detail-id').textContent === {task_id!r}", timeout=3000)
    assert tab.locator("#detail-locked").is_visible()
    assert not tab.locator("#detail-private").is_visible()
    assert "only-with-the-token" not in (tab.locator("body").text_content() or "")
    # A wrong token is refused and forgotten; a right one unlocks the detail and stays out of the URL.
    tab.fill("#token-input", "not-the-token")
    tab.click("#token-use")
    row.click()
    tab.wait_for_function("() => document.getElementById('token-state').textContent.includes('refused')", timeout=3000)
    assert tab.evaluate("sessionStorage.getItem('ss-admin-token')") is None
    tab.fill("#token-input", stack.env["ADMIN_TOKEN"])
    tab.click("#token-use")
    row.click()
    tab.wait_for_selector("#detail-private:not([hidden])", timeout=3000)
    assert "only-with-the-token" in (tab.locator("#detail-data").text_content() or "")
    assert tab.evaluate("sessionStorage.getItem('ss-admin-token')") == stack.env["ADMIN_TOKEN"]
    assert stack.env["ADMIN_TOKEN"] not in tab.url
    # Chromium logs the wrong token's 401 itself; nothing else may fail.
    assert [e for e in errors if "401" not in e] == []
