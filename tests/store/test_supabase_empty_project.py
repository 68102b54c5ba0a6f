"""loyaltyd on a Supabase project that has none of the user's tables yet: `loyaltyd migrate`
creates programs, users, passes and the rest itself, and Supabase's default privileges grant
each new public table to anon (the key every web page ships) and authenticated, with row-level
security off. loyaltyd closes the tables it created there (sql/072): anon reaches nothing, a
signed-in admin reads their own program's rows, the daemon (their owner) works as before.

A project whose own tables already hold rows with row-level security off keeps them as they
are (an app of the user's may read them on purpose): `migrate` only names them.

The databases are built as in test_supabase.py (Supabase's bootstrap from ../shared/supabase);
the advisor is the pinned Supabase CLI of test_advisor.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from daemon.core.config import Settings
from daemon.store import console
from daemon.store.migrate import migrate
from tests.campaign_support import texts_sent
from tests.harness import REPO, fake_passkit, running_daemon, settings_for, wait_until
from tests.store.test_advisor import (  # noqa: F401 - the advisor and its fixture
    Advice,
    _advise,
    _assert_none_is_loyaltyds,
    advisor_cli,
)
from tests.store.test_supabase import (  # noqa: F401 - the Supabase-like database fixtures
    ADMIN_A,
    PASS_A,
    PASS_B,
    PROGRAM_A,
    PROGRAM_B,
    SUPABASE,
    _as_daemon,
    _as_session,
    _migrate,
    _run_psql,
    acting_as,
    bare_supabase,
    supabase_roles,
)

pytestmark = pytest.mark.skipif(
    not (SUPABASE / "01_platform.sql").exists(), reason=f"no Supabase bootstrap in {SUPABASE}"
)

ADMIN_B = "bbbbbbbb-0000-0000-0000-00000000000b"
# The core tables loyaltyd creates where they are missing (sql/001-006).
CLOSED = [
    "admin_profiles",
    "birthday_logs",
    "passes_master",
    "programs",
    "protocol_membership",
    "transactions",
    "users",
]
CORE = sorted([*CLOSED, "notification_logs", "push_campaigns"])

# Two programs with an admin, a member and a pass each, and a row of every kind, written by
# the daemon's role after `migrate` (as the daemon, an import or the console would).
_ROWS = f"""
    INSERT INTO programs (id, name, passkit_program_id, passkit_tier_id) VALUES
        ('{PROGRAM_A}', 'Joe''s Pizza', 'pk-prog-a', 'base'),
        ('{PROGRAM_B}', 'City Events', 'pk-prog-b', 'base');
    INSERT INTO admin_profiles (id, program_id) VALUES
        ('{ADMIN_A}', '{PROGRAM_A}'), ('{ADMIN_B}', '{PROGRAM_B}');
    INSERT INTO users (id, email, first_name, phone_number, birth_date) VALUES
        ('10000000-0000-0000-0000-000000000001', 'alice@example.com', 'Alice', '+33 6 12 34 56 78',
         '1990-01-02'),
        ('10000000-0000-0000-0000-000000000002', 'bob@example.com', 'Bob', '+1 212 555 0100',
         '1985-05-06');
    INSERT INTO passes_master (id, program_id, user_id, passkit_internal_id, external_id, status)
    VALUES ('{PASS_A}', '{PROGRAM_A}', '10000000-0000-0000-0000-000000000001', 'pk-alice-a', 'A-1',
            'INSTALLED'),
           ('{PASS_B}', '{PROGRAM_B}', '10000000-0000-0000-0000-000000000002', 'pk-bob-b', 'B-1',
            'INSTALLED');
    INSERT INTO protocol_membership (pass_id, points_balance) VALUES
        ('{PASS_A}', 300), ('{PASS_B}', 50);
    INSERT INTO transactions (pass_id, program_id, kind, points_delta, balance_after) VALUES
        ('{PASS_A}', '{PROGRAM_A}', 'EARN', 300, 300), ('{PASS_B}', '{PROGRAM_B}', 'EARN', 50, 50);
    INSERT INTO birthday_logs (pass_id, program_id, year) VALUES
        ('{PASS_A}', '{PROGRAM_A}', 2025), ('{PASS_B}', '{PROGRAM_B}', 2025);
    INSERT INTO notification_logs (program_id, campaign_name) VALUES
        ('{PROGRAM_A}', 'Pizza night'), ('{PROGRAM_B}', 'Concert night');
    INSERT INTO push_campaigns (program_id, name, message_text, status) VALUES
        ('{PROGRAM_A}', 'Pizza night', 'Pizza is on us', 'DRAFT'),
        ('{PROGRAM_B}', 'Concert night', 'Doors open at 8', 'DRAFT');
