"""Pass sync: what PassKit is told for one pass whose balance, message, redemption or
check-in is owed (the rows come from `daemon.store.passes`)."""

from __future__ import annotations

from daemon.core.logs import get_logger
from daemon.domain.wallet import NOT_AT_PASSKIT, UNREACHABLE
from daemon.engine.outcomes import Skipped, Succeeded
from daemon.passkit.client import PassKitClient
from daemon.store.passes import PassSyncJob

log = get_logger(__name__)


class PassSyncHandler:
    def __init__(self, client: PassKitClient) -> None:
        self._client = client

    async def handle(self, job: PassSyncJob) -> Succeeded | Skipped:
        """Pass-state calls first, the message last: a retry after a failed message repeats
        only idempotent calls before it, never an alert that already went out."""
        if job.unreachable is not None:
            return Skipped(UNREACHABLE[job.unreachable])
        if not job.passkit_id:
            log.info("pass_sync_skipped", reason=NOT_AT_PASSKIT)
            return Skipped(NOT_AT_PASSKIT)
        client, passkit_id = self._client, job.passkit_id
        if job.protocol == "MEMBERSHIP" and job.points is not None:
            await client.set_points(passkit_id, job.points, tier_points=job.tier_points)
        elif job.protocol == "COUPON" and job.redeem:
            await client.redeem_coupon(passkit_id)
        elif job.protocol == "EVENT_TICKET" and job.check_in:
            await client.check_in_ticket(passkit_id)
        if job.message:
            await client.write_message(job.protocol, passkit_id, job.message)
        log.info(
            "pass_synced",
            points=job.points,
            tier_points=job.tier_points,
            message=job.message is not None,
            redeem=job.redeem,
            check_in=job.check_in,
        )
        return Succeeded()
