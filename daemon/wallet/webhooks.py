"""PassKit's webhooks for loyaltyd ("sink subscriptions", io/integration.pb.go): one per
program class, calling loyaltyd's `/passkit/webhook/TOKEN` on install, uninstall,
invalidation and deletion. Registering again updates loyaltyd's own subscription (found by
its URL's path) instead of adding a second one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from daemon.core.errors import ConfigError, PermanentPassKitError
from daemon.domain.wallet import SweepClass
from daemon.passkit import routes
from daemon.passkit.client import PassKitClient
from daemon.passkit.records import SUBSCRIBED_EVENTS

WEBHOOK_PATH: Final = "/passkit/webhook/"
_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True, slots=True)
class Sink:
    """One subscription as PassKit lists it."""

    id: str
    class_id: str
    protocol: str
    events: tuple[str, ...]
    status: str
    target_url: str

    def ours(self, url: str) -> bool:
        """loyaltyd's subscription at `url`'s host (another environment's, on another host of
        the same PassKit account, is left alone)."""
        mine, theirs = urlsplit(url), urlsplit(self.target_url)
        return theirs.netloc == mine.netloc and theirs.path.startswith(WEBHOOK_PATH)

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Sink:
        try:
            config = json.loads(item.get("configuration") or "{}")
        except ValueError:
            config = {}
        events = item.get("passEventId") or []
        return cls(
            id=str(item.get("id", "")),
            class_id=str(item.get("classId", "")),
            protocol=str(item.get("protocol", "")),
            events=tuple(str(e) for e in events) if isinstance(events, list) else (),
            status=str(item.get("status", "")),
            target_url=str(config.get("targetUrl", "")) if isinstance(config, dict) else "",
        )


def redacted(url: str) -> str:
    """`url` with its token cut (or, not being loyaltyd's, its whole path): what a terminal,
    a log or a ticket may show."""
    head, marker, _ = url.partition(WEBHOOK_PATH)
    if marker:
        return f"{head}{marker}…"
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.scheme and parts.netloc else "…"


def check_url(url: str, token: str | None) -> str:
    """The URL PassKit is to call, refused unless it is https (or a loopback http, for a local
    test) ending in /passkit/webhook/<LOYALTYD_PASSKIT_WEBHOOK_TOKEN>."""
    if token is None:
        raise ConfigError(
            "set LOYALTYD_PASSKIT_WEBHOOK_TOKEN first: without it loyaltyd answers every "
            "webhook 404"
        )
    parts = urlsplit(url)
    loopback_http = parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK
    if parts.scheme != "https" and not loopback_http:
        raise ConfigError(f"--url {redacted(url)}: PassKit must call loyaltyd over https")
    if parts.path != WEBHOOK_PATH + token or parts.query or parts.fragment:
        raise ConfigError(
            f"--url {redacted(url)}: it must end in {WEBHOOK_PATH}<LOYALTYD_PASSKIT_WEBHOOK_TOKEN>"
            " (this daemon's token), with nothing after it"
        )
    return url


async def list_sinks(client: PassKitClient, target: SweepClass) -> list[Sink]:
    protocol = routes.PASSKIT_PROTOCOL[target.protocol]
    body = {"classId": target.class_id, "protocol": protocol, "filters": routes.ALL_RECORDS}
    return [
        Sink.from_json(item)
        async for item in client.stream(routes.LIST_SINKS, (), body)
        if item.get("classId") in (None, "", target.class_id)
    ]


async def register(client: PassKitClient, target: SweepClass, url: str) -> str:
    """Create loyaltyd's subscription for `target`, or update the one it has; 'created' or
    'updated'."""
    existing = [sink for sink in await list_sinks(client, target) if sink.ours(url)]
    body: dict[str, Any] = {
        "classId": target.class_id,
        "protocol": routes.PASSKIT_PROTOCOL[target.protocol],
        "passEventId": list(SUBSCRIBED_EVENTS),
        "status": "INTEGRATION_ACTIVE",
        "configType": "WEBHOOK",
        "configuration": json.dumps({"targetUrl": url}),
    }
    if existing:
        body["id"] = existing[0].id
        await client.send(routes.UPDATE_SINK, body, subject=existing[0].id)
        return "updated"
    answer = await client.send(routes.CREATE_SINK, body, subject=target.class_id)
    if not answer.get("id"):
        raise PermanentPassKitError("PassKit created the subscription without an id")
    return "created"
