"""Every named statement in daemon/store/queries parses and plans against the schema the
migrations build: a typo in a rarely taken path fails here, not in production."""

from __future__ import annotations

import asyncpg

from daemon.store.queries import q, queries

# Statements that are several commands (run, not prepared); the first creates the staging
# table the sweep's statements read.
_SCRIPTS = ("wallet_sweep_staging", "wallet_sweep_staging_ready", "wallet_sweep_staging_drop")
# Statements on Supabase's own objects (auth.uid(), admin_profiles): tests/console/
# test_console_supabase.py runs them on a Supabase-like database.
_SUPABASE = {"console_supabase_programs"}


async def test_every_statement_parses_and_plans(conn: asyncpg.Connection) -> None:
    await conn.execute(q("wallet_sweep_staging"))  # the sweep's temp table, on this session
    failed = {}
    for name in sorted(set(queries()) - set(_SCRIPTS) - _SUPABASE):
        try:
            await conn.prepare(q(name))
        except asyncpg.PostgresError as exc:
            failed[name] = str(exc)
    assert failed == {}
    for name in _SCRIPTS:
        await conn.execute(q(name))