"""

# What decides who reaches a table: row-level security, grants on it and its columns, policies.
_ACCESS = """
    SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, c.relacl::text[] AS acl,
           ARRAY(SELECT a.attname || a.attacl::text FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attacl IS NOT NULL ORDER BY a.attnum) AS columns,
           ARRAY(SELECT p.polname FROM pg_policy p WHERE p.polrelid = c.oid ORDER BY 1) AS policies
      FROM pg_class c
     WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY($1::text[])
     ORDER BY 1
"""


@pytest.fixture
async def empty_project(
    supabase_roles: None,  # noqa: F811
    fresh_database: Callable[..., Any],
) -> str:
    """A new Supabase project: Supabase's bootstrap and nothing of the user's."""
    dsn: str = await fresh_database()
    _run_psql(dsn, SUPABASE / "01_platform.sql")
    return dsn


async def _migrate_as_released(
    dsn: str, route: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """`loyaltyd migrate` on the project at once ("fresh"), or first by the release before
    sql/072 and then by this one ("upgraded")."""
    if route == "upgraded":
        await _earlier_release(dsn, tmp_path / "sql")
    return _migrate(dsn)


async def _earlier_release(dsn: str, sql_dir: Path) -> None:
    """The migrations before sql/072, as the release before it applied them."""
    sql_dir.mkdir()
    for migration in (REPO / "sql").glob("[0-9][0-9][0-9]_*.sql"):
        if migration.name < "072":
            shutil.copy(migration, sql_dir / migration.name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, sql_dir)
    finally:
        await conn.close()


@pytest.fixture(params=["fresh", "upgraded"])
async def project(
    empty_project: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """…migrated by loyaltyd (both routes), then the rows of two programs, written by the
    daemon's role."""
    result = await _migrate_as_released(empty_project, request.param, tmp_path)
    assert result.returncode == 0, result.stderr
    conn = await asyncpg.connect(empty_project)
    try:
        await conn.execute(_ROWS)
    finally:
        await conn.close()
    yield empty_project


