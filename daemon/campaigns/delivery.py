"""Campaign delivery: the message one recipient gets, rendered for them and written to their
pass's message field (the rows come from `daemon.store.deliveries`)."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import Final

from daemon.campaigns.rules import message_text
from daemon.core.errors import WorkRefused
from daemon.core.templating import Template, TemplateError, parse_template
from daemon.domain.wallet import NOT_AT_PASSKIT
from daemon.engine.outcomes import Skipped, Succeeded
from daemon.passkit.client import PassKitClient
from daemon.passkit.throttle import bulk
from daemon.store.deliveries import Delivery

# A recipient whose pass PassKit never issued: skipped, pass by pass or in a chunk.
NO_PASSKIT_ID: Final = Skipped(NOT_AT_PASSKIT)
# Parsed message templates kept per campaign; a handful of campaigns run at once at most.
_TEMPLATE_CACHE_SIZE: Final = 64


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


class DeliveryHandler:
    def __init__(self, client: PassKitClient) -> None:
        self._client = client
        self._templates = TemplateCache()

    async def handle(self, job: Delivery) -> Succeeded | Skipped:
        if not job.passkit_id:
            return NO_PASSKIT_ID
        try:
            text = self._templates.render(job)
        except TemplateError as exc:
            raise WorkRefused(str(exc)) from exc
        with bulk():  # a pass sync goes first for the next PassKit slot
            await self._client.write_message(job.protocol, job.passkit_id, text)
        # The campaign's own text is kept once, on the campaign (sql/067).
        return Succeeded(sent=None if text == job.message_text else text)
