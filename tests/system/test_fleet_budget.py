"""Three daemon processes on one database share one PASSKIT_RATE_LIMIT: what they send
together, counted at the fake, stays within the limit plus the burst in every second, and
uses the limit. A daemon cut off from Postgres starts no PassKit call after the stale
threshold."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from daemon.testing.fakepasskit import LatencyModel
from tests.campaign_support import bulk_audience, insert_campaign
from tests.factories import make_program
from tests.harness import DaemonProcess, daemon_env, fake_passkit, messages_by_pass, wait_until
from tests.passkit.test_ratelimit import max_in_any_window
from tests.tcpproxy import cuttable_proxy

pytestmark = pytest.mark.slow

RATE = 100
BURST = 5
RECIPIENTS = 1_500


def _env(fake_url: str, **more: str) -> dict[str, str]:
    return {
        **daemon_env(fake_url),
        "PASSKIT_RATE_LIMIT": str(RATE),
        "PASSKIT_RATE_BURST": str(BURST),
        "PASSKIT_MAX_CONCURRENCY": "20",
        "LOYALTYD_LEASE_SECONDS": "60",
        "LOYALTYD_HEARTBEAT_SECONDS": "0.5",
        "LOYALTYD_STALE_SECONDS": "3",
        **more,
    }


async def _blast(pool: asyncpg.Pool, recipients: int) -> None:
    program = await make_program(pool)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, recipients)
    await insert_campaign(pool, program_id=program)


async def test_three_daemons_stay_within_one_limit_and_use_it(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with fake_passkit(latency=LatencyModel(median_ms=50, p99_ms=100)) as fake:
        fleet = [
            DaemonProcess(database_url, _env(fake.url), tmp_path / f"d{i}.log") for i in range(3)
        ]
        try:
            await asyncio.sleep(3)  # all three listening and beating
            await _blast(pool, RECIPIENTS)
            await wait_until(lambda: len(messages_by_pass(fake)) >= RECIPIENTS, timeout=60)
        finally:
            for daemon in fleet:
                daemon.stop_now()
    arrivals = sorted(r.at for r in fake.requests)
    busiest = max_in_any_window(arrivals)
    assert busiest <= RATE + BURST, f"busiest second {busiest}"
    # From the first second to the end, the three together used the limit.
    steady = [t for t in arrivals if t >= arrivals[0] + 1.0]
    rate = len(steady) / (steady[-1] - steady[0])
    assert rate >= 0.9 * RATE, f"{rate:.1f}/s"
    assert max(messages_by_pass(fake).values()) == 1
    logs = [d.log_text() for d in fleet]
    assert all('"rate_budget_share"' in text for text in logs), "each took a share"


async def test_a_daemon_cut_off_from_postgres_starts_no_call_after_the_stale_threshold(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    stale = 3.0
    async with (
        cuttable_proxy(database_url) as (proxy, through),
        # Slow answers: the daemon holds claimed rows that wait for a free slot until after
        # the stale threshold; without its fence it would send them then.
        fake_passkit(latency=LatencyModel(median_ms=3500, p99_ms=3600)) as fake,
    ):
        env = _env(
            fake.url,
            PASSKIT_RATE_LIMIT="0",
            PASSKIT_MAX_CONCURRENCY="10",
            # What it abandoned when fenced comes back when its lease runs out.
            LOYALTYD_LEASE_SECONDS="20",
        )
        daemon = DaemonProcess(through, env, tmp_path / "cut.log")
        try:
            await asyncio.sleep(3)
            await _blast(pool, 60)
            await wait_until(lambda: fake.count() >= 10, timeout=30)
            proxy.cut()
            cut_at = asyncio.get_running_loop().time()
            await asyncio.sleep(stale + 4)
            late = [r for r in fake.requests if r.at > cut_at + stale]
            assert late == [], f"{len(late)} PassKit calls started after the stale threshold"
            assert '"heartbeat_lost_fenced"' in daemon.log_text()
            held = await pool.fetchval(
                "SELECT count(*) FROM loyaltyd.campaign_deliveries WHERE state = 'claimed'"
            )
            assert held > 0, "it was cut off holding rows it did not send"

            proxy.restore()
            await wait_until(lambda: len(messages_by_pass(fake)) >= 60, timeout=90)
        finally:
            daemon.stop_now()
    # Only what was in flight at the cut may have reached PassKit twice.
    assert sum(n - 1 for n in messages_by_pass(fake).values()) <= 10
