"""The HTTP server's connections under abuse: a cap on open connections, a deadline for the
first request's headers and a lifetime for every connection, and JSON for the errors aiohttp
answers itself (a request its parser refuses never reaches the application).

A client that opens connections and never finishes its headers (slowloris) is dropped after
LOYALTYD_HTTP_HEADER_TIMEOUT_SECONDS; a kept-alive connection is closed, once its request is
answered, after LOYALTYD_HTTP_CONNECTION_SECONDS; past LOYALTYD_HTTP_MAX_CONNECTIONS, a new
connection is closed at once. Request bodies have their own read timeout (see HttpApi._body).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from daemon.core.logs import get_logger

log = get_logger(__name__)
_END_OF_HEADERS = b"\r\n\r\n"


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout: float
    lifetime: float


class GuardedRequestHandler(RequestHandler):
    """aiohttp's protocol handler with the limits above and JSON error answers."""

    limits: ConnectionLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._headers_seen = False
        self._tail = b""  # the last bytes received, for an end of headers split across reads
        self._header_deadline: asyncio.TimerHandle | None = None
        self._lifetime: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        manager = self._manager
        if manager is not None and len(manager.connections) > self.limits.max_connections:
            log.warning("http_connection_refused", reason="too many connections")
            transport.close()
            return
        loop = asyncio.get_running_loop()
        self._header_deadline = loop.call_later(self.limits.header_timeout, self._headers_too_slow)
        self._lifetime = loop.call_later(self.limits.lifetime, self.close)

    def data_received(self, data: bytes) -> None:
        if not self._headers_seen and _END_OF_HEADERS in self._tail + data:
            self._headers_seen = True
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None
        self._tail = data[-3:]
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in (self._header_deadline, self._lifetime):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        log.info("http_connection_dropped", reason="headers not finished in time")
        if self.transport is not None:
            self.transport.close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs it, as aiohttp does
        response = web.Response(
            status=status,
            text=json.dumps({"error": _reason(status, exc)}),
            content_type="application/json",
        )
        response.force_close()
        return response


def _reason(status: int, exc: BaseException | None) -> str:
    """A sentence for the client, never the raw request bytes (they may hold a key)."""
    if status == 500:
        return "internal error; the daemon's log has the details"
    detail = str(getattr(exc, "message", "") or "").strip().splitlines()
    phrase = web.Response(status=status).reason or "error"
    return f"{phrase.lower()}: {detail[0].rstrip(':')}" if detail else phrase.lower()


class GuardedServer(web.Server):
    """A web.Server whose connections are GuardedRequestHandlers."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handler_class = type(
            "LimitedRequestHandler", (GuardedRequestHandler,), {"limits": limits}
        )

    def __call__(self) -> RequestHandler:
        handler: RequestHandler = self._handler_class(self, loop=self._loop, **self._kwargs)
        return handler


class GuardedAppRunner(web.AppRunner):
    """web.AppRunner serving through a GuardedServer."""

    def __init__(self, app: web.Application, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            limits=self._limits,
            **plain._kwargs,
        )
