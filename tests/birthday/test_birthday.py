"""Birthday bot on real Postgres with a pinned clock: one gift per pass per year, in each
program's own timezone, on the right day only, atomically with its log row."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from structlog.testing import LogCapture

from daemon.birthday.bot import (
    BirthdayBot,
    BirthdaySummary,
    birthday_tick,
    run_birthdays,
    schedule_birthdays,
)
from daemon.cli.commands import birthday_run
from daemon.cli.main import build_parser
from daemon.core.config import Settings
from daemon.store.queries import q
from tests.factories import make_pass, make_program, make_user

MESSAGE = "Happy birthday {first_name|friend}! {points} points at {program_name}."
# 12:00 UTC on 15 June 2024 is 14:00 in Paris, the same local day.
NOON = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)
BORN_TODAY = date(1990, 6, 15)


async def _program(db: asyncpg.Pool | asyncpg.Connection, **cols: Any) -> uuid.UUID:
    values: dict[str, Any] = {
        "birthday_bot_enabled": True,
        "birthday_reward_points": 100,
        "birthday_message": MESSAGE,
        "timezone": "Europe/Paris",
    }
    values.update(cols)
    return await make_program(db, **values)


async def _gifts(db: asyncpg.Pool | asyncpg.Connection, pass_id: uuid.UUID) -> list[asyncpg.Record]:
    """The BIRTHDAY transactions of a pass, joined with their log rows."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT t.points_delta, t.balance_after, t.notification_message, t.external_ref, "
        "       b.year, b.celebrated_on, b.transaction_id = t.id AS linked "
        "FROM transactions t LEFT JOIN birthday_logs b ON b.transaction_id = t.id "
        "WHERE t.pass_id = $1 AND t.kind = 'BIRTHDAY' ORDER BY t.created_at",
        pass_id,
    )
    return rows


async def _balance(db: asyncpg.Pool | asyncpg.Connection, pass_id: uuid.UUID) -> int:
    balance: int = await db.fetchval(
        "SELECT points_balance FROM protocol_membership WHERE pass_id = $1", pass_id
    )
    return balance


async def _count(db: asyncpg.Pool, sql: str, *args: Any) -> int:
    value: int = await db.fetchval(sql, *args)
    return value


@contextmanager
def capture_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Like structlog.testing.capture_logs, but with the ids bound by contextvars merged in."""
    capture = LogCapture()
    previous = structlog.get_config()["processors"]
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        yield capture.entries
    finally:
        structlog.configure(processors=previous)


# --- the gift itself ---------------------------------------------------------------------


async def test_a_member_born_today_gets_points_and_the_rendered_message(
    pool: asyncpg.Pool,
) -> None:
    program = await _program(pool, name="Joe's Pizza")
    pass_id = await make_pass(pool, program, points=50, birth_date=BORN_TODAY)

    summary = await run_birthdays(pool, now=NOON)

    [gift] = await _gifts(pool, pass_id)
    assert gift["points_delta"] == 100 and gift["balance_after"] == 150
    assert gift["notification_message"] == "Happy birthday Ada! 150 points at Joe's Pizza."
    assert gift["external_ref"] == f"birthday:2024:{pass_id}"
    assert gift["year"] == 2024 and gift["celebrated_on"] == date(2024, 6, 15)
    assert gift["linked"] is True
    assert await _balance(pool, pass_id) == 150
    [result] = summary.programs
    assert (result.due, result.gifted, result.messaged, result.failed) == (1, 1, 1, 0)
    assert result.local_date == date(2024, 6, 15) and summary.ok


async def test_the_gift_leaves_a_pending_pass_sync_carrying_the_message(
    pool: asyncpg.Pool,
) -> None:
    """The message reaches the pass through the sync queue (a table), so a daemon restarted
    right after the commit still delivers it; nothing is sent to PassKit from here."""
    program = await _program(pool)
    pass_id = await make_pass(pool, program, points=0, birth_date=BORN_TODAY)
    await run_birthdays(pool, now=NOON)
    sync = await pool.fetchrow(
        "SELECT state, message, points_balance FROM loyaltyd.pass_syncs WHERE pass_id = $1", pass_id
    )
    assert sync is not None and sync["state"] == "pending"
    assert sync["message"] is not None and sync["message"].startswith("Happy birthday Ada!")
    assert sync["points_balance"] == 100


async def test_five_runs_in_one_day_give_one_gift(pool: asyncpg.Pool) -> None:
    program = await _program(pool)
    pass_id = await make_pass(pool, program, points=0, birth_date=BORN_TODAY)
    # local 00:05, 08:00, 14:00, 20:00 and 23:59 in Paris (UTC+2)
    for hours in (-11.9, -4, 2, 8, 11.98):
        await run_birthdays(pool, now=NOON + timedelta(hours=hours))
    assert len(await _gifts(pool, pass_id)) == 1
    assert await _balance(pool, pass_id) == 100
    assert await _count(pool, "SELECT count(*) FROM birthday_logs") == 1


async def test_a_second_run_counts_nothing_new(pool: asyncpg.Pool) -> None:
    program = await _program(pool)
    await make_pass(pool, program, birth_date=BORN_TODAY)
    await run_birthdays(pool, now=NOON)
    again = await run_birthdays(pool, now=NOON + timedelta(minutes=30))
    [result] = again.programs
    assert (result.due, result.gifted, result.already_gifted) == (0, 0, 0)


@pytest.fixture
async def second_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """Another daemon's pool on the same database."""
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=5)
    assert p is not None
    yield p
    await p.close()


