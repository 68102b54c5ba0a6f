"""The PassKit REST routes loyaltyd uses: one table, read by the client to build requests and
by the fake PassKit (`daemon.testing.fakepasskit`) to answer them, so the two cannot drift.

Paths are the grpc-gateway routes of PassKit's SDKs (PassKit/passkit-golang-grpc-sdk v1.1.123:
io/members/a_rpc.pb.gw.go, io/single_use_coupons/a_rpc.pb.gw.go, io/event_tickets/a_rpc.pb.gw.go,
io/a_rpc_messages.pb.gw.go, io/a_rpc_templates.pb.gw.go). A `{name}` segment stands for one
URL-quoted path parameter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote

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
)

MESSAGE_ROUTES: Final[Mapping[str, MessageRoutes]] = {
    "MEMBERSHIP": MessageRoutes(GET_MEMBER, UPDATE_MEMBER),
    "COUPON": MessageRoutes(GET_COUPON, UPDATE_COUPON),
    "EVENT_TICKET": MessageRoutes(GET_TICKET, UPDATE_TICKET),
}


def message_routes(protocol: str) -> MessageRoutes:
    try:
        return MESSAGE_ROUTES[protocol]
    except KeyError:
        raise ValueError(
            f"unknown pass protocol {protocol!r}; expected one of {PROTOCOLS}"
        ) from None


def endpoint_of(method: str, path: str) -> tuple[Endpoint, tuple[str, ...]] | None:
    """The endpoint serving `method path`, and its path parameters (() if it has none)."""
    for endpoint in ALL:
        found = endpoint.match(method, path)
        if found is not None:
            return endpoint, found
    return None
