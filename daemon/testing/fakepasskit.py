"""A fake PassKit REST server for tests, benchmarks and the demo, written from PassKit's
published definitions (PassKit/passkit-golang-grpc-sdk v1.1.123; passkit-api.md beside the
spec), so a client that strays from them fails here first.

- Routes: the shared table in `daemon.passkit.routes`.
- Requests: the proto JSON names. A field a route's message does not have is ignored, as
  grpc-gateway does (DiscardUnknown), and counted in `ignored_fields`: a test asserts it stays
  empty. Updates apply every non-empty field ("PATCH will ignore missing or falsey values"),
  so a stray `tierId` moves the member, as it would at PassKit.
- Addressing: `id`, or `externalId` with `programId` (members) or `campaignId` (coupons);
  tickets by `ticketId` or `ticketNumber` {productionId, ticketNumber}. A pass PassKit has not
  issued answers 404: issue it with `add_pass`, or give `issued` (a predicate on ids) for
  tests and benches that create passes in bulk.
- Answers: the published message shapes (MemberPoints, Member, Coupon, Ticket,
  ValidateTicketResponse, io.Id, SendMessageResponse), with zero values emitted as
  grpc-gateway's default marshaller does; errors as grpc-gateway v2 writes them,
  `{"code", "message", "details"}` with the gRPC code's HTTP status.
- Auth: the JWT as PassKit documents it (HS256 with the secret, `uid` = the API key, `iat` not
  in the future, not expired) in `Authorization` without a prefix. A `Bearer ` prefix works
  but is undocumented for JWTs: it is counted in `undocumented`.
- metaData: `merge_metadata` switches between merging a partial map and replacing the whole
  map, since PassKit documents neither.

Knobs are plain attributes, changeable while it runs: `latency`, `faults`, `merge_metadata`,
`repeat_validation`, plus `force_status()` for one pass and `fail_next()` for a scripted
sequence. Every request is recorded in memory (`requests`, `count()`); recording is an append
and a counter bump, so a benchmark can push 100k+ requests through it.

State changes apply when a request arrives, before the simulated latency, as on a server
that answers slowly; an injected fault (503, 429, 500, timeout) changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import jwt
from aiohttp import web

from daemon.passkit import routes

ROUTE_SET_POINTS: Final = routes.SET_POINTS.route
ROUTE_UPDATE_MEMBER: Final = routes.UPDATE_MEMBER.route
ROUTE_GET_MEMBER: Final = routes.GET_MEMBER.route
ROUTE_UPDATE_COUPON: Final = routes.UPDATE_COUPON.route
ROUTE_REDEEM_COUPON: Final = routes.REDEEM_COUPON.route
ROUTE_GET_COUPON: Final = routes.GET_COUPON.route
ROUTE_UPDATE_TICKET: Final = routes.UPDATE_TICKET.route
ROUTE_VALIDATE_TICKET: Final = routes.VALIDATE_TICKET.route
ROUTE_GET_TICKET: Final = routes.GET_TICKET.route
ROUTE_CREATE_MESSAGE: Final = routes.CREATE_MESSAGE.route
ROUTE_GET_MESSAGE: Final = routes.GET_MESSAGE.route
ROUTE_SEND_MESSAGE: Final = routes.SEND_MESSAGE.route
ROUTE_GET_PROGRAM: Final = routes.GET_PROGRAM.route
ROUTE_GET_TIER: Final = routes.GET_TIER.route
ROUTE_GET_TEMPLATE: Final = routes.GET_TEMPLATE.route

# p99 of a standard normal: turns "median and p99" into a lognormal's sigma.
_Z99 = 2.3263478740408408
# Status recorded for a request the fake never answered (an injected timeout).
NO_ANSWER: Final = 0
# A token issued this far in the future is refused (clock skew PassKit would tolerate).
IAT_LEEWAY_SECONDS: Final = 60

Timeout = Literal["timeout"]
Outcome = int | Timeout
JsonObject = dict[str, Any]
Protocol = Literal["MEMBERSHIP", "COUPON", "EVENT_TICKET"]

# The JSON names of each request message (member.pb.go, coupon.pb.go, ticket.pb.go,
# message.pb.go): anything else is ignored by grpc-gateway and counted here.
_MEMBER_FIELDS: Final = frozenset(
    [
        "id",
        "externalId",
        "groupingIdentifier",
        "tierId",
        "programId",
        "person",
        "metaData",
        "optOut",
        "points",
        "secondaryPoints",
        "tierPoints",
        "expiryDate",
        "status",
        "passOverrides",
        "notes",
        "currentTierAwarded",
        "currentTierExpires",
        "profileImage",
        "operation",
    ]
)
_SET_POINTS_FIELDS: Final = frozenset(
    [
        "id",
        "externalId",
        "programId",
        "points",
        "secondaryPoints",
        "tierPoints",
        "resetPoints",
        "resetSecondaryPoints",
        "resetTierPoints",
    ]
)
_COUPON_FIELDS: Final = frozenset(
    [
        "id",
        "externalId",
        "offerId",
        "campaignId",
        "person",
        "metaData",
        "sku",
        "optOut",
        "status",
        "expiryDate",
        "redemptionDetails",
        "passOverrides",
    ]
)
_TICKET_FIELDS: Final = frozenset(
    [
        "id",
        "ticketNumber",
        "event",
        "ticketType",
        "orderNumber",
        "groupingId",
        "barcodeContents",
        "seatInfo",
        "faceValue",
        "person",
        "metaData",
        "optOut",
        "status",
        "expiryDate",
        "redemptionDetails",
        "validateDetails",
        "passOverrides",
    ]
)
_VALIDATE_FIELDS: Final = frozenset({"maxNumberOfValidations", "ticket", "validateDetails"})
_MESSAGE_FIELDS: Final = frozenset(
    [
        "id",
        "title",
        "localizedTitle",
        "plainTextContent",
        "localizedPlainTextContent",
        "richTextContent",
        "localizedRichTextContent",
        "urls",
        "images",
        "priority",
        "displayFrom",
        "displayUntil",
    ]
)
_SEND_FIELDS: Final = frozenset({"messageId", "passIds", "protocol"})
_KNOWN_FIELDS: Final[dict[str, frozenset[str]]] = {
    ROUTE_SET_POINTS: _SET_POINTS_FIELDS,
    ROUTE_UPDATE_MEMBER: _MEMBER_FIELDS,
    ROUTE_UPDATE_COUPON: _COUPON_FIELDS,
    ROUTE_REDEEM_COUPON: _COUPON_FIELDS,
    ROUTE_UPDATE_TICKET: _TICKET_FIELDS,
    ROUTE_VALIDATE_TICKET: _VALIDATE_FIELDS,
    ROUTE_CREATE_MESSAGE: _MESSAGE_FIELDS,
    ROUTE_SEND_MESSAGE: _SEND_FIELDS,
}

# gRPC codes and the HTTP status grpc-gateway v2 gives each (runtime.HTTPStatusFromCode).
INVALID_ARGUMENT: Final = 3
NOT_FOUND: Final = 5
RESOURCE_EXHAUSTED: Final = 8
FAILED_PRECONDITION: Final = 9
INTERNAL: Final = 13
UNAVAILABLE: Final = 14
UNAUTHENTICATED: Final = 16
_HTTP_OF_CODE: Final = {
    INVALID_ARGUMENT: 400,
    NOT_FOUND: 404,
    RESOURCE_EXHAUSTED: 429,
    FAILED_PRECONDITION: 400,
    INTERNAL: 500,
    UNAVAILABLE: 503,
    UNAUTHENTICATED: 401,
}
_CODE_OF_HTTP: Final = {
    400: FAILED_PRECONDITION,
    401: UNAUTHENTICATED,
    403: 7,
    404: NOT_FOUND,
    409: 6,
    429: RESOURCE_EXHAUSTED,
    500: INTERNAL,
    501: 12,
    503: UNAVAILABLE,
    504: 4,
}


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """Lognormal answer delay: `median_ms` with a tail reaching `p99_ms` (seedable via the
    fake's `seed`). p99_ms <= median_ms means a constant delay; median 0 means instant."""

    median_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 30_000.0

    @property
    def sigma(self) -> float:
        if self.median_ms <= 0 or self.p99_ms <= self.median_ms:
            return 0.0
        return math.log(self.p99_ms / self.median_ms) / _Z99

    @property
    def mean_ms(self) -> float:
        return min(self.median_ms * math.exp(self.sigma**2 / 2), self.max_ms)

    def sample(self, rng: random.Random) -> float:
        """One delay, in seconds."""
        if self.median_ms <= 0:
            return 0.0
        sigma = self.sigma
        ms = rng.lognormvariate(math.log(self.median_ms), sigma) if sigma else self.median_ms
        return min(ms, self.max_ms) / 1000.0


@dataclass(slots=True)
class Faults:
    """Probabilities (0..1) of injected failures per request; mutable while running."""

    p503: float = 0.0
    p429: float = 0.0
    p500: float = 0.0
    p_timeout: float = 0.0
    retry_after: str | None = "1"  # the Retry-After header sent with a 429

    @property
    def any(self) -> bool:
        return (self.p503 + self.p429 + self.p500 + self.p_timeout) > 0

    def draw(self, rng: random.Random) -> Outcome | None:
        roll = rng.random()
        candidates: tuple[tuple[Outcome, float], ...] = (
            ("timeout", self.p_timeout),
            (503, self.p503),
            (429, self.p429),
            (500, self.p500),
        )
        for outcome, probability in candidates:
            if roll < probability:
                return outcome
            roll -= probability
        return None


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    route: str
    pass_id: str | None
    body: Any
    at: float  # event-loop time of arrival
    status: int  # NO_ANSWER for an injected timeout
    latency: float  # seconds the fake waited before answering


@dataclass(slots=True)
class PassState:
    """One pass as PassKit holds it. `class_id` is the member's programId, the coupon's
    campaignId or the ticket's productionId."""

    protocol: str = "MEMBERSHIP"
    class_id: str = ""
    tier_id: str = ""
    external_id: str = ""
    ticket_number: str = ""
    points: float = 0
    metadata: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)  # values written to the message field
    bulk_messages: list[str] = field(default_factory=list)  # Messages API ids sent to it
    redeemed: bool = False
    validations: int = 0
    expired: bool = False
    voided: bool = False


