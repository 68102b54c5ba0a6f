"""The PassKit REST client: everything loyaltyd says to PassKit goes through `PassKitClient`.

It carries each request over a transport (`daemon.passkit.transport`: aiohttp, or mock mode's
in-process PassKit), the only seam below it. Failures leave it as `daemon.core.errors` classes
(aiohttp's mapped by the transport, statuses here). Each logical request is one attempt, plus
at most one quick retry of a transient failure that asks for no more than a second's wait
(PassKit: "503: back off for 250 ms and repeat"); every longer wait is the queue's
(`daemon.engine.retry`), so no worker slot or lease is held while PassKit recovers. Each
attempt takes a concurrency slot and a rate token from the process-wide `Throttle`.

What is known about the API (and what is not) is in passkit-api.md beside the spec; choices
made where it is silent are noted where they are made.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final

import aiohttp
import jwt
import structlog

from daemon.core.config import Settings
from daemon.core.errors import (
    Fenced,
    PassKitError,
    PayloadTooLarge,
    PermanentPassKitError,
    TransientPassKitError,
    TransportFailed,
    Unauthorized,
)
from daemon.core.logs import SecretScrubber, get_logger
from daemon.core.metrics import Metrics
from daemon.domain.wallet import as_float32
from daemon.engine.retry import backoff
from daemon.passkit import routes
from daemon.passkit.health import PassKitHealth
from daemon.passkit.mock import MockPassKit
from daemon.passkit.routes import Endpoint
from daemon.passkit.suffix import with_invisible_nonce
from daemon.passkit.throttle import Clock, Sleep, Throttle, bulk
from daemon.passkit.transport import HttpTransport, Reply, Request, Transport

log = get_logger(__name__)

# "Pass update content must be 10,000 bytes or less" (PassKit help article 10961638).
MAX_PAYLOAD_BYTES: Final = 10_000
# Absorbs clock skew between us and PassKit, as PassKit's own PHP SDK does.
JWT_BACKDATE_SECONDS: Final = 10

# The one quick retry inside a request: only for a transient failure that asks for at most this
# long, after 250 ms to 1 s (PassKit documents "503: back off for 250 ms and repeat").
QUICK_RETRY_MAX_SECONDS: Final = 1.0
_QUICK_RETRY_BASE_SECONDS: Final = 0.25


JsonObject = routes.JsonObject
AlreadyDone = Callable[[int, str], bool]


# --- pure helpers ------------------------------------------------------------------------------


def encode_body(body: Mapping[str, Any]) -> bytes:
    """The exact bytes sent; refused when PassKit would reject them anyway."""
    # ensure_ascii=False: the suffix costs 3 bytes a character in UTF-8, 6 as a \\u escape.
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(len(data), MAX_PAYLOAD_BYTES)
    return data


def is_transient_status(status: int) -> bool:
    # 501 is the one 5xx that says "never"; 408 is a timeout reported by the server.
    return status in (408, 429) or (status >= 500 and status != 501)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); `now` is
    Unix time. None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return _seconds_until_http_date(value, now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _seconds_until_http_date(value: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def already_done_matcher(pattern: str) -> AlreadyDone | None:
    """PASSKIT_ALREADY_DONE_PATTERN as a matcher: a refusal (4xx other than 401, 404 or 429)
    whose body matches counts as a repeat without reading the pass back. Empty: no text
    counts; the pass is read back instead (`PassKitClient.redeem_coupon`)."""
    if not pattern:
        return None
    compiled = re.compile(pattern, re.IGNORECASE)

    def matches(status: int, body: str) -> bool:
        return _is_refusal(status) and bool(compiled.search(body))

    return matches


def _is_refusal(status: int) -> bool:
    """A 4xx that may answer a repeat: grpc-gateway writes FAILED_PRECONDITION (and
    INVALID_ARGUMENT, OUT_OF_RANGE) as 400 and ALREADY_EXISTS as 409."""
    return 400 <= status < 500 and status not in (401, 403, 404, 408, 429)


def warn_if_mock(settings: Settings, logger: structlog.typing.FilteringBoundLogger = log) -> bool:
    """Say loudly at startup that nothing will reach PassKit; return whether that is so."""
    if not settings.passkit_mock_mode:
        return False
    logger.warning(
        "passkit_mock_mode",
        api_key_set=settings.passkit_api_key is not None,
        api_secret_set=settings.passkit_api_secret is not None,
        detail="PASSKIT_API_KEY or PASSKIT_API_SECRET is unset: nothing is sent to PassKit; "
        "an in-process PassKit answers each call after PASSKIT_MOCK_LATENCY_MS, paced by "
        "PASSKIT_RATE_LIMIT like real calls (passkit_mock_traffic each second)",
    )
    return True


# --- auth --------------------------------------------------------------------------------------


class _TokenSigner:
    """Signs the PassKit JWT and reuses it for half its lifetime.

    Signing costs the event loop more than sending a small request, and half the lifetime
    leaves room for clock skew and slow requests. The token never leaves this object except
    in the Authorization header.
    """

    def __init__(self, settings: Settings, wall_clock: Clock) -> None:
        assert settings.passkit_api_key is not None
        assert settings.passkit_api_secret is not None
        self._key = settings.passkit_api_key.get_secret_value()
        self._secret = settings.passkit_api_secret.get_secret_value()
        self._lifetime = settings.passkit_jwt_lifetime_seconds
        self._prefix = "Bearer " if settings.passkit_auth_scheme == "bearer" else ""
        self._wall_clock = wall_clock
        self._header: str | None = None
        self._renew_at = -math.inf

    def header(self) -> str:
        now = self._wall_clock()
        if self._header is None or now >= self._renew_at:
            self._header = self._prefix + self._sign(now)
            self._renew_at = now + self._lifetime / 2
        return self._header

    def invalidate(self) -> None:
        self._header = None

    def _sign(self, now: float) -> str:
        issued = int(now)
        claims = {
            "uid": self._key,
            "iat": issued - JWT_BACKDATE_SECONDS,
            "exp": issued + self._lifetime,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")


class _NonceCounter:
    """Strictly increasing per client; started from the wall clock in ms so a restarted
    daemon does not replay the previous run's suffixes."""

    def __init__(self, start: int) -> None:
        self._next = start

    def take(self) -> int:
        nonce = self._next
        self._next += 1
        return nonce