async def test_two_daemons_ticking_at_once_give_each_pass_one_gift(
    pool: asyncpg.Pool, second_pool: asyncpg.Pool
) -> None:
    program = await _program(pool)
    passes = [await make_pass(pool, program, points=0, birth_date=BORN_TODAY) for _ in range(40)]
    first, second = await asyncio.gather(
        run_birthdays(pool, now=NOON), run_birthdays(second_pool, now=NOON)
    )
    assert first.gifted + second.gifted == 40
    assert first.failed == second.failed == 0
    for pass_id in passes:
        assert len(await _gifts(pool, pass_id)) == 1
        assert await _balance(pool, pass_id) == 100
    assert await _count(pool, "SELECT count(*) FROM transactions") == 40


# --- the right day, in the program's timezone ---------------------------------------------


async def test_auckland_and_los_angeles_each_celebrate_their_own_date_at_one_instant(
    pool: asyncpg.Pool,
) -> None:
    """11:00 UTC on 10 March 2024 is 11 March in Auckland and 10 March in Los Angeles."""
    instant = datetime(2024, 3, 10, 11, 0, tzinfo=UTC)
    auckland = await _program(pool, name="Kiwi Cafe", timezone="Pacific/Auckland")
    la = await _program(pool, name="LA Tacos", timezone="America/Los_Angeles")
    born_10 = await make_user(pool, birth_date=date(1980, 3, 10))
    born_11 = await make_user(pool, birth_date=date(1980, 3, 11))
    akl_10 = await make_pass(pool, auckland, user_id=born_10)
    akl_11 = await make_pass(pool, auckland, user_id=born_11)
    la_10 = await make_pass(pool, la, user_id=born_10)
    la_11 = await make_pass(pool, la, user_id=born_11)

    summary = await run_birthdays(pool, now=instant)

    assert [len(await _gifts(pool, p)) for p in (akl_10, akl_11, la_10, la_11)] == [0, 1, 1, 0]
    dates = {p.program_name: p.local_date for p in summary.programs}
    assert dates == {"Kiwi Cafe": date(2024, 3, 11), "LA Tacos": date(2024, 3, 10)}
    [akl_gift] = await _gifts(pool, akl_11)
    assert akl_gift["celebrated_on"] == date(2024, 3, 11)


