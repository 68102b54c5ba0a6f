"""process_membership_transaction: atomic under concurrency, never below zero, idempotent."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest

from tests.factories import make_pass, make_program

CALL = "SELECT process_membership_transaction($1, $2, $3, $4, $5)"


async def _call(
    db: asyncpg.Connection | asyncpg.Pool,
    pass_id: uuid.UUID,
    points: int,
    kind: str = "EARN",
    message: str | None = None,
    ref: str | None = None,
) -> dict[str, object]:
    raw = await db.fetchval(CALL, pass_id, points, kind, message, ref)
    result: dict[str, object] = json.loads(raw)
    return result


async def test_fifty_parallel_earns_on_one_pass_all_count(pool: asyncpg.Pool) -> None:
    program = await make_program(pool)
    pass_id = await make_pass(pool, program, points=0)
    await asyncio.gather(*(_call(pool, pass_id, 10) for _ in range(50)))
    assert (
        await pool.fetchval(
            "SELECT points_balance FROM protocol_membership WHERE pass_id = $1", pass_id
        )
        == 500
    )
    assert (
        await pool.fetchval("SELECT count(*) FROM transactions WHERE pass_id = $1", pass_id) == 50
    )
    balances = await pool.fetch(
        "SELECT balance_after FROM transactions WHERE pass_id = $1 ORDER BY balance_after", pass_id
    )
    assert [r["balance_after"] for r in balances] == list(range(10, 501, 10))


async def test_result_carries_what_the_sync_needs(conn: asyncpg.Connection) -> None:
    program = await make_program(conn)
    pass_id = await make_pass(conn, program, points=5, passkit_internal_id="pk-abc")
    result = await _call(conn, pass_id, 7, "EARN", "Thanks for your visit!")
    assert result["new_balance"] == 12
    assert result["passkit_internal_id"] == "pk-abc"
    assert result["protocol"] == "MEMBERSHIP"
    assert result["notification_message"] == "Thanks for your visit!"
    assert result["replayed"] is False
    tx = await conn.fetchrow(
        "SELECT * FROM transactions WHERE id = $1", uuid.UUID(str(result["transaction_id"]))
    )
    assert tx is not None and tx["points_delta"] == 7 and tx["balance_after"] == 12


async def test_burn_below_zero_is_refused_and_changes_nothing(conn: asyncpg.Connection) -> None:
    program = await make_program(conn)
    pass_id = await make_pass(conn, program, points=30)
    with pytest.raises(asyncpg.CheckViolationError, match="insufficient points"):
        await _call(conn, pass_id, -31, "BURN")
    assert (
        await conn.fetchval(
            "SELECT points_balance FROM protocol_membership WHERE pass_id = $1", pass_id
        )
        == 30
    )
    assert await conn.fetchval("SELECT count(*) FROM transactions") == 0
    assert (await _call(conn, pass_id, -30, "BURN"))["new_balance"] == 0


async def test_same_external_ref_returns_first_result_and_writes_nothing(
    conn: asyncpg.Connection,
) -> None:
    program = await make_program(conn)
    pass_id = await make_pass(conn, program, points=0)
    first = await _call(conn, pass_id, 25, "EARN", "hi", "order-42")
    again = await _call(conn, pass_id, 25, "EARN", "hi", "order-42")
    assert again["transaction_id"] == first["transaction_id"]
    assert again["new_balance"] == 25 and again["replayed"] is True
    assert await conn.fetchval("SELECT count(*) FROM transactions") == 1
    assert await conn.fetchval("SELECT points_balance FROM protocol_membership") == 25


async def test_concurrent_replays_of_one_external_ref_apply_once(pool: asyncpg.Pool) -> None:
    program = await make_program(pool)
    pass_id = await make_pass(pool, program, points=0)
    results = await asyncio.gather(
        *(_call(pool, pass_id, 10, "EARN", None, "till-7") for _ in range(20))
    )
    assert len({r["transaction_id"] for r in results}) == 1
    assert await pool.fetchval("SELECT points_balance FROM protocol_membership") == 10


@pytest.mark.parametrize(
    ("kind", "match"),
    [("REDEEM", "kind must be"), (None, "kind must be")],
)
async def test_bad_kind_is_refused(conn: asyncpg.Connection, kind: str | None, match: str) -> None:
    program = await make_program(conn)
    pass_id = await make_pass(conn, program)
    with pytest.raises(asyncpg.PostgresError, match=match):
        await _call(conn, pass_id, 1, kind)  # type: ignore[arg-type]


async def test_points_on_a_coupon_pass_are_refused(conn: asyncpg.Connection) -> None:
    program = await make_program(conn)
    pass_id = await make_pass(conn, program, protocol="COUPON")
    with pytest.raises(asyncpg.PostgresError, match="only move on MEMBERSHIP"):
        await _call(conn, pass_id, 1)


async def test_unknown_pass_is_refused(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.PostgresError, match="does not exist"):
        await _call(conn, uuid.uuid4(), 1)


async def test_redeem_row_needs_only_pass_program_and_kind(conn: asyncpg.Connection) -> None:
    program = await make_program(conn)
    pass_id = await make_pass(conn, program, protocol="COUPON")
    await conn.execute("INSERT INTO transactions (pass_id, kind) VALUES ($1, 'REDEEM')", pass_id)
    row = await conn.fetchrow("SELECT program_id, points_delta, created_at FROM transactions")
    assert row is not None and row["program_id"] == program and row["points_delta"] == 0
