"""Requests-per-second and in-flight limits for everything that calls PassKit.

Transactional work (pass syncs, birthday gifts) has strict priority over campaign sends for
the in-flight slots: a sync waits for the next free slot, never behind a queue of campaign
requests. A campaign send marks itself with `bulk()`; everything else is transactional.

Pure asyncio: the clock and the sleep are parameters, so tests run on virtual time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from enum import IntEnum
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.core.config import Settings

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_EPSILON = 1e-9
# How often a caller waiting for a token looks again at a rate that may have changed.
RECHECK_SECONDS = 0.05


class TokenBucket:
    """At most `burst` tokens at once, refilled at `rate` per second; rate 0 means unlimited.

    Kept as the generic cell rate algorithm (a "theoretical arrival time" instead of a token
    count): each caller reserves the next slot synchronously and only then sleeps, so
    concurrent callers queue in arrival order without a lock, and an oversleeping caller does
    not push later slots back. In any window of one second at most `rate + burst` callers pass.
    A caller cancelled while waiting forfeits its slot: the limiter may under-use the rate,
    never exceed it.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate < 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a finite number >= 0, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self._interval = 1.0 / rate if rate else 0.0
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._arrival = -math.inf
        # Set by adjust(): the rate can change under waiting callers, and 0 then means paused.
        self._adjustable = False
        self._paused = False
        self._epoch = 0
        self._last_grant: float | None = None
        # Adjustable buckets also cap the tokens handed out in any second at what the rate
        # and burst allow: a stalled event loop must not let reserved slots out in a clump.
        self._window_cap = 0
        self._recent: deque[float] = deque()
        self.granted = 0  # tokens handed out, ever
        self.waited = 0  # of those, how many had to wait (the rate, not the caller, was short)
        self.waiting = 0  # callers waiting for a token now

    @property
    def unlimited(self) -> bool:
        return self._interval == 0.0 and not self._paused

    def adjust(self, rate: float, burst: int) -> None:
        """Change the rate while running (this daemon's share of a fleet-wide budget); a rate
        of 0 pauses. Waiting callers drop the slots they reserved at the old rate and reserve
        again, so a cut takes effect at once and a raise is not held back by old slots."""
        if rate < 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a finite number >= 0, got {rate}")
        self._adjustable = True
        self._paused = rate == 0
        self._interval = 1.0 / rate if rate else 0.0
        self._tolerance = (max(1, burst) - 1) * self._interval
        self._window_cap = math.ceil(rate - _EPSILON) + max(1, burst) - 1 if rate else 0
        # The theoretical arrival time as if every token so far had been sent at the new rate.
        self._arrival = -math.inf if self._last_grant is None else self._last_grant + self._interval
        self._epoch += 1

    def reserve(self) -> float:
        """Claim the next token; return how many seconds to wait before using it."""
        if self.unlimited:
            return 0.0
        now = self._clock()
        arrival = max(self._arrival, now)
        self._arrival = arrival + self._interval
        wait = arrival - self._tolerance - now
        # Sums of float intervals leave dust; a nanosecond early is not a breach of the rate.
        return wait if wait > _EPSILON else 0.0

    async def acquire(self) -> float:
        """Wait for a token; return the seconds waited (for the metrics)."""
        if not self._adjustable:
            wait = self.reserve()
            if wait > 0.0:
                self.waiting += 1
                try:
                    await self._sleep(wait)
                finally:
                    self.waiting -= 1
            return self._grant(wait)
        started = self._clock()
        self.waiting += 1
        try:
            while True:
                epoch = self._epoch
                deadline = math.inf if self._paused else self._clock() + self.reserve()
                # Sleep in short steps, so that a change of rate is seen within one step.
                while epoch == self._epoch and self._clock() < deadline - _EPSILON:
                    await self._sleep(min(RECHECK_SECONDS, deadline - self._clock()))
                while epoch == self._epoch and (full_for := self._window_full_for()) > 0:
                    await self._sleep(min(RECHECK_SECONDS, full_for))
                if epoch == self._epoch:
                    self._recent.append(self._clock())
                    return self._grant(self._clock() - started)
        finally:
            self.waiting -= 1

    def _window_full_for(self) -> float:
        """Seconds until the last second's tokens fall below the cap (0: room now)."""
        now = self._clock()
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()
        if len(self._recent) < self._window_cap:
            return 0.0
        return max(self._recent[0] + 1.0 - now, _EPSILON)

    def _grant(self, waited: float) -> float:
        self.granted += 1
        if waited > 0.0:
            self.waited += 1
        self._last_grant = self._clock()
        return waited


class Priority(IntEnum):
    TRANSACTIONAL = 0
    BULK = 1


_priority: ContextVar[Priority] = ContextVar("passkit_priority", default=Priority.TRANSACTIONAL)


@contextlib.contextmanager
def bulk() -> Iterator[None]:
    """PassKit requests made inside wait behind transactional ones for a slot."""
    token = _priority.set(Priority.BULK)
    try:
        yield
    finally:
        _priority.reset(token)


class PrioritySlots:
    """A semaphore whose waiters are served by priority, then in arrival order."""

    def __init__(self, count: int) -> None:
        self._free = count
        self._waiters: tuple[deque[asyncio.Future[None]], ...] = tuple(deque() for _ in Priority)

    def waiting(self, priority: Priority) -> int:
        return sum(1 for f in self._waiters[priority] if not f.done())

    async def acquire(self, priority: Priority) -> None:
        if self._free > 0 and not any(self._waiters):
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiters[priority]
        queue.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(future)
            raise

    def release(self) -> None:
        for queue in self._waiters:
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)
                    return
        self._free += 1


class Throttle:
    """A concurrency slot plus a rate token, taken together for one request.

    The slot is taken first: a token taken while still queueing for a slot would let requests
    leave in a clump once slots free up, exceeding the rate on the wire.

        async with throttle as waited:   # `waited`: seconds spent waiting for the token
            await send()
    """

    def __init__(
        self,
        max_concurrency: int,
        rate: float = 0.0,
        burst: int = 1,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        self._slots = PrioritySlots(max_concurrency)
        self._bucket = TokenBucket(rate, burst, clock=clock, sleep=sleep)
        self._in_flight = 0

    @classmethod
    def from_settings(
        cls, settings: Settings, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
    ) -> Throttle:
        return cls(
            settings.passkit_max_concurrency,
            settings.passkit_rate_limit,
            settings.passkit_rate_burst,
            clock=clock,
            sleep=sleep,
        )

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def bucket(self) -> TokenBucket:
        return self._bucket

    async def __aenter__(self) -> float:
        await self._slots.acquire(_priority.get())
        try:
            waited = await self._bucket.acquire()
        except BaseException:
            self._slots.release()
            raise
        self._in_flight += 1
        return waited

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._in_flight -= 1
        self._slots.release()
