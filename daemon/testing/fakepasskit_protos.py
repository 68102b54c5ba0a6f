"""PassKit's published definitions, as the fake PassKit reads requests and writes answers by
them (PassKit/passkit-golang-grpc-sdk v1.1.123; passkit-api.md beside the spec): the routes'
names, the JSON names of each request message, the enums, the gRPC codes and the error body
grpc-gateway v2 writes for each, and how protojson reads and writes a value.

Stateless: `fakepasskit_model` holds what PassKit holds, `fakepasskit` serves it over HTTP.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

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

JsonObject = dict[str, Any]

# Records a list answers when its filters give no limit (io/filter.pb.go Filters.limit).
DEFAULT_LIST_LIMIT: Final = 25

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
PROTOCOL_NUMBERS: Final[Mapping[str, int]] = {
    routes.PASSKIT_PROTOCOL["MEMBERSHIP"]: 100,
    routes.PASSKIT_PROTOCOL["COUPON"]: 101,
    routes.PASSKIT_PROTOCOL["EVENT_TICKET"]: 102,
}
# io.IntegrationStatus and io.ConfigurationType (io/integration.pb.go).
INTEGRATION_STATUSES: Final[Mapping[str, int]] = {
    "INTEGRATION_STATUS_NONE": 0,
    "INTEGRATION_DISABLED": 1,
    "INTEGRATION_ACTIVE": 2,
    "INTEGRATION_SUSPENDED": 3,
}
CONFIG_TYPES: Final[Mapping[str, int]] = {
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
# message.pb.go): anything else is ignored by grpc-gateway and counted by the model.
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
FILTERS_FIELDS: Final = frozenset({"limit", "offset", "filterGroups", "orderBy", "orderAsc"})
GROUP_FIELDS: Final = frozenset({"condition", "fieldFilters"})
FIELD_FILTER_FIELDS: Final = frozenset({"filterField", "filterValue", "filterOperator"})
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
# The request message of each route with a body; a route absent here reads none.
KNOWN_FIELDS: Final[Mapping[str, frozenset[str]]] = {
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
HTTP_OF_CODE: Final[Mapping[int, int]] = {
    INVALID_ARGUMENT: 400,
    NOT_FOUND: 404,
    RESOURCE_EXHAUSTED: 429,
    FAILED_PRECONDITION: 400,
    INTERNAL: 500,
    UNAVAILABLE: 503,
    UNAUTHENTICATED: 401,
}
_CODE_OF_HTTP: Final[Mapping[int, int]] = {
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


# --- answers -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """A unary answer: the HTTP status grpc-gateway gives it and the JSON body."""

    status: int
    payload: JsonObject
    headers: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Stream:
    """A streamed answer (grpc-gateway ForwardResponseStream): one JSON line per record, read
    lazily, so a list sees changes made while it streams, as with a database cursor. Lines
    rather than records, so a million generated members stream without a dict each."""

    lines: Iterator[str]


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
    """An error by its HTTP status, as grpc-gateway v2 writes it
    (runtime.DefaultHTTPErrorHandler): `{"code", "message", "details"}`."""
    code = _CODE_OF_HTTP.get(status, 2)
    return Answer(status, {"code": code, "message": message, "details": []}, headers)


class Refusal(Exception):
    """PassKit refuses the request with a gRPC code; the operation answers `answer`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        payload = {"code": code, "message": message, "details": []}
        self.answer = Answer(HTTP_OF_CODE.get(code, 500), payload)


def result_line(record: JsonObject) -> str:
    # grpc-gateway's JSONPb marshaller writes compact JSON, "\n" its stream delimiter.
    return json.dumps({"result": record}, separators=(",", ":")) + "\n"


def rfc3339(seconds: float) -> str:
    """A Timestamp as protojson writes it: UTC, `Z`, and 0, 3 or 6 fractional digits (the
    wall clock has no more than microseconds)."""
    moment = datetime.fromtimestamp(seconds, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if not moment.microsecond:
        return text + "Z"
    if moment.microsecond % 1000 == 0:
        return f"{text}.{moment.microsecond // 1000:03d}Z"
    return f"{text}.{moment.microsecond:06d}Z"


# --- protojson, read -----------------------------------------------------------------------------


def json_object(value: Any, what: str) -> JsonObject:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Refusal(INVALID_ARGUMENT, f"{what} must be an object")
    return value


def json_array(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Refusal(INVALID_ARGUMENT, f"{what} must be an array")
    return value


def int32(value: Any, what: str) -> int:
    """An int32 as protojson reads it: a number or a decimal string."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    with contextlib.suppress(ValueError):
        if isinstance(value, str):
            return int(value)
    raise Refusal(INVALID_ARGUMENT, f"{what} must be an integer")


def enum(value: Any, names: Mapping[str, int], what: str) -> str:
    """An enum's name, given as protojson takes it: its name or its number."""
    if isinstance(value, str) and value in names:
        return value
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    for name, known in names.items():
        if known == number:
            return name
    raise Refusal(INVALID_ARGUMENT, f"invalid {what} {value!r}: one of {', '.join(names)}")
