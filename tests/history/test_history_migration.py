"""Upgrading a database that already holds history to the retention rule's schema (sql/067,
068) keeps every row, and a daemon running on it keeps working through the migration."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from daemon.core.config import Settings
from daemon.store.migrate import migrate
from tests.campaign_support import bulk_audience, stage_campaign
from tests.factories import make_program
from tests.harness import fake_passkit, running_daemon, settings_for, wait_until
from tests.migration_support import migrations_before

FIRST_NEW = "067"
EARN = "SELECT process_membership_transaction($1, $2, 'EARN', NULL, NULL)"


async def _rows(conn: asyncpg.Connection) -> tuple[int, int, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM loyaltyd.campaign_deliveries) AS d, "
        "(SELECT count(*) FROM loyaltyd.pass_syncs) AS s, "
        "(SELECT count(*) FROM push_campaigns) AS c"
    )
    return row["d"], row["s"], row["c"]


async def test_an_existing_database_upgrades_with_its_rows_and_a_running_daemon(
    fresh_database: Callable[..., Any], tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    dsn = await fresh_database()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, migrations_before(FIRST_NEW, tmp_path / "sql"))
        program = await make_program(conn)
        await bulk_audience(conn, program, 2_000)
        passes = [r["id"] for r in await conn.fetch("SELECT id FROM passes_master")]
        for n in range(5):
            campaign = await stage_campaign(
                conn, program_id=program, status="COMPLETED", name=f"c{n}"
            )
            await conn.execute(
                "INSERT INTO loyaltyd.campaign_deliveries (campaign_id, pass_id, state, "
                "rendered_text, finished_at) SELECT $1, id, 'sent', 'Hello', now() "
                "FROM passes_master",
                campaign,
            )
        before = await _rows(conn)
        async with fake_passkit() as fake:
            settings = settings_for(make_settings, fake.url, database_url=dsn)
            async with running_daemon(settings, dsn):
                await conn.execute(EARN, passes[0], 5)
                applied = await migrate(conn)
                assert applied and applied[0].startswith(FIRST_NEW)
                await conn.execute(EARN, passes[1], 7)
                pk, balance = await conn.fetchrow(
                    "SELECT p.passkit_internal_id, m.points_balance FROM passes_master p "
                    "JOIN protocol_membership m ON m.pass_id = p.id WHERE p.id = $1",
                    passes[1],
                )
                await wait_until(lambda: fake.points_of(pk) == balance, timeout=15)
        after = await _rows(conn)
        assert after[0] == before[0] and after[2] == before[2], "every delivery and campaign kept"
        assert after[1] >= before[1]
        shown = await conn.fetchval(
            "SELECT count(*) FROM campaign_deliveries WHERE rendered_text = 'Hello'"
        )
        assert shown == before[0]
        assert uuid.UUID(str(await conn.fetchval("SELECT id FROM programs LIMIT 1")))
    finally:
        await conn.close()
