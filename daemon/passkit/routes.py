"""The PassKit REST routes loyaltyd uses: one table, read by the client to build requests and
by the fake PassKit (`daemon.testing.fakepasskit`) to answer them, so the two cannot drift.

Paths are the grpc-gateway routes of PassKit's SDKs (io/members, io/single_use_coupons,
io/event_tickets); `{id}` stands for the URL-quoted PassKit id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

PROTOCOLS: Final = ("MEMBERSHIP", "COUPON", "EVENT_TICKET")


@dataclass(frozen=True, slots=True)
class Endpoint:
    operation: str  # metric label and log field
    method: str
    path: str

    @property
    def route(self) -> str:
        """`"PUT /members/member/points/set"`: how the fake and its tests name a route."""
        return f"{self.method} {self.path}"

    def url(self, base_url: str, passkit_id: str) -> str:
        return base_url + self.path.replace("{id}", quote(passkit_id, safe=""))

    def match(self, method: str, path: str) -> str | None:
        """The id in `path` if this endpoint serves it ("" when the path has no id)."""
        if method != self.method:
            return None
        prefix, marker, suffix = self.path.partition("{id}")
        if not marker:
            return "" if path == self.path else None
        if not (path.startswith(prefix) and path.endswith(suffix)):
            return None
        value = path[len(prefix) : len(path) - len(suffix)]
        return value if value and "/" not in value else None


@dataclass(frozen=True, slots=True)
class MessageRoutes:
    read: Endpoint
    write: Endpoint


SET_POINTS: Final = Endpoint("set_points", "PUT", "/members/member/points/set")
GET_MEMBER: Final = Endpoint("get_member", "GET", "/members/member/id/{id}")
UPDATE_MEMBER: Final = Endpoint("write_message", "PUT", "/members/member")
REDEEM_COUPON: Final = Endpoint("redeem_coupon", "PUT", "/coupon/singleUse/coupon/redeem")
GET_COUPON: Final = Endpoint("get_coupon", "GET", "/coupon/singleUse/coupon/{id}")
UPDATE_COUPON: Final = Endpoint("write_message", "PUT", "/coupon/singleUse/coupon")
VALIDATE_TICKET: Final = Endpoint("check_in_ticket", "PUT", "/eventTickets/ticket/validate")
GET_TICKET: Final = Endpoint("get_ticket", "GET", "/eventTickets/ticket/id/{id}")
UPDATE_TICKET: Final = Endpoint("write_message", "PUT", "/eventTickets/ticket")

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


def endpoint_of(method: str, path: str) -> tuple[Endpoint, str] | None:
    """The endpoint serving `method path`, and the id in the path ("" if it has none)."""
    for endpoint in ALL:
        found = endpoint.match(method, path)
        if found is not None:
            return endpoint, found
    return None
