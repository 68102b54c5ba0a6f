"""Campaigns under faults, with real daemon processes: kill -9 mid-blast, two daemons on one
campaign, SIGTERM mid-blast. The fake PassKit's per-pass records are the truth."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

from daemon.testing.fakepasskit import FakePassKit, LatencyModel
from tests.campaign_support import bulk_audience, campaign, insert_campaign
from tests.factories import make_program
from tests.harness import DaemonProcess, daemon_env, fake_passkit, messages_by_pass, wait_until

pytestmark = pytest.mark.slow
RECIPIENTS = 20_000
CONCURRENCY = 50
SLOTS = 2 * CONCURRENCY  # LOYALTYD_WORKER_SLOTS default: rows a daemon holds claimed at once


def _daemon(dsn: str, fake: FakePassKit, log_path: Path) -> DaemonProcess:
    """`loyaltyd run` against the fake, sending up to CONCURRENCY requests at once."""
    return DaemonProcess(
        dsn, {**daemon_env(fake.url), "PASSKIT_MAX_CONCURRENCY": str(CONCURRENCY)}, log_path
    )


async def _blast(pool: asyncpg.Pool) -> tuple[uuid.UUID, set[str]]:
    program = await make_program(pool)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, RECIPIENTS)
    return program, {f"pk-{n}" for n in range(1, RECIPIENTS + 1)}


async def _completed(pool: asyncpg.Pool, campaign_id: object) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT status = 'COMPLETED' FROM push_campaigns WHERE id = $1", campaign_id
        )
    )


async def test_kill_9_mid_blast_then_restart_sends_everyone_once_but_the_in_flight(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    program, everyone = await _blast(pool)
    async with fake_passkit(latency=LatencyModel(median_ms=10, p99_ms=40)) as fake:
        first = _daemon(database_url, fake, tmp_path / "first.log")
        try:
            await asyncio.sleep(2)  # listening
            campaign_id = await insert_campaign(pool, program_id=program)
            await wait_until(lambda: _at_least(fake, 5_000), timeout=30)
            first.kill9()
        finally:
            first.stop_now()
        assert not await _completed(pool, campaign_id), "the kill should come mid-blast"
        second = _daemon(database_url, fake, tmp_path / "second.log")
        try:
            await wait_until(lambda: _completed(pool, campaign_id), timeout=60)
            second.terminate()
            assert await second.wait(15) == 0
        finally:
            second.stop_now()
    sent = messages_by_pass(fake)
    assert set(sent) == everyone, "every recipient got the message"
    twice = [pk for pk, n in sent.items() if n > 1]
    # Only rows claimed by the killed daemon (at most its slots) can have gone out twice.
    assert max(sent.values()) <= 2 and len(twice) <= SLOTS, len(twice)
    row = await campaign(pool, campaign_id)
    assert (
        row["recipient_count"],
        row["sent_count"],
        row["failed_count"],
        row["skipped_count"],
    ) == (RECIPIENTS, len(sent), 0, 0)
    assert sum(sent.values()) == RECIPIENTS + len(twice)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM notification_logs WHERE campaign_id = $1", campaign_id
        )
        == 1
    )


async def test_two_daemons_share_one_blast_and_never_message_anyone_twice(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    program, everyone = await _blast(pool)
    async with fake_passkit(latency=LatencyModel(median_ms=10, p99_ms=40)) as fake:
        daemons = [_daemon(database_url, fake, tmp_path / f"d{i}.log") for i in range(2)]
        try:
            await asyncio.sleep(2)  # both listening
            campaign_id = await insert_campaign(pool, program_id=program)
            await wait_until(lambda: _completed(pool, campaign_id), timeout=60)
            for d in daemons:
                d.terminate()
            codes = [await d.wait(15) for d in daemons]
        finally:
            for d in daemons:
                d.stop_now()
    assert codes == [0, 0]
    sent = messages_by_pass(fake)
    assert set(sent) == everyone and max(sent.values()) == 1
    shares = Counter(
        dict(
            await pool.fetch(
                "SELECT finished_by, count(*) FROM loyaltyd.campaign_deliveries WHERE "
                "campaign_id = $1 "
                "GROUP BY finished_by",
                campaign_id,
            )
        )
    )
    assert len(shares) == 2 and min(shares.values()) > RECIPIENTS // 10, shares
    row = await campaign(pool, campaign_id)
    assert (row["sent_count"], row["failed_count"], row["skipped_count"]) == (RECIPIENTS, 0, 0)
    assert await pool.fetchval("SELECT count(*) FROM notification_logs") == 1


async def test_sigterm_mid_blast_exits_0_and_gives_the_claimed_recipients_back(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    program = await make_program(pool)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, 2_000)
    async with fake_passkit(latency=LatencyModel(median_ms=300)) as fake:
        proc = _daemon(database_url, fake, tmp_path / "d.log")
        try:
            await asyncio.sleep(2)
            campaign_id = await insert_campaign(pool, program_id=program)
            await wait_until(lambda: _at_least(fake, 100), timeout=30)
            code, elapsed = await proc.terminate_timed(15)
        finally:
            proc.stop_now()
    assert code == 0 and elapsed < 5 + 2  # grace 5 s (harness), plus exit slack
    states = dict(
        await pool.fetch(
            "SELECT state, count(*) FROM loyaltyd.campaign_deliveries WHERE campaign_id = $1 "
            "GROUP BY state",
            campaign_id,
        )
    )
    assert "claimed" not in states and states["pending"] > 0
    row = await campaign(pool, campaign_id)
    assert row["sent_count"] == states.get("sent", 0) == len(messages_by_pass(fake))


async def _at_least(fake: FakePassKit, count: int) -> bool:
    return fake.count() >= count
