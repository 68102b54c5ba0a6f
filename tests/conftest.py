"""Real-Postgres fixtures shared by every database test.

The server is `LOYALTYD_TEST_DATABASE_URL` (an admin DSN that may CREATE DATABASE) when set,
otherwise an embedded Postgres started for this run. The schema is built once from `sql/`
into a template database; each test gets its own copy, so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from daemon.core.config import Settings
from daemon.store.embedded import EmbeddedPostgres
from daemon.store.migrate import migrate
from daemon.testing.databases import with_database
from tests.passkit_fixtures import settings_of

TEST_DSN_ENV = "LOYALTYD_TEST_DATABASE_URL"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def structlog_defaults() -> Iterator[None]:
    """Each test starts from structlog's defaults: a test (or a command run in-process) that
    configures logging at INFO must not hide the DEBUG events the next one captures."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """An admin DSN of the server the tests use."""
    configured = os.environ.get(TEST_DSN_ENV)
    if configured:
        yield configured
        return
    # Removed afterwards: a run leaves no data behind.
    embedded = EmbeddedPostgres(
        Path(tempfile.mkdtemp(prefix="loyaltyd-test-pg-")), remove_on_stop=True
    )
    dsn = embedded.start(stop_on_exit=True)
    yield dsn
    embedded.stop()


async def _create_database(admin_dsn: str, name: str, template: str | None = None) -> str:
    conn = await asyncpg.connect(admin_dsn)
    try:
        clause = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await conn.close()
    return with_database(admin_dsn, name)


async def _drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _build_template(admin_dsn: str, name: str) -> None:
    await _drop_database(admin_dsn, name)
    dsn = await _create_database(admin_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_database(pg_admin_dsn: str) -> Iterator[str]:
    """A database migrated from `sql/` once per run, copied for each test."""
    name = f"loyaltyd_tpl_{os.getpid()}"
    asyncio.run(_build_template(pg_admin_dsn, name))
    yield name
    asyncio.run(_drop_database(pg_admin_dsn, name))


@pytest.fixture
async def fresh_database(pg_admin_dsn: str) -> AsyncIterator[Callable[..., Any]]:
    """Factory for extra databases (empty, or copied from a template), dropped afterwards."""
    created: list[str] = []

    async def make(template: str | None = None) -> str:
        name = f"loyaltyd_t_{uuid.uuid4().hex[:16]}"
        created.append(name)
        return await _create_database(pg_admin_dsn, name, template)

    yield make
    for name in created:
        await _drop_database(pg_admin_dsn, name)


@pytest.fixture
async def database_url(fresh_database: Callable[..., Any], template_database: str) -> str:
    """DSN of a migrated database of this test's own."""
    dsn: str = await fresh_database(template_database)
    return dsn


# The fixtures' connections write as an admin's SQL session does: the rules of push_campaigns
# apply to them. A test that must write loyaltyd's own columns says so with
# tests.campaign_support.write_as_daemon, as the daemon's statements do (sql/058).


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=20)
    assert p is not None
    yield p
    await p.close()


@pytest.fixture
def make_settings(database_url: str) -> Callable[..., Settings]:
    """Settings for this test's database, isolated from the environment and any `.env`."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "passkit_api_key": "",
            "passkit_api_secret": "",
            "loyaltyd_http_port": None,
            # Mock mode answers at once and without a limit here, unless a test paces it.
            "passkit_mock_latency_ms": 0,
            "passkit_rate_limit": 0,
        }
        values.update(overrides)
        return settings_of(values)

    return build
