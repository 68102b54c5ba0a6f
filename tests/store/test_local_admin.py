"""The local admin of a local run: an operator and the admin of every program, those there
when it starts and those created later (sql/064)."""

from __future__ import annotations

import asyncpg

from daemon.store.local import local_admin
from tests.factories import make_program


async def test_the_local_admin_administers_every_program_now_and_later(
    pool: asyncpg.Pool,
) -> None:
    before = await make_program(pool)
    user_id, has_password = await local_admin(pool, "admin@localhost")
    assert not has_password
    after = await make_program(pool)
    roles = dict(
        await pool.fetch(
            "SELECT program_id, role FROM loyaltyd.console_memberships WHERE user_id = $1",
            user_id,
        )
    )
    assert roles == {before: "admin", after: "admin"}
    assert await pool.fetchval("SELECT operator FROM loyaltyd.console_users WHERE id = $1", user_id)


async def test_others_gain_nothing_from_a_new_program(pool: asyncpg.Pool) -> None:
    await pool.execute("INSERT INTO loyaltyd.console_users (email) VALUES ('ann@example.com')")
    await make_program(pool)
    assert await pool.fetchval("SELECT count(*) FROM loyaltyd.console_memberships") == 0


async def test_a_second_start_keeps_the_admin_and_knows_their_password(
    pool: asyncpg.Pool,
) -> None:
    first, _ = await local_admin(pool, "admin@localhost")
    await pool.execute("UPDATE loyaltyd.console_users SET password_hash = 'x' WHERE id = $1", first)
    second, has_password = await local_admin(pool, "admin@localhost")
    assert second == first and has_password
