"""Live pages without load: one feed per daemon, shared by every viewer.

While at least one page watches, the feed reads what changed in the watched programs'
campaigns (one statement), at most once a second while a campaign of theirs is being sent or
a change was just seen, and otherwise when a campaign's NOTIFY rings (inserted, edited, moved
by the daemon) or every few seconds. It keeps the latest progress of each campaign in memory,
so the fragments that show progress are rendered from it, not read again per viewer, and
tells each subscriber, as a small "changed" event, which of its programs' campaigns moved.
Events coalesce per subscriber (a set of names), so a slow page gets the newest state, never
a backlog, and nothing is lost: what changed after a read is found by the next one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from daemon.core.clock import utc_now, wait_any
from daemon.core.logs import get_logger
from daemon.core.metrics import Metrics
from daemon.store import console as store
from daemon.store.errors import DATABASE_ERRORS
from daemon.store.pool import Pool

log = get_logger(__name__)

READ_EVERY_SECONDS: Final = 1.0
IDLE_SECONDS: Final = 5.0
# Rows a transaction committed late (its updated_at older than the last read) are still found.
OVERLAP: Final = timedelta(seconds=2)


@dataclass(eq=False)
class Subscription:
    programs: frozenset[uuid.UUID]
    pending: set[str] = field(default_factory=set)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self, names: Iterable[str]) -> None:
        self.pending.update(names)
        if self.pending:
            self.ready.set()

    def take(self) -> list[str]:
        names = sorted(self.pending)
        self.pending.clear()
        self.ready.clear()
        return names


class Feed:
    def __init__(
        self,
        pool: Pool,
        *,
        read_every: float = READ_EVERY_SECONDS,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._pool = pool
        self._metrics = metrics
        self._read_every = read_every
        self._subscriptions: set[Subscription] = set()
        self._watching = asyncio.Event()
        self.rung = asyncio.Event()  # the campaigns' NOTIFY channel rings it
        self._progress: dict[uuid.UUID, store.Change] = {}
        self._since = clock()
        self.reads = 0  # statements read, for the benchmark

    def subscribe(self, programs: Iterable[uuid.UUID]) -> Subscription:
        subscription = Subscription(frozenset(programs))
        self._subscriptions.add(subscription)
        self._watching.set()
        self._count_watchers()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        if not self._subscriptions:
            self._watching.clear()
        self._count_watchers()
        # Nobody reads these programs' campaigns any more: what is kept of them would only go
        # stale (and grow).
        watched = self._watched()
        for campaign_id in [i for i, c in self._progress.items() if c.program_id not in watched]:
            del self._progress[campaign_id]

    @property
    def watchers(self) -> int:
        return len(self._subscriptions)

    def _count_watchers(self) -> None:
        if self._metrics is not None:
            self._metrics.console_watchers.set(len(self._subscriptions))

    def _watched(self) -> set[uuid.UUID]:
        return {p for s in self._subscriptions for p in s.programs}

    def known(self, campaign_id: uuid.UUID) -> store.Change | None:
        """A campaign's progress as the feed keeps it: only while its program is watched (so
        the feed's reads keep it fresh); None otherwise, and the page reads it itself."""
        return self._progress.get(campaign_id)

    def remember(self, progress: store.Change) -> None:
        """A campaign a page read itself: kept while its program is watched, unless the feed
        already holds a newer read of it."""
        if progress.program_id not in self._watched():
            return
        known = self._progress.get(progress.id)
        if known is None or known.updated_at < progress.updated_at:
            self._progress[progress.id] = progress

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await wait_any(stopping, self._watching, within=None)
            if stopping.is_set():
                return
            self.rung.clear()
            busy = await self._read_once()
            # At most one read a second, however often the doorbell rings; while nothing is
            # being sent, the next read waits for a ring (or a few seconds).
            await wait_any(stopping, within=self._read_every)
            if not busy:
                await wait_any(stopping, self.rung, within=IDLE_SECONDS - self._read_every)

    async def _read_once(self) -> bool:
        """One read of what changed; whether to read again in a second."""
        programs = sorted(self._watched())
        if not programs:
            return False
        try:
            changes, running = await store.changes_since(
                self._pool, programs, self._since - OVERLAP
            )
        except DATABASE_ERRORS as exc:
            log.warning("console_feed_read_failed", error=repr(exc))
            return True
        self.reads += 1
        if self._metrics is not None:
            self._metrics.console_feed_reads.inc()
        moved: list[tuple[store.Change, bool]] = []
        for change in changes:
            known = self._progress.get(change.id)
            self._progress[change.id] = change
            if known is None or _shown(known) != _shown(change):
                # A new campaign or a new status changes the history table and what an admin
                # may do; progress alone changes the figures.
                moved.append((change, known is None or _stage(known) != _stage(change)))
        if changes:
            self._since = max(self._since, max(c.updated_at for c in changes))
        self._announce(moved)
        return running or bool(moved)

    def _announce(self, moved: list[tuple[store.Change, bool]]) -> None:
        for subscription in self._subscriptions:
            mine = [(c, listed) for c, listed in moved if c.program_id in subscription.programs]
            names = [f"campaign-{c.id}" for c, _ in mine]
            names += [f"campaign-{c.id}-status" for c, staged in mine if staged]
            if any(staged for _, staged in mine):
                names.append("campaigns")
            subscription.notify(names)


def _stage(change: store.Change) -> tuple[object, ...]:
    """Where a campaign stands: a change of it changes what an admin may do to it."""
    return (change.status, change.counted, change.recipient_count)


def _shown(change: store.Change) -> tuple[object, ...]:
    """What a page shows of a campaign: a change of anything else is no news."""
    return (
        change.status,
        change.sent,
        change.failed,
        change.skipped,
        change.recipient_count,
        change.counted,
        change.finished_at,
    )
