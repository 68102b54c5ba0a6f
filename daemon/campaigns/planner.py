"""Push campaigns (SPEC §3.2): from a `push_campaigns` row to one delivery row per recipient,
and from the last outcome to COMPLETED.

The planner is a Handler on the queue engine: `daemon.store.campaigns` leases campaigns to it,
each with its kind of work, and the Worker records what came of it (a bad campaign ends FAILED
with a readable `error`; database trouble is tried again later).

- plan: validate (before anything else), fetch the CSV if any, then resolve the audience in
  SQL: a DRAFT only gets its `recipient_count`; a campaign to send gets its deliveries in one
  INSERT … SELECT, and every daemon's delivery worker is woken to send them.
- finish: a CANCELLED campaign's recipients not reached yet become skipped ('campaign
  cancelled'); once every recipient has an outcome the campaign is COMPLETED (or CANCELLED,
  finished), plus one `notification_logs` row.

No transaction is held across a download; the campaign row only while its deliveries are
written.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Final
from urllib.parse import urlsplit

from daemon.campaigns.csv_audience import CsvFetcher
from daemon.campaigns.rules import (
    MAX_MEMBER_IDS,
    MAX_ZIP_CODES,
    SEGMENT_PARAMETERS,
    Audience,
    CampaignPlan,
    check_name,
    check_schedule,
    message_text,
    validate_campaign,
)
from daemon.core.clock import utc_now
from daemon.core.config import Settings
from daemon.core.errors import CampaignInputError
from daemon.core.logs import get_logger, scrub
from daemon.core.metrics import Metrics
from daemon.engine.outcomes import Skipped, Succeeded
from daemon.store import campaigns as store
from daemon.store.campaigns import CampaignJob, CampaignStore, Recipients
from daemon.store.deliveries import QUEUE_NAME as DELIVERIES_QUEUE
from daemon.store.leases import Takeovers
from daemon.store.pool import Pool

log = get_logger(__name__)

CHANNEL: Final = store.CHANNEL
# Campaigns planned at once by one daemon (each may be downloading its CSV).
PLANNER_SLOTS: Final = 4


def planner_store(
    pool: Pool,
    settings: Settings,
    metrics: Metrics | None = None,
    *,
    takeovers: Takeovers | None = None,
) -> CampaignStore:
    """The campaign queue, its lease long enough for a CSV download of its whole timeout."""
    return CampaignStore(
        pool,
        lease_seconds=settings.loyaltyd_lease_seconds + settings.loyaltyd_csv_timeout_seconds,
        max_member_ids=MAX_MEMBER_IDS,
        max_zip_codes=MAX_ZIP_CODES,
        stale_seconds=settings.loyaltyd_stale_seconds,
        metrics=metrics,
        takeovers=takeovers,
    )


class CampaignPlanner:
    """Plans and finishes the campaigns `store` leases to it.

    `mock_mode` is logged when a campaign starts, so an operator never mistakes a mock run for
    a real one; `metrics` gets the campaign queue's depth after each start and finish;
    `csv_fetcher` is the test seam of the CSV download.
    """

    def __init__(
        self,
        store: CampaignStore,
        settings: Settings,
        *,
        owner: uuid.UUID,
        mock_mode: bool | None = None,
        metrics: Metrics | None = None,
        csv_fetcher: CsvFetcher | None = None,
    ) -> None:
        self._store = store
        self._owner = owner
        self._mock_mode = mock_mode
        self._metrics = metrics
        self._csv = csv_fetcher or CsvFetcher(settings)
        self._allowed_hosts = tuple(settings.loyaltyd_csv_allowed_hosts)
        self._messages_api = settings.passkit_campaign_delivery == "messages"

    async def handle(self, job: CampaignJob) -> Succeeded | Skipped:
        if job.kind == "finish":
            return await self._finish(job)
        plan = self._validate(job)
        if job.refused_by is not None:
            # Valid as far as the daemon can tell, yet the database refuses to lease it.
            raise CampaignInputError(f"the campaign breaks rule {job.refused_by}")
        log.info("campaign_claimed", status=job.status, segment=plan.audience.segment)
        audience = await self._with_csv_members(plan.audience)
        if job.status == "DRAFT":
            return await self._count_draft(job, audience)
        # The same text for everyone may go out as one PassKit message (opt-in); a text with
        # a placeholder is rendered per recipient and written to each pass.
        by_messages = self._messages_api and not plan.template.placeholders
        return await self._start(job, audience, by_messages=by_messages)

    # --- plan ----------------------------------------------------------------------------------

    def _validate(self, job: CampaignJob) -> CampaignPlan:
        problems: list[str] = []
        if not job.program_exists:
            problems.append(f"program {job.program_id} does not exist")
        try:
            plan = validate_campaign(job.fields, self._allowed_hosts)
        except CampaignInputError as exc:
            problems.append(str(exc))
        if problems:
            # Stored in push_campaigns.error: scrubbed, a CSV URL may carry credentials.
            raise CampaignInputError(scrub("; ".join(problems)))
        return plan

    async def _with_csv_members(self, audience: Audience) -> Audience:
        if not audience.needs_csv:
            return audience
        assert audience.csv_url is not None
        started = utc_now()
        try:
            member_ids = await self._csv.member_ids(audience.csv_url)
        except CampaignInputError as exc:
            raise CampaignInputError(scrub(str(exc))) from exc
        log.info("campaign_csv_fetched", member_ids=len(member_ids), seconds=_since(started))
        return audience.with_member_ids(member_ids)

    async def _count_draft(self, job: CampaignJob, audience: Audience) -> Succeeded | Skipped:
        started = utc_now()
        count = await self._store.save_draft_count(
            job.id, program_id=job.program_id, owner=self._owner, recipients=recipients_of(audience)
        )
        if count is None:
            return Skipped("lease lost, or the draft changed")
        log.info("campaign_draft_counted", recipients=count, seconds=_since(started))
        return Succeeded()

    async def _start(
        self, job: CampaignJob, audience: Audience, *, by_messages: bool
    ) -> Succeeded | Skipped:
        started = utc_now()
        result = await self._store.start(
            job.id,
            program_id=job.program_id,
            owner=self._owner,
            recipients=recipients_of(audience),
            by_messages=by_messages,
        )
        if result is None:
            log.info("campaign_start_abandoned", reason="lease lost, cancelled or edited")
            return Skipped("lease lost, cancelled or edited")
        recipients, unknown = result
        log.info(
            "campaign_started",
            recipients=recipients,
            unknown_member_ids=unknown.count,
            audience_seconds=_since(started),
            delivery="messages" if by_messages else "field",
            mock_mode=self._mock_mode,
        )
        await self._observe_depth()
        return Succeeded()

    # --- finish --------------------------------------------------------------------------------

    async def _finish(self, job: CampaignJob) -> Succeeded:
        skipped = await self._store.skip_cancelled(job.id)
        if skipped:
            log.info("campaign_cancel_applied", skipped=skipped)
        settled = await self._store.settle(job.id, owner=self._owner)
        if settled is not None:
            log.info(
                "campaign_completed" if settled.status == "COMPLETED" else "campaign_finished",
                status=settled.status,
                recipients=settled.recipients,
                sent=settled.sent,
                failed=settled.failed,
                skipped=settled.skipped,
                seconds=round(settled.seconds, 3),
            )
            await self._observe_depth()
        return Succeeded()

    async def _observe_depth(self) -> None:
        if self._metrics is None:
            return
        waiting, oldest_age = await self._store.delivery_depth()
        self._metrics.queue_depth.labels(DELIVERIES_QUEUE).set(waiting)
        self._metrics.queue_oldest_age.labels(DELIVERIES_QUEUE).set(oldest_age)


def recipients_of(audience: Audience) -> Recipients:
    return Recipients(
        segment=audience.segment,
        min_tier_points=audience.min_tier_points,
        min_points=audience.min_points,
        inactive_days=audience.inactive_days,
        zip_codes=audience.zip_codes,
        member_ids=audience.member_ids,
    )


def _since(started: datetime) -> float:
    return round((utc_now() - started).total_seconds(), 3)


# --- API: what `POST /api/notify/broadcast` and `GET /api/campaigns/{id}` call ---------------


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
    campaign_id = await store.insert_campaign(
        pool,
        program_id=program,
        name=name,
        message=message_text(message),
        segment=plan.audience.segment,
        min_tier_points=fields.get("min_tier_points"),
        min_points=fields.get("min_points"),
        inactive_days=fields.get("inactive_days"),
        zip_codes=fields.get("zip_codes"),
        member_ids=fields.get("member_ids"),
        csv_upload_url=fields.get("csv_upload_url"),
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


async def campaign_status(pool: Pool, campaign_id: uuid.UUID | str) -> dict[str, Any] | None:
    """The campaign's row of `push_campaign_progress`, JSON-ready (ids and times as text,
    progress_percent as a float); None when there is no such campaign."""
    try:
        key = campaign_id if isinstance(campaign_id, uuid.UUID) else uuid.UUID(str(campaign_id))
    except ValueError:
        return None
    row = await store.campaign_progress(pool, key)
    if row is None:
        return None
    return {name: _json_value(value) for name, value in row.items()}


def _json_value(value: object) -> object:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value