async def test_a_daemon_down_all_day_catches_up_at_23_local(pool: asyncpg.Pool) -> None:
    program = await _program(pool)
    pass_id = await make_pass(pool, program, birth_date=BORN_TODAY)
    await run_birthdays(pool, now=datetime(2024, 6, 15, 21, 0, tzinfo=UTC))  # 23:00 in Paris
    [gift] = await _gifts(pool, pass_id)
    assert gift["celebrated_on"] == date(2024, 6, 15)


async def test_a_missed_day_is_never_celebrated_the_next_day(pool: asyncpg.Pool) -> None:
    """Down from before the birthday until 00:30 local the next day: no late greeting."""
    program = await _program(pool)
    missed = await make_pass(pool, program, birth_date=BORN_TODAY)
    next_day = await make_pass(pool, program, birth_date=date(1990, 6, 16))
    summary = await run_birthdays(pool, now=datetime(2024, 6, 15, 22, 30, tzinfo=UTC))
    assert await _gifts(pool, missed) == []
    assert len(await _gifts(pool, next_day)) == 1
    assert summary.programs[0].local_date == date(2024, 6, 16)


@pytest.mark.parametrize(
    ("born", "instant", "celebrated"),
    [
        (date(2000, 2, 29), datetime(2023, 2, 28, 12, tzinfo=UTC), True),
        (date(2000, 2, 29), datetime(2023, 3, 1, 12, tzinfo=UTC), False),
        (date(2000, 2, 29), datetime(2024, 2, 28, 12, tzinfo=UTC), False),
        (date(2000, 2, 29), datetime(2024, 2, 29, 12, tzinfo=UTC), True),
        (date(1999, 2, 28), datetime(2023, 2, 28, 12, tzinfo=UTC), True),
        (date(1999, 2, 28), datetime(2024, 2, 29, 12, tzinfo=UTC), False),
    ],
)
async def test_29_february_birthdays_fall_on_28_february_in_other_years(
    pool: asyncpg.Pool, born: date, instant: datetime, celebrated: bool
) -> None:
    program = await _program(pool, timezone="UTC")
    pass_id = await make_pass(pool, program, birth_date=born)
    await run_birthdays(pool, now=instant)
    assert len(await _gifts(pool, pass_id)) == (1 if celebrated else 0)


async def test_a_leap_day_member_gifted_on_28_february_is_not_gifted_again_on_1_march(
    pool: asyncpg.Pool,
) -> None:
    program = await _program(pool, timezone="UTC")
    pass_id = await make_pass(pool, program, birth_date=date(2000, 2, 29))
    await run_birthdays(pool, now=datetime(2023, 2, 28, 23, 30, tzinfo=UTC))
    await run_birthdays(pool, now=datetime(2023, 3, 1, 0, 30, tzinfo=UTC))
    assert len(await _gifts(pool, pass_id)) == 1


async def test_the_next_year_brings_the_next_gift(pool: asyncpg.Pool) -> None:
    program = await _program(pool)
    pass_id = await make_pass(pool, program, points=0, birth_date=BORN_TODAY)
    await run_birthdays(pool, now=NOON)
    await run_birthdays(pool, now=NOON.replace(year=2025))
    assert [g["year"] for g in await _gifts(pool, pass_id)] == [2024, 2025]
    assert await _balance(pool, pass_id) == 200


# --- who is celebrated ---------------------------------------------------------------------


async def test_only_active_membership_passes_of_users_with_a_birth_date_are_selected(
    pool: asyncpg.Pool,
) -> None:
    program = await _program(pool)
    installed = await make_pass(pool, program, birth_date=BORN_TODAY)
    inactive = await make_pass(pool, program, birth_date=BORN_TODAY, is_active=False)
    no_birth_date = await make_pass(pool, program, birth_date=None)
    coupon = await make_pass(pool, program, birth_date=BORN_TODAY, protocol="COUPON")
    other_day = await make_pass(pool, program, birth_date=date(1990, 6, 14))
    disabled = await make_program(pool, birthday_reward_points=100)  # bot off (the default)
    in_disabled = await make_pass(pool, disabled, birth_date=BORN_TODAY)

    summary = await run_birthdays(pool, now=NOON)

    assert len(await _gifts(pool, installed)) == 1
    for pass_id in (inactive, no_birth_date, other_day, in_disabled):
        assert await _gifts(pool, pass_id) == []
    assert await _count(pool, "SELECT count(*) FROM transactions WHERE pass_id = $1", coupon) == 0
    assert [p.program_id for p in summary.programs] == [program]


