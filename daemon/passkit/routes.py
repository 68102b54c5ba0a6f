"""The PassKit REST routes loyaltyd uses: one table, read by the client to build requests and
by the fake PassKit (`daemon.testing.fakepasskit`) to answer them, so the two cannot drift.

Paths are the grpc-gateway routes of PassKit's SDKs (PassKit/passkit-golang-grpc-sdk v1.1.123:
io/members/a_rpc.pb.gw.go, io/single_use_coupons/a_rpc.pb.gw.go, io/event_tickets/a_rpc.pb.gw.go,
io/a_rpc_messages.pb.gw.go, io/a_rpc_templates.pb.gw.go, io/a_rpc_others.pb.gw.go). A `{name}`
segment stands for one URL-quoted path parameter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote

from daemon.core.errors import UnknownProtocol

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
