"""loyaltyd on the user's Supabase project, checked as the three roles that reach it: `anon`
(the public key every Supabase page ships), a signed-in admin of program A (`authenticated`
with `request.jwt.claims`, as PostgREST sets them) and the daemon's own role.

Each test builds the database the way it stands in production: Supabase's bootstrap from
../shared/supabase (roles, default privileges that grant every new public object to anon and
authenticated, the auth schema), the user's tables, rows, RPC and policies
(fixtures/supabase_user_schema.sql), then `loyaltyd migrate` as the CLI runs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from daemon.core.config import Settings
from daemon.store.migrate import migrate
from tests.campaign_support import texts_sent, write_as_daemon
from tests.harness import REPO, fake_passkit, running_daemon, settings_for, wait_until

SUPABASE = REPO.parent / "shared" / "supabase"
USER_SCHEMA = Path(__file__).resolve().parent.parent / "fixtures" / "supabase_user_schema.sql"
pytestmark = pytest.mark.skipif(
    not (SUPABASE / "01_platform.sql").exists(), reason=f"no Supabase bootstrap in {SUPABASE}"
)

PROGRAM_A = "a0000000-0000-0000-0000-00000000000a"
PROGRAM_B = "b0000000-0000-0000-0000-00000000000b"
ADMIN_A = "aaaaaaaa-0000-0000-0000-00000000000a"
PASS_A = "20000000-0000-0000-0000-00000000000a"
PASS_B = "20000000-0000-0000-0000-00000000000b"
HISTORY_A = "c0000000-0000-0000-0000-00000000000a"
HISTORY_B = "c0000000-0000-0000-0000-00000000000b"


def _psql() -> str:
    try:
        from daemon.store.embedded import binaries

        bundled = binaries() / "psql"
        if bundled.exists():
            return str(bundled)
    except Exception:
        pass
    found = shutil.which("psql")
    if found is None:
        pytest.skip("no psql to run Supabase's bootstrap")
    return found


def _run_psql(dsn: str, script: Path) -> None:
    result = subprocess.run(
        [_psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="session")
def supabase_roles(pg_admin_dsn: str) -> None:
    """Supabase's cluster roles, once per server (idempotent)."""
    _run_psql(pg_admin_dsn, SUPABASE / "00_roles.sql")


