"""The account-wide budget through Postgres: three heartbeats on one database split the limit,
and what they send together stays within it (real time, a few seconds)."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest

from daemon.passkit.budget import FleetBudget
from daemon.passkit.throttle import TokenBucket
from daemon.store.instances import Heartbeat
from tests.passkit.test_ratelimit import max_in_any_window

RATE = 60.0
BURST = 3


class Member:
    def __init__(self, pool: asyncpg.Pool, account: str = "acct") -> None:
        self.bucket = TokenBucket(RATE, BURST)
        self.budget = FleetBudget(RATE, BURST, self.bucket, account=account, clock=time.monotonic)
        self.owner = uuid.uuid4()
        self.heartbeat = Heartbeat(
            pool, self.owner, interval=0.5, stale=2.0, budget=self.budget, account=account
        )
        self.sends: list[float] = []

    async def start(self) -> None:
        await self.heartbeat.beat()
        await self.heartbeat.beat()

    async def send_until(self, end: float) -> None:
        async def one_worker() -> None:
            while True:
                await self.bucket.acquire()
                now = time.monotonic()
                if now >= end:
                    return
                self.sends.append(now)
                await asyncio.sleep(0.02)

        async with asyncio.TaskGroup() as tg:
            for _ in range(8):
                tg.create_task(one_worker())


async def test_a_daemon_alone_gets_the_whole_limit_at_start(pool: asyncpg.Pool) -> None:
    member = Member(pool)
    await member.start()
    assert member.budget.share == pytest.approx(RATE)
    row = await pool.fetchrow("SELECT share, rate_limit, account FROM loyaltyd.instances")
    assert row is not None
    assert (row["share"], row["rate_limit"], row["account"]) == (RATE, RATE, "acct")


async def test_another_accounts_daemons_do_not_count(pool: asyncpg.Pool) -> None:
    ours, theirs = Member(pool, "ours"), Member(pool, "theirs")
    await theirs.start()
    await ours.start()
    assert ours.budget.share == pytest.approx(RATE)


@pytest.mark.slow
async def test_three_heartbeats_keep_the_sum_within_the_limit_and_use_it(
    pool: asyncpg.Pool,
) -> None:
    fleet = [Member(pool) for _ in range(3)]
    stopping = asyncio.Event()
    started = time.monotonic()
    end = started + 7.0
    async with asyncio.TaskGroup() as tg:
        senders = []
        for i, member in enumerate(fleet):
            await asyncio.sleep(0.15 * i)  # they start one after the other
            await member.start()
            tg.create_task(member.heartbeat.run(stopping))
            senders.append(tg.create_task(member.send_until(end)))
        await asyncio.wait_for(asyncio.gather(*senders), end - time.monotonic() + 5)
        stopping.set()  # as in the daemon: the heartbeat outlives the senders
    every = sorted(t for m in fleet for t in m.sends)
    assert max_in_any_window(every) <= RATE + BURST
    steady = [t for t in every if t >= started + 3.0]
    assert len(steady) / (end - started - 3.0) >= 0.9 * RATE
    for member in fleet:
        mine = sum(1 for t in member.sends if t >= started + 3.0)
        assert mine / (end - started - 3.0) == pytest.approx(RATE / 3, rel=0.25)
    assert await pool.fetchval("SELECT count(*) FROM loyaltyd.instances") == 0, "all left"
