"""Forward-only migrations from `sql/`: applied in order, once each, under an advisory lock.

The files ship inside the package as `daemon.migrations` (see pyproject.toml) and are read
through importlib.resources, so an installed wheel migrates from any directory. What they
build today is one file, docs/schema.sql, written by `make schema` (daemon/store/schema.py).

Each file runs in one transaction together with the row that records it, so a failed
migration leaves the database exactly as it was before that file, and `MigrationFailed`
says which file and why (the CLI prints it and exits 2). What a migration finds and decides
(a user's function left alone, history rows marked) it says with RAISE NOTICE; every notice
is logged as `migration_notice`.

The bookkeeping table is `loyaltyd.schema_migrations`, out of reach of Supabase's Data API;
an older `public.loyaltyd_schema_migrations` is moved there first.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import asyncpg

from daemon.core.errors import ConfigError
from daemon.core.logs import get_logger

# Arbitrary constant shared by every loyaltyd process: "loyaltyd" in ASCII, as an int.
MIGRATION_LOCK_KEY = 0x6C6F79616C747964
SQL_DIR: Traversable = files("daemon.migrations")
LEDGER = "loyaltyd.schema_migrations"

_MIGRATION_NAME = re.compile(r"[0-9]{3}_[a-z0-9_]+\.sql")
log = get_logger(__name__)

# Files corrected after release so that a first adoption of a user's database is safe (003 no
# longer replaces a user's function, 006 marks campaigns that predate loyaltyd, 053 no longer
# duplicates a user's unique index on email). A database
# that ran the earlier text gets the same end state from the later migrations, so the earlier
# checksums are accepted without the "changed after apply" warning.
RESTATED: dict[str, frozenset[str]] = {
    "003_transactions_ledger": frozenset(
        {"12f944e78c63adf0435e3b6bbea5a94b5395b0445c5f695cce1ec11677ac0e4a"}
    ),
    "006_push_campaigns": frozenset(
        {"b20362e0f05bff87c5e3bccda19adb36e53cbaa6dfe204d566eb8705ba889e84"}
    ),
    # 053's check for a user's unique index on email never matched; 059 drops the duplicate
    # index the earlier text created.
    "053_user_emails_lowercase": frozenset(
        {"1fa13d2cb11930968e3b2507ed415d4175da73914e8e9880ab7abc2259c9810a"}
    ),
}

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS loyaltyd;
REVOKE ALL ON SCHEMA loyaltyd FROM PUBLIC;
DO $$
BEGIN
    IF to_regclass('public.loyaltyd_schema_migrations') IS NOT NULL
       AND to_regclass('loyaltyd.schema_migrations') IS NULL THEN
        ALTER TABLE public.loyaltyd_schema_migrations SET SCHEMA loyaltyd;
        ALTER TABLE loyaltyd.loyaltyd_schema_migrations RENAME TO schema_migrations;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS loyaltyd.schema_migrations (
    version text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON loyaltyd.schema_migrations FROM PUBLIC;
"""


class MigrationFailed(ConfigError):
    """A migration file failed; its transaction was rolled back, nothing of it applied."""


@dataclass(frozen=True)
class Migration:
    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(sql_dir: Traversable = SQL_DIR) -> list[Migration]:
    found = sorted(
        (f for f in sql_dir.iterdir() if _MIGRATION_NAME.fullmatch(f.name)), key=lambda f: f.name
    )
    if not found:
        raise FileNotFoundError(f"no migrations found in {sql_dir}")
    return [Migration(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8")) for f in found]


async def migrate(conn: asyncpg.Connection, sql_dir: Traversable = SQL_DIR) -> list[str]:
    """Apply pending migrations; return the versions applied by this call."""
    migrations = load_migrations(sql_dir)
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    conn.add_log_listener(_log_notice)
    try:
        # The ledger is created (or moved) with the first migration that runs, in its
        # transaction: a database whose first migration fails is left exactly as it was.
        applied = await _applied(conn)
        done: list[str] = []
        for migration in migrations:
            if migration.version in applied:
                _warn_if_edited(migration, applied[migration.version])
                continue
            await _apply(conn, migration)
            done.append(migration.version)
        return done
    finally:
        conn.remove_log_listener(_log_notice)
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def _apply(conn: asyncpg.Connection, migration: Migration) -> None:
    try:
        async with conn.transaction():
            await conn.execute(_BOOTSTRAP)
            await conn.execute(migration.sql)
            await conn.execute(
                f"INSERT INTO {LEDGER} (version, checksum) VALUES ($1, $2)",  # noqa: S608
                migration.version,
                migration.checksum,
            )
    except asyncpg.PostgresError as exc:
        raise MigrationFailed(_describe_failure(migration.version, exc)) from exc
    log.info("migration_applied", version=migration.version)


async def _applied(conn: asyncpg.Connection) -> dict[str, str]:
    """Version -> checksum of what ran, from the ledger where it is (or was) kept."""
    for ledger in (LEDGER, "public.loyaltyd_schema_migrations"):
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", ledger):
            rows = await conn.fetch(f"SELECT version, checksum FROM {ledger}")  # noqa: S608
            return {r["version"]: r["checksum"] for r in rows}
    return {}


def _describe_failure(version: str, exc: asyncpg.PostgresError) -> str:
    # str(exc) may append "HINT: …" on a line of its own; the sentence takes it inline.
    message = str(getattr(exc, "message", None) or exc).strip().rstrip(".")
    hint = getattr(exc, "hint", None)
    return (
        f"migration {version} failed and was rolled back, so the database is as it was "
        f"before it: {message}" + (f". {hint.strip().rstrip('.')}" if hint else "")
    )


def _warn_if_edited(migration: Migration, recorded: str) -> None:
    if recorded == migration.checksum or recorded in RESTATED.get(migration.version, ()):
        return
    # Forward-only: an applied file is never re-run; edits belong in a new migration.
    log.warning("migration_changed_after_apply", version=migration.version)


def _log_notice(_conn: Any, message: asyncpg.PostgresLogMessage) -> None:
    text = str(getattr(message, "message", message))
    # "… does not exist, skipping" from DROP … IF EXISTS says nothing a user needs.
    if not text.endswith(", skipping"):
        log.info("migration_notice", message=text)


async def pending(conn: asyncpg.Connection, sql_dir: Traversable = SQL_DIR) -> list[str]:
    """Versions not yet applied (for `loyaltyd run` to refuse a stale schema)."""
    applied = await _applied(conn)
    return [m.version for m in load_migrations(sql_dir) if m.version not in applied]
