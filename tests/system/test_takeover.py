"""kill -9 of a daemon process mid-blast: the rows it held are sent again within seconds (its
heartbeat goes stale), not after their 60 s leases, by its own restart or by a survivor."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from daemon.testing.fakepasskit import FakePassKit, LatencyModel
from tests.campaign_support import bulk_audience, insert_campaign
from tests.factories import make_program
from tests.harness import DaemonProcess, daemon_env, fake_passkit, messages_by_pass, wait_until

pytestmark = pytest.mark.slow

RECIPIENTS = 3_000
LEASE = 60  # what a takeover used to cost
STALE = 3  # LOYALTYD_STALE_SECONDS in these tests


def _daemon(dsn: str, fake: FakePassKit, log_path: Path) -> DaemonProcess:
    env = {
        **daemon_env(fake.url),
        "PASSKIT_MAX_CONCURRENCY": "20",
        "LOYALTYD_LEASE_SECONDS": str(LEASE),
        "LOYALTYD_HEARTBEAT_SECONDS": "0.5",
        "LOYALTYD_STALE_SECONDS": str(STALE),
    }
    return DaemonProcess(dsn, env, log_path)


async def _held(pool: asyncpg.Pool) -> set[str]:
    rows = await pool.fetch(
        "SELECT p.passkit_internal_id FROM loyaltyd.campaign_deliveries d"
        " JOIN passes_master p ON p.id = d.pass_id WHERE d.state = 'claimed'"
    )
    return {r["passkit_internal_id"] for r in rows}


async def _kill_mid_blast(
    pool: asyncpg.Pool, fake: FakePassKit, victim: DaemonProcess
) -> tuple[set[str], float]:
    """Wait for the blast to run, kill the victim; return what it held and when it died."""
    await wait_until(lambda: fake.count() >= 500, timeout=60)
    victim.kill9()
    return await _held(pool), time.monotonic()


async def _resent_within(fake: FakePassKit, held: set[str], killed_at: float) -> float:
    async def all_sent() -> bool:
        reached = messages_by_pass(fake)
        return all(reached.get(pk) for pk in held)

    await wait_until(all_sent, timeout=LEASE)
    return time.monotonic() - killed_at


async def _blast(pool: asyncpg.Pool) -> object:
    program = await make_program(pool)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, RECIPIENTS)
    return program


@pytest.mark.parametrize("restart", [True, False], ids=["restarted", "survivor"])
async def test_a_killed_daemons_rows_are_taken_over_within_seconds(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, restart: bool
) -> None:
    program = await _blast(pool)
    async with fake_passkit(latency=LatencyModel(median_ms=200, p99_ms=400)) as fake:
        victim = _daemon(database_url, fake, tmp_path / "victim.log")
        others = [] if restart else [_daemon(database_url, fake, tmp_path / "survivor.log")]
        try:
            await asyncio.sleep(2)  # listening
            await insert_campaign(pool, program_id=program)
            held, killed_at = await _kill_mid_blast(pool, fake, victim)
            if restart:  # what systemd does
                others.append(_daemon(database_url, fake, tmp_path / "restart.log"))
            assert held, "the victim held rows when it died"
            took = await _resent_within(fake, held, killed_at)
        finally:
            victim.stop_now()
            for daemon in others:
                daemon.stop_now()
    # The stale threshold, a poll and a claim; far from the 60 s leases.
    assert took < STALE + 4, f"the dead daemon's rows waited {took:.1f} s"
    copies = messages_by_pass(fake)
    assert max(copies.values()) <= 2, "only what was in flight at the kill may arrive twice"
