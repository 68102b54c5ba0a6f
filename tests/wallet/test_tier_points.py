"""Tier points: a program that shows loyaltyd's tier points at PassKit
(programs.passkit_tier_points) has them set with the balance and checked at each sweep like
the balance; a program that keeps them at PassKit alone is never touched."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

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

EARN = "SELECT process_membership_transaction($1, $2, 'EARN', NULL, NULL)"


@pytest.fixture
async def fake() -> AsyncIterator[FakePassKit]:
    async with fake_passkit(issued=None) as f:
        yield f


def _tier_points(fake: FakePassKit, passkit_id: str) -> int:
    state = fake.state_of(passkit_id)
    assert state is not None
    return state.tier_points


def _set_points_bodies(fake: FakePassKit) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests if r.route == ROUTE_SET_POINTS]


async def _pass(pool: asyncpg.Pool, passkit_id: str) -> uuid.UUID:
    pass_id: uuid.UUID = await pool.fetchval(
        "SELECT id FROM passes_master WHERE passkit_internal_id = $1", passkit_id
    )
    return pass_id


async def test_an_earn_sets_tier_points_with_the_balance_where_the_program_shows_them(
    pool: asyncpg.Pool,
    database_url: str,
    fake: FakePassKit,
    make_settings: Callable[..., Settings],
) -> None:
    await wallet_program(
        pool, fake, ["PASS_INSTALLED"], prefix="t-", tier_points=40, tiers_at_passkit=True
    )
    await wallet_program(
        pool,
        fake,
        ["PASS_INSTALLED"],
        prefix="k-",
        class_id="kept-at-passkit",
        tier_points=40,
        passkit_tier_points=lambda _: 900,  # the portal's, not loyaltyd's
    )
    async with running_daemon(wallet_settings(make_settings, fake), database_url):
        await pool.execute(EARN, await _pass(pool, "t-1"), 5)
        await pool.execute(EARN, await _pass(pool, "k-1"), 5)
        await wait_until(lambda: len(_set_points_bodies(fake)) == 2)
    bodies = {b["id"]: b for b in _set_points_bodies(fake)}
    assert bodies["t-1"] == {"id": "t-1", "points": 15, "tierPoints": 45}
    assert bodies["k-1"] == {"id": "k-1", "points": 15}  # no tierPoints: PassKit keeps its own
    assert (fake.points_of("t-1"), _tier_points(fake, "t-1")) == (15, 45)
    assert (fake.points_of("k-1"), _tier_points(fake, "k-1")) == (15, 900)


async def test_a_change_of_tier_points_alone_is_owed_only_where_the_program_shows_them(
    pool: asyncpg.Pool,
    database_url: str,
    fake: FakePassKit,
    make_settings: Callable[..., Settings],
) -> None:
    """An admin correcting tier points by hand (Softr, SQL): synced where PassKit shows
    loyaltyd's, set to 0 with PassKit's reset flag; nothing is owed where it does not."""
    await wallet_program(pool, fake, ["PASS_INSTALLED"], prefix="t-", tiers_at_passkit=True)
    await wallet_program(pool, fake, ["PASS_INSTALLED"], prefix="k-", class_id="kept")
    set_tiers = "UPDATE protocol_membership SET tier_points = $2 WHERE pass_id = $1"
    kept = await _pass(pool, "k-1")
    await pool.execute(set_tiers, kept, 70)
    assert await pool.fetchval("SELECT count(*) FROM loyaltyd.pass_syncs") == 0
    shown = await _pass(pool, "t-1")
    await pool.execute(set_tiers, shown, 70)
    async with running_daemon(wallet_settings(make_settings, fake), database_url):
        await wait_until(lambda: _tier_points(fake, "t-1") == 70)
        await pool.execute(set_tiers, shown, 0)
        await wait_until(lambda: len(_set_points_bodies(fake)) == 2)
    assert _set_points_bodies(fake)[1] == {
        "id": "t-1",
        "points": 10,
        "tierPoints": 0,
        "resetTierPoints": True,
    }
    assert (_tier_points(fake, "t-1"), _tier_points(fake, "k-1")) == (0, 0)


async def test_drifted_tier_points_are_repaired_where_the_program_shows_them(
    pool: asyncpg.Pool,
    database_url: str,
    fake: FakePassKit,
    make_settings: Callable[..., Settings],
) -> None:
    """Passes 1-20 show 3 tier points at PassKit, the ledger says 40: found and repaired by
    the sweep (a points-only sync, no message). The same drift in a program that keeps its
    tier points at PassKit is no drift."""
    program = await wallet_program(
        pool,
        fake,
        ["PASS_INSTALLED"] * 50,
        tier_points=40,
        passkit_tier_points=lambda i: 3 if i <= 20 else 40,
        tiers_at_passkit=True,
    )
    settings = wallet_settings(make_settings, fake)
    summary = await sweep_members(pool, settings, database_url, program)
    d = summary.drift
    assert (d.found, d.tier_points_found, d.repaired, d.deferred) == (20, 20, 20, 0)
    assert summary.as_json()["drift_tier_points"] == 20
    async with running_daemon(settings, database_url):
        await wait_until(lambda: all(_tier_points(fake, f"w-{i}") == 40 for i in range(1, 51)))
    assert len(_set_points_bodies(fake)) == 20
    assert fake.count(ROUTE_UPDATE_MEMBER) == 0
    again = await sweep_members(pool, settings, database_url, program)
    assert (again.drift.found, again.drift.tier_points_found) == (0, 0)
    shown = await pool.fetchval(
        "SELECT array_agg(DISTINCT passkit_tier_points) FROM loyaltyd.wallet_passes"
    )
    assert shown == [40.0]
    await pool.execute("UPDATE programs SET passkit_tier_points = false WHERE id = $1", program)
    for i in range(1, 21):
        fake.state_of(f"w-{i}").tier_points = 3  # type: ignore[union-attr]
    kept = await sweep_members(pool, settings, database_url, program)
    assert (kept.drift.found, kept.drift.repaired) == (0, 0)


async def test_tier_points_that_drift_again_after_a_repair_are_reported_once(
    pool: asyncpg.Pool,
    database_url: str,
    fake: FakePassKit,
    make_settings: Callable[..., Settings],
) -> None:
    program = await wallet_program(
        pool,
        fake,
        ["PASS_INSTALLED"] * 2,
        tier_points=40,
        passkit_tier_points=lambda _: 3,
        tiers_at_passkit=True,
    )
    settings = wallet_settings(make_settings, fake)
    assert (await sweep_members(pool, settings, database_url, program)).drift.repaired == 2
    async with running_daemon(settings, database_url):
        await wait_until(lambda: all(_tier_points(fake, f"w-{i}") == 40 for i in (1, 2)))
    for i in (1, 2):
        fake.state_of(f"w-{i}").tier_points = 3  # type: ignore[union-attr]
    with capture_logs() as logs:
        second = await sweep_members(pool, settings, database_url, program)
    assert (second.drift.found, second.drift.repaired, second.drift.reported) == (2, 0, 2)
    assert sum(1 for e in logs if e["event"] == "wallet_balance_drifts_again") == 2
    third = await sweep_members(pool, settings, database_url, program)
    assert (third.drift.repaired, third.drift.reported, third.drift.still_reported) == (0, 0, 2)
    # the ledger moves: the next drift is a new one, repaired again
    await pool.execute(EARN, await _pass(pool, "w-1"), 1)
    async with running_daemon(settings, database_url):
        await wait_until(lambda: _tier_points(fake, "w-1") == 41)
    fake.state_of("w-1").tier_points = 3  # type: ignore[union-attr]
    fourth = await sweep_members(pool, settings, database_url, program)
    assert (fourth.drift.repaired, fourth.drift.still_reported) == (1, 1)


async def test_a_tier_points_answer_that_differs_is_said_at_once(
    pool: asyncpg.Pool,
    database_url: str,
    fake: FakePassKit,
    make_settings: Callable[..., Settings],
) -> None:
    await wallet_program(pool, fake, ["PASS_INSTALLED"])
    async with PassKitClient(wallet_settings(make_settings, fake)) as client:
        with capture_logs() as logs:
            await client.set_points("w-1", 12, tier_points=16_777_217)  # float32: same
        assert not [e for e in logs if e["event"] == "passkit_balance_differs"]
        fake.force_status("w-1", 200)  # an answer without balances: proto3's zeros
        with capture_logs() as logs:
            await client.set_points("w-1", 12, tier_points=30)
        fake.clear_forced()
    differs = [e for e in logs if e["event"] == "passkit_balance_differs"]
    assert [(e["field"], e["set"], e["shows"]) for e in differs] == [
        ("points", 12, 0),
        ("tierPoints", 30, 0),
    ]
