"""Campaign deliveries as a queue (`daemon.engine.outcomes.Queue`), run by the generic Worker.

One job is one recipient of a campaign being sent. The claim statement leases due recipients
of PROCESSING campaigns (SKIP LOCKED, so several daemons share a campaign), and decides the
frequency cap and late opt-outs itself: those rows come back already skipped and counted.
`handle` renders the message for the recipient and writes it to the pass's message field;
`record` writes outcomes back in batches and moves the campaign's counters in the same
statement.
"""

from __future__ import annotations

import random
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg
import structlog

from daemon.campaigns.rules import message_text
from daemon.campaigns.templating import Template, TemplateError, parse_template
from daemon.core.clock import utc_now
from daemon.core.config import Settings
from daemon.core.errors import PermanentPassKitError, TransientPassKitError
from daemon.core.logs import get_logger
from daemon.core.metrics import Metrics
from daemon.engine.outcomes import Failed, Outcome, RetryLater, Skipped, Succeeded
from daemon.engine.retry import requeue
from daemon.passkit.client import PassKitClient
from daemon.store.queries import q

log = get_logger(__name__)

CHANNEL: Final = "loyaltyd_deliveries"
# Campaign messages are timely ("until 5 PM today"): after the client's own quick retries, a
# recipient is tried a few more times over minutes, not hours, then recorded as failed.
MAX_DELIVERY_ATTEMPTS: Final = 5
RETRY_CAP_SECONDS: Final = 300.0
# Parsed message templates kept per campaign; a handful of campaigns run at once at most.
_TEMPLATE_CACHE_SIZE: Final = 64


@dataclass(frozen=True, slots=True)
class Delivery:
    """One recipient of one campaign, leased to this daemon."""

    campaign_id: uuid.UUID
    pass_id: uuid.UUID
    attempts: int
    lease_expired: bool
    protocol: str
    passkit_id: str | None
    passkit_program_id: str | None
    passkit_tier_id: str | None
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
            lease_expired=row["lease_expired"],
            protocol=row["protocol"] or "MEMBERSHIP",
            passkit_id=row["passkit_internal_id"],
            passkit_program_id=row["passkit_program_id"],
            passkit_tier_id=row["passkit_tier_id"],
            message_text=row["message_text"],
            first_name=row["first_name"],
            last_name=row["last_name"],
            points=row["points"],
            program_name=row["program_name"],
        )

    def placeholder_values(self) -> dict[str, object | None]:
        return {
            "first_name": self.first_name,
            "last_name": self.last_name,
            "points": self.points,
            "program_name": self.program_name,
        }


def after_transient_failure(
    error: str, attempts: int, now: datetime, rng: random.Random
) -> RetryLater | Failed:
    """A recipient PassKit could not take (after the client's retries): later, or give up."""
    return requeue(
        error, attempts, now, rng, max_attempts=MAX_DELIVERY_ATTEMPTS, cap=RETRY_CAP_SECONDS
    )


class TemplateCache:
    """Parsed templates by campaign: each campaign's text is parsed once, not per recipient.

    A started campaign's text cannot change (the push_campaigns trigger refuses it), so the
    campaign id is key enough; the text is compared anyway, at no cost, to stay correct if it
    somehow did.
    """

    def __init__(self, size: int = _TEMPLATE_CACHE_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[uuid.UUID, Template] = OrderedDict()

    def get(self, campaign_id: uuid.UUID, text: str) -> Template:
        template = self._entries.get(campaign_id)
        if template is None or template.text != text:
            template = parse_template(message_text(text))
            self._entries[campaign_id] = template
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)
        self._entries.move_to_end(campaign_id)
        return template

    def render(self, job: Delivery) -> str:
        return self.get(job.campaign_id, job.message_text).render(job.placeholder_values())


