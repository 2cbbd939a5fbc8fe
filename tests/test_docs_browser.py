"""The gateway's API docs in headless Chromium (Debian's, never `playwright install`): Swagger UI
at /docs and ReDoc at /redoc render every operation from vendored assets, with no CSP violation."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request

from harness.stacks import Stack

# Collects what the browser reports the page's CSP refused (the console says it too).
CSP_PROBE = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(e.violatedDirective + " " + e.blockedURI);
});
"""


def operations(stack: Stack) -> list[tuple[str, str]]:
    """Every operation of the gateway's schema, as (method, path): each page must show them all."""
    paths = httpx.get(stack.gateway + "/openapi.json").json()["paths"]
    return [(method, path) for path, methods in paths.items() for method in methods]


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[tuple[Page, list[str], list[str]]]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    opened.add_init_script(CSP_PROBE)
    errors: list[str] = []
    elsewhere: list[str] = []
    gateway = urlsplit(stack.gateway).netloc

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    def on_request(request: Request) -> None:
        if urlsplit(request.url).scheme in ("http", "https") and urlsplit(request.url).netloc != gateway:
            elsewhere.append(request.url)

    opened.on("console", on_console)
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.on("request", on_request)
    try:
        yield opened, errors, elsewhere
    finally:
        context.close()


def open_docs(tab: Page, url: str, script_policy: str) -> None:
    """Load a docs page: 200, under a policy that allows only its own scripts."""
    response = tab.goto(url)
    assert response is not None
    assert response.status == 200
    assert script_policy in response.headers["content-security-policy"]


def assert_nothing_went_wrong(tab: Page, errors: list[str], elsewhere: list[str]) -> None:
    """No policy violation, no script error, no request beyond the stack."""
    assert tab.evaluate("window.__csp") == []
    assert errors == []
    assert elsewhere == []


def test_swagger_ui_renders_every_operation(page: tuple[Page, list[str], list[str]], stack: Stack) -> None:
    tab, errors, elsewhere = page
    open_docs(tab, stack.gateway + "/docs", "script-src 'self'")
    expected = operations(stack)
    assert len(expected) >= 10
    for method, path in expected:
        tab.wait_for_selector(f'.opblock-{method} .opblock-summary-path[data-path="{path}"]', timeout=10_000)
    # Expanding an operation renders its schema and "Try it out" (the interactive part).
    tab.click('.opblock-post .opblock-summary-path[data-path="/api/task"]')
    tab.wait_for_selector(".opblock.is-open .try-out__btn", timeout=5000)
    assert_nothing_went_wrong(tab, errors, elsewhere)


def test_redoc_renders_every_operation(page: tuple[Page, list[str], list[str]], stack: Stack) -> None:
    tab, errors, elsewhere = page
    open_docs(tab, stack.gateway + "/redoc", "script-src 'self';")
    tab.wait_for_selector('[data-section-id^="operation/"]', timeout=15_000)
    expected = operations(stack)
    assert tab.locator('[data-section-id^="operation/"]').count() == len(expected)
    for _, path in expected:
        # ReDoc prints each operation's path in its request panel.
        assert tab.get_by_text(path, exact=True).count() >= 1, path
    assert_nothing_went_wrong(tab, errors, elsewhere)


def test_dashboard_links_to_both(browser: Browser, stack: Stack) -> None:
    context = browser.new_context()
    try:
        tab = context.new_page()
        tab.goto(stack.monitor + "/")
        for link, path in (("#link-swagger", "/docs"), ("#link-redoc", "/redoc")):
            href = urlsplit(tab.locator(link).get_attribute("href") or "")
            # The gateway's published port (GATEWAY_PORT; the test stack's is random), this host.
            assert (href.hostname, href.port, href.path) == ("127.0.0.1", stack.config.gateway_port, path)
    finally:
        context.close()
