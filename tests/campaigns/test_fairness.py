"""Many programs on one or two daemon processes and one PassKit budget: a small campaign of
one program finishes in seconds beside another program's blast, and a pass sync never waits
behind campaign sends."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from daemon.testing.fakepasskit import ROUTE_SET_POINTS, FakePassKit, LatencyModel
from tests.campaign_support import bulk_audience, campaign, insert_campaign
from tests.factories import make_pass, make_program
from tests.harness import DaemonProcess, daemon_env, fake_passkit, wait_until

pytestmark = pytest.mark.slow

RATE = 50  # requests a second: the blast alone would take a minute
BLAST = 3_000
SMALL = 20


async def _sent(pool: asyncpg.Pool, campaign_id: object) -> int:
    row = await campaign(pool, campaign_id)  # type: ignore[arg-type]
    return int(row["sent_count"] or 0)


def _points_request_for(fake: FakePassKit, passkit_id: str) -> float | None:
    for request in fake.requests:
        if request.route == ROUTE_SET_POINTS and request.pass_id == passkit_id:
            return request.at
    return None


@pytest.mark.parametrize("daemons", [1, 2], ids=["one-daemon", "two-daemons"])
async def test_programs_share_the_budget_and_a_sync_goes_first(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, daemons: int
) -> None:
    """With one daemon, or two sharing the account's budget: A blasts; then B blasts too, C
    sends a 20-member flash sale and D's member earns points. C finishes in seconds, A and B
    share what is left, D's points jump the queue of claimed campaign sends (100 of them, 10
    at a time)."""
    a = await make_program(pool, name="A")
    b = await make_program(pool, name="B")
    c = await make_program(pool, name="C")
    d = await make_program(pool, name="D")
    async with pool.acquire() as conn:
        await bulk_audience(conn, a, BLAST, prefix="a")
        await bulk_audience(conn, b, BLAST, prefix="b")
        await bulk_audience(conn, c, SMALL, prefix="c")
    member = await make_pass(pool, d, points=0)
    member_pk = await pool.fetchval(
        "SELECT passkit_internal_id FROM passes_master WHERE id = $1", member
    )
    env = {
        **daemon_env(""),
        "PASSKIT_RATE_LIMIT": str(RATE),
        "PASSKIT_RATE_BURST": "1",
        "PASSKIT_MAX_CONCURRENCY": "10",
        "LOYALTYD_WORKER_SLOTS": "100",
    }
    async with fake_passkit(latency=LatencyModel(median_ms=20, p99_ms=60)) as fake:
        env["PASSKIT_BASE_URL"] = fake.url
        fleet = [
            DaemonProcess(database_url, env, tmp_path / f"daemon{i}.log") for i in range(daemons)
        ]
        try:
            await asyncio.sleep(2)  # listening
            blast_a = await insert_campaign(pool, program_id=a, message_text="A sale")

            async def blasting() -> bool:
                return await _sent(pool, blast_a) >= 100

            await wait_until(blasting, timeout=30)
            a_before = await _sent(pool, blast_a)
            started = time.monotonic()
            blast_b = await insert_campaign(pool, program_id=b, message_text="B sale")
            flash = await insert_campaign(pool, program_id=c, message_text="Flash sale")
            await pool.execute(
                "SELECT process_membership_transaction($1, 7, 'EARN', NULL, NULL)", member
            )
            synced_at = asyncio.get_running_loop().time()

            async def flash_done() -> bool:
                return bool((await campaign(pool, flash))["status"] == "COMPLETED")

            await wait_until(flash_done, timeout=30)
            flash_seconds = time.monotonic() - started
            await asyncio.sleep(3)
            a_sent = await _sent(pool, blast_a) - a_before
            b_sent = await _sent(pool, blast_b)
            sync_request = _points_request_for(fake, member_pk)
        finally:
            for daemon in fleet:
                daemon.stop_now()
    assert a_sent + a_before < BLAST and b_sent < BLAST, "the blasts should still be running"
    # 20 recipients at a third of 50/s is about a second; planning and settling add a little.
    assert flash_seconds < 5, f"the flash sale took {flash_seconds:.1f} s beside two blasts"
    share = a_sent / (a_sent + b_sent)
    assert 0.3 <= share <= 0.7, f"A got {a_sent}, B {b_sent} of the sends since B started"
    # Without priority the sync would queue behind ~100 claimed sends: two seconds at 50/s.
    assert sync_request is not None and sync_request - synced_at < 1.0, (
        "the pass sync waited behind campaign sends"
    )
