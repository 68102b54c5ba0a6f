"""Behind a real PgBouncer: transaction mode is refused at start-up with one sentence; session
mode works end to end, LISTEN included."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import pytest

from daemon.testing.fakepasskit import FakePassKit, LatencyModel
from tests import pgbouncer
from tests.campaign_support import bulk_audience, campaign, insert_campaign, status_of
from tests.factories import make_pass, make_program
from tests.harness import REPO, DaemonProcess, daemon_env, fake_passkit, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not pgbouncer.available(), reason="pgbouncer is not installed"),
]
REFUSAL = "transaction-mode pooler"


def _loyaltyd(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": dsn, "LOYALTYD_LOG_FORMAT": "json"}
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.parametrize("command", [["run"], ["run", "--no-migrate"], ["migrate"], ["status"]])
def test_a_transaction_mode_pooler_is_refused_with_one_sentence(
    database_url: str, command: list[str]
) -> None:
    with pgbouncer.pgbouncer(database_url, "transaction") as through_pooler:
        result = _loyaltyd(through_pooler, *command)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (sentence,) = [line for line in result.stderr.splitlines() if REFUSAL in line]
    assert sentence.startswith("loyaltyd: DATABASE_URL points at a transaction-mode pooler")
    assert "session pooler (port 5432)" in sentence


def test_the_refusal_does_not_start_the_daemon(database_url: str) -> None:
    with pgbouncer.pgbouncer(database_url, "transaction") as through_pooler:
        result = _loyaltyd(through_pooler, "run")
    assert "daemon_ready" not in result.stderr
    assert "claim_failed" not in result.stderr


async def test_a_session_mode_pooler_works_end_to_end_listen_included(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """Through PgBouncer in session mode the daemon starts, hears NOTIFY and syncs a pass.
    The poll interval is long, so only the doorbell can make it quick."""
    program = await make_program(pool)
    pass_id = await make_pass(pool, program, points=0)
    passkit_id = await pool.fetchval(
        "SELECT passkit_internal_id FROM passes_master WHERE id = $1", pass_id
    )
    async with fake_passkit() as fake:
        env = {**daemon_env(fake.url), "LOYALTYD_POLL_INTERVAL_SECONDS": "60"}
        with pgbouncer.pgbouncer(database_url, "session") as through_pooler:
            daemon = DaemonProcess(through_pooler, env, tmp_path / "daemon.log")
            try:
                await wait_until(lambda: "daemon_ready" in daemon.log_text(), timeout=30)
                await asyncio.sleep(1)  # the listener's first sweep is over
                await pool.execute(
                    "SELECT process_membership_transaction($1, 42, 'EARN', NULL, NULL)", pass_id
                )
                await wait_until(
                    lambda: any(r.pass_id == passkit_id and r.status == 200 for r in fake.requests),
                    timeout=5,
                )
                code, _ = await daemon.terminate_timed(30)
            finally:
                daemon.stop_now()
    assert code == 0, daemon.log_text()
    assert (
        await pool.fetchval("SELECT state FROM loyaltyd.pass_syncs WHERE pass_id = $1", pass_id)
        == "idle"
    )


# --- the daemon's own rules through a session pooler (sql/058) ---------------------------------


@pytest.fixture(params=["direct", "pgbouncer", "pgbouncer-track-extra-parameters"])
def reached_through(request: pytest.FixtureRequest, database_url: str) -> Iterator[str]:
    """The test database directly, or through PgBouncer in session mode (the machine's, and a
    current one with track_extra_parameters)."""
    if request.param == "direct":
        yield database_url
        return
    (bouncer,) = [b for b in pgbouncer.session_poolers() if b.label == request.param]
    if bouncer.binary is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI builds {bouncer.label} (.ci/build-pgbouncer), but it is missing")
        pytest.skip(f"no {bouncer.label} here: .ci/build-pgbouncer builds it")
    with pgbouncer.pgbouncer(database_url, "session", bouncer) as through_pooler:
        yield through_pooler


async def _birthday_passes(pool: asyncpg.Pool, members: int) -> list[uuid.UUID]:
    """Members of a program with the birthday bot on, born on this day (UTC, the program's
    time zone) of a leap year."""
    today = datetime.now(UTC).date()
    program = await make_program(
        pool, name="Birthday Bar", birthday_bot_enabled=True, birthday_reward_points=25
    )
    born = date(1992, today.month, today.day)
    return [await make_pass(pool, program, birth_date=born) for _ in range(members)]


async def test_the_daemons_own_rules_let_it_work_through_the_connection(
    reached_through: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """With a pool of two connections recycled (RESET ALL on every release) the whole time: a
    campaign is planned, sent and completed while a form saves stale values into it, a DRAFT
    is counted and sent, a second campaign is cancelled mid-blast, a birthday run gifts and
    syncs, and 1,000 transactions reach PassKit. The form's connection calls itself
    'loyaltyd' too: a name proves nothing."""
    program = await make_program(pool)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, 40, prefix="pk-a")
        await bulk_audience(conn, program, 600, prefix="pk-b")
    birthdays = await _birthday_passes(pool, 3)
    ledger = [await make_pass(pool, program) for _ in range(100)]
    gifted = _loyaltyd(reached_through, "birthday-run")
    assert gifted.returncode == 0, gifted.stderr
    async with fake_passkit(latency=LatencyModel(median_ms=5)) as fake:
        env = {**daemon_env(fake.url), "LOYALTYD_POOL_SIZE": "2", "PASSKIT_MAX_CONCURRENCY": "4"}
        daemon = DaemonProcess(reached_through, env, tmp_path / "daemon.log")
        form = await asyncpg.connect(
            reached_through, server_settings={"application_name": "loyaltyd"}
        )
        try:
            await wait_until(lambda: "daemon_ready" in daemon.log_text(), timeout=30)
            await _a_campaign_saved_by_a_form_while_it_runs(pool, form, program)
            await _a_draft_counted_then_sent(pool, form, program)
            await _a_campaign_cancelled_mid_blast(pool, form, program)
            await _transactions_synced(pool, fake, ledger)
            await _birthdays_synced(pool, fake, birthdays)
            code, _ = await daemon.terminate_timed(30)
        finally:
            await form.close()
            daemon.stop_now()
    log = daemon.log_text()
    assert code == 0, log
    assert "belongs to loyaltyd" not in log
    assert "record_failed" not in log


async def _finished(pool: asyncpg.Pool, campaign_id: uuid.UUID) -> asyncpg.Record:
    async def done() -> bool:
        return bool(
            await pool.fetchval(
                "SELECT finished_at IS NOT NULL FROM push_campaigns WHERE id = $1", campaign_id
            )
        )

    await wait_until(done, timeout=60)
    return await campaign(pool, campaign_id)


async def _a_campaign_saved_by_a_form_while_it_runs(
    pool: asyncpg.Pool, form: asyncpg.Connection, program: uuid.UUID
) -> None:
    cid = await insert_campaign(
        form,
        program_id=program,
        segment="CSV",
        message_text="Hi {first_name}",
        member_ids=[f"M-pk-a-{n}" for n in range(1, 41)],
    )
    loaded = await campaign(form, cid)
    saves = 0
    while (await status_of(pool, cid)) in ("PENDING", "PROCESSING") and saves < 1000:
        await form.execute(  # what the form loaded before sending started, saved again
            "UPDATE push_campaigns SET name = $2, status = $3, sent_count = $4, "
            "recipient_count = $5, started_at = $6 WHERE id = $1",
            cid,
            f"Renamed {saves}",
            loaded["status"],
            loaded["sent_count"],
            loaded["recipient_count"],
            loaded["started_at"],
        )
        saves += 1
        await asyncio.sleep(0.02)
    row = await _finished(pool, cid)
    assert (row["status"], row["recipient_count"], row["sent_count"]) == ("COMPLETED", 40, 40)
    assert row["name"].startswith("Renamed")
    audit = await pool.fetchrow("SELECT * FROM notification_logs WHERE campaign_id = $1", cid)
    assert audit is not None and audit["success_count"] == 40


async def _a_draft_counted_then_sent(
    pool: asyncpg.Pool, form: asyncpg.Connection, program: uuid.UUID
) -> None:
    cid = await insert_campaign(
        form,
        program_id=program,
        status="DRAFT",
        segment="CSV",
        message_text="Draft",
        member_ids=["M-pk-a-1", "M-pk-a-2", "M-pk-a-3"],
    )

    async def counted() -> bool:
        return (await campaign(pool, cid))["audience_counted_at"] is not None

    await wait_until(counted, timeout=15)
    assert (await campaign(pool, cid))["recipient_count"] == 3
    await form.execute("UPDATE push_campaigns SET status = 'PENDING' WHERE id = $1", cid)
    row = await _finished(pool, cid)
    assert (row["status"], row["sent_count"]) == ("COMPLETED", 3)


async def _a_campaign_cancelled_mid_blast(
    pool: asyncpg.Pool, form: asyncpg.Connection, program: uuid.UUID
) -> None:
    cid = await insert_campaign(
        form,
        program_id=program,
        segment="CSV",
        message_text="Flash sale",
        member_ids=[f"M-pk-b-{n}" for n in range(1, 601)],
    )

    async def sending() -> bool:
        return bool((await campaign(pool, cid))["sent_count"] >= 20)

    await wait_until(sending, timeout=30)
    await form.execute("UPDATE push_campaigns SET status = 'CANCELLED' WHERE id = $1", cid)
    row = await _finished(pool, cid)
    assert row["status"] == "CANCELLED"
    assert row["skipped_count"] > 0
    assert row["sent_count"] + row["failed_count"] + row["skipped_count"] == 600


async def _transactions_synced(
    pool: asyncpg.Pool, fake: FakePassKit, passes: list[uuid.UUID]
) -> None:
    """Ten earns on each of 100 passes: each pass ends showing 10 points."""
    await pool.execute(
        "SELECT process_membership_transaction(p, 1, 'EARN', NULL, NULL) "
        "FROM unnest($1::uuid[]) p, generate_series(1, 10)",
        passes,
    )
    ids = await pool.fetch(
        "SELECT passkit_internal_id FROM passes_master WHERE id = ANY($1::uuid[])", passes
    )

    def shown() -> bool:
        return all(fake.points_of(r["passkit_internal_id"]) == 10 for r in ids)

    async def settled() -> bool:
        owed = await pool.fetchval(
            "SELECT count(*) FROM loyaltyd.pass_syncs WHERE pass_id = ANY($1::uuid[]) "
            "AND state <> 'idle'",
            passes,
        )
        return owed == 0 and shown()

    await wait_until(settled, timeout=60)


async def _birthdays_synced(pool: asyncpg.Pool, fake: FakePassKit, passes: list[uuid.UUID]) -> None:
    assert await pool.fetchval(
        "SELECT count(*) FROM birthday_logs WHERE pass_id = ANY($1::uuid[])", passes
    ) == len(passes)
    ids = await pool.fetch(
        "SELECT passkit_internal_id FROM passes_master WHERE id = ANY($1::uuid[])", passes
    )
    await wait_until(
        lambda: all(fake.points_of(r["passkit_internal_id"]) == 25 for r in ids), timeout=30
    )
