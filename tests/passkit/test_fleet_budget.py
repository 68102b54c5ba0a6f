"""The account-wide rate budget: how the limit is split, and a fleet of daemons on virtual
time whose beats go through an in-memory instances table (tests/store/test_fleet_budget.py
runs the same through Postgres, tests/system/test_fleet_budget.py with daemon processes)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from daemon.domain.fleet import PeerRow
from daemon.passkit.budget import FleetBudget, Peer, account_key, fair_shares, next_share
from daemon.passkit.throttle import TokenBucket
from tests.passkit.test_ratelimit import max_in_any_window
from tests.passkit_fixtures import VirtualTime

RATE = 150.0
BURST = 5


def test_fair_shares_split_evenly_among_equal_wants() -> None:
    assert fair_shares(150, [150, 150, 150]) == pytest.approx([50, 50, 50])


def test_fair_shares_give_an_idle_daemon_what_it_wants_and_the_rest_to_the_busy() -> None:
    assert fair_shares(150, [3, 150, 150]) == pytest.approx([3, 73.5, 73.5])


def test_fair_shares_spread_what_nobody_wants_evenly() -> None:
    shares = fair_shares(100, [10, 20])
    assert shares == pytest.approx([45, 55])
    assert sum(shares) == pytest.approx(100)
    assert fair_shares(100, [1]) == pytest.approx([100])


def test_next_share_never_takes_what_the_others_still_claim() -> None:
    # Fair would be 50, but the other two still claim 75 each: nothing is left yet.
    assert next_share(150, 150, [Peer(150, 75), Peer(150, 75)]) == pytest.approx((50, 0))
    assert next_share(150, 150, [Peer(150, 50), Peer(150, 50)]) == pytest.approx((50, 50))


def test_the_account_is_a_hash_of_the_key_never_the_key() -> None:
    key = "live-key-123"
    assert key not in account_key(key)
    assert account_key(key) == account_key(key) != account_key("other-key")
    assert account_key("") == "mock"


@dataclass
class SimDaemon:
    """One daemon: its bucket, its budget, workers sending while `busy`."""

    name: str
    vt: VirtualTime
    busy: bool = True
    alive: bool = True
    sends: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bucket = TokenBucket(RATE, BURST, clock=self.vt.clock, sleep=self.vt.sleep)
        self.budget = FleetBudget(RATE, BURST, self.bucket, account="a", clock=self.vt.clock)

    async def worker(self, until: float) -> None:
        while self.vt.now < until and self.alive:
            if not self.busy:
                await self.vt.sleep(0.1)
                continue
            await self.bucket.acquire()
            if self.vt.now >= until or not self.alive:
                return
            self.sends.append(self.vt.now)
            await self.vt.sleep(0.05)  # PassKit's latency


@dataclass
class SimTable:
    """loyaltyd.instances as the beat statement sees it: (want, share) per daemon."""

    rows: dict[str, tuple[float, float]] = field(default_factory=dict)

    def beat(self, d: SimDaemon) -> None:
        """One heartbeat, as daemon.store.instances writes it and reads the others'."""
        offer = d.budget.offer()
        peers = [PeerRow(*row, RATE) for name, row in self.rows.items() if name != d.name]
        self.rows[d.name] = (offer.want, offer.claim)
        cut = d.budget.settle(peers)
        if cut is not None:
            self.rows[d.name] = (offer.want, cut)
            d.budget.published(cut)


async def beating(table: SimTable, d: SimDaemon, vt: VirtualTime, start: float, end: float) -> None:
    await vt.sleep(start - vt.now)
    table.beat(d)
    table.beat(d)  # as at start-up
    while vt.now < end and d.alive:
        await vt.sleep(0.25 if d.budget.settling else 1.0)
        if d.alive:
            table.beat(d)


async def kill_at(table: SimTable, d: SimDaemon, vt: VirtualTime, at: float, gone: float) -> None:
    """Dies at `at`; its row stops counting `gone` seconds later (stale)."""
    await vt.sleep(at - vt.now)
    d.alive = False
    await vt.sleep(gone)
    del table.rows[d.name]


def fleet_run(
    daemons: list[SimDaemon], table: SimTable, vt: VirtualTime, end: float, offsets: list[float]
) -> list[Coroutine[Any, Any, None]]:
    coros: list[Coroutine[Any, Any, None]] = []
    for d, offset in zip(daemons, offsets, strict=True):
        coros.append(beating(table, d, vt, offset, end))
        coros.extend(worker_after(d, vt, offset, end) for _ in range(20))
    return coros


async def worker_after(d: SimDaemon, vt: VirtualTime, start: float, end: float) -> None:
    await vt.sleep(start - vt.now)
    await d.worker(end)


def between(times: list[float], start: float, end: float) -> list[float]:
    return [t for t in times if start <= t < end]


