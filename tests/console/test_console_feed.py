"""The live feed: one read a second at most, whoever watches; each subscriber hears only of
its own programs' campaigns, and never misses the last change."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Callable
from datetime import timedelta

import asyncpg

from daemon.console.feed import Feed
from daemon.core.config import Settings
from tests.campaign_support import stage_campaign, write_as_daemon
from tests.console.support import browser, console_app, console_settings, sign_in_as
from tests.factories import make_program


async def _count(pool: asyncpg.Pool, campaign: uuid.UUID, sent: int) -> None:
    await write_as_daemon(
        pool, "UPDATE push_campaigns SET sent_count = $2 WHERE id = $1", campaign, sent
    )


async def test_each_subscriber_hears_of_its_own_programs_only(pool: asyncpg.Pool) -> None:
    a, b = await make_program(pool), await make_program(pool)
    ca = await stage_campaign(pool, program_id=a, status="PROCESSING", recipient_count=10)
    cb = await stage_campaign(pool, program_id=b, status="PROCESSING", recipient_count=10)
    feed = Feed(pool)
    mine, theirs = feed.subscribe([a]), feed.subscribe([b])
    await feed._read_once()
    mine.take(), theirs.take()
    await _count(pool, cb, 4)
    await feed._read_once()
    assert (mine.take(), theirs.take()) == ([], ["campaign-" + str(cb)])
    await _count(pool, ca, 7)
    await feed._read_once()
    assert mine.take() == ["campaign-" + str(ca)]
    progress = feed.known(ca)
    assert progress is not None and progress.sent == 7


async def test_one_read_a_second_however_many_watch(pool: asyncpg.Pool) -> None:
    program = await make_program(pool)
    campaign = await stage_campaign(
        pool, program_id=program, status="PROCESSING", recipient_count=10
    )
    feed = Feed(pool)
    for _ in range(50):
        feed.subscribe([program])
    stopping = asyncio.Event()
    task = asyncio.create_task(feed.run(stopping))
    for sent in range(1, 30):
        await _count(pool, campaign, sent)
        feed.rung.set()  # a doorbell ringing far more often than once a second
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.2)  # the trailing edge: the last change is read within a second
    stopping.set()
    await task
    assert 3 <= feed.reads <= 5  # about 4 s of watching
    progress = feed.known(campaign)
    assert progress is not None and progress.sent == 29


async def test_the_stream_sends_changed_events_of_the_viewers_programs(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> None:
    a, b = await make_program(pool), await make_program(pool)
    ca = await stage_campaign(pool, program_id=a, status="PROCESSING", recipient_count=10)
    cb = await stage_campaign(pool, program_id=b, status="PROCESSING", recipient_count=10)
    feed = Feed(pool, read_every=0.2)
    stopping = asyncio.Event()
    task = asyncio.create_task(feed.run(stopping))
    try:
        async with (
            console_app(console_settings(make_settings), pool, feed) as app,
            browser(app) as c,
        ):
            await sign_in_as(c, pool, "a@a.example", a)
            stream = await c.get("/console/events")
            assert stream.headers["Content-Type"] == "text/event-stream"
            await asyncio.sleep(0.5)
            await _count(pool, cb, 5)
            await _count(pool, ca, 5)
            seen = b""
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3):
                    while f"campaign-{ca}".encode() not in seen:
                        seen += await stream.content.readany()
            stream.close()
    finally:
        stopping.set()
        await task
    assert f"data: campaign-{ca}".encode() in seen
    assert str(cb).encode() not in seen


async def test_the_feed_keeps_a_campaign_only_while_its_program_is_watched(
    pool: asyncpg.Pool,
) -> None:
    a, b = await make_program(pool), await make_program(pool)
    ca = await stage_campaign(pool, program_id=a, status="PROCESSING", recipient_count=10)
    cb = await stage_campaign(pool, program_id=b, status="PROCESSING", recipient_count=10)
    feed = Feed(pool)
    watching_a, watching_b = feed.subscribe([a]), feed.subscribe([b])
    await feed._read_once()
    assert feed.known(ca) is not None and feed.known(cb) is not None
    feed.unsubscribe(watching_a)
    assert feed.known(ca) is None and feed.known(cb) is not None
    feed.unsubscribe(watching_b)
    assert feed.known(cb) is None


async def test_a_page_never_replaces_a_newer_read_with_an_older_one(pool: asyncpg.Pool) -> None:
    program = await make_program(pool)
    campaign = await stage_campaign(
        pool, program_id=program, status="PROCESSING", recipient_count=10
    )
    feed = Feed(pool)
    feed.subscribe([program])
    await feed._read_once()
    older = feed.known(campaign)
    assert older is not None
    await _count(pool, campaign, 5)
    await feed._read_once()
    newer = feed.known(campaign)
    assert newer is not None and newer.sent == 5
    feed.remember(older)
    assert feed.known(campaign) == newer
    fresher = dataclasses.replace(newer, sent=6, updated_at=newer.updated_at + timedelta(seconds=1))
    feed.remember(fresher)
    assert feed.known(campaign) == fresher
