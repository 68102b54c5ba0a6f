"""A live page's event stream ends by itself: when the daemon stops (at once: a stop never
waits for a stream, nor for its next keepalive) and after its lifetime (the browser opens a
new one). Either way it ends cleanly (the response is finished, not cut), the feed forgets
it and its place under the caps is free again."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import asyncpg
import pytest

from daemon.console.events import StreamLimits
from daemon.console.feed import Feed
from daemon.core.config import Settings
from daemon.ops.http import SHUTDOWN_SECONDS
from tests.console.support import (
    PASSWORD,
    SECRET,
    STOPPING_KEY,
    browser,
    console_app,
    console_settings,
    csrf_of,
    invite,
    sign_in_as,
)
from tests.factories import make_program
from tests.harness import fake_passkit, running_daemon, settings_for, wait_until
from tests.ops.test_http_daemon import free_port

# A keepalive far longer than any test: a stream that ends, ends for its own reason.
LONG = 60.0
LIFETIME = 0.5


@pytest.fixture
async def program(pool: asyncpg.Pool) -> uuid.UUID:
    return await make_program(pool)


@pytest.fixture
def feed(pool: asyncpg.Pool) -> Feed:
    return Feed(pool)


async def _to_the_end(stream: Any, seconds: float) -> bytes:
    """Everything a stream says until it ends (the test fails when it does not end)."""
    async with asyncio.timeout(seconds):
        body: bytes = await stream.content.read()
    assert stream.content.at_eof()
    return body


def _clean(body: bytes) -> None:
    """A whole stream: its preamble, then whole messages only."""
    assert body.startswith(b"retry: 2000\n: connected\n\n"), body
    assert body.endswith(b"\n\n"), body


async def test_a_stream_ends_after_its_lifetime_and_frees_its_place(
    pool: asyncpg.Pool,
    make_settings: Callable[..., Settings],
    program: uuid.UUID,
    feed: Feed,
) -> None:
    limits = StreamLimits(keepalive=LONG, lifetime=LIFETIME)
    async with (
        console_app(console_settings(make_settings), pool, feed, streams=limits) as app,
        browser(app) as client,
    ):
        await sign_in_as(client, pool, "a@x.example", program)
        opened = time.monotonic()
        streams = [await client.get("/console/events") for _ in range(limits.per_session)]
        assert [s.status for s in streams] == [200] * limits.per_session
        assert (await client.get("/console/events")).status == 204  # the session's cap
        begun = [await s.content.readuntil(b": connected\n\n") for s in streams]
        assert feed.watchers == limits.per_session
        bodies = [b + await _to_the_end(s, 10) for b, s in zip(begun, streams, strict=True)]
        lasted = time.monotonic() - opened
        for body in bodies:
            _clean(body)
        assert LIFETIME <= lasted < LONG / 2
        assert feed.watchers == 0

        async def admitted() -> bool:  # the browser's next stream finds its place free
            answer: Any = await client.get("/console/events")
            if answer.status == 200:
                _clean(await _to_the_end(answer, 10))
                return True
            return False

        await wait_until(admitted, timeout=5, interval=0.1)


async def test_a_stream_ends_at_once_when_the_daemon_stops(
    pool: asyncpg.Pool,
    make_settings: Callable[..., Settings],
    program: uuid.UUID,
    feed: Feed,
) -> None:
    limits = StreamLimits(keepalive=LONG, lifetime=LONG)
    async with (
        console_app(console_settings(make_settings), pool, feed, streams=limits) as app,
        browser(app) as client,
    ):
        await sign_in_as(client, pool, "a@x.example", program)
        stream = await client.get("/console/events")
        assert stream.status == 200
        assert await stream.content.readuntil(b": connected\n\n")
        assert feed.watchers == 1
        stopped = time.monotonic()
        app[STOPPING_KEY].set()
        rest = await _to_the_end(stream, 5)
        assert time.monotonic() - stopped < 2
        assert rest in (b"", b": keepalive\n\n")
        assert feed.watchers == 0


@pytest.fixture
async def signed_in(pool: asyncpg.Pool, program: uuid.UUID) -> AsyncIterator[Callable[[str], Any]]:
    """A browser of one person against a real daemon's HTTP server: signs in at `base`."""
    jar = aiohttp.CookieJar(unsafe=True)  # the daemon is at 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar) as http:

        async def sign_in(base: str) -> aiohttp.ClientSession:
            token = await invite(pool, "a@x.example", program)
            async with http.get(f"{base}/invite/{token}") as page:
                assert page.status == 200, await page.text()
                csrf = csrf_of(await page.text())
            async with http.post(
                f"{base}/invite/{token}",
                data={"csrf": csrf, "password": PASSWORD, "confirm": PASSWORD},
                allow_redirects=False,
            ) as answer:
                assert answer.status == 303, await answer.text()
            return http

        yield sign_in


async def test_a_running_daemon_stops_without_waiting_for_its_streams(
    database_url: str,
    make_settings: Callable[..., Settings],
    signed_in: Callable[[str], Any],
) -> None:
    """The whole daemon, stopped while a page watches: the stream is finished cleanly right
    away, long before the HTTP server's shutdown timeout would cut it."""
    async with fake_passkit() as fake:
        settings = settings_for(
            make_settings,
            fake.url,
            loyaltyd_http_port=free_port(),
            loyaltyd_console=True,
            loyaltyd_console_secret=SECRET,
        )
        base = f"http://127.0.0.1:{settings.loyaltyd_http_port}/console"
        async with AsyncExitStack() as daemon:
            await daemon.enter_async_context(running_daemon(settings, database_url))
            http: aiohttp.ClientSession = await signed_in(base)
            stream = await http.get(f"{base}/events")
            assert stream.status == 200
            assert stream.headers["Content-Type"] == "text/event-stream"
            assert await stream.content.readuntil(b": connected\n\n")
            ended = asyncio.create_task(_to_the_end(stream, SHUTDOWN_SECONDS * 4))
            await asyncio.sleep(0.2)
            assert not ended.done()  # the stream stays open while the daemon runs
            stopped = time.monotonic()
            await daemon.aclose()  # the daemon stops (its `stopping` set, as a signal does)
            took = time.monotonic() - stopped
            rest = await ended
            stream.release()
    assert rest in (b"", b": keepalive\n\n")
    assert took < SHUTDOWN_SECONDS, f"the stop waited {took:.1f} s"
