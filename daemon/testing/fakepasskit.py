"""A fake PassKit REST server for tests, benchmarks and the demo, written from PassKit's
published definitions (PassKit/passkit-golang-grpc-sdk v1.1.123; passkit-api.md beside the
spec), so a client that strays from them fails here first.

- Routes: the shared table in `daemon.passkit.routes`: points, updates and reads of members,
  coupons and tickets, redeem and validate, the Messages API, programs, tiers and templates;
  the list and count of members, coupons and tickets; sink subscriptions (webhooks).
- Requests: the proto JSON names. A field a route's message does not have is ignored, as
  grpc-gateway does (DiscardUnknown), and counted in `ignored_fields` (inside `filters` too): a
  test asserts it stays empty. Updates apply every non-empty field ("PATCH will ignore missing
  or falsey values"), so a stray `tierId` moves the member, as it would at PassKit.
- Addressing: `id`, or `externalId` with `programId` (members) or `campaignId` (coupons);
  tickets by `ticketId` or `ticketNumber` {productionId, ticketNumber}. A pass PassKit has not
  issued answers 404: issue it with `add_pass`, give `issued` (a predicate on ids) for tests
  and benches that create passes in bulk, or `add_generated_members` for a program of a
  million. A pass removed with `delete()` answers 404 on every route, whatever `issued` says.
- Answers: the published message shapes (MemberPoints, Member, Coupon, Ticket,
  ValidateTicketResponse, io.Id, io.Count, SendMessageResponse, SinkSubscription), with zero
  values emitted as grpc-gateway's default marshaller does (an unset timestamp is `null`);
  Member, Coupon and Ticket carry `passMetaData` (io.Metadata: the wallet `status` and its
  timestamps, RFC 3339 in UTC); errors as grpc-gateway v2 writes them, `{"code", "message",
  "details"}` with the gRPC code's HTTP status.
- Lists (members, coupons, tickets, sink subscriptions): a grpc-gateway server stream, HTTP 200
  and chunked, one `{"result": …}` line per record, an empty body for none. io.Filters:
  `limit` 25 unless given, -1 for all; `offset`; creation order, descending unless `orderAsc`
  (as the proto says); filter groups on `passStatus` and the id (`eq`), AND or OR within a
  group, groups ANDed. A count answers io.Count `{"total"}` for the same filters. A stream
  that fails part-way ends with one `{"error": …}` line, still HTTP 200.
- Webhooks: when a pass changes (the wallet knobs below, a new pass, or an update that changes
  it), every INTEGRATION_ACTIVE subscription of its class and protocol that lists the event is
  sent `{"event", "pass"}` (SinkSubscriptionPayload) at its targetUrl, in the background.
- Auth: the JWT as PassKit documents it (HS256 with the secret, `uid` = the API key, `iat` not
  in the future, not expired) in `Authorization` without a prefix. A `Bearer ` prefix works
  but is undocumented for JWTs: it is counted in `undocumented`.
- metaData: `merge_metadata` switches between merging a partial map and replacing the whole
  map, since PassKit documents neither.

Knobs are plain attributes, changeable while it runs: `latency`, `faults`, `merge_metadata`,
`repeat_validation`, `stream_error_after`, `stream_cut_after`, plus `force_status()` for one
pass and `fail_next()` for a scripted sequence (lists and counts included). The wallet, as
PassKit would see it: `install()`, `uninstall()`, `invalidate()`, `delete()`, and
`add_pass(status=…)`. Webhooks: `sinks`, `webhook_deliveries`, `await webhooks_settled()`,
`await send_webhook()`. Every request is recorded in memory (`requests`, `count()`);
recording is an append and a counter bump, so a benchmark can push 100k+ requests through it.

State changes apply when a request arrives, before the simulated latency, as on a server
that answers slowly; an injected fault (503, 429, 500, timeout) changes nothing. A list is
read as it streams, so a change made meanwhile may show, as with a database cursor.
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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar

import aiohttp
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
ROUTE_LIST_MEMBERS: Final = routes.LIST_MEMBERS.route
ROUTE_COUNT_MEMBERS: Final = routes.COUNT_MEMBERS.route
ROUTE_LIST_COUPONS: Final = routes.LIST_COUPONS.route
ROUTE_COUNT_COUPONS: Final = routes.COUNT_COUPONS.route
ROUTE_LIST_TICKETS: Final = routes.LIST_TICKETS.route
ROUTE_COUNT_TICKETS: Final = routes.COUNT_TICKETS.route
ROUTE_CREATE_SINK: Final = routes.CREATE_SINK.route
ROUTE_UPDATE_SINK: Final = routes.UPDATE_SINK.route
ROUTE_LIST_SINKS: Final = routes.LIST_SINKS.route
ROUTE_GET_SINK: Final = routes.GET_SINK.route
ROUTE_DELETE_SINK: Final = routes.DELETE_SINK.route

# p99 of a standard normal: turns "median and p99" into a lognormal's sigma.
_Z99 = 2.3263478740408408
# Status recorded for a request the fake never answered (an injected timeout).
NO_ANSWER: Final = 0
# A token issued this far in the future is refused (clock skew PassKit would tolerate).
IAT_LEEWAY_SECONDS: Final = 60
# Records a list answers when its filters give no limit (io/filter.pb.go Filters.limit).
DEFAULT_LIST_LIMIT: Final = 25
# Lines written to a stream at a time: few enough writes for a million lines to stream fast.
_STREAM_BATCH: Final = 256

Timeout = Literal["timeout"]
Outcome = int | Timeout
JsonObject = dict[str, Any]
Protocol = Literal["MEMBERSHIP", "COUPON", "EVENT_TICKET"]
_T = TypeVar("_T")
# A record as a list sees it: its id, its status (what a filter tests) and the record.
_Row = tuple[str, str, _T]

# io.Status (io/metrics.pb.go): "the best determined status of the pass"; zero is PASS_ISSUED.
PASS_STATUSES: Final = ("PASS_ISSUED", "PASS_INSTALLED", "PASS_UNINSTALLED", "PASS_INVALIDATED")
# io.PassEventId (io/integration.pb.go), the events a sink subscription can list.
PASS_EVENTS: Final[Mapping[str, int]] = {
    "PASS_EVENT_NONE": 0,
    "PASS_EVENT_RECORD_CREATED": 1,
    "PASS_EVENT_INSTALLED": 2,
    "PASS_EVENT_RECORD_UPDATED": 4,
    "PASS_EVENT_UNINSTALLED": 8,
    "PASS_EVENT_INVALIDATED": 16,
    "PASS_EVENT_RECORD_DELETED": 32,
}
# The HTTP method of each delivery. PassKit's help article 4739416 gives POST for a created
# pass and PUT for installed and uninstalled; updated, invalidated (PUT) and deleted (DELETE)
# are inferred by analogy: undocumented.
WEBHOOK_METHOD: Final[Mapping[str, str]] = {
    "PASS_EVENT_RECORD_CREATED": "POST",
    "PASS_EVENT_INSTALLED": "PUT",
    "PASS_EVENT_RECORD_UPDATED": "PUT",
    "PASS_EVENT_UNINSTALLED": "PUT",
    "PASS_EVENT_INVALIDATED": "PUT",
    "PASS_EVENT_RECORD_DELETED": "DELETE",
}
# io.PassProtocol (io/protocols.pb.go): the protocols the fake serves, by PassKit's name.
_PROTOCOL_NUMBERS: Final[Mapping[str, int]] = {
    routes.PASSKIT_PROTOCOL["MEMBERSHIP"]: 100,
    routes.PASSKIT_PROTOCOL["COUPON"]: 101,
    routes.PASSKIT_PROTOCOL["EVENT_TICKET"]: 102,
}
# io.IntegrationStatus and io.ConfigurationType (io/integration.pb.go).
_INTEGRATION_STATUSES: Final[Mapping[str, int]] = {
    "INTEGRATION_STATUS_NONE": 0,
    "INTEGRATION_DISABLED": 1,
    "INTEGRATION_ACTIVE": 2,
    "INTEGRATION_SUSPENDED": 3,
}
_CONFIG_TYPES: Final[Mapping[str, int]] = {
    "CONFIGURATION_NONE": 0,
    "WEBHOOK": 1,
    "DB_MYSQL": 2,
    "ZOHO": 3,
    "BRAZE": 4,
    "CODEREADR": 5,
    "ZAPIER": 6,
    "MAILCHIMP": 7,
    "SPROUT": 8,
    "TESSITURA": 9,
    "ITERABLE": 10,
    "MOENGAGE": 11,
    "ORACLE_RESPONSYS": 12,
    "_CONFIG_TYPE_1": 100,
}

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
# ListRequest of members (member.pb.go) and coupons (coupon.pb.go), TicketListRequest
# (ticket.pb.go, its oneofs flattened), io.ListRequest of sinks (common_objects.pb.go), and
# io.Filters with its groups (io/filter.pb.go).
_MEMBER_LIST_FIELDS: Final = frozenset({"programId", "filters", "emailAsCsv"})
_COUPON_LIST_FIELDS: Final = frozenset({"couponCampaignId", "filters", "emailAsCsv"})
_TICKET_LIST_FIELDS: Final = frozenset(
    [
        "productionId",
        "productionUid",
        "eventId",
        "eventFilterByVenueAndStart",
        "ticketTypeId",
        "ticketTypeUid",
        "filters",
    ]
)
_SINK_LIST_FIELDS: Final = frozenset({"classId", "protocol", "filters"})
_FILTERS_FIELDS: Final = frozenset({"limit", "offset", "filterGroups", "orderBy", "orderAsc"})
_GROUP_FIELDS: Final = frozenset({"condition", "fieldFilters"})
_FIELD_FILTER_FIELDS: Final = frozenset({"filterField", "filterValue", "filterOperator"})
# io.SinkSubscription (io/integration.pb.go), its `protocolEventId` oneof flattened.
_SINK_FIELDS: Final = frozenset(
    [
        "id",
        "classId",
        "protocol",
        "passEventId",
        "status",
        "configType",
        "configuration",
        "createdAt",
        "updatedAt",
        "membershipEvents",
        "couponEvents",
    ]
)
_KNOWN_FIELDS: Final[dict[str, frozenset[str]]] = {
    ROUTE_SET_POINTS: _SET_POINTS_FIELDS,
    ROUTE_UPDATE_MEMBER: _MEMBER_FIELDS,
    ROUTE_UPDATE_COUPON: _COUPON_FIELDS,
    ROUTE_REDEEM_COUPON: _COUPON_FIELDS,
    ROUTE_UPDATE_TICKET: _TICKET_FIELDS,
    ROUTE_VALIDATE_TICKET: _VALIDATE_FIELDS,
    ROUTE_CREATE_MESSAGE: _MESSAGE_FIELDS,
    ROUTE_SEND_MESSAGE: _SEND_FIELDS,
    ROUTE_LIST_MEMBERS: _MEMBER_LIST_FIELDS,
    ROUTE_COUNT_MEMBERS: _MEMBER_LIST_FIELDS,
    ROUTE_LIST_COUPONS: _COUPON_LIST_FIELDS,
    ROUTE_COUNT_COUPONS: _COUPON_LIST_FIELDS,
    ROUTE_LIST_TICKETS: _TICKET_LIST_FIELDS,
    ROUTE_COUNT_TICKETS: _TICKET_LIST_FIELDS,
    ROUTE_CREATE_SINK: _SINK_FIELDS,
    ROUTE_UPDATE_SINK: _SINK_FIELDS,
    ROUTE_LIST_SINKS: _SINK_LIST_FIELDS,
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
    campaignId or the ticket's productionId. `status` and the `*_at` timestamps are its
    passMetaData (io.Metadata), which PassKit alone writes: RFC 3339 UTC strings, or None."""

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
    tier_points: int = 0
    status: str = "PASS_ISSUED"
    issue_at: str | None = None
    first_installed_at: str | None = None
    last_installed_at: str | None = None
    first_uninstalled_at: str | None = None
    last_uninstalled_at: str | None = None
    invalidated_at: str | None = None
    last_updated_at: str | None = None

    def installed(self, at: str) -> None:
        # "lastInstalledAt: for Apple devices, this will update each time the device
        # registers a new token": first* is set once, last* every time.
        self.status = "PASS_INSTALLED"
        self.first_installed_at = self.first_installed_at or at
        self.last_installed_at = at

    def uninstalled(self, at: str) -> None:
        self.status = "PASS_UNINSTALLED"
        self.first_uninstalled_at = self.first_uninstalled_at or at
        self.last_uninstalled_at = at

    def invalidated(self, at: str) -> None:
        self.status = "PASS_INVALIDATED"
        self.invalidated_at = at

    def reach(self, status: str, at: str) -> None:
        """Take `status` as a pass that got there at `at`: one added or generated as
        uninstalled was installed, and uninstalled, when it was issued."""
        if status not in PASS_STATUSES:
            raise ValueError(f"unknown pass status {status!r}; expected one of {PASS_STATUSES}")
        if status in ("PASS_INSTALLED", "PASS_UNINSTALLED"):
            self.installed(at)
        if status == "PASS_UNINSTALLED":
            self.uninstalled(at)
        if status == "PASS_INVALIDATED":
            self.invalidated(at)

    def pass_metadata(self) -> JsonObject:
        """passMetaData: the status and the timestamps, an unset one as null. io.Metadata's
        other fields (utm, IP addresses, user agents, lifecycleEvents, renderedAt) are left
        out: the fake has no values for them."""
        return {
            "status": self.status,
            "issueAt": self.issue_at,
            "firstInstalledAt": self.first_installed_at,
            "lastInstalledAt": self.last_installed_at,
            "firstUninstalledAt": self.first_uninstalled_at,
            "lastUninstalledAt": self.last_uninstalled_at,
            "invalidatedAt": self.invalidated_at,
            "lastUpdatedAt": self.last_updated_at,
        }

    def snapshot(self) -> tuple[object, ...]:
        """What an update can change, to tell whether it did."""
        return (self.tier_id, self.points, self.tier_points, tuple(self.metadata.items()))


