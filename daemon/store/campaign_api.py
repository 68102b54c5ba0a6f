"""The HTTP API's statements on campaigns (daemon.campaigns.api): a campaign inserted as
validated, and its progress."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from daemon.core.errors import CampaignInputError
from daemon.domain.campaigns import CampaignProgress
from daemon.store.queries import bind, q


async def program_exists(pool: asyncpg.Pool, program_id: uuid.UUID) -> bool:
    return bool(await pool.fetchval(q("program_exists"), program_id))


async def insert_campaign(
    pool: asyncpg.Pool,
    *,
    program_id: uuid.UUID,
    name: str | None,
    message: str,
    segment: str,
    min_tier_points: int | None,
    min_points: int | None,
    inactive_days: int | None,
    zip_codes: list[str] | None,
    member_ids: list[str] | None,
    csv_upload_url: str | None,
    scheduled_at: datetime | None,
    draft: bool,
    created_by: str | None = None,
) -> uuid.UUID:
    """Insert a campaign as validated; the trigger rings the planner."""
    try:
        sql, args = bind(
            "insert_campaign",
            program_id=program_id,
            name=name,
            message=message,
            segment=segment,
            min_tier_points=min_tier_points,
            min_points=min_points,
            inactive_days=inactive_days,
            zip_codes=zip_codes,
            member_ids=member_ids,
            csv_url=csv_upload_url,
            scheduled_at=scheduled_at,
            status="DRAFT" if draft else "PENDING",
            created_by=created_by,
        )
        campaign_id: uuid.UUID = await pool.fetchval(sql, *args)
    except asyncpg.CheckViolationError as exc:
        raise CampaignInputError(f"refused by rule {exc.constraint_name}") from exc
    return campaign_id


async def campaign_progress(pool: asyncpg.Pool, campaign_id: uuid.UUID) -> CampaignProgress | None:
    """The campaign's row of the push_campaign_progress view, or None."""
    row = await pool.fetchrow(q("campaign_progress"), campaign_id)
    return None if row is None else CampaignProgress(**dict(row))
