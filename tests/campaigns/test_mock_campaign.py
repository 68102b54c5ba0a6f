"""Mock mode can be rehearsed: a campaign paces at PASSKIT_RATE_LIMIT as against PassKit (its
calls take the same throttle, budget and read-before-write, at PASSKIT_MOCK_LATENCY_MS), its
progress moves, and a cancel stops it. The daemon runs as `loyaltyd run`, in its own
process."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from tests.campaign_support import bulk_audience, insert_campaign
from tests.factories import make_program
from tests.harness import DaemonProcess, wait_until

pytestmark = pytest.mark.slow

RECIPIENTS = 500
RATE = 100

MOCK = {
    "PASSKIT_API_KEY": "",
    "PASSKIT_API_SECRET": "",
    "PASSKIT_RATE_LIMIT": str(RATE),
    "LOYALTYD_POLL_INTERVAL_SECONDS": "1",
    "LOYALTYD_WALLET_SWEEPS": "false",
}


async def _status(pool: asyncpg.Pool, campaign: uuid.UUID) -> asyncpg.Record:
    row: asyncpg.Record = await pool.fetchrow(
        "SELECT status, sent_count, skipped_count, recipient_count "
        "FROM push_campaign_progress WHERE id = $1",
        campaign,
    )
    return row


async def _blast(pool: asyncpg.Pool) -> uuid.UUID:
    program = await make_program(pool)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, RECIPIENTS)
    return await insert_campaign(pool, program_id=program)


async def test_a_mock_campaign_is_paced_by_the_rate_limit(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    daemon = DaemonProcess(database_url, MOCK, tmp_path / "daemon.log")
    try:
        await wait_until(lambda: '"daemon_ready"' in daemon.log_text(), timeout=30)
        campaign = await _blast(pool)
        started = time.monotonic()

        async def completed() -> bool:
            return bool((await _status(pool, campaign))["status"] == "COMPLETED")

        await wait_until(completed, timeout=60, interval=0.1)
        took = time.monotonic() - started
        code, _ = await daemon.terminate_timed(30)  # a clean stop says the last second too
        assert code == 0
    finally:
        daemon.stop_now()
    row = await _status(pool, campaign)
    assert row["sent_count"] == RECIPIENTS
    # A read and a write per message: 1,000 requests at 100/s (less the first burst).
    assert took >= 4.0, f"{RECIPIENTS} mock sends at {RATE}/s took {took:.2f} s"
    summaries = [
        json.loads(line)
        for line in daemon.log_text().splitlines()
        if '"passkit_mock_traffic"' in line
    ]
    assert summaries, "mock traffic is summarised each second"
    assert all(s["total"] <= RATE + 5 + 1 for s in summaries), summaries
    assert sum(s["requests"].get("write_message", 0) for s in summaries) == RECIPIENTS
    assert not any('"passkit_mock_request"' in line for line in daemon.log_text().splitlines())


async def test_a_mock_campaign_can_be_cancelled_half_way(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    daemon = DaemonProcess(database_url, MOCK, tmp_path / "daemon.log")
    try:
        await wait_until(lambda: '"daemon_ready"' in daemon.log_text(), timeout=30)
        campaign = await _blast(pool)

        async def under_way() -> bool:
            return bool((await _status(pool, campaign))["sent_count"] >= 50)

        await wait_until(under_way, timeout=30, interval=0.05)
        await pool.execute("UPDATE push_campaigns SET status = 'CANCELLED' WHERE id = $1", campaign)
        cancelled_at = (await _status(pool, campaign))["sent_count"]

        async def settled() -> bool:
            row = await _status(pool, campaign)
            return bool(row["sent_count"] + row["skipped_count"] == RECIPIENTS)

        await wait_until(settled, timeout=30)
    finally:
        daemon.stop_now()
    row = await _status(pool, campaign)
    assert row["status"] == "CANCELLED"
    # What was claimed when the cancel landed may still go out: a couple of seconds' worth.
    assert row["sent_count"] <= cancelled_at + 2 * RATE // 2 + 10, (cancelled_at, row)
    assert row["sent_count"] < RECIPIENTS // 2
