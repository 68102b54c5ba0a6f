"""Coupons and tickets of a program whose row names no PassKit class are not swept: their
wallet state comes from webhooks and from the reads loyaltyd already makes. A campaign in
read_modify_write mode reads each pass before its message: what that read says is applied, so
the next campaign's audience is the passes really in wallets."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from daemon.core.config import Settings
from daemon.testing.fakepasskit import FakePassKit
from daemon.wallet.seen import MAX_WAITING, SeenReads
from tests.campaign_support import insert_campaign, status_of
from tests.factories import make_pass
from tests.harness import fake_passkit, running_daemon, settings_for, wait_until

STATUSES = {"x-0": "PASS_INSTALLED", "x-1": "PASS_UNINSTALLED", "x-2": "PASS_INVALIDATED"}


@pytest.fixture
async def fake() -> AsyncIterator[FakePassKit]:
    async with fake_passkit(issued=None) as f:
        yield f


@pytest.fixture
def settings(fake: FakePassKit, make_settings: Callable[..., Settings]) -> Settings:
    return settings_for(make_settings, fake.url, passkit_metadata_mode="read_modify_write")


async def _program(
    pool: asyncpg.Pool, fake: FakePassKit, protocol: str, follows: bool
) -> uuid.UUID:
    program: uuid.UUID = await pool.fetchval(
        "INSERT INTO programs (name, wallet_status_from_passkit) VALUES ('Show Bar', $1) "
        "RETURNING id",
        follows,
    )
    for passkit_id, status in STATUSES.items():
        await make_pass(pool, program, protocol=protocol, passkit_internal_id=passkit_id)
        fake.add_pass(passkit_id, protocol=protocol, status=status)  # type: ignore[arg-type]
    return program


@pytest.mark.parametrize("protocol", ["COUPON", "EVENT_TICKET"])
async def test_the_read_before_a_message_keeps_the_wallet_state_current(
    pool: asyncpg.Pool, database_url: str, settings: Settings, fake: FakePassKit, protocol: str
) -> None:
    program = await _program(pool, fake, protocol, follows=True)
    async with running_daemon(settings, database_url):
        first = await insert_campaign(pool, program_id=program, message_text="Tonight only")
        await wait_until(lambda: _done(pool, first), timeout=20)
        await wait_until(
            lambda: _is(pool, {"x-0": "INSTALLED", "x-1": "UNINSTALLED", "x-2": "INVALIDATED"}),
            timeout=10,
        )
        assert len(fake.messages_for("x-1")) == 1  # sent: the state was learnt by this read
        # The next campaign's audience is the one pass in a wallet.
        second = await insert_campaign(pool, program_id=program, message_text="Tomorrow too")
        await wait_until(lambda: _done(pool, second), timeout=20)
    count = await pool.fetchval("SELECT recipient_count FROM push_campaigns WHERE id = $1", second)
    assert count == 1
    assert [len(fake.messages_for(p)) for p in STATUSES] == [2, 1, 1]


async def test_a_program_that_keeps_status_by_hand_keeps_it_and_passkits_is_recorded(
    pool: asyncpg.Pool, database_url: str, settings: Settings, fake: FakePassKit
) -> None:
    program = await _program(pool, fake, "COUPON", follows=False)
    async with running_daemon(settings, database_url):
        campaign = await insert_campaign(pool, program_id=program, message_text="Tonight only")
        await wait_until(lambda: _done(pool, campaign), timeout=20)
        await wait_until(lambda: _recorded(pool, 3), timeout=10)
    rows = await pool.fetch(
        "SELECT p.passkit_internal_id AS id, p.status AS ours, w.status AS theirs "
        "FROM passes_master p JOIN loyaltyd.wallet_passes w ON w.pass_id = p.id"
    )
    assert {r["id"]: (r["ours"], r["theirs"]) for r in rows} == {
        "x-0": ("INSTALLED", "INSTALLED"),
        "x-1": ("INSTALLED", "UNINSTALLED"),
        "x-2": ("INSTALLED", "INVALIDATED"),
    }


async def test_members_are_left_to_their_sweep_and_the_newest_read_of_a_pass_wins(
    pool: asyncpg.Pool, fake: FakePassKit
) -> None:
    program = await _program(pool, fake, "COUPON", follows=True)
    seen = SeenReads(pool)
    seen.note("MEMBERSHIP", {"id": "x-1", "passMetaData": {"status": "PASS_UNINSTALLED"}})
    seen.note("COUPON", {"id": "x-1", "passMetaData": {"status": "PASS_UNINSTALLED"}})
    seen.note("COUPON", {"id": "x-1", "passMetaData": {"status": "PASS_INSTALLED"}})
    seen.note("COUPON", {"id": "x-2", "passMetaData": "not an object"})  # skipped
    seen.note("COUPON", ["not a record"])
    assert await seen.apply() == 0  # x-1 was INSTALLED and still is
    assert seen.applied == 1
    assert (
        await pool.fetchval(
            "SELECT status FROM passes_master WHERE passkit_internal_id = 'x-1' "
            "AND program_id = $1",
            program,
        )
        == "INSTALLED"
    )
    for n in range(MAX_WAITING + 5):  # a flood keeps the newest, bounded
        seen.note("COUPON", {"id": f"f-{n}", "passMetaData": {"status": "PASS_ISSUED"}})
    assert seen.waiting == MAX_WAITING


async def _done(pool: asyncpg.Pool, campaign: uuid.UUID) -> bool:
    return await status_of(pool, campaign) == "COMPLETED"


async def _is(pool: asyncpg.Pool, wanted: dict[str, str]) -> bool:
    rows = await pool.fetch("SELECT passkit_internal_id, status FROM passes_master")
    return {r["passkit_internal_id"]: r["status"] for r in rows} == wanted


async def _recorded(pool: asyncpg.Pool, count: int) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM loyaltyd.wallet_passes") == count)
