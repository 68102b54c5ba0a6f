"""Balances PassKit shows are checked against the ledger at each sweep: a difference on a pass
that owes PassKit nothing becomes a pass sync that sets the balance again (no message), capped
per sweep; one that comes back after its repair is reported once, not repaired in a loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from structlog.testing import capture_logs

from daemon.core.config import Settings
from daemon.passkit.client import PassKitClient
from daemon.testing.fakepasskit import ROUTE_SET_POINTS, ROUTE_UPDATE_MEMBER, FakePassKit
from tests.harness import fake_passkit, running_daemon, wait_until
from tests.wallet.support import (
    sweep_members,
    wallet_program,
    wallet_settings,
)


@pytest.fixture
async def fake() -> AsyncIterator[FakePassKit]:
    async with fake_passkit(issued=None) as f:
        yield f


def _drifted(i: int) -> float:
    """Passes 1-50 show 7 points at PassKit (changed in its portal); the rest the ledger's 10."""
    return 7.0 if i <= 50 else 10.0


async def test_fifty_drifted_balances_are_repaired_without_a_message(
    pool: asyncpg.Pool,
    database_url: str,
    fake: FakePassKit,
    make_settings: Callable[..., Settings],
) -> None:
    program = await wallet_program(pool, fake, ["PASS_INSTALLED"] * 200, passkit_points=_drifted)
    settings = wallet_settings(make_settings, fake)
    summary = await sweep_members(pool, settings, database_url, program)
    d = summary.drift
    assert (d.found, d.repaired, d.reported, d.deferred) == (50, 50, 0, 0)
    async with running_daemon(settings, database_url):
        await wait_until(lambda: all(fake.points_of(f"w-{i}") == 10 for i in range(1, 201)))
    assert fake.count(ROUTE_SET_POINTS) == 50
    assert fake.count(ROUTE_UPDATE_MEMBER) == 0  # a repair lights no lock screen text
    again = await sweep_members(pool, settings, database_url, program)
    assert again.drift.found == 0
    flags = await pool.fetchval(
        "SELECT count(*) FROM loyaltyd.wallet_passes WHERE drift_repaired_at IS NOT NULL"
    )
    assert flags == 0  # a repair that held clears its mark


async def test_repairs_are_capped_per_sweep_and_the_rest_wait(
    pool: asyncpg.Pool,
    database_url: str,
    fake: FakePassKit,
    make_settings: Callable[..., Settings],
) -> None:
    program = await wallet_program(pool, fake, ["PASS_INSTALLED"] * 80, passkit_points=_drifted)
    settings = wallet_settings(make_settings, fake, loyaltyd_wallet_repair_cap=20)
    summary = await sweep_members(pool, settings, database_url, program)
    assert (summary.drift.found, summary.drift.repaired, summary.drift.deferred) == (50, 20, 30)
    owed = await pool.fetchval("SELECT count(*) FROM loyaltyd.pass_syncs WHERE state = 'pending'")
    assert owed == 20


async def test_a_drift_that_comes_back_after_its_repair_is_reported_once(
    pool: asyncpg.Pool,
    database_url: str,
    fake: FakePassKit,
    make_settings: Callable[..., Settings],
) -> None:
    """An older integration keeps setting 7 points on one pass: the first sweep repairs it,
    the second reports it (once, in the log and the summary), the third says nothing new and
    sends nothing."""
    program = await wallet_program(pool, fake, ["PASS_INSTALLED"] * 3, passkit_points=_drifted)
    settings = wallet_settings(make_settings, fake)
    first = await sweep_members(pool, settings, database_url, program)
    assert first.drift.repaired == 3
    async with running_daemon(settings, database_url):
        await wait_until(lambda: all(fake.points_of(f"w-{i}") == 10 for i in (1, 2, 3)))
    for i in (1, 2, 3):
        fake.state_of(f"w-{i}").points = 7  # type: ignore[union-attr]
    with capture_logs() as logs:
        second = await sweep_members(pool, settings, database_url, program)
    assert (second.drift.found, second.drift.repaired, second.drift.reported) == (3, 0, 3)
    assert sum(1 for e in logs if e["event"] == "wallet_balance_drifts_again") == 3
    with capture_logs() as logs:
        third = await sweep_members(pool, settings, database_url, program)
    assert (third.drift.repaired, third.drift.reported, third.drift.still_reported) == (0, 0, 3)
    assert not [e for e in logs if e["event"] == "wallet_balance_drifts_again"]
    owed = await pool.fetchval(
        "SELECT count(*) FROM loyaltyd.pass_syncs WHERE state IN ('pending', 'claimed')"
    )
    assert owed == 0


async def test_a_ledger_move_after_a_repair_makes_the_next_drift_a_new_one(
    pool: asyncpg.Pool,
    database_url: str,
    fake: FakePassKit,
    make_settings: Callable[..., Settings],
) -> None:
    program = await wallet_program(pool, fake, ["PASS_INSTALLED"], passkit_points=_drifted)
    settings = wallet_settings(make_settings, fake)
    await sweep_members(pool, settings, database_url, program)
    pass_id = await pool.fetchval("SELECT id FROM passes_master WHERE program_id = $1", program)
    async with running_daemon(settings, database_url):
        await wait_until(lambda: fake.points_of("w-1") == 10)
        await pool.execute(
            "SELECT process_membership_transaction($1, 5, 'EARN', NULL, NULL)", pass_id
        )
        await wait_until(lambda: fake.points_of("w-1") == 15)
    fake.state_of("w-1").points = 7  # type: ignore[union-attr]
    again = await sweep_members(pool, settings, database_url, program)
    assert (again.drift.repaired, again.drift.reported) == (1, 0)


async def test_no_drift_is_seen_on_a_pass_whose_sync_is_owed(
    pool: asyncpg.Pool,
    database_url: str,
    fake: FakePassKit,
    make_settings: Callable[..., Settings],
) -> None:
    """A transaction the daemon has not sent yet: PassKit is behind, not wrong."""
    program = await wallet_program(pool, fake, ["PASS_INSTALLED"] * 2)
    pass_id = await pool.fetchval("SELECT id FROM passes_master WHERE passkit_internal_id = 'w-1'")
    await pool.execute("SELECT process_membership_transaction($1, 5, 'EARN', NULL, NULL)", pass_id)
    summary = await sweep_members(pool, wallet_settings(make_settings, fake), database_url, program)
    assert summary.drift.found == 0


async def test_a_balance_points_set_did_not_leave_is_said_at_once(
    pool: asyncpg.Pool,
    database_url: str,
    fake: FakePassKit,
    make_settings: Callable[..., Settings],
) -> None:
    """MemberPoints answers the balance PassKit holds: if it is not what was set, the log
    and the drift metric say so."""
    await wallet_program(pool, fake, ["PASS_INSTALLED"])
    settings = wallet_settings(make_settings, fake)
    async with PassKitClient(settings) as client:
        with capture_logs() as logs:
            await client.set_points("w-1", 16_777_217)  # a float32 holds 16,777,216: same
            await client.set_points("w-1", 12)
        assert not [e for e in logs if e["event"] == "passkit_balance_differs"]
        fake.force_status("w-1", 200)  # an answer without the balance: proto3's zero
        with capture_logs() as logs:
            await client.set_points("w-1", 12)
        fake.clear_forced()
    differs = [e for e in logs if e["event"] == "passkit_balance_differs"]
    assert [(e["set"], e["shows"]) for e in differs] == [(12, 0)]
