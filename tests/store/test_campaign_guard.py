"""Daemon-owned columns of push_campaigns belong to the daemon (sql/052). A no-code edit form
writes back every field it loaded: a rename with stale counters or a stale status changes the
name and nothing else; a real attempt to change the daemon's columns is refused by a named
rule. The writer here is not loyaltyd, though its application_name says 'loyaltyd' (a name
proves nothing: behind a session pooler the daemon's own is lost, sql/058)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from daemon.core.config import Settings
from daemon.testing.fakepasskit import LatencyModel
from tests.campaign_support import bulk_audience, campaign, insert_campaign, stage_campaign
from tests.factories import make_program
from tests.harness import fake_passkit, running_daemon, settings_for, wait_until

FORM = {"application_name": "loyaltyd"}


@pytest.fixture
async def form(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A writer that is not loyaltyd: what Softr, the Data API or an admin's psql are."""
    conn = await asyncpg.connect(database_url, server_settings=FORM)
    yield conn
    await conn.close()


async def _running(pool: asyncpg.Pool, **cols: object) -> uuid.UUID:
    program = await make_program(pool)
    values: dict[str, object] = {
        "program_id": program,
        "status": "PROCESSING",
        "recipient_count": 3000,
        "sent_count": 2700,
        "failed_count": 3,
        "started_at": datetime.now(UTC) - timedelta(seconds=30),
    }
    values.update(cols)
    return await stage_campaign(pool, **values)


async def test_a_rename_with_stale_counters_renames_and_keeps_the_counters(
    pool: asyncpg.Pool, form: asyncpg.Connection
) -> None:
    cid = await _running(pool)
    await form.execute(
        "UPDATE push_campaigns SET name = 'Renamed', status = 'PROCESSING', sent_count = 2599, "
        "failed_count = 0, recipient_count = 3000, error = NULL, finished_at = NULL "
        "WHERE id = $1",
        cid,
    )
    row = await campaign(pool, cid)
    assert (row["name"], row["status"], row["sent_count"], row["failed_count"]) == (
        "Renamed",
        "PROCESSING",
        2700,
        3,
    )


async def test_a_stale_write_back_on_a_finished_campaign_changes_nothing_of_its_outcome(
    pool: asyncpg.Pool, form: asyncpg.Connection
) -> None:
    finished = datetime.now(UTC)
    cid = await _running(pool, status="COMPLETED", sent_count=3000, finished_at=finished)
    await form.execute(
        "UPDATE push_campaigns SET name = 'Done', status = 'PROCESSING', sent_count = 538, "
        "finished_at = NULL WHERE id = $1",
        cid,
    )
    row = await campaign(pool, cid)
    assert (row["name"], row["status"], row["sent_count"], row["finished_at"]) == (
        "Done",
        "COMPLETED",
        3000,
        finished,
    )


async def test_a_form_that_loaded_a_pending_campaign_before_it_started_only_renames_it(
    pool: asyncpg.Pool, form: asyncpg.Connection
) -> None:
    cid = await _running(pool)
    await form.execute(
        "UPDATE push_campaigns SET name = 'Later', status = 'PENDING', sent_count = 0, "
        "recipient_count = 0, started_at = NULL WHERE id = $1",
        cid,
    )
    row = await campaign(pool, cid)
    assert (row["name"], row["status"], row["sent_count"], row["recipient_count"]) == (
        "Later",
        "PROCESSING",
        2700,
        3000,
    )
    assert row["started_at"] is not None


@pytest.mark.parametrize(
    ("assignment", "rule"),
    [
        ("sent_count = 99999", "push_campaigns_counters_belong_to_loyaltyd"),
        ("skipped_count = 5", "push_campaigns_counters_belong_to_loyaltyd"),
        ("status = 'COMPLETED'", "push_campaigns_status_transitions_belong_to_loyaltyd"),
        ("status = 'FAILED'", "push_campaigns_status_transitions_belong_to_loyaltyd"),
        ("error = 'made up'", "push_campaigns_results_belong_to_loyaltyd"),
        ("finished_at = now()", "push_campaigns_results_belong_to_loyaltyd"),
        ("predates_loyaltyd = true", "push_campaigns_history_stays_history"),
    ],
)
async def test_a_real_attempt_to_change_the_daemons_columns_is_refused_by_a_named_rule(
    pool: asyncpg.Pool, form: asyncpg.Connection, assignment: str, rule: str
) -> None:
    cid = await _running(pool)
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await form.execute(f"UPDATE push_campaigns SET {assignment} WHERE id = $1", cid)
    assert refused.value.constraint_name == rule
    assert (await campaign(pool, cid))["sent_count"] == 2700


