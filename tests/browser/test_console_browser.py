"""The console in a real browser (headless chromium), against a running daemon sending to the
fake PassKit: an invitation to a first campaign and its cancel, and two programs' admins side
by side, each seeing only their own. No console error under the strict CSP."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from playwright.async_api import Page, expect

from daemon.core.config import Settings
from daemon.testing.fakepasskit import FakePassKit, LatencyModel
from tests.browser.conftest import ConsoleErrors
from tests.campaign_support import bulk_audience
from tests.console.support import PASSWORD, SECRET, invite
from tests.factories import make_pass, make_program
from tests.harness import fake_passkit, running_daemon, settings_for
from tests.ops.test_http_daemon import free_port

# Screenshots for the README, when asked for (the tests always run the same steps).
SHOTS = os.environ.get("LOYALTYD_SCREENSHOTS")


@pytest.fixture
async def fake() -> AsyncIterator[FakePassKit]:
    async with fake_passkit(latency=LatencyModel(median_ms=25)) as f:
        yield f


@pytest.fixture
def settings(fake: FakePassKit, make_settings: Callable[..., Settings]) -> Settings:
    return settings_for(
        make_settings,
        fake.url,
        loyaltyd_http_port=free_port(),
        loyaltyd_console=True,
        loyaltyd_console_secret=SECRET,
        passkit_max_concurrency=2,
        loyaltyd_console_confirm_above=100,
    )


def _base(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.loyaltyd_http_port}/console"


async def _shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


async def _sign_in_by_invitation(page: Page, base: str, token: str) -> None:
    await page.goto(f"{base}/invite/{token}")
    await expect(page.get_by_role("heading", name="Welcome")).to_be_visible()
    await page.get_by_label("New password").fill(PASSWORD)
    await page.get_by_label("Again").fill(PASSWORD)
    await page.get_by_role("button", name="Set password and sign in").click()
    await expect(page.get_by_role("heading", name="Campaigns")).to_be_visible()


async def test_from_an_invitation_to_a_sent_campaign_then_a_cancelled_one(
    pool: asyncpg.Pool,
    database_url: str,
    settings: Settings,
    fake: FakePassKit,
    open_page: Callable[..., Awaitable[Page]],
) -> None:
    program = await make_program(pool, name="Joe's Pizza")
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, 40)
    token = await invite(pool, "ada@example.com", program)
    base = _base(settings)
    async with running_daemon(settings, database_url):
        page = await open_page()
        await _sign_in_by_invitation(page, base, token)
        await _shot(page, "campaigns-empty")

        # Compose, with the preview for a real member, and estimate.
        await page.get_by_role("link", name="New campaign").first.click()
        await page.get_by_label("Name").fill("Weekend double points")
        await page.locator("#message").fill("Hi {first_name|friend}, double points this weekend!")
        await expect(page.locator("#preview .phone-text")).to_contain_text(
            re.compile(r"Hi Member\d+, double points")
        )
        await _shot(page, "new-campaign")
        await page.get_by_role("button", name="Estimate").click()
        await expect(page.locator(".status-line")).to_contain_text(
            "This will buzz 40 phones.", timeout=15_000
        )
        await _shot(page, "estimate")

        # The dialog says the daemon's count; confirming sends it.
        await page.get_by_role("link", name="Send Push Blast").click()
        dialog = page.locator("dialog#send-dialog")
        await expect(dialog).to_be_visible()
        await expect(dialog).to_contain_text("This will buzz 40 phones. Are you sure?")
        await _shot(page, "confirm-dialog")
        await dialog.get_by_role("button", name="Yes, send it").click()
        await expect(page.locator(".status-line .status")).to_have_text("Completed", timeout=30_000)
        await _shot(page, "campaign-completed")
        assert len(fake.requests) >= 40

        # A bigger one, cancelled while it goes out: PassKit slows down, so the campaign takes
        # about a minute and the cancel lands mid-way however slow the browser is.
        fake.latency = LatencyModel(median_ms=200)
        async with pool.acquire() as conn:
            await bulk_audience(conn, program, 560, prefix="pk-more")
        await page.goto(f"{base}/campaigns/new")
        await page.get_by_label("Name").fill("Flash sale")
        await page.locator("#message").fill("Flash sale: 50% off until 5 PM!")
        await page.get_by_role("button", name="Estimate").click()
        await expect(page.locator(".status-line")).to_contain_text(
            "This will buzz 600 phones.", timeout=15_000
        )
        await page.get_by_role("link", name="Send Push Blast").click()
        dialog = page.locator("dialog#send-dialog")
        send = dialog.get_by_role("button", name="Yes, send it")
        await expect(send).to_be_disabled()  # 600 is above the threshold: type it
        await dialog.get_by_label("Type 600 to confirm").fill("600")
        await send.click()
        await expect(page.locator(".status-line .status")).to_have_text(
            "Processing", timeout=15_000
        )
        await _shot(page, "campaign-sending")
        await page.get_by_role("link", name="Cancel", exact=True).click()
        await (
            page.locator("dialog#cancel-dialog")
            .get_by_role("button", name="Yes, cancel it")
            .click()
        )
        await expect(page.locator(".status-line .status")).to_have_text("Cancelled", timeout=15_000)

        row = await pool.fetchrow(
            "SELECT status, sent_count, skipped_count, recipient_count, confirmed_by, "
            "cancelled_by FROM push_campaigns WHERE name = 'Flash sale'"
        )
        assert row is not None and row["status"] == "CANCELLED"
        assert row["skipped_count"] > 0
        assert (row["confirmed_by"], row["cancelled_by"]) == (
            "console: ada@example.com",
            "console: ada@example.com",
        )
        await page.goto(f"{base}/campaigns")
        await _shot(page, "campaigns")

        # Program settings, with their change log.
        await page.get_by_role("link", name="Settings").click()
        await page.get_by_label("Give each member reward points").check()
        await page.get_by_role("spinbutton", name="Reward points").fill("50")
        await page.get_by_role("button", name="Save").click()
        await expect(page.get_by_role("status")).to_contain_text("Saved:")
        await expect(page.locator("table")).to_contain_text("console: ada@example.com")
        await _shot(page, "settings")
        await _leave(page)


async def test_the_cancel_dialog_stays_usable_while_the_figures_move(
    pool: asyncpg.Pool,
    database_url: str,
    settings: Settings,
    fake: FakePassKit,
    open_page: Callable[..., Awaitable[Page]],
) -> None:
    """A person reads the dialog for a few seconds while the send goes on and the page's
    figures refresh under it; "Yes, cancel it" still stops the send."""
    fake.latency = LatencyModel(median_ms=200)  # about 10 messages a second: a long send
    program = await make_program(pool, name="Joe's Pizza")
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, 300)
    campaign = await pool.fetchval(
        "INSERT INTO push_campaigns (program_id, name, message_text, status) "
        "VALUES ($1, 'Slow blast', 'Hello', 'PENDING') RETURNING id",
        program,
    )
    token = await invite(pool, "ada@example.com", program)
    base = _base(settings)
    async with running_daemon(settings, database_url):
        page = await open_page()
        await _sign_in_by_invitation(page, base, token)
        await page.goto(f"{base}/campaigns/{campaign}")
        await expect(page.locator(".status-line .status")).to_have_text(
            "Processing", timeout=15_000
        )
        await page.get_by_role("link", name="Cancel", exact=True).click()
        dialog = page.locator("dialog#cancel-dialog")
        await expect(dialog).to_be_visible()
        await expect(dialog.get_by_role("button", name="Keep it")).to_be_focused()
        refreshes: list[str] = []
        page.on("request", lambda r: refreshes.append(r.url) if r.url.endswith("/live") else None)
        await page.wait_for_timeout(3_000)
        assert len(refreshes) >= 2  # the figures moved meanwhile
        await expect(page.locator(".status-line .status")).to_have_text("Processing")
        await dialog.get_by_role("button", name="Yes, cancel it").click()
        await expect(page.locator(".status-line .status")).to_have_text("Cancelled", timeout=15_000)
        await _leave(page)
    row = await pool.fetchrow(
        "SELECT status, cancelled_by, recipient_count, sent_count FROM push_campaigns "
        "WHERE id = $1",
        campaign,
    )
    assert row is not None and (row["status"], row["cancelled_by"]) == (
        "CANCELLED",
        "console: ada@example.com",
    )
    assert row["sent_count"] < row["recipient_count"]


async def test_an_operator_sees_the_fleet_and_requeues_dead_syncs(
    pool: asyncpg.Pool,
    database_url: str,
    settings: Settings,
    open_page: Callable[..., Awaitable[Page]],
) -> None:
    program = await make_program(pool, name="Joe's Pizza")
    dead = await make_pass(pool, program)
    await pool.execute(
        "INSERT INTO loyaltyd.pass_syncs (pass_id, program_id, points_balance, points_generation,"
        " state, last_error) VALUES ($1, $2, 5, 1, 'dead', 'PassKit set_points answered 404')",
        dead,
        program,
    )
    token = await invite(pool, "ops@example.com", None, operator=True)
    base = _base(settings)
    async with running_daemon(settings, database_url):
        page = await open_page()
        await _sign_in_by_invitation(page, base, token)
        await page.get_by_role("link", name="Operations").click()
        await expect(page.locator("body")).to_contain_text("Dead pass syncs (1)")
        await expect(page.locator("body")).to_contain_text("Answering")
        await _shot(page, "operations")
        await page.get_by_role("button", name="Requeue", exact=True).click()
        await expect(page.locator("body")).to_contain_text("Dead pass syncs (0)")
        await _leave(page)


async def test_two_programs_admins_side_by_side_see_only_their_own(
    pool: asyncpg.Pool,
    database_url: str,
    settings: Settings,
    open_page: Callable[..., Awaitable[Page]],
    console_errors: ConsoleErrors,
) -> None:
    pizza = await make_program(pool, name="Joe's Pizza")
    events = await make_program(pool, name="City Events")
    campaigns: dict[str, Any] = {}
    for program, name in ((pizza, "Pizza <b>night</b>"), (events, "<script>alert(1)</script>")):
        campaigns[name] = await pool.fetchval(
            "INSERT INTO push_campaigns (program_id, name, message_text, status) "
            "VALUES ($1, $2, 'Hello', 'DRAFT') RETURNING id",
            program,
            name,
        )
    tokens = [
        await invite(pool, "a@pizza.example", pizza),
        await invite(pool, "b@events.example", events),
    ]
    base = _base(settings)
    console_errors.allow("404")
    async with running_daemon(settings, database_url):
        alice, bob = await open_page(), await open_page(width=390, height=844)
        await _sign_in_by_invitation(alice, base, tokens[0])
        await _sign_in_by_invitation(bob, base, tokens[1])
        await expect(alice.locator("table.campaigns")).to_contain_text("Pizza <b>night</b>")
        await expect(alice.locator("table.campaigns")).not_to_contain_text("alert(1)")
        await expect(bob.locator("table.campaigns")).to_contain_text("<script>alert(1)</script>")
        await expect(bob.locator("table.campaigns")).not_to_contain_text("Pizza")
        await _shot(bob, "campaigns-phone")
        other = await alice.goto(f"{base}/campaigns/{campaigns['<script>alert(1)</script>']}")
        assert other is not None and other.status == 404
        other = await bob.goto(f"{base}/campaigns/{campaigns['Pizza <b>night</b>']}/recipients")
        assert other is not None and other.status == 404
        await _leave(alice, bob)


async def _leave(*pages: Page) -> None:
    """Close the pages' event streams before the daemon stops (a stream the server ends is an
    error in the browser's console, and would fail the test)."""
    for page in pages:
        await page.goto("about:blank")
