"""Campaign delivery through PassKit's Messages API (PASSKIT_CAMPAIGN_DELIVERY=messages): a
campaign whose text is the same for every recipient becomes one PassKit message, created once
(`POST /message`), and goes to its recipients' passes in chunks (`POST /message/send` with
`passIds`), one request per chunk instead of one per recipient.

The ledger stays per recipient: a chunk is the recipients of one campaign claimed together
(`MessageDeliveryStore`, with the frequency cap, late opt-outs and cancel decided by the claim
as for single passes) and its outcome is recorded for each of them in one statement. A chunk
that PassKit reached only in part (`count` short of the pass ids sent) is recorded as failed,
not retried: PassKit does not say which passes it reached, and a retry could message some
twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from daemon.campaigns.delivery import NO_PASSKIT_ID
from daemon.campaigns.rules import message_text
from daemon.core.channels import Channel
from daemon.core.errors import PermanentPassKitError
from daemon.core.logs import get_logger
from daemon.engine.outcomes import Outcome, Skipped, Succeeded
from daemon.passkit.client import PassKitClient
from daemon.passkit.throttle import bulk
from daemon.store.deliveries import Delivery, MessageDeliveryStore

log = get_logger(__name__)

# Rung when a campaign sent through the Messages API starts (queries/campaigns.sql).
MESSAGES_CHANNEL: Final = Channel.CAMPAIGN_MESSAGES
# Chunk requests in flight at once, per daemon.
CHUNK_SLOTS: Final = 4
# The message title when the program has no name: iOS shows it as the message's label.
DEFAULT_TITLE: Final = "Message"


@dataclass(frozen=True, slots=True)
class Chunk:
    """Recipients of one campaign, sent with one request."""

    campaign_id: uuid.UUID
    deliveries: tuple[Delivery, ...]

    @property
    def attempts(self) -> int:
        return max(d.attempts for d in self.deliveries)

    @property
    def owed_seconds(self) -> float:
        return max(d.owed_seconds for d in self.deliveries)

    @property
    def pass_ids(self) -> list[str]:
        return [d.passkit_id for d in self.deliveries if d.passkit_id]

    def log_fields(self) -> Mapping[str, str]:
        return {"campaign_id": str(self.campaign_id), "recipients": str(len(self.deliveries))}


def chunks_of(deliveries: Sequence[Delivery], size: int) -> list[Chunk]:
    """The claimed recipients, by campaign, in chunks of at most `size`."""
    by_campaign: dict[uuid.UUID, list[Delivery]] = {}
    for delivery in deliveries:
        by_campaign.setdefault(delivery.campaign_id, []).append(delivery)
    return [
        Chunk(campaign_id, tuple(group[start : start + size]))
        for campaign_id, group in by_campaign.items()
        for start in range(0, len(group), size)
    ]


class ChunkStore:
    """The Messages API recipients as the engine's `Store` of chunks: one job is one chunk,
    claimed, recorded, extended and released as the recipients it holds."""

    channel: Final = MESSAGES_CHANNEL

    def __init__(self, deliveries: MessageDeliveryStore, chunk_size: int) -> None:
        self.deliveries = deliveries
        self.chunk_size = chunk_size

    @property
    def name(self) -> str:
        return self.deliveries.name

    async def claim(self, owner: uuid.UUID, limit: int) -> list[Chunk]:
        claimed = await self.deliveries.claim(owner, limit * self.chunk_size)
        return chunks_of(claimed, self.chunk_size)

    async def record(self, owner: uuid.UUID, results: Sequence[tuple[Chunk, Outcome]]) -> None:
        await self.deliveries.record(
            owner,
            [
                (delivery, outcome if delivery.passkit_id else NO_PASSKIT_ID)
                for chunk, outcome in results
                for delivery in chunk.deliveries
            ],
        )

    async def extend(self, owner: uuid.UUID, jobs: Sequence[Chunk]) -> None:
        await self.deliveries.extend(owner, [d for chunk in jobs for d in chunk.deliveries])

    async def release(self, owner: uuid.UUID, jobs: Sequence[Chunk]) -> None:
        await self.deliveries.release(owner, [d for chunk in jobs for d in chunk.deliveries])

    async def seconds_to_next(self) -> float | None:
        return None


class MessageChunkHandler:
    """Sends one chunk: the campaign's PassKit message (created by the first chunk of any
    daemon, kept in loyaltyd.campaign_messages) to the chunk's pass ids."""

    def __init__(self, client: PassKitClient, store: MessageDeliveryStore) -> None:
        self._client = client
        self._store = store
        self._message_ids: dict[uuid.UUID, str] = {}
        # Chunks of one campaign start side by side: one of them creates its message.
        self._creating = asyncio.Lock()

    async def handle(self, job: Chunk) -> Succeeded | Skipped:
        pass_ids = list(dict.fromkeys(job.pass_ids))
        if not pass_ids:
            return NO_PASSKIT_ID
        first = job.deliveries[0]
        text = message_text(first.message_text)
        message_id = await self._message_id(job.campaign_id, first.program_name, text)
        with bulk():  # a pass sync goes first for the next PassKit slot
            count = await self._client.send_message(message_id, pass_ids)
        if count < len(pass_ids):
            raise PermanentPassKitError(
                f"PassKit's Messages API reached {count} of the {len(pass_ids)} passes of this "
                "chunk and does not say which; not retried, so nobody gets it twice"
            )
        log.info("campaign_chunk_sent", message_id=message_id, passes=len(pass_ids), count=count)
        # The campaign's own text is kept once, on the campaign (sql/067).
        return Succeeded(sent=None if text == first.message_text else text)

    async def _message_id(self, campaign_id: uuid.UUID, title: str | None, text: str) -> str:
        known = self._message_ids.get(campaign_id)
        if known is not None:
            return known
        async with self._creating:
            return await self._message_id_locked(campaign_id, title, text)

    async def _message_id_locked(self, campaign_id: uuid.UUID, title: str | None, text: str) -> str:
        known = self._message_ids.get(campaign_id)
        if known is None:
            known = await self._store.message_id(campaign_id)
        if known is None:
            created = await self._client.create_message(title or DEFAULT_TITLE, text)
            known = await self._store.save_message_id(campaign_id, created)
            if known != created:
                # Another daemon created one at the same time; this one is sent to nobody.
                log.info("campaign_message_duplicate_unused", message_id=created, kept=known)
            else:
                log.info("campaign_message_created", message_id=created)
        self._message_ids[campaign_id] = known
        if len(self._message_ids) > 256:
            self._message_ids.pop(next(iter(self._message_ids)))
        return known
