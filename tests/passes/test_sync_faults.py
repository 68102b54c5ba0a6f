"""Fault paths with real daemon processes: kill -9, two daemons on one database, SIGTERM."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from daemon.testing.fakepasskit import FakePassKit, LatencyModel
from tests.factories import make_pass, make_program
from tests.harness import (
    DaemonProcess,
    daemon_env,
    fake_passkit,
    messages_by_pass,
    wait_until,
)

pytestmark = pytest.mark.slow
EARN = "SELECT process_membership_transaction($1, $2, 'EARN', $3, NULL)"
CONCURRENCY = 10


async def _owe_syncs(pool: asyncpg.Pool, count: int) -> dict[str, int]:
    """`count` passes, each owed one balance and one message; returns passkit id → balance."""
    program = await make_program(pool)
    expected: dict[str, int] = {}
    for i in range(count):
        pass_id = await make_pass(pool, program, points=0)
        await pool.execute(EARN, pass_id, i + 1, f"Thanks #{i}")
        pk = await pool.fetchval(
            "SELECT passkit_internal_id FROM passes_master WHERE id = $1", pass_id
        )
        expected[pk] = i + 1
    return expected


async def _settled(pool: asyncpg.Pool) -> bool:
    busy = await pool.fetchval(
        "SELECT count(*) FROM loyaltyd.pass_syncs WHERE state IN ('pending', 'claimed')"
    )
    return bool(busy == 0)


def _env(fake: FakePassKit) -> dict[str, str]:
    return {**daemon_env(fake.url), "PASSKIT_MAX_CONCURRENCY": str(CONCURRENCY)}


async def test_kill_9_mid_run_then_restart_loses_nothing(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    expected = await _owe_syncs(pool, 400)
    async with fake_passkit(latency=LatencyModel(median_ms=40, p99_ms=120)) as fake:
        first = DaemonProcess(database_url, _env(fake), tmp_path / "first.log")
        try:
            await wait_until(lambda: fake.count() >= 200, timeout=30)
            first.kill9()
        finally:
            first.stop_now()
        assert not await _settled(pool), "the kill should have come mid-run"
        second = DaemonProcess(database_url, _env(fake), tmp_path / "second.log")
        try:
            await wait_until(lambda: _settled(pool), timeout=60)
        finally:
            second.terminate()
            assert await second.wait(15) == 0
    assert {pk: fake.points_of(pk) for pk in expected} == expected
    sent = messages_by_pass(fake)
    assert set(sent) == set(expected), "every pass got its message"
    repeated = [pk for pk, n in sent.items() if n > 1]
    # Only work that was claimed when the process died can be repeated.
    assert len(repeated) <= 2 * CONCURRENCY, repeated


async def test_two_daemons_share_the_work_and_never_sync_a_pass_twice(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with fake_passkit(latency=LatencyModel(median_ms=20, p99_ms=60)) as fake:
        daemons = [
            DaemonProcess(database_url, _env(fake), tmp_path / f"d{i}.log") for i in range(2)
        ]
        try:
            await asyncio.sleep(2)  # both listening before the work appears
            expected = await _owe_syncs(pool, 400)
            await wait_until(lambda: _settled(pool), timeout=60)
        finally:
            for d in daemons:
                d.terminate()
            codes = [await d.wait(15) for d in daemons]
    assert codes == [0, 0]
    assert {pk: fake.points_of(pk) for pk in expected} == expected
    sent = messages_by_pass(fake)
    assert set(sent) == set(expected) and max(sent.values()) == 1
    synced = [d.log_text().count('"pass_synced"') for d in daemons]
    assert all(n > 0 for n in synced) and sum(synced) == 400, synced


async def test_sigterm_mid_run_exits_0_within_the_grace_period_and_leaves_nothing_claimed(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    await _owe_syncs(pool, 300)
    async with fake_passkit(latency=LatencyModel(median_ms=300)) as fake:
        proc = DaemonProcess(database_url, _env(fake), tmp_path / "d.log")
        try:
            await wait_until(lambda: fake.count() >= 20, timeout=30)
            code, elapsed = await proc.terminate_timed(15)
        finally:
            proc.stop_now()
    assert code == 0
    assert elapsed < 5 + 2  # LOYALTYD_SHUTDOWN_GRACE_SECONDS=5, plus start-to-exit slack
    claimed = await pool.fetchval(
        "SELECT count(*) FROM loyaltyd.pass_syncs WHERE state = 'claimed'"
    )
    assert claimed == 0
    assert (
        await pool.fetchval("SELECT count(*) FROM loyaltyd.pass_syncs WHERE state = 'pending'") > 0
    )
