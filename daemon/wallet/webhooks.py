"""PassKit's webhooks for loyaltyd ("sink subscriptions", io/integration.pb.go): one per
program class, calling loyaltyd's `/passkit/webhook/TOKEN` on install, uninstall,
invalidation and deletion. Registering again updates loyaltyd's own subscription (found by
its URL's path) instead of adding a second one."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from daemon.core.errors import ConfigError
from daemon.domain.wallet import SweepClass
from daemon.passkit import routes
from daemon.passkit.client import PassKitClient
from daemon.passkit.records import SUBSCRIBED_EVENTS, Sink

WEBHOOK_PATH: Final = "/passkit/webhook/"
_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1"})


def is_ours(sink: Sink, url: str) -> bool:
    """loyaltyd's subscription at `url`'s host (another environment's, on another host of the
    same PassKit account, is left alone)."""
    mine, theirs = urlsplit(url), urlsplit(sink.target_url)
    return theirs.netloc == mine.netloc and theirs.path.startswith(WEBHOOK_PATH)


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
    body = routes.list_sinks_body(target.protocol, target.class_id)
    sinks = [Sink.from_json(item) async for item in client.stream(routes.LIST_SINKS, (), body)]
    return [sink for sink in sinks if sink.class_id in ("", target.class_id)]


async def register(client: PassKitClient, target: SweepClass, url: str) -> str:
    """Create loyaltyd's subscription for `target`, or update the one it has; 'created' or
    'updated'."""
    existing = [sink for sink in await list_sinks(client, target) if is_ours(sink, url)]
    if existing:
        sink_id = existing[0].id
        body = routes.webhook_sink_body(
            target.protocol, target.class_id, url, SUBSCRIBED_EVENTS, sink_id
        )
        await client.send(routes.UPDATE_SINK, body, subject=sink_id)
        return "updated"
    body = routes.webhook_sink_body(target.protocol, target.class_id, url, SUBSCRIBED_EVENTS)
    routes.created_sink_id(await client.send(routes.CREATE_SINK, body, subject=target.class_id))
    return "created"
