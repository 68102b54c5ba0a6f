"""PassKit down as a whole: the daemon stops spending back-off on it, probes it with one cheap
request every LOYALTYD_PASSKIT_PROBE_SECONDS (within the rate budget), and once it answers
releases every row held back by the outage, due at once (the workers' throttle then lets them
out at the rate limit, pass syncs first). While PassKit is up it also releases, now and then,
rows that another daemon held back and could not release (it stopped meanwhile)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from daemon.core.clock import wait_any
from daemon.core.logs import get_logger
from daemon.passkit.client import PassKitClient

log = get_logger(__name__)

# While PassKit is up: how often rows another daemon held back are looked for.
RELEASE_EVERY_SECONDS = 30.0
# After PassKit came back: the second release, for outcomes recorded after the first (a call
# in flight, up to its timeout, and the worker's batch delay).
AFTER_RECOVERY_SECONDS = 5.0

Release = Callable[[], Awaitable[int]]


class OutageWatch:
    def __init__(
        self,
        client: PassKitClient,
        release: Release,
        *,
        probe_every: float,
        release_every: float = RELEASE_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._release = release
        self._probe_every = probe_every
        self._release_every = release_every
        self._clock = clock

    async def run(self, stopping: asyncio.Event) -> None:
        health = self._client.health
        next_release = self._clock()  # once at start-up too
        while not stopping.is_set():
            if health.down:
                await self._client.probe()
            if not health.down and (health.recovered.is_set() or self._clock() >= next_release):
                recovering = health.recovered.is_set()
                if await self._released():
                    health.recovered.clear()
                    # Calls that failed while PassKit was down may still be recorded as held
                    # after this release: one more, a few seconds on, catches them.
                    gap = AFTER_RECOVERY_SECONDS if recovering else self._release_every
                    next_release = self._clock() + gap
            wait = self._probe_every if health.down else max(0.0, next_release - self._clock())
            await wait_any(stopping, health.recovered, within=wait)

    async def _released(self) -> bool:
        try:
            count = await self._release()
        except Exception as exc:  # the database's trouble: tried again at the next turn
            log.warning("held_work_release_failed", error=repr(exc))
            return False
        if count:
            log.info("held_work_released", rows=count)
        return True
