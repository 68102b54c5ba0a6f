"""`loyaltyd wallet-sync` and `loyaltyd webhooks` as a user runs them (subprocesses) against
the fake PassKit: what they print, their exit codes, and that the webhook token never shows."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest

from daemon.testing.fakepasskit import FakePassKit
from tests.harness import API_KEY, API_SECRET, REPO, fake_passkit
from tests.wallet.support import wallet_program

TOKEN = "wh-0123456789abcdefghijklmnopqrstuvwxyz"
URL = f"https://loyalty.example.com/passkit/webhook/{TOKEN}"


@pytest.fixture
async def fake() -> AsyncIterator[FakePassKit]:
    async with fake_passkit(issued=None) as f:
        yield f


async def loyaltyd(dsn: str, fake_url: str, *args: str, **env: str) -> tuple[int, str]:
    environ = {
        **os.environ,
        "DATABASE_URL": dsn,
        "PASSKIT_API_KEY": API_KEY,
        "PASSKIT_API_SECRET": API_SECRET,
        "PASSKIT_BASE_URL": fake_url,
        "PASSKIT_RATE_LIMIT": "0",
        "LOYALTYD_LOG_LEVEL": "ERROR",
        "LOYALTYD_PASSKIT_WEBHOOK_TOKEN": TOKEN,
        **env,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon",
        *args,
        cwd=REPO,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_wallet_sync_prints_what_changed_per_program(
    pool: asyncpg.Pool, database_url: str, fake: FakePassKit
) -> None:
    statuses = ["PASS_INSTALLED"] * 5 + ["PASS_UNINSTALLED"] * 3 + ["PASS_INVALIDATED"] + [None]
    await wallet_program(pool, fake, statuses, passkit_points=lambda i: 4.0 if i == 1 else 10.0)
    code, out = await loyaltyd(database_url, fake.url, "wallet-sync")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("Wallet Bar (members): 9 checked (9 listed by PassKit) in ")
    assert lines[1] == (
        "  newly installed 0 · uninstalled 3 · invalidated 1 · issued 0 · deleted 1"
    )
    assert lines[2] == (
        "  balances: 1 differ · 1 repaired · 0 reported (drift again) · 0 left for the next "
        "sweep · 0 on dead syncs"
    )
    again_code, again = await loyaltyd(database_url, fake.url, "wallet-sync")
    assert again_code == 0
    assert "uninstalled 0 · invalidated 0 · issued 0 · deleted 0" in again


async def test_wallet_sync_says_how_many_balances_differ_in_tier_points(
    pool: asyncpg.Pool, database_url: str, fake: FakePassKit
) -> None:
    await wallet_program(
        pool,
        fake,
        ["PASS_INSTALLED"] * 3,
        tier_points=40,
        passkit_tier_points=lambda i: 2 if i == 1 else 40,
        tiers_at_passkit=True,
    )
    code, out = await loyaltyd(database_url, fake.url, "wallet-sync")
    assert code == 0, out
    assert out.splitlines()[2].startswith(
        "  balances: 1 differ (1 in tier points) · 1 repaired · 0 reported"
    )


async def test_wallet_sync_without_keys_says_so(database_url: str, fake: FakePassKit) -> None:
    code, out = await loyaltyd(
        database_url, fake.url, "wallet-sync", PASSKIT_API_KEY="", PASSKIT_API_SECRET=""
    )
    assert code == 2
    assert "needs PASSKIT_API_KEY and PASSKIT_API_SECRET" in out


async def test_webhooks_register_creates_then_updates_and_list_shows_them(
    pool: asyncpg.Pool, database_url: str, fake: FakePassKit
) -> None:
    program = await wallet_program(pool, fake, ["PASS_INSTALLED"])
    await pool.execute(
        "UPDATE programs SET passkit_coupon_campaign_id = 'coupons' WHERE id = $1", program
    )
    code, out = await loyaltyd(database_url, fake.url, "webhooks", "register", "--url", URL)
    assert code == 0, out
    assert out.splitlines() == [
        "Wallet Bar (coupons): created (https://loyalty.example.com/passkit/webhook/…)",
        "Wallet Bar (members): created (https://loyalty.example.com/passkit/webhook/…)",
    ]
    code, out = await loyaltyd(database_url, fake.url, "webhooks", "register", "--url", URL)
    assert code == 0 and out.count(": updated (") == 2
    assert len(fake.sinks) == 2
    protocols = {sink.to_json()["protocol"] for sink in fake.sinks.values()}
    assert protocols == {"MEMBERSHIP", "SINGLE_USE_COUPON"}
    code, out = await loyaltyd(database_url, fake.url, "webhooks", "list")
    assert code == 0
    assert "PASS_EVENT_INSTALLED,PASS_EVENT_UNINSTALLED,PASS_EVENT_INVALIDATED," in out
    assert "/passkit/webhook/… (loyaltyd)" in out
    assert TOKEN not in out


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (f"http://loyalty.example.com/passkit/webhook/{TOKEN}", "over https"),
        ("https://loyalty.example.com/passkit/webhook/another-token-0123456789abcdef", "must end"),
        (f"https://loyalty.example.com/hooks/{TOKEN}", "must end"),
        (f"https://loyalty.example.com/passkit/webhook/{TOKEN}?x=1", "must end"),
    ],
)
async def test_a_url_passkit_could_not_or_should_not_call_is_refused(
    pool: asyncpg.Pool, database_url: str, fake: FakePassKit, url: str, words: str
) -> None:
    await wallet_program(pool, fake, ["PASS_INSTALLED"])
    code, out = await loyaltyd(database_url, fake.url, "webhooks", "register", "--url", url)
    assert code == 2
    assert words in out
    assert TOKEN not in out
    assert fake.sinks == {}


async def test_registering_without_a_token_configured_is_refused(
    pool: asyncpg.Pool, database_url: str, fake: FakePassKit
) -> None:
    code, out = await loyaltyd(
        database_url,
        fake.url,
        "webhooks",
        "register",
        "--url",
        URL,
        LOYALTYD_PASSKIT_WEBHOOK_TOKEN="",
    )
    assert code == 2
    assert "set LOYALTYD_PASSKIT_WEBHOOK_TOKEN first" in out