async def test_a_pass_not_in_a_wallet_gets_the_points_without_the_message(
    pool: asyncpg.Pool,
) -> None:
    program = await _program(pool)
    never_installed = await make_pass(pool, program, birth_date=BORN_TODAY, status=None)
    uninstalled = await make_pass(pool, program, birth_date=BORN_TODAY, status="UNINSTALLED")
    summary = await run_birthdays(pool, now=NOON)
    for pass_id in (never_installed, uninstalled):
        [gift] = await _gifts(pool, pass_id)
        assert gift["points_delta"] == 100 and gift["notification_message"] is None
    assert (summary.programs[0].gifted, summary.programs[0].messaged) == (2, 0)


async def test_zero_points_sends_the_message_only_to_installed_passes(pool: asyncpg.Pool) -> None:
    program = await _program(
        pool, birthday_reward_points=0, birthday_message="Cheers {first_name}!"
    )
    installed = await make_pass(pool, program, points=40, birth_date=BORN_TODAY)
    not_installed = await make_pass(pool, program, points=40, birth_date=BORN_TODAY, status=None)
    await run_birthdays(pool, now=NOON)
    [gift] = await _gifts(pool, installed)
    assert (gift["points_delta"], gift["balance_after"]) == (0, 40)
    assert gift["notification_message"] == "Cheers Ada!"
    assert await _balance(pool, installed) == 40
    assert await _gifts(pool, not_installed) == []
    assert await _count(pool, "SELECT count(*) FROM birthday_logs") == 1


async def test_no_message_configured_gives_the_points_alone(pool: asyncpg.Pool) -> None:
    program = await _program(pool, birthday_message=None)
    pass_id = await make_pass(pool, program, birth_date=BORN_TODAY)
    await run_birthdays(pool, now=NOON)
    [gift] = await _gifts(pool, pass_id)
    assert gift["points_delta"] == 100 and gift["notification_message"] is None


async def test_zero_points_and_no_message_gives_nothing_and_logs_why(pool: asyncpg.Pool) -> None:
    program = await _program(pool, birthday_reward_points=0, birthday_message="  ")
    pass_id = await make_pass(pool, program, birth_date=BORN_TODAY)
    with capture_logs() as logs:
        await run_birthdays(pool, now=NOON)
    assert await _gifts(pool, pass_id) == []
    assert any(e["event"] == "birthday_program_has_nothing_to_give" for e in logs)


async def test_points_placeholder_shows_the_balance_after_the_gift_with_a_fallback_name(
    pool: asyncpg.Pool,
) -> None:
    program = await _program(pool, name="Joe's", birthday_reward_points=25)
    user = await make_user(pool, first_name=None, birth_date=BORN_TODAY)
    pass_id = await make_pass(pool, program, user_id=user, points=975)
    await run_birthdays(pool, now=NOON)
    [gift] = await _gifts(pool, pass_id)
    assert gift["notification_message"] == "Happy birthday friend! 1000 points at Joe's."


# --- failures stay contained ---------------------------------------------------------------


async def test_a_program_with_an_unknown_placeholder_fails_alone(pool: asyncpg.Pool) -> None:
    broken = await _program(pool, name="Broken", birthday_message="Hi {nickname}!")
    fine = await _program(pool, name="Fine")
    in_broken = await make_pass(pool, broken, birth_date=BORN_TODAY)
    in_fine = await make_pass(pool, fine, birth_date=BORN_TODAY)

    with capture_logs() as logs:
        summary = await run_birthdays(pool, now=NOON)

    assert await _gifts(pool, in_broken) == []
    assert len(await _gifts(pool, in_fine)) == 1
    by_name = {p.program_name: p for p in summary.programs}
    assert by_name["Broken"].error is not None and "{nickname}" in by_name["Broken"].error
    assert by_name["Fine"].error is None and by_name["Fine"].gifted == 1
    assert summary.failed_programs == 1 and not summary.ok
    failed = [e for e in logs if e["event"] == "birthday_program_failed"]
    assert [e["program_id"] for e in failed] == [str(broken)]