class CampaignDeliveryQueue:
    name = "campaign"
    channel = CHANNEL

    def __init__(
        self,
        pool: asyncpg.Pool,
        client: PassKitClient,
        settings: Settings,
        metrics: Metrics | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        self._pool = pool
        self._client = client
        self._lease_seconds = settings.loyaltyd_lease_seconds
        self._metrics = metrics
        self._clock = clock
        self._rng = rng or random.Random()
        self._templates = TemplateCache()

    # --- claim ---------------------------------------------------------------------------------

    async def claim(self, owner: uuid.UUID, limit: int) -> list[Delivery]:
        # The frequency cap counts the recipients other daemons have claimed; two claims
        # running side by side would each miss the other's. Claims therefore take turns (a
        # transaction-scoped lock; each claim is a few milliseconds) and the claim statement,
        # run after the lock is held, sees every earlier claim committed.
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(q("serialise_delivery_claims"))
            rows = await conn.fetch(q("claim_deliveries"), owner, limit, self._lease_seconds)
        jobs = [Delivery.from_row(r) for r in rows if r["state"] == "claimed"]
        self._count_claim(len(rows) - len(jobs), sum(1 for j in jobs if j.lease_expired))
        return jobs

    def _count_claim(self, skipped: int, expired: int) -> None:
        # Skips decided by the claim never reach the Worker, which counts everything else.
        if skipped:
            log.info("campaign_recipients_skipped_at_claim", count=skipped)
        if expired:
            log.warning("campaign_delivery_leases_reclaimed", count=expired)
        if self._metrics is None:
            return
        if skipped:
            self._metrics.deliveries.labels(self.name, "skipped").inc(skipped)
        if expired:
            self._metrics.leases_expired.labels(self.name).inc(expired)

    # --- handle --------------------------------------------------------------------------------

    async def handle(self, job: Delivery) -> Outcome:
        with structlog.contextvars.bound_contextvars(
            campaign_id=str(job.campaign_id), pass_id=str(job.pass_id)
        ):
            if not job.passkit_id:
                return Skipped("pass has no passkit_internal_id (not issued in PassKit)")
            try:
                text = self._templates.render(job)
                await self._client.write_message(
                    job.protocol,
                    job.passkit_id,
                    text,
                    program_id=job.passkit_program_id,
                    tier_id=job.passkit_tier_id,
                )
            except (PermanentPassKitError, TemplateError, ValueError) as exc:
                # ValueError: a protocol the client does not know; retrying cannot help.
                log.warning("campaign_delivery_failed", error=str(exc))
                return Failed(str(exc))
            except TransientPassKitError as exc:
                return self._transient(job, str(exc))
            return Succeeded()

    def _transient(self, job: Delivery, error: str) -> Outcome:
        outcome = after_transient_failure(error, job.attempts, self._clock(), self._rng)
        if isinstance(outcome, Failed):
            log.warning("campaign_delivery_failed", error=outcome.error, attempts=job.attempts)
        else:
            log.info("campaign_delivery_retry_later", error=error, retry_at=outcome.at.isoformat())
        return outcome

    # --- record, extend, release ---------------------------------------------------------------

    async def record(self, owner: uuid.UUID, results: Sequence[tuple[Delivery, Outcome]]) -> None:
        campaigns, passes, outcomes, retry_at, errors, texts = [], [], [], [], [], []
        for job, outcome in results:
            campaigns.append(job.campaign_id)
            passes.append(job.pass_id)
            outcomes.append(_OUTCOME_CODES[type(outcome)])
            retry_at.append(outcome.at if isinstance(outcome, RetryLater) else None)
            errors.append(_error_of(outcome))
            texts.append(self._sent_text(job, outcome))
        await self._pool.execute(
            q("record_deliveries"), owner, campaigns, passes, outcomes, retry_at, errors, texts
        )

    def _sent_text(self, job: Delivery, outcome: Outcome) -> str | None:
        """What the recipient was sent, for the admin (rendering is pure and cheap)."""
        if not isinstance(outcome, Succeeded):
            return None
        return self._templates.render(job)

    async def extend(self, owner: uuid.UUID, jobs: Sequence[Delivery]) -> None:
        await self._pool.execute(
            q("extend_delivery_leases"),
            owner,
            [j.campaign_id for j in jobs],
            [j.pass_id for j in jobs],
            self._lease_seconds,
        )

    async def release(self, owner: uuid.UUID, jobs: Sequence[Delivery]) -> None:
        await self._pool.execute(
            q("release_deliveries"),
            owner,
            [j.campaign_id for j in jobs],
            [j.pass_id for j in jobs],
        )


_OUTCOME_CODES: Final[Mapping[type, str]] = {
    Succeeded: "sent",
    Failed: "failed",
    Skipped: "skipped",
    RetryLater: "retry",
}


def _error_of(outcome: Outcome) -> str | None:
    if isinstance(outcome, RetryLater | Failed):
        return outcome.error
    if isinstance(outcome, Skipped):
        return outcome.reason
    return None
