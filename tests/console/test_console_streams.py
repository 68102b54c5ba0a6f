"""Event streams are capped: a few per session (a fourth tab gets 204, which stops its
EventSource), about half the HTTP server's connections in all (503: try later), so live
pages never take the connections probes, scrapes and webhooks need."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from daemon.console.events import StreamLimits
from daemon.core.config import Settings
from tests.console.support import browser, console_app, console_settings, sign_in_as
from tests.factories import make_program
from tests.harness import wait_until


@pytest.fixture
async def program(pool: asyncpg.Pool) -> uuid.UUID:
    return await make_program(pool)


@pytest.fixture
async def app(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> AsyncIterator[web.Application]:
    settings = console_settings(make_settings, loyaltyd_http_max_connections=8)
    limits = StreamLimits(keepalive=0.1)
    async with console_app(settings, pool, streams=limits) as console:
        yield console


async def test_a_session_has_at_most_three_streams(
    app: web.Application, pool: asyncpg.Pool, program: uuid.UUID
) -> None:
    async with browser(app) as client:
        await sign_in_as(client, pool, "a@x.example", program)
        streams = [await client.get("/console/events") for _ in range(3)]
        assert [s.status for s in streams] == [200, 200, 200]
        fourth = await client.get("/console/events")
        assert fourth.status == 204
        streams[0].close()

        async def admitted() -> bool:
            answer: Any = await client.get("/console/events")
            if answer.status == 200:
                answer.close()
                return True
            return False

        await wait_until(admitted, timeout=3, interval=0.2)  # its place is freed
        for stream in streams[1:]:
            stream.close()


async def test_streams_in_all_take_at_most_half_the_connections(
    app: web.Application, pool: asyncpg.Pool, program: uuid.UUID
) -> None:
    async with browser(app) as a, browser(app) as b, browser(app) as c:
        await sign_in_as(a, pool, "a@x.example", program)
        await sign_in_as(b, pool, "b@x.example", program)
        await sign_in_as(c, pool, "c@x.example", program)
        open_ = [await a.get("/console/events") for _ in range(3)]
        open_.append(await b.get("/console/events"))
        assert [s.status for s in open_] == [200] * 4  # 8 connections: 4 streams
        refused = await c.get("/console/events")
        assert refused.status == 503 and refused.headers["Retry-After"]
        await asyncio.sleep(0)
        for stream in open_:
            stream.close()
