"""Birthday bot at scale: the due-passes query on 1,000,000 users uses the birthday index.

Seeds N users (a tenth without a birth date) with one membership pass each in one of two
programs, plus last year's birthday_logs for every pass (a database that has run for a year),
gathers statistics, then prints:

1. EXPLAIN (ANALYZE, BUFFERS) of `birthday_passes_due` for 15 June, as planned for the values
   and as the generic plan a long-lived prepared statement may get;
2. a real run of the bot for that day: gifts, seconds, gifts per second.

    python -m bench.bench_birthday_explain [--database-url postgresql://...] [--users 1000000]

`--database-url` is an admin DSN (a scratch database is created and dropped); without it an
embedded Postgres is started. Exits 1 if either plan does not use users_birthday_month_day_idx.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime

import asyncpg

from bench._common import bench_database
from daemon.birthday.bot import run_birthdays
from daemon.birthday.rules import birthday_keys
from daemon.store.queries import q

INDEX = "users_birthday_month_day_idx"
NOW = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)  # 14:00 in Paris


async def seed(conn: asyncpg.Connection, users: int) -> uuid.UUID:
    """Two programs, `users` members, one pass each, a year of birthday history."""
    programs = await conn.fetch(
        "INSERT INTO programs (name, timezone, birthday_bot_enabled, birthday_reward_points, "
        "birthday_message) VALUES ('Paris', 'Europe/Paris', true, 50, "
        "'Happy birthday {first_name|friend}! You have {points} points.'), "
        "('Other', 'UTC', false, 0, NULL) RETURNING id"
    )
    first, second = programs[0]["id"], programs[1]["id"]
    await conn.execute(
        """
        INSERT INTO users (email, first_name, birth_date)
        SELECT 'member' || g || '@example.com', 'Member',
               -- about 2,700 birthdays a day, 10 % unknown, born 1940-2008
               CASE WHEN g % 10 <> 0 THEN date '1940-01-01' + ((g::bigint * 7919) % 25000)::int
               END
        FROM generate_series(1, $1::int) g
        """,
        users,
    )
    await conn.execute(
        """
        INSERT INTO passes_master (program_id, user_id, passkit_internal_id, external_id, status)
        SELECT CASE WHEN random() < 0.7 THEN $1::uuid ELSE $2::uuid END, id, 'pk-' || id,
               'M-' || id, CASE WHEN random() < 0.9 THEN 'INSTALLED' END
        FROM users
        """,
        first,
        second,
    )
    await conn.execute("INSERT INTO protocol_membership (pass_id) SELECT id FROM passes_master")
    await conn.execute(
        "INSERT INTO birthday_logs (pass_id, program_id, year, celebrated_on) "
        "SELECT id, program_id, 2023, date '2023-06-15' FROM passes_master"
    )
    await conn.execute("VACUUM ANALYZE")
    return first  # type: ignore[no-any-return]


async def explain(conn: asyncpg.Connection, program: uuid.UUID, *, generic: bool) -> str:
    sql = q("birthday_passes_due").rstrip(";")
    await conn.execute(f"PREPARE due(uuid, int[], int, boolean) AS {sql}")
    mode = "force_generic_plan" if generic else "force_custom_plan"
    await conn.execute(f"SET plan_cache_mode = {mode}")
    keys = "{" + ",".join(str(k) for k in birthday_keys(NOW.date())) + "}"
    rows = await conn.fetch(
        f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE due('{program}', '{keys}', {NOW.year}, true)"
    )
    await conn.execute("DEALLOCATE due")
    await conn.execute("RESET plan_cache_mode")
    return "\n".join(r[0] for r in rows)


async def main(database_url: str | None, users: int) -> int:
    async with bench_database(database_url) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            started = time.perf_counter()
            program = await seed(conn, users)
            print(f"seeded {users:,} users and passes in {time.perf_counter() - started:.1f} s")
            plans = {
                generic: await explain(conn, program, generic=generic) for generic in (False, True)
            }
        finally:
            await conn.close()
        for generic, plan in plans.items():
            print(f"\n--- {'generic' if generic else 'custom'} plan ---\n{plan}")

        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        assert pool is not None
        try:
            started = time.perf_counter()
            summary = await run_birthdays(pool, now=NOW)
            seconds = time.perf_counter() - started
        finally:
            await pool.close()
        print(
            f"\nbirthday run for {NOW.date()}: {summary.gifted:,} gifted "
            f"in {seconds:.2f} s ({summary.gifted / seconds:,.0f} gifts/s), ok={summary.ok}"
        )
    missing = [g for g, plan in plans.items() if INDEX not in plan]
    if missing:
        print(f"FAIL: {INDEX} not used", file=sys.stderr)
        return 1
    print(f"OK: both plans use {INDEX}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", help="admin DSN of a Postgres server (default: embedded)")
    parser.add_argument("--users", type=int, default=1_000_000)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.database_url, args.users)))
