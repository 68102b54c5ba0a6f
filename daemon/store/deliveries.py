"""The campaign-delivery queue table (loyaltyd.campaign_deliveries; queries/campaigns.sql).

One job is one recipient of a campaign being sent. The claim statement leases due recipients
of PROCESSING campaigns (SKIP LOCKED, so several daemons share a campaign), and decides the
frequency cap and late opt-outs itself: those rows come back already skipped and counted.
`record` writes outcomes back in batches and moves the campaign's counters in the same
statement.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import asyncpg

from daemon.core.channels import Channel
from daemon.core.logs import get_logger
from daemon.engine.outcomes import Outcome, Succeeded, code, error_of, retry_in
from daemon.store.leases import LeasedTable
from daemon.store.queries import bind, q

log = get_logger(__name__)

CHANNEL: Final = Channel.DELIVERIES
QUEUE_NAME: Final = "campaign"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One recipient of one campaign, leased to this daemon."""

    campaign_id: uuid.UUID
    pass_id: uuid.UUID
    attempts: int
    owed_seconds: float
    lease_expired: bool
    protocol: str
    passkit_id: str | None
    message_text: str
    first_name: str | None
    last_name: str | None
    points: int | None
    program_name: str | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Delivery:
        return cls(
            campaign_id=row["campaign_id"],
            pass_id=row["pass_id"],
            attempts=row["attempts"],
            owed_seconds=row["owed_seconds"],
            lease_expired=row["lease_expired"],
            protocol=row["protocol"] or "MEMBERSHIP",
            passkit_id=row["passkit_internal_id"],
            message_text=row["message_text"],
            first_name=row["first_name"],
            last_name=row["last_name"],
            points=row["points"],
            program_name=row["program_name"],
        )

    def log_fields(self) -> Mapping[str, str]:
        return {"campaign_id": str(self.campaign_id), "pass_id": str(self.pass_id)}

    def placeholder_values(self) -> dict[str, object | None]:
        return {
            "first_name": self.first_name,
            "last_name": self.last_name,
            "points": self.points,
            "program_name": self.program_name,
        }


class DeliveryStore(LeasedTable):
    """`by_messages` picks which campaigns' recipients this store claims: those sent through
    the Messages API (loyaltyd.campaign_messages) or those sent one pass at a time."""

    name: str = QUEUE_NAME
    channel: Channel = CHANNEL
    by_messages: bool = False

    async def claim(self, owner: uuid.UUID, limit: int) -> list[Delivery]:
        # The frequency cap counts the recipients other daemons have claimed; two claims
        # running side by side would each miss the other's. Claims therefore take turns (a
        # transaction-scoped lock; each claim is a few milliseconds) and the claim statement,
        # run after the lock is held, sees every earlier claim committed.
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(q("serialise_delivery_claims"))
            rows = await conn.fetch(
                q("claim_deliveries"),
                owner,
                limit,
                self._lease_seconds,
                self._stale_seconds,
                self.by_messages,
            )
        jobs = [Delivery.from_row(r) for r in rows if r["state"] == "claimed"]
        self._count_skipped(len(rows) - len(jobs))
        self._count_taken_over(sum(1 for j in jobs if j.lease_expired))
        return jobs

    def _count_skipped(self, skipped: int) -> None:
        # Skips decided by the claim never reach the Worker, which counts everything else.
        if not skipped:
            return
        log.info("campaign_recipients_skipped_at_claim", count=skipped)
        if self._metrics is not None:
            self._metrics.deliveries.labels(self.name, "skipped").inc(skipped)

    async def record(self, owner: uuid.UUID, results: Sequence[tuple[Delivery, Outcome]]) -> None:
        sql, args = bind(
            "record_deliveries",
            owner=owner,
            campaign_ids=[job.campaign_id for job, _ in results],
            pass_ids=[job.pass_id for job, _ in results],
            outcomes=[code(outcome) for _, outcome in results],
            retry_in=[retry_in(outcome) for _, outcome in results],
            errors=[error_of(outcome) for _, outcome in results],
            texts=[o.sent if isinstance(o, Succeeded) else None for _, o in results],
        )
        await self._pool.execute(sql, *args)

    async def extend(self, owner: uuid.UUID, jobs: Sequence[Delivery]) -> None:
        await self._pool.execute(
            q("extend_delivery_leases"),
            owner,
            [j.campaign_id for j in jobs],
            [j.pass_id for j in jobs],
            self._lease_seconds,
        )

    async def seconds_to_next(self) -> None:
        """Retries come due on their own time; the poll interval finds them."""
        return None

    async def release(self, owner: uuid.UUID, jobs: Sequence[Delivery]) -> None:
        await self._pool.execute(
            q("release_deliveries"),
            owner,
            [j.campaign_id for j in jobs],
            [j.pass_id for j in jobs],
            str(self.channel),
        )


class MessageDeliveryStore(DeliveryStore):
    """The recipients of campaigns sent through the Messages API, and each campaign's message."""

    name: str = "campaign_messages"
    channel: Channel = Channel.CAMPAIGN_MESSAGES
    by_messages: bool = True

    async def message_id(self, campaign_id: uuid.UUID) -> str | None:
        found: str | None = await self._pool.fetchval(q("campaign_message_id"), campaign_id)
        return found

    async def save_message_id(self, campaign_id: uuid.UUID, message_id: str) -> str:
        """Keep `message_id` as the campaign's message unless another daemon saved one first;
        return the one kept."""
        kept: str | None = await self._pool.fetchval(
            q("save_campaign_message_id"), campaign_id, message_id
        )
        if kept is None:  # another daemon's came first (its update committed before ours)
            kept = await self.message_id(campaign_id)
        if kept is None:
            raise LookupError(f"campaign {campaign_id} is not sent through the Messages API")
        return kept
