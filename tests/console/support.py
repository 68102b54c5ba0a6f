"""The console under test: its sub-application mounted at /console/ under the daemon's own
HTTP application (its limits apply), as the HTTP server mounts it, a client per person (each
its own cookie jar), and people signed in the way they are in production (an invitation, a
password)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from daemon.console.app import build_console
from daemon.console.auth import INVITE_HOURS, digest, new_token
from daemon.console.feed import Feed
from daemon.core.config import Settings
from daemon.core.metrics import Metrics
from daemon.ops.http import HttpApi
from daemon.store import console as store
from daemon.store.listener import Listener

SECRET = "console-secret-0123456789abcdefghijklmnop"
PASSWORD = "correct horse battery"
Client = TestClient[web.Request, web.Application]
# The daemon's `stopping` event, on the application console_app yields (a test may stop it).
STOPPING_KEY = web.AppKey("stopping", asyncio.Event)
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def console_settings(make_settings: Any, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "loyaltyd_console": True,
        "loyaltyd_console_secret": SECRET,
        "loyaltyd_http_port": 8080,
        **extra,
    }
    settings: Settings = make_settings(**values)
    return settings


@dataclass
class _Running:
    settings: Settings
    pool: asyncpg.Pool
    metrics: Metrics
    stopping: asyncio.Event
    listener: Listener | None = None


@asynccontextmanager
async def console_app(
    settings: Settings, pool: asyncpg.Pool, feed: Feed | None = None, **extra: Any
) -> AsyncIterator[web.Application]:
    """`extra`: build_console's keyword arguments (stream limits, a clock…)."""
    stopping = asyncio.Event()
    # The daemon's own HTTP application, with its limits (its body limit among them).
    parent = HttpApi(_Running(settings, pool, Metrics(), stopping)).app()
    parent.add_subapp(
        "/console/", build_console(settings, pool, feed or Feed(pool), stopping=stopping, **extra)
    )
    parent[STOPPING_KEY] = stopping
    try:
        yield parent
    finally:
        stopping.set()


@asynccontextmanager
async def browser(app: web.Application) -> AsyncIterator[Client]:
    """One person's browser: its own cookies."""
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def invite(
    pool: asyncpg.Pool,
    email: str,
    program: uuid.UUID | None,
    role: str = "admin",
    *,
    operator: bool = False,
) -> str:
    """An invitation as `loyaltyd console invite` makes it; its token."""
    person = await store.add_person(
        pool, email, operator=operator, program=(program, role) if program else None
    )
    token = new_token()
    await store.create_invite(pool, digest(token), person.id, INVITE_HOURS)
    return token


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "no CSRF token in the page"
    return found.group(1)


async def accept(client: Client, token: str, password: str = PASSWORD) -> Any:
    page = await client.get(f"/console/invite/{token}")
    assert page.status == 200, await page.text()
    return await client.post(
        f"/console/invite/{token}",
        data={"csrf": csrf_of(await page.text()), "password": password, "confirm": password},
        allow_redirects=False,
    )


async def sign_in_as(
    client: Client,
    pool: asyncpg.Pool,
    email: str,
    program: uuid.UUID | None,
    role: str = "admin",
    *,
    operator: bool = False,
) -> str:
    """Invite, accept, signed in; the session's CSRF token (read from a page)."""
    token = await invite(pool, email, program, role, operator=operator)
    answer = await accept(client, token)
    assert answer.status == 303, await answer.text()
    page = await client.get("/console/campaigns")
    assert page.status == 200, await page.text()
    return csrf_of(await page.text())
