"""Forward-only migrations from `sql/`: applied in order, once each, under an advisory lock.

The files ship inside the package as `daemon.migrations` (see pyproject.toml) and are read
through importlib.resources, so an installed wheel migrates from any directory.

Each file runs in its own transaction together with the row that records it, so a failed
migration leaves nothing half-applied and is retried by the next `loyaltyd migrate`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

import asyncpg

from daemon.logs import get_logger

# Arbitrary constant shared by every loyaltyd process: "loyaltyd" in ASCII, as an int.
MIGRATION_LOCK_KEY = 0x6C6F79616C747964
SQL_DIR: Traversable = files("daemon.migrations")

_MIGRATION_NAME = re.compile(r"[0-9]{3}_[a-z0-9_]+\.sql")
log = get_logger(__name__)

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS loyaltyd_schema_migrations (
    version text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


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
    try:
        await conn.execute(_CREATE_LEDGER)
        rows = await conn.fetch("SELECT version, checksum FROM loyaltyd_schema_migrations")
        applied = {r["version"]: r["checksum"] for r in rows}
        done: list[str] = []
        for migration in migrations:
            if migration.version in applied:
                _warn_if_edited(migration, applied[migration.version])
                continue
            await _apply(conn, migration)
            done.append(migration.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def _apply(conn: asyncpg.Connection, migration: Migration) -> None:
    async with conn.transaction():
        await conn.execute(migration.sql)
        await conn.execute(
            "INSERT INTO loyaltyd_schema_migrations (version, checksum) VALUES ($1, $2)",
            migration.version,
            migration.checksum,
        )
    log.info("migration_applied", version=migration.version)


def _warn_if_edited(migration: Migration, recorded: str) -> None:
    if recorded != migration.checksum:
        # Forward-only: an applied file is never re-run; edits belong in a new migration.
        log.warning("migration_changed_after_apply", version=migration.version)


async def pending(conn: asyncpg.Connection, sql_dir: Traversable = SQL_DIR) -> list[str]:
    """Versions not yet applied (for `loyaltyd run` to refuse a stale schema)."""
    exists = await conn.fetchval("SELECT to_regclass('loyaltyd_schema_migrations') IS NOT NULL")
    applied: set[str] = set()
    if exists:
        rows = await conn.fetch("SELECT version FROM loyaltyd_schema_migrations")
        applied = {r["version"] for r in rows}
    return [m.version for m in load_migrations(sql_dir) if m.version not in applied]
