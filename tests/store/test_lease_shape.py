"""One lease shape (sql/075): every queue loyaltyd owns leases its rows with the same columns,
every claim judges a lease by the one rule (loyaltyd.lease_lapsed, with loyaltyd.dead_daemons),
and a database upgraded with pass syncs in flight keeps each one's lease and due time."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from daemon.store.migrate import migrate
from daemon.store.passes import PassSyncStore
from daemon.store.queries import queries
from tests.factories import make_pass, make_program
from tests.migration_support import migrations_before

QUEUES = ("pass_syncs", "campaign_deliveries", "wallet_events")
# column -> (type, nullable)
SHAPE = {
    "state": ("text", False),
    "lease_owner": ("uuid", True),
    "available_at": ("timestamp with time zone", False),
    "attempts": ("integer", False),
}
# Names a second lease or due time would go by.
NOT_IN_SHAPE = ("lease_expires_at", "next_attempt_at", "lease_until", "due_at")
CLAIMS = ("claim_pass_syncs", "claim_deliveries", "claim_wallet_events", "due_campaigns")


async def _columns(
    conn: asyncpg.Connection, schema: str, table: str
) -> dict[str, tuple[str, bool]]:
    rows = await conn.fetch(
        "SELECT column_name, data_type, is_nullable = 'YES' AS nullable "
        "FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
        schema,
        table,
    )
    return {r["column_name"]: (r["data_type"], r["nullable"]) for r in rows}


@pytest.mark.parametrize("table", QUEUES)
async def test_every_queue_loyaltyd_owns_leases_its_rows_the_same_way(
    conn: asyncpg.Connection, table: str
) -> None:
    columns = await _columns(conn, "loyaltyd", table)
    assert {name: columns.get(name) for name in SHAPE} == SHAPE
    assert not [name for name in NOT_IN_SHAPE if name in columns]
    check = await conn.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1",
        f"{table}_claimed_rows_have_a_lease_owner",
    )
    assert check == "CHECK (((state = 'claimed'::text) = (lease_owner IS NOT NULL)))"


async def test_push_campaigns_keeps_its_lease_on_the_users_table(
    conn: asyncpg.Connection,
) -> None:
    """The user's table keeps the columns Softr and the console know; they mean what
    lease_owner and available_at mean elsewhere, and the attempts live beside it."""
    columns = await _columns(conn, "public", "push_campaigns")
    assert columns["lease_owner"] == ("uuid", True)
    assert columns["lease_expires_at"] == ("timestamp with time zone", True)
    attempts = await _columns(conn, "loyaltyd", "campaign_attempts")
    assert attempts["attempts"][0] == "integer"


def test_every_claim_judges_a_lease_by_the_one_rule() -> None:
    sql = queries()
    for name in CLAIMS:
        assert "loyaltyd.lease_lapsed(" in sql[name], name
        assert "loyaltyd.dead_daemons(" in sql[name], name
    # Nowhere else is a dead owner or a run-out lease spelled out by hand.
    by_hand = re.compile(r"lease_owner\s*=\s*ANY|lease_expires_at\s*<=?\s*now\(\)", re.I)
    assert [n for n, text in sql.items() if by_hand.search(text)] == []


@pytest.mark.parametrize(
    ("until", "owner_dead", "lapsed"),
    [
        ("NULL", False, True),  # no lease at all
        ("now() - interval '1 second'", False, True),  # ran out
        ("now()", False, True),
        ("now() + interval '1 minute'", False, False),  # held by a live daemon
        ("now() + interval '1 minute'", True, True),  # held by a dead one
    ],
)
async def test_a_lease_lapses_when_it_runs_out_or_its_owner_dies(
    conn: asyncpg.Connection, until: str, owner_dead: bool, lapsed: bool
) -> None:
    owner = uuid.uuid4()
    dead = [owner] if owner_dead else [uuid.uuid4()]
    found = await conn.fetchval(
        f"SELECT loyaltyd.lease_lapsed({until}, $1, $2::uuid[])", owner, dead
    )
    assert found is lapsed


async def test_syncs_in_flight_keep_their_lease_and_due_time_through_the_upgrade(
    fresh_database: Callable[..., Any], tmp_path: Path
) -> None:
    """Before sql/075 a claimed sync's lease end was lease_expires_at and a waiting sync's due
    time next_attempt_at: after it, both are available_at, and a claim treats each as before."""
    dsn = await fresh_database()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, migrations_before("075", tmp_path / "sql"))
        program = await make_program(conn)
        held, waiting, due = [await make_pass(conn, program, points=1) for _ in range(3)]
        for pass_id in (held, waiting, due):
            await conn.execute(
                "SELECT process_membership_transaction($1, 1, 'EARN', NULL, NULL)", pass_id
            )
        holder = uuid.uuid4()
        await conn.execute(
            "UPDATE loyaltyd.pass_syncs SET state = 'claimed', lease_owner = $2, "
            "lease_expires_at = now() + interval '10 minutes', "
            "next_attempt_at = now() - interval '1 hour' WHERE pass_id = $1",
            held,
            holder,
        )
        await conn.execute(
            "UPDATE loyaltyd.pass_syncs SET next_attempt_at = now() + interval '1 hour' "
            "WHERE pass_id = $1",
            waiting,
        )
        assert "075_one_lease_shape" in await migrate(conn)

        times = dict(
            await conn.fetch(
                "SELECT pass_id, round(extract(epoch FROM available_at - now()) / 60)::int "
                "FROM loyaltyd.pass_syncs"
            )
        )
        assert times == {held: 10, waiting: 60, due: 0}
    finally:
        await conn.close()

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        claimed = await PassSyncStore(pool, lease_seconds=30).claim(uuid.uuid4(), 10)
        assert [job.pass_id for job in claimed] == [due]  # the held one stays its holder's
        # An earn while the lease is held leaves the lease end alone (the holder's to keep).
        await pool.execute("SELECT process_membership_transaction($1, 1, 'EARN', NULL, NULL)", held)
        state, owner, minutes = await pool.fetchrow(
            "SELECT state, lease_owner, round(extract(epoch FROM available_at - now()) / 60)::int"
            " FROM loyaltyd.pass_syncs WHERE pass_id = $1",
            held,
        )
        assert (state, owner, minutes) == ("claimed", holder, 10)
    finally:
        await pool.close()
