"""A sweep of PassKit's list makes passes_master.status what PassKit says, and only a clean,
complete list followed by a 404 makes a pass DELETED. Real Postgres, the fake PassKit."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import asyncpg
import pytest

import daemon.wallet.sweep as sweep_module
from daemon.core.config import Settings
from daemon.core.errors import TransientPassKitError
from daemon.domain.wallet import SweepClass, WalletRecord, WalletTimes
from daemon.passkit import routes
from daemon.passkit.client import PassKitClient
from daemon.store.wallet import SweepSession
from daemon.testing.fakepasskit import ROUTE_GET_MEMBER, FakePassKit
from daemon.wallet.sweep import Sweeper
from tests.campaign_support import campaign_rig, insert_campaign
from tests.harness import fake_passkit, messages_by_pass, settings_for
from tests.wallet.support import (
    PROGRAM_CLASS,
    statuses,
    sweep_members,
    sweeper,
    wallet_program,
)

# The program: 1,000 passes INSTALLED by hand; PassKit says 530 installed, 300
# uninstalled, 100 invalidated, 50 issued, and 20 are gone.
MIX = (
    ["PASS_INSTALLED"] * 530
    + ["PASS_UNINSTALLED"] * 300
    + ["PASS_INVALIDATED"] * 100
    + ["PASS_ISSUED"] * 50
    + [None] * 20
)
TRUTH = {"INSTALLED": 530, "UNINSTALLED": 300, "INVALIDATED": 100, "ISSUED": 50, "DELETED": 20}


@pytest.fixture
async def fake() -> AsyncIterator[FakePassKit]:
    async with fake_passkit(issued=None) as f:
        yield f


@pytest.fixture
def settings(fake: FakePassKit, make_settings: Callable[..., Settings]) -> Settings:
    return settings_for(make_settings, fake.url, loyaltyd_wallet_sweeps=True)


async def test_one_sweep_makes_every_status_passkits_and_a_campaign_reaches_the_installed(
    pool: asyncpg.Pool, database_url: str, fake: FakePassKit, settings: Settings
) -> None:
    program = await wallet_program(pool, fake, MIX)
    summary = await sweep_members(pool, settings, database_url, program)
    assert await statuses(pool, program) == TRUTH
    a = summary.applied
    assert (a.listed, a.checked, a.installed, a.uninstalled, a.invalidated, a.issued) == (
        980,
        980,
        0,
        300,
        100,
        50,
    )
    assert (summary.deleted, summary.unchecked, summary.expected) == (20, 0, 980)
    assert summary.drift.found == 0
    # One list, one count, and a read of each pass the list lacked: nothing else.
    assert fake.count() == 2 + 20
    assert fake.count(ROUTE_GET_MEMBER) == 20

    async with campaign_rig(pool, database_url, settings) as rig:
        row = await rig.finished(await insert_campaign(pool, program_id=program))
    assert (row["status"], row["recipient_count"], row["sent_count"]) == ("COMPLETED", 530, 530)
    reached = set(messages_by_pass(fake))
    assert reached == {f"w-{i}" for i in range(1, 531)}


async def test_a_second_sweep_with_nothing_new_writes_nothing(
    pool: asyncpg.Pool, database_url: str, fake: FakePassKit, settings: Settings
) -> None:
    program = await wallet_program(pool, fake, MIX[:100] + [None] * 5)
    await sweep_members(pool, settings, database_url, program)
    fake.reset_requests()
    again = await sweep_members(pool, settings, database_url, program)
    assert (again.applied.written, again.applied.moved, again.deleted) == (0, 0, 0)
    # The DELETED passes are known now: not read back again.
    assert fake.count(ROUTE_GET_MEMBER) == 0


async def test_a_program_that_manages_status_by_hand_keeps_it_and_passkits_is_recorded(
    pool: asyncpg.Pool, database_url: str, fake: FakePassKit, settings: Settings
) -> None:
    program = await wallet_program(pool, fake, ["PASS_UNINSTALLED"] * 10)
    await pool.execute(
        "UPDATE programs SET wallet_status_from_passkit = false WHERE id = $1", program
    )
    summary = await sweep_members(pool, settings, database_url, program)
    assert await statuses(pool, program) == {"INSTALLED": 10}
    assert summary.applied.uninstalled == 10
    recorded = await pool.fetchval(
        "SELECT count(*) FROM loyaltyd.wallet_passes WHERE status = 'UNINSTALLED'"
    )
    assert recorded == 10


async def test_a_list_that_forgot_limit_minus_one_marks_nothing_deleted(
    pool: asyncpg.Pool,
    database_url: str,
    fake: FakePassKit,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PassKit lists 25 records by default: a list asked without `limit: -1` is short of
    PassKit's count, so what it lacks is unknown, not deleted."""

    def forgetful(protocol: str, class_id: str) -> routes.ListRequest:
        request = routes.list_request(protocol, class_id)
        return routes.ListRequest(request.records, request.count, request.path, {})

    monkeypatch.setattr(sweep_module, "list_request", forgetful)
    program = await wallet_program(pool, fake, ["PASS_INSTALLED"] * 60)
    summary = await sweep_members(pool, settings, database_url, program)
    assert (summary.applied.listed, summary.expected) == (25, 60)
    assert (summary.deleted, summary.unchecked) == (0, 35)
    assert await statuses(pool, program) == {"INSTALLED": 60}
    assert fake.count(ROUTE_GET_MEMBER) == 0


