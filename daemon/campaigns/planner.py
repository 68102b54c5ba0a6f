"""Push campaigns (SPEC §3.2): from a `push_campaigns` row to one delivery row per recipient,
and from the last outcome to COMPLETED.

The planner loop, run by every daemon:

1. cancelled campaigns: recipients not reached yet become skipped ('campaign cancelled');
2. campaigns whose recipients all have an outcome: COMPLETED (or CANCELLED, finished), plus
   one `notification_logs` row;
3. due campaigns (PENDING and due, DRAFT to count, PROCESSING left by a crashed planner):
   validated before anything else (a bad one ends FAILED with a readable `error`), leased,
   the CSV fetched if any, then the audience resolved in SQL — a DRAFT only gets its
   `recipient_count`; a campaign to send gets its deliveries in one INSERT … SELECT, and every
   daemon's delivery worker (campaign_queue.py) is woken to send them.

The planner never holds a transaction across a download, and holds the campaign row only
while its deliveries are written.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final
from urllib.parse import urlsplit

import asyncpg
import structlog

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
from daemon.core.clock import utc_now, wait_any
from daemon.core.config import Settings
from daemon.core.errors import CampaignInputError
from daemon.core.logs import get_logger, scrub
from daemon.core.metrics import Metrics
from daemon.passkit.client import PassKitClient
from daemon.store.queries import q

log = get_logger(__name__)

CHANNEL: Final = "loyaltyd_campaigns"
# Metrics label of campaign deliveries (CampaignDeliveryQueue.name).
QUEUE_NAME: Final = "campaign"
# Campaigns looked at per planner pass; more are picked up by the next pass right away.
DUE_BATCH: Final = 20
# After a failed planner pass (database unreachable…), wait at most this long before the next.
_ERROR_BACKOFF_SECONDS: Final = 5.0
# Never spin faster than this when a scheduled campaign is about to become due.
_MIN_WAIT_SECONDS: Final = 0.01
# Pause between two full batches of due campaigns.
_BATCH_PAUSE_SECONDS: Final = 0.1


@dataclass(frozen=True, slots=True)
class DueCampaign:
    """A campaign row as read, before it is leased."""

    id: uuid.UUID
    version: str
    status: str
    program_id: uuid.UUID | None
    program_exists: bool
    fields: Mapping[str, object]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> DueCampaign:
        return cls(
            id=row["id"],
            version=row["version"],
            status=row["status"],
            program_id=row["program_id"],
            program_exists=row["program_exists"],
            fields=dict(row),
        )


@dataclass(frozen=True, slots=True)
class UnknownMembers:
    count: int | None = None
    sample: list[str] | None = None


class CampaignPlanner:
    """Turns campaign rows into deliveries and deliveries back into a finished campaign.

    `client` is only asked whether it is in mock mode (logged when a campaign starts, so an
    operator never mistakes a mock run for a real one); `metrics` gets the campaign queue's
    depth on every pass; `csv_fetcher` is the test seam of the CSV download.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        client: PassKitClient | None,
        settings: Settings,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = utc_now,
        *,
        csv_fetcher: CsvFetcher | None = None,
        owner: uuid.UUID | None = None,
    ) -> None:
        self._pool = pool
        self._mock_mode = client.mock_mode if client is not None else None
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._csv = csv_fetcher or CsvFetcher(settings)
        self._owner = owner or uuid.uuid4()
        self._allowed_hosts = tuple(settings.loyaltyd_csv_allowed_hosts)
        self._poll = settings.loyaltyd_poll_interval_seconds
        # A CSV download may take its whole timeout: the lease outlives it.
        self._lease_seconds = (
            settings.loyaltyd_lease_seconds + settings.loyaltyd_csv_timeout_seconds
        )

    async def run(self, stopping: asyncio.Event, doorbell: asyncio.Event) -> None:
        """Plan until `stopping` is set. Woken by `doorbell` (NOTIFY on loyaltyd_campaigns),
        by a scheduled campaign becoming due, and by the poll interval."""
        log.info("campaign_planner_started", owner=str(self._owner))
        while not stopping.is_set():
            doorbell.clear()
            wait = await self._tick_or_back_off()
            await wait_any(stopping, doorbell, within=wait)
        log.info("campaign_planner_stopped")

    async def _tick_or_back_off(self) -> float:
        try:
            return await self.tick()
        except Exception as exc:  # database trouble must not stop the daemon: try again
            log.warning("campaign_planner_pass_failed", error=repr(exc))
            return min(self._poll, _ERROR_BACKOFF_SECONDS)

    async def tick(self) -> float:
        """One pass over everything; returns the seconds until the next pass is needed."""
        await self.apply_cancellations()
        await self.settle()
        await self._observe_depth()
        looked_at = await self.plan_due()
        if looked_at:
            await self.settle()  # a campaign with no recipients is finished at once
        if looked_at >= DUE_BATCH:
            # More may be due. Not 0: a batch of rows that keep failing must not spin.
            return _BATCH_PAUSE_SECONDS
        return await self._seconds_to_next_pass()

    async def _seconds_to_next_pass(self) -> float:
        scheduled = await self._pool.fetchval(q("seconds_to_next_campaign"))
        if scheduled is None:
            return self._poll
        return max(_MIN_WAIT_SECONDS, min(self._poll, float(scheduled)))

    async def _observe_depth(self) -> None:
        if self._metrics is None:
            return
        row = await self._pool.fetchrow(q("campaign_delivery_depth"))
        self._metrics.queue_depth.labels(QUEUE_NAME).set(row["waiting"])
        self._metrics.queue_oldest_age.labels(QUEUE_NAME).set(row["oldest_age"])

    # --- cancel and settle ---------------------------------------------------------------------

    async def apply_cancellations(self) -> None:
        for row in await self._pool.fetch(q("skip_cancelled_deliveries")):
            log.info("campaign_cancel_applied", campaign_id=str(row["id"]), skipped=row["skipped"])

    async def settle(self) -> None:
        for row in await self._pool.fetch(q("settle_campaigns")):
            log.info(
                "campaign_completed" if row["status"] == "COMPLETED" else "campaign_finished",
                campaign_id=str(row["id"]),
                program_id=str(row["program_id"]),
                status=row["status"],
                recipients=row["recipient_count"],
                sent=row["sent_count"],
                failed=row["failed_count"],
                skipped=row["skipped_count"],
                seconds=round(row["seconds"], 3),
            )

    # --- plan ----------------------------------------------------------------------------------

    async def plan_due(self) -> int:
        """Validate, lease and plan the campaigns due now; returns how many were looked at."""
        rows = await self._pool.fetch(q("due_campaigns"), DUE_BATCH, MAX_MEMBER_IDS, MAX_ZIP_CODES)
        for row in rows:
            campaign = DueCampaign.from_row(row)
            with structlog.contextvars.bound_contextvars(
                campaign_id=str(campaign.id), program_id=str(campaign.program_id)
            ):
                await self._plan_safely(campaign)
        return len(rows)

    async def _plan_safely(self, campaign: DueCampaign) -> None:
        """Plan one campaign; whatever goes wrong stays with it, the others are planned."""
        try:
            try:
                await self._plan(campaign)
            except asyncpg.CheckViolationError as exc:
                # A rule the row breaks that validation did not foresee: say which.
                await self._fail(campaign, f"the campaign breaks rule {exc.constraint_name}")
        except Exception as exc:
            # Its lease, if taken, runs out and a later pass (here or elsewhere) tries again.
            log.warning("campaign_planning_failed", error=repr(exc))

    async def _plan(self, campaign: DueCampaign) -> None:
        try:
            plan = self._validate(campaign)
        except CampaignInputError as exc:
            await self._fail(campaign, str(exc))
            return
        status = await self._pool.fetchval(
            q("claim_campaign"), campaign.id, campaign.version, self._owner, self._lease_seconds
        )
        if status is None:
            return  # another daemon has it, or the admin changed it: the next pass re-reads
        log.info("campaign_claimed", status=status, segment=plan.audience.segment)
        try:
            audience = await self._with_csv_members(plan.audience)
            if status == "DRAFT":
                await self._count_draft(campaign, audience)
            else:
                await self._start(campaign, audience)
        except CampaignInputError as exc:
            await self._fail(campaign, str(exc))

    def _validate(self, campaign: DueCampaign) -> CampaignPlan:
        problems: list[str] = []
        if not campaign.program_exists:
            problems.append(f"program {campaign.program_id} does not exist")
        try:
            plan = validate_campaign(campaign.fields, self._allowed_hosts)
        except CampaignInputError as exc:
            problems.append(str(exc))
        if problems:
            raise CampaignInputError("; ".join(problems))
        return plan

    async def _with_csv_members(self, audience: Audience) -> Audience:
        if not audience.needs_csv:
            return audience
        assert audience.csv_url is not None
        started = self._clock()
        member_ids = await self._csv.member_ids(audience.csv_url)
        log.info("campaign_csv_fetched", member_ids=len(member_ids), seconds=self._since(started))
        return audience.with_member_ids(member_ids)

    async def _count_draft(self, campaign: DueCampaign, audience: Audience) -> None:
        started = self._clock()
        async with self._pool.acquire() as conn:
            count = await conn.fetchval(
                q("count_audience"), campaign.program_id, *audience.sql_args()
            )
            unknown = await _unknown_members(conn, campaign.program_id, audience)
            saved = await conn.fetchval(
                q("save_draft_count"),
                campaign.id,
                self._owner,
                count,
                unknown.count,
                unknown.sample,
            )
        if saved is not None:
            log.info("campaign_draft_counted", recipients=count, seconds=self._since(started))

    async def _start(self, campaign: DueCampaign, audience: Audience) -> None:
        """Fix the recipients and start sending, in one transaction holding the campaign row."""
        started = self._clock()
        async with self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(q("lock_campaign_to_start"), campaign.id, self._owner) is None:
                log.info("campaign_start_abandoned", reason="lease lost, cancelled or edited")
                return
            unknown = await _unknown_members(conn, campaign.program_id, audience)
            status = await conn.execute(
                q("create_deliveries"), campaign.id, campaign.program_id, *audience.sql_args()
            )
            recipients = int(status.split()[-1])
            await conn.execute(
                q("start_campaign"), campaign.id, recipients, unknown.count, unknown.sample
            )
        log.info(
            "campaign_started",
            recipients=recipients,
            unknown_member_ids=unknown.count,
            audience_seconds=self._since(started),
            mock_mode=self._mock_mode,
        )

    async def _fail(self, campaign: DueCampaign, error: str) -> None:
        """FAILED with `error`: the row as read, or the row this planner holds the lease of.
        The error is stored scrubbed (a CSV URL may carry credentials)."""
        error = scrub(error)
        failed = await self._pool.fetchval(
            q("fail_unclaimed_campaign"), campaign.id, campaign.version, error
        )
        if failed is None:
            failed = await self._pool.fetchval(
                q("fail_claimed_campaign"), campaign.id, self._owner, error
            )
        if failed is not None:
            log.warning("campaign_failed", error=error)

    def _since(self, started: datetime) -> float:
        return round((self._clock() - started).total_seconds(), 3)


