"""Where the database is: DATABASE_URL, or the embedded Postgres; and the connection pool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from daemon.config import Settings
from daemon.dsn import redact
from daemon.embedded import DATABASE_NAME, EmbeddedPostgres
from daemon.logs import get_logger

log = get_logger(__name__)


@dataclass
class DatabaseTarget:
    dsn: str
    embedded: EmbeddedPostgres | None = None

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


async def resolve_database(settings: Settings, *, stop_on_exit: bool = True) -> DatabaseTarget:
    """DATABASE_URL when set; otherwise start the embedded server and its `loyaltyd` database."""
    if settings.database_url is not None:
        dsn = settings.database_url.get_secret_value()
        log.info("database_configured", dsn=redact(dsn))
        return DatabaseTarget(dsn)
    data_dir = settings.loyaltyd_data_dir.resolve() / "pgdata"
    embedded = EmbeddedPostgres(data_dir)
    admin_dsn = embedded.start(stop_on_exit=stop_on_exit)
    await ensure_database(admin_dsn, DATABASE_NAME)
    log.info("embedded_postgres_started", data_dir=str(data_dir), database=DATABASE_NAME)
    return DatabaseTarget(embedded.dsn(DATABASE_NAME), embedded)


async def ensure_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={"application_name": "loyaltyd"}, **kwargs)


async def create_pool(dsn: str, size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        server_settings={"application_name": "loyaltyd"},
        # Prepared statements stay cached: they break only behind a transaction pooler, which
        # loyaltyd cannot use anyway (LISTEN needs a session; see the README).
    )
    assert pool is not None
    return pool
