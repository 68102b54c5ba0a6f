"""The HTTP server (SPEC §3.5): health, readiness, Prometheus metrics, and a small API.

Off unless LOYALTYD_HTTP_PORT is set; binds LOYALTYD_HTTP_HOST (127.0.0.1 by default).

    GET  /healthz                  200 while the process answers at all
    GET  /readyz                   200 when the database answers and the LISTEN connection is
                                   alive and the daemon is not stopping; 503 otherwise
    GET  /metrics                  Prometheus text; queue gauges read from the tables per scrape
    POST /api/notify/broadcast     → 202 {"id": …}: a push campaign, sent by the daemon
    POST /api/notify/birthday-run  → 200 the birthday run's summary
    GET  /api/campaigns/{id}       → 200 the campaign's progress, 404 when unknown
    POST|PUT|DELETE /passkit/webhook/{token}
                                   PassKit's webhooks (sink subscriptions): 200 once queued for
                                   a re-read of the pass; 404 unless {token} is
                                   LOYALTYD_PASSKIT_WEBHOOK_TOKEN; 400 a body that is not one

`/api/*` needs an `X-API-Key` header matching one of LOYALTYD_API_KEYS (no keys configured:
every call is refused). Every error answer is JSON `{"error": "…"}`: 400 bad JSON or fields,
401 no or wrong key, 404, 405, 413 body over LOYALTYD_HTTP_MAX_BODY_BYTES, 500. Neither keys,
the webhook token nor request bodies are ever logged.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder
from pydantic import SecretStr

from daemon.birthday.bot import run_birthdays
from daemon.campaigns.api import campaign_status, create_campaign
from daemon.core.clock import utc_now
from daemon.core.errors import ApiRequestError, CampaignInputError, ConfigError
from daemon.core.logs import get_logger
from daemon.ops.api_models import (
    API_KEY_HEADER,
    ApiKeys,
    parse_birthday_run,
    parse_broadcast,
    parse_campaign_id,
)
from daemon.ops.http_guard import ConnectionLimits, GuardedAppRunner
from daemon.ops.readiness import Running, readiness
from daemon.passkit.records import pass_event
from daemon.store.errors import DATABASE_ERRORS
from daemon.store.status import refresh_queue_gauges
from daemon.store.wallet import receive_event

log = get_logger(__name__)

Handler = Callable[[web.Request], Any]
# Probes and scrapes must answer quickly even when the database does not.
DB_TIMEOUT_SECONDS = 2.0
# In-flight requests get this long to finish when the daemon stops.
SHUTDOWN_SECONDS = 5.0
# The wallet gauges count every pass: a scrape reads them at most this often.
WALLET_GAUGES_SECONDS = 60.0
WEBHOOK_PREFIX = "/passkit/webhook/"
CONSOLE_PREFIX = "/console"
WEBHOOK_PATH = WEBHOOK_PREFIX + "{token}"
# A PassKit webhook is a small JSON object (event, pass); anything larger is not one.
WEBHOOK_MAX_BYTES = 65_536


class HttpApi:
    """The routes, bound to the running daemon; `clock` is what the birthday run calls now."""

    def __init__(self, running: Running, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._running = running
        self._clock = clock
        self._keys = ApiKeys(running.settings.loyaltyd_api_keys)
        self._max_body = running.settings.loyaltyd_http_max_body_bytes
        self._body_timeout = running.settings.loyaltyd_http_body_timeout_seconds
        self._webhooks = WebhookToken(running.settings.loyaltyd_passkit_webhook_token)
        self._refusals = RefusalLog()
        self._wallets_read_at = -WALLET_GAUGES_SECONDS

    @property
    def keys_configured(self) -> bool:
        return self._keys.configured

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self._max_body, middlewares=[self._json_errors, self._api_key]
        )
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/api/notify/broadcast", self.broadcast)
        app.router.add_post("/api/notify/birthday-run", self.birthday_run)
        app.router.add_get("/api/campaigns/{id}", self.campaign)
        for method in ("POST", "PUT", "DELETE"):
            app.router.add_route(method, WEBHOOK_PATH, self.webhook)
        return app

    # --- probes and metrics --------------------------------------------------------------------

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, _request: web.Request) -> web.Response:
        state = await readiness(self._running, DB_TIMEOUT_SECONDS)
        return web.json_response(state.to_dict(), status=200 if state.ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        r = self._running
        now = time.monotonic()
        wallets = now - self._wallets_read_at >= WALLET_GAUGES_SECONDS
        if wallets:
            self._wallets_read_at = now
        await refresh_queue_gauges(r.pool, r.metrics, DB_TIMEOUT_SECONDS, wallets=wallets)
        # the scraper's Accept header picks the format (Prometheus text 0.0.4 by default)
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(r.metrics.registry), headers={"Content-Type": content_type})

    # --- API -----------------------------------------------------------------------------------

    async def broadcast(self, request: web.Request) -> web.Response:
        body = parse_broadcast(await self._body(request))
        campaign_id = await create_campaign(
            self._running.pool,
            program_id=body.program_id,
            message=body.message,
            segment=body.segment,
            name=body.name,
            scheduled_at=body.scheduled_at,
            draft=body.draft,
            allowed_hosts=self._running.settings.loyaltyd_csv_allowed_hosts,
            created_by=self._keys.label(request.headers.get(API_KEY_HEADER)),
            **body.segment_params(),
        )
        url = f"/api/campaigns/{campaign_id}"
        return web.json_response(
            {"id": str(campaign_id), "status": "DRAFT" if body.draft else "PENDING", "url": url},
            status=202,
            headers={"Location": url},
        )

    async def birthday_run(self, request: web.Request) -> web.Response:
        body = parse_birthday_run(await self._body(request))
        summary = await run_birthdays(
            self._running.pool, now=self._clock(), program_id=body.program_id
        )
        if body.program_id is not None and summary.error is not None:
            # the only error a one-program run reports itself: there is no such program
            return _error(404, summary.error)
        return web.json_response(summary.to_dict())

    async def campaign(self, request: web.Request) -> web.Response:
        campaign_id = parse_campaign_id(request.match_info["id"])
        status = await campaign_status(self._running.pool, campaign_id)
        if status is None:
            return _error(404, f"no campaign with id {campaign_id}")
        return web.json_response(status)

    # --- PassKit's webhooks ---------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        """A doorbell: the pass it names is queued to be read again from PassKit (the read is
        the truth), and PassKit is answered at once."""
        if not self._webhooks.admits(request.match_info["token"]):
            self._running.metrics.wallet_webhooks.labels("refused").inc()
            self._refusals.note(request.remote)
            return _error(404, "Not Found")
        try:
            event = pass_event(_json_body(await self._body(request, WEBHOOK_MAX_BYTES)))
        except ValueError as exc:
            self._running.metrics.wallet_webhooks.labels("refused").inc()
            log.warning("passkit_webhook_refused", reason=str(exc))
            return _error(400, f"not a PassKit webhook: {exc}")
        try:
            received = await receive_event(
                self._running.pool, event.passkit_id, event.protocol, event.event, event.class_id
            )
        except DATABASE_ERRORS as exc:
            # PassKit calls again on an error answer; nothing was queued.
            log.warning("passkit_webhook_not_queued", error=repr(exc))
            return _error(503, "the database is unavailable; try again shortly")
        self._running.metrics.wallet_webhooks.labels(event.event).inc()
        log.info(
            "passkit_webhook_received",
            webhook_event=event.event,
            passkit_id=event.passkit_id,
            queued=received.queued,
        )
        return web.json_response({"status": "queued" if received.queued else "unknown pass"})

    async def _body(self, request: web.Request, limit: int | None = None) -> bytes:
        limit = limit or self._max_body
        too_large = ApiRequestError(f"the request body is larger than {limit} bytes", status=413)
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        try:
            async with asyncio.timeout(self._body_timeout):
                body = await _read_at_most(request, limit)
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None
        except TimeoutError:
            raise ApiRequestError(
                f"the request body did not arrive within {self._body_timeout:g} s", status=408
            ) from None
        if len(body) > limit:
            raise too_large
        return body

    # --- middlewares ---------------------------------------------------------------------------

    @web.middleware
    async def _api_key(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            refusal = self._keys.refusal(request.headers.get(API_KEY_HEADER))
            if refusal is not None:
                raise ApiRequestError(refusal, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def _json_errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONSOLE_PREFIX + "/"):
            answer: web.StreamResponse = await handler(request)
            return answer  # the console answers in HTML, itself
        try:
            response: web.StreamResponse = await handler(request)
        except (ApiRequestError, CampaignInputError) as exc:
            status = exc.status if isinstance(exc, ApiRequestError) else 400
            log.info(
                "http_request_refused",
                method=request.method,
                path=_logged_path(request),
                status=status,
                error=str(exc),
            )
            return _error(status, str(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            answer = _error(exc.status, exc.reason)
            if "Allow" in exc.headers:  # 405: the methods the route takes
                answer.headers["Allow"] = exc.headers["Allow"]
            return answer
        except Exception:
            log.exception("http_request_failed", method=request.method, path=_logged_path(request))
            return _error(500, "internal error; the daemon's log has the details")
        return response


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _read_at_most(request: web.Request, limit: int) -> bytes:
    """The body, read no further than one byte past `limit` (a chunked body has no length to
    refuse it by)."""
    body = bytearray()
    while len(body) <= limit:
        chunk = await request.content.read(min(65_536, limit + 1 - len(body)))
        if not chunk:
            break
        body += chunk
    return bytes(body)


class RefusalLog:
    """Webhooks with a wrong token, said once a minute with their count: whoever knocks cannot
    flood the log."""

    def __init__(self, every: float = 60.0) -> None:
        self._every = every
        self._said_at = -every
        self._since = 0

    def note(self, remote: str | None) -> None:
        self._since += 1
        now = time.monotonic()
        if now - self._said_at >= self._every:
            log.warning(
                "passkit_webhook_refused",
                reason="wrong token",
                count=self._since,
                last_remote=remote,
            )
            self._said_at, self._since = now, 0


def _logged_path(request: web.Request) -> str:
    """The path as logs may show it: never the webhook's secret token."""
    if request.path.startswith(WEBHOOK_PREFIX):
        return WEBHOOK_PREFIX + "…"
    return request.path


