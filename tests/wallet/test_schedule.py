"""When a sweep is due: daily at LOYALTYD_WALLET_SWEEP_HOUR in the program's time zone, at
start-up when the last completed sweep is older than that hour, and not again within ten
minutes of a failed one (while one runs, its advisory lock keeps a second out)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from daemon.store.wallet import sweeps_due


async def _program(pool: asyncpg.Pool, **cols: object) -> uuid.UUID:
    values = {"name": "Sweepy", "passkit_program_id": "prog", **cols}
    names = ", ".join(values)
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    program: uuid.UUID = await pool.fetchval(
        f"INSERT INTO programs ({names}) VALUES ({params}) RETURNING id", *values.values()
    )
    return program


async def _sweep_row(
    pool: asyncpg.Pool, program: uuid.UUID, state: str, ago: timedelta, owner: uuid.UUID | None
) -> None:
    await pool.execute(
        "INSERT INTO loyaltyd.wallet_sweeps (program_id, protocol, state, started_at, owner) "
        "VALUES ($1, 'MEMBERSHIP', $2, now() - $3::interval, $4)",
        program,
        state,
        ago,
        owner,
    )


async def _due(pool: asyncpg.Pool, hour: int) -> set[tuple[uuid.UUID, str]]:
    return {(s.program_id, s.protocol) for s in await sweeps_due(pool, hour)}


async def test_every_class_a_program_names_is_due_until_swept(pool: asyncpg.Pool) -> None:
    program = await _program(
        pool, passkit_coupon_campaign_id="coupons", passkit_production_id="show"
    )
    await _program(pool, name="No PassKit", passkit_program_id=None)
    assert await _due(pool, 4) == {
        (program, "MEMBERSHIP"),
        (program, "COUPON"),
        (program, "EVENT_TICKET"),
    }


@pytest.mark.parametrize(
    ("state", "ago_minutes", "retry_in_minutes", "live_owner", "due"),
    [
        ("completed", 5, None, False, False),  # swept since the last sweep hour
        ("completed", 25 * 60, None, False, True),  # more than a day ago
        ("failed", 5, 5, False, False),  # a passing trouble: a little wait first
        ("failed", 15, -5, False, True),  # …then tried again
        ("failed", 15, None, False, False),  # failed for good: at the next sweep hour
        ("failed", 25 * 60, None, False, True),  # …which has come
        # Being swept (or its daemon died): due, and the sweep's lock decides who runs it.
        ("running", 1, None, True, True),
        ("running", 1, None, False, True),
    ],
)
async def test_what_the_last_sweep_says_about_the_next(
    pool: asyncpg.Pool,
    state: str,
    ago_minutes: int,
    retry_in_minutes: int | None,
    live_owner: bool,
    due: bool,
) -> None:
    program = await _program(pool)
    owner = uuid.uuid4()
    if live_owner:
        await pool.execute(
            "INSERT INTO loyaltyd.instances (id, host, pid, started_at, heartbeat_at) "
            "VALUES ($1, 'h', 1, now(), now())",
            owner,
        )
    # The sweep hour an hour ago in the program's time zone (UTC): the latest one has passed.
    hour = (datetime.now(UTC) - timedelta(hours=1)).hour
    await _sweep_row(pool, program, state, timedelta(minutes=ago_minutes), owner)
    if retry_in_minutes is not None:
        await pool.execute(
            "UPDATE loyaltyd.wallet_sweeps SET retry_at = now() + make_interval(mins => $1)",
            retry_in_minutes,
        )
    assert await _due(pool, hour) == ({(program, "MEMBERSHIP")} if due else set())


async def test_the_sweep_hour_is_the_programs_local_hour(pool: asyncpg.Pool) -> None:
    """A program in Tokyo was swept 2 hours ago (UTC); its local sweep hour has come since."""
    now_tokyo_hour = (datetime.now(UTC) + timedelta(hours=9)).hour
    program = await _program(pool, timezone="Asia/Tokyo")
    await _sweep_row(pool, program, "completed", timedelta(hours=2), None)
    passed = (now_tokyo_hour - 1) % 24  # an hour ago in Tokyo: after the last sweep
    assert await _due(pool, passed) == {(program, "MEMBERSHIP")}
    ahead = (now_tokyo_hour + 2) % 24  # the latest such hour was 22 hours ago: before it
    assert await _due(pool, ahead) == set()
