"""This daemon's heartbeat in loyaltyd.instances (docs/schema.sql), and the fence that goes
with it.

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
from collections.abc import Callable, Sequence
from typing import Final, Protocol

import asyncpg

from daemon.core.clock import sleep_or_stop
from daemon.core.logs import get_logger
from daemon.domain.fleet import Offer, PeerRow
from daemon.store.errors import DATABASE_ERRORS
from daemon.store.queries import bind, q


class Budget(Protocol):
    """This daemon's share of the account's rate limit (daemon.passkit.budget), as its
    heartbeat says it and hears the others' (daemon.domain.fleet)."""

    settling: bool  # the share is still below its fair share: beat sooner

    def offer(self) -> Offer: ...
    def settle(self, peers: Sequence[PeerRow]) -> float | None: ...
    def published(self, claim: float) -> None: ...
    def stop(self) -> None: ...


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
        budget: Budget | None = None,
        account: str = "",
        taken_over: Callable[[], int] = lambda: 0,
    ) -> None:
        self._pool = pool
        self._owner = owner
        self._interval = interval
        self._stale = stale
        self._budget = budget
        self._account = account
        # Rows this daemon took over so far, published with each beat.
        self.taken_over = taken_over
        self._fence_after = stale - 2 * interval
        self._clock = clock
        self._where = (socket.gethostname(), os.getpid())
        self._last_ok: float | None = None
        self.ready = False
        self._fenced_logged = False

    def fenced(self) -> bool:
        """True while this daemon must start no PassKit call: its heartbeat is too old for
        the others to still believe it alive much longer (or it never beat)."""
        if self._last_ok is None:
            return True
        return self._clock() - self._last_ok > self._fence_after

    async def beat(self) -> None:
        sent = self._clock()  # the database's heartbeat_at is at least this late
        budget = self._budget
        offer = budget.offer() if budget is not None else Offer(0.0, 0.0, 0.0, 0.0)
        host, pid = self._where
        sql, args = bind(
            "instance_heartbeat",
            id=self._owner,
            host=host,
            pid=pid,
            account=self._account,
            rate_limit=offer.rate_limit,
            want=offer.want,
            share=offer.claim,
            sent_per_second=offer.sent_per_second,
            taken_over=self.taken_over(),
            stale_seconds=self._stale,
        )
        peers = await self._pool.fetch(sql, *args)
        self._last_ok = sent
        if budget is not None:
            cut = budget.settle([PeerRow(r["want"], r["share"], r["rate_limit"]) for r in peers])
            if cut is not None:
                await self._pool.execute(q("instance_share"), self._owner, cut)
                budget.published(cut)
        if self._fenced_logged:
            log.info("heartbeat_restored")
            self._fenced_logged = False

    async def run(self, stopping: asyncio.Event) -> None:
        """Beat until `stopping`, then leave the table (a clean stop is not a death).

        A beat that hangs (the database unreachable behind a dead network) is left running
        and not started again; the fence does not wait for it: it goes by the clock."""
        await self._forget_the_long_dead()
        beat: asyncio.Task[None] | None = None
        try:
            while not stopping.is_set():
                if beat is None:
                    beat = asyncio.create_task(self.beat(), name="heartbeat-beat")
                await asyncio.wait({beat}, timeout=self._interval)
                if not beat.done():
                    self._failed(TimeoutError("heartbeat statement did not answer"))
                    continue
                error = beat.exception()
                beat = None
                if error is None:
                    await sleep_or_stop(stopping, self.next_beat_in())
                    continue
                if not isinstance(error, DATABASE_ERRORS):
                    raise error
                self._failed(error)
                await sleep_or_stop(stopping, self._interval)
        finally:
            if beat is not None:
                beat.cancel()
        await self._leave()

    def _failed(self, error: BaseException) -> None:
        if self.fenced() and not self._fenced_logged:
            log.error(
                "heartbeat_lost_fenced",
                error=repr(error),
                detail="no new PassKit calls until the database answers again",
            )
            self._fenced_logged = True

    def next_beat_in(self) -> float:
        """Seconds to the next beat: sooner while this daemon's budget share is settling."""
        if self._budget is not None and self._budget.settling:
            return self._interval / 4
        return self._interval

    async def mark_ready(self) -> None:
        """The daemon's workers run: from now on it is listed, and a crash leaves its row for
        the others to take its work over."""
        await self._pool.execute(q("instance_ready"), self._owner)
        self.ready = True

    async def leave(self) -> None:
        """Delete this daemon's row: a clean stop, or a start that failed before it was ready
        (so it never shares the budget nor shows as a dead daemon)."""
        await self._leave()

    async def _leave(self) -> None:
        if self._budget is not None:
            self._budget.stop()  # nothing more to send: the workers have drained
        try:
            await asyncio.wait_for(self._pool.execute(q("instance_leave"), self._owner), 5)
        except DATABASE_ERRORS as exc:
            log.warning("instance_leave_failed", error=repr(exc))

    async def _forget_the_long_dead(self) -> None:
        try:
            await self._pool.execute(q("instances_forget"), FORGET_AFTER_SECONDS)
        except DATABASE_ERRORS as exc:
            log.warning("instances_forget_failed", error=repr(exc))
