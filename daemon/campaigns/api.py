"""What the HTTP API calls (`POST /api/notify/broadcast`, `GET /api/campaigns/{id}`): a campaign
inserted after the same checks the planner makes, and a campaign's progress as JSON."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from urllib.parse import urlsplit

from daemon.campaigns.rules import (
    SEGMENT_PARAMETERS,
    check_name,
    check_schedule,
    message_text,
    validate_campaign,
)
from daemon.core.errors import CampaignInputError
from daemon.core.logs import get_logger
from daemon.store import campaign_api as store
from daemon.store.pool import Pool

log = get_logger(__name__)


async def create_campaign(
    pool: Pool,
    *,
    program_id: uuid.UUID | str,
    message: str,
    segment: str | None = "ALL",
    name: str | None = None,
    scheduled_at: datetime | None = None,
    draft: bool = False,
    allowed_hosts: Sequence[str] | None = None,
    created_by: str | None = None,
    **segment_params: object,
) -> uuid.UUID:
    """Insert a campaign after the checks the daemon will make; return its id.

    `segment_params` are the segment's parameters (`min_tier_points`, `min_points`,
    `inactive_days`, `zip_codes`, `member_ids`, `csv_upload_url`). `allowed_hosts` (the
    LOYALTYD_CSV_ALLOWED_HOSTS setting) checks a CSV URL's host now; when None the check is
    left to the daemon, which fails the campaign if the host is not allowed. `draft` inserts
    a DRAFT (only counted); `created_by` says who asked (push_campaigns.created_by). Raises
    CampaignInputError with a message fit for a 400 answer.
    """
    program = _program_uuid(program_id)
    fields = _campaign_fields(message, segment, segment_params)
    hosts = allowed_hosts if allowed_hosts is not None else _any_host(fields)
    plan = validate_campaign(fields, hosts)
    name = check_name(name)
    scheduled_at = check_schedule(scheduled_at)
    if not await store.program_exists(pool, program):
        raise CampaignInputError(f"program {program} does not exist")
    audience = plan.audience

    def given(name: str) -> bool:
        return fields.get(name) is not None

    # What was given, as validated (defaults stay unset: the row keeps the user's choice).
    campaign_id = await store.insert_campaign(
        pool,
        program_id=program,
        name=name,
        message=message_text(message),
        segment=audience.segment,
        min_tier_points=audience.min_tier_points if given("min_tier_points") else None,
        min_points=audience.min_points if given("min_points") else None,
        inactive_days=audience.inactive_days if given("inactive_days") else None,
        zip_codes=list(audience.zip_codes) if given("zip_codes") else None,
        member_ids=list(audience.member_ids) if given("member_ids") else None,
        csv_upload_url=str(audience.csv_url) if audience.csv_url is not None else None,
        scheduled_at=scheduled_at,
        draft=draft,
        created_by=created_by,
    )
    log.info("campaign_created", campaign_id=str(campaign_id), program_id=str(program))
    return campaign_id


def _program_uuid(program_id: uuid.UUID | str) -> uuid.UUID:
    if isinstance(program_id, uuid.UUID):
        return program_id
    try:
        return uuid.UUID(str(program_id))
    except ValueError:
        raise CampaignInputError(f"program id {program_id!r} is not a UUID") from None


def _campaign_fields(
    message: str, segment: str | None, params: Mapping[str, object]
) -> dict[str, object]:
    unknown = sorted(set(params) - set(SEGMENT_PARAMETERS))
    if unknown:
        raise CampaignInputError(
            f"unknown campaign field {', '.join(unknown)}; "
            f"segment parameters are {', '.join(SEGMENT_PARAMETERS)}"
        )
    return {"message_text": message, "segment": segment, **params}


def _any_host(fields: Mapping[str, object]) -> tuple[str, ...]:
    """Host check deferred to the daemon: allow the URL's own host (https is still checked)."""
    url = fields.get("csv_upload_url")
    if not isinstance(url, str):
        return ()
    try:
        return (urlsplit(url.strip()).hostname or "",)
    except ValueError:
        return ()


async def campaign_status(pool: Pool, campaign_id: uuid.UUID | str) -> dict[str, object] | None:
    """The campaign's row of `push_campaign_progress`, JSON-ready (ids and times as text,
    progress_percent as a float); None when there is no such campaign."""
    try:
        key = campaign_id if isinstance(campaign_id, uuid.UUID) else uuid.UUID(str(campaign_id))
    except ValueError:
        return None
    row = await store.campaign_progress(pool, key)
    return None if row is None else row.as_json()
