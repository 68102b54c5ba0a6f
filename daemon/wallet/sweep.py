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
from daemon.core.errors import PermanentPassKitError
from daemon.core.logs import get_logger
from daemon.core.metrics import Metrics
from daemon.domain.wallet import Applied, Drift, SweepClass, SweepSummary, WalletRecord
from daemon.passkit.client import PassKitClient
from daemon.passkit.records import wallet_record
from daemon.passkit.routes import list_request
from daemon.store.pool import Pool
from daemon.store.wallet import SweepSession, apply_read

log = get_logger(__name__)

# Records copied into Postgres at a time: memory stays flat whatever the program's size.
STAGE_BATCH = 5_000
# Passes missing from the list read back at once (each read is one request within the budget).
READ_CONCURRENCY = 8


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
                await session.finish(None, error=str(exc)[:500])
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
        await self._stage(session, target)
        applied = await session.apply(target)
        deleted, unchecked = await self._deletions(session, target, applied, expected)
        drift = Drift()
        if target.protocol == "MEMBERSHIP":
            drift = await session.drift(target, self._settings.loyaltyd_wallet_repair_cap)
        return SweepSummary(
            target, applied, drift, deleted, unchecked, expected, self._clock() - started
        )

    async def _stage(self, session: SweepSession, target: SweepClass) -> None:
        request = list_request(target.protocol, target.class_id)
        batch: list[WalletRecord] = []
        unreadable = staged = 0
        async for item in self._client.stream(request.records, request.path, dict(request.body)):
            try:
                batch.append(wallet_record(item))
            except ValueError as exc:
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
            raise PermanentPassKitError(
                f"PassKit listed {unreadable} records loyaltyd cannot read: sweep not applied"
            )

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
        deleted = 0
        for start in range(0, len(missing), READ_CONCURRENCY):
            chunk = missing[start : start + READ_CONCURRENCY]
            gone = await asyncio.gather(*(self._read_back(target, i) for i in chunk))
            deleted += sum(gone)
        return deleted, total - len(missing)

    async def _read_back(self, target: SweepClass, passkit_id: str) -> bool:
        """Read one pass the list lacked and record what PassKit says; True if it is gone."""
        held = await self._client.read_pass(target.protocol, passkit_id)
        record = WalletRecord.deleted(passkit_id) if held is None else wallet_record(held)
        await apply_read(self._pool, target.protocol, record)
        return held is None

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
