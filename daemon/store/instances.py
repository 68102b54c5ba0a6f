"""This daemon's heartbeat in loyaltyd.instances (sql/055), and the fence that goes with it.

Every `interval` seconds the daemon writes its heartbeat. Any daemon treats the rows held by
one whose heartbeat is older than `stale` seconds as free (the claim statements read
loyaltyd.instances), so a killed daemon's work is taken over within `stale` seconds, by a
survivor or by its own restart.

A daemon that cannot write its heartbeat may be declared dead by the others while it still
runs, so it fences itself first: once its last heartbeat is `stale - 2 * interval` old, it
starts no new PassKit call (`fenced()`), and duplicates stay bounded by what was in flight.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Final

import asyncpg

from daemon.core.clock import sleep_or_stop
from daemon.core.logs import get_logger
from daemon.store.queries import q

log = get_logger(__name__)

# Rows of daemons dead this long are deleted (their work was taken over long before).
FORGET_AFTER_SECONDS: Final = 86_400.0


class Heartbeat:
    def __init__(
        self,
        pool: asyncpg.Pool,
        owner: uuid.UUID,
        *,
        interval: float,
        stale: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._owner = owner
        self._interval = interval
        self._fence_after = stale - 2 * interval
        self._clock = clock
        self._where = (socket.gethostname(), os.getpid())
        self._last_ok: float | None = None
        self._fenced_logged = False

    def fenced(self) -> bool:
        """True while this daemon must start no PassKit call: its heartbeat is too old for
        the others to still believe it alive much longer (or it never beat)."""
        if self._last_ok is None:
            return True
        return self._clock() - self._last_ok > self._fence_after

    async def beat(self) -> None:
        sent = self._clock()  # the database's heartbeat_at is at least this late
        await self._pool.execute(q("instance_heartbeat"), self._owner, *self._where)
        self._last_ok = sent
        if self._fenced_logged:
            log.info("heartbeat_restored")
            self._fenced_logged = False

    async def run(self, stopping: asyncio.Event) -> None:
        """Beat until `stopping`, then leave the table (a clean stop is not a death)."""
        await self._forget_the_long_dead()
        while not stopping.is_set():
            try:
                await asyncio.wait_for(self.beat(), timeout=self._interval)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if self.fenced() and not self._fenced_logged:
                    log.error(
                        "heartbeat_lost_fenced",
                        error=repr(exc),
                        detail="no new PassKit calls until the database answers again",
                    )
                    self._fenced_logged = True
            await sleep_or_stop(stopping, self._interval)
        await self._leave()

    async def _leave(self) -> None:
        try:
            await asyncio.wait_for(self._pool.execute(q("instance_leave"), self._owner), 5)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("instance_leave_failed", error=repr(exc))

    async def _forget_the_long_dead(self) -> None:
        try:
            await self._pool.execute(q("instances_forget"), FORGET_AFTER_SECONDS)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("instances_forget_failed", error=repr(exc))
