"""The retention rule removes exactly what is old and finished: deliveries of campaigns that
finished before the window, pass syncs idle for longer than theirs; never a pending, claimed,
dead or recent row, never a campaign row, its counters or the audit trail; one daemon at a
time, in batches."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence

import asyncpg
import pytest
from pydantic import ValidationError

from daemon.core.config import Settings
from daemon.history.retention import Retention
from daemon.store import retention as store
from daemon.testing.fakepasskit import LatencyModel
from tests.campaign_support import bulk_audience, insert_campaign, stage_campaign, status_of
from tests.factories import make_pass, make_program
from tests.harness import fake_passkit, messages_by_pass, running_daemon, settings_for
from tests.passkit_fixtures import settings_of

DAY = "1 day"


async def _campaign(
    conn: asyncpg.Connection, program: uuid.UUID, *, finished_days_ago: float | None, **cols: object
) -> uuid.UUID:
    """A campaign the daemon started `finished_days_ago` + 1 days ago and finished then (None:
    still PROCESSING)."""
    started = await conn.fetchval(
        "SELECT now() - make_interval(secs => $1)",
        ((finished_days_ago or 0) + 1) * 86_400,
    )
    finished = (
        await conn.fetchval("SELECT now() - make_interval(secs => $1)", finished_days_ago * 86_400)
        if finished_days_ago is not None
        else None
    )
    return await stage_campaign(
        conn,
        program_id=program,
        status="COMPLETED" if finished is not None else "PROCESSING",
        started_at=started,
        finished_at=finished,
        **cols,
    )


async def _deliveries(
    conn: asyncpg.Connection, campaign: uuid.UUID, passes: Sequence[uuid.UUID], state: str
) -> None:
    finished = state in ("sent", "failed", "skipped")
    await conn.executemany(
        "INSERT INTO loyaltyd.campaign_deliveries (campaign_id, pass_id, state, lease_owner, "
        "finished_at) VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN now() END)",
        [
            (campaign, p, state, uuid.uuid4() if state == "claimed" else None, finished)
            for p in passes
        ],
    )


async def _count(conn: asyncpg.Connection, campaign: uuid.UUID) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM loyaltyd.campaign_deliveries WHERE campaign_id = $1", campaign
        )
    )


async def _sync(conn: asyncpg.Connection, pass_id: uuid.UUID, state: str, days_ago: float) -> None:
    await conn.execute(
        "INSERT INTO loyaltyd.pass_syncs (pass_id, state, lease_owner, available_at, "
        "updated_at, enqueued_at) VALUES ($1, $2, "
        "CASE WHEN $2 = 'claimed' THEN gen_random_uuid() END, "
        "CASE WHEN $2 = 'claimed' THEN now() + interval '1 minute' ELSE now() END, "
        "now() - make_interval(secs => $3), now() - make_interval(secs => $3))",
        pass_id,
        state,
        days_ago * 86_400,
    )


async def test_only_old_finished_history_goes(conn: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    program = await make_program(conn)
    passes = [await make_pass(conn, program) for _ in range(12)]
    old = await _campaign(conn, program, finished_days_ago=100, sent_count=12)
    recent = await _campaign(conn, program, finished_days_ago=10)
    running = await _campaign(conn, program, finished_days_ago=None)  # started 1 day ago
    await _deliveries(conn, old, passes[:8], "sent")
    await _deliveries(conn, old, passes[8:10], "failed")
    await _deliveries(conn, old, passes[10:], "skipped")
    await _deliveries(conn, recent, passes, "sent")
    await _deliveries(conn, running, passes[:4], "sent")
    await _deliveries(conn, running, passes[4:8], "pending")
    await _deliveries(conn, running, passes[8:], "claimed")
    await conn.execute(
        "INSERT INTO notification_logs (program_id, campaign_id, recipient_count) "
        "VALUES ($1, $2, 12)",
        program,
        old,
    )
    await _sync(conn, passes[0], "idle", 40)  # idle for long: goes
    await _sync(conn, passes[1], "idle", 5)
    await _sync(conn, passes[2], "dead", 40)  # waits for an operator
    await _sync(conn, passes[3], "pending", 40)  # still owed
    await _sync(conn, passes[4], "claimed", 40)

    removed = await Retention(pool, delivery_days=90, sync_days=30, batch=5).run_once()

    assert removed is not None and (removed.deliveries, removed.syncs) == (12, 1)
    assert [await _count(conn, c) for c in (old, recent, running)] == [0, 12, 12]
    kept = await conn.fetch("SELECT pass_id, state FROM loyaltyd.pass_syncs ORDER BY state")
    assert {(r["pass_id"], r["state"]) for r in kept} == {
        (passes[1], "idle"),
        (passes[2], "dead"),
        (passes[3], "pending"),
        (passes[4], "claimed"),
    }
    row = await conn.fetchrow("SELECT status, sent_count FROM push_campaigns WHERE id = $1", old)
    assert (row["status"], row["sent_count"]) == ("COMPLETED", 12), "the campaign row stays"
    assert await conn.fetchval("SELECT count(*) FROM notification_logs") == 1
    again = await Retention(pool, delivery_days=90, sync_days=30).run_once()
    assert again is not None and (again.deliveries, again.syncs) == (0, 0)


async def test_zero_keeps_everything(conn: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    program = await make_program(conn)
    passes = [await make_pass(conn, program) for _ in range(3)]
    old = await _campaign(conn, program, finished_days_ago=400)
    await _deliveries(conn, old, passes, "sent")
    await _sync(conn, passes[0], "idle", 400)
    retention = Retention(pool, delivery_days=0, sync_days=0)
    assert not retention.enabled
    removed = await retention.run_once()
    assert removed is not None and (removed.deliveries, removed.syncs) == (0, 0)
    assert await _count(conn, old) == 3


async def test_one_daemon_at_a_time(conn: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    program = await make_program(conn)
    passes = [await make_pass(conn, program) for _ in range(3)]
    old = await _campaign(conn, program, finished_days_ago=100)
    await _deliveries(conn, old, passes, "sent")
    other = await pool.acquire()
    try:
        assert await store.try_lock(other), "another daemon is removing history"
        assert await Retention(pool, delivery_days=90, sync_days=30).run_once() is None
        assert await _count(conn, old) == 3
        await store.unlock(other)
    finally:
        await pool.release(other)
    assert await Retention(pool, delivery_days=90, sync_days=30).run_once() is not None
    assert await _count(conn, old) == 0


async def test_status_shows_each_tables_size_and_oldest_row(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    program = await make_program(conn)
    passes = [await make_pass(conn, program) for _ in range(2)]
    old = await _campaign(conn, program, finished_days_ago=30)
    await _deliveries(conn, old, passes, "sent")
    tables = {t.name: t for t in await store.history_tables(pool)}
    deliveries = tables["campaign_deliveries"]
    assert deliveries.rows == 2 and deliveries.bytes > 0
    started = await conn.fetchval("SELECT started_at FROM push_campaigns WHERE id = $1", old)
    assert deliveries.oldest == started


def test_a_retention_shorter_than_the_frequency_caps_day_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 2"):
        settings_of({"loyaltyd_delivery_retention_days": 1})
    assert (
        settings_of({"loyaltyd_delivery_retention_days": 0}).loyaltyd_delivery_retention_days == 0
    )


async def test_history_goes_while_a_campaign_is_sent_and_the_campaign_is_untouched(
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    database_url: str,
    make_settings: Callable[..., Settings],
) -> None:
    program = await make_program(conn)
    await bulk_audience(conn, program, 300)
    passes = [r["id"] for r in await conn.fetch("SELECT id FROM passes_master LIMIT 300")]
    old = [await _campaign(conn, program, finished_days_ago=100 + i) for i in range(5)]
    for campaign in old:
        await _deliveries(conn, campaign, passes, "sent")
    async with fake_passkit(latency=LatencyModel(median_ms=20)) as fake:
        settings = settings_for(make_settings, fake.url, passkit_max_concurrency=4)
        async with running_daemon(settings, database_url):
            blast = await insert_campaign(conn, program_id=program, message_text="Hi {first_name}")
            rounds = 0
            while await status_of(conn, blast) != "COMPLETED":
                await Retention(pool, delivery_days=90, sync_days=30, batch=100).run_once()
                rounds += 1
                await asyncio.sleep(0.05)
    assert rounds > 1, "the removal ran while the campaign was being sent"
    assert [await _count(conn, c) for c in old] == [0] * 5
    assert await _count(conn, blast) == 300
    assert set(messages_by_pass(fake).values()) == {1}, "every phone buzzed exactly once"