def _migrate(dsn: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": dsn, "LOYALTYD_LOG_FORMAT": "json"}
    return subprocess.run(
        [sys.executable, "-m", "daemon", "migrate"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
async def bare_supabase(
    supabase_roles: None, fresh_database: Callable[..., Any]
) -> AsyncIterator[str]:
    """Supabase's bootstrap and the user's tables; not yet migrated."""
    dsn: str = await fresh_database()
    _run_psql(dsn, SUPABASE / "01_platform.sql")
    _run_psql(dsn, USER_SCHEMA)
    yield dsn


@pytest.fixture(params=["fresh", "upgraded"])
async def supabase(
    bare_supabase: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """…and `loyaltyd migrate` on top, as the user runs it: on a database that never ran it
    ("fresh"), or on one that ran every migration up to 057 and has its duplicate email
    index ("upgraded"). Every guarantee below holds for both."""
    if request.param == "upgraded":
        await _migrate_up_to(bare_supabase, "057", tmp_path / "sql")
    result = _migrate(bare_supabase)
    assert result.returncode == 0, result.stderr
    yield bare_supabase


async def _migrate_up_to(dsn: str, last: str, sql_dir: Path) -> None:
    """The migrations up to `last` as an earlier release applied them: the daemon was then
    recognised by its application_name, and 053 created users_email_unique beside the user's
    users_email_key (its check never matched), as done here by hand."""
    sql_dir.mkdir()
    for migration in (REPO / "sql").glob("[0-9][0-9][0-9]_*.sql"):
        if migration.name[:3] <= last:
            shutil.copy(migration, sql_dir / migration.name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, sql_dir)
        await conn.execute("CREATE UNIQUE INDEX users_email_unique ON public.users (email)")
    finally:
        await conn.close()


@pytest.fixture
async def db(supabase: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the daemon's role."""
    conn = await asyncpg.connect(supabase)
    yield conn
    await conn.close()


@asynccontextmanager
async def acting_as(
    conn: asyncpg.Connection, role: str, sub: str | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """One transaction as the Data API runs a request: SET LOCAL ROLE and the JWT claims."""
    tr = conn.transaction()
    await tr.start()
    try:
        await conn.execute(f"SET LOCAL ROLE {role}")
        await conn.execute("SET LOCAL application_name = 'postgrest'")
        claims = {"role": role, **({"sub": sub} if sub else {})}
        await conn.execute("SELECT set_config('request.jwt.claims', $1, true)", json.dumps(claims))
        yield conn
    finally:
        await tr.rollback()


async def _refused(conn: asyncpg.Connection, role: str, sql: str, *args: Any) -> str:
    """Run `sql` as `role`; return the error it got (the test fails if it succeeds)."""
    try:
        async with acting_as(conn, role, ADMIN_A if role == "authenticated" else None):
            await conn.execute(sql, *args)
    except asyncpg.PostgresError as exc:
        return str(exc)
    raise AssertionError(f"{role} was allowed: {sql}")


# --- 1. loyaltyd's internals are out of reach -------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO loyaltyd.pass_syncs (pass_id, program_id, message, message_generation) "
        f"VALUES ('{PASS_A}', '{PROGRAM_A}', 'your ticket is cancelled, call +1-900', 1)",
        f"SELECT loyaltyd.enqueue_pass_sync('{PASS_A}', '{PROGRAM_A}', 'message', NULL, 'x')",
        "DELETE FROM loyaltyd.schema_migrations",
        f"SELECT loyaltyd.process_membership_transaction('{PASS_A}', 5000, 'EARN', NULL, NULL)",
        f"SELECT process_membership_transaction('{PASS_A}', 5000, 'EARN', NULL)",
        "SELECT * FROM loyaltyd.campaign_deliveries",
        "SELECT * FROM public.campaign_deliveries",
        "SELECT * FROM public.push_campaign_progress",
        "SELECT * FROM loyaltyd.pass_syncs",
        "SELECT * FROM push_campaigns",
        f"INSERT INTO push_campaigns (program_id, name, message_text) VALUES ('{PROGRAM_A}', 'x', "
        "'y')",
    ],
)
async def test_anon_reaches_nothing_of_loyaltyd(db: asyncpg.Connection, sql: str) -> None:
    error = await _refused(db, "anon", sql)
    assert "permission denied" in error


async def test_nothing_of_loyaltyd_is_left_in_public_for_the_data_api(
    db: asyncpg.Connection,
) -> None:
    for name in ("pass_syncs", "loyaltyd_schema_migrations"):
        assert await db.fetchval("SELECT to_regclass($1)", f"public.{name}") is None
    leftovers = await db.fetch(
        "SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace "
        "AND (p.proname LIKE 'loyaltyd%' OR p.proname = 'push_campaign_audience')"
    )
    assert leftovers == []


async def test_a_transaction_inserted_by_an_admin_reaches_the_queue_without_privileges_on_it(
    db: asyncpg.Connection,
) -> None:
    """The queue triggers are SECURITY DEFINER: the admin's own committed insert owes the
    pass its message, though the admin has no right on loyaltyd's queue."""
    await _as_session(db, "authenticated", ADMIN_A)
    await db.execute(
        "INSERT INTO transactions (pass_id, kind, notification_message) "
        "VALUES ($1, 'REDEEM', 'Enjoy!')",
        uuid.UUID(PASS_A),
    )
    assert "permission denied" in await _error_of(db, "SELECT * FROM loyaltyd.pass_syncs")
    await _as_daemon(db)
    row = await db.fetchrow("SELECT message, program_id FROM loyaltyd.pass_syncs")
    assert row is not None and row["message"] == "Enjoy!" and str(row["program_id"]) == PROGRAM_A


async def _as_session(conn: asyncpg.Connection, role: str, sub: str) -> None:
    """The Data API's role and claims for the rest of the session (its writes commit)."""
    await conn.execute(f"SET ROLE {role}")
    await conn.execute("SET application_name = 'postgrest'")
    await conn.execute(
        "SELECT set_config('request.jwt.claims', $1, false)",
        json.dumps({"role": role, "sub": sub}),
    )


async def _as_daemon(conn: asyncpg.Connection) -> None:
    await conn.execute("RESET ROLE")
    await conn.execute("RESET application_name")
    await conn.execute("SELECT set_config('request.jwt.claims', '', false)")


async def _error_of(conn: asyncpg.Connection, sql: str) -> str:
    try:
        await conn.execute(sql)
    except asyncpg.PostgresError as exc:
        return str(exc)
    raise AssertionError(f"allowed: {sql}")


async def test_an_admin_sees_only_their_programs_campaigns_progress_and_recipients(
    db: asyncpg.Connection,
) -> None:
    await db.execute(
        "INSERT INTO loyaltyd.campaign_deliveries (campaign_id, pass_id, state, rendered_text, "
        "finished_at) VALUES ($1, $2, 'sent', 'Hi Alice', now()), ($3, $4, 'sent', 'Hi Bob', "
        "now())",
        uuid.UUID(HISTORY_A),
        uuid.UUID(PASS_A),
        uuid.UUID(HISTORY_B),
        uuid.UUID(PASS_B),
    )
    async with acting_as(db, "authenticated", ADMIN_A):
        progress = await db.fetch("SELECT program_id FROM push_campaign_progress")
        recipients = await db.fetch("SELECT rendered_text FROM campaign_deliveries")
        campaigns = await db.fetch("SELECT program_id FROM push_campaigns")
    assert {str(r["program_id"]) for r in progress} == {PROGRAM_A}
    assert [r["rendered_text"] for r in recipients] == ["Hi Alice"]
    assert {str(r["program_id"]) for r in campaigns} == {PROGRAM_A}


async def test_an_admin_cannot_add_a_campaign_to_another_program(db: asyncpg.Connection) -> None:
    error = await _refused(
        db,
        "authenticated",
        "INSERT INTO push_campaigns (program_id, name, message_text) VALUES ($1, 'x', 'y')",
        uuid.UUID(PROGRAM_B),
    )
    assert "row-level security" in error
    async with acting_as(db, "authenticated", ADMIN_A):
        await db.execute(
            "INSERT INTO push_campaigns (program_id, name, message_text) VALUES ($1, 'x', 'y')",
            uuid.UUID(PROGRAM_A),
        )


async def test_the_views_run_as_their_reader(db: asyncpg.Connection) -> None:
    options = await db.fetch(
        "SELECT c.relname, c.reloptions FROM pg_class c "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'v' "
        "AND c.relname IN ('push_campaign_progress', 'campaign_deliveries')"
    )
    assert {r["relname"]: r["reloptions"] for r in options} == {
        "push_campaign_progress": ["security_invoker=true"],
        "campaign_deliveries": ["security_invoker=true"],
    }


# --- Security Advisor ------------------------------------------------------------------------

# loyaltyd's objects: everything in its schema, and what it puts in public on purpose.
_OURS = """
    (n.nspname = 'loyaltyd'
     OR (n.nspname = 'public' AND c.relname IN ('push_campaign_progress', 'campaign_deliveries')))
"""
_LINTS = {
    # 0013: a table the Data API exposes without row-level security
    "rls_disabled_in_public": f"""
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND n.nspname = 'public' AND NOT c.relrowsecurity AND {_OURS}""",
    # 0010: a view that runs with its owner's rights
    "security_definer_view": f"""
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'v' AND {_OURS}
           AND NOT coalesce(c.reloptions @> '{{security_invoker=true}}', false)""",
    # 0011: a function whose search_path a caller can change
    "function_search_path_mutable": """
        SELECT p.oid::regprocedure::text
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE (n.nspname = 'loyaltyd' OR (n.nspname = 'public'
                AND coalesce(obj_description(p.oid, 'pg_proc'), '') LIKE 'loyaltyd:%'))
           AND NOT EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) s
                            WHERE s LIKE 'search_path=%')""",
    # anything of loyaltyd that anon can execute, read or write
    "anon_can_execute": """
        SELECT p.oid::regprocedure::text
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE (n.nspname = 'loyaltyd' OR (n.nspname = 'public'
                AND coalesce(obj_description(p.oid, 'pg_proc'), '') LIKE 'loyaltyd:%'))
           AND has_function_privilege('anon', p.oid, 'EXECUTE')""",
    "anon_can_touch": f"""
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'v') AND {_OURS}
           AND has_table_privilege('anon', c.oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE')""",
    "public_can_execute": """
        SELECT p.oid::regprocedure::text FROM pg_proc p
         WHERE p.pronamespace = 'loyaltyd'::regnamespace
           AND EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner)))
                        WHERE grantee = 0 AND privilege_type = 'EXECUTE')""",
}


@pytest.mark.parametrize("lint", sorted(_LINTS))
async def test_security_advisor_finds_nothing_of_loyaltyds(
    db: asyncpg.Connection, lint: str
) -> None:
    findings = [r[0] for r in await db.fetch(_LINTS[lint])]
    assert findings == []


# --- 2. history is history -------------------------------------------------------------------


async def test_campaigns_that_predate_loyaltyd_are_history_and_a_new_one_is_sent(
    supabase: str, db: asyncpg.Connection, make_settings: Callable[..., Settings]
) -> None:
    async with fake_passkit() as fake:
        settings = settings_for(make_settings, fake.url, database_url=supabase)
        async with running_daemon(settings, supabase):
            await asyncio.sleep(2)  # the planner's first sweeps and polls
            assert texts_sent(fake, "pk-alice-a") == []
            assert texts_sent(fake, "pk-bob-b") == []
            # The admin's request is committed here (acting_as rolls back).
            await _as_session(db, "authenticated", ADMIN_A)
            new = await db.fetchval(
                "INSERT INTO push_campaigns (program_id, name, message_text) "
                "VALUES ($1, 'Today', 'Pizza is on us') RETURNING id",
                uuid.UUID(PROGRAM_A),
            )
            await _as_daemon(db)
            await wait_until(lambda: texts_sent(fake, "pk-alice-a") == ["Pizza is on us"], 15)
    history = await db.fetch(
        "SELECT id, status, recipient_count, sent_count, predates_loyaltyd FROM push_campaigns "
        "WHERE id <> $1 ORDER BY id",
        new,
    )
    assert [tuple(r)[1:] for r in history] == [
        ("PENDING", 150, 148, True),
        ("PENDING", 900, 899, True),
    ]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM loyaltyd.campaign_deliveries WHERE campaign_id <> $1", new
        )
        == 0
    )
    assert texts_sent(fake, "pk-bob-b") == []


async def test_a_history_row_cannot_be_made_sendable(db: asyncpg.Connection) -> None:
    error = await _refused(
        db,
        "authenticated",
        "UPDATE push_campaigns SET predates_loyaltyd = false WHERE id = $1",
        uuid.UUID(HISTORY_A),
    )
    assert "stays history" in error


async def test_migrate_says_what_it_found_and_decided(bare_supabase: str) -> None:
    result = _migrate(bare_supabase)
    assert result.returncode == 0, result.stderr
    notices = [
        json.loads(line)["message"]
        for line in result.stderr.splitlines()
        if '"migration_notice"' in line
    ]
    assert any("2 existing rows predate loyaltyd" in n for n in notices), notices
    assert any(
        "process_membership_transaction(uuid,integer,text,text)" in n
        and "left exactly as it is" in n
        for n in notices
    ), notices


# --- 3. the user's own function keeps working -----------------------------------------------


_THEIR_FUNCTION = """
    SELECT p.oid::regprocedure::text AS signature, p.prosecdef, p.proconfig, p.proacl::text[],
           pg_get_function_arguments(p.oid) AS arguments, md5(p.prosrc) AS body
      FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
       AND p.proname IN ('process_membership_transaction', 'redeem_reward') ORDER BY 1
"""


async def test_the_users_rpc_is_left_exactly_as_it_was(bare_supabase: str) -> None:
    conn = await asyncpg.connect(bare_supabase)
    try:
        before = [dict(r) for r in await conn.fetch(_THEIR_FUNCTION)]
        assert _migrate(bare_supabase).returncode == 0
        after = [dict(r) for r in await conn.fetch(_THEIR_FUNCTION)]
    finally:
        await conn.close()
    assert after == before and len(after) == 2


async def test_the_users_rpc_and_its_wrapper_answer_positional_and_named_calls(
    db: asyncpg.Connection,
) -> None:
    async with acting_as(db, "authenticated", ADMIN_A):
        positional = await db.fetchval(
            "SELECT process_membership_transaction($1, 5, 'EARN', 'hi')", uuid.UUID(PASS_A)
        )
        named = await db.fetchval(
            "SELECT process_membership_transaction(p_pass_id => $1, p_points => 5, "
            "p_kind => 'EARN', p_message => NULL)",
            uuid.UUID(PASS_A),
        )
        wrapped = await db.fetchval("SELECT redeem_reward($1, 10)", uuid.UUID(PASS_A))
    assert json.loads(positional) == {"new_balance": 305}
    assert json.loads(named) == {"new_balance": 310}
    assert json.loads(wrapped) == {"new_balance": 300}


async def test_the_birthday_bot_uses_loyaltyds_own_ledger(
    supabase: str, db: asyncpg.Connection
) -> None:
    """Beside the user's own process_membership_transaction, a birthday gift still goes
    through loyaltyd's: the BIRTHDAY ledger row, the balance and the log row."""
    from datetime import UTC, datetime

    from daemon.birthday.bot import run_birthdays

    now = datetime.now(UTC)
    await db.execute(
        "UPDATE programs SET birthday_bot_enabled = true, birthday_reward_points = 25, "
        "timezone = 'UTC' WHERE id = $1",
        uuid.UUID(PROGRAM_A),
    )
    await db.execute(
        "UPDATE users SET birth_date = make_date(1990, $1, $2) WHERE first_name = 'Alice'",
        now.month,
        now.day if (now.month, now.day) != (2, 29) else 28,
    )
    pool = await asyncpg.create_pool(supabase, min_size=1, max_size=2)
    assert pool is not None
    try:
        summary = await run_birthdays(pool, now=now)
    finally:
        await pool.close()
    assert summary.gifted == 1, summary
    row = await db.fetchrow(
        "SELECT t.kind, t.points_delta, m.points_balance FROM transactions t "
        "JOIN protocol_membership m ON m.pass_id = t.pass_id "
        "WHERE t.pass_id = $1 AND t.kind = 'BIRTHDAY'",
        uuid.UUID(PASS_A),
    )
    assert row is not None and tuple(row) == ("BIRTHDAY", 25, 325)
    assert await db.fetchval("SELECT count(*) FROM birthday_logs") == 1


# --- 4. emails --------------------------------------------------------------------------------


async def test_the_users_upsert_keeps_working_for_a_case_variant(db: asyncpg.Connection) -> None:
    await db.execute(
        "INSERT INTO users (email, first_name) VALUES ('ALICE@example.com', 'Alicia') "
        "ON CONFLICT (email) DO UPDATE SET first_name = excluded.first_name"
    )
    rows = await db.fetch(
        "SELECT email, first_name FROM users WHERE lower(email) = 'alice@example.com'"
    )
    assert [tuple(r) for r in rows] == [("alice@example.com", "Alicia")]
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute("INSERT INTO users (email) VALUES ('Bob@Example.COM')")


async def test_case_duplicate_emails_stop_the_migration_before_anything_changes(
    bare_supabase: str,
) -> None:
    conn = await asyncpg.connect(bare_supabase)
    try:
        await conn.execute("INSERT INTO users (email) VALUES ('ALICE@example.com')")
        columns = "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'"
        before = await conn.fetchval(columns)
        result = _migrate(bare_supabase)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        (sentence,) = [line for line in result.stderr.splitlines() if line.startswith("loyaltyd:")]
        assert "alice@example.com (ALICE@example.com, Alice@Example.com)" in sentence
        assert "merge each group into one user" in sentence
        assert await conn.fetchval(columns) == before
        assert await conn.fetchval("SELECT to_regnamespace('loyaltyd')") is None
    finally:
        await conn.close()


async def test_email_has_one_unique_index_the_users_own(db: asyncpg.Connection) -> None:
    """The user's `email text UNIQUE` (users_email_key) is the rule's one index: loyaltyd
    adds no duplicate, and drops the one an earlier release added (053, 059)."""
    indexes = await db.fetch(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = 'public.users'::regclass AND i.indisunique AND i.indexprs IS NULL"
        "  AND i.indnkeyatts = 1 AND i.indkey[0] = (SELECT attnum FROM pg_attribute "
        "  WHERE attrelid = 'public.users'::regclass AND attname = 'email')"
    )
    assert [r["relname"] for r in indexes] == ["users_email_key"]


# --- 6. SLUMBER uses real history -------------------------------------------------------------


async def test_passes_that_predate_loyaltyd_keep_their_age_for_slumber(
    db: asyncpg.Connection,
) -> None:
    slumbering = await db.fetch(
        "SELECT pass_id FROM loyaltyd.push_campaign_audience($1, 'SLUMBER', p_inactive_days => 30)",
        uuid.UUID(PROGRAM_B),
    )
    assert [str(r["pass_id"]) for r in slumbering] == [PASS_B]
    age = await db.fetchval(
        "SELECT now() - created_at FROM passes_master WHERE id = $1", uuid.UUID(PASS_A)
    )
    assert age.days >= 59


# --- 7. daemon-owned columns ------------------------------------------------------------------


async def test_a_form_write_back_as_an_admin_renames_without_touching_the_daemons_columns(
    db: asyncpg.Connection,
) -> None:
    campaign = await write_as_daemon(
        db,
        "INSERT INTO push_campaigns (program_id, name, message_text, status, recipient_count, "
        "sent_count, started_at) VALUES ($1, 'Blast', 'Hi', 'PROCESSING', 3000, 2700, now()) "
        "RETURNING id",
        uuid.UUID(PROGRAM_A),
    )
    async with acting_as(db, "authenticated", ADMIN_A):
        await db.execute(
            "UPDATE push_campaigns SET name = 'Blast (renamed)', status = 'PROCESSING', "
            "sent_count = 2599, recipient_count = 3000 WHERE id = $1",
            campaign,
        )
        row = await db.fetchrow(
            "SELECT name, status, sent_count FROM push_campaigns WHERE id = $1", campaign
        )
    assert row is not None and tuple(row) == ("Blast (renamed)", "PROCESSING", 2700)


@pytest.mark.parametrize("role", ["anon", "authenticated", "service_role"])
async def test_no_data_api_role_can_write_as_the_daemon(db: asyncpg.Connection, role: str) -> None:
    """The Data API's roles cannot mark a transaction as the daemon's (sql/058), and what
    they write into loyaltyd's columns is refused (service_role bypasses RLS, not the rules)."""
    error = await _refused(db, role, "SELECT loyaltyd.writing_as_daemon()")
    assert "permission denied" in error
    if role == "anon":
        return
    campaign = await write_as_daemon(
        db,
        "INSERT INTO push_campaigns (program_id, name, message_text, status, recipient_count, "
        "sent_count, started_at) VALUES ($1, 'Blast', 'Hi', 'PROCESSING', 30, 27, now()) "
        "RETURNING id",
        uuid.UUID(PROGRAM_A),
    )
    error = await _refused(
        db, role, "UPDATE push_campaigns SET status = 'COMPLETED' WHERE id = $1", campaign
    )
    assert "status PROCESSING -> COMPLETED belongs to loyaltyd" in error


# --- running the daemon on it ------------------------------------------------------------------


async def test_the_daemon_syncs_a_transaction_an_admin_wrote(
    supabase: str, db: asyncpg.Connection, make_settings: Callable[..., Settings]
) -> None:
    async with fake_passkit() as fake:
        settings = settings_for(make_settings, fake.url, database_url=supabase)
        async with running_daemon(settings, supabase):
            await _as_session(db, "authenticated", ADMIN_A)
            await db.execute(
                "INSERT INTO transactions (pass_id, kind, notification_message) "
                "VALUES ($1, 'ADJUST', 'Thanks for coming')",
                uuid.UUID(PASS_A),
            )
            await _as_daemon(db)
            await wait_until(lambda: texts_sent(fake, "pk-alice-a") == ["Thanks for coming"], 10)


# --- loyaltyd's public ledger entry point, where the name is free ------------------------------


@pytest.fixture
async def without_their_rpc(bare_supabase: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(bare_supabase)
    await conn.execute(
        "DROP FUNCTION redeem_reward(uuid, int); "
        "DROP FUNCTION process_membership_transaction(uuid, int, text, text)"
    )
    result = _migrate(bare_supabase)
    assert result.returncode == 0, result.stderr
    yield conn
    await conn.close()


async def test_the_public_ledger_acts_only_for_admins_of_the_passs_program(
    without_their_rpc: asyncpg.Connection,
) -> None:
    db = without_their_rpc
    call = "SELECT process_membership_transaction($1, 5, 'EARN', NULL, NULL)"
    assert "permission denied" in await _refused(db, "anon", call, uuid.UUID(PASS_A))
    refused = await _refused(db, "authenticated", call, uuid.UUID(PASS_B))
    assert "not allowed to move points" in refused
    async with acting_as(db, "authenticated", ADMIN_A):
        own = json.loads(await db.fetchval(call, uuid.UUID(PASS_A)))
    assert own["new_balance"] == 305
    # the daemon's role (no Data API claims) may, as far as its grants go
    assert json.loads(await db.fetchval(call, uuid.UUID(PASS_B)))["new_balance"] == 55
    note = await db.fetchval(
        "SELECT obj_description('public.process_membership_transaction"
        "(uuid, integer, text, text, text)'::regprocedure, 'pg_proc')"
    )
    assert note.startswith("loyaltyd:")
