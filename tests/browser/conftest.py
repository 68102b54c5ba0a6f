"""A real browser for the console tests: Debian's chromium driven by Playwright through
`executable_path` (Playwright never downloads a browser here). Each test gets a fresh
browser; every page opened through `open_page` records console errors and CSP violations
(the test fails on any) and is photographed when the test fails
(tests/browser/failures/, or $LOYALTYD_BROWSER_FAILURES)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

FAILURES = Path(os.environ.get("LOYALTYD_BROWSER_FAILURES", Path(__file__).parent / "failures"))
OpenPage = Callable[[], Awaitable[Page]]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = _chromium()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs chromium (.ci/run), but it is missing")
        pytest.skip("no chromium here: apt-get install chromium")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()


class ConsoleErrors:
    """What the pages wrote to their consoles as errors; `allow` names the ones a test
    expects (a 404 it asked for)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.allowed: list[str] = []

    def allow(self, words: str) -> None:
        self.allowed.append(words)

    @property
    def unexpected(self) -> list[str]:
        return [e for e in self.seen if not any(a in e for a in self.allowed)]


@pytest.fixture
def console_errors() -> ConsoleErrors:
    return ConsoleErrors()


@pytest.fixture
async def open_page(
    browser: Browser, request: pytest.FixtureRequest, console_errors: ConsoleErrors
) -> AsyncIterator[Callable[..., Awaitable[Page]]]:
    """`await open_page()`: a page in a context of its own (one person, own cookies)."""
    contexts: list[BrowserContext] = []
    errors = console_errors.seen

    async def make(width: int = 1280, height: int = 900) -> Page:
        context = await browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = await context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        return page

    yield make
    if request.node.stash.get(_FAILED, False):
        FAILURES.mkdir(parents=True, exist_ok=True)
        for n, context in enumerate(contexts):
            for m, page in enumerate(context.pages):
                path = FAILURES / f"{request.node.name}-{n}-{m}.png"
                await page.screenshot(path=str(path), full_page=True)
    for context in contexts:
        await context.close()
    assert console_errors.unexpected == [], f"console errors: {console_errors.unexpected}"
