"""`loyaltyd console revoke` disables the account: the person's sessions, open event
streams, password, operator role and pending invitations all stop working, and only a new
invitation lets them in again (which ends every session they had before)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from aiohttp import web

from daemon.console.events import StreamLimits
from daemon.core.config import Settings
from daemon.store import console as store
from tests.console.support import (
    PASSWORD,
    Client,
    accept,
    browser,
    console_app,
    console_settings,
    csrf_of,
    invite,
    sign_in_as,
)
from tests.factories import make_program


@pytest.fixture
async def program(pool: asyncpg.Pool) -> uuid.UUID:
    return await make_program(pool)


@pytest.fixture
async def app(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> AsyncIterator[web.Application]:
    limits = StreamLimits(keepalive=0.2)
    async with console_app(console_settings(make_settings), pool, streams=limits) as console:
        yield console


async def _sign_in(client: Client, email: str, password: str = PASSWORD) -> int:
    form = await client.get("/console/signin")
    answer = await client.post(
        "/console/signin",
        data={"csrf": csrf_of(await form.text()), "email": email, "password": password},
        allow_redirects=False,
    )
    return answer.status


async def test_a_revoked_operator_can_neither_use_their_session_nor_sign_in_again(
    app: web.Application, pool: asyncpg.Pool, program: uuid.UUID
) -> None:
    async with browser(app) as client:
        await sign_in_as(client, pool, "ops@x.example", program, operator=True)
        assert (await client.get("/console/operations")).status == 200
        done = await store.revoke(pool, "ops@x.example", remove_access=True)
        assert done == store.Revoked(people=1, sessions=1, invitations=0, memberships=1)
        page = await client.get("/console/operations", allow_redirects=False)
        assert page.status == 303
        assert page.headers["Location"].startswith("/console/signin?next=")
    async with browser(app) as client:
        assert await _sign_in(client, "ops@x.example") == 401
        assert (await client.get("/console/operations", allow_redirects=False)).status == 303
    row = await pool.fetchrow(
        "SELECT password_hash, operator, disabled_at FROM loyaltyd.console_users"
    )
    assert row is not None
    assert (row["password_hash"], row["operator"]) == (None, False)
    assert row["disabled_at"] is not None


async def test_a_pending_invitation_no_longer_works_after_revoke(
    app: web.Application, pool: asyncpg.Pool, program: uuid.UUID
) -> None:
    token = await invite(pool, "a@x.example", program)
    done = await store.revoke(pool, "a@x.example", remove_access=False)
    assert done.invitations == 1
    async with browser(app) as client:
        page = await client.get(f"/console/invite/{token}")
        assert page.status == 404
        assert await pool.fetchval("SELECT count(*) FROM loyaltyd.console_sessions") == 0


async def test_a_disabled_account_has_no_session_even_one_left_open(
    app: web.Application, pool: asyncpg.Pool, program: uuid.UUID
) -> None:
    async with browser(app) as client:
        await sign_in_as(client, pool, "a@x.example", program)
        await pool.execute("UPDATE loyaltyd.console_users SET disabled_at = now()")
        page = await client.get("/console/campaigns", allow_redirects=False)
        assert page.status == 303


async def test_an_open_event_stream_ends_when_its_person_is_revoked(
    app: web.Application, pool: asyncpg.Pool, program: uuid.UUID
) -> None:
    async with browser(app) as client:
        await sign_in_as(client, pool, "a@x.example", program)
        stream = await client.get("/console/events")
        assert stream.status == 200
        await stream.content.readany()  # connected
        await store.revoke(pool, "a@x.example", remove_access=False)
        async with asyncio.timeout(3):
            while await stream.content.readany():
                pass  # keepalives until the server ends the stream
        assert stream.content.at_eof()


async def test_a_stream_stays_open_while_the_session_stands(
    app: web.Application, pool: asyncpg.Pool, program: uuid.UUID
) -> None:
    async with browser(app) as client:
        await sign_in_as(client, pool, "a@x.example", program)
        stream = await client.get("/console/events")
        seen = b""
        async with asyncio.timeout(3):
            while seen.count(b": keepalive") < 3:
                seen += await stream.content.readany()
        assert not stream.content.at_eof()
        stream.close()


async def test_a_new_invitation_lets_a_revoked_person_in_and_ends_their_other_sessions(
    app: web.Application, pool: asyncpg.Pool, program: uuid.UUID
) -> None:
    async with browser(app) as old, browser(app) as new:
        await sign_in_as(old, pool, "a@x.example", program)
        token = await invite(pool, "a@x.example", program)
        assert (await accept(new, token, password="another password 2")).status == 303
        assert (await new.get("/console/campaigns", allow_redirects=False)).status == 200
        assert (await old.get("/console/campaigns", allow_redirects=False)).status == 303
        await store.revoke(pool, "a@x.example", remove_access=False)
        token = await invite(pool, "a@x.example", program)
        assert (await accept(old, token)).status == 303
        assert (await old.get("/console/campaigns", allow_redirects=False)).status == 200
    async with browser(app) as client:
        assert await _sign_in(client, "a@x.example", "another password 2") == 401
        assert await _sign_in(client, "a@x.example") == 303


async def test_removing_access_takes_the_programs_to_come_too(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "INSERT INTO loyaltyd.console_users (email, every_program) "
        "VALUES ('local@x.example', 'admin')"
    )
    await store.revoke(pool, "local@x.example", remove_access=True)
    await make_program(pool)
    assert await pool.fetchval("SELECT count(*) FROM loyaltyd.console_memberships") == 0
