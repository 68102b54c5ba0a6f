"""loyaltyd.pass_status_counts (sql/073) is always what counting passes_master would say, per
program and status, whatever writes the passes: inserts one by one and in bulk, status changes
(a sweep's bulk update, a form's single edit), a pass moved to another program, deletes (a
program deleted with its passes), TRUNCATE, and two writers at once."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from daemon.store.migrate import migrate
from tests.factories import make_program
from tests.migration_support import migrations_before

STATUSES = ["INSTALLED", "UNINSTALLED", "INVALIDATED", "ISSUED", "DELETED", None]


async def _counted(conn: asyncpg.Connection | asyncpg.Pool) -> dict[tuple[uuid.UUID, str], int]:
    rows = await conn.fetch(
        "SELECT program_id, coalesce(status, 'NULL') AS status, count(*) AS n "
        "FROM passes_master GROUP BY 1, 2"
    )
    return {(r["program_id"], r["status"]): r["n"] for r in rows}


async def _kept(conn: asyncpg.Connection | asyncpg.Pool) -> dict[tuple[uuid.UUID, str], int]:
    rows = await conn.fetch(
        "SELECT program_id, status, passes FROM loyaltyd.pass_status_counts WHERE passes <> 0"
    )
    return {(r["program_id"], r["status"]): r["passes"] for r in rows}


async def _insert(conn: asyncpg.Connection | asyncpg.Pool, program: uuid.UUID, n: int) -> None:
    await conn.execute(
        "INSERT INTO passes_master (program_id, passkit_internal_id, external_id, status) "
        "SELECT $1, 'c-' || gen_random_uuid(), 'c-' || gen_random_uuid(), "
        "(ARRAY['INSTALLED', 'UNINSTALLED', NULL])[1 + k % 3] FROM generate_series(1, $2) k",
        program,
        n,
    )


async def test_the_counts_follow_every_kind_of_write(conn: asyncpg.Connection) -> None:
    rng = random.Random(7)
    programs = [await make_program(conn, name=f"P{n}") for n in range(3)]
    for program in programs:
        await _insert(conn, program, 50)
    assert await _kept(conn) == await _counted(conn)
    for step in range(40):
        program = rng.choice(programs)
        kind = rng.choice(["bulk", "one", "move", "delete", "insert"])
        if kind == "bulk":  # a sweep: many passes at once
            await conn.execute(
                "UPDATE passes_master SET status = $2 WHERE program_id = $1 AND random() < 0.5",
                program,
                rng.choice(STATUSES),
            )
        elif kind == "one":  # a form edits one pass
            await conn.execute(
                "UPDATE passes_master SET status = $2 WHERE id = (SELECT id FROM passes_master "
                "WHERE program_id = $1 LIMIT 1)",
                program,
                rng.choice(STATUSES),
            )
        elif kind == "move":
            await conn.execute(
                "UPDATE passes_master SET program_id = $2 WHERE id IN (SELECT id FROM "
                "passes_master WHERE program_id = $1 LIMIT 5)",
                program,
                rng.choice(programs),
            )
        elif kind == "delete":
            await conn.execute(
                "DELETE FROM passes_master WHERE id IN (SELECT id FROM passes_master "
                "WHERE program_id = $1 LIMIT 7)",
                program,
            )
        else:
            await _insert(conn, program, rng.randint(1, 30))
        assert await _kept(conn) == await _counted(conn), (step, kind)
    await conn.execute("UPDATE passes_master SET external_id = external_id || '-x'")  # no move
    assert await _kept(conn) == await _counted(conn)
    await conn.execute("DELETE FROM passes_master WHERE program_id = $1", programs[0])
    assert await _kept(conn) == await _counted(conn)
    await conn.execute("TRUNCATE passes_master CASCADE")
    assert await _kept(conn) == {}


async def test_two_writers_at_once_are_both_counted(pool: asyncpg.Pool) -> None:
    program = await make_program(pool, name="Busy")

    async def writer() -> None:
        for _ in range(20):
            async with pool.acquire() as conn, conn.transaction():
                await _insert(conn, program, 10)
                await conn.execute(
                    "UPDATE passes_master SET status = 'INSTALLED' WHERE id IN (SELECT id FROM "
                    "passes_master WHERE program_id = $1 AND status IS NULL LIMIT 3)",
                    program,
                )

    await asyncio.gather(*(writer() for _ in range(4)))
    assert await _kept(pool) == await _counted(pool)
    assert sum((await _kept(pool)).values()) == 800


async def test_a_database_with_passes_is_counted_once_by_the_migration(
    fresh_database: Callable[..., Any], tmp_path: Path
) -> None:
    """A database migrated by the release before sql/073, with passes, migrates forward with
    its passes counted."""
    dsn = await fresh_database()
    earlier = migrations_before("073", tmp_path / "sql")
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, earlier)
        programs = [await make_program(conn, name=f"Old {n}") for n in range(2)]
        for n, program in enumerate(programs):
            await _insert(conn, program, 60 + n)
        assert await conn.fetchval("SELECT to_regclass('loyaltyd.pass_status_counts')") is None
        assert "073_pass_status_counts" in await migrate(conn)
        assert await _kept(conn) == await _counted(conn)
        assert sum((await _kept(conn)).values()) == 121
        await _insert(conn, programs[0], 5)  # and kept from then on
        assert await _kept(conn) == await _counted(conn)
    finally:
        await conn.close()