@dataclass(slots=True)
class MessageState:
    title: str
    text: str
    sent_to: int = 0


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    payload: JsonObject
    headers: dict[str, str] | None = None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> _Answer:
    """An error as grpc-gateway v2 writes it (runtime.DefaultHTTPErrorHandler)."""
    code = _CODE_OF_HTTP.get(status, 2)
    return _Answer(status, {"code": code, "message": message, "details": []}, headers)


class _Reject(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        payload = {"code": code, "message": message, "details": []}
        self.answer = _Answer(_HTTP_OF_CODE.get(code, 500), payload)


class _Forced(Exception):
    def __init__(self, answer: _Answer) -> None:
        super().__init__(answer.payload.get("message"))
        self.answer = answer


_FAULT_ANSWERS: Final[dict[int, str]] = {
    503: "Server is unavailable. Back off for 250ms and repeat request until successful.",
    429: "rate limit exceeded",
    500: "unexpected error",
}
_NOT_AUTHORIZED = _error(401, "unauthorized")

RepeatValidation = Literal["invalid", "refused"]


class FakePassKit:
    """`async with FakePassKit(key, secret) as fake:` or `start()`/`stop()`; `fake.url`."""

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        latency: LatencyModel | None = None,
        faults: Faults | None = None,
        seed: int = 0,
        issued: Callable[[str], bool] | None = None,
        message_field: str = "loyaltydMessage",
        merge_metadata: bool = True,
        repeat_validation: RepeatValidation = "invalid",
        record_bodies: bool = True,
        hang_seconds: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.latency = latency or LatencyModel()
        self.faults = faults or Faults()
        # Ids PassKit has issued besides those added with add_pass (None: only those).
        self.issued = issued
        self.message_field = message_field
        # Whether PassKit merges a partial metaData map is undocumented: both are simulated.
        self.merge_metadata = merge_metadata
        # How a ticket already redeemed answers validation: 200 {"valid": false, …} or 400.
        self.repeat_validation: RepeatValidation = repeat_validation
        self.record_bodies = record_bodies
        self.hang_seconds = hang_seconds
        self.requests: list[RecordedRequest] = []
        self.tokens_seen: set[str] = set()
        # Request fields PassKit's messages do not have (ignored), by "route field".
        self.ignored_fields: Counter[str] = Counter()
        # Things that work here but PassKit does not document ("Authorization: Bearer").
        self.undocumented: Counter[str] = Counter()
        self._key = api_key
        self._secret = api_secret
        self._wall_clock = wall_clock
        self._rng = random.Random(seed)
        self._passes: dict[str, PassState] = {}
        self._by_external: dict[tuple[str, str, str], str] = {}
        self._by_ticket_number: dict[tuple[str, str], str] = {}
        self._messages: dict[str, MessageState] = {}
        self._message_ids = itertools.count(1)
        self._programs: dict[str, JsonObject] = {}
        self._tiers: dict[tuple[str, str], JsonObject] = {}
        self._templates: dict[str, JsonObject] = {}
        self._forced: dict[str, _Answer] = {}
        self._script: deque[Outcome] = deque()
        self._counts: Counter[str] = Counter()
        self._verified: dict[str, int] = {}  # token -> exp, so each token is decoded once
        self._latency_sum = 0.0
        self._answered = 0
        self._stopping = asyncio.Event()
        self._runner: web.ServerRunner | None = None
        self.url = ""
        self._handlers: dict[str, Callable[[tuple[str, ...], Any], _Answer]] = {
            ROUTE_SET_POINTS: self._set_points,
            ROUTE_UPDATE_MEMBER: self._update_member,
            ROUTE_UPDATE_COUPON: self._update_coupon,
            ROUTE_UPDATE_TICKET: self._update_ticket,
            ROUTE_REDEEM_COUPON: self._redeem_coupon,
            ROUTE_VALIDATE_TICKET: self._validate_ticket,
            ROUTE_GET_MEMBER: self._get_member,
            ROUTE_GET_COUPON: self._get_coupon,
            ROUTE_GET_TICKET: self._get_ticket,
            ROUTE_CREATE_MESSAGE: self._create_message,
            ROUTE_GET_MESSAGE: self._get_message,
            ROUTE_SEND_MESSAGE: self._send_message,
            ROUTE_GET_PROGRAM: self._get_program,
            ROUTE_GET_TIER: self._get_tier,
            ROUTE_GET_TEMPLATE: self._get_template,
        }

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on `host:port` (0 = any free port); return the base URL."""
        self._stopping = asyncio.Event()
        # Cancelling a handler whose client went away ends injected hangs with the client.
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakePassKit:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- knobs ---------------------------------------------------------------------------------

    def force_status(
        self,
        pass_id: str,
        status: int,
        message: str = "forced",
        *,
        retry_after: str | None = None,
    ) -> None:
        """Answer every request about `pass_id` with `status` (and a Retry-After header, if
        given) until `clear_forced()`."""
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        self._forced[pass_id] = _error(status, message, headers)

    def clear_forced(self, pass_id: str | None = None) -> None:
        if pass_id is None:
            self._forced.clear()
        else:
            self._forced.pop(pass_id, None)

    def fail_next(self, *outcomes: Outcome) -> None:
        """Answer the next requests (any route) with these statuses or "timeout", in order."""
        self._script.extend(outcomes)

    def add_pass(
        self,
        pass_id: str,
        *,
        protocol: Protocol = "MEMBERSHIP",
        class_id: str = "",
        tier_id: str = "",
        external_id: str = "",
        ticket_number: str = "",
        points: float = 0,
        metadata: dict[str, str] | None = None,
        expired: bool = False,
        voided: bool = False,
        redeemed: bool = False,
    ) -> PassState:
        """Issue a pass, as PassKit would have before loyaltyd hears of it."""
        state = PassState(
            protocol=protocol,
            class_id=class_id,
            tier_id=tier_id,
            external_id=external_id,
            ticket_number=ticket_number,
            points=points,
            metadata=dict(metadata or {}),
            expired=expired,
            voided=voided,
            redeemed=redeemed,
        )
        self._passes[pass_id] = state
        if external_id:
            self._by_external[(protocol, class_id, external_id)] = pass_id
        if ticket_number:
            self._by_ticket_number[(class_id, ticket_number)] = pass_id
        return state

    def add_program(self, program_id: str, *, name: str = "Program") -> None:
        self._programs[program_id] = {"id": program_id, "name": name}

    def add_tier(
        self, program_id: str, tier_id: str, *, template_id: str = "", name: str = "Tier"
    ) -> None:
        self._tiers[(program_id, tier_id)] = {
            "id": tier_id,
            "programId": program_id,
            "passTemplateId": template_id,
            "name": name,
        }

    def add_template(self, template_id: str, fields: dict[str, str]) -> None:
        """A pass template whose data fields are `uniqueName -> changeMessage`."""
        self._templates[template_id] = {
            "id": template_id,
            "data": {
                "dataFields": [
                    {
                        "uniqueName": name,
                        "appleWalletFieldRenderOptions": {"changeMessage": change},
                    }
                    for name, change in fields.items()
                ]
            },
        }

    def reset_requests(self) -> None:
        self.requests.clear()
        self._counts.clear()
        self._latency_sum, self._answered = 0.0, 0

    # --- accessors -----------------------------------------------------------------------------

    def count(self, route: str | None = None) -> int:
        return self._counts.total() if route is None else self._counts[route]

    def state_of(self, pass_id: str) -> PassState | None:
        return self._passes.get(pass_id)

    def messages_for(self, pass_id: str) -> list[str]:
        """Every value written to the message field of `pass_id`, oldest first."""
        state = self._passes.get(pass_id)
        return list(state.messages) if state else []

    def bulk_messages_for(self, pass_id: str) -> list[str]:
        """Every Messages API message id sent to `pass_id`, oldest first."""
        state = self._passes.get(pass_id)
        return list(state.bulk_messages) if state else []

    def bulk_recipients(self) -> Counter[str]:
        """Messages API sends per pass id, over every pass."""
        return Counter(
            {k: len(v.bulk_messages) for k, v in self._passes.items() if v.bulk_messages}
        )

    def message(self, message_id: str) -> MessageState | None:
        return self._messages.get(message_id)

    def points_of(self, pass_id: str) -> float | None:
        state = self._passes.get(pass_id)
        return state.points if state else None

    def tier_of(self, pass_id: str) -> str | None:
        state = self._passes.get(pass_id)
        return state.tier_id if state else None

    def metadata_of(self, pass_id: str) -> dict[str, str]:
        state = self._passes.get(pass_id)
        return dict(state.metadata) if state else {}

    def redeemed(self, pass_id: str) -> bool:
        state = self._passes.get(pass_id)
        return bool(state and state.redeemed)

    def validations_of(self, pass_id: str) -> int:
        state = self._passes.get(pass_id)
        return state.validations if state else 0

    def mean_latency(self) -> float:
        """Mean seconds the fake waited before answering, over answered requests."""
        return self._latency_sum / self._answered if self._answered else 0.0

    # --- request path --------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        found = routes.endpoint_of(request.method, request.path)
        if found is None:
            return _response(_error(404, f"no route {request.method} {request.path}"))
        route, path = found[0].route, found[1]
        body = await _read_body(request)
        authorization = request.headers.get("Authorization")
        pass_id = _subject_of(path, body)
        outcome = self._next_fault()
        if outcome == "timeout":
            self._record(route, pass_id, body, NO_ANSWER, 0.0)
            return await self._hang()
        answer = self._answer(route, path, body, outcome, authorization)
        delay = self.latency.sample(self._rng)
        self._record(route, pass_id, body, answer.status, delay)
        if delay:
            await asyncio.sleep(delay)
        return _response(answer)

    def _answer(
        self,
        route: str,
        path: tuple[str, ...],
        body: Any,
        fault: Outcome | None,
        authorization: str | None,
    ) -> _Answer:
        if isinstance(fault, int):
            return self._fault_answer(fault)
        if not self._authorized(authorization):
            return _NOT_AUTHORIZED
        if body is _INVALID_JSON or (body is not None and not isinstance(body, dict)):
            return _error(400, "invalid JSON body")
        self._note_ignored(route, body)
        try:
            return self._handlers[route](path, body if body is not None else {})
        except (_Reject, _Forced) as refused:
            return refused.answer

    def _note_ignored(self, route: str, body: JsonObject | None) -> None:
        known = _KNOWN_FIELDS.get(route)
        if known is None or not body:
            return
        for key in body:
            if key not in known:
                self.ignored_fields[f"{route} {key}"] += 1

    def _fault_answer(self, status: int) -> _Answer:
        headers = None
        if status == 429 and self.faults.retry_after is not None:
            headers = {"Retry-After": self.faults.retry_after}
        return _error(status, _FAULT_ANSWERS.get(status, f"injected {status}"), headers)

    def _next_fault(self) -> Outcome | None:
        if self._script:
            return self._script.popleft()
        return self.faults.draw(self._rng) if self.faults.any else None

    async def _hang(self) -> web.StreamResponse:
        # Longer than any sane client timeout; ends early when the fake stops.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.hang_seconds)
        return _response(_error(504, "gateway timeout"))

    def _record(
        self, route: str, pass_id: str | None, body: Any, status: int, latency: float
    ) -> None:
        loop_time = asyncio.get_running_loop().time()
        kept = body if self.record_bodies else None
        self.requests.append(RecordedRequest(route, pass_id, kept, loop_time, status, latency))
        self._counts[route] += 1
        if status != NO_ANSWER:
            self._latency_sum += latency
            self._answered += 1

    # --- auth ----------------------------------------------------------------------------------

    def _authorized(self, header: str | None) -> bool:
        if not header:
            return False
        token = header
        if header.startswith("Bearer "):
            # Long-lived tokens need it; for a signed JWT PassKit documents no prefix.
            self.undocumented["Authorization: Bearer"] += 1
            token = header.removeprefix("Bearer ")
        self.tokens_seen.add(token)
        exp = self._verified.get(token)
        if exp is None:
            exp = self._verify(token)
            if exp is None:
                return False
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[token] = exp
        return self._wall_clock() < exp

    def _verify(self, token: str) -> int | None:
        """The token's `exp` if PassKit would accept it (expiry is checked by the caller,
        against the injectable wall clock)."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                options={
                    "require": ["uid", "iat", "exp"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidTokenError:
            return None
        iat, exp = claims.get("iat"), claims.get("exp")
        if claims.get("uid") != self._key or not isinstance(exp, int):
            return None
        if not isinstance(iat, int) or iat > self._wall_clock() + IAT_LEEWAY_SECONDS:
            return None
        return exp

    # --- addressing ----------------------------------------------------------------------------

    def _pass(self, pass_id: str, protocol: str) -> PassState:
        forced = self._forced.get(pass_id)
        if forced is not None:
            raise _Forced(forced)
        state = self._issued(pass_id, protocol)
        if state is None or state.protocol != protocol:
            raise _Reject(NOT_FOUND, f"{_NOUN[protocol]} {pass_id} not found")
        return state

    def _issued(self, pass_id: str, protocol: str) -> PassState | None:
        """The pass PassKit holds under `pass_id`; one `issued` covers is created on first
        touch, with the protocol it is first touched as."""
        state = self._passes.get(pass_id)
        if state is None and self.issued is not None and self.issued(pass_id):
            state = self._passes[pass_id] = PassState(protocol=protocol)
        return state

    def _addressed(self, body: JsonObject, protocol: str, class_key: str) -> tuple[str, PassState]:
        """The pass a body names: `id`, or `externalId` with its class (`class_key`)."""
        pass_id = body.get("id")
        if isinstance(pass_id, str) and pass_id:
            return pass_id, self._pass(pass_id, protocol)
        external, class_id = body.get("externalId"), body.get(class_key)
        if isinstance(external, str) and external:
            if not isinstance(class_id, str) or not class_id:
                raise _Reject(INVALID_ARGUMENT, f"{class_key} is required with externalId")
            found = self._by_external.get((protocol, class_id, external))
            if found is None:
                raise _Reject(NOT_FOUND, f"{_NOUN[protocol]} {class_id}/{external} not found")
            return found, self._pass(found, protocol)
        raise _Reject(INVALID_ARGUMENT, f"id or externalId and {class_key} required")

    def _ticket_addressed(self, ticket: Any) -> tuple[str, PassState]:
        """A TicketId or Ticket: `ticketId`/`id`, or a ticket number within a production."""
        if not isinstance(ticket, dict):
            raise _Reject(INVALID_ARGUMENT, "ticket required")
        pass_id = ticket.get("ticketId") or ticket.get("id")
        if isinstance(pass_id, str) and pass_id:
            return pass_id, self._pass(pass_id, "EVENT_TICKET")
        number = ticket.get("ticketNumber")
        if isinstance(number, dict):
            production, value = number.get("productionId"), number.get("ticketNumber")
        else:
            event = ticket.get("event")
            production_obj = event.get("production") if isinstance(event, dict) else None
            production = production_obj.get("id") if isinstance(production_obj, dict) else None
            value = number
        if isinstance(production, str) and isinstance(value, str) and production and value:
            found = self._by_ticket_number.get((production, value))
            if found is None:
                raise _Reject(NOT_FOUND, f"ticket {production}/{value} not found")
            return found, self._pass(found, "EVENT_TICKET")
        raise _Reject(INVALID_ARGUMENT, "ticket id or ticket number and production id required")

    # --- PassKit behaviour: passes -------------------------------------------------------------

    def _set_points(self, _path: tuple[str, ...], body: JsonObject) -> _Answer:
        pass_id, state = self._addressed(body, "MEMBERSHIP", "programId")
        points = body.get("points")
        if body.get("resetPoints") is True:
            state.points = 0
        elif isinstance(points, int | float) and not isinstance(points, bool) and points > 0:
            state.points = points
        else:
            # proto3 drops a zero, so PassKit sees no points at all.
            raise _Reject(INVALID_ARGUMENT, "points, secondaryPoints or tierPoints required")
        return _Answer(200, self._member_points(pass_id, state))

    def _update_member(self, _path: tuple[str, ...], body: JsonObject) -> _Answer:
        pass_id, state = self._addressed(body, "MEMBERSHIP", "programId")
        program = body.get("programId")
        if isinstance(program, str) and program and state.class_id and program != state.class_id:
            raise _Reject(INVALID_ARGUMENT, "a member cannot move to another program")
        tier = body.get("tierId")
        if isinstance(tier, str) and tier:  # PATCH applies every non-empty field
            state.tier_id = tier
        points = body.get("points")
        if isinstance(points, int | float) and not isinstance(points, bool) and points:
            state.points = points
        self._apply_metadata(state, body)
        return _Answer(200, {"id": pass_id})

    def _update_coupon(self, _path: tuple[str, ...], body: JsonObject) -> _Answer:
        pass_id, state = self._addressed(body, "COUPON", "campaignId")
        self._apply_metadata(state, body)
        return _Answer(200, {"id": pass_id})

    def _update_ticket(self, _path: tuple[str, ...], body: JsonObject) -> _Answer:
        pass_id, state = self._ticket_addressed(body)
        self._apply_metadata(state, body)
        return _Answer(200, {"id": pass_id})

    def _apply_metadata(self, state: PassState, body: JsonObject) -> None:
        metadata = body.get("metaData")
        if metadata is None:
            return
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise _Reject(INVALID_ARGUMENT, "metaData must map strings to strings")
        if not metadata:  # an empty map is a falsey value: ignored
            return
        if self.merge_metadata:
            state.metadata.update(metadata)
        else:
            state.metadata = dict(metadata)
        if self.message_field in metadata:
            state.messages.append(metadata[self.message_field])

    def _redeem_coupon(self, _path: tuple[str, ...], body: JsonObject) -> _Answer:
        pass_id, state = self._addressed(body, "COUPON", "campaignId")
        # grpc-gateway writes FAILED_PRECONDITION as 400, for a repeat and for a coupon that
        # cannot be used alike: only the coupon's status tells them apart.
        if state.redeemed:
            raise _Reject(FAILED_PRECONDITION, "coupon has already been redeemed")
        if state.voided:
            raise _Reject(FAILED_PRECONDITION, "coupon has been voided")
        if state.expired:
            raise _Reject(FAILED_PRECONDITION, "coupon has expired")
        state.redeemed = True
        return _Answer(200, {"id": pass_id})

    def _validate_ticket(self, _path: tuple[str, ...], body: JsonObject) -> _Answer:
        pass_id, state = self._ticket_addressed(body.get("ticket"))
        if state.redeemed:
            if self.repeat_validation == "refused":
                raise _Reject(FAILED_PRECONDITION, "ticket has already been redeemed")
            return _Answer(200, {"valid": False, "ticket": self._ticket(pass_id, state)})
        if state.expired or state.voided:
            return _Answer(200, {"valid": False, "ticket": self._ticket(pass_id, state)})
        state.validations += 1
        limit = body.get("maxNumberOfValidations") or 0
        if isinstance(limit, int) and limit and state.validations >= limit:
            state.redeemed = True
        return _Answer(200, {"valid": True, "ticket": self._ticket(pass_id, state)})

    def _get_member(self, path: tuple[str, ...], _body: JsonObject) -> _Answer:
        state = self._pass(path[0], "MEMBERSHIP")
        member = self._member_points(path[0], state)
        member.update(tierId=state.tier_id, metaData=dict(state.metadata), status="ACTIVE")
        return _Answer(200, member)

    def _get_coupon(self, path: tuple[str, ...], _body: JsonObject) -> _Answer:
        state = self._pass(path[0], "COUPON")
        coupon = {
            "id": path[0],
            "externalId": state.external_id,
            "campaignId": state.class_id,
            "offerId": "",
            "metaData": dict(state.metadata),
            "status": "REDEEMED" if state.redeemed else "UNREDEEMED",
        }
        return _Answer(200, coupon)

    def _get_ticket(self, path: tuple[str, ...], _body: JsonObject) -> _Answer:
        return _Answer(200, self._ticket(path[0], self._pass(path[0], "EVENT_TICKET")))

    @staticmethod
    def _member_points(pass_id: str, state: PassState) -> JsonObject:
        return {
            "id": pass_id,
            "externalId": state.external_id,
            "programId": state.class_id,
            "points": state.points,
            "secondaryPoints": 0,
            "tierPoints": 0,
        }

    @staticmethod
    def _ticket(pass_id: str, state: PassState) -> JsonObject:
        return {
            "id": pass_id,
            "ticketNumber": state.ticket_number,
            "metaData": dict(state.metadata),
            "status": "REDEEMED" if state.redeemed else "ISSUED",
        }

    # --- PassKit behaviour: messages, programs, tiers, templates -------------------------------

    def _create_message(self, _path: tuple[str, ...], body: JsonObject) -> _Answer:
        title, text = body.get("title"), body.get("plainTextContent")
        if not (isinstance(title, str) and title and isinstance(text, str) and text):
            raise _Reject(INVALID_ARGUMENT, "title and plainTextContent are required")
        message_id = f"msg{next(self._message_ids):019d}"
        self._messages[message_id] = MessageState(title, text)
        return _Answer(200, {"id": message_id})

    def _get_message(self, path: tuple[str, ...], _body: JsonObject) -> _Answer:
        message = self._messages.get(path[0])
        if message is None:
            raise _Reject(NOT_FOUND, f"message {path[0]} not found")
        payload = {"id": path[0], "title": message.title, "plainTextContent": message.text}
        return _Answer(200, payload)

    def _send_message(self, _path: tuple[str, ...], body: JsonObject) -> _Answer:
        message_id = body.get("messageId")
        message = self._messages.get(message_id) if isinstance(message_id, str) else None
        if message is None or not isinstance(message_id, str):
            raise _Reject(NOT_FOUND, f"message {message_id} not found")
        target = body.get("passIds")
        ids = target.get("ids") if isinstance(target, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise _Reject(INVALID_ARGUMENT, "passIds.ids (or protocol) required")
        count = 0
        for pass_id in dict.fromkeys(ids):  # a repeated id in one request is one pass
            state = None if pass_id in self._forced else self._issued(pass_id, "MEMBERSHIP")
            if state is None:
                continue  # not a pass of this account (or forced to fail): not counted
            state.bulk_messages.append(message_id)
            count += 1
        message.sent_to += count
        return _Answer(200, {"count": count})

    def _get_program(self, path: tuple[str, ...], _body: JsonObject) -> _Answer:
        program = self._programs.get(path[0])
        if program is None:
            raise _Reject(NOT_FOUND, f"program {path[0]} not found")
        return _Answer(200, dict(program))

    def _get_tier(self, path: tuple[str, ...], _body: JsonObject) -> _Answer:
        tier = self._tiers.get((path[0], path[1]))
        if tier is None:
            raise _Reject(NOT_FOUND, f"tier {path[1]} of program {path[0]} not found")
        return _Answer(200, dict(tier))

    def _get_template(self, path: tuple[str, ...], _body: JsonObject) -> _Answer:
        template = self._templates.get(path[0])
        if template is None:
            raise _Reject(NOT_FOUND, f"template {path[0]} not found")
        return _Answer(200, json.loads(json.dumps(template)))


_NOUN: Final = {"MEMBERSHIP": "member", "COUPON": "coupon", "EVENT_TICKET": "ticket"}


# --- plumbing ----------------------------------------------------------------------------------


def _route_of(method: str, path: str) -> tuple[str | None, tuple[str, ...]]:
    found = routes.endpoint_of(method, path)
    if found is None:
        return None, ()
    return found[0].route, found[1]


# Answered 400, like anything else that is not a JSON object.
_INVALID_JSON: Final = object()


async def _read_body(request: web.BaseRequest) -> Any:
    if not request.body_exists:
        return None
    try:
        return json.loads(await request.read())
    except ValueError:
        return _INVALID_JSON


def _subject_of(path: tuple[str, ...], body: Any) -> str | None:
    """The pass (or message) a request is about, for the record."""
    if path:
        return path[-1]
    if not isinstance(body, dict):
        return None
    ticket = body.get("ticket")
    if isinstance(ticket, dict):
        value = ticket.get("ticketId")
        return value if isinstance(value, str) else None
    for key in ("id", "messageId", "externalId"):
        value = body.get(key)
        if isinstance(value, str):
            return value
    return None


def _response(answer: _Answer) -> web.Response:
    return web.Response(
        status=answer.status,
        body=json.dumps(answer.payload).encode(),
        content_type="application/json",
        headers=answer.headers,
    )


def issued_ids(*prefixes: str) -> Callable[[str], bool]:
    """`issued=` for passes created in bulk: every id with one of these prefixes."""
    return lambda pass_id: pass_id.startswith(prefixes)


def ids_of(values: Iterable[str]) -> Callable[[str], bool]:
    """`issued=` for a known set of ids."""
    known = frozenset(values)
    return known.__contains__
