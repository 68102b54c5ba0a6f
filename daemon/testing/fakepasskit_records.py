"""The records the fake PassKit keeps, and the published shapes each answers as: a pass
(Member, MemberPoints, Coupon, Ticket, TicketLimitedFields, io.Pass in a webhook), a Messages
API message, a sink subscription (io.SinkSubscription, checked as PassKit's validators would),
a webhook sent, and a program of generated members held as a formula."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from daemon.passkit import routes
from daemon.testing.fakepasskit_protos import (
    CONFIG_TYPES,
    INTEGRATION_STATUSES,
    INVALID_ARGUMENT,
    PASS_EVENTS,
    PASS_STATUSES,
    PROTOCOL_NUMBERS,
    JsonObject,
    Refusal,
    enum,
    json_array,
    result_line,
)

# --- passes --------------------------------------------------------------------------------------


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


# Zero values are emitted, as grpc-gateway's default marshaller does (an unset timestamp is
# `null`).


def member_points_json(pass_id: str, state: PassState) -> JsonObject:
    return {
        "id": pass_id,
        "externalId": state.external_id,
        "programId": state.class_id,
        "points": state.points,
        "secondaryPoints": 0,
        "tierPoints": state.tier_points,
    }


def member_json(pass_id: str, state: PassState) -> JsonObject:
    answer = member_points_json(pass_id, state)
    answer.update(
        tierId=state.tier_id,
        metaData=dict(state.metadata),
        status="ACTIVE",
        passMetaData=state.pass_metadata(),
    )
    return answer


def coupon_json(pass_id: str, state: PassState) -> JsonObject:
    return {
        "id": pass_id,
        "externalId": state.external_id,
        "campaignId": state.class_id,
        "offerId": "",
        "metaData": dict(state.metadata),
        "status": "REDEEMED" if state.redeemed else "UNREDEEMED",
        "passMetaData": state.pass_metadata(),
    }


def ticket_json(pass_id: str, state: PassState) -> JsonObject:
    return {
        "id": pass_id,
        "ticketNumber": state.ticket_number,
        "metaData": dict(state.metadata),
        "status": "REDEEMED" if state.redeemed else "ISSUED",
        "passMetaData": state.pass_metadata(),
    }


def ticket_limited_json(pass_id: str, state: PassState) -> JsonObject:
    """TicketLimitedFields (ticket.pb.go), what the ticket list streams: the fields the fake
    holds, the production as its own LimitedFields object."""
    return {
        "id": pass_id,
        "ticketNumber": state.ticket_number,
        "status": "REDEEMED" if state.redeemed else "ISSUED",
        "passMetaData": state.pass_metadata(),
        "production": {"id": state.class_id},
    }


# --- generated programs --------------------------------------------------------------------------

# Stand-ins rendered into a generated member's line, then cut out: an id and a float no
# generator returns.
_ID_MARK: Final = "generated-id-mark"
_POINTS_MARK: Final = 1.2345678901234567e-300


@dataclass(slots=True)
class GeneratedMembers:
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
        # Rendered by member_json() itself, so a generated line cannot drift from a stored one.
        state = self._state(status, _POINTS_MARK)
        text = result_line(member_json(self.prefix + _ID_MARK, state))
        head, rest = text.split(_ID_MARK)
        middle, tail = rest.split(json.dumps(_POINTS_MARK))
        self._templates[status] = (head, middle, tail)
        return head, middle, tail


# --- messages ------------------------------------------------------------------------------------


@dataclass(slots=True)
class MessageState:
    title: str
    text: str
    sent_to: int = 0


# --- sink subscriptions and webhooks -------------------------------------------------------------


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


def sink_of(sink_id: str, body: JsonObject, created_at: str, updated_at: str) -> SinkSubscription:
    """A SinkSubscription from a create or update body, checked as PassKit's validators
    would (the required fields), or stricter where they are undocumented."""
    for key in ("membershipEvents", "couponEvents"):
        if body.get(key):
            raise Refusal(INVALID_ARGUMENT, f"{key} is not simulated: list passEventId")
    class_id = body.get("classId")
    if not isinstance(class_id, str) or not class_id:
        raise Refusal(INVALID_ARGUMENT, "classId is required")
    if not body.get("protocol"):
        raise Refusal(INVALID_ARGUMENT, "protocol is required")
    config_type = enum(body.get("configType") or 0, CONFIG_TYPES, "configType")
    if config_type != "WEBHOOK":
        raise Refusal(INVALID_ARGUMENT, f"configType {config_type} is not simulated (WEBHOOK)")
    configuration = body.get("configuration")
    return SinkSubscription(
        id=sink_id,
        class_id=class_id,
        protocol=enum(body["protocol"], PROTOCOL_NUMBERS, "protocol"),
        pass_events=_events_of(body.get("passEventId")),
        status=enum(body.get("status") or 0, INTEGRATION_STATUSES, "status"),
        config_type=config_type,
        configuration=configuration if isinstance(configuration, str) else "",
        target_url=_target_url(configuration),
        created_at=created_at,
        updated_at=updated_at,
    )


def _events_of(value: Any) -> tuple[str, ...]:
    names = [enum(event, PASS_EVENTS, "passEventId") for event in json_array(value, "passEventId")]
    if not names:
        # A subscription to nothing is valid proto; refused as the stricter choice.
        raise Refusal(INVALID_ARGUMENT, "passEventId needs at least one event")
    return tuple(dict.fromkeys(names))


def _target_url(configuration: Any) -> str:
    """The targetUrl of a WebhookConfig sent JSON-encoded in `configuration`."""
    if not isinstance(configuration, str) or not configuration:
        raise Refusal(INVALID_ARGUMENT, "configuration is required: a JSON WebhookConfig")
    try:
        config = json.loads(configuration)
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise Refusal(INVALID_ARGUMENT, "configuration must be a JSON object")
    if config.get("signingSecret"):
        # Validated `isdefault` on create and update: PassKit sets it, never the client.
        raise Refusal(INVALID_ARGUMENT, "configuration.signingSecret must not be set")
    url = config.get("targetUrl")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise Refusal(INVALID_ARGUMENT, "configuration.targetUrl (an http(s) URL) is required")
    return url


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


def webhook_body(event: str, pass_id: str, state: PassState) -> JsonObject:
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
