"""The PassKit REST routes loyaltyd uses: one table, read by the client to build requests and
by the fake PassKit (`daemon.testing.fakepasskit`) to answer them, so the two cannot drift.

Paths are the grpc-gateway routes of PassKit's SDKs (PassKit/passkit-golang-grpc-sdk v1.1.123:
io/members/a_rpc.pb.gw.go, io/single_use_coupons/a_rpc.pb.gw.go, io/event_tickets/a_rpc.pb.gw.go,
io/a_rpc_messages.pb.gw.go, io/a_rpc_templates.pb.gw.go, io/a_rpc_others.pb.gw.go). A `{name}`
segment stands for one URL-quoted path parameter.

Beside the table, route by route, is what loyaltyd sends each one and what it reads from the
answer (PassKit's JSON, proto3 field names): the client only carries them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

from daemon.core.errors import (
    PermanentPassKitError,
    TransientPassKitError,
    UnknownProtocol,
    WorkRefused,
)

JsonObject = dict[str, Any]

PROTOCOLS: Final = ("MEMBERSHIP", "COUPON", "EVENT_TICKET")

_PARAMETER = re.compile(r"\{[A-Za-z]+\}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    operation: str  # metric label and log field
    method: str
    path: str
    _parts: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # "/members/tier/{programId}/{tierId}" -> ("/members/tier/", "/", ""): literal text
        # around each parameter.
        object.__setattr__(self, "_parts", tuple(_PARAMETER.split(self.path)))

    @property
    def route(self) -> str:
        """`"PUT /members/member/points/set"`: how the fake and its tests name a route."""
        return f"{self.method} {self.path}"

    @property
    def parameters(self) -> int:
        return len(self._parts) - 1

    def url(self, base_url: str, *values: str) -> str:
        if len(values) != self.parameters:
            raise ValueError(f"{self.route} takes {self.parameters} path parameter(s)")
        pieces = [self._parts[0]]
        for value, literal in zip(values, self._parts[1:], strict=True):
            pieces += [quote(value, safe=""), literal]
        return base_url + "".join(pieces)

    def match(self, method: str, path: str) -> tuple[str, ...] | None:
        """The path parameters in `path` if this endpoint serves it (() when it has none)."""
        if method != self.method:
            return None
        if not self.parameters:
            return () if path == self.path else None
        values: list[str] = []
        rest = path
        if not rest.startswith(self._parts[0]):
            return None
        rest = rest[len(self._parts[0]) :]
        for literal in self._parts[1:]:
            if literal:
                value, marker, rest = rest.partition(literal)
                if not marker:
                    return None
            else:
                value, rest = rest, ""
            if not value or "/" in value:
                return None
            values.append(value)
        return tuple(values) if not rest else None


@dataclass(frozen=True, slots=True)
class MessageRoutes:
    read: Endpoint
    write: Endpoint


# --- passes ------------------------------------------------------------------------------------
SET_POINTS: Final = Endpoint("set_points", "PUT", "/members/member/points/set")
GET_MEMBER: Final = Endpoint("get_member", "GET", "/members/member/id/{id}")
UPDATE_MEMBER: Final = Endpoint("write_message", "PUT", "/members/member")
REDEEM_COUPON: Final = Endpoint("redeem_coupon", "PUT", "/coupon/singleUse/coupon/redeem")
GET_COUPON: Final = Endpoint("get_coupon", "GET", "/coupon/singleUse/coupon/{id}")
UPDATE_COUPON: Final = Endpoint("write_message", "PUT", "/coupon/singleUse/coupon")
VALIDATE_TICKET: Final = Endpoint("check_in_ticket", "PUT", "/eventTickets/ticket/validate")
GET_TICKET: Final = Endpoint("get_ticket", "GET", "/eventTickets/ticket/id/{id}")
UPDATE_TICKET: Final = Endpoint("write_message", "PUT", "/eventTickets/ticket")

# --- the Messages API (io/a_rpc_messages.pb.gw.go) ---------------------------------------------
CREATE_MESSAGE: Final = Endpoint("create_message", "POST", "/message")
GET_MESSAGE: Final = Endpoint("get_message", "GET", "/message/{id}")
SEND_MESSAGE: Final = Endpoint("send_message", "POST", "/message/send")

# --- wallet truth: lists, counts and webhooks -----------------------------------------------
# Lists answer a grpc-gateway stream: one `{"result": …}` JSON object per line, and a last
# `{"error": …}` line if the stream fails part-way (grpc-gateway runtime/handler.go). The body
# is a ListRequest whose `filters.limit` defaults to 25: -1 asks for every record
# (io/filter.pb.go Filters).
LIST_MEMBERS: Final = Endpoint("list_members", "POST", "/members/member/list/{programId}")
COUNT_MEMBERS: Final = Endpoint("count_members", "POST", "/members/count/{programId}")
LIST_COUPONS: Final = Endpoint(
    "list_coupons", "POST", "/coupon/singleUse/coupons/list/{couponCampaignId}"
)
COUNT_COUPONS: Final = Endpoint(
    "count_coupons", "POST", "/coupon/singleUse/coupons/count/{couponCampaignId}"
)
LIST_TICKETS: Final = Endpoint("list_tickets", "POST", "/eventTickets/tickets/list")
COUNT_TICKETS: Final = Endpoint("count_tickets", "POST", "/eventTickets/tickets/count")
# Sink subscriptions (io/a_rpc_others.pb.gw.go, io/integration.pb.go SinkSubscription).
CREATE_SINK: Final = Endpoint("create_sink", "POST", "/integrations/sink")
UPDATE_SINK: Final = Endpoint("update_sink", "PUT", "/integrations/sink")
LIST_SINKS: Final = Endpoint("list_sinks", "POST", "/integrations/sinks/list")
GET_SINK: Final = Endpoint("get_sink", "GET", "/integrations/sink/{protocol}/{subscriptionId}")
DELETE_SINK: Final = Endpoint(
    "delete_sink", "DELETE", "/integrations/sink/{protocol}/{subscriptionId}"
)

# --- read by `loyaltyd check` ------------------------------------------------------------------
GET_PROGRAM: Final = Endpoint("get_program", "GET", "/members/program/{id}")
GET_TIER: Final = Endpoint("get_tier", "GET", "/members/tier/{programId}/{tierId}")
GET_TEMPLATE: Final = Endpoint("get_template", "GET", "/template/data/{id}")

ALL: Final = (
    SET_POINTS,
    GET_MEMBER,
    UPDATE_MEMBER,
    REDEEM_COUPON,
    GET_COUPON,
    UPDATE_COUPON,
    VALIDATE_TICKET,
    GET_TICKET,
    UPDATE_TICKET,
    SEND_MESSAGE,  # before GET_MESSAGE's {id} could match "send" (a different verb anyway)
    CREATE_MESSAGE,
    GET_MESSAGE,
    GET_PROGRAM,
    GET_TIER,
    GET_TEMPLATE,
    LIST_MEMBERS,
    COUNT_MEMBERS,
    LIST_COUPONS,
    COUNT_COUPONS,
    LIST_TICKETS,
    COUNT_TICKETS,
    CREATE_SINK,
    UPDATE_SINK,
    LIST_SINKS,
    GET_SINK,
    DELETE_SINK,
)

# PassKit's names (io/protocols.pb.go PassProtocol) of loyaltyd's protocols, and the read of
# one pass of each.
PASSKIT_PROTOCOL: Final[Mapping[str, str]] = {
    "MEMBERSHIP": "MEMBERSHIP",
    "COUPON": "SINGLE_USE_COUPON",
    "EVENT_TICKET": "EVENT_TICKETING",
}
PROTOCOL_OF_PASSKIT: Final[Mapping[str, str]] = {v: k for k, v in PASSKIT_PROTOCOL.items()}
READ_PASS: Final[Mapping[str, Endpoint]] = {
    "MEMBERSHIP": GET_MEMBER,
    "COUPON": GET_COUPON,
    "EVENT_TICKET": GET_TICKET,
}

MESSAGE_ROUTES: Final[Mapping[str, MessageRoutes]] = {
    "MEMBERSHIP": MessageRoutes(GET_MEMBER, UPDATE_MEMBER),
    "COUPON": MessageRoutes(GET_COUPON, UPDATE_COUPON),
    "EVENT_TICKET": MessageRoutes(GET_TICKET, UPDATE_TICKET),
}


def message_routes(protocol: str) -> MessageRoutes:
    try:
        return MESSAGE_ROUTES[protocol]
    except KeyError:
        raise UnknownProtocol(
            f"unknown pass protocol {protocol!r}; expected one of {PROTOCOLS}"
        ) from None


def endpoint_of(method: str, path: str) -> tuple[Endpoint, tuple[str, ...]] | None:
    """The endpoint serving `method path`, and its path parameters (() if it has none)."""
    for endpoint in ALL:
        found = endpoint.match(method, path)
        if found is not None:
            return endpoint, found
    return None


@dataclass(frozen=True, slots=True)
class ListRequest:
    """How to list (and count) every pass of one PassKit class: a program's members, a coupon
    campaign's coupons, a production's tickets."""

    records: Endpoint
    count: Endpoint
    path: tuple[str, ...]
    body: Mapping[str, object]


# Every record: PassKit's list answers 25 by default (io/filter.pb.go Filters.limit).
ALL_RECORDS: Final[Mapping[str, object]] = {"limit": -1, "offset": 0}


def list_request(protocol: str, class_id: str) -> ListRequest:
    """The list of a class, by loyaltyd's protocol name (members.ListRequest,
    single_use_coupons.ListRequest: the class in the path; TicketListRequest: in the body)."""
    if protocol == "MEMBERSHIP":
        return ListRequest(LIST_MEMBERS, COUNT_MEMBERS, (class_id,), {"filters": ALL_RECORDS})
    if protocol == "COUPON":
        return ListRequest(LIST_COUPONS, COUNT_COUPONS, (class_id,), {"filters": ALL_RECORDS})
    if protocol == "EVENT_TICKET":
        body = {"productionId": class_id, "filters": ALL_RECORDS}
        return ListRequest(LIST_TICKETS, COUNT_TICKETS, (), body)
    raise UnknownProtocol(f"unknown pass protocol {protocol!r}; expected one of {PROTOCOLS}")


# --- what each route is sent, and what is read from its answer -------------------------------
# Every reader takes the answer as bytes and raises PermanentPassKitError for one it cannot
# read: PassKit answered, just not what its protos say.

# PassKit's error text in exceptions, logs and last_error: enough to diagnose, not a whole page.
ERROR_TEXT_CHARS: Final = 300


def json_object(operation: str, body: bytes) -> JsonObject:
    """An answer that must be one JSON object."""
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise PermanentPassKitError(f"PassKit {operation} answered non-JSON") from exc
    if not isinstance(value, dict):
        raise PermanentPassKitError(f"PassKit {operation} answered {type(value).__name__}")
    return value


def _absolute(name: str, reset_flag: str, value: int) -> JsonObject:
    """An absolute value for SetPoints: proto3 drops a zero, so "set to 0" has its own flag."""
    return {name: value} if value else {name: 0, reset_flag: True}


# SET_POINTS: SetPointsRequest -> MemberPoints (io/members/member.pb.go).
def set_points_body(passkit_id: str, points: int, tier_points: int | None) -> JsonObject:
    """Addressed by `id`; the balances and their reset flags, nothing that moves a tier
    (unlike earn/burn's `tierId`). `tier_points` None leaves PassKit's as they are."""
    for name, value in (("points", points), ("tier points", tier_points)):
        if value is not None and value < 0:
            raise WorkRefused(f"{name} must be >= 0, got {value}")
    body: JsonObject = {"id": passkit_id, **_absolute("points", "resetPoints", points)}
    if tier_points is not None:
        body.update(_absolute("tierPoints", "resetTierPoints", tier_points))
    return body


def balances_shown(reply: bytes) -> dict[str, float]:
    """The balances MemberPoints says PassKit now holds, by field (a zero may be left out of
    the JSON); a field that is not a number is not shown."""
    answer = json_object(SET_POINTS.operation, reply)
    shown: dict[str, float] = {}
    for name in ("points", "tierPoints"):
        value = answer.get(name, 0)
        if isinstance(value, int | float) and not isinstance(value, bool):
            shown[name] = float(value)
    return shown


# UPDATE_MEMBER, UPDATE_COUPON, UPDATE_TICKET (after GET_MEMBER, GET_COUPON, GET_TICKET).
def metadata_of(held: JsonObject | None) -> JsonObject:
    """A pass's `metaData`, as a copy to change."""
    metadata = held.get("metaData") if held is not None else None
    return dict(metadata) if isinstance(metadata, dict) else {}


def message_update_body(
    protocol: str, passkit_id: str, metadata: JsonObject, current: JsonObject | None
) -> JsonObject:
    """The update that writes `metadata` and says nothing else.

    PassKit applies every non-empty field of an update ("PATCH will ignore missing or falsey
    values", member.pb.go `operation`), so a field we send is a field we change. By the protos
    an update is addressed by `id` alone: Member.tierId and Member.programId are
    `validateUpdate:"omitempty"` (member.pb.go), Coupon.campaignId is
    `validateUpdate:"required_without=Id"` (coupon.pb.go), Ticket.ticketNumber is
    `validateUpdate:"required_without=Id"` (ticket.pb.go). PassKit's own PHP example sends a
    member's programId and tierId as well, so when the pass was read first (`current`, the
    read-modify-write mode) its own tierId and programId go back unchanged: never ours, which
    could move a member to another tier.
    """
    body: JsonObject = {"id": passkit_id}
    if protocol == "MEMBERSHIP" and current is not None:
        for key in ("programId", "tierId"):
            value = current.get(key)
            if isinstance(value, str) and value:
                body[key] = value
    body["metaData"] = metadata
    return body


# REDEEM_COUPON: RedeemCouponRequest (io/single_use_coupons/coupon.pb.go), by id.
def redeem_coupon_body(passkit_id: str) -> JsonObject:
    return {"id": passkit_id}


# VALIDATE_TICKET: ValidateTicketRequest -> ValidateTicketResponse (io/event_tickets/ticket.pb.go).
def validate_ticket_body(passkit_id: str, max_validations: int) -> JsonObject:
    """`maxNumberOfValidations` makes PassKit redeem the ticket once that many validations are
    reached; 0 is not sent (proto3 drops it) and leaves the count to the ticket's settings."""
    body: JsonObject = {"ticket": {"ticketId": passkit_id}}
    if max_validations:
        body["maxNumberOfValidations"] = max_validations
    return body


def ticket_refused_as(reply: bytes) -> str | None:
    """None when the ticket was validated; else the status of the ticket PassKit says is not
    valid (`{"valid": false, "ticket": …}`), "" when it names none."""
    if not reply:
        return None
    answer = json_object(VALIDATE_TICKET.operation, reply)
    if answer.get("valid") is not False:
        return None
    held = answer.get("ticket")
    status = held.get("status") if isinstance(held, dict) else None
    return status if isinstance(status, str) else ""


# GET_COUPON, GET_TICKET: CouponStatus, TicketStatus.
def is_redeemed(held: JsonObject) -> bool:
    return held.get("status") == "REDEEMED"


# CREATE_MESSAGE: Message -> Id (io/a_rpc_messages.pb.go, message.pb.go).
def create_message_body(title: str, text: str) -> JsonObject:
    """`title` and `plainTextContent` are validateCreate:"required"."""
    if not title or not text:
        raise WorkRefused("a PassKit message needs a title and a text")
    return {"title": title, "plainTextContent": text}


def created_id(reply: bytes) -> str:
    message_id = json_object(CREATE_MESSAGE.operation, reply).get("id")
    if not isinstance(message_id, str) or not message_id:
        raise PermanentPassKitError("PassKit create_message answered without an id")
    return message_id


# SEND_MESSAGE: SendMessageRequest (its `passIds` target) -> SendMessageResponse.
def send_message_body(message_id: str, pass_ids: Sequence[str]) -> JsonObject:
    return {"messageId": message_id, "passIds": {"ids": list(pass_ids)}}


def sent_count(reply: bytes) -> int:
    """`count`, an int32: a count of 0 is left out of the JSON unless zeros are emitted."""
    count = json_object(SEND_MESSAGE.operation, reply).get("count", 0)
    if not isinstance(count, int) or isinstance(count, bool):
        raise PermanentPassKitError(f"PassKit send_message answered count {count!r}")
    return count


# COUNT_MEMBERS, COUNT_COUPONS, COUNT_TICKETS: io.Count.
def counted_total(endpoint: Endpoint, reply: bytes) -> int:
    """`total` (a zero may be left out of the JSON)."""
    total = json_object(endpoint.operation, reply).get("total", 0) if reply else 0
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise PermanentPassKitError(f"PassKit {endpoint.operation} answered total {total!r}")
    return total


# LIST_MEMBERS, LIST_COUPONS, LIST_TICKETS: a grpc-gateway stream, one line per record.
# gRPC codes a stream may end with that are worth another try (grpc-gateway writes the error as
# the stream's last line): CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL,
# UNAVAILABLE.
_TRANSIENT_GRPC_CODES: Final = frozenset({1, 4, 8, 10, 13, 14})


def streamed_record(operation: str, line: bytes, seen: int) -> JsonObject | None:
    """One line of a grpc-gateway stream: the record of `{"result": …}`, None for a blank
    line; an `{"error": …}` line raises what it says."""
    text = line.strip()
    if not text:
        return None
    item = json_object(operation, text)
    if "error" in item:
        error = item["error"] if isinstance(item["error"], dict) else {}
        code, message = error.get("code"), str(error.get("message", ""))[:ERROR_TEXT_CHARS]
        what = f"PassKit {operation} stream failed after {seen} records: {code} {message}"
        if code in _TRANSIENT_GRPC_CODES:
            raise TransientPassKitError(what)
        raise PermanentPassKitError(what)
    result = item.get("result")
    if not isinstance(result, dict):
        raise PermanentPassKitError(f"PassKit {operation} streamed a line without a result")
    return result


# LIST_SINKS, CREATE_SINK, UPDATE_SINK: SinkSubscription (io/integration.pb.go), for one class.
def list_sinks_body(protocol: str, class_id: str) -> JsonObject:
    """Every subscription of one class, by loyaltyd's protocol name."""
    return {"classId": class_id, "protocol": PASSKIT_PROTOCOL[protocol], "filters": ALL_RECORDS}


def webhook_sink_body(
    protocol: str, class_id: str, url: str, events: Sequence[str], sink_id: str | None = None
) -> JsonObject:
    """An active webhook subscription calling `url` for `events` (PassEventId names); with
    `sink_id`, the update of that one."""
    body: JsonObject = {
        "classId": class_id,
        "protocol": PASSKIT_PROTOCOL[protocol],
        "passEventId": list(events),
        "status": "INTEGRATION_ACTIVE",
        "configType": "WEBHOOK",
        "configuration": json.dumps({"targetUrl": url}),
    }
    if sink_id is not None:
        body["id"] = sink_id
    return body


def created_sink_id(answer: JsonObject) -> str:
    sink_id = answer.get("id")
    if not isinstance(sink_id, str) or not sink_id:
        raise PermanentPassKitError("PassKit created the subscription without an id")
    return sink_id
