from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from harness.stacks import BaseStack, ComposeStack, Stack

#: Fixtures that start processes (a stack, a Compose project, a browser): a test that takes one,
#: directly or through another fixture, is a full-stack test. Modules that start processes of their
#: own carry `pytestmark = pytest.mark.stack`. `pytest -m "not stack"` runs the rest: the fast layer.
STACK_FIXTURES = frozenset({"stack", "compose_stack", "any_stack", "browser"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if STACK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


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
def restores_stack(stack: Stack) -> Iterator[Stack]:
    """For a test that kills, stops, purges or rescales parts of the shared native stack: afterwards
    the same programs run, each worker heartbeats and /api/status is 200 (`BaseStack.restore`)."""
    with stack.restoring():
        yield stack


@pytest.fixture
def restores_any_stack(any_stack: BaseStack) -> Iterator[BaseStack]:
    """`restores_stack` for a test that runs against either engine's session stack."""
    with any_stack.restoring():
        yield any_stack


@pytest.fixture
def workers_paused(restores_stack: Stack) -> list[str]:
    """Stop the running workers so the queue holds still; `restores_stack` starts them again."""
    names = restores_stack.worker_programs()
    for name in names:
        restores_stack.supervisor.stop(name)
    return names


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