async def test_a_program_with_an_unknown_timezone_fails_alone(pool: asyncpg.Pool) -> None:
    """Rows written before the timezone trigger existed (an old Supabase database)."""
    await pool.execute("ALTER TABLE programs DISABLE TRIGGER programs_timezone_must_be_iana")
    broken = await _program(pool, name="Mars", timezone="Mars/Olympus_Mons")
    fine = await _program(pool, name="Earth")
    await make_pass(pool, broken, birth_date=BORN_TODAY)
    in_fine = await make_pass(pool, fine, birth_date=BORN_TODAY)

    summary = await run_birthdays(pool, now=NOON)

    assert len(await _gifts(pool, in_fine)) == 1
    by_name = {p.program_name: p for p in summary.programs}
    assert by_name["Mars"].error is not None and "unknown timezone" in by_name["Mars"].error
    assert await _count(pool, "SELECT count(*) FROM birthday_logs") == 1


async def test_a_refused_gift_rolls_back_its_log_row_and_is_retried_next_tick(
    pool: asyncpg.Pool,
) -> None:
    """The log row and the points commit together: a failure between them leaves neither,
    so the member is not marked celebrated without a gift (nor gifted without a log)."""
    program = await _program(pool)
    unlucky = await make_pass(pool, program, birth_date=BORN_TODAY)
    lucky = await make_pass(pool, program, birth_date=BORN_TODAY)
    await pool.execute(
        f"""
        CREATE FUNCTION pg_temp_fail() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.pass_id = '{unlucky}' THEN RAISE EXCEPTION 'ledger unavailable'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER fail_one_pass BEFORE INSERT ON transactions
            FOR EACH ROW EXECUTE FUNCTION pg_temp_fail();
        """
    )

    with capture_logs() as logs:
        first = await run_birthdays(pool, now=NOON)

    assert (first.programs[0].gifted, first.programs[0].failed) == (1, 1)
    assert await _count(pool, "SELECT count(*) FROM birthday_logs WHERE pass_id = $1", unlucky) == 0
    assert await _balance(pool, unlucky) == 0
    assert len(await _gifts(pool, lucky)) == 1
    assert any(e["event"] == "birthday_gift_failed" and e["pass_id"] == str(unlucky) for e in logs)

    await pool.execute("DROP TRIGGER fail_one_pass ON transactions")
    second = await run_birthdays(pool, now=NOON + timedelta(hours=1))
    assert second.programs[0].gifted == 1
    assert len(await _gifts(pool, unlucky)) == 1 and len(await _gifts(pool, lucky)) == 1


async def test_a_lost_log_row_never_means_a_second_gift(pool: asyncpg.Pool) -> None:
    """Someone deletes the log rows: the transaction's external_ref still holds."""
    program = await _program(pool)
    pass_id = await make_pass(pool, program, points=0, birth_date=BORN_TODAY)
    await run_birthdays(pool, now=NOON)
    await pool.execute("DELETE FROM birthday_logs")
    await run_birthdays(pool, now=NOON + timedelta(hours=1))
    assert await _balance(pool, pass_id) == 100
    assert await _count(pool, "SELECT count(*) FROM transactions") == 1
    assert (
        await _count(pool, "SELECT count(*) FROM birthday_logs WHERE transaction_id IS NOT NULL")
        == 1
    )


