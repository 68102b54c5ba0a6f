"""Where the database is: DATABASE_URL, or the embedded Postgres; connections and the pool.

Every way a user can get DATABASE_URL wrong (not a URL, nothing listening, unknown database,
wrong password, TLS required, a transaction-mode pooler) becomes one `DatabaseUnusable`
sentence that names the variable and what to check, never a driver traceback.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from daemon.core.config import Settings
from daemon.core.dsn import redact
from daemon.core.errors import DatabaseUnusable
from daemon.core.logs import get_logger
from daemon.store.embedded import DATABASE_NAME, EmbeddedPostgres

log = get_logger(__name__)
# What the layers above hold without importing the driver themselves.
Pool = asyncpg.Pool
# For pg_stat_activity only: the rules of push_campaigns recognise the daemon by a mark in each
# writing transaction (sql/058), since a session pooler loses this name on the pool's RESET ALL.
SERVER_SETTINGS = {"application_name": "loyaltyd"}
CONNECT_TIMEOUT_SECONDS = 10.0
# How long the LISTEN/NOTIFY self-test waits for its own notification.
SELF_TEST_SECONDS = 5.0


@dataclass
class DatabaseTarget:
    dsn: str
    # Where the DSN came from, for error messages: the variable, or the embedded server.
    source: str = "DATABASE_URL"
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
    embedded = EmbeddedPostgres(settings.loyaltyd_data_dir.resolve())
    admin_dsn = embedded.start(stop_on_exit=stop_on_exit)
    try:
        await ensure_database(admin_dsn, DATABASE_NAME)
    except BaseException:
        embedded.stop()
        raise
    log.info("embedded_postgres_started", data_dir=str(embedded.pgdata), database=DATABASE_NAME)
    return DatabaseTarget(embedded.dsn(DATABASE_NAME), "the embedded Postgres", embedded)


async def ensure_database(admin_dsn: str, name: str) -> None:
    conn = await connect(admin_dsn, source="the embedded Postgres")
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def connect(dsn: str, *, source: str = "DATABASE_URL", **kwargs: Any) -> asyncpg.Connection:
    """One connection; a failure a user can fix raises DatabaseUnusable."""
    kwargs.setdefault("timeout", CONNECT_TIMEOUT_SECONDS)
    try:
        return await asyncpg.connect(dsn, server_settings=SERVER_SETTINGS, **kwargs)
    except Exception as exc:
        raise DatabaseUnusable(describe_connect_error(exc, dsn, source)) from exc


async def create_pool(dsn: str, size: int, *, source: str = "DATABASE_URL") -> asyncpg.Pool:
    """The pool. Prepared statements stay cached: they break only behind a transaction
    pooler, which `check_session_pooling` refuses at start-up (LISTEN needs a session)."""
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=size,
            server_settings=SERVER_SETTINGS,
            timeout=CONNECT_TIMEOUT_SECONDS,
        )
    except Exception as exc:
        raise DatabaseUnusable(describe_connect_error(exc, dsn, source)) from exc
    assert pool is not None
    return pool


async def check_session_pooling(dsn: str, source: str = "DATABASE_URL") -> None:
    """Refuse a transaction-mode pooler (PgBouncer `pool_mode = transaction`, Supabase's port
    6543): behind it each transaction may run on another server session, so prepared
    statements collide or vanish, session advisory locks leak, and LISTEN hears nothing.

    The self-test follows the daemon's own path: a dedicated connection (as the listener
    makes it) LISTENs, two other connections (as the pool's) run a prepared statement each,
    and one of them NOTIFYs. With one server session per connection the notification
    arrives at once; through a transaction pooler it lands on whichever server session the
    NOTIFY borrowed, or the statements clash.
    """
    marker = uuid.uuid4().hex
    conns: list[asyncpg.Connection] = []
    try:
        for _ in range(3):
            conns.append(await connect(dsn, source=source))
        listener, first, second = conns
        same_sessions = await _prepared_statements_hold(first, second, marker)
        if same_sessions:
            same_sessions = await _hears(listener, second, marker)
    finally:
        for conn in conns:
            conn.terminate()
    if not same_sessions:
        raise DatabaseUnusable(
            f"{source} points at a transaction-mode pooler (Supabase's port 6543, or PgBouncer "
            "with pool_mode = transaction), which loses prepared statements and LISTEN: use "
            "the session pooler (port 5432) or the direct connection instead"
        )


async def _prepared_statements_hold(
    first: asyncpg.Connection, second: asyncpg.Connection, marker: str
) -> bool:
    try:
        for conn in (first, second, first, second):
            statement = await conn.prepare("SELECT $1::text")
            if await statement.fetchval(marker) != marker:
                return False
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # DuplicatePreparedStatementError / InvalidSQLStatementNameError: another client's
        # statements showed through a shared server session.
        log.debug("session_check_failed", error=str(exc))
        return False
    return True


async def _hears(listener: asyncpg.Connection, sender: asyncpg.Connection, marker: str) -> bool:
    channel = f"loyaltyd_self_test_{marker[:12]}"
    heard = asyncio.Event()

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload == marker:
            heard.set()

    await listener.add_listener(channel, on_notify)
    await sender.execute("SELECT pg_notify($1, $2)", channel, marker)
    try:
        await asyncio.wait_for(heard.wait(), SELF_TEST_SECONDS)
    except TimeoutError:
        return False
    return True


def describe_connect_error(exc: BaseException, dsn: str, source: str = "DATABASE_URL") -> str:
    """One sentence: what went wrong with `source`, and what to check."""
    where = f"{source} ({redact(dsn)})" if source == "DATABASE_URL" else source
    reason, check = _reason(exc)
    return f"cannot use {where}: {reason}; {check}."


def _reason(exc: BaseException) -> tuple[str, str]:  # noqa: C901 - one branch per cause
    text = str(exc).strip().rstrip(".") or type(exc).__name__
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return text, "check the user name and password in it"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return text, "check the database name at the end of it, or create that database"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        if "no encryption" in text or "SSL" in text:
            return text, "the server requires TLS: add ?sslmode=require to it"
        return text, "check the user name, and that the server's pg_hba.conf admits this host"
    if isinstance(exc, asyncpg.ClientConfigurationError | ValueError | OverflowError):
        return text, "it must be a URL like postgresql://user:password@host:5432/database"
    if isinstance(exc, socket.gaierror):
        return f"host name not found ({text})", "check the host name in it"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused", "check the host and port, and that Postgres is running"
    if isinstance(exc, TimeoutError):
        return "no answer in time", "check the host and port, and any firewall in between"
    if isinstance(exc, ConnectionError) and "SSL" in text:
        return text, "the server does not offer TLS: remove sslmode=require from it"
    if isinstance(exc, OSError):
        return text, "check the host and port, and that Postgres is running"
    if isinstance(exc, asyncpg.TooManyConnectionsError):
        return text, "lower LOYALTYD_POOL_SIZE or raise the server's max_connections"
    if isinstance(exc, asyncpg.PostgresError):
        return text, "check the user's privileges on that database"
    return text, "check it"


@asynccontextmanager
async def session(target: DatabaseTarget) -> AsyncIterator[asyncpg.Connection]:
    """One connection to the target, once it is known to keep sessions (a transaction-mode
    pooler cannot hold LISTEN, advisory locks or prepared statements): what migrations and
    the commands' checks run on."""
    await check_session_pooling(target.dsn, target.source)
    conn = await connect(target.dsn, source=target.source)
    try:
        yield conn
    finally:
        await conn.close()