@pytest.fixture
async def db(project: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the daemon's role (the tables' owner)."""
    conn = await asyncpg.connect(project)
    yield conn
    await conn.close()


def _notices(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [
        json.loads(line)["message"]
        for line in result.stderr.splitlines()
        if '"migration_notice"' in line
    ]


async def _access(conn: asyncpg.Connection, tables: list[str]) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(_ACCESS, tables)]


# --- anon -----------------------------------------------------------------------------------


@pytest.mark.parametrize("table", CORE)
async def test_anon_reaches_nothing_of_what_loyaltyd_created(
    db: asyncpg.Connection, table: str
) -> None:
    for sql in (f"SELECT * FROM {table}", f"TRUNCATE {table} CASCADE"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            async with acting_as(db, "anon"):
                await db.execute(sql)


# --- a signed-in admin ----------------------------------------------------------------------

# What an admin of program A sees of each table (Softr's screens and the console read these).
_SEEN = {
    "programs": "SELECT id::text FROM programs",
    "users": "SELECT email FROM users",
    "passes_master": "SELECT program_id::text FROM passes_master",
    "protocol_membership": "SELECT pass_id::text FROM protocol_membership",
    "transactions": "SELECT DISTINCT program_id::text FROM transactions",
    "admin_profiles": "SELECT id::text FROM admin_profiles",
    "birthday_logs": "SELECT program_id::text FROM birthday_logs",
    "notification_logs": "SELECT program_id::text FROM notification_logs",
    "push_campaigns": "SELECT program_id::text FROM push_campaigns",
    "push_campaign_progress": "SELECT program_id::text FROM push_campaign_progress",
}
_OWN = {
    "users": ["alice@example.com"],
    "protocol_membership": [PASS_A],
    "admin_profiles": [ADMIN_A],
}


@pytest.mark.parametrize("table", sorted(_SEEN))
async def test_a_signed_in_admin_reads_their_own_programs_rows_only(
    db: asyncpg.Connection, table: str
) -> None:
    async with acting_as(db, "authenticated", ADMIN_A):
        seen = [r[0] for r in await db.fetch(_SEEN[table])]
    assert seen == _OWN.get(table, [PROGRAM_A])


async def test_someone_signed_in_who_is_no_admin_reads_nothing(db: asyncpg.Connection) -> None:
    stranger = str(uuid.uuid4())
    async with acting_as(db, "authenticated", stranger):
        for table in CORE:
            assert await db.fetch(f"SELECT * FROM {table}") == [], table


@pytest.mark.parametrize(
    "sql",
    [
        # balances move through process_membership_transaction only
        f"UPDATE protocol_membership SET points_balance = 9999 WHERE pass_id = '{PASS_A}'",
        f"INSERT INTO transactions (pass_id, kind, points_delta) VALUES ('{PASS_A}', 'EARN', 500)",
        # nothing of another program
        f"INSERT INTO transactions (pass_id, kind) VALUES ('{PASS_B}', 'CHECK_IN')",
        f"INSERT INTO transactions (pass_id, program_id, kind) VALUES ('{PASS_B}', '{PROGRAM_A}', "
        "'CHECK_IN')",
        # members, passes and admins are not edited through the Data API
        "UPDATE users SET email = 'someone@else.example'",
        "DELETE FROM passes_master",
        f"INSERT INTO admin_profiles (id, program_id) VALUES ('{uuid.uuid4()}', '{PROGRAM_B}')",
        f"UPDATE programs SET passkit_program_id = 'elsewhere' WHERE id = '{PROGRAM_A}'",
        # TRUNCATE is not held back by row-level security, so nobody signed in holds it
        "TRUNCATE users CASCADE",
        "TRUNCATE notification_logs",
        "TRUNCATE push_campaigns CASCADE",
    ],
)
async def test_an_admin_writes_nothing_the_product_does_not_ask_for(
    db: asyncpg.Connection, sql: str
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with acting_as(db, "authenticated", ADMIN_A):
            await db.execute(sql)


async def test_an_admin_records_an_event_and_changes_settings_of_their_own_program(
    db: asyncpg.Connection,
) -> None:
    async with acting_as(db, "authenticated", ADMIN_A):
        recorded = await db.fetchval(
            "INSERT INTO transactions (pass_id, kind, notification_message) "
            "VALUES ($1, 'ADJUST', 'See you soon') RETURNING program_id::text",
            uuid.UUID(PASS_A),
        )
        own = await db.execute("UPDATE programs SET birthday_reward_points = 25")
    assert (recorded, own) == (PROGRAM_A, "UPDATE 1")


async def test_the_console_signed_in_with_supabase_reads_and_sets_its_program(
    project: str, db: asyncpg.Connection
) -> None:
    """The console runs a Supabase sign-in's statements as `authenticated` under its claims."""
    pool = await asyncpg.create_pool(project, min_size=1, max_size=2)
    assert pool is not None
    try:
        scope = console.Scope(pool, {"sub": ADMIN_A, "role": "authenticated"})
        ids = await console.supabase_programs(scope)
        member = await console.sample_member(scope, uuid.UUID(PROGRAM_A), ids, None)
        settings = console.ProgramSettings(True, 25, "Happy birthday!", "Europe/Paris", 2)
        changed = await console.update_program(scope, uuid.UUID(PROGRAM_A), ids, settings, "a")
        other = [uuid.UUID(PROGRAM_B)]  # as if the console were asked for program B
        refused = await console.update_program(scope, other[0], other, settings, "a")
    finally:
        await pool.close()
    assert ids == [uuid.UUID(PROGRAM_A)]
    assert member is not None and (member.first_name, member.points) == ("Alice", 300)
    assert changed is not None and "birthday_reward_points" in changed
    assert refused is None
    assert (
        await db.fetchval(
            "SELECT birthday_reward_points FROM programs WHERE id = $1", uuid.UUID(PROGRAM_B)
        )
        == 0
    )


