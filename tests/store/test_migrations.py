"""`loyaltyd migrate`: empty database, the user's seed schema, twice, concurrently."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from daemon.store.migrate import load_migrations, migrate, pending

SEED_SCHEMA = Path(__file__).resolve().parent.parent / "fixtures" / "seed_schema.sql"
ALL_VERSIONS = [m.version for m in load_migrations()]
EXPECTED_TABLES = {
    "programs",
    "users",
    "passes_master",
    "protocol_membership",
    "transactions",
    "admin_profiles",
    "notification_logs",
    "birthday_logs",
    "push_campaigns",
}


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


async def test_migrate_builds_the_whole_model_on_an_empty_database(
    fresh_database: Callable[..., Any],
) -> None:
    conn = await asyncpg.connect(await fresh_database())
    try:
        applied = await migrate(conn)
        assert applied == ALL_VERSIONS
        assert await _tables(conn) >= EXPECTED_TABLES
        assert await pending(conn) == []
    finally:
        await conn.close()


async def test_second_migrate_is_a_no_op(fresh_database: Callable[..., Any]) -> None:
    conn = await asyncpg.connect(await fresh_database())
    try:
        await migrate(conn)
        before = await conn.fetch("SELECT version, applied_at FROM loyaltyd.schema_migrations")
        assert await migrate(conn) == []
        after = await conn.fetch("SELECT version, applied_at FROM loyaltyd.schema_migrations")
        assert before == after
    finally:
        await conn.close()


async def test_concurrent_migrates_apply_each_migration_once(
    fresh_database: Callable[..., Any],
) -> None:
    dsn = await fresh_database()
    conns = [await asyncpg.connect(dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = sorted(v for result in results for v in result)
        assert applied == sorted(ALL_VERSIONS)
        count = await conns[0].fetchval("SELECT count(*) FROM loyaltyd.schema_migrations")
        assert count == len(ALL_VERSIONS)
    finally:
        for c in conns:
            await c.close()


async def test_migrate_upgrades_the_seed_schema_and_keeps_its_rows(
    fresh_database: Callable[..., Any],
) -> None:
    conn = await asyncpg.connect(await fresh_database())
    try:
        await conn.execute(SEED_SCHEMA.read_text())
        assert await migrate(conn) == ALL_VERSIONS
        joe = await conn.fetchrow(
            "SELECT u.email, u.birth_date, u.marketing_opt_in, m.points_balance, p.external_id "
            "FROM users u JOIN passes_master p ON p.user_id = u.id "
            "JOIN protocol_membership m ON m.pass_id = p.id"
        )
        assert joe is not None
        assert (joe["email"], joe["points_balance"], joe["external_id"]) == (
            "joe@example.com",  # stored in lower case from now on (sql/053)
            120,
            "M-0001",
        )
        assert await conn.fetchval("SELECT count(*) FROM transactions") == 1
        assert await conn.fetchval("SELECT success_count FROM notification_logs") == 4990
        assert await conn.fetchval("SELECT year FROM birthday_logs") == 2025
        old = await conn.fetchrow(
            "SELECT status, segment, sent_count, predates_loyaltyd FROM push_campaigns"
        )
        assert old is not None and tuple(old) == ("COMPLETED", "ALL", 10, True)
        assert await conn.fetchval("SELECT timezone FROM programs") == "UTC"
        policies = {
            r["policyname"]
            for r in await conn.fetch(
                "SELECT policyname FROM pg_policies WHERE tablename = 'notification_logs'"
            )
        }
        # The seed's own policy already lets admins read their program's logs: loyaltyd keeps
        # no copy of it beside it (sql/066).
        assert policies == {"Admins can view their program logs"}
        assert await migrate(conn) == []
    finally:
        await conn.close()


async def test_the_seed_schemas_own_ledger_function_is_left_working(
    fresh_database: Callable[..., Any],
) -> None:
    """The seed's process_membership_transaction has loyaltyd's argument types: it is not
    replaced (it still answers its own json), and loyaltyd's own lives in its schema."""
    conn = await asyncpg.connect(await fresh_database())
    try:
        await conn.execute(SEED_SCHEMA.read_text())
        await migrate(conn)
        theirs = await conn.fetchval(
            "SELECT process_membership_transaction($1, 5, 'EARN', NULL, NULL)",
            "33333333-3333-3333-3333-333333333333",
        )
        assert theirs == '{"ok" : true}'
        ours = await conn.fetchval(
            "SELECT loyaltyd.process_membership_transaction($1, 5, 'EARN', NULL, NULL)",
            "33333333-3333-3333-3333-333333333333",
        )
        assert '"new_balance": 130' in ours  # 120 + their 5 + our 5
    finally:
        await conn.close()


async def test_supabase_policy_is_skipped_on_plain_postgres(conn: asyncpg.Connection) -> None:
    """Without auth.uid() the migration still succeeds; RLS is on, no policy is created."""
    assert await conn.fetchval("SELECT to_regprocedure('auth.uid()')") is None
    assert (
        await conn.fetchval(
            "SELECT relrowsecurity FROM pg_class WHERE relname = 'notification_logs'"
        )
        is True
    )


@pytest.mark.parametrize("email", ["joe@example.com", "JOE@EXAMPLE.COM"])
async def test_email_is_unique_ignoring_case(conn: asyncpg.Connection, email: str) -> None:
    await conn.execute("INSERT INTO users (email) VALUES ('Joe@Example.com')")
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute("INSERT INTO users (email) VALUES ($1)", email)


async def test_unknown_program_timezone_is_refused(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match="unknown timezone"):
        await conn.execute("INSERT INTO programs (name, timezone) VALUES ('x', 'Mars/Olympus')")


async def test_upserts_on_email_work_where_loyaltyd_created_the_users_table(
    conn: asyncpg.Connection,
) -> None:
    """No user index on email here: 053's users_email_unique is the one ON CONFLICT needs, and
    059 keeps it."""
    await conn.execute("INSERT INTO users (email, first_name) VALUES ('a@example.com', 'A')")
    await conn.execute(
        "INSERT INTO users (email, first_name) VALUES ('a@example.com', 'B') "
        "ON CONFLICT (email) DO UPDATE SET first_name = excluded.first_name"
    )
    assert await conn.fetchval("SELECT first_name FROM users") == "B"
    assert await conn.fetchval("SELECT to_regclass('public.users_email_unique')") is not None
