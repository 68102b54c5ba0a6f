"""loyaltyd.push_campaign_audience(): each segment selects exactly the right passes (SPEC §3.2)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from daemon.campaigns.rules import validate_audience
from daemon.store.campaign_plans import audience_values
from daemon.store.queries import bind, q
from tests.factories import make_pass, make_program, make_user


@dataclass
class World:
    program: uuid.UUID
    other_program: uuid.UUID
    ids: dict[str, uuid.UUID]
    members: dict[str, str]  # name -> external_id


async def _pass(
    conn: asyncpg.Connection,
    world: World,
    name: str,
    *,
    program: uuid.UUID | None = None,
    user: dict[str, Any] | None = None,
    days_old: float = 400,
    **cols: Any,
) -> None:
    user_id = await make_user(conn, **(user or {}))
    pass_id = await make_pass(conn, program or world.program, user_id=user_id, **cols)
    await conn.execute(
        "UPDATE passes_master SET created_at = now() - make_interval(secs => $2) WHERE id = $1",
        pass_id,
        days_old * 86400,
    )
    world.ids[name] = pass_id
    world.members[name] = await conn.fetchval(
        "SELECT external_id FROM passes_master WHERE id = $1", pass_id
    )


async def _transaction(conn: asyncpg.Connection, pass_id: uuid.UUID, days_ago: float) -> None:
    await conn.execute(
        "INSERT INTO transactions (pass_id, kind, points_delta, created_at) "
        "VALUES ($1, 'ADJUST', 0, now() - make_interval(secs => $2))",
        pass_id,
        days_ago * 86400,
    )


@pytest.fixture
async def world(conn: asyncpg.Connection) -> World:
    """One program full of edge cases, and a second program next to it."""
    w = World(await make_program(conn), await make_program(conn, name="Other"), {}, {})
    # The base rules: only "plain" passes like this one are ever eligible.
    await _pass(conn, w, "plain", points=100, tier_points=100, user={"zip": "75001"})
    await _pass(conn, w, "inactive", is_active=False, points=9999, tier_points=9999)
    await _pass(conn, w, "uninstalled", status="ISSUED", points=9999, tier_points=9999)
    await _pass(conn, w, "no_status", status=None, points=9999, tier_points=9999)
    await _pass(conn, w, "opted_out", user={"marketing_opt_in": False}, points=9999)
    await _pass(conn, w, "opt_in_unknown", user={"marketing_opt_in": None}, points=9999)
    await _pass(conn, w, "other_program", program=w.other_program, points=9999, tier_points=9999)
    await _pass(conn, w, "coupon", protocol="COUPON")
    # VIP: tier_points > min_tier_points (default 1000).
    await _pass(conn, w, "tier_1000", tier_points=1000)
    await _pass(conn, w, "tier_1001", tier_points=1001)
    # WHALE: points_balance > min_points (default 500).
    await _pass(conn, w, "points_500", points=500)
    await _pass(conn, w, "points_501", points=501)
    # LOCAL: the user's zip, blanks around it ignored.
    await _pass(conn, w, "zip_90210", user={"zip": "90210"})
    await _pass(conn, w, "zip_padded", user={"zip": " 10001 "})
    await _pass(conn, w, "zip_none", user={"zip": None})
    # SLUMBER (30 days): quiet that long, and at least that old; boundaries ± 1 minute.
    minute = 1 / 1440
    await _pass(conn, w, "young", days_old=30 - minute)
    await _pass(conn, w, "just_old_enough", days_old=30 + minute)
    await _pass(conn, w, "tx_just_inside", days_old=90)
    await _transaction(conn, w.ids["tx_just_inside"], 30 - minute)
    await _pass(conn, w, "tx_just_outside", days_old=90)
    await _transaction(conn, w.ids["tx_just_outside"], 30 + minute)
    for name in (
        "plain",
        "tier_1000",
        "tier_1001",
        "points_500",
        "points_501",
        "zip_90210",
        "zip_padded",
        "zip_none",
        "coupon",
    ):
        await _transaction(conn, w.ids[name], 0.5)
    return w


async def _audience(conn: asyncpg.Connection, world: World, **fields: Any) -> set[str]:
    values = audience_values(validate_audience(fields, ()))
    rows = await conn.fetch(
        "SELECT pass_id FROM loyaltyd.push_campaign_audience($1, $2, $3, $4, $5, $6, $7)",
        world.program,
        *values.values(),
    )
    by_id = {v: k for k, v in world.ids.items()}
    found = [by_id[r["pass_id"]] for r in rows]
    assert len(found) == len(set(found)), "a pass must never be selected twice"
    sql, args = bind("count_audience", program_id=world.program, **values)
    assert await conn.fetchval(sql, *args) == len(found)
    return set(found)


ELIGIBLE = {
    "plain",
    "coupon",
    "tier_1000",
    "tier_1001",
    "points_500",
    "points_501",
    "zip_90210",
    "zip_padded",
    "zip_none",
    "young",
    "just_old_enough",
    "tx_just_inside",
    "tx_just_outside",
}


async def test_all_is_every_active_installed_opted_in_pass_of_the_program(
    conn: asyncpg.Connection, world: World
) -> None:
    assert await _audience(conn, world, segment="ALL") == ELIGIBLE


async def test_vip_is_tier_points_strictly_above_the_threshold(
    conn: asyncpg.Connection, world: World
) -> None:
    assert await _audience(conn, world, segment="VIP") == {"tier_1001"}
    assert await _audience(conn, world, segment="VIP", min_tier_points=100) == {
        "tier_1000",
        "tier_1001",
    }
    assert await _audience(conn, world, segment="VIP", min_tier_points=99) == {
        "plain",
        "tier_1000",
        "tier_1001",
    }


async def test_whale_is_points_strictly_above_the_threshold(
    conn: asyncpg.Connection, world: World
) -> None:
    assert await _audience(conn, world, segment="WHALE") == {"points_501"}
    assert await _audience(conn, world, segment="WHALE", min_points=99) == {
        "plain",
        "points_500",
        "points_501",
    }


async def test_slumber_is_quiet_for_the_period_and_at_least_that_old(
    conn: asyncpg.Connection, world: World
) -> None:
    assert await _audience(conn, world, segment="SLUMBER") == {"just_old_enough", "tx_just_outside"}
    # Every other eligible pass had a transaction half a day ago.
    assert await _audience(conn, world, segment="SLUMBER", inactive_days=1) == {
        "young",
        "just_old_enough",
        "tx_just_inside",
        "tx_just_outside",
    }


async def test_local_is_the_users_zip_among_the_codes(
    conn: asyncpg.Connection, world: World
) -> None:
    assert await _audience(conn, world, segment="LOCAL", zip_codes=["90210", "10001"]) == {
        "zip_90210",
        "zip_padded",
    }
    assert await _audience(conn, world, segment="LOCAL", zip_codes=["75001"]) == {"plain"}


async def test_csv_is_the_listed_members_that_pass_the_base_rules(
    conn: asyncpg.Connection, world: World
) -> None:
    listed = ["plain", "tier_1001", "inactive", "opted_out", "other_program", "plain"]
    ids = [world.members[n] for n in listed] + ["M-does-not-exist"]
    assert await _audience(conn, world, segment="CSV", member_ids=ids) == {"plain", "tier_1001"}


async def test_unknown_member_ids_are_those_without_a_pass_in_the_program(
    conn: asyncpg.Connection, world: World
) -> None:
    ids = [
        world.members["plain"],
        world.members["inactive"],
        world.members["other_program"],
        "M-zzz",
        "M-aaa",
        "M-aaa",
    ]
    row = await conn.fetchrow(q("unknown_member_ids"), world.program, ids)
    assert row["unknown_count"] == 3
    assert row["sample"] == sorted(["M-aaa", "M-zzz", world.members["other_program"]])


async def test_target_query_text_is_never_executed(conn: asyncpg.Connection, world: World) -> None:
    """The seed's free-text column is a description: even valid SQL in it changes nothing."""
    await conn.execute(
        "INSERT INTO push_campaigns (program_id, name, message_text, status, target_query) "
        "VALUES ($1, 'x', 'hi', 'DRAFT', 'DELETE FROM passes_master')",
        world.program,
    )
    assert await _audience(conn, world, segment="ALL") == ELIGIBLE
    assert await conn.fetchval("SELECT count(*) FROM passes_master") == len(world.ids)