# --- the daemon -----------------------------------------------------------------------------


async def test_the_daemon_owns_the_tables_and_no_rule_holds_it_back(
    db: asyncpg.Connection,
) -> None:
    access = await _access(db, CORE)
    assert [(a["relname"], a["relrowsecurity"], a["relforcerowsecurity"]) for a in access] == [
        (table, True, False) for table in CORE
    ]
    for table in CORE:
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 2, table
    owners = await db.fetch(
        "SELECT DISTINCT pg_get_userbyid(relowner) = current_user AS mine FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace AND relname = ANY($1::text[])",
        CORE,
    )
    assert [r["mine"] for r in owners] == [True]


async def test_points_an_admin_moves_reach_the_wallet(
    project: str, db: asyncpg.Connection, make_settings: Callable[..., Settings]
) -> None:
    """As a signed-in admin, through the ledger function: the balance and the message reach
    the pass; another program's pass is refused."""
    async with fake_passkit() as fake:
        settings = settings_for(make_settings, fake.url, database_url=project)
        async with running_daemon(settings, project):
            await _as_session(db, "authenticated", ADMIN_A)
            moved = await db.fetchval(
                "SELECT process_membership_transaction($1, 25, 'EARN', 'Thanks for coming')",
                uuid.UUID(PASS_A),
            )
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="not allowed"):
                await db.fetchval(
                    "SELECT process_membership_transaction($1, 25, 'EARN', NULL)",
                    uuid.UUID(PASS_B),
                )
            await _as_daemon(db)
            assert json.loads(moved)["new_balance"] == 325
            await wait_until(lambda: fake.points_of("pk-alice-a") == 325, 10)
            await wait_until(lambda: texts_sent(fake, "pk-alice-a") == ["Thanks for coming"], 10)
    assert texts_sent(fake, "pk-bob-b") == []


# --- what migrate says, and the advisor -------------------------------------------------------


async def test_migrate_says_which_tables_it_closed(empty_project: str) -> None:
    result = _migrate(empty_project)
    assert result.returncode == 0, result.stderr
    (closed,) = [n for n in _notices(result) if "now with row-level security" in n]
    assert closed.startswith(", ".join(CLOSED) + ": created here by loyaltyd")
    assert not [n for n in _notices(result) if "open:" in n]


@pytest.mark.parametrize("route", ["fresh", "upgraded"])
async def test_the_advisor_finds_nothing_of_loyaltyds_on_an_empty_project(
    advisor_cli: Path,  # noqa: F811
    empty_project: str,
    route: str,
    tmp_path: Path,
) -> None:
    """Every finding after `migrate` on an empty project would be loyaltyd's: there is none
    (the workload lints aside: a new index is unused), and no table is without RLS."""
    before = _advise(advisor_cli, empty_project, tmp_path / "home")
    result = await _migrate_as_released(empty_project, route, tmp_path)
    assert result.returncode == 0, result.stderr
    advice = Advice(before, _advise(advisor_cli, empty_project, tmp_path / "home"))
    advice.report()
    _assert_none_is_loyaltyds(advice)
    names = {f.name for f in advice.after}
    assert not names & {"rls_disabled_in_public", "unindexed_foreign_keys"}, names