@pytest.mark.parametrize("fault", ["stream_cut_after", "stream_error_after"])
async def test_a_list_that_breaks_off_applies_nothing(
    pool: asyncpg.Pool, database_url: str, fake: FakePassKit, settings: Settings, fault: str
) -> None:
    program = await wallet_program(pool, fake, ["PASS_UNINSTALLED"] * 40 + [None] * 10)
    setattr(fake, fault, 20)
    with pytest.raises(TransientPassKitError):
        await sweep_members(pool, settings, database_url, program)
    assert await statuses(pool, program) == {"INSTALLED": 50}
    assert await pool.fetchval("SELECT count(*) FROM loyaltyd.wallet_passes") == 0
    row = await pool.fetchrow("SELECT state, error FROM loyaltyd.wallet_sweeps")
    assert row is not None and row["state"] == "failed" and "stream" in row["error"]
    setattr(fake, fault, None)
    summary = await sweep_members(pool, settings, database_url, program)
    assert summary.deleted == 10
    assert await statuses(pool, program) == {"UNINSTALLED": 40, "DELETED": 10}


async def test_a_list_with_none_of_our_passes_marks_nothing_deleted(
    pool: asyncpg.Pool, database_url: str, fake: FakePassKit, settings: Settings
) -> None:
    """A wrong program id at PassKit lists nobody of ours: a warning, not 50 deletions."""
    program = await wallet_program(pool, fake, [None] * 50)
    summary = await sweep_members(pool, settings, database_url, program)
    assert (summary.deleted, summary.unchecked) == (0, 50)
    assert await statuses(pool, program) == {"INSTALLED": 50}


async def test_two_sweeps_of_one_program_never_run_at_once(
    pool: asyncpg.Pool, database_url: str, fake: FakePassKit, settings: Settings
) -> None:
    program = await wallet_program(pool, fake, ["PASS_INSTALLED"] * 10)
    target = SweepClass(program, "MEMBERSHIP", PROGRAM_CLASS)
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtextextended('loyaltyd:wallet_sweep:' || $1::uuid "
            "|| ':' || $2, 0))",
            program,
            "MEMBERSHIP",
        )
        async with PassKitClient(settings) as client:
            busy = await Sweeper(
                client, pool, settings, dsn=database_url, owner=uuid.uuid4()
            ).sweep(target)
        assert busy is None
        assert fake.count() == 0
    finally:
        await conn.close()
    assert (await sweep_members(pool, settings, database_url, program)) is not None


@pytest.mark.parametrize(
    ("protocol", "column"),
    [("COUPON", "passkit_coupon_campaign_id"), ("EVENT_TICKET", "passkit_production_id")],
)
async def test_coupons_and_tickets_are_swept_where_the_program_names_their_class(
    pool: asyncpg.Pool,
    database_url: str,
    fake: FakePassKit,
    settings: Settings,
    protocol: str,
    column: str,
) -> None:
    program = await pool.fetchval(
        f"INSERT INTO programs (name, {column}) VALUES ('Show Bar', 'class-1') RETURNING id"
    )
    for i, status in enumerate(["PASS_INSTALLED", "PASS_UNINSTALLED", "PASS_INVALIDATED"]):
        await pool.execute(
            "INSERT INTO passes_master (program_id, passkit_internal_id, external_id, protocol,"
            " status, is_active) VALUES ($1, $2, $2, $3, 'INSTALLED', true)",
            program,
            f"x-{i}",
            protocol,
        )
        fake.add_pass(f"x-{i}", protocol=protocol, class_id="class-1", status=status)  # type: ignore[arg-type]
    await pool.execute(  # gone at PassKit
        "INSERT INTO passes_master (program_id, passkit_internal_id, external_id, protocol,"
        " status, is_active) VALUES ($1, 'x-gone', 'x-gone', $2, 'INSTALLED', true)",
        program,
        protocol,
    )
    async with PassKitClient(settings) as client:
        summary = await sweeper(client, pool, settings, database_url).sweep(
            SweepClass(program, protocol, "class-1")
        )
    assert summary is not None and summary.deleted == 1
    assert await statuses(pool, program) == {
        "INSTALLED": 1,
        "UNINSTALLED": 1,
        "INVALIDATED": 1,
        "DELETED": 1,
    }


async def test_a_record_listed_twice_is_applied_once(
    pool: asyncpg.Pool, database_url: str, fake: FakePassKit
) -> None:
    """PassKit listing one pass twice (its newest record wins) does not stop the sweep."""
    program = await wallet_program(pool, fake, ["PASS_INSTALLED"])
    target = SweepClass(program, "MEMBERSHIP", PROGRAM_CLASS)
    older = WalletRecord(
        "w-1", "INSTALLED", WalletTimes(updated_at=datetime(2024, 1, 1, tzinfo=UTC))
    )
    newer = WalletRecord(
        "w-1", "UNINSTALLED", WalletTimes(updated_at=datetime(2024, 2, 1, tzinfo=UTC))
    )
    async with await SweepSession.open(database_url) as session:
        assert await session.lock(target)
        await session.start(target, uuid.uuid4())
        await session.stage([older, newer, older])
        applied = await session.apply(target)
    assert (applied.listed, applied.checked, applied.uninstalled) == (3, 1, 1)
    assert await statuses(pool, program) == {"UNINSTALLED": 1}


async def test_a_pass_passkit_answers_unreadably_is_left_unchecked_not_a_crash(
    pool: asyncpg.Pool, database_url: str, fake: FakePassKit, settings: Settings
) -> None:
    program = await wallet_program(pool, fake, ["PASS_INSTALLED", None])
    await pool.execute(
        "UPDATE passes_master SET passkit_internal_id = 'x' || repeat('y', 250) "
        "WHERE passkit_internal_id = 'w-2'"
    )
    fake.add_pass("x" + "y" * 250, class_id="elsewhere", status="PASS_INSTALLED")
    summary = await sweep_members(pool, settings, database_url, program)
    assert (summary.deleted, summary.unchecked) == (0, 1)
