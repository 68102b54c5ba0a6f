"""One sweep of a PassKit class (a program's members, a coupon campaign, a production): the
whole list streamed into Postgres in batches, applied once it ended cleanly, the passes it
lacked read back one by one (only a 404 makes a pass DELETED), and the balances compared.

A list proves nothing about what it lacks unless it ended cleanly and is as long as PassKit's
own count: a stream that broke off, or a list cut to PassKit's default 25 records, never marks
a pass deleted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from daemon.core.config import Settings
from daemon.core.errors import MalformedRecord, PermanentPassKitError, TransientError
from daemon.core.logs import get_logger
from daemon.core.metrics import Metrics
from daemon.domain.wallet import Applied, Drift, SweepClass, SweepSummary, WalletRecord
from daemon.passkit.client import PassKitClient
from daemon.passkit.records import wallet_record
from daemon.passkit.routes import ListRequest, list_request
from daemon.store.pool import Pool
from daemon.store.wallet import SweepSession
from daemon.wallet.inbox import read_and_apply

log = get_logger(__name__)

# Records copied into Postgres at a time: memory stays flat whatever the program's size.
STAGE_BATCH = 5_000
# Passes missing from the list read back at once (each read is one request within the budget).
READ_CONCURRENCY = 8
# A sweep that failed on a passing trouble (PassKit or the database) is tried again this soon.
RETRY_SECONDS = 600.0


class Sweeper:
    def __init__(
        self,
        client: PassKitClient,
        pool: Pool,
        settings: Settings,
        *,
        dsn: str,
        owner: uuid.UUID,
        source: str = "DATABASE_URL",
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_progress: Callable[[SweepClass, int], None] | None = None,
    ) -> None:
        self._client = client
        self._pool = pool
        self._settings = settings
        self._dsn = dsn
        self._owner = owner
        self._source = source
        self._metrics = metrics
        self._clock = clock
        self._on_progress = on_progress

    async def sweep(self, target: SweepClass) -> SweepSummary | None:
        """Sweep `target` now; None when another daemon is sweeping it. A failure is recorded
        in wallet_sweeps and raised."""
        async with await SweepSession.open(self._dsn, self._source) as session:
            if not await session.lock(target):
                log.info("wallet_sweep_busy", program_id=str(target.program_id))
                return None
            await session.start(target, self._owner)
            log.info(
                "wallet_sweep_started", program_id=str(target.program_id), protocol=target.protocol
            )
            try:
                summary = await self._run(session, target)
            except Exception as exc:
                # A passing trouble is tried again in a few minutes; anything else at the next
                # daily hour (never every few minutes all day long).
                retry = RETRY_SECONDS if isinstance(exc, TransientError) else None
                await session.finish(None, error=str(exc)[:500], retry_in=retry)
                log.warning(
                    "wallet_sweep_failed",
                    program_id=str(target.program_id),
                    protocol=target.protocol,
                    error=str(exc),
                )
                raise
            await session.finish(summary)
        self._report(summary)
        return summary

    async def _run(self, session: SweepSession, target: SweepClass) -> SweepSummary:
        started = self._clock()
        request = list_request(target.protocol, target.class_id)
        expected = await self._client.count(request.count, request.path, dict(request.body))
        unreadable = await self._stage(session, target, request)
        applied = await session.apply(target)
        if unreadable:
            # What could be read is applied; what the list lacks proves nothing this time.
            deleted, unchecked = 0, (await session.missing(target, 0))[1]
        else:
            deleted, unchecked = await self._deletions(session, target, applied, expected)
        drift = Drift()
        if target.protocol == "MEMBERSHIP":
            drift = await session.drift(target, self._settings.loyaltyd_wallet_repair_cap)
        return SweepSummary(
            target, applied, drift, deleted, unchecked, expected, self._clock() - started
        )

    async def _stage(self, session: SweepSession, target: SweepClass, request: ListRequest) -> int:
        """The list into the staging table in batches; how many records could not be read."""
        batch: list[WalletRecord] = []
        unreadable = staged = 0
        async for item in self._client.stream(request.records, request.path, dict(request.body)):
            try:
                batch.append(wallet_record(item))
            except MalformedRecord as exc:
                unreadable += 1
                if unreadable <= 3:
                    log.warning("wallet_record_unreadable", error=str(exc))
                continue
            if len(batch) >= STAGE_BATCH:
                await session.stage(batch)
                staged += len(batch)
                batch = []
                if self._on_progress is not None:
                    self._on_progress(target, staged)
        if batch:
            await session.stage(batch)
        if unreadable:
            log.warning(
                "wallet_list_unreadable",
                records=unreadable,
                program_id=str(target.program_id),
                detail="the readable records are applied; no pass is marked deleted this time",
            )
        return unreadable

    async def _deletions(
        self, session: SweepSession, target: SweepClass, applied: Applied, expected: int
    ) -> tuple[int, int]:
        """Passes the list lacked, read back (up to LOYALTYD_WALLET_DELETE_CHECKS); how many
        were gone (404) and how many were left unchecked."""
        limit = self._settings.loyaltyd_wallet_delete_checks
        if applied.listed < expected:
            # A short list (cut, or PassKit's 25-record default) says nothing of the rest.
            _, total = await session.missing(target, 0)
            log.warning(
                "wallet_list_short",
                listed=applied.listed,
                expected=expected,
                program_id=str(target.program_id),
            )
            return 0, total
        missing, total = await session.missing(target, limit)
        if applied.checked == 0 and total:
            # Not one of loyaltyd's passes is in PassKit's list: a wrong class id, not a
            # program whose every pass was deleted. Said, not acted on.
            log.warning(
                "wallet_list_has_none_of_ours",
                program_id=str(target.program_id),
                protocol=target.protocol,
                class_id=target.class_id,
                passes=total,
                detail="check the program's PassKit id; no pass is marked deleted",
            )
            return 0, total
        deleted = refused = 0
        for start in range(0, len(missing), READ_CONCURRENCY):
            chunk = missing[start : start + READ_CONCURRENCY]
            for gone in await asyncio.gather(*(self._read_back(target, i) for i in chunk)):
                deleted += gone is True
                refused += gone is None
        return deleted, total - len(missing) + refused

    async def _read_back(self, target: SweepClass, passkit_id: str) -> bool | None:
        """Read one pass the list lacked and record what PassKit says; True if it is gone,
        None when PassKit refused the read (that pass stays unchecked this time)."""
        try:
            record = await read_and_apply(self._client, self._pool, target.protocol, passkit_id)
        except PermanentPassKitError as exc:
            log.warning("wallet_read_back_refused", passkit_id=passkit_id, error=str(exc))
            return None
        return record.status == "DELETED"

    def _report(self, summary: SweepSummary) -> None:
        drift = summary.drift
        log.info(
            "wallet_sweep_finished",
            program_id=str(summary.sweep.program_id),
            protocol=summary.sweep.protocol,
            **summary.as_json(),
        )
        for pass_id in drift.reported_passes:
            log.warning(
                "wallet_balance_drifts_again",
                pass_id=str(pass_id),
                detail="PassKit shows another balance again after a repair; "
                "reported once, not repaired again until the ledger moves",
            )
        if self._metrics is None:
            return
        for outcome, count in (
            ("repaired", drift.repaired),
            ("reported", drift.reported),
            ("deferred", drift.deferred),
            ("seen", drift.found),
        ):
            if count:
                self._metrics.wallet_drift.labels("sweep", outcome).inc(count)
