"""The running daemon celebrates today's birthdays on its own, and the gift reaches the pass
through the sync pipeline (points and message), exactly once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

import asyncpg

from daemon.core.config import Settings
from daemon.passkit.suffix import visible_text
from tests.factories import make_pass, make_program
from tests.harness import fake_passkit, running_daemon, settings_for, wait_until


async def test_daemon_start_up_tick_gifts_points_and_message_through_the_sync(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    today = datetime.now(UTC).date()
    birthday = date(1990, today.month, 28 if (today.month, today.day) == (2, 29) else today.day)
    program = await make_program(
        pool,
        timezone="UTC",
        birthday_bot_enabled=True,
        birthday_reward_points=50,
        birthday_message="Happy birthday {first_name|friend}! You now have {points} points.",
    )
    pass_id = await make_pass(pool, program, points=10, birth_date=birthday)
    pk = await pool.fetchval("SELECT passkit_internal_id FROM passes_master WHERE id = $1", pass_id)
    async with fake_passkit() as fake:
        async with running_daemon(settings_for(make_settings, fake.url), database_url):
            await wait_until(lambda: len(fake.messages_for(pk)) == 1, timeout=15)
            await wait_until(lambda: fake.points_of(pk) == 60)
        assert [visible_text(m) for m in fake.messages_for(pk)] == [
            "Happy birthday Ada! You now have 60 points."
        ]
    assert (
        await pool.fetchval("SELECT count(*) FROM birthday_logs WHERE pass_id = $1", pass_id) == 1
    )


async def test_a_gift_to_a_pass_without_a_passkit_id_is_recorded_and_its_sync_skipped(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    """An imported member whose pass PassKit never issued gets the points only: the gift and
    its transaction are recorded, the sync is skipped with its reason, never dead."""
    today = datetime.now(UTC).date()
    birthday = date(1990, today.month, 28 if (today.month, today.day) == (2, 29) else today.day)
    program = await make_program(
        pool,
        timezone="UTC",
        birthday_bot_enabled=True,
        birthday_reward_points=50,
        birthday_message="Happy birthday!",
    )
    pass_id = await make_pass(
        pool, program, points=10, birth_date=birthday, passkit_internal_id=None
    )
    async with fake_passkit() as fake:
        async with running_daemon(settings_for(make_settings, fake.url), database_url):

            async def synced() -> bool:
                state = await pool.fetchval(
                    "SELECT state FROM loyaltyd.pass_syncs WHERE pass_id = $1", pass_id
                )
                return bool(state == "idle")

            await wait_until(synced, timeout=15)
        assert fake.requests == []
    row = await pool.fetchrow(
        "SELECT state, last_error, last_synced_at FROM loyaltyd.pass_syncs WHERE pass_id = $1",
        pass_id,
    )
    assert row["state"] == "idle" and row["last_synced_at"] is None
    assert "no passkit_internal_id" in row["last_error"]
    assert (
        await pool.fetchval(
            "SELECT points_balance FROM protocol_membership WHERE pass_id = $1", pass_id
        )
        == 60
    )
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM transactions WHERE pass_id = $1 AND kind = 'BIRTHDAY'", pass_id
        )
        == 1
    )
    assert (
        await pool.fetchval("SELECT count(*) FROM birthday_logs WHERE pass_id = $1", pass_id) == 1
    )