async def test_a_tick_that_cannot_reach_the_database_reports_instead_of_raising(
    pool: asyncpg.Pool,
) -> None:
    await pool.close()
    with capture_logs() as logs:
        summary = await birthday_tick(pool, lambda: NOON)
    assert summary.error is not None and not summary.ok
    assert any(e["event"] == "birthday_tick_failed" for e in logs)


# --- hand-runs -----------------------------------------------------------------------------


async def test_a_hand_run_for_another_date_is_refused_without_force(pool: asyncpg.Pool) -> None:
    program = await _program(pool)
    pass_id = await make_pass(pool, program, birth_date=date(1990, 6, 14))
    refused = await run_birthdays(pool, now=NOON, on_date=date(2024, 6, 14))
    assert await _gifts(pool, pass_id) == []
    assert refused.programs[0].error is not None
    assert "already past" in refused.programs[0].error

    forced = await run_birthdays(pool, now=NOON, on_date=date(2024, 6, 14), force=True)
    [gift] = await _gifts(pool, pass_id)
    assert gift["celebrated_on"] == date(2024, 6, 14) and forced.ok


async def test_a_hand_run_for_one_program_leaves_the_others_alone(pool: asyncpg.Pool) -> None:
    chosen = await _program(pool)
    other = await _program(pool)
    in_chosen = await make_pass(pool, chosen, birth_date=BORN_TODAY)
    in_other = await make_pass(pool, other, birth_date=BORN_TODAY)
    await run_birthdays(pool, now=NOON, program_id=chosen)
    assert len(await _gifts(pool, in_chosen)) == 1
    assert await _gifts(pool, in_other) == []


async def test_a_hand_run_names_a_disabled_or_unknown_program(pool: asyncpg.Pool) -> None:
    disabled = await make_program(pool)
    off = await run_birthdays(pool, now=NOON, program_id=disabled)
    assert off.programs[0].error == "the birthday bot is not enabled for this program"
    missing = await run_birthdays(pool, now=NOON, program_id=uuid.uuid4())
    assert missing.error is not None and "no program" in missing.error


async def test_the_summary_serialises_to_json(pool: asyncpg.Pool) -> None:
    program = await _program(pool, name="Joe's")
    await make_pass(pool, program, birth_date=BORN_TODAY)
    summary: BirthdaySummary = await run_birthdays(pool, now=NOON)
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["ok"] is True and data["gifted"] == 1 and data["now"] == NOON.isoformat()
    [entry] = data["programs"]
    assert entry["program_id"] == str(program) and entry["local_date"] == "2024-06-15"
    assert (entry["gifted"], entry["messaged"], entry["points"], entry["error"]) == (
        1,
        1,
        100,
        None,
    )


# --- the selection uses the birthday index -------------------------------------------------


async def _plan_text(conn: asyncpg.Connection, program: uuid.UUID, generic: bool) -> str:
    """EXPLAIN of the due-passes query, as planned for these values or as a generic plan (what
    a prepared statement reused many times gets)."""
    sql = q("birthday_passes_due").rstrip(";")
    await conn.execute(f"PREPARE due(uuid, int[], int, boolean) AS {sql}")
    mode = "force_generic_plan" if generic else "force_custom_plan"
    await conn.execute(f"SET plan_cache_mode = {mode}")
    rows = await conn.fetch(f"EXPLAIN EXECUTE due('{program}', '{{615}}', 2024, true)")
    await conn.execute("DEALLOCATE due")
    return "\n".join(r[0] for r in rows)


