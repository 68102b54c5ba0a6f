"""PassKit trouble against the whole daemon, on real Postgres and the fake PassKit: a long
Retry-After holds back only its pass, and a ten-minute outage heals by itself.

Time is virtual where waiting for real would take minutes: the test moves every owed row's
due time (and the time it became owed) back by the same amount, which is what the passing of
that much time looks like to the claim statements.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from daemon.core.config import Settings
from daemon.testing.fakepasskit import ROUTE_SET_POINTS, FakePassKit, Faults
from tests.campaign_support import bulk_audience, insert_campaign, status_of, texts_sent
from tests.factories import make_pass, make_program
from tests.harness import (
    DaemonProcess,
    daemon_env,
    fake_passkit,
    running_daemon,
    settings_for,
    wait_until,
)

EARN = "SELECT process_membership_transaction($1, $2, $3, $4, NULL)"
# The real-time outage (the measurement): five minutes, so the test is marked slow
# (LOYALTYD_TEST_OUTAGE_SECONDS shortens it while working on it).
OUTAGE_SECONDS = float(os.environ.get("LOYALTYD_TEST_OUTAGE_SECONDS", "300"))

_OWED_SYNCS = "FROM loyaltyd.pass_syncs WHERE state IN ('pending', 'claimed')"
_OWED_DELIVERIES = "FROM loyaltyd.campaign_deliveries WHERE state IN ('pending', 'claimed')"


async def _passkit_id(pool: asyncpg.Pool, pass_id: uuid.UUID) -> str:
    value: str = await pool.fetchval(
        "SELECT passkit_internal_id FROM passes_master WHERE id = $1", pass_id
    )
    return value


async def _pass_forward(pool: asyncpg.Pool, seconds: float) -> None:
    """`seconds` pass for every owed row: due times and owed-since times move back."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT loyaltyd.writing_as_daemon()")  # started_at is loyaltyd's
        shift = "make_interval(secs => $1)"
        await conn.execute(
            f"UPDATE loyaltyd.pass_syncs SET available_at = available_at - {shift},"
            f" enqueued_at = enqueued_at - {shift} WHERE state = 'pending'",
            seconds,
        )
        await conn.execute(
            f"UPDATE loyaltyd.campaign_deliveries SET available_at = available_at - {shift}"
            " WHERE state = 'pending'",
            seconds,
        )
        await conn.execute(
            f"UPDATE push_campaigns SET started_at = started_at - {shift}"
            " WHERE status = 'PROCESSING'",
            seconds,
        )
        await conn.execute(
            "SELECT pg_notify('loyaltyd_syncs', ''), pg_notify('loyaltyd_deliveries', '')"
        )


async def _seconds_to_next_due(pool: asyncpg.Pool) -> float | None:
    """Until the next owed row is due; None when none is due at a time of its own (all wait
    for PassKit to answer again, or none is owed)."""
    value = await pool.fetchval(
        "SELECT extract(epoch FROM min(due) - now())::float8 FROM ("
        " SELECT available_at AS due FROM loyaltyd.pass_syncs WHERE state = 'pending'"
        " UNION ALL SELECT available_at FROM loyaltyd.campaign_deliveries"
        " WHERE state = 'pending') owed WHERE due < 'infinity'"
    )
    return None if value is None else float(value)


async def _nothing_due_or_claimed(pool: asyncpg.Pool) -> bool:
    busy = await pool.fetchval(
        "SELECT (SELECT count(*) FROM loyaltyd.pass_syncs WHERE state = 'claimed'"
        "         OR (state = 'pending' AND available_at <= now()))"
        "     + (SELECT count(*) FROM loyaltyd.campaign_deliveries WHERE state = 'claimed'"
        "         OR (state = 'pending' AND available_at <= now()))"
    )
    return bool(busy == 0)


