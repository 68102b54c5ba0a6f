"""What the campaign planner writes (queries/campaigns.sql), one typed method per step: a
DRAFT's count, the start (every recipient's delivery row, in one statement), a cancel applied,
the campaign settled. Database trouble leaves here as the engine's errors: a broken rule is a
`CampaignInputError` (the campaign fails with it), a lost connection a transient error (tried
again later).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from daemon.core.errors import CampaignInputError, TransientError
from daemon.domain.campaigns import Audience
from daemon.store.errors import DATABASE_ERRORS
from daemon.store.queries import bind, q


@dataclass(frozen=True, slots=True)
class UnknownMembers:
    count: int | None = None
    sample: list[str] | None = None


@dataclass(frozen=True, slots=True)
class Settled:
    status: str
    recipients: int
    sent: int
    failed: int
    skipped: int
    seconds: float


@asynccontextmanager
async def database_errors() -> AsyncIterator[None]:
    """Postgres trouble as the engine reads it: a broken rule is the campaign's fault, a lost
    connection or any other database error is worth another try."""
    try:
        yield
    except asyncpg.CheckViolationError as exc:
        raise CampaignInputError(f"the campaign breaks rule {exc.constraint_name}") from exc
    except DATABASE_ERRORS as exc:
        # A lost connection, a server shutting down, a deadlock, a timeout: another try may
        # work, and a campaign is never failed on the database's account.
        raise TransientError(f"database: {exc!r}") from exc


class CampaignPlans:
    """The planner's statements, on `pool`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def save_draft_count(
        self,
        campaign_id: uuid.UUID,
        *,
        program_id: uuid.UUID | None,
        owner: uuid.UUID,
        audience: Audience,
    ) -> int | None:
        """Count a DRAFT's audience and store it; None when the lease was lost meanwhile."""
        async with database_errors(), self._pool.acquire() as conn:
            sql, args = bind("count_audience", program_id=program_id, **audience_values(audience))
            count: int = await conn.fetchval(sql, *args)
            unknown = await _unknown_members(conn, program_id, audience)
            saved = await conn.fetchval(
                q("save_draft_count"), campaign_id, owner, count, unknown.count, unknown.sample
            )
        return count if saved is not None else None

    async def start(
        self,
        campaign_id: uuid.UUID,
        *,
        program_id: uuid.UUID | None,
        owner: uuid.UUID,
        audience: Audience,
        by_messages: bool = False,
    ) -> tuple[int, UnknownMembers] | None:
        """Fix the recipients and start sending, in one transaction holding the campaign row;
        None when the lease was lost, or the admin cancelled or re-drafted it meanwhile.
        `by_messages`: its recipients go out through the Messages API."""
        async with database_errors(), self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(q("lock_campaign_to_start"), campaign_id, owner) is None:
                return None
            unknown = await _unknown_members(conn, program_id, audience)
            sql, args = bind(
                "create_deliveries",
                campaign_id=campaign_id,
                program_id=program_id,
                **audience_values(audience),
            )
            status = await conn.execute(sql, *args)
            count = int(status.split()[-1])
            if by_messages:
                await conn.execute(q("deliver_by_messages"), campaign_id)
            await conn.execute(
                q("start_campaign"), campaign_id, count, unknown.count, unknown.sample
            )
        return count, unknown

    # --- finishing ---------------------------------------------------------------------------

    async def skip_cancelled(self, campaign_id: uuid.UUID) -> int:
        """A CANCELLED campaign's recipients not reached yet become skipped; how many."""
        async with database_errors():
            skipped = await self._pool.fetchval(q("skip_cancelled_deliveries"), campaign_id)
        return int(skipped or 0)

    async def settle(self, campaign_id: uuid.UUID, *, owner: uuid.UUID) -> Settled | None:
        """COMPLETED (or CANCELLED, finished) once every recipient has an outcome."""
        async with database_errors():
            row = await self._pool.fetchrow(q("settle_campaign"), campaign_id, owner)
        if row is None:
            return None
        return Settled(
            status=row["status"],
            recipients=row["recipient_count"],
            sent=row["sent_count"],
            failed=row["failed_count"],
            skipped=row["skipped_count"],
            seconds=row["seconds"],
        )

    async def delivery_depth(self) -> tuple[int, float]:
        """Recipients of running campaigns without an outcome, and the oldest one's age."""
        row = await self._pool.fetchrow(q("campaign_delivery_depth"))
        return int(row["waiting"]), float(row["oldest_age"])


def audience_values(r: Audience) -> dict[str, object]:
    """The audience, as the statements that call loyaltyd.push_campaign_audience name it."""
    return {
        "segment": r.segment,
        "min_tier_points": r.min_tier_points,
        "min_points": r.min_points,
        "inactive_days": r.inactive_days,
        "zip_codes": list(r.zip_codes),
        "member_ids": list(r.member_ids),
    }


async def _unknown_members(
    conn: asyncpg.Connection, program_id: uuid.UUID | None, audience: Audience
) -> UnknownMembers:
    """CSV segment: the given member ids that match no pass of the program (reported, not
    fatal: the campaign goes to the others)."""
    if audience.segment != "CSV":
        return UnknownMembers()
    row = await conn.fetchrow(q("unknown_member_ids"), program_id, list(audience.member_ids))
    return UnknownMembers(row["unknown_count"], row["sample"] or [])