@dataclass(slots=True)
class MessageState:
    title: str
    text: str
    sent_to: int = 0


@dataclass(slots=True)
class SinkSubscription:
    """One webhook subscription (io.SinkSubscription) as PassKit keeps it."""

    id: str
    class_id: str  # the program, coupon campaign or production
    protocol: str  # PassKit's name: MEMBERSHIP, SINGLE_USE_COUPON or EVENT_TICKETING
    pass_events: tuple[str, ...]  # PASS_EVENT_* names
    status: str  # INTEGRATION_ACTIVE, …: only an active one is sent anything
    config_type: str  # WEBHOOK
    configuration: str  # the JSON WebhookConfig, as the client sent it
    target_url: str  # from `configuration`
    created_at: str
    updated_at: str

    def wants(self, event: str, protocol: str, class_id: str) -> bool:
        return (
            self.status == "INTEGRATION_ACTIVE"
            and self.class_id == class_id
            and self.protocol == protocol
            and event in self.pass_events
        )

    def to_json(self) -> JsonObject:
        # The protocolEventId oneof is unset: protojson leaves an unset oneof out even when
        # it emits unpopulated fields.
        return {
            "id": self.id,
            "classId": self.class_id,
            "protocol": self.protocol,
            "passEventId": list(self.pass_events),
            "status": self.status,
            "configType": self.config_type,
            "configuration": self.configuration,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


@dataclass(slots=True)
class WebhookDelivery:
    """One request the fake sent to a webhook: `status` once answered, `error` if it failed
    (refused, timed out, cancelled by `stop()`)."""

    url: str
    method: str
    event: str
    pass_id: str
    status: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    payload: JsonObject
    headers: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class _Stream:
    """A streamed answer (grpc-gateway ForwardResponseStream): one JSON line per record."""

    lines: Iterator[str]


@dataclass(frozen=True, slots=True)
class _StreamPlan:
    """Where an injected fault ends a stream: after `stop` lines (None: it does not), with an
    error line, or by dropping the connection (`cut`)."""

    stop: int | None = None
    cut: bool = False

    @property
    def status(self) -> int:
        if self.stop != 0:
            return 200
        # Nothing written yet: grpc-gateway sets the status from the error's code.
        return NO_ANSWER if self.cut else _HTTP_OF_CODE[UNAVAILABLE]


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
# The last line of a stream failing part-way (grpc-gateway errorChunk: a google.rpc.Status).
_STREAM_ERROR: Final = (
    json.dumps(
        {"error": {"code": UNAVAILABLE, "message": "stream broken", "details": []}},
        separators=(",", ":"),
    )
    + "\n"
).encode()

RepeatValidation = Literal["invalid", "refused"]


# --- the wallet model: answers, filters, generated programs, sinks -----------------------------


def _rfc3339(seconds: float) -> str:
    """A Timestamp as protojson writes it: UTC, `Z`, and 0, 3 or 6 fractional digits (the
    wall clock has no more than microseconds)."""
    moment = datetime.fromtimestamp(seconds, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if not moment.microsecond:
        return text + "Z"
    if moment.microsecond % 1000 == 0:
        return f"{text}.{moment.microsecond // 1000:03d}Z"
    return f"{text}.{moment.microsecond:06d}Z"


def _member_points(pass_id: str, state: PassState) -> JsonObject:
    return {
        "id": pass_id,
        "externalId": state.external_id,
        "programId": state.class_id,
        "points": state.points,
        "secondaryPoints": 0,
        "tierPoints": state.tier_points,
    }


def _member(pass_id: str, state: PassState) -> JsonObject:
    member = _member_points(pass_id, state)
    member.update(
        tierId=state.tier_id,
        metaData=dict(state.metadata),
        status="ACTIVE",
        passMetaData=state.pass_metadata(),
    )
    return member


def _coupon(pass_id: str, state: PassState) -> JsonObject:
    return {
        "id": pass_id,
        "externalId": state.external_id,
        "campaignId": state.class_id,
        "offerId": "",
        "metaData": dict(state.metadata),
        "status": "REDEEMED" if state.redeemed else "UNREDEEMED",
        "passMetaData": state.pass_metadata(),
    }


def _ticket(pass_id: str, state: PassState) -> JsonObject:
    return {
        "id": pass_id,
        "ticketNumber": state.ticket_number,
        "metaData": dict(state.metadata),
        "status": "REDEEMED" if state.redeemed else "ISSUED",
        "passMetaData": state.pass_metadata(),
    }


def _ticket_limited(pass_id: str, state: PassState) -> JsonObject:
    """TicketLimitedFields (ticket.pb.go), what the ticket list streams: the fields the fake
    holds, the production as its own LimitedFields object."""
    return {
        "id": pass_id,
        "ticketNumber": state.ticket_number,
        "status": "REDEEMED" if state.redeemed else "ISSUED",
        "passMetaData": state.pass_metadata(),
        "production": {"id": state.class_id},
    }


def _result_line(record: JsonObject) -> str:
    # grpc-gateway's JSONPb marshaller writes compact JSON, "\n" its stream delimiter.
    return json.dumps({"result": record}, separators=(",", ":")) + "\n"


def _webhook_body(event: str, pass_id: str, state: PassState) -> JsonObject:
    """SinkSubscriptionPayload: the event's name and the pass (io.Pass), whose passMetaData
    is under `metadata`. Person details and recordData are not simulated: empty."""
    return {
        "event": event,
        "pass": {
            "id": pass_id,
            "classId": state.class_id,
            "protocol": routes.PASSKIT_PROTOCOL[state.protocol],
            "externalId": state.external_id,
            "personDetails": {},
            "metadata": state.pass_metadata(),
            "recordData": {},
        },
    }


# What a filter tests: a record's id or its status.
_ID, _STATUS = 0, 1


@dataclass(frozen=True, slots=True)
class _FilterField:
    slot: int  # _ID or _STATUS
    values: frozenset[str] | None = None  # the enum names it takes (None: any string)


_PASS_FILTERS: Final[Mapping[str, _FilterField]] = {
    "id": _FilterField(_ID),
    "passStatus": _FilterField(_STATUS, frozenset(PASS_STATUSES)),
}
# The quickstarts filter coupons by `passkitId` and tickets by `ticketId`.
_COUPON_FILTERS: Final = {**_PASS_FILTERS, "passkitId": _FilterField(_ID)}
_TICKET_FILTERS: Final = {**_PASS_FILTERS, "ticketId": _FilterField(_ID)}
_SINK_FILTERS: Final[Mapping[str, _FilterField]] = {
    "id": _FilterField(_ID),
    "status": _FilterField(_STATUS, frozenset(_INTEGRATION_STATUSES)),
}


@dataclass(frozen=True, slots=True)
class _Group:
    any_of: bool  # OR; AND otherwise
    tests: tuple[tuple[int, str], ...]  # (slot, value): equal

    def admits(self, values: tuple[str, str]) -> bool:
        hits = (values[slot] == value for slot, value in self.tests)
        return any(hits) if self.any_of else all(hits)


@dataclass(frozen=True, slots=True)
class _Query:
    """A list request's io.Filters, checked."""

    limit: int | None  # None: every record
    offset: int
    ascending: bool
    groups: tuple[_Group, ...]

    def admits(self, row: _Row[object]) -> bool:
        values = (row[0], row[1])
        return all(group.admits(values) for group in self.groups)

    def window(self, rows: Iterator[_Row[_T]]) -> Iterator[_Row[_T]]:
        admitted = filter(self.admits, rows) if self.groups else rows
        stop = None if self.limit is None else self.offset + self.limit
        return itertools.islice(admitted, self.offset, stop)

    def total(self, rows: Iterator[_Row[_T]]) -> int:
        # A count is of every record the filters admit: limit and offset page a list only
        # (undocumented; the stricter reading for a client that pages by the count).
        admitted = filter(self.admits, rows) if self.groups else rows
        return sum(1 for _ in admitted)


def _query_of(raw: Any, fields: Mapping[str, _FilterField], note: Callable[[str], None]) -> _Query:
    filters = _object(raw, "filters")
    _note_unknown(filters, _FILTERS_FIELDS, "filters.", note)
    limit = _int32(filters.get("limit"), "filters.limit")
    offset = _int32(filters.get("offset"), "filters.offset")
    if limit < -1 or offset < 0:
        # Undocumented: refused as the stricter choice.
        raise _Reject(INVALID_ARGUMENT, "filters.limit must be -1 or more, offset 0 or more")
    groups = tuple(
        _group_of(group, fields, note)
        for group in _array(filters.get("filterGroups"), "filters.filterGroups")
    )
    return _Query(
        limit=None if limit == -1 else limit or DEFAULT_LIST_LIMIT,
        offset=offset,
        ascending=_ascending(filters),
        groups=groups,
    )


def _ascending(filters: JsonObject) -> bool:
    # PassKit's own examples order by "created"; what else it takes is undocumented, so
    # anything else is refused rather than silently ignored.
    order_by = filters.get("orderBy") or ""
    if order_by not in ("", "created"):
        raise _Reject(INVALID_ARGUMENT, f"orderBy {order_by!r} is not simulated (only created)")
    ascending = filters.get("orderAsc")
    if ascending is not None and not isinstance(ascending, bool):
        raise _Reject(INVALID_ARGUMENT, "filters.orderAsc must be a boolean")
    return ascending is True


def _group_of(raw: Any, fields: Mapping[str, _FilterField], note: Callable[[str], None]) -> _Group:
    group = _object(raw, "filters.filterGroups[]")
    _note_unknown(group, _GROUP_FIELDS, "filters.filterGroups.", note)
    condition = group.get("condition") or "AND"  # io.Operator: AND = 0, OR = 1
    if condition not in ("AND", "OR", 1):
        raise _Reject(INVALID_ARGUMENT, f"invalid filter group condition {condition!r}")
    tests = tuple(
        _test_of(test, fields, note) for test in _array(group.get("fieldFilters"), "fieldFilters")
    )
    if not tests:
        # What an empty group matches is undocumented: refused.
        raise _Reject(INVALID_ARGUMENT, "a filter group needs fieldFilters")
    return _Group(any_of=condition in ("OR", 1), tests=tests)


def _test_of(
    raw: Any, fields: Mapping[str, _FilterField], note: Callable[[str], None]
) -> tuple[int, str]:
    test = _object(raw, "fieldFilters[]")
    _note_unknown(test, _FIELD_FILTER_FIELDS, "filters.filterGroups.fieldFilters.", note)
    name, value = test.get("filterField"), test.get("filterValue")
    known = fields.get(name) if isinstance(name, str) else None
    if known is None:
        raise _Reject(
            INVALID_ARGUMENT, f"filterField {name!r} is not simulated (only {', '.join(fields)})"
        )
    if test.get("filterOperator") != "eq":
        operator = test.get("filterOperator")
        raise _Reject(INVALID_ARGUMENT, f"filterOperator {operator!r} is not simulated (only eq)")
    if not isinstance(value, str) or (known.values is not None and value not in known.values):
        raise _Reject(INVALID_ARGUMENT, f"invalid filterValue {value!r} for {name}")
    return known.slot, value


def _object(value: Any, what: str) -> JsonObject:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Reject(INVALID_ARGUMENT, f"{what} must be an object")
    return value


def _array(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Reject(INVALID_ARGUMENT, f"{what} must be an array")
    return value


def _int32(value: Any, what: str) -> int:
    """An int32 as protojson reads it: a number or a decimal string."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    with contextlib.suppress(ValueError):
        if isinstance(value, str):
            return int(value)
    raise _Reject(INVALID_ARGUMENT, f"{what} must be an integer")


def _note_unknown(
    message: JsonObject, known: frozenset[str], prefix: str, note: Callable[[str], None]
) -> None:
    for key in message:
        if key not in known:
            note(prefix + key)


def _enum(value: Any, names: Mapping[str, int], what: str) -> str:
    """An enum's name, given as protojson takes it: its name or its number."""
    if isinstance(value, str) and value in names:
        return value
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    for name, known in names.items():
        if known == number:
            return name
    raise _Reject(INVALID_ARGUMENT, f"invalid {what} {value!r}: one of {', '.join(names)}")


@dataclass(frozen=True, slots=True)
class _Listing:
    """What a pass list or count reads: one protocol's passes of one class."""

    protocol: str  # loyaltyd's name
    list_route: str
    count_route: str
    filters: Mapping[str, _FilterField]
    render: Callable[[str, PassState], JsonObject]


_MEMBERS: Final = _Listing(
    "MEMBERSHIP", ROUTE_LIST_MEMBERS, ROUTE_COUNT_MEMBERS, _PASS_FILTERS, _member
)
_COUPONS: Final = _Listing(
    "COUPON", ROUTE_LIST_COUPONS, ROUTE_COUNT_COUPONS, _COUPON_FILTERS, _coupon
)
_TICKETS: Final = _Listing(
    "EVENT_TICKET", ROUTE_LIST_TICKETS, ROUTE_COUNT_TICKETS, _TICKET_FILTERS, _ticket_limited
)

# Stand-ins rendered into a generated member's line, then cut out: an id and a float no
# generator returns.
_ID_MARK: Final = "generated-id-mark"
_POINTS_MARK: Final = 1.2345678901234567e-300


@dataclass(slots=True)
class _GeneratedMembers:
    """Members `{prefix}1` … `{prefix}{count}` of a program, held as a formula. Those touched
    since (read, written, installed, deleted) are stored as PassStates and read from there."""

    program_id: str
    count: int
    prefix: str
    issued_at: str
    status: Callable[[int], str] | None
    points: Callable[[int], float] | None
    _templates: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def index_of(self, pass_id: str) -> int | None:
        if not pass_id.startswith(self.prefix):
            return None
        digits = pass_id[len(self.prefix) :]
        if not (digits.isascii() and digits.isdigit()) or digits[0] == "0":
            return None
        index = int(digits)
        return index if index <= self.count else None

    def overlaps(self, prefix: str) -> bool:
        """Whether an id could be both one of ours and one with `prefix`."""
        shorter, longer = sorted((self.prefix, prefix), key=len)
        rest = longer[len(shorter) :]
        return longer.startswith(shorter) and (not rest or rest.isdigit())

    def status_of(self, index: int) -> str:
        return self.status(index) if self.status is not None else "PASS_ISSUED"

    def state(self, index: int) -> PassState:
        points = self.points(index) if self.points is not None else 0
        return self._state(self.status_of(index), points)

    def line(self, index: int, status: str) -> str:
        """The list line of untouched member `index`: the template of its status, filled."""
        head, middle, tail = self._templates.get(status) or self._template(status)
        points = json.dumps(self.points(index)) if self.points is not None else "0"
        return f"{head}{index}{middle}{points}{tail}"

    def _state(self, status: str, points: float) -> PassState:
        state = PassState(class_id=self.program_id, points=points, issue_at=self.issued_at)
        state.reach(status, self.issued_at)
        return state

    def _template(self, status: str) -> tuple[str, str, str]:
        # Rendered by _member itself, so a generated line cannot drift from a stored one.
        state = self._state(status, _POINTS_MARK)
        text = _result_line(_member(self.prefix + _ID_MARK, state))
        head, rest = text.split(_ID_MARK)
        middle, tail = rest.split(json.dumps(_POINTS_MARK))
        self._templates[status] = (head, middle, tail)
        return head, middle, tail


def _sink_of(sink_id: str, body: JsonObject, created_at: str, updated_at: str) -> SinkSubscription:
    """A SinkSubscription from a create or update body, checked as PassKit's validators
    would (the required fields), or stricter where they are undocumented."""
    for key in ("membershipEvents", "couponEvents"):
        if body.get(key):
            raise _Reject(INVALID_ARGUMENT, f"{key} is not simulated: list passEventId")
    class_id = body.get("classId")
    if not isinstance(class_id, str) or not class_id:
        raise _Reject(INVALID_ARGUMENT, "classId is required")
    if not body.get("protocol"):
        raise _Reject(INVALID_ARGUMENT, "protocol is required")
    config_type = _enum(body.get("configType") or 0, _CONFIG_TYPES, "configType")
    if config_type != "WEBHOOK":
        raise _Reject(INVALID_ARGUMENT, f"configType {config_type} is not simulated (WEBHOOK)")
    configuration = body.get("configuration")
    return SinkSubscription(
        id=sink_id,
        class_id=class_id,
        protocol=_enum(body["protocol"], _PROTOCOL_NUMBERS, "protocol"),
        pass_events=_events_of(body.get("passEventId")),
        status=_enum(body.get("status") or 0, _INTEGRATION_STATUSES, "status"),
        config_type=config_type,
        configuration=configuration if isinstance(configuration, str) else "",
        target_url=_target_url(configuration),
        created_at=created_at,
        updated_at=updated_at,
    )


def _events_of(value: Any) -> tuple[str, ...]:
    names = [_enum(event, PASS_EVENTS, "passEventId") for event in _array(value, "passEventId")]
    if not names:
        # A subscription to nothing is valid proto; refused as the stricter choice.
        raise _Reject(INVALID_ARGUMENT, "passEventId needs at least one event")
    return tuple(dict.fromkeys(names))


def _target_url(configuration: Any) -> str:
    """The targetUrl of a WebhookConfig sent JSON-encoded in `configuration`."""
    if not isinstance(configuration, str) or not configuration:
        raise _Reject(INVALID_ARGUMENT, "configuration is required: a JSON WebhookConfig")
    try:
        config = json.loads(configuration)
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise _Reject(INVALID_ARGUMENT, "configuration must be a JSON object")
    if config.get("signingSecret"):
        # Validated `isdefault` on create and update: PassKit sets it, never the client.
        raise _Reject(INVALID_ARGUMENT, "configuration.signingSecret must not be set")
    url = config.get("targetUrl")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise _Reject(INVALID_ARGUMENT, "configuration.targetUrl (an http(s) URL) is required")
    return url


def _production_of(body: JsonObject) -> str:
    """The production a ticket list or count is of (TicketListRequest: one is required)."""
    for key in ("eventId", "eventFilterByVenueAndStart", "ticketTypeId", "ticketTypeUid"):
        if body.get(key):
            raise _Reject(INVALID_ARGUMENT, f"{key} is not simulated by the fake")
    production = body.get("productionId")
    if isinstance(production, str) and production:
        return production
    if body.get("productionUid"):
        raise _Reject(INVALID_ARGUMENT, "productionUid is not simulated: give productionId")
    raise _Reject(INVALID_ARGUMENT, "productionId or productionUid is required")


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
        # Every stream (a list) fails after this many lines: with a last `{"error": …}` line
        # (stream_error_after), or by dropping the connection mid-body (stream_cut_after).
        self.stream_error_after: int | None = None
        self.stream_cut_after: int | None = None
        # Sink subscriptions by id, every webhook request sent (oldest first), and how long
        # a receiver may take to answer one.
        self.sinks: dict[str, SinkSubscription] = {}
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.webhook_timeout = 10.0
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
        # Deleted passes, as they were: never issued again (unless add_pass), but still the
        # subject of a late webhook.
        self._deleted: dict[str, PassState] = {}
        self._generated: dict[str, _GeneratedMembers] = {}  # by program id
        self._by_external: dict[tuple[str, str, str], str] = {}
        self._by_ticket_number: dict[tuple[str, str], str] = {}
        self._messages: dict[str, MessageState] = {}
        self._message_ids = itertools.count(1)
        self._sink_ids = itertools.count(1)
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
        self._webhook_session: aiohttp.ClientSession | None = None
        self._webhook_tasks: set[asyncio.Task[None]] = set()
        self.url = ""
        self._handlers: dict[str, Callable[[tuple[str, ...], JsonObject], _Answer | _Stream]] = {
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
            ROUTE_LIST_MEMBERS: self._list_members,
            ROUTE_COUNT_MEMBERS: self._count_members,
            ROUTE_LIST_COUPONS: self._list_coupons,
            ROUTE_COUNT_COUPONS: self._count_coupons,
            ROUTE_LIST_TICKETS: self._list_tickets,
            ROUTE_COUNT_TICKETS: self._count_tickets,
            ROUTE_CREATE_SINK: self._create_sink,
            ROUTE_UPDATE_SINK: self._update_sink,
            ROUTE_LIST_SINKS: self._list_sinks,
            ROUTE_GET_SINK: self._get_sink,
            ROUTE_DELETE_SINK: self._delete_sink,
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
        """Stop serving; webhook deliveries still under way are cancelled."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in self._webhook_tasks:
            task.cancel()
        await asyncio.gather(*self._webhook_tasks, return_exceptions=True)
        if self._webhook_session is not None:
            await self._webhook_session.close()
            self._webhook_session = None

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
        tier_points: int = 0,
        metadata: dict[str, str] | None = None,
        expired: bool = False,
        voided: bool = False,
        redeemed: bool = False,
        status: str = "PASS_ISSUED",
    ) -> PassState:
        """Issue a pass, as PassKit would have before loyaltyd hears of it; `status` is its
        wallet status (io.Status name), reached when it was issued. Subscriptions to
        PASS_EVENT_RECORD_CREATED hear of it."""
        now = self._now()
        state = PassState(
            protocol=protocol,
            class_id=class_id,
            tier_id=tier_id,
            external_id=external_id,
            ticket_number=ticket_number,
            points=points,
            tier_points=tier_points,
            metadata=dict(metadata or {}),
            expired=expired,
            voided=voided,
            redeemed=redeemed,
            issue_at=now,
        )
        state.reach(status, now)
        self._deleted.pop(pass_id, None)
        self._passes[pass_id] = state
        if external_id:
            self._by_external[(protocol, class_id, external_id)] = pass_id
        if ticket_number:
            self._by_ticket_number[(class_id, ticket_number)] = pass_id
        self._fire("PASS_EVENT_RECORD_CREATED", pass_id, state)
        return state

    def add_generated_members(
        self,
        program_id: str,
        count: int,
        *,
        prefix: str,
        status: Callable[[int], str] | None = None,
        points: Callable[[int], float] | None = None,
    ) -> None:
        """Members `{prefix}1` … `{prefix}{count}` of `program_id`, issued now and held as a
        formula, so a million take no memory: listed, counted, read and written like any
        other. `status(i)` and `points(i)` give member i's wallet status and balance
        (PASS_ISSUED and 0 unless given). A member touched is stored from then on, so what
        happens to it sticks."""
        if count < 0 or not prefix:
            raise ValueError("a count of 0 or more and a prefix are required")
        for other in self._generated.values():
            if other.program_id != program_id and other.overlaps(prefix):
                raise ValueError(f"prefix {prefix!r} overlaps {other.prefix!r}'s ids")
        generated = _GeneratedMembers(program_id, count, prefix, self._now(), status, points)
        self._generated[program_id] = generated

    def install(self, pass_id: str, *, protocol: Protocol = "MEMBERSHIP") -> PassState:
        """The pass is saved to a wallet (again): PASS_INSTALLED, firstInstalledAt once and
        lastInstalledAt each time, then PASS_EVENT_INSTALLED. `protocol` only matters for a
        pass `issued` covers and nothing has touched yet."""
        state = self._existing(pass_id, protocol)
        state.installed(self._now())
        self._fire("PASS_EVENT_INSTALLED", pass_id, state)
        return state

    def uninstall(self, pass_id: str, *, protocol: Protocol = "MEMBERSHIP") -> PassState:
        """The pass is removed from a wallet (or, on Apple, its notifications turned off)."""
        state = self._existing(pass_id, protocol)
        state.uninstalled(self._now())
        self._fire("PASS_EVENT_UNINSTALLED", pass_id, state)
        return state

    def invalidate(self, pass_id: str, *, protocol: Protocol = "MEMBERSHIP") -> PassState:
        """The pass is invalidated (or expired): PASS_INVALIDATED, invalidatedAt."""
        state = self._existing(pass_id, protocol)
        state.invalidated(self._now())
        self._fire("PASS_EVENT_INVALIDATED", pass_id, state)
        return state

    def delete(self, pass_id: str, *, protocol: Protocol = "MEMBERSHIP") -> PassState:
        """The record is deleted: every route answers 404 for it from now on, lists and counts
        leave it out, and `issued` or a generated program cannot bring it back."""
        state = self._existing(pass_id, protocol)
        del self._passes[pass_id]
        self._deleted[pass_id] = state
        if self._by_external.get((state.protocol, state.class_id, state.external_id)) == pass_id:
            del self._by_external[(state.protocol, state.class_id, state.external_id)]
        if self._by_ticket_number.get((state.class_id, state.ticket_number)) == pass_id:
            del self._by_ticket_number[(state.class_id, state.ticket_number)]
        self._fire("PASS_EVENT_RECORD_DELETED", pass_id, state)
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

    # --- webhooks ------------------------------------------------------------------------------

    async def webhooks_settled(self) -> None:
        """Wait until every webhook delivery started so far is answered or has failed."""
        while self._webhook_tasks:
            await asyncio.wait(set(self._webhook_tasks))

    async def send_webhook(
        self, url: str, event: str, pass_id: str, method: str | None = None
    ) -> WebhookDelivery:
        """Send one delivery by hand, now, about the pass as it is (or was, if deleted): a
        duplicate, a late event, one for a pass that is gone."""
        if event not in WEBHOOK_METHOD:
            raise ValueError(f"no webhook for {event!r}; one of {', '.join(WEBHOOK_METHOD)}")
        state = self._deleted.get(pass_id) or self._peek(pass_id)
        if state is None:
            raise KeyError(f"no pass {pass_id} at the fake")
        delivery = WebhookDelivery(url, method or WEBHOOK_METHOD[event], event, pass_id)
        self.webhook_deliveries.append(delivery)
        await self._deliver(delivery, _webhook_body(event, pass_id, state))
        return delivery

    def _fire(self, event: str, pass_id: str, state: PassState) -> None:
        """Send `event` to every subscription that wants it, in the background. PassKit
        documents no ordering between deliveries: each goes on its own."""
        if not self.sinks:
            return
        protocol = routes.PASSKIT_PROTOCOL[state.protocol]
        targets = [s for s in self.sinks.values() if s.wants(event, protocol, state.class_id)]
        body = _webhook_body(event, pass_id, state)  # as the pass is now, not when sent
        for sink in targets:
            delivery = WebhookDelivery(sink.target_url, WEBHOOK_METHOD[event], event, pass_id)
            self.webhook_deliveries.append(delivery)
            task = asyncio.get_running_loop().create_task(self._deliver(delivery, body))
            self._webhook_tasks.add(task)
            task.add_done_callback(self._webhook_tasks.discard)

    async def _deliver(self, delivery: WebhookDelivery, body: JsonObject) -> None:
        if self._webhook_session is None:
            timeout = aiohttp.ClientTimeout(total=self.webhook_timeout)
            self._webhook_session = aiohttp.ClientSession(timeout=timeout)
        request = self._webhook_session.request(delivery.method, delivery.url, json=body)
        try:
            async with request as response:
                await response.read()
                delivery.status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
        except asyncio.CancelledError:
            delivery.error = "cancelled: the fake stopped"
            raise

    # --- accessors -----------------------------------------------------------------------------

    def count(self, route: str | None = None) -> int:
        return self._counts.total() if route is None else self._counts[route]

    def state_of(self, pass_id: str) -> PassState | None:
        """The pass as stored; a generated member is stored from now on, so changes stick."""
        state = self._peek(pass_id)
        return None if state is None else self._passes.setdefault(pass_id, state)

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
        state = self._peek(pass_id)
        return state.points if state else None

    def tier_of(self, pass_id: str) -> str | None:
        state = self._peek(pass_id)
        return state.tier_id if state else None

    def metadata_of(self, pass_id: str) -> dict[str, str]:
        state = self._peek(pass_id)
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

    def _now(self) -> str:
        return _rfc3339(self._wall_clock())

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
        plan = self._stream_plan()
        delay = self.latency.sample(self._rng)
        status = plan.status if isinstance(answer, _Stream) else answer.status
        self._record(route, pass_id, body, status, delay)
        if delay:
            await asyncio.sleep(delay)
        if isinstance(answer, _Stream):
            return await _stream(request, answer, plan)
        return _response(answer)

    def _answer(
        self,
        route: str,
        path: tuple[str, ...],
        body: Any,
        fault: Outcome | None,
        authorization: str | None,
    ) -> _Answer | _Stream:
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

    def _stream_plan(self) -> _StreamPlan:
        error, cut = self.stream_error_after, self.stream_cut_after
        if cut is not None and (error is None or cut <= error):
            return _StreamPlan(cut, cut=True)
        return _StreamPlan(error)

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
        """The pass PassKit holds under `pass_id`. A generated member, or one `issued` covers,
        is stored on first touch (the latter with the protocol it is first touched as); a
        deleted pass is never issued again."""
        state = self._passes.get(pass_id)
        if state is not None or pass_id in self._deleted:
            return state
        state = self._generated_state(pass_id)
        if state is None and self.issued is not None and self.issued(pass_id):
            state = PassState(protocol=protocol, issue_at=self._now())
        if state is not None:
            self._passes[pass_id] = state
        return state

    def _peek(self, pass_id: str) -> PassState | None:
        """The pass stored or generated under `pass_id`, without storing it."""
        state = self._passes.get(pass_id)
        if state is None and pass_id not in self._deleted:
            state = self._generated_state(pass_id)
        return state

    def _generated_state(self, pass_id: str) -> PassState | None:
        for generated in self._generated.values():
            index = generated.index_of(pass_id)
            if index is not None:
                return generated.state(index)
        return None

    def _existing(self, pass_id: str, protocol: str) -> PassState:
        """The pass a knob is about; a test naming one PassKit never issued is a mistake."""
        state = self._issued(pass_id, protocol)
        if state is None:
            raise KeyError(f"no pass {pass_id} at the fake")
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
        before = state.snapshot()
        _apply_points(state, body)
        self._updated(pass_id, state, before)
        return _Answer(200, _member_points(pass_id, state))

    def _update_member(self, _path: tuple[str, ...], body: JsonObject) -> _Answer:
        pass_id, state = self._addressed(body, "MEMBERSHIP", "programId")
        program = body.get("programId")
        if isinstance(program, str) and program and state.class_id and program != state.class_id:
            raise _Reject(INVALID_ARGUMENT, "a member cannot move to another program")
        before = state.snapshot()
        tier = body.get("tierId")
        if isinstance(tier, str) and tier:  # PATCH applies every non-empty field
            state.tier_id = tier
        points = body.get("points")
        if isinstance(points, int | float) and not isinstance(points, bool) and points:
            state.points = points
        self._apply_metadata(state, body)
        self._updated(pass_id, state, before)
        return _Answer(200, {"id": pass_id})

    def _update_coupon(self, _path: tuple[str, ...], body: JsonObject) -> _Answer:
        pass_id, state = self._addressed(body, "COUPON", "campaignId")
        before = state.snapshot()
        self._apply_metadata(state, body)
        self._updated(pass_id, state, before)
        return _Answer(200, {"id": pass_id})

    def _update_ticket(self, _path: tuple[str, ...], body: JsonObject) -> _Answer:
        pass_id, state = self._ticket_addressed(body)
        before = state.snapshot()
        self._apply_metadata(state, body)
        self._updated(pass_id, state, before)
        return _Answer(200, {"id": pass_id})

    def _updated(self, pass_id: str, state: PassState, before: tuple[object, ...] | None) -> None:
        """An update went through: PassKit stamps lastUpdatedAt, and a change of the record
        (not a write of what it already held) is a PASS_EVENT_RECORD_UPDATED."""
        state.last_updated_at = self._now()
        if before is None or state.snapshot() != before:
            self._fire("PASS_EVENT_RECORD_UPDATED", pass_id, state)

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
        self._updated(pass_id, state, None)
        return _Answer(200, {"id": pass_id})

    def _validate_ticket(self, _path: tuple[str, ...], body: JsonObject) -> _Answer:
        pass_id, state = self._ticket_addressed(body.get("ticket"))
        if state.redeemed:
            if self.repeat_validation == "refused":
                raise _Reject(FAILED_PRECONDITION, "ticket has already been redeemed")
            return _Answer(200, {"valid": False, "ticket": _ticket(pass_id, state)})
        if state.expired or state.voided:
            return _Answer(200, {"valid": False, "ticket": _ticket(pass_id, state)})
        state.validations += 1
        limit = body.get("maxNumberOfValidations") or 0
        if isinstance(limit, int) and limit and state.validations >= limit:
            state.redeemed = True
        self._updated(pass_id, state, None)
        return _Answer(200, {"valid": True, "ticket": _ticket(pass_id, state)})

    def _get_member(self, path: tuple[str, ...], _body: JsonObject) -> _Answer:
        return _Answer(200, _member(path[0], self._pass(path[0], "MEMBERSHIP")))

    def _get_coupon(self, path: tuple[str, ...], _body: JsonObject) -> _Answer:
        return _Answer(200, _coupon(path[0], self._pass(path[0], "COUPON")))

    def _get_ticket(self, path: tuple[str, ...], _body: JsonObject) -> _Answer:
        return _Answer(200, _ticket(path[0], self._pass(path[0], "EVENT_TICKET")))

    # --- PassKit behaviour: lists and counts ---------------------------------------------------

    def _list_members(self, path: tuple[str, ...], body: JsonObject) -> _Stream:
        return self._pass_list(_MEMBERS, path[0], body)

    def _count_members(self, path: tuple[str, ...], body: JsonObject) -> _Answer:
        return self._pass_count(_MEMBERS, path[0], body)

    def _list_coupons(self, path: tuple[str, ...], body: JsonObject) -> _Stream:
        return self._pass_list(_COUPONS, path[0], body)

    def _count_coupons(self, path: tuple[str, ...], body: JsonObject) -> _Answer:
        return self._pass_count(_COUPONS, path[0], body)

    def _list_tickets(self, _path: tuple[str, ...], body: JsonObject) -> _Stream:
        return self._pass_list(_TICKETS, _production_of(body), body)

    def _count_tickets(self, _path: tuple[str, ...], body: JsonObject) -> _Answer:
        return self._pass_count(_TICKETS, _production_of(body), body)

    def _pass_list(self, listing: _Listing, class_id: str, body: JsonObject) -> _Stream:
        # A class PassKit does not have streams nothing, like one without passes: what
        # PassKit answers for an unknown program, campaign or production is undocumented.
        query = self._query(listing.list_route, listing.filters, body)
        rows = self._pass_rows(listing.protocol, class_id, query.ascending)
        generated = self._generated.get(class_id) if listing.protocol == "MEMBERSHIP" else None

        def line(row: _Row[PassState | int]) -> str:
            pass_id, status, item = row
            if isinstance(item, PassState):
                return _result_line(listing.render(pass_id, item))
            assert generated is not None
            return generated.line(item, status)

        return _Stream(map(line, query.window(rows)))

    def _pass_count(self, listing: _Listing, class_id: str, body: JsonObject) -> _Answer:
        query = self._query(listing.count_route, listing.filters, body)
        total = query.total(self._pass_rows(listing.protocol, class_id, ascending=True))
        return _Answer(200, {"total": total})

    def _query(self, route: str, fields: Mapping[str, _FilterField], body: JsonObject) -> _Query:
        if body.get("emailAsCsv") is True:
            raise _Reject(INVALID_ARGUMENT, "emailAsCsv is not simulated by the fake")

        def note(key: str) -> None:
            self.ignored_fields[f"{route} {key}"] += 1

        return _query_of(body.get("filters"), fields, note)

    def _pass_rows(
        self, protocol: str, class_id: str, ascending: bool
    ) -> Iterator[_Row[PassState | int]]:
        """The passes of one class in creation order (those added one by one, then a
        generated program's), reversed unless `ascending`. A generated member untouched so
        far is its index; every other, its state."""
        generated = self._generated.get(class_id) if protocol == "MEMBERSHIP" else None
        stored = [
            (pass_id, state)
            for pass_id, state in self._passes.items()
            if state.protocol == protocol
            and state.class_id == class_id
            and (generated is None or generated.index_of(pass_id) is None)
        ]
        if not ascending:
            stored.reverse()
        # Statuses are read as the stream reaches each pass.
        stored_rows = ((pass_id, state.status, state) for pass_id, state in stored)
        if generated is None:
            return stored_rows
        generated_rows = self._generated_rows(generated, ascending)
        if ascending:
            return itertools.chain(stored_rows, generated_rows)
        return itertools.chain(generated_rows, stored_rows)

    def _generated_rows(
        self, generated: _GeneratedMembers, ascending: bool
    ) -> Iterator[_Row[PassState | int]]:
        passes, deleted = self._passes, self._deleted
        prefix, program_id, status_of = generated.prefix, generated.program_id, generated.status_of
        indexes = range(1, generated.count + 1) if ascending else range(generated.count, 0, -1)
        for index in indexes:
            pass_id = f"{prefix}{index}"
            state = passes.get(pass_id)
            if state is None:
                if pass_id not in deleted:
                    yield pass_id, status_of(index), index
            elif state.class_id == program_id:  # not an id add_pass gave to another class
                yield pass_id, state.status, state

    # --- PassKit behaviour: sink subscriptions -------------------------------------------------

    def _create_sink(self, _path: tuple[str, ...], body: JsonObject) -> _Answer:
        if body.get("id"):
            raise _Reject(INVALID_ARGUMENT, "id must not be set: PassKit assigns it")
        sink_id = f"sink{next(self._sink_ids):018d}"
        now = self._now()
        self.sinks[sink_id] = _sink_of(sink_id, body, created_at=now, updated_at=now)
        return _Answer(200, {"id": sink_id})

    def _update_sink(self, _path: tuple[str, ...], body: JsonObject) -> _Answer:
        sink_id = body.get("id")
        if not isinstance(sink_id, str) or not sink_id:
            raise _Reject(INVALID_ARGUMENT, "id is required")
        old = self.sinks.get(sink_id)
        if old is None:
            raise _Reject(NOT_FOUND, f"subscription {sink_id} not found")
        # Replaced whole: createdAt stays, as PassKit sets it.
        self.sinks[sink_id] = _sink_of(sink_id, body, old.created_at, updated_at=self._now())
        return _Answer(200, {"id": sink_id})

    def _list_sinks(self, _path: tuple[str, ...], body: JsonObject) -> _Stream:
        query = self._query(ROUTE_LIST_SINKS, _SINK_FILTERS, body)
        class_id = body.get("classId") or ""
        protocol = (
            _enum(body["protocol"], _PROTOCOL_NUMBERS, "protocol") if body.get("protocol") else ""
        )
        sinks = [
            sink
            for sink in self.sinks.values()
            if class_id in ("", sink.class_id) and protocol in ("", sink.protocol)
        ]
        if not query.ascending:
            sinks.reverse()
        rows = ((sink.id, sink.status, sink) for sink in sinks)
        return _Stream(_result_line(sink.to_json()) for _, _, sink in query.window(rows))

    def _get_sink(self, path: tuple[str, ...], _body: JsonObject) -> _Answer:
        return _Answer(200, self._sink_at(path).to_json())

    def _delete_sink(self, path: tuple[str, ...], _body: JsonObject) -> _Answer:
        del self.sinks[self._sink_at(path).id]
        return _Answer(200, {})  # google.protobuf.Empty

    def _sink_at(self, path: tuple[str, ...]) -> SinkSubscription:
        protocol = _enum(path[0], _PROTOCOL_NUMBERS, "protocol")
        sink = self.sinks.get(path[1])
        if sink is None or sink.protocol != protocol:
            raise _Reject(NOT_FOUND, f"subscription {path[1]} not found")
        return sink

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


def _apply_points(state: PassState, body: JsonObject) -> None:
    """SetPoints: a positive `points` or `tierPoints` sets it, a `reset*` flag zeroes it."""
    given = False
    points, tier_points = body.get("points"), body.get("tierPoints")
    if body.get("resetPoints") is True:
        state.points, given = 0, True
    elif isinstance(points, int | float) and not isinstance(points, bool) and points > 0:
        state.points, given = points, True
    if body.get("resetTierPoints") is True:
        state.tier_points, given = 0, True
    elif isinstance(tier_points, int) and not isinstance(tier_points, bool) and tier_points > 0:
        state.tier_points, given = tier_points, True
    if not given:
        # proto3 drops a zero, so PassKit sees no points at all.
        raise _Reject(INVALID_ARGUMENT, "points, secondaryPoints or tierPoints required")


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
    """The pass (or message, class or subscription) a request is about, for the record."""
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


async def _stream(
    request: web.BaseRequest, stream: _Stream, plan: _StreamPlan
) -> web.StreamResponse:
    """Write a stream as grpc-gateway's ForwardResponseStream does: chunked, a line per
    record, each flushed, and an injected failure where `plan` puts it."""
    if plan.stop == 0 and not plan.cut:
        # Failed before the first record: the status comes from the error's code.
        return web.Response(status=plan.status, body=_STREAM_ERROR, content_type="application/json")
    response = web.StreamResponse(status=200)
    response.content_type = "application/json"
    response.enable_chunked_encoding()
    await response.prepare(request)
    lines = stream.lines if plan.stop is None else itertools.islice(stream.lines, plan.stop)
    try:
        written = await _write_lines(response, lines)
        if written == plan.stop and plan.cut:
            _drop(request)
            return response
        if written == plan.stop:
            await response.write(_STREAM_ERROR)
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away mid-stream
    return response


async def _write_lines(response: web.StreamResponse, lines: Iterator[str]) -> int:
    written = 0
    while batch := list(itertools.islice(lines, _STREAM_BATCH)):
        await response.write("".join(batch).encode())
        written += len(batch)
        await asyncio.sleep(0)  # a long stream leaves room for other requests
    return written


def _drop(request: web.BaseRequest) -> None:
    """End the connection with the chunked body unfinished, as a dropped network would:
    what was written still reaches the client, then the connection closes."""
    transport = request.transport
    if transport is not None:
        transport.close()


def issued_ids(*prefixes: str) -> Callable[[str], bool]:
    """`issued=` for passes created in bulk: every id with one of these prefixes."""
    return lambda pass_id: pass_id.startswith(prefixes)


def ids_of(values: Iterable[str]) -> Callable[[str], bool]:
    """`issued=` for a known set of ids."""
    known = frozenset(values)
    return known.__contains__