async def test_three_busy_daemons_share_the_limit_evenly_and_use_it() -> None:
    vt = VirtualTime()
    table = SimTable()
    fleet = [SimDaemon(f"d{i}", vt) for i in range(3)]
    await vt.run(*fleet_run(fleet, table, vt, 20.0, [0.0, 0.3, 0.6]))
    every = sorted(t for d in fleet for t in d.sends)
    assert max_in_any_window(every) <= RATE + BURST
    steady = between(every, 8.0, 20.0)
    assert len(steady) / 12.0 >= 0.97 * RATE
    for d in fleet:
        share = len(between(d.sends, 8.0, 20.0)) / 12.0
        assert share == pytest.approx(RATE / 3, rel=0.05), d.name


async def test_an_idle_daemon_leaves_its_share_to_the_busy_ones() -> None:
    vt = VirtualTime()
    table = SimTable()
    fleet = [SimDaemon(f"d{i}", vt) for i in range(3)]
    fleet[2].busy = False
    await vt.run(*fleet_run(fleet, table, vt, 15.0, [0.0, 0.4, 0.8]))
    steady = between(sorted(t for d in fleet for t in d.sends), 5.0, 15.0)
    assert len(steady) / 10.0 >= 0.95 * RATE
    assert max_in_any_window(sorted(t for d in fleet for t in d.sends)) <= RATE + BURST


async def test_a_joining_daemon_gets_its_share_without_a_burst_over_the_limit() -> None:
    vt = VirtualTime()
    table = SimTable()
    fleet = [SimDaemon(f"d{i}", vt) for i in range(3)]
    await vt.run(*fleet_run(fleet, table, vt, 20.0, [0.0, 0.5, 8.0]))
    every = sorted(t for d in fleet for t in d.sends)
    assert max_in_any_window(every) <= RATE + BURST
    joiner = fleet[2]
    assert joiner.sends and joiner.sends[0] <= 8.0 + 5.0, "the joiner got a share within 5 s"
    assert len(between(joiner.sends, 15.0, 20.0)) / 5.0 == pytest.approx(RATE / 3, rel=0.1)
    assert len(between(every, 14.0, 20.0)) / 6.0 >= 0.95 * RATE


async def test_a_dead_daemons_share_goes_to_the_others_once_it_is_stale() -> None:
    vt = VirtualTime()
    table = SimTable()
    fleet = [SimDaemon(f"d{i}", vt) for i in range(3)]
    coros = fleet_run(fleet, table, vt, 25.0, [0.0, 0.3, 0.6])
    await vt.run(*coros, kill_at(table, fleet[0], vt, at=8.0, gone=5.0))
    every = sorted(t for d in fleet for t in d.sends)
    assert max_in_any_window(every) <= RATE + BURST
    assert not between(fleet[0].sends, 8.1, 25.0)
    survivors = between(sorted(fleet[1].sends + fleet[2].sends), 17.0, 25.0)
    assert len(survivors) / 8.0 >= 0.95 * RATE


async def test_a_stopped_budget_sends_nothing() -> None:
    vt = VirtualTime()
    d = SimDaemon("d0", vt)
    table = SimTable()
    table.beat(d)
    table.beat(d)
    assert d.budget.share == RATE
    d.budget.stop()

    async def one() -> bool:
        try:
            await asyncio.wait_for(d.bucket.acquire(), 0.2)
        except TimeoutError:
            return False
        return True

    assert not await one(), "a stopped budget hands out no token"


async def test_a_stalled_loop_does_not_let_reserved_slots_out_in_a_clump() -> None:
    """Callers that overslept (a busy host) would all send at once; the cap on any second's
    tokens holds them to the share."""
    vt = VirtualTime()
    rng = random.Random(7)

    async def oversleeping(delay: float) -> None:
        await vt.sleep(delay + (0.3 if rng.random() < 0.2 else 0.0))

    bucket = TokenBucket(RATE, BURST, clock=vt.clock, sleep=oversleeping)
    bucket.adjust(50.0, 2)
    sends: list[float] = []

    async def worker() -> None:
        while vt.now < 10.0:
            await bucket.acquire()
            sends.append(vt.now)

    await vt.run(*(worker() for _ in range(20)))
    assert max_in_any_window(sorted(sends)) <= 50 + 1
    assert len(sends) / 10.0 >= 0.9 * 50


def test_a_daemon_holds_two_seconds_of_its_share_claimed() -> None:
    vt = VirtualTime()
    d = SimDaemon("d0", vt)
    assert d.budget.claim_capacity() == 4, "paused: a few rows, to show it has work"
    table = SimTable()
    table.rows["other"] = (3.0, 0.0)  # another daemon, idle as this one
    table.beat(d)
    table.beat(d)
    assert d.budget.share == pytest.approx(RATE / 2)
    assert d.budget.claim_capacity() == 2 * RATE / 2
