"""PassKit's webhooks end to end: the fake PassKit calls the daemon's webhook URL as PassKit
would (method per event), the daemon re-reads the pass, and passes_master.status is what
PassKit says, in seconds. A webhook is only a doorbell: a duplicate, late or out-of-order one
changes nothing wrong, and a deleted pass is never synced or messaged again."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from daemon.core.config import Settings
from daemon.domain.wallet import SweepClass
from daemon.passkit.client import PassKitClient
from daemon.testing.fakepasskit import ROUTE_GET_MEMBER, ROUTE_SET_POINTS, FakePassKit, LatencyModel
from daemon.wallet.webhooks import register
from tests.campaign_support import insert_campaign, status_of
from tests.harness import fake_passkit, running_daemon, settings_for, wait_until
from tests.ops.test_http_daemon import free_port
from tests.wallet.support import PROGRAM_CLASS, wallet_program

TOKEN = "wh-0123456789abcdefghijklmnopqrstuvwxyz"


@pytest.fixture
async def fake() -> AsyncIterator[FakePassKit]:
    async with fake_passkit(issued=None, latency=LatencyModel(median_ms=2)) as f:
        yield f


@pytest.fixture
def settings(fake: FakePassKit, make_settings: Callable[..., Settings]) -> Settings:
    return settings_for(
        make_settings,
        fake.url,
        loyaltyd_http_port=free_port(),
        loyaltyd_passkit_webhook_token=TOKEN,
        passkit_max_concurrency=2,
    )


def _url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.loyaltyd_http_port}/passkit/webhook/{TOKEN}"


async def _registered(settings: Settings, program: uuid.UUID) -> None:
    async with PassKitClient(settings) as client:
        done = await register(
            client, SweepClass(program, "MEMBERSHIP", PROGRAM_CLASS), _url(settings)
        )
    assert done == "created"


async def _status(pool: asyncpg.Pool, passkit_id: str) -> str:
    status: str = await pool.fetchval(
        "SELECT status FROM passes_master WHERE passkit_internal_id = $1", passkit_id
    )
    return status


async def test_an_uninstall_reaches_passes_master_within_seconds_of_the_webhook(
    pool: asyncpg.Pool, database_url: str, fake: FakePassKit, settings: Settings
) -> None:
    program = await wallet_program(pool, fake, ["PASS_INSTALLED"] * 3)
    await _registered(settings, program)
    async with running_daemon(settings, database_url):
        started = time.monotonic()
        fake.uninstall("w-2")
        await fake.webhooks_settled()
        await wait_until(lambda: _is(pool, "w-2", "UNINSTALLED"), timeout=5, interval=0.02)
        took = time.monotonic() - started
        fake.invalidate("w-3")
        fake.delete("w-1")
        await fake.webhooks_settled()
        await wait_until(lambda: _is(pool, "w-3", "INVALIDATED"), timeout=5)
        await wait_until(lambda: _is(pool, "w-1", "DELETED"), timeout=5)
    assert took < 5
    methods = {(d.event, d.method, d.status) for d in fake.webhook_deliveries}
    assert methods == {
        ("PASS_EVENT_UNINSTALLED", "PUT", 200),
        ("PASS_EVENT_INVALIDATED", "PUT", 200),
        ("PASS_EVENT_RECORD_DELETED", "DELETE", 200),
    }


async def _is(pool: asyncpg.Pool, passkit_id: str, status: str) -> bool:
    return await _status(pool, passkit_id) == status


async def test_duplicate_and_late_webhooks_change_nothing_wrong(
    pool: asyncpg.Pool, database_url: str, fake: FakePassKit, settings: Settings
) -> None:
    """An INSTALLED webhook that arrives after the pass was uninstalled, and the same
    uninstall ten times: the re-read says what PassKit says now."""
    program = await wallet_program(pool, fake, ["PASS_INSTALLED"])
    await _registered(settings, program)
    async with running_daemon(settings, database_url):
        fake.install("w-1")
        fake.uninstall("w-1")
        await fake.webhooks_settled()
        url = _url(settings)
        await asyncio.gather(
            *(fake.send_webhook(url, "PASS_EVENT_UNINSTALLED", "w-1") for _ in range(10))
        )
        await fake.send_webhook(url, "PASS_EVENT_INSTALLED", "w-1")  # late, and last

        async def inbox_empty() -> bool:
            return bool(await pool.fetchval("SELECT count(*) FROM loyaltyd.wallet_events") == 0)

        await wait_until(inbox_empty, timeout=15)
        reads = fake.count(ROUTE_GET_MEMBER)
        assert await _status(pool, "w-1") == "UNINSTALLED"
    received = await pool.fetchval(
        "SELECT sum(received) FROM loyaltyd.wallet_event_counts WHERE program_id = $1", program
    )
    assert received == 13
    assert reads <= 5  # a flood about one pass is a few reads, not thirteen


async def test_an_uninstall_webhook_mid_campaign_stops_that_passs_message(
    pool: asyncpg.Pool, database_url: str, fake: FakePassKit, settings: Settings
) -> None:
    program = await wallet_program(pool, fake, ["PASS_INSTALLED"] * 200)
    await _registered(settings, program)
    fake.latency = LatencyModel(median_ms=20)
    async with running_daemon(settings, database_url):
        campaign_id = await insert_campaign(pool, program_id=program, message_text="Flash sale")

        async def started() -> bool:
            sent = await pool.fetchval(
                "SELECT sent_count FROM push_campaigns WHERE id = $1", campaign_id
            )
            return bool(sent and sent >= 5)

        await wait_until(started, timeout=15)
        last = await pool.fetchval(
            "SELECT p.passkit_internal_id FROM loyaltyd.campaign_deliveries d "
            "JOIN passes_master p ON p.id = d.pass_id WHERE d.campaign_id = $1 "
            "AND d.state = 'pending' ORDER BY d.pass_id DESC LIMIT 1",  # the last to be claimed
            campaign_id,
        )
        fake.uninstall(last)
        await fake.webhooks_settled()
        await wait_until(lambda: _is(pool, last, "UNINSTALLED"), timeout=5)

        async def finished() -> bool:
            return await status_of(pool, campaign_id) == "COMPLETED"

        await wait_until(finished, timeout=60)
    row = await pool.fetchrow(
        "SELECT d.state, d.error FROM loyaltyd.campaign_deliveries d "
        "JOIN passes_master p ON p.id = d.pass_id WHERE p.passkit_internal_id = $1",
        last,
    )
    assert row is not None and (row["state"], row["error"]) == (
        "skipped",
        "pass uninstalled from the wallet",
    )
    assert fake.messages_for(last) == []


async def test_a_deleted_pass_is_never_synced_again(
    pool: asyncpg.Pool, database_url: str, fake: FakePassKit, settings: Settings
) -> None:
    program = await wallet_program(pool, fake, ["PASS_INSTALLED"] * 2)
    await _registered(settings, program)
    pass_id = await pool.fetchval("SELECT id FROM passes_master WHERE passkit_internal_id = 'w-1'")
    async with running_daemon(settings, database_url):
        fake.delete("w-1")
        await fake.webhooks_settled()
        await wait_until(lambda: _is(pool, "w-1", "DELETED"), timeout=5)
        fake.reset_requests()
        await pool.execute(
            "SELECT process_membership_transaction($1, 5, 'EARN', 'Thanks!', NULL)", pass_id
        )

        async def settled() -> bool:
            state = await pool.fetchval(
                "SELECT state FROM loyaltyd.pass_syncs WHERE pass_id = $1", pass_id
            )
            return bool(state == "idle")

        await wait_until(settled, timeout=5)
    assert fake.count(ROUTE_SET_POINTS) == 0
    error = await pool.fetchval(
        "SELECT last_error FROM loyaltyd.pass_syncs WHERE pass_id = $1", pass_id
    )
    assert error == "pass deleted at PassKit"
    balance = await pool.fetchval(
        "SELECT points_balance FROM protocol_membership WHERE pass_id = $1", pass_id
    )
    assert balance == 15  # the ledger keeps it
