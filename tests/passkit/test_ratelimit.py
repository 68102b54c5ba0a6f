"""Token bucket and throttle, on virtual time (no real sleeping, no timing assertions)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib

import pytest

from daemon.passkit.throttle import Priority, PrioritySlots, Throttle, TokenBucket, bulk
from tests.passkit_fixtures import VirtualTime, make_settings


def max_in_any_window(times: list[float], width: float = 1.0) -> int:
    """Most events inside any half-open window [t, t + width)."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_left(ordered, t + width) - i for i, t in enumerate(ordered)), default=0
    )


async def acquire_at(bucket: TokenBucket, vt: VirtualTime, times: list[float]) -> None:
    await bucket.acquire()
    times.append(vt.now)


async def test_rate_zero_is_unlimited_and_never_sleeps() -> None:
    async def no_sleep(_: float) -> None:
        raise AssertionError("an unlimited bucket must not sleep")

    bucket = TokenBucket(0, 1, clock=lambda: 0.0, sleep=no_sleep)
    waits = [await bucket.acquire() for _ in range(10_000)]
    assert bucket.unlimited
    assert set(waits) == {0.0}


async def test_burst_passes_at_once_then_one_token_per_interval() -> None:
    vt = VirtualTime()
    bucket = TokenBucket(10, 3, clock=vt.clock, sleep=vt.sleep)
    times: list[float] = []
    await vt.run(*(acquire_at(bucket, vt, times) for _ in range(7)))
    assert times == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize(
    ("rate", "burst", "callers"),
    [(5, 1, 40), (50, 5, 400), (200, 20, 1500), (3.5, 2, 30)],
)
async def test_no_one_second_window_sees_more_than_rate_plus_burst(
    rate: float, burst: int, callers: int
) -> None:
    vt = VirtualTime()
    bucket = TokenBucket(rate, burst, clock=vt.clock, sleep=vt.sleep)
    times: list[float] = []
    await vt.run(*(acquire_at(bucket, vt, times) for _ in range(callers)))
    assert len(times) == callers
    assert max_in_any_window(times) <= rate + burst
    # ...while still using the rate it is given: the last caller passes on schedule.
    assert times[-1] == pytest.approx((callers - burst) / rate)


async def test_rate_holds_when_callers_arrive_in_waves() -> None:
    """Idle time refills the bucket to `burst`, never beyond."""
    vt = VirtualTime()
    bucket = TokenBucket(10, 4, clock=vt.clock, sleep=vt.sleep)
    times: list[float] = []

    async def wave(start: float, size: int) -> None:
        await vt.sleep(start)
        await asyncio.gather(*(acquire_at(bucket, vt, times) for _ in range(size)))

    await vt.run(wave(0.0, 12), wave(5.0, 12), wave(5.05, 3), wave(20.0, 30))
    assert max_in_any_window(times) <= 10 + 4
    assert times.count(20.0) == 4


async def test_waiters_are_served_in_arrival_order() -> None:
    vt = VirtualTime()
    bucket = TokenBucket(2, 1, clock=vt.clock, sleep=vt.sleep)
    order: list[int] = []

    async def caller(n: int) -> None:
        await bucket.acquire()
        order.append(n)

    await vt.run(*(caller(n) for n in range(8)))
    assert order == list(range(8))


async def test_acquire_reports_how_long_it_waited() -> None:
    vt = VirtualTime()
    bucket = TokenBucket(4, 1, clock=vt.clock, sleep=vt.sleep)
    waits = await vt.run(*(bucket.acquire() for _ in range(3)))
    assert waits == pytest.approx([0.0, 0.25, 0.5])


@pytest.mark.parametrize(("rate", "burst"), [(-1, 1), (float("inf"), 1), (1, 0)])
def test_bucket_rejects_nonsense_parameters(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


async def test_throttle_never_exceeds_max_concurrency() -> None:
    vt = VirtualTime()
    throttle = Throttle(3, clock=vt.clock, sleep=vt.sleep)
    peak = 0

    async def request() -> None:
        nonlocal peak
        async with throttle:
            peak = max(peak, throttle.in_flight)
            await vt.sleep(0.05)

    await vt.run(*(request() for _ in range(30)))
    assert peak == 3
    assert throttle.in_flight == 0
    assert vt.now == pytest.approx(0.5)  # 30 requests, 3 at a time, 50 ms each


async def test_throttle_enforces_rate_and_concurrency_together() -> None:
    vt = VirtualTime()
    throttle = Throttle(5, rate=20, burst=2, clock=vt.clock, sleep=vt.sleep)
    starts: list[float] = []
    peak = 0

    async def request(latency: float) -> None:
        nonlocal peak
        async with throttle:
            starts.append(vt.now)
            peak = max(peak, throttle.in_flight)
            await vt.sleep(latency)

    await vt.run(*(request(0.01 + (n % 7) * 0.1) for n in range(200)))
    assert peak <= 5
    assert max_in_any_window(starts) <= 20 + 2


async def test_throttle_gives_the_slot_back_when_cancelled_waiting_for_a_token() -> None:
    vt = VirtualTime()
    throttle = Throttle(1, rate=1, burst=1, clock=vt.clock, sleep=vt.sleep)
    async with throttle:
        pass  # spends the only token: the next caller must wait a second
    waiter = asyncio.ensure_future(throttle.__aenter__())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert throttle.in_flight == 0
    await asyncio.wait_for(throttle._slots.acquire(Priority.BULK), 1)  # the slot is free again


def test_throttle_from_settings_uses_the_passkit_limits() -> None:
    settings = make_settings(
        passkit_max_concurrency=7, passkit_rate_limit=12.5, passkit_rate_burst=3
    )
    throttle = Throttle.from_settings(settings)
    assert throttle.max_concurrency == 7
    assert throttle._bucket.reserve() == 0.0


def test_throttle_rejects_zero_concurrency() -> None:
    with pytest.raises(ValueError):
        Throttle(0)


async def test_a_transactional_request_takes_the_next_slot_before_waiting_campaign_sends() -> None:
    throttle = Throttle(1)
    order: list[str] = []
    release = asyncio.Event()

    async def request(name: str, *, as_bulk: bool) -> None:
        with bulk() if as_bulk else contextlib.nullcontext():
            async with throttle:
                order.append(name)
                if name == "first":
                    await release.wait()

    first = asyncio.create_task(request("first", as_bulk=True))
    await asyncio.sleep(0)
    sends = [asyncio.create_task(request(f"send{i}", as_bulk=True)) for i in range(3)]
    await asyncio.sleep(0)
    sync = asyncio.create_task(request("sync", as_bulk=False))
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, *sends, sync)
    assert order == ["first", "sync", "send0", "send1", "send2"]


async def test_a_waiter_cancelled_or_granted_at_once_loses_no_slot() -> None:
    slots = PrioritySlots(1)
    await slots.acquire(Priority.BULK)
    waiter = asyncio.create_task(slots.acquire(Priority.BULK))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    granted = asyncio.create_task(slots.acquire(Priority.TRANSACTIONAL))
    await asyncio.sleep(0)
    slots.release()  # goes to the live waiter, not the cancelled one
    await asyncio.wait_for(granted, 1)
    racing = asyncio.create_task(slots.acquire(Priority.BULK))
    await asyncio.sleep(0)
    slots.release()
    racing.cancel()  # granted and cancelled in the same turn: the slot is passed on
    await asyncio.gather(racing, return_exceptions=True)
    await asyncio.wait_for(slots.acquire(Priority.BULK), 1)
    assert slots.waiting(Priority.BULK) == slots.waiting(Priority.TRANSACTIONAL) == 0