# --- projects whose tables hold rows ----------------------------------------------------------

# The user's tables with rows and row-level security off (fixtures/supabase_user_schema.sql),
# and their birthday_logs, empty but theirs; passes_master is theirs, under their own policy.
THEIRS_OPEN = [
    "admin_profiles",
    "birthday_logs",
    "programs",
    "protocol_membership",
    "transactions",
    "users",
]


async def test_the_users_own_open_tables_are_left_as_they_were_and_named(
    bare_supabase: str,  # noqa: F811
) -> None:
    conn = await asyncpg.connect(bare_supabase)
    try:
        before = await _access(conn, CLOSED)
        async with acting_as(conn, "anon"):
            read_before = await conn.fetchval("SELECT count(*) FROM users")
        result = _migrate(bare_supabase)
        assert result.returncode == 0, result.stderr
        assert await _access(conn, CLOSED) == before
        async with acting_as(conn, "anon"):
            assert await conn.fetchval("SELECT count(*) FROM users") == read_before == 2
    finally:
        await conn.close()
    (told,) = [n for n in _notices(result) if "open:" in n]
    assert told.startswith(
        "tables open: " + ", ".join(f"{t} (anon, authenticated)" for t in THEIRS_OPEN)
    )
    assert "ENABLE ROW LEVEL SECURITY" in told and "REVOKE ALL ON … FROM anon" in told
    assert not [n for n in _notices(result) if "now with row-level security" in n]


# What the user may have done to a table an earlier release created, before this release:
# each makes it theirs to decide.
SINCE_THEN = {
    "rows in it": "INSERT INTO users (email) VALUES ('alice@example.com')",
    "a grant of theirs": "GRANT SELECT ON users TO dashboard_user",
    "a policy of theirs": 'CREATE POLICY "members read themselves" ON users FOR SELECT '
    "TO authenticated USING (id = (SELECT auth.uid()))",
    # FORCE would hold back the daemon, the owner, once row-level security is on
    "FORCE": "ALTER TABLE users FORCE ROW LEVEL SECURITY",
}


@pytest.mark.parametrize("since_then", sorted(SINCE_THEN))
async def test_a_table_loyaltyd_created_earlier_and_since_used_is_named_not_changed(
    empty_project: str, since_then: str, tmp_path: Path
) -> None:
    """A project an earlier release set up: a table used since keeps its access and is
    named; the others, still empty, are closed."""
    await _earlier_release(empty_project, tmp_path / "sql")
    conn = await asyncpg.connect(empty_project)
    try:
        await conn.execute(SINCE_THEN[since_then])
        before = await _access(conn, ["users"])
        result = _migrate(empty_project)
        assert result.returncode == 0, result.stderr
        assert await _access(conn, ["users"]) == before
        access = {a["relname"]: a["relrowsecurity"] for a in await _access(conn, CLOSED)}
    finally:
        await conn.close()
    assert access == {t: t != "users" for t in CLOSED}
    (told,) = [n for n in _notices(result) if "open:" in n]
    assert told.startswith("one table is open: users (anon, authenticated):")


async def test_on_plain_postgres_only_the_indexes_are_added(conn: asyncpg.Connection) -> None:
    access = await _access(conn, CLOSED)
    assert [(a["relname"], a["relrowsecurity"], a["policies"]) for a in access] == [
        (table, False, []) for table in CLOSED
    ]
    indexed = await conn.fetch(
        "SELECT indrelid::regclass::text AS tbl FROM pg_index i JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] WHERE a.attname = 'program_id' "
        "AND indrelid::regclass::text IN ('admin_profiles', 'birthday_logs', 'notification_logs')"
        " ORDER BY 1"
    )
    assert [r["tbl"] for r in indexed] == ["admin_profiles", "birthday_logs", "notification_logs"]
