"""How push_campaigns' rules know the daemon (sql/058): a mark set inside the transaction that
writes, never a property of the connection. No pooler, RESET ALL or DISCARD ALL can take it
away from the daemon's statements or hand it to anyone else's."""

from __future__ import annotations

import re
import uuid

import asyncpg
import pytest

from daemon.store.queries import q, queries
from tests.campaign_support import campaign, stage_campaign, write_as_daemon
from tests.factories import make_program

MARK = "loyaltyd.writing_as_daemon()"


def test_every_statement_that_updates_push_campaigns_writes_as_the_daemon() -> None:
    """The daemon's own; the console's are an admin's, and never marked (test_console_access)."""
    updating = {
        name: body
        for name, body in queries().items()
        if re.search(r"\bUPDATE\s+push_campaigns\b", body, re.IGNORECASE)
        and not name.startswith("console_")
    }
    assert len(updating) >= 10
    assert [name for name, body in updating.items() if MARK not in body] == []


async def test_a_connection_named_loyaltyd_is_not_the_daemon(
    conn: asyncpg.Connection, database_url: str
) -> None:
    cid = await _running_on_conn(conn)
    named = await asyncpg.connect(database_url, server_settings={"application_name": "loyaltyd"})
    try:
        with pytest.raises(asyncpg.CheckViolationError) as refused:
            await named.execute("UPDATE push_campaigns SET status = 'COMPLETED' WHERE id = $1", cid)
    finally:
        await named.close()
    assert refused.value.constraint_name == "push_campaigns_status_transitions_belong_to_loyaltyd"


async def test_the_mark_lasts_one_transaction(conn: asyncpg.Connection) -> None:
    cid = await _running_on_conn(conn)
    await write_as_daemon(conn, "UPDATE push_campaigns SET sent_count = 5 WHERE id = $1", cid)
    assert (await campaign(conn, cid))["sent_count"] == 5
    # The next transaction on the same connection is a stranger again.
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("UPDATE push_campaigns SET sent_count = 6 WHERE id = $1", cid)
    assert (await campaign(conn, cid))["sent_count"] == 5


async def _running_on_conn(conn: asyncpg.Connection) -> uuid.UUID:
    program = await make_program(conn)
    return await stage_campaign(
        conn, program_id=program, status="PROCESSING", recipient_count=10, sent_count=4
    )


async def test_a_session_setting_of_the_mark_proves_nothing(conn: asyncpg.Connection) -> None:
    """The mark holds the transaction's id: a value copied into a session setting (by hand, a
    role default or a pooler replaying it) matches no later transaction."""
    cid = await _running_on_conn(conn)
    async with conn.transaction():
        await conn.execute(f"SELECT {MARK}")
        copied = await conn.fetchval("SELECT current_setting('loyaltyd.writer')")
    await conn.execute(f"SET loyaltyd.writer = '{copied}'")
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("UPDATE push_campaigns SET sent_count = 9 WHERE id = $1", cid)
    await conn.execute("SET loyaltyd.writer = 'daemon'")
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("UPDATE push_campaigns SET sent_count = 9 WHERE id = $1", cid)


@pytest.mark.parametrize("reset", ["RESET ALL", "DISCARD ALL"])
async def test_the_daemons_statements_carry_the_mark_through_any_reset(
    conn: asyncpg.Connection, reset: str
) -> None:
    """What a pool or a pooler runs between two uses of a connection takes nothing from the
    daemon: its own statement (the planner's claim) still moves PENDING to PROCESSING."""
    program = await make_program(conn)
    cid = await conn.fetchval(
        "INSERT INTO push_campaigns (program_id, name, message_text) VALUES ($1, 'x', 'Hi') "
        "RETURNING id",
        program,
    )
    version = await conn.fetchval("SELECT xmin::text FROM push_campaigns WHERE id = $1", cid)
    await conn.execute(reset)
    row = await conn.fetchrow(q("claim_campaigns"), [cid], [version], uuid.uuid4(), 30.0)
    assert row is not None and row["status"] == "PROCESSING"


async def test_another_role_that_sets_the_mark_by_hand_is_still_a_stranger(
    conn: asyncpg.Connection,
) -> None:
    """A role with every privilege on push_campaigns but not loyaltyd's owner: the mark it
    sets itself counts for nothing."""
    cid = await _running_on_conn(conn)
    role = f"forger_{uuid.uuid4().hex[:8]}"
    await conn.execute(f"CREATE ROLE {role}")
    try:
        await conn.execute(f"GRANT ALL ON push_campaigns TO {role}")
        with pytest.raises(asyncpg.CheckViolationError):
            async with conn.transaction():
                await conn.execute(f"SET LOCAL SESSION AUTHORIZATION {role}")
                await conn.execute(
                    "SELECT set_config('loyaltyd.writer', pg_current_xact_id()::text, true)"
                )
                await conn.execute(
                    "UPDATE push_campaigns SET status = 'COMPLETED' WHERE id = $1", cid
                )
        assert (await campaign(conn, cid))["status"] == "PROCESSING"
    finally:
        await conn.execute(f"REVOKE ALL ON push_campaigns FROM {role}")
        await conn.execute(f"DROP ROLE {role}")