async def _unknown_members(
    conn: asyncpg.Connection, program_id: uuid.UUID | None, audience: Audience
) -> UnknownMembers:
    """CSV segment: the given member ids that match no pass of the program (reported, not
    fatal: the campaign goes to the others)."""
    if audience.segment != "CSV":
        return UnknownMembers()
    row = await conn.fetchrow(q("unknown_member_ids"), program_id, list(audience.member_ids))
    return UnknownMembers(row["unknown_count"], row["sample"] or [])


# --- API: what `POST /api/notify/broadcast` and `GET /api/campaigns/{id}` call ---------------


async def create_campaign(
    pool: asyncpg.Pool,
    *,
    program_id: uuid.UUID | str,
    message: str,
    segment: str | None = "ALL",
    name: str | None = None,
    scheduled_at: datetime | None = None,
    draft: bool = False,
    allowed_hosts: Sequence[str] | None = None,
    **segment_params: object,
) -> uuid.UUID:
    """Insert a campaign after the checks the daemon will make; return its id.

    `segment_params` are the segment's parameters (`min_tier_points`, `min_points`,
    `inactive_days`, `zip_codes`, `member_ids`, `csv_upload_url`). `allowed_hosts` (the
    LOYALTYD_CSV_ALLOWED_HOSTS setting) checks a CSV URL's host now; when None the check is
    left to the daemon, which fails the campaign if the host is not allowed. `draft` inserts
    a DRAFT (only counted). Raises CampaignInputError with a message fit for a 400 answer.
    """
    program = _program_uuid(program_id)
    fields = _campaign_fields(message, segment, segment_params)
    hosts = allowed_hosts if allowed_hosts is not None else _any_host(fields)
    plan = validate_campaign(fields, hosts)
    name = check_name(name)
    scheduled_at = check_schedule(scheduled_at)
    if not await pool.fetchval(q("program_exists"), program):
        raise CampaignInputError(f"program {program} does not exist")
    try:
        campaign_id: uuid.UUID = await pool.fetchval(
            q("insert_campaign"),
            program,
            name,
            message_text(message),
            plan.audience.segment,
            *_insert_params(fields),
            scheduled_at,
            "DRAFT" if draft else "PENDING",
        )
    except asyncpg.CheckViolationError as exc:
        raise CampaignInputError(f"refused by rule {exc.constraint_name}") from exc
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


def _insert_params(fields: Mapping[str, object]) -> tuple[object, ...]:
    return (
        fields.get("min_tier_points"),
        fields.get("min_points"),
        fields.get("inactive_days"),
        fields.get("zip_codes"),
        fields.get("member_ids"),
        fields.get("csv_upload_url"),
    )


async def campaign_status(
    pool: asyncpg.Pool, campaign_id: uuid.UUID | str
) -> dict[str, Any] | None:
    """The campaign's row of `push_campaign_progress`, JSON-ready (ids and times as text,
    progress_percent as a float); None when there is no such campaign."""
    try:
        key = campaign_id if isinstance(campaign_id, uuid.UUID) else uuid.UUID(str(campaign_id))
    except ValueError:
        return None
    row = await pool.fetchrow(q("campaign_progress"), key)
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
