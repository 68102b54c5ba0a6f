"""What several commands share: reaching the database, migrated or checked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from daemon.core.config import Settings
from daemon.core.errors import ConfigError
from daemon.store.migrate import migrate, pending
from daemon.store.pool import DatabaseTarget, Pool, create_pool, resolve_database, session


@asynccontextmanager
async def database(settings: Settings, *, auto_migrate: bool) -> AsyncIterator[DatabaseTarget]:
    """The database target, migrated first (`auto_migrate`) or checked to be up to date."""
    target = await resolve_database(settings)
    try:
        async with session(target) as conn:
            if auto_migrate:
                await migrate(conn)
            else:
                missing = await pending(conn)
                if missing:
                    raise ConfigError(
                        f"database schema is behind ({', '.join(missing)}): run `loyaltyd migrate`"
                    )
        yield target
    finally:
        target.close()


@asynccontextmanager
async def pool(settings: Settings, *, auto_migrate: bool = True) -> AsyncIterator[Pool]:
    async with database(settings, auto_migrate=auto_migrate) as target:
        p = await create_pool(target.dsn, settings.loyaltyd_pool_size, source=target.source)
        try:
            yield p
        finally:
            await p.close()
