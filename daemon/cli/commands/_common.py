"""What several commands share: reaching the database, migrated or checked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from daemon.core.config import Settings
from daemon.core.errors import ConfigError
from daemon.store.migrate import migrate, pending
from daemon.store.pool import (
    DatabaseTarget,
    check_session_pooling,
    connect,
    create_pool,
    resolve_database,
)


@asynccontextmanager
async def database(settings: Settings, *, auto_migrate: bool) -> AsyncIterator[DatabaseTarget]:
    """The database target, migrated first (`auto_migrate`) or checked to be up to date."""
    target = await resolve_database(settings)
    try:
        await check_session_pooling(target.dsn, target.source)
        conn = await connect(target.dsn, source=target.source)
        try:
            if auto_migrate:
                await migrate(conn)
            else:
                missing = await pending(conn)
                if missing:
                    raise ConfigError(
                        f"database schema is behind ({', '.join(missing)}): run `loyaltyd migrate`"
                    )
        finally:
            await conn.close()
        yield target
    finally:
        target.close()


@asynccontextmanager
async def pool(settings: Settings, *, auto_migrate: bool = True) -> AsyncIterator[asyncpg.Pool]:
    async with database(settings, auto_migrate=auto_migrate) as target:
        p = await create_pool(target.dsn, settings.loyaltyd_pool_size, source=target.source)
        try:
            yield p
        finally:
            await p.close()
