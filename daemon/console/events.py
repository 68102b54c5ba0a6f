"""The live feed's event stream: server-sent "changed" events of the viewer's programs only;
the page then fetches the fragment again, through the same checks as any request.

A stream says something at least every `keepalive` seconds (proxies keep it open) and, each
time, checks the session again: a signed-out, expired or revoked session, or one whose
programs changed, ends its stream. A stream also ends on shutdown and after `lifetime`
seconds (the browser opens a new one).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from daemon.console.auth import Viewer
from daemon.console.context import ConsoleContext
from daemon.console.feed import Subscription
from daemon.console.web import load_viewer, viewer_of
from daemon.core.clock import wait_any
from daemon.core.logs import get_logger
from daemon.store.errors import DATABASE_ERRORS

log = get_logger(__name__)

KEEPALIVE_SECONDS: Final = 15.0
LIFETIME_SECONDS: Final = 600.0


PER_SESSION: Final = 3


@dataclass(frozen=True)
class StreamLimits:
    """`total` None: half of LOYALTYD_HTTP_MAX_CONNECTIONS, so streams never take the
    connections that probes, scrapes, webhooks and the pages themselves need."""

    keepalive: float = KEEPALIVE_SECONDS
    lifetime: float = LIFETIME_SECONDS
    per_session: int = PER_SESSION
    total: int | None = None


class EventStreams:
    def __init__(self, ctx: ConsoleContext, limits: StreamLimits) -> None:
        self.ctx = ctx
        self.limits = limits
        self._total = limits.total or max(1, ctx.settings.loyaltyd_http_max_connections // 2)
        self._open: Counter[str] = Counter()  # streams open, per session

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/events", self.events)

    async def events(self, request: web.Request) -> web.StreamResponse:
        viewer = viewer_of(request)
        refusal = self._refusal(viewer)
        if refusal is not None:
            return refusal
        self._open[viewer.session_hash] += 1
        try:
            return await self._stream(request, viewer)
        finally:
            self._open[viewer.session_hash] -= 1
            if not self._open[viewer.session_hash]:
                del self._open[viewer.session_hash]

    def _refusal(self, viewer: Viewer) -> web.Response | None:
        """A stream over the caps is refused with an answer that makes EventSource stop (any
        status but 200); the page tries again later, slower each time."""
        if self._open[viewer.session_hash] >= self.limits.per_session:
            log.info("console_stream_refused", reason="streams per session")
            return web.Response(status=204)
        if self._open.total() >= self._total:
            log.warning("console_stream_refused", reason="streams in all")
            return web.Response(
                status=503, text="too many live pages", headers={"Retry-After": "30"}
            )
        return None

    async def _stream(self, request: web.Request, viewer: Viewer) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        subscription = self.ctx.feed.subscribe(viewer.program_ids)
        try:
            await response.write(b"retry: 2000\n: connected\n\n")
            await self._follow(response, viewer, subscription)
        except ConnectionResetError:
            pass  # the page went away
        finally:
            self.ctx.feed.unsubscribe(subscription)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _follow(
        self, response: web.StreamResponse, viewer: Viewer, subscription: Subscription
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.lifetime
        check_at = loop.time() + self.limits.keepalive
        while not self.ctx.stopping.is_set() and (left := deadline - loop.time()) > 0:
            wait = max(0.0, min(left, check_at - loop.time()))
            await wait_any(subscription.ready, self.ctx.stopping, within=wait)
            if loop.time() >= check_at:
                if not await self._still_allowed(viewer):
                    return
                check_at = loop.time() + self.limits.keepalive
            await response.write(_events(subscription.take()))

    async def _still_allowed(self, viewer: Viewer) -> bool:
        """The session still stands, for the same programs (unsure: the stream ends, and the
        browser's next one goes through every check)."""
        try:
            fresh = await load_viewer(self.ctx.pool, viewer.session_hash)
        except DATABASE_ERRORS as exc:
            log.warning("console_stream_ended", reason="session not readable", error=repr(exc))
            return False
        if fresh is None or set(fresh.program_ids) != set(viewer.program_ids):
            log.info("console_stream_ended", reason="session ended or changed")
            return False
        return True


def _events(names: list[str]) -> bytes:
    """One message per thing that changed: its name is the data (what the page listens for)."""
    if not names:
        return b": keepalive\n\n"
    return "".join(f"data: {name}\n\n" for name in names).encode()
