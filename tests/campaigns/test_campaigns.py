"""Push campaigns end to end in one process: planner, delivery worker, real Postgres, fake
PassKit (SPEC §3.2)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from daemon.campaigns.delivery import DeliveryHandler
from daemon.core.config import Settings
from daemon.core.metrics import Metrics
from daemon.passkit.client import PassKitClient
from daemon.store.deliveries import DeliveryStore
from daemon.testing.fakepasskit import LatencyModel
from tests.campaign_support import (
    bulk_audience,
    campaign,
    campaign_rig,
    insert_campaign,
    plan,
    planner_worker,
    stage_campaign,
    status_of,
    texts_sent,
)
from tests.factories import make_pass, make_program, make_user
from tests.harness import fake_passkit, messages_by_pass, settings_for, wait_until


async def test_pending_campaign_reaches_every_recipient_once_and_completes(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool, name="Joe's Pizza")
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, 300)
    nameless = await make_pass(
        pool,
        program,
        user_id=await make_user(pool, first_name=None),
        points=7,
        passkit_internal_id="pk-nameless",
    )
    async with fake_passkit() as fake:
        settings = settings_for(make_settings, fake.url)
        async with campaign_rig(pool, database_url, settings) as rig:
            campaign_id = await insert_campaign(
                pool,
                program_id=program,
                message_text="Hi {first_name|friend}, {points} pts at {program_name}",
            )
            row = await rig.finished(campaign_id)
    assert row["status"] == "COMPLETED", row["error"]
    assert (
        row["recipient_count"],
        row["sent_count"],
        row["failed_count"],
        row["skipped_count"],
    ) == (301, 301, 0, 0)
    assert row["started_at"] is not None and row["finished_at"] >= row["started_at"]
    sent = messages_by_pass(fake)
    assert len(sent) == 301 and set(sent.values()) == {1}
    assert texts_sent(fake, "pk-17") == ["Hi Member17, 42 pts at Joe's Pizza"]
    assert texts_sent(fake, "pk-nameless") == ["Hi friend, 7 pts at Joe's Pizza"]
    log = await pool.fetch("SELECT * FROM notification_logs WHERE campaign_id = $1", campaign_id)
    assert len(log) == 1
    assert (
        log[0]["recipient_count"],
        log[0]["success_count"],
        log[0]["failed_count"],
        log[0]["skipped_count"],
        log[0]["target_segment"],
    ) == (301, 301, 0, 0, "ALL")
    rendered = await pool.fetchval(
        "SELECT rendered_text FROM loyaltyd.campaign_deliveries WHERE campaign_id = $1 AND "
        "pass_id = $2",
        campaign_id,
        nameless,
    )
    assert rendered == "Hi friend, 7 pts at Joe's Pizza"


async def test_draft_only_gets_its_count_then_pending_sends_it(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, 25)
    async with fake_passkit() as fake:
        settings = settings_for(make_settings, fake.url)
        async with campaign_rig(pool, database_url, settings) as rig:
            campaign_id = await insert_campaign(pool, program_id=program, status="DRAFT")
            row = await rig.drafted(campaign_id)
            assert (row["status"], row["recipient_count"]) == ("DRAFT", 25)
            await asyncio.sleep(0.5)
            assert fake.count() == 0, "a draft sends nothing"
            assert await pool.fetchval("SELECT count(*) FROM loyaltyd.campaign_deliveries") == 0
            await pool.execute(
                "UPDATE push_campaigns SET status = 'PENDING' WHERE id = $1", campaign_id
            )
            row = await rig.finished(campaign_id)
    assert (row["status"], row["sent_count"]) == ("COMPLETED", 25)
    assert len(messages_by_pass(fake)) == 25


async def test_editing_a_counted_draft_counts_it_again(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    for zip_code in ("90210", "90210", "10001"):
        await make_pass(pool, program, user_id=await make_user(pool, zip=zip_code))
    async with fake_passkit() as fake:
        settings = settings_for(make_settings, fake.url)
        async with campaign_rig(pool, database_url, settings) as rig:
            campaign_id = await insert_campaign(
                pool, program_id=program, status="DRAFT", segment="LOCAL", zip_codes=["90210"]
            )
            assert (await rig.drafted(campaign_id))["recipient_count"] == 2
            await pool.execute(
                "UPDATE push_campaigns SET zip_codes = '{10001}' WHERE id = $1", campaign_id
            )
            row = await rig.drafted(campaign_id)
    assert (row["status"], row["recipient_count"]) == ("DRAFT", 1)
    assert fake.count() == 0


async def test_scheduled_campaign_waits_for_its_time(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    await make_pass(pool, program, passkit_internal_id="pk-later")
    async with fake_passkit() as fake:
        settings = settings_for(make_settings, fake.url, loyaltyd_poll_interval_seconds=30)
        async with campaign_rig(pool, database_url, settings) as rig:
            campaign_id = await insert_campaign(
                pool,
                program_id=program,
                scheduled_at=datetime.now(UTC) + timedelta(seconds=1.5),
            )
            await asyncio.sleep(0.7)
            assert (await status_of(pool, campaign_id), fake.count()) == ("PENDING", 0)
            row = await rig.finished(campaign_id, timeout=5)
    # The planner slept until the due time, not until the (30 s) poll.
    assert row["status"] == "COMPLETED"
    assert row["started_at"] - row["scheduled_at"] < timedelta(seconds=1)
    assert texts_sent(fake, "pk-later") == ["Hello Ada!"]


async def test_cancel_mid_blast_stops_within_two_seconds_with_true_counters(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, 3000)
    loop = asyncio.get_running_loop()
    async with fake_passkit(latency=LatencyModel(median_ms=50)) as fake:
        settings = settings_for(make_settings, fake.url)
        async with campaign_rig(pool, database_url, settings) as rig:
            campaign_id = await insert_campaign(pool, program_id=program)
            await wait_until(lambda: fake.count() >= 200, timeout=20)
            await pool.execute(
                "UPDATE push_campaigns SET status = 'CANCELLED' WHERE id = $1", campaign_id
            )
            cancelled_at = loop.time()
            row = await rig.finished(campaign_id)
            await asyncio.sleep(0.5)  # anything still arriving would show now
    last_request = max(r.at for r in fake.requests)
    assert last_request - cancelled_at < 2.0
    sent = messages_by_pass(fake)
    assert row["status"] == "CANCELLED" and row["finished_at"] is not None
    assert row["sent_count"] == len(sent) == sum(sent.values()) < 3000
    assert row["failed_count"] == 0
    assert row["sent_count"] + row["skipped_count"] == row["recipient_count"] == 3000
    states = dict(
        await pool.fetch(
            "SELECT state, count(*) FROM loyaltyd.campaign_deliveries WHERE campaign_id = $1 "
            "GROUP BY state",
            campaign_id,
        )
    )
    assert states == {"sent": row["sent_count"], "skipped": row["skipped_count"]}
    reasons = await pool.fetchval(
        "SELECT array_agg(DISTINCT error) FROM loyaltyd.campaign_deliveries "
        "WHERE campaign_id = $1 AND state = 'skipped'",
        campaign_id,
    )
    assert reasons == ["campaign cancelled"]
    log = await pool.fetchrow("SELECT * FROM notification_logs WHERE campaign_id = $1", campaign_id)
    assert log is not None and log["success_count"] == row["sent_count"]


async def test_frequency_cap_skips_with_the_reason_and_forgets_after_24_hours(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool, max_pushes_per_pass_per_day=2)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, 5)
    async with fake_passkit() as fake:
        settings = settings_for(make_settings, fake.url)
        async with campaign_rig(pool, database_url, settings) as rig:
            for _ in range(2):
                await rig.finished(await insert_campaign(pool, program_id=program))
            # pk-1's messages were sent a day and an hour ago.
            await pool.execute(
                "UPDATE loyaltyd.campaign_deliveries d SET finished_at = now() - interval '25 "
                "hours' "
                "FROM passes_master p WHERE p.id = d.pass_id AND p.passkit_internal_id = 'pk-1'"
            )
            third = await rig.finished(await insert_campaign(pool, program_id=program))
    assert (third["status"], third["sent_count"], third["skipped_count"]) == ("COMPLETED", 1, 4)
    assert messages_by_pass(fake) == {"pk-1": 3, "pk-2": 2, "pk-3": 2, "pk-4": 2, "pk-5": 2}
    reasons = await pool.fetch(
        "SELECT DISTINCT error FROM loyaltyd.campaign_deliveries WHERE campaign_id = $1 "
        "AND state = 'skipped'",
        third["id"],
    )
    assert [r["error"] for r in reasons] == [
        "frequency cap: 2 campaign messages in the last 24 h (limit 2)"
    ]


async def test_a_recipient_passkit_refuses_is_failed_with_the_reason_and_others_are_sent(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, 10)
    async with fake_passkit() as fake:
        fake.force_status("pk-3", 400, "member not found")
        settings = settings_for(make_settings, fake.url)
        async with campaign_rig(pool, database_url, settings) as rig:
            row = await rig.finished(await insert_campaign(pool, program_id=program))
    assert (row["status"], row["sent_count"], row["failed_count"]) == ("COMPLETED", 9, 1)
    error = await pool.fetchval(
        "SELECT d.error FROM loyaltyd.campaign_deliveries d JOIN passes_master p ON p.id = "
        "d.pass_id "
        "WHERE p.passkit_internal_id = 'pk-3' AND d.state = 'failed'"
    )
    assert "400" in error and "member not found" in error
    log = await pool.fetchrow("SELECT * FROM notification_logs WHERE campaign_id = $1", row["id"])
    assert (log["success_count"], log["failed_count"]) == (9, 1)


async def test_campaign_with_nobody_to_reach_completes_at_once(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    await make_pass(pool, program, is_active=False)
    async with fake_passkit() as fake:
        settings = settings_for(make_settings, fake.url)
        async with campaign_rig(pool, database_url, settings) as rig:
            row = await rig.finished(await insert_campaign(pool, program_id=program))
    assert (row["status"], row["recipient_count"], row["sent_count"]) == ("COMPLETED", 0, 0)
    assert await pool.fetchval("SELECT count(*) FROM notification_logs") == 1
    assert fake.count() == 0


async def test_campaign_a_crashed_planner_left_half_planned_is_taken_over(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    await make_pass(pool, program, passkit_internal_id="pk-orphan")
    campaign_id = await stage_campaign(
        pool,
        program_id=program,
        status="PROCESSING",
        lease_owner=uuid.uuid4(),
        lease_expires_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    async with fake_passkit() as fake:
        settings = settings_for(make_settings, fake.url)
        async with campaign_rig(pool, database_url, settings) as rig:
            row = await rig.finished(campaign_id)
    assert (row["status"], row["sent_count"]) == ("COMPLETED", 1)
    assert len(texts_sent(fake, "pk-orphan")) == 1


async def test_processing_rows_the_daemon_never_claimed_are_left_alone(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> None:
    """A row some earlier tool left PROCESSING may be half sent: resending it is not ours to do."""
    program = await make_program(pool)
    await make_pass(pool, program)
    campaign_id = await stage_campaign(pool, program_id=program, status="PROCESSING")
    await plan(pool, make_settings())
    row = await campaign(pool, campaign_id)
    assert (row["status"], row["started_at"]) == ("PROCESSING", None)


async def test_two_planners_settling_at_once_write_one_audit_row(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    for _ in range(3):
        await make_pass(pool, program)
    campaign_id = await insert_campaign(pool, program_id=program)
    settings = make_settings()
    await plan(pool, settings)
    await _send_all_by_hand(pool, settings)
    planners = [planner_worker(pool, settings) for _ in range(2)]
    await asyncio.gather(*(p.work_once() for p in planners))
    assert await status_of(pool, campaign_id) == "COMPLETED"
    assert await pool.fetchval("SELECT count(*) FROM notification_logs") == 1


async def _send_all_by_hand(pool: asyncpg.Pool, settings: Settings) -> None:
    async with PassKitClient(settings) as client:  # mock mode
        store, handler = DeliveryStore(pool, lease_seconds=60), DeliveryHandler(client)
        owner = uuid.uuid4()
        jobs = await store.claim(owner, 100)
        await store.record(owner, [(job, await handler.handle(job)) for job in jobs])


async def test_planner_reports_how_many_recipients_are_still_waiting(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    for _ in range(3):
        await make_pass(pool, program)
    await insert_campaign(pool, program_id=program)
    metrics = Metrics()
    await plan(pool, make_settings(), metrics=metrics)  # starts it
    depth = metrics.registry.get_sample_value("loyaltyd_queue_depth", {"queue": "campaign"})
    assert depth == 3


async def test_the_same_text_for_everyone_is_stored_once_and_shown_per_recipient(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    """A campaign without placeholders keeps its text on the campaign, not in each of its
    deliveries; the recipients view shows each one the text as sent. A personalised one keeps
    each recipient's own text."""
    program = await make_program(pool)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, 20)
    async with fake_passkit() as fake:
        async with campaign_rig(pool, database_url, settings_for(make_settings, fake.url)) as rig:
            same = await insert_campaign(pool, program_id=program, message_text="Open late!")
            await rig.finished(same)
            mine = await insert_campaign(pool, program_id=program, message_text="Hi {first_name}")
            await rig.finished(mine)
    stored = "SELECT count(rendered_text) FROM loyaltyd.campaign_deliveries WHERE campaign_id = $1"
    assert await pool.fetchval(stored, same) == 0
    assert await pool.fetchval(stored, mine) == 20
    shown = await pool.fetch(
        "SELECT DISTINCT rendered_text FROM campaign_deliveries WHERE campaign_id = $1", same
    )
    assert [r["rendered_text"] for r in shown] == ["Open late!"]
    assert texts_sent(fake, "pk-3")[0] == "Open late!"