def _json_body(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        raise ValueError("the body is not JSON") from None


class WebhookToken:
    """LOYALTYD_PASSKIT_WEBHOOK_TOKEN, compared in constant time; unset admits nothing."""

    def __init__(self, token: SecretStr | None) -> None:
        self._token = token.get_secret_value().encode() if token is not None else None

    def admits(self, offered: str) -> bool:
        if self._token is None:
            return False
        return hmac.compare_digest(self._token, offered.encode())


@asynccontextmanager
async def serve_http(
    running: Running,
    *,
    clock: Callable[[], datetime] = utc_now,
    console: web.Application | None = None,
) -> AsyncIterator[HttpApi | None]:
    """Serve while the block runs (nothing when LOYALTYD_HTTP_PORT is unset). A port that
    cannot be bound fails here, before the daemon starts working."""
    settings = running.settings
    if settings.loyaltyd_http_port is None:
        yield None
        return
    api = HttpApi(running, clock=clock)
    app = api.app()
    if console is not None:
        app.add_subapp(CONSOLE_PREFIX + "/", console)
    limits = ConnectionLimits(
        max_connections=settings.loyaltyd_http_max_connections,
        header_timeout=settings.loyaltyd_http_header_timeout_seconds,
        lifetime=settings.loyaltyd_http_connection_seconds,
    )
    runner = GuardedAppRunner(app, limits=limits, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.loyaltyd_http_host, settings.loyaltyd_http_port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot serve HTTP on {settings.loyaltyd_http_host}:"
                f"{settings.loyaltyd_http_port} ({exc.strerror or exc}): choose another "
                "LOYALTYD_HTTP_PORT or LOYALTYD_HTTP_HOST, or stop what uses it"
            ) from exc
        log.info(
            "http_server_started",
            host=settings.loyaltyd_http_host,
            port=settings.loyaltyd_http_port,
        )
        if not api.keys_configured:
            log.warning("http_api_keys_missing", detail="set LOYALTYD_API_KEYS; /api/* answers 401")
        if console is not None:
            log.info("console_served", path=CONSOLE_PREFIX + "/")
        yield api
    finally:
        await runner.cleanup()
        log.info("http_server_stopped")
