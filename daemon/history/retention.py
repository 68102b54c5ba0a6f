"""The retention rule: history older than its settings is removed in the background.

Finished deliveries of campaigns that finished more than LOYALTYD_DELIVERY_RETENTION_DAYS ago,
and pass syncs idle for more than LOYALTYD_SYNC_RETENTION_DAYS, go in batches of a few
thousand rows, each batch its own short statement with a pause after it, so no lock is held
long and a running blast keeps its pace; the table is vacuumed after a large removal, so the
space is reused and the table stays the size of its retention window. Whichever daemon takes
the advisory lock does it; the others skip that round. Campaign rows and their counters,
notification_logs, transactions and birthday_logs are never touched.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Final

from daemon.core.clock import sleep_or_stop
from daemon.core.logs import get_logger
from daemon.core.metrics import Metrics
from daemon.store import retention as store
from daemon.store.errors import DATABASE_ERRORS
from daemon.store.pool import Pool

log = get_logger(__name__)

DAY: Final = 86_400.0
EVERY_SECONDS: Final = 600.0  # a round every ten minutes (and one at start-up)
BATCH: Final = 5_000
PAUSE_SECONDS: Final = 0.05  # after each batch: the daemon's own work goes first
CAMPAIGNS_PER_PASS: Final = 100
VACUUM_AFTER: Final = 50_000  # rows removed in a round before the table is vacuumed


@dataclass(frozen=True, slots=True)
class Removed:
    deliveries: int = 0
    syncs: int = 0


class Retention:
    def __init__(
        self,
        pool: Pool,
        *,
        delivery_days: int,
        sync_days: int,
        metrics: Metrics | None = None,
        every: float = EVERY_SECONDS,
        batch: int = BATCH,
        pause: float = PAUSE_SECONDS,
    ) -> None:
        self._pool = pool
        self._delivery_days = delivery_days
        self._sync_days = sync_days
        self._metrics = metrics
        self._every = every
        self._batch = batch
        self._pause = pause

    @property
    def enabled(self) -> bool:
        return self._delivery_days > 0 or self._sync_days > 0

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.run_once(stopping)
            except DATABASE_ERRORS as exc:
                log.warning("history_retention_failed", error=repr(exc))
            except Exception:
                # Never the daemon's end: said whole, tried again next round.
                log.exception("history_retention_crashed")
            await sleep_or_stop(stopping, self._every)

    async def run_once(self, stopping: asyncio.Event | None = None) -> Removed | None:
        """One round; None when another daemon holds the job."""
        async with self._pool.acquire() as conn:
            if not await store.try_lock(conn):
                return None
            try:
                deliveries = await self._deliveries(conn, stopping)
                syncs = await self._syncs(conn, stopping)
                await self._vacuum(conn, deliveries, syncs)
            finally:
                await store.unlock(conn)
        if deliveries or syncs:
            log.info("history_removed", deliveries=deliveries, syncs=syncs)
        return Removed(deliveries, syncs)

    async def _deliveries(self, conn: store.Connection, stopping: asyncio.Event | None) -> int:
        if self._delivery_days <= 0:
            return 0
        removed = 0
        keep = self._delivery_days * DAY
        while campaigns := await store.campaigns_due(conn, keep, CAMPAIGNS_PER_PASS):
            for campaign in campaigns:
                if _stopped(stopping):
                    return removed
                gone = await self._batches(_of_campaign(conn, campaign.id, self._batch), stopping)
                removed += gone
                self._count("campaign_deliveries", gone)
                # Stopped half-way through a campaign: it is not purged through yet.
                through = None if _stopped(stopping) else campaign.finished_at
                await store.advance(conn, "campaign_deliveries", through, gone)
            if len(campaigns) < CAMPAIGNS_PER_PASS:
                break
        return removed

    async def _syncs(self, conn: store.Connection, stopping: asyncio.Event | None) -> int:
        if self._sync_days <= 0:
            return 0
        keep = self._sync_days * DAY
        removed = await self._batches(lambda: store.remove_syncs(conn, keep, self._batch), stopping)
        await store.advance(conn, "pass_syncs", None, removed)
        self._count("pass_syncs", removed)
        return removed

    async def _batches(self, batch: store.Batch, stopping: asyncio.Event | None) -> int:
        """Batches until one comes back short; a pause after each."""
        removed = 0
        while not _stopped(stopping):
            gone = await batch()
            removed += gone
            if gone < self._batch:
                break
            await asyncio.sleep(self._pause)
        return removed

    async def _vacuum(self, conn: store.Connection, deliveries: int, syncs: int) -> None:
        for table, removed in (("campaign_deliveries", deliveries), ("pass_syncs", syncs)):
            if removed >= VACUUM_AFTER:
                await store.vacuum(conn, table)

    def _count(self, table: str, rows: int) -> None:
        if self._metrics is not None and rows:
            self._metrics.history_removed.labels(table).inc(rows)


def _of_campaign(conn: store.Connection, campaign: uuid.UUID, batch: int) -> store.Batch:
    async def one() -> int:
        return await store.remove_deliveries(conn, campaign, batch)

    return one


def _stopped(stopping: asyncio.Event | None) -> bool:
    return stopping is not None and stopping.is_set()
