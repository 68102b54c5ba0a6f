"""Pass sync: the queue of work owed to PassKit for each pass (sql/010, queries/sync.sql).

A burst of transactions on one pass is one row: the newest balance and the newest message
win, and a change landing while a call is in flight makes the row due again afterwards, so
the pass can never be left showing an older balance than the newest.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from daemon.core.clock import utc_now
from daemon.core.errors import PermanentPassKitError, TransientPassKitError
from daemon.core.logs import get_logger
from daemon.core.metrics import Metrics
from daemon.engine.outcomes import Failed, Outcome, RetryLater, Skipped, Succeeded
from daemon.engine.retry import requeue
from daemon.passkit.client import PassKitClient
from daemon.store.queries import q

log = get_logger(__name__)
CHANNEL = "loyaltyd_syncs"
# A pass sync whose calls keep failing is tried again at most this long after the last try.
RETRY_CAP_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class PassSyncJob:
    pass_id: uuid.UUID
    generation: int
    attempts: int
    enqueued_at: datetime
    lease_expired: bool
    passkit_id: str | None
    protocol: str
    passkit_program_id: str | None
    passkit_tier_id: str | None
    points: int | None
    message: str | None
    redeem: bool
    check_in: bool

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> PassSyncJob:
        return cls(
            pass_id=row["pass_id"],
            generation=row["generation"],
            attempts=row["attempts"],
            enqueued_at=row["enqueued_at"],
            lease_expired=row["lease_expired"],
            passkit_id=row["passkit_internal_id"],
            protocol=row["protocol"],
            passkit_program_id=row["passkit_program_id"],
            passkit_tier_id=row["passkit_tier_id"],
            points=row["points_balance"],
            message=row["message"],
            redeem=row["redeem"],
            check_in=row["check_in"],
        )


_OUTCOME_CODES: dict[type, str] = {
    Succeeded: "done",
    Skipped: "done",
    RetryLater: "retry",
    Failed: "dead",
}


class PassSyncQueue:
    name = "sync"
    channel = CHANNEL

    def __init__(
        self,
        pool: asyncpg.Pool,
        client: PassKitClient,
        *,
        lease_seconds: float,
        max_attempts: int,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._pool = pool
        self._client = client
        self._lease_seconds = lease_seconds
        self._max_attempts = max_attempts
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._clock = clock

    async def claim(self, owner: uuid.UUID, limit: int) -> list[PassSyncJob]:
        rows = await self._pool.fetch(q("claim_pass_syncs"), owner, limit, self._lease_seconds)
        jobs = [PassSyncJob.from_row(r) for r in rows]
        expired = sum(1 for j in jobs if j.lease_expired)
        if expired:
            log.warning("pass_sync_leases_reclaimed", count=expired)
            if self._metrics is not None:
                self._metrics.leases_expired.labels(self.name).inc(expired)
        return jobs

    async def handle(self, job: PassSyncJob) -> Outcome:
        with structlog.contextvars.bound_contextvars(pass_id=str(job.pass_id)):
            if not job.passkit_id:
                return self._failed(job, "pass has no passkit_internal_id: enrol it first")
            try:
                await self._sync(job, job.passkit_id)
            except PermanentPassKitError as exc:
                return self._failed(job, f"PassKit refused: {exc}")
            except TransientPassKitError as exc:
                return self._transient(job, exc)
            log.info(
                "pass_synced",
                points=job.points,
                message=job.message is not None,
                redeem=job.redeem,
                check_in=job.check_in,
            )
            return Succeeded()

    async def _sync(self, job: PassSyncJob, passkit_id: str) -> None:
        """Pass-state calls first, the message last: a retry after a failed message repeats
        only idempotent calls before it, never an alert that already went out."""
        client = self._client
        if job.protocol == "MEMBERSHIP" and job.points is not None:
            await client.set_points(
                passkit_id,
                job.points,
                program_id=job.passkit_program_id,
                tier_id=job.passkit_tier_id,
            )
        elif job.protocol == "COUPON" and job.redeem:
            await client.redeem_coupon(passkit_id)
        elif job.protocol == "EVENT_TICKET" and job.check_in:
            await client.check_in_ticket(passkit_id)
        if job.message:
            await client.write_message(
                job.protocol,
                passkit_id,
                job.message,
                program_id=job.passkit_program_id,
                tier_id=job.passkit_tier_id,
            )

    def _failed(self, job: PassSyncJob, error: str) -> Failed:
        log.warning("pass_sync_dead", error=error, attempts=job.attempts)
        return Failed(error)

    def _transient(self, job: PassSyncJob, exc: TransientPassKitError) -> Outcome:
        outcome = requeue(
            str(exc),
            job.attempts,
            self._clock(),
            self._rng,
            max_attempts=self._max_attempts,
            cap=RETRY_CAP_SECONDS,
        )
        if isinstance(outcome, Failed):
            return self._failed(job, outcome.error)
        log.warning("pass_sync_retry_later", error=str(exc), retry_at=outcome.at.isoformat())
        return outcome

    async def record(
        self, owner: uuid.UUID, results: Sequence[tuple[PassSyncJob, Outcome]]
    ) -> None:
        ids, gens, codes, retry_at, errors = [], [], [], [], []
        for job, outcome in results:
            ids.append(job.pass_id)
            gens.append(job.generation)
            codes.append(_OUTCOME_CODES[type(outcome)])
            retry_at.append(outcome.at if isinstance(outcome, RetryLater) else None)
            errors.append(_error_of(outcome))
        await self._pool.execute(q("record_pass_syncs"), owner, ids, gens, codes, retry_at, errors)

    async def extend(self, owner: uuid.UUID, jobs: Sequence[PassSyncJob]) -> None:
        await self._pool.execute(
            q("extend_pass_sync_leases"), owner, [j.pass_id for j in jobs], self._lease_seconds
        )

    async def release(self, owner: uuid.UUID, jobs: Sequence[PassSyncJob]) -> None:
        await self._pool.execute(q("release_pass_syncs"), owner, [j.pass_id for j in jobs])


def _error_of(outcome: Outcome) -> str | None:
    if isinstance(outcome, RetryLater | Failed):
        return outcome.error
    return None


async def requeue_dead(pool: asyncpg.Pool, pass_id: uuid.UUID | None = None) -> int:
    """Make dead syncs due again (all, or one pass); returns how many."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(q("requeue_dead_pass_syncs"), pass_id)
        if rows:
            await conn.execute(q("notify_syncs"))
    return len(rows)
