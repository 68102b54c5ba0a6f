"""The webhook inbox's handler: a webhook is a doorbell, so the pass it names is read again
from PassKit and what PassKit says now is applied (a 404: the pass is DELETED). Reads of one
pass never overlap (the claim takes one at a time), so late, repeated or out-of-order
webhooks change nothing wrong: the last read applied is the newest."""

from __future__ import annotations

from daemon.core.errors import MalformedRecord, PermanentPassKitError
from daemon.core.logs import get_logger
from daemon.domain.wallet import WalletRecord
from daemon.engine.outcomes import Succeeded
from daemon.passkit.client import PassKitClient
from daemon.passkit.records import wallet_record
from daemon.passkit.throttle import bulk
from daemon.store.pool import Pool
from daemon.store.wallet import WalletEventJob, apply_read

log = get_logger(__name__)


async def read_and_apply(
    client: PassKitClient, pool: Pool, protocol: str, passkit_id: str
) -> WalletRecord:
    """Read one pass from PassKit and apply what it says (a 404: DELETED). Background work:
    it waits behind pass syncs for PassKit's slots. A record loyaltyd cannot read is PassKit's
    refusal, not a crash."""
    with bulk():
        held = await client.read_pass(protocol, passkit_id)
    try:
        record = WalletRecord.deleted(passkit_id) if held is None else wallet_record(held)
    except MalformedRecord as exc:
        raise PermanentPassKitError(
            f"PassKit answered a record loyaltyd cannot read: {exc}"
        ) from exc
    moved = await apply_read(pool, protocol, record)
    log.info(
        "wallet_pass_read",
        passkit_id=passkit_id,
        status=record.status,
        passes=len(moved),
        moved=sum(1 for m in moved if m.moved),
    )
    return record


class WalletReadHandler:
    def __init__(self, client: PassKitClient, pool: Pool) -> None:
        self._client = client
        self._pool = pool

    async def handle(self, job: WalletEventJob) -> Succeeded:
        await read_and_apply(self._client, self._pool, job.protocol, job.passkit_id)
        return Succeeded()