async def test_a_recipient_count_from_a_form_is_ignored(
    pool: asyncpg.Pool, form: asyncpg.Connection
) -> None:
    cid = await _running(pool)
    await form.execute("UPDATE push_campaigns SET recipient_count = 10 WHERE id = $1", cid)
    assert (await campaign(pool, cid))["recipient_count"] == 3000


async def test_a_draft_cannot_be_marked_completed_by_a_form(
    pool: asyncpg.Pool, form: asyncpg.Connection
) -> None:
    program = await make_program(pool)
    cid = await insert_campaign(pool, program_id=program, status="DRAFT")
    with pytest.raises(asyncpg.CheckViolationError, match="status DRAFT -> COMPLETED"):
        await form.execute("UPDATE push_campaigns SET status = 'COMPLETED' WHERE id = $1", cid)


@pytest.mark.parametrize(
    ("start", "then"),
    [("DRAFT", "PENDING"), ("PENDING", "DRAFT"), ("PENDING", "CANCELLED"), ("FAILED", "PENDING")],
)
async def test_the_admins_own_transitions_still_work(
    pool: asyncpg.Pool, form: asyncpg.Connection, start: str, then: str
) -> None:
    program = await make_program(pool)
    cid = await stage_campaign(pool, program_id=program, status=start)
    await form.execute("UPDATE push_campaigns SET status = $2 WHERE id = $1", cid, then)
    assert (await campaign(pool, cid))["status"] == then


async def test_a_running_campaign_can_be_cancelled_by_a_form(
    pool: asyncpg.Pool, form: asyncpg.Connection
) -> None:
    cid = await _running(pool)
    await form.execute(
        "UPDATE push_campaigns SET status = 'CANCELLED', sent_count = 2000 WHERE id = $1", cid
    )
    row = await campaign(pool, cid)
    assert (row["status"], row["sent_count"]) == ("CANCELLED", 2700)


async def test_a_new_row_from_a_form_starts_clean(form: asyncpg.Connection) -> None:
    program = await make_program(form)
    cid = await insert_campaign(
        form, program_id=program, recipient_count=5000, sent_count=10, error="x"
    )
    row = await campaign(form, cid)
    assert (row["recipient_count"], row["sent_count"], row["error"], row["status"]) == (
        0,
        0,
        None,
        "PENDING",
    )
    with pytest.raises(asyncpg.CheckViolationError, match="use DRAFT or PENDING"):
        await insert_campaign(form, program_id=program, status="COMPLETED")


async def test_write_backs_during_a_blast_never_change_what_the_counters_and_audit_row_say(
    pool: asyncpg.Pool,
    form: asyncpg.Connection,
    database_url: str,
    make_settings: Callable[..., Settings],
) -> None:
    """A form saving the campaign every 50 ms with what it loaded a moment earlier: the
    campaign still ends COMPLETED, and its counters and audit row equal the deliveries."""
    program = await make_program(pool)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, 400)
    async with fake_passkit(latency=LatencyModel(median_ms=20)) as fake:
        settings = settings_for(make_settings, fake.url, passkit_max_concurrency=10)
        async with running_daemon(settings, database_url):
            cid = await insert_campaign(pool, program_id=program, message_text="Hi!")
            renames = 0
            while (await campaign(pool, cid))["status"] != "COMPLETED" and renames < 400:
                loaded = await campaign(form, cid)
                await asyncio.sleep(0.05)
                await form.execute(
                    "UPDATE push_campaigns SET name = $2, status = $3, sent_count = $4, "
                    "recipient_count = $5, finished_at = $6 WHERE id = $1",
                    cid,
                    f"Blast #{renames}",
                    loaded["status"],
                    loaded["sent_count"],
                    loaded["recipient_count"],
                    loaded["finished_at"],
                )
                renames += 1
            await wait_until(
                lambda: pool.fetchval(
                    "SELECT count(*) = 1 FROM notification_logs WHERE campaign_id = $1", cid
                ),
                timeout=10,
            )
    assert renames > 3, "the form never wrote while the blast ran"
    row = await campaign(pool, cid)
    sent = await pool.fetchval(
        "SELECT count(*) FROM loyaltyd.campaign_deliveries WHERE campaign_id = $1 "
        "AND state = 'sent'",
        cid,
    )
    audit = await pool.fetchval(
        "SELECT success_count FROM notification_logs WHERE campaign_id = $1", cid
    )
    assert (row["status"], row["sent_count"], sent, audit) == ("COMPLETED", 400, 400, 400)
    assert row["finished_at"] is not None
