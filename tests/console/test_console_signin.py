"""Sign-in limits: every attempt is counted before its password is checked, in one
statement, so parallel guesses cannot slip past the limit; an unknown email costs a hash
check as a known one does; behind a trusted proxy the address is the hop the proxy added;
Supabase token sign-ins are limited per address as well."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient, TestServer

from daemon.console.auth import SIGNIN_COOKIE, Passwords
from daemon.core.config import Settings
from tests.console.support import (
    PASSWORD,
    Client,
    accept,
    browser,
    console_app,
    console_settings,
    csrf_of,
    invite,
)
from tests.factories import make_program


class CountedPasswords(Passwords):
    """The real hashing, counting the checks that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.checked: list[str | None] = []

    async def matches(self, stored: str | None, offered: str) -> bool:
        self.checked.append(stored)
        return await super().matches(stored, offered)


@pytest.fixture
def passwords() -> CountedPasswords:
    return CountedPasswords()


@pytest.fixture
async def app(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings], passwords: CountedPasswords
) -> AsyncIterator[web.Application]:
    settings = console_settings(make_settings, loyaltyd_console_trust_proxy=True)
    async with console_app(settings, pool, passwords=passwords) as console:
        yield console


@pytest.fixture
async def account(pool: asyncpg.Pool, app: web.Application) -> str:
    token = await invite(pool, "a@x.example", await make_program(pool))
    async with browser(app) as client:
        assert (await accept(client, token)).status == 303
    return "a@x.example"


async def _attempt(
    client: Client, email: str, password: str, headers: dict[str, str] | None = None
) -> int:
    form = await client.get("/console/signin")
    answer = await client.post(
        "/console/signin",
        data={"csrf": csrf_of(await form.text()), "email": email, "password": password},
        headers=headers,
        allow_redirects=False,
    )
    return answer.status


async def test_parallel_guesses_at_one_account_reach_the_hash_at_most_the_limit(
    app: web.Application, account: str, passwords: CountedPasswords
) -> None:
    passwords.checked.clear()
    client: Client = TestClient(TestServer(app), cookie_jar=DummyCookieJar())
    await client.start_server()
    try:
        form = await client.get("/console/signin")
        token = csrf_of(await form.text())
        cookie = {"Cookie": f"{SIGNIN_COOKIE}={token}"}

        async def guess(n: int) -> int:
            answer = await client.post(
                "/console/signin",
                data={"csrf": token, "email": account, "password": f"guess number {n}"},
                headers=cookie,
                allow_redirects=False,
            )
            return answer.status

        statuses = await asyncio.gather(*(guess(n) for n in range(40)))
    finally:
        await client.close()
    assert len(passwords.checked) <= 5
    assert statuses.count(401) == len(passwords.checked)
    assert statuses.count(429) == 40 - len(passwords.checked)


async def test_an_unknown_email_is_checked_against_a_hash_as_a_known_one_is(
    app: web.Application, account: str, passwords: CountedPasswords
) -> None:
    passwords.checked.clear()
    async with browser(app) as client:
        assert await _attempt(client, "nobody@x.example", "x" * 12) == 401
        assert await _attempt(client, account, "x" * 12) == 401
    assert len(passwords.checked) == 2


async def test_a_success_starts_the_accounts_count_again(
    app: web.Application, account: str
) -> None:
    async with browser(app) as client:
        for _ in range(2):
            for _ in range(4):
                assert await _attempt(client, account, "wrong password") == 401
            assert await _attempt(client, account, PASSWORD) == 303


async def test_behind_a_trusted_proxy_the_address_is_the_hop_the_proxy_added(
    app: web.Application,
) -> None:
    async with browser(app) as client:
        for n in range(20):
            spoofed = {"X-Forwarded-For": f"10.0.0.{n}, 192.0.2.7"}
            status = await _attempt(client, f"guess{n}@x.example", "x" * 12, spoofed)
            assert status == 401
        last = {"X-Forwarded-For": "10.0.0.99, 192.0.2.7"}
        assert await _attempt(client, "another@x.example", "x" * 12, last) == 429
        elsewhere = {"X-Forwarded-For": "192.0.2.7, 192.0.2.8"}
        assert await _attempt(client, "another@x.example", "x" * 12, elsewhere) == 401


async def test_supabase_sign_in_is_limited_per_address(app: web.Application) -> None:
    async def token_attempt(client: Client) -> Any:
        form = await client.get("/console/signin")
        return await client.post(
            "/console/supabase",
            data={"csrf": csrf_of(await form.text()), "access_token": "not.a.jwt"},
            allow_redirects=False,
        )

    async with browser(app) as client:
        for _ in range(20):
            assert (await token_attempt(client)).status == 401
        answer = await token_attempt(client)
        assert answer.status == 429
        assert "Too many sign-in attempts" in await answer.text()


async def test_the_window_ends(app: web.Application, pool: asyncpg.Pool, account: str) -> None:
    async with browser(app) as client:
        for _ in range(5):
            assert await _attempt(client, account, "wrong password") == 401
        assert await _attempt(client, account, PASSWORD) == 429
        await pool.execute(
            "UPDATE loyaltyd.console_signin_attempts "
            "SET window_start = window_start - interval '16 minutes'"
        )
        assert await _attempt(client, account, PASSWORD) == 303