async def test_the_due_passes_query_uses_the_birthday_index(conn: asyncpg.Connection) -> None:
    """50,000 members (a tenth without a birth date) in two programs, with last year's log
    rows, statistics gathered: the planner picks users_birthday_month_day_idx by itself (no
    enable_seqscan tricks). bench/bench_birthday_explain.py shows it on 1,000,000 users."""
    program = await _program(conn)
    other = await _program(conn)
    await conn.execute(
        f"""
        INSERT INTO users (email, first_name, birth_date)
        SELECT 'u' || g || '@example.com', 'U',
               CASE WHEN g % 10 <> 0 THEN date '1940-01-01' + (g * 7919) % 25000 END
        FROM generate_series(1, 50000) g;
        INSERT INTO passes_master (program_id, user_id, external_id, status)
        SELECT CASE WHEN random() < 0.5 THEN '{program}'::uuid ELSE '{other}'::uuid END,
               id, 'M' || id,
               'INSTALLED'
        FROM users;
        INSERT INTO birthday_logs (pass_id, program_id, year, celebrated_on)
        SELECT id, program_id, 2023, date '2023-06-15' FROM passes_master;
        ANALYZE;
        """
    )
    for generic in (False, True):
        plan = await _plan_text(conn, program, generic)
        assert "users_birthday_month_day_idx" in plan, plan
        assert "Seq Scan on users" not in plan, plan


# --- scheduling and the command ------------------------------------------------------------


async def test_the_scheduled_job_runs_at_start_up_then_every_interval(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> None:
    program = await _program(pool)
    pass_id = await make_pass(pool, program, birth_date=BORN_TODAY)
    scheduler = AsyncIOScheduler(timezone=UTC)
    bot = BirthdayBot(pool, make_settings(), lambda: NOON)
    schedule_birthdays(scheduler, bot._tick, make_settings(loyaltyd_birthday_interval_minutes=20))
    [job] = scheduler.get_jobs()
    assert job.trigger.interval == timedelta(minutes=20)
    assert (job.max_instances, job.coalesce, job.misfire_grace_time) == (1, True, 1200)

    scheduler.start()
    try:
        for _ in range(200):
            if await _gifts(pool, pass_id):
                break
            await asyncio.sleep(0.05)
    finally:
        scheduler.shutdown(wait=False)
    assert len(await _gifts(pool, pass_id)) == 1


async def test_the_bot_runs_supervised_stops_on_request_and_a_crash_escapes(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> None:
    """Under the daemon's TaskGroup: a stop returns once the tick in progress is done, and a
    tick that raises something other than database trouble ends `run` with that error."""
    program = await _program(pool)
    pass_id = await make_pass(pool, program, birth_date=BORN_TODAY)
    stopping = asyncio.Event()
    bot = BirthdayBot(pool, make_settings(), lambda: NOON)
    running = asyncio.create_task(bot.run(stopping, grace=5.0))
    for _ in range(200):
        if await _gifts(pool, pass_id):
            break
        await asyncio.sleep(0.05)
    assert len(await _gifts(pool, pass_id)) == 1
    stopping.set()
    await asyncio.wait_for(running, timeout=5)

    def broken_clock() -> datetime:
        raise RuntimeError("clock broke")

    crashing = BirthdayBot(pool, make_settings(), broken_clock)
    with pytest.raises(RuntimeError, match="clock broke"):
        await asyncio.wait_for(crashing.run(asyncio.Event(), grace=5.0), timeout=5)


async def _command(settings: Settings, *argv: str) -> int:
    args = build_parser().parse_args(["birthday-run", *argv])
    with capture_logs():  # the CLI logs to stderr; keep stdout to the command's own output
        code: int = await birthday_run.run(settings, args)
    return code


async def test_birthday_run_command_refuses_another_day_then_forces_it(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    program = await _program(pool, name="Joe's", timezone="UTC")
    pass_id = await make_pass(pool, program, birth_date=date(1990, 1, 2))
    settings = make_settings()

    assert await _command(settings, "--date", "2001-01-02", "--program", str(program)) == 1
    assert "NOT celebrated" in capsys.readouterr().out
    assert await _gifts(pool, pass_id) == []

    assert await _command(settings, "--date", "2001-01-02", "--force", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["gifted"] == 1 and report["programs"][0]["local_date"] == "2001-01-02"
    [gift] = await _gifts(pool, pass_id)
    assert gift["year"] == 2001


async def test_birthday_run_command_without_birthdays_succeeds(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    await _program(pool, name="Joe's")
    assert await _command(make_settings()) == 0
    out = capsys.readouterr().out
    assert "Joe's" in out and "0 gifted" in out
