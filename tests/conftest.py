from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from harness.stacks import BaseStack, ComposeStack, Stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """One real native stack for the session: redis-server, PostgreSQL, nginx, 2 gateways, 2 workers."""
    running = Stack().up()
    try:
        yield running
    finally:
        running.down()


@pytest.fixture(scope="session")
def compose_stack() -> Iterator[ComposeStack]:
    """One Compose project for the session, built from this checkout: the same services in containers."""
    running = ComposeStack().up()
    try:
        yield running
    finally:
        running.down()


@pytest.fixture(params=["native", "compose"])
def any_stack(request: pytest.FixtureRequest) -> BaseStack:
    """The black-box tests that take this run against both engines' session stacks."""
    running: BaseStack = request.getfixturevalue("stack" if request.param == "native" else "compose_stack")
    return running


@pytest.fixture
def workers_paused(stack: Stack) -> Iterator[list[str]]:
    """Stop the running workers so the queue holds still; start them again afterwards."""
    names = stack.worker_programs()
    for name in names:
        stack.supervisor.stop(name)
    try:
        yield names
    finally:
        for name in names:
            stack.supervisor.start(name)


#: Debian's chromium (never `playwright install`), with the flags a headless run in CI needs.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module: Playwright's sync API runs an event loop in this
    thread while it is open, which would fail every later asyncio.run()."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()
