"""The pass-sync queue (loyaltyd.pass_syncs in docs/schema.sql; statements in queries/sync.sql).

A burst of transactions on one pass is one row: the newest balance and the newest message
win, and a change landing while a call is in flight makes the row due again afterwards, so
the pass can never be left showing an older balance than the newest.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import asyncpg

from daemon.core.channels import Channel
from daemon.core.logs import get_logger
from daemon.engine.outcomes import Outcome, code, error_of, retry_in
from daemon.store.leases import LeasedTable
from daemon.store.queries import q

log = get_logger(__name__)
CHANNEL: Final = Channel.SYNCS


@dataclass(frozen=True, slots=True)
class PassSyncJob:
    """The work owed to PassKit for one pass, as claimed."""

    pass_id: uuid.UUID
    generation: int
    attempts: int
    owed_seconds: float
    lease_expired: bool
    passkit_id: str | None
    protocol: str
    points: int | None
    message: str | None
    redeem: bool
    check_in: bool
    # DELETED or INVALIDATED: what PassKit said of the pass; nothing is sent to it any more.
    unreachable: str | None = None
    # Set with the balance where the program shows loyaltyd's tier points (sql/074).
    tier_points: int | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> PassSyncJob:
        return cls(
            pass_id=row["pass_id"],
            generation=row["generation"],
            attempts=row["attempts"],
            owed_seconds=row["owed_seconds"],
            lease_expired=row["lease_expired"],
            passkit_id=row["passkit_internal_id"],
            protocol=row["protocol"],
            points=row["points_balance"],
            message=row["message"],
            redeem=row["redeem"],
            check_in=row["check_in"],
            unreachable=row["unreachable"],
            tier_points=row["tier_points"],
        )

    def log_fields(self) -> Mapping[str, str]:
        return {"pass_id": str(self.pass_id)}


class PassSyncStore(LeasedTable):
    name: Final = "sync"
    channel: Final = CHANNEL

    async def claim(self, owner: uuid.UUID, limit: int) -> list[PassSyncJob]:
        rows = await self._pool.fetch(
            q("claim_pass_syncs"), owner, limit, self._lease_seconds, self._stale_seconds
        )
        jobs = [PassSyncJob.from_row(r) for r in rows]
        self._count_taken_over(sum(1 for j in jobs if j.lease_expired))
        return jobs

    async def record(
        self, owner: uuid.UUID, results: Sequence[tuple[PassSyncJob, Outcome]]
    ) -> None:
        await self._pool.execute(
            q("record_pass_syncs"),
            owner,
            [job.pass_id for job, _ in results],
            [job.generation for job, _ in results],
            [code(outcome) for _, outcome in results],
            [retry_in(outcome) for _, outcome in results],
            [error_of(outcome) for _, outcome in results],
        )

    async def extend(self, owner: uuid.UUID, jobs: Sequence[PassSyncJob]) -> None:
        await self._pool.execute(
            q("extend_pass_sync_leases"), owner, [j.pass_id for j in jobs], self._lease_seconds
        )

    async def seconds_to_next(self) -> None:
        """Retries come due on their own time; the poll interval finds them."""
        return None

    async def release(self, owner: uuid.UUID, jobs: Sequence[PassSyncJob]) -> None:
        await self._pool.execute(q("release_pass_syncs"), owner, [j.pass_id for j in jobs])


async def requeue_dead(pool: asyncpg.Pool, pass_id: uuid.UUID | None = None) -> int:
    """Make dead syncs due again (all, or one pass); returns how many."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(q("requeue_dead_pass_syncs"), pass_id)
        if rows:
            await conn.execute(q("notify_syncs"))
    return len(rows)