# --- transport ---------------------------------------------------------------------------------


def _status_error(operation: str, reply: Reply, text: str, now: float) -> PassKitError:
    message = f"PassKit {operation} answered {reply.status}: {text}"
    if reply.status == 401:
        return Unauthorized(message)
    if is_transient_status(reply.status):
        retry_after = parse_retry_after(reply.retry_after, now)
        return TransientPassKitError(message, status=reply.status, retry_after=retry_after)
    return PermanentPassKitError(message, status=reply.status)


def _error_text(body: bytes, scrubber: SecretScrubber) -> str:
    """PassKit's error body as stored in last_error / error: cut, and scrubbed of secrets
    (an error body may echo a token or a key)."""
    text = body[: routes.ERROR_TEXT_CHARS * 4].decode("utf-8", errors="replace")[
        : routes.ERROR_TEXT_CHARS
    ]
    return scrubber.scrub(text)


# --- the client --------------------------------------------------------------------------------


class PassKitClient:
    """Async context manager owning its transport (unless given one): requests to PassKit
    over aiohttp (`HttpTransport`, on the given session if any), or in mock mode (no API key
    or secret) answered in-process by `MockPassKit`, after the same throttle, budget, reads
    and size checks, so mock mode paces like PassKit and catches what it would refuse.
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics | None = None,
        session: aiohttp.ClientSession | None = None,
        *,
        transport: Transport | None = None,
        fence: Callable[[], bool] | None = None,
        on_read: Callable[[str, JsonObject], None] | None = None,
        throttle: Throttle | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        # What PassKit answers is stored (last_error, error): never with our own secrets in it.
        self._scrubber = SecretScrubber(settings.secrets())
        self._metrics = metrics
        self._throttle = throttle or Throttle.from_settings(settings, clock=clock, sleep=sleep)
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng if rng is not None else random.Random()
        self._mock_mode = settings.passkit_mock_mode
        self._signer = None if self._mock_mode else _TokenSigner(settings, wall_clock)
        self._owns_transport = transport is None
        self._transport = transport or self._new_transport(session, sleep)
        self._entered = False
        self._nonces = _NonceCounter(int(wall_clock() * 1000))
        self._already_done = already_done_matcher(settings.passkit_already_done_pattern)
        self.health = PassKitHealth(metrics, clock=clock)
        # True while this daemon may not start a call (heartbeat lost, see
        # daemon.store.instances); checked before a request and again right before it leaves.
        self.fence = fence
        # Told of each pass read on the way to a write (protocol, record): what it says of the
        # pass's wallet state is PassKit's (daemon.wallet.seen).
        self._on_read = on_read

    def _new_transport(self, session: aiohttp.ClientSession | None, sleep: Sleep) -> Transport:
        if not self._mock_mode:
            return HttpTransport(self._settings, self._scrubber, session)
        return MockPassKit(
            self._settings.passkit_mock_latency_ms / 1000,
            message_field=self._settings.passkit_message_field,
            sleep=sleep,
        )

    @property
    def mock_mode(self) -> bool:
        return self._mock_mode

    async def __aenter__(self) -> PassKitClient:
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self._entered = False
        if self._owns_transport:
            await self._transport.close()

    # --- public calls --------------------------------------------------------------------------

    async def set_points(
        self, passkit_id: str, points: int, *, tier_points: int | None = None
    ) -> None:
        """Set the member's absolute balance (idempotent, unlike earn/burn), and its tier
        points with it where the program shows loyaltyd's (None: PassKit's stay as they are).

        SetPointsRequest (member.pb.go) is addressed by `id`; its optional fields are the
        balances and the reset flags, nothing that moves a tier (unlike earn/burn's `tierId`).
        """
        body = routes.set_points_body(passkit_id, points, tier_points)
        reply = await self._call(routes.SET_POINTS, (), body, subject=passkit_id)
        if reply:
            shown = routes.balances_shown(reply)
            self._check_balance(passkit_id, "points", points, shown)
            if tier_points is not None:
                self._check_balance(passkit_id, "tierPoints", tier_points, shown)

    def _check_balance(
        self, passkit_id: str, field: str, value: int, balances: Mapping[str, float]
    ) -> None:
        """MemberPoints answers the balances PassKit now holds: one that is not what was set
        (as a float32 can hold it) is drift, said once here and repaired by the next sweep."""
        shown = balances.get(field)
        if shown is None or as_float32(float(value)) == as_float32(shown):
            return
        log.warning(
            "passkit_balance_differs", passkit_id=passkit_id, field=field, set=value, shows=shown
        )
        if self._metrics is not None:
            kind = "points_set" if field == "points" else "tier_points_set"
            self._metrics.wallet_drift.labels(kind, "seen").inc()

    async def write_message(self, protocol: str, passkit_id: str, text: str) -> str:
        """Write `text` into the pass's message field alone (one changed field: one alert).

        Returns the exact value written: `text` plus an invisible suffix that differs from
        the previous write, because Apple alerts only when the value changes.
        """
        endpoints = routes.message_routes(protocol)
        field = self._settings.passkit_message_field
        current = await self._current_pass(endpoints.read, passkit_id)
        if current is not None:
            self._seen(protocol, current)
        metadata = routes.metadata_of(current)
        value = self._fresh_value(text, metadata.get(field))
        metadata[field] = value
        body = routes.message_update_body(protocol, passkit_id, metadata, current)
        await self._call(endpoints.write, (), body, subject=passkit_id)
        return value

    async def redeem_coupon(self, passkit_id: str) -> None:
        """Redeem a single-use coupon. A refusal counts as done only for a true repeat: the
        coupon, read back, is REDEEMED (coupon.pb.go CouponStatus). An expired, voided or
        out-of-window coupon is refused with PassKit's own message."""
        try:
            await self._call(
                routes.REDEEM_COUPON,
                (),
                routes.redeem_coupon_body(passkit_id),
                subject=passkit_id,
                already_done=self._already_done,
            )
        except PermanentPassKitError as exc:
            if not _is_refusal(exc.status or 0):
                raise
            if not await self._is_redeemed(routes.GET_COUPON, passkit_id, exc):
                raise
            self._repeat(routes.REDEEM_COUPON, passkit_id)

    async def check_in_ticket(self, passkit_id: str) -> None:
        """Check a ticket in by validating it; only a ticket already REDEEMED (ticket.pb.go
        TicketStatus) counts as checked in when PassKit says it is not valid.

        `maxNumberOfValidations` (PASSKIT_TICKET_MAX_VALIDATIONS, default 1) makes PassKit
        redeem the ticket once that many validations are reached, so a check-in also turns
        the pass to its redeemed design and a repeated delivery is recognisable as such.
        0 is not sent (proto3 drops it) and leaves the count to the ticket's own settings.
        A repeat may come back as a refusal (400) or as `{"valid": false, "ticket": …}`
        (ValidateTicketResponse); both are judged by the ticket's status.
        """
        max_validations = self._settings.passkit_ticket_max_validations
        body = routes.validate_ticket_body(passkit_id, max_validations)
        endpoint = routes.VALIDATE_TICKET
        try:
            reply = await self._call(
                endpoint, (), body, subject=passkit_id, already_done=self._already_done
            )
        except PermanentPassKitError as exc:
            if not _is_refusal(exc.status or 0):
                raise
            if not await self._is_redeemed(routes.GET_TICKET, passkit_id, exc):
                raise
            self._repeat(endpoint, passkit_id)
            return
        status = routes.ticket_refused_as(reply)
        if status is None:
            return
        if status == "REDEEMED":
            self._repeat(endpoint, passkit_id)
            return
        raise PermanentPassKitError(
            f"PassKit {endpoint.operation}: ticket not valid (status {status or 'unknown'})"
        )

    async def create_message(self, title: str, text: str) -> str:
        """Create a Messages API message (message.pb.go Message: `title` and
        `plainTextContent` are validateCreate:"required"); return its id."""
        body = routes.create_message_body(title, text)
        reply = await self._call(routes.CREATE_MESSAGE, (), body, subject="message")
        return routes.created_id(reply)

    async def send_message(self, message_id: str, pass_ids: Sequence[str]) -> int:
        """Send a created message to `pass_ids` (SendMessageRequest's `passIds` target);
        return PassKit's `count` (SendMessageResponse)."""
        if not pass_ids:
            return 0
        body = routes.send_message_body(message_id, pass_ids)
        reply = await self._call(routes.SEND_MESSAGE, (), body, subject=message_id)
        return routes.sent_count(reply)

    async def get(self, endpoint: Endpoint, *path: str) -> JsonObject:
        """One GET, answered as a JSON object."""
        reply = await self._call(endpoint, path, None, subject="/".join(path))
        return routes.json_object(endpoint.operation, reply) if reply else {}

    async def send(self, endpoint: Endpoint, body: JsonObject, *, subject: str) -> JsonObject:
        """`body` to a route without path parameters, with the route's own method."""
        reply = await self._call(endpoint, (), body, subject=subject)
        return routes.json_object(endpoint.operation, reply) if reply else {}

    async def read_pass(self, protocol: str, passkit_id: str) -> JsonObject | None:
        """The pass as PassKit holds it; None when PassKit answers 404 (no such pass)."""
        try:
            return await self.get(routes.READ_PASS[protocol], passkit_id)
        except PermanentPassKitError as exc:
            if exc.status == 404:
                return None
            raise

    async def count(self, endpoint: Endpoint, path: tuple[str, ...], body: JsonObject) -> int:
        """A count route's `total` (io.Count; a zero may be left out of the JSON)."""
        reply = await self._call(endpoint, path, body, subject="/".join(path) or "count")
        return routes.counted_total(endpoint, reply)

    async def stream(
        self, endpoint: Endpoint, path: tuple[str, ...], body: JsonObject
    ) -> AsyncIterator[JsonObject]:
        """The records of a list route, one at a time as they arrive: one request, one rate
        token, and one in-flight slot held (as background work, behind syncs) until the last
        line. A stream that breaks off, or ends with an error line, raises: what came before
        is no proof that nothing else exists. Mock mode streams nothing."""
        self._check_fence(endpoint)
        request = self._request(endpoint, path, encode_body(body))
        seen = 0
        with bulk():
            async with self._throttle as waited:
                self._observe_wait(waited)
                self._check_fence(endpoint)
                async for record in self._stream_records(request, "/".join(path)):
                    seen += 1
                    yield record
        self._count(endpoint, "ok")
        log.info("passkit_stream_read", operation=endpoint.operation, records=seen)

    async def _stream_records(self, request: Request, subject: str) -> AsyncIterator[JsonObject]:
        endpoint = request.endpoint
        idle = self._settings.passkit_timeout_seconds
        seen = 0
        try:
            streamed = self._transport.stream(self._signed(request), idle_seconds=idle)
            async with streamed as response:
                if response.status != 200:
                    reply = Reply(response.status, await response.read(), None)
                    self._interpret(endpoint, subject, reply, None)
                self.health.answered()
                async for line in response.lines():
                    record = routes.streamed_record(endpoint.operation, line, seen)
                    if record is not None:
                        seen += 1
                        yield record
        except TransportFailed as exc:
            self._count(endpoint, "transient")
            error = TransientPassKitError(
                f"PassKit {endpoint.operation} stream broke off after {seen} records: "
                f"{_cause_name(exc)}"
            )
            self.health.failed(endpoint.operation, str(error))
            raise error from exc
        except TransientPassKitError as exc:
            self._note_failure(endpoint, exc)
            raise

    async def probe(self, program_id: str | None = None) -> bool:
        """One cheap read to learn whether PassKit answers at all (while it seems down): any
        answer that is not a transient failure, a 404 included, means it is back."""
        try:
            await self._call(
                routes.GET_PROGRAM,
                (program_id or "loyaltyd-probe",),
                None,
                subject="probe",
                log_refusal=False,
            )
        except (TransientPassKitError, Fenced):
            return False  # still down, or this daemon may not call anyone right now
        except PermanentPassKitError:
            return True
        return True

    # --- message helpers -----------------------------------------------------------------------

    async def _current_pass(self, read: Endpoint, passkit_id: str) -> JsonObject | None:
        """The pass as PassKit holds it, in read_modify_write mode (the default: whether
        PassKit merges a partial metaData map is undocumented, and coupons and tickets have no
        `operation` field to ask for it); None in merge mode, and in mock mode, where there
        is no pass to read."""
        if not self._settings.reads_pass_before_message:
            return None
        return await self.get(read, passkit_id)

    def _fresh_value(self, text: str, current: object) -> str:
        value = with_invisible_nonce(text, self._nonces.take())
        if value == current:
            value = with_invisible_nonce(text, self._nonces.take())
        return value

    async def _is_redeemed(
        self, read: Endpoint, passkit_id: str, refusal: PermanentPassKitError
    ) -> bool:
        """Whether the refused pass is REDEEMED at PassKit. A read that fails for good leaves
        the refusal standing; a transient one is the queue's to retry."""
        try:
            held = await self.get(read, passkit_id)
        except PermanentPassKitError as exc:
            raise refusal from exc
        self._seen("COUPON" if read == routes.GET_COUPON else "EVENT_TICKET", held)
        return routes.is_redeemed(held)

    def _seen(self, protocol: str, held: JsonObject) -> None:
        if self._on_read is not None:
            self._on_read(protocol, held)

    def _repeat(self, endpoint: Endpoint, passkit_id: str) -> None:
        log.info("passkit_already_done", operation=endpoint.operation, passkit_id=passkit_id)

    # --- one request, with retries -------------------------------------------------------------

    async def _call(
        self,
        endpoint: Endpoint,
        path: tuple[str, ...],
        body: JsonObject | None,
        *,
        subject: str,
        already_done: AlreadyDone | None = None,
        log_refusal: bool = True,
    ) -> bytes:
        """Send one logical request; return the response body of the successful attempt.
        `subject` (the pass or message id) names it in logs."""
        self._check_fence(endpoint)
        data = encode_body(body) if body is not None else None
        quick_retried, resigned = False, False
        while True:
            try:
                reply = await self._send(self._request(endpoint, path, data))
                if reply.status == 401 and not resigned:
                    resigned = True
                    self._resign(endpoint, subject)
                    continue
                body_out = self._interpret(endpoint, subject, reply, already_done)
            except TransientPassKitError as exc:
                self._note_failure(endpoint, exc)
                if quick_retried or not _quick_retry_allowed(exc):
                    raise
                quick_retried = True
                await self._sleep(self._quick_retry_delay(endpoint, subject, exc))
                continue
            except PermanentPassKitError as exc:
                self.health.answered()
                if not log_refusal:
                    raise
                log.warning(
                    "passkit_request_refused",
                    operation=endpoint.operation,
                    passkit_id=subject,
                    status=exc.status,
                    error=str(exc),
                )
                raise
            self.health.answered()
            return body_out

    def _note_failure(self, endpoint: Endpoint, exc: TransientPassKitError) -> None:
        """A transient failure counts towards "PassKit is down", except a 429: PassKit
        answering "too many requests" is answering (its Retry-After is honoured per row)."""
        if exc.status == 429:
            return
        self.health.failed(endpoint.operation, str(exc))

    def _quick_retry_delay(
        self, endpoint: Endpoint, passkit_id: str, exc: TransientPassKitError
    ) -> float:
        delay = backoff(1, self._rng, base=_QUICK_RETRY_BASE_SECONDS, cap=QUICK_RETRY_MAX_SECONDS)
        delay = max(delay, exc.retry_after or 0.0)
        self._count_retry(endpoint, _retry_reason(exc))
        log.info(
            "passkit_request_retry",
            operation=endpoint.operation,
            passkit_id=passkit_id,
            status=exc.status,
            delay=round(delay, 3),
        )
        return delay

    def _request(self, endpoint: Endpoint, path: tuple[str, ...], data: bytes | None) -> Request:
        if not self._entered:
            raise RuntimeError("PassKitClient used outside `async with` (its transport is shut)")
        url = endpoint.url(self._settings.passkit_base_url, *path)
        return Request(endpoint, path, url, data, {})

    def _signed(self, request: Request) -> Request:
        """Signed as late as possible (a token expires); mock mode signs nothing."""
        if self._signer is None:
            return request
        return replace(request, headers={"Authorization": self._signer.header()})

    async def _send(self, request: Request) -> Reply:
        """One attempt: a slot and a token, signed, carried by the transport."""
        endpoint = request.endpoint
        async with self._throttle as waited:
            self._observe_wait(waited)
            self._check_fence(endpoint)  # the wait for a slot and a token may have been long
            started = self._clock()
            try:
                return await self._transport.send(self._signed(request))
            except PassKitError as exc:
                self._count(endpoint, _outcome_of(exc))
                raise
            finally:
                self._observe_latency(endpoint, self._clock() - started)

    def _interpret(
        self,
        endpoint: Endpoint,
        passkit_id: str,
        reply: Reply,
        already_done: AlreadyDone | None,
    ) -> bytes:
        if 200 <= reply.status < 300:
            self._count(endpoint, "ok")
            return reply.body
        text = _error_text(reply.body, self._scrubber)
        if already_done is not None and already_done(reply.status, text):
            self._count(endpoint, "ok")
            log.info(
                "passkit_already_done",
                operation=endpoint.operation,
                passkit_id=passkit_id,
                status=reply.status,
            )
            return b""
        error = _status_error(endpoint.operation, reply, text, self._wall_clock())
        self._count(
            endpoint, "transient" if isinstance(error, TransientPassKitError) else "permanent"
        )
        raise error

    def _check_fence(self, endpoint: Endpoint) -> None:
        if self.fence is not None and self.fence():
            raise Fenced(f"{endpoint.operation} not sent: this daemon lost its heartbeat")

    def _resign(self, endpoint: Endpoint, passkit_id: str) -> None:
        assert self._signer is not None
        self._signer.invalidate()
        self._count(endpoint, "permanent")
        self._count_retry(endpoint, "unauthorized")
        log.warning(
            "passkit_unauthorized_resigning", operation=endpoint.operation, passkit_id=passkit_id
        )

    # --- metrics -------------------------------------------------------------------------------

    def _count(self, endpoint: Endpoint, outcome: str) -> None:
        if outcome == "ok" and self._mock_mode:
            outcome = "mock"  # answered, by nobody: never counted as PassKit's "ok"
        if self._metrics is not None:
            self._metrics.passkit_requests.labels(endpoint.operation, outcome).inc()

    def _count_retry(self, endpoint: Endpoint, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.passkit_retries.labels(endpoint.operation, reason).inc()

    def _observe_latency(self, endpoint: Endpoint, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.passkit_latency.labels(endpoint.operation).observe(seconds)

    def _observe_wait(self, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.ratelimit_wait.observe(seconds)


def _quick_retry_allowed(exc: TransientPassKitError) -> bool:
    """A longer Retry-After is honoured by the queue, with the worker's slot free meanwhile."""
    return exc.retry_after is None or exc.retry_after <= QUICK_RETRY_MAX_SECONDS


def _retry_reason(exc: PassKitError) -> str:
    if exc.status is not None:
        return str(exc.status)
    return "timeout" if isinstance(exc.__cause__, TimeoutError) else "connection"


def _outcome_of(exc: PassKitError) -> str:
    return "transient" if isinstance(exc, TransientPassKitError) else "permanent"


def _cause_name(exc: BaseException) -> str:
    cause = exc.__cause__
    return type(cause).__name__ if cause is not None else type(exc).__name__