async def _owed(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval(
        f"SELECT (SELECT count(*) {_OWED_SYNCS}) + (SELECT count(*) {_OWED_DELIVERIES})"
    )
    return count


async def test_a_long_retry_after_holds_back_only_its_pass(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    slow, *others = [await make_pass(pool, program, points=0) for _ in range(6)]
    slow_pk = await _passkit_id(pool, slow)
    async with fake_passkit() as fake:
        fake.force_status(slow_pk, 429, "rate limited", retry_after="90")
        settings = settings_for(make_settings, fake.url, loyaltyd_poll_interval_seconds=0.2)
        async with running_daemon(settings, database_url):
            await pool.execute(EARN, slow, 5, "EARN", None)
            await wait_until(lambda: fake.count(ROUTE_SET_POINTS) >= 1)
            fake.clear_forced()
            due_in = await pool.fetchval(
                "SELECT extract(epoch FROM available_at - now())::float8"
                " FROM loyaltyd.pass_syncs WHERE pass_id = $1 AND state = 'pending'",
                slow,
            )
            assert due_in is not None and 85 <= due_in <= 90, due_in

            # Other passes keep flowing meanwhile, and the slow one is not asked again.
            for i, pass_id in enumerate(others):
                await pool.execute(EARN, pass_id, i + 1, "EARN", None)
            for i, pass_id in enumerate(others):
                pk = await _passkit_id(pool, pass_id)
                await wait_until(lambda pk=pk, i=i: fake.points_of(pk) == i + 1)  # type: ignore[misc]
            await _pass_forward(pool, 80)  # 80 s of the 90 have passed
            await asyncio.sleep(1.0)  # five poll intervals
            assert _requests_for(fake, slow_pk) == 1, "retried before its Retry-After"

            await _pass_forward(pool, 10)  # now 90 s have
            await wait_until(lambda: fake.points_of(slow_pk) == 5)
        assert _requests_for(fake, slow_pk) == 2


def _requests_for(fake: FakePassKit, passkit_id: str) -> int:
    return sum(1 for r in fake.requests if r.pass_id == passkit_id)


async def test_a_ten_minute_outage_heals_by_itself(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    """PassKit answers 503 to everything for ten minutes (virtual), then recovers: every owed
    sync and every campaign message arrives, nothing is dead or failed, nobody ran
    `requeue-dead`. While it is down nothing is claimed and no back-off grows: the work waits
    for PassKit itself."""
    program = await make_program(pool)
    passes = [await make_pass(pool, program, points=0) for _ in range(10)]
    async with fake_passkit() as fake:
        fake.faults = Faults(p503=1.0)
        settings = settings_for(
            make_settings,
            fake.url,
            loyaltyd_poll_interval_seconds=0.2,
            loyaltyd_passkit_probe_seconds=1.0,
        )
        async with running_daemon(settings, database_url):
            for i, pass_id in enumerate(passes):
                await pool.execute(EARN, pass_id, i + 1, "EARN", None)
            campaign_id = await insert_campaign(
                pool, program_id=program, message_text="Storm sale today"
            )
            await wait_until(lambda: fake.count() >= 10)
            await wait_until(lambda: _nothing_claimed(pool), timeout=30)
            await _pass_forward(pool, 600)  # ten minutes go by for the owed rows
            await asyncio.sleep(2.0)
            assert await _nothing_claimed(pool), "work claimed while PassKit was down"
            fake.faults = Faults()  # PassKit is back

            async def settled() -> bool:
                return await _owed(pool) == 0 and await status_of(pool, campaign_id) == "COMPLETED"

            await wait_until(settled, timeout=30)

        dead = await pool.fetchval("SELECT count(*) FROM loyaltyd.pass_syncs WHERE state = 'dead'")
        failed = await pool.fetchval(
            "SELECT count(*) FROM loyaltyd.campaign_deliveries WHERE state <> 'sent'"
        )
        assert (dead, failed) == (0, 0)
        for i, pass_id in enumerate(passes):
            pk = await _passkit_id(pool, pass_id)
            assert fake.points_of(pk) == i + 1
            assert texts_sent(fake, pk) == ["Storm sale today"]
        attempts = [r.status for r in fake.requests]
        assert attempts.count(503) < 40, "the outage was hammered instead of probed"


async def _nothing_claimed(pool: asyncpg.Pool) -> bool:
    claimed = await pool.fetchval(
        "SELECT (SELECT count(*) FROM loyaltyd.pass_syncs WHERE state = 'claimed')"
        "     + (SELECT count(*) FROM loyaltyd.campaign_deliveries WHERE state = 'claimed')"
    )
    return bool(claimed == 0)


@pytest.mark.slow
@pytest.mark.timeout(OUTAGE_SECONDS + 180)
async def test_after_a_five_minute_outage_everything_owed_arrives_within_30_s(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """PassKit answers 503 to everything for five real minutes, then recovers. A daemon
    process holds the work back meanwhile (no back-off spent on an outage), probes PassKit
    every few seconds, and once it answers, 30 owed pass syncs and 60 campaign messages all
    arrive within 30 s; the outage cost a bounded number of requests."""
    program = await make_program(pool)
    passes = [await make_pass(pool, program, points=0) for _ in range(30)]
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, 30, prefix="pk-outage")
    async with fake_passkit() as fake:
        fake.faults = Faults(p503=1.0)
        env = {**daemon_env(fake.url), "LOYALTYD_PASSKIT_PROBE_SECONDS": "5"}
        daemon = DaemonProcess(database_url, env, tmp_path / "daemon.log")
        try:
            await wait_until(lambda: "daemon_ready" in daemon.log_text(), timeout=30)
            for i, pass_id in enumerate(passes):
                await pool.execute(EARN, pass_id, i + 1, "EARN", None)
            campaign_id = await insert_campaign(
                pool, program_id=program, message_text="Storm sale today"
            )
            await asyncio.sleep(OUTAGE_SECONDS)
            during = fake.count()
            fake.faults = Faults()  # PassKit is back
            recovered = time.monotonic()

            async def all_arrived() -> bool:
                return await _owed(pool) == 0 and await status_of(pool, campaign_id) == "COMPLETED"

            await wait_until(all_arrived, timeout=60, interval=0.2)
            took = time.monotonic() - recovered
            code, _ = await daemon.terminate_timed(30)
        finally:
            daemon.stop_now()
    assert code == 0
    assert took <= 30, f"everything owed arrived {took:.1f} s after PassKit recovered"
    for i, pass_id in enumerate(passes):
        assert fake.points_of(await _passkit_id(pool, pass_id)) == i + 1
    sent = await pool.fetchval("SELECT sent_count FROM push_campaigns WHERE id = $1", campaign_id)
    assert sent == 60  # the 30 members above and the 30 of the bulk audience
    # Held back, not hammered: the first failures, then one probe every 5 s.
    assert during < 150, f"{during} requests during a {OUTAGE_SECONDS} s outage"
