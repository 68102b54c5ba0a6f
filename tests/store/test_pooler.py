"""Behind a real PgBouncer: transaction mode is refused at start-up with one sentence; session
mode works end to end, LISTEN included."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from tests import pgbouncer
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
