"""A sweep killed half-way (kill -9 of its daemon while the list streams in) leaves nothing
half-applied, and the next daemon's sweep completes it. Daemon processes, real Postgres, the
fake PassKit streaming a generated program."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from daemon.testing.fakepasskit import LatencyModel
from tests.harness import DaemonProcess, daemon_env, fake_passkit, wait_until
from tests.wallet.support import PROGRAM_CLASS, statuses

pytestmark = pytest.mark.slow
MEMBERS = 40_000


async def _members(pool: asyncpg.Pool, count: int) -> uuid.UUID:
    """`count` passes of a program, INSTALLED by hand, PassKit ids g-1 … g-count."""
    program: uuid.UUID = await pool.fetchval(
        "INSERT INTO programs (name, passkit_program_id) VALUES ('Big Bar', $1) RETURNING id",
        PROGRAM_CLASS,
    )
    await pool.execute(
        """
        WITH u AS (
            INSERT INTO users (email) SELECT 'g' || n || '@example.com'
              FROM generate_series(1, $2) n RETURNING id, split_part(email, '@', 1) AS handle
        ),
        p AS (
            INSERT INTO passes_master (program_id, user_id, passkit_internal_id, external_id,
                                       status, is_active)
            SELECT $1, id, 'g-' || substr(handle, 2), 'M-' || handle, 'INSTALLED', true FROM u
            RETURNING id
        )
        INSERT INTO protocol_membership (pass_id, points_balance) SELECT id, 0 FROM p
        """,
        program,
        count,
    )
    return program


def _uninstalled_if_even(i: int) -> str:
    return "PASS_UNINSTALLED" if i % 2 == 0 else "PASS_INSTALLED"


async def test_a_sweep_killed_half_way_applies_nothing_and_the_next_one_completes(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    program = await _members(pool, MEMBERS)
    async with fake_passkit(issued=None, latency=LatencyModel(median_ms=1)) as fake:
        fake.add_generated_members(PROGRAM_CLASS, MEMBERS, prefix="g-", status=_uninstalled_if_even)
        env = {**daemon_env(fake.url), "LOYALTYD_WALLET_SWEEPS": "true"}
        first = DaemonProcess(database_url, env, tmp_path / "first.log")
        try:
            await wait_until(lambda: _copying(pool), timeout=60, interval=0.01)
            first.kill9()
        finally:
            first.stop_now()
        assert await statuses(pool, program) == {"INSTALLED": MEMBERS}
        assert await pool.fetchval("SELECT count(*) FROM loyaltyd.wallet_passes") == 0
        assert await pool.fetchval("SELECT state FROM loyaltyd.wallet_sweeps") == "running"

        second = DaemonProcess(database_url, env, tmp_path / "second.log")
        try:
            await wait_until(lambda: _completed(pool), timeout=120, interval=0.2)
            code, _ = await second.terminate_timed(30)
        finally:
            second.stop_now()
    assert code == 0, second.log_text()
    half = MEMBERS // 2
    assert await statuses(pool, program) == {"INSTALLED": half, "UNINSTALLED": half}
    sweeps = await pool.fetch("SELECT state, error FROM loyaltyd.wallet_sweeps ORDER BY id")
    assert [r["state"] for r in sweeps] == ["failed", "completed"]
    assert "interrupted" in sweeps[0]["error"]


async def _copying(pool: asyncpg.Pool) -> bool:
    """The daemon is copying the list into its staging table: part of it is in, none of it
    applied."""
    copies = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%wallet_sweep_rows%'"
    )
    return bool(copies)


async def _completed(pool: asyncpg.Pool) -> bool:
    return bool(
        await pool.fetchval("SELECT count(*) FROM loyaltyd.wallet_sweeps WHERE state = 'completed'")
    )
