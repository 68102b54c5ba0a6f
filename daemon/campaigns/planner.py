"""Push campaigns (SPEC §3.2): from a `push_campaigns` row to one delivery row per recipient,
and from the last outcome to COMPLETED.

The planner is a Handler on the queue engine: `daemon.store.campaigns` leases campaigns to it,
each with its kind of work, it writes through `daemon.store.campaign_plans`, and the Worker
records what came of it (a bad campaign ends FAILED
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
from datetime import datetime
from typing import Final

from daemon.campaigns.csv_audience import CsvFetcher
from daemon.campaigns.rules import (
    MAX_MEMBER_IDS,
    MAX_ZIP_CODES,
    CampaignPlan,
    validate_campaign,
)
from daemon.core.clock import utc_now
from daemon.core.config import Settings
from daemon.core.errors import CampaignInputError
from daemon.core.logs import get_logger, scrub
from daemon.core.metrics import Metrics
from daemon.domain.campaigns import Audience
from daemon.engine.outcomes import Skipped, Succeeded
from daemon.store import campaigns as store
from daemon.store.campaign_plans import CampaignPlans
from daemon.store.campaigns import CampaignJob, CampaignStore
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
    """Plans and finishes the campaigns the queue leases to it, writing through `plans`.

    `mock_mode` is logged when a campaign starts, so an operator never mistakes a mock run for
    a real one; `metrics` gets the campaign queue's depth after each start and finish;
    `csv_fetcher` is the test seam of the CSV download.
    """

    def __init__(
        self,
        plans: CampaignPlans,
        settings: Settings,
        *,
        owner: uuid.UUID,
        mock_mode: bool | None = None,
        metrics: Metrics | None = None,
        csv_fetcher: CsvFetcher | None = None,
    ) -> None:
        self._plans = plans
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
            plan = validate_campaign(job.fields.as_input(), self._allowed_hosts)
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
        count = await self._plans.save_draft_count(
            job.id, program_id=job.program_id, owner=self._owner, audience=audience
        )
        if count is None:
            return Skipped("lease lost, or the draft changed")
        log.info("campaign_draft_counted", recipients=count, seconds=_since(started))
        return Succeeded()

    async def _start(
        self, job: CampaignJob, audience: Audience, *, by_messages: bool
    ) -> Succeeded | Skipped:
        started = utc_now()
        result = await self._plans.start(
            job.id,
            program_id=job.program_id,
            owner=self._owner,
            audience=audience,
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
        skipped = await self._plans.skip_cancelled(job.id)
        if skipped:
            log.info("campaign_cancel_applied", skipped=skipped)
        settled = await self._plans.settle(job.id, owner=self._owner)
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
        waiting, oldest_age = await self._plans.delivery_depth()
        self._metrics.queue_depth.labels(DELIVERIES_QUEUE).set(waiting)
        self._metrics.queue_oldest_age.labels(DELIVERIES_QUEUE).set(oldest_age)


def _since(started: datetime) -> float:
    return round((utc_now() - started).total_seconds(), 3)
