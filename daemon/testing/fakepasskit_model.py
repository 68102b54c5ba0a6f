"""PassKit's state and what each of its operations does to it: the fake PassKit without HTTP.

Plain synchronous Python. One method per PassKit operation takes the decoded request (path
parameters, then the JSON body as a dict) and returns an `Answer` (status and body, a refusal
included, as grpc-gateway would write it) or, for a list, a `Stream` of JSON lines. `answer()`
finds the operation of a route. The HTTP shell (`daemon.testing.fakepasskit`) decodes requests,
checks tokens, injects faults and latency, and hands the rest to this model; tests may drive it
directly.

- Requests: the proto JSON names. A field a route's message does not have is ignored, as
  grpc-gateway does (DiscardUnknown), and counted in `ignored_fields` (inside `filters` too): a
  test asserts it stays empty. Updates apply every non-empty field ("PATCH will ignore missing
  or falsey values"), so a stray `tierId` moves the member, as it would at PassKit.
- Addressing: `id`, or `externalId` with `programId` (members) or `campaignId` (coupons);
  tickets by `ticketId` or `ticketNumber` {productionId, ticketNumber}. A pass PassKit has not
  issued answers 404: issue it with `add_pass`, give `issued` (a predicate on ids) for tests
  and benches that create passes in bulk, or `add_generated_members` for a program of a
  million. A pass removed with `delete()` answers 404 on every route, whatever `issued` says.
- Operations: points, updates and reads of members, coupons and tickets, redeem and
  validate, the Messages API, programs, tiers and templates; the list and count of members,
  coupons and tickets; sink subscriptions (webhooks).
- Answers: the published message shapes (MemberPoints, Member, Coupon, Ticket,
  ValidateTicketResponse, io.Id, io.Count, SendMessageResponse, SinkSubscription: see
  `fakepasskit_records`), with zero values emitted as grpc-gateway's default marshaller does
  (an unset timestamp is `null`); Member, Coupon and Ticket carry `passMetaData` (io.Metadata:
  the wallet `status` and its timestamps, RFC 3339 in UTC); errors as grpc-gateway v2 writes
  them, `{"code", "message", "details"}` with the gRPC code's HTTP status.
- Lists (members, coupons, tickets, sink subscriptions) stream one `{"result": …}` line per
  record, filtered and paged by io.Filters (`fakepasskit_filters`: `limit` 25 unless given,
  -1 for all; `offset`; creation order, descending unless `orderAsc`; `eq` filter groups on
  `passStatus` and the id); a count answers io.Count `{"total"}` for the same filters.
- Webhooks: when a pass changes (the wallet knobs below, a new pass, or an update that changes
  it), every INTEGRATION_ACTIVE subscription of its class and protocol that lists the event is
  due `{"event", "pass"}` (SinkSubscriptionPayload) at its targetUrl: recorded in
  `webhook_deliveries` and handed to `deliver`, which the shell sends in the background.
- metaData: `merge_metadata` switches between merging a partial map and replacing the whole
  map, since PassKit documents neither.

Knobs are plain attributes, changeable at any time: `issued`, `merge_metadata`,
`repeat_validation`, `message_field`, `wall_clock`, plus `force_status()` for one pass. The
wallet, as PassKit would see it: `install()`, `uninstall()`, `invalidate()`, `delete()`, and
`add_pass(status=…)`. The shell logs every request here (`record()`; read with `requests`,
`count()`); logging is an append and a counter bump, so a benchmark can push 100k+ requests
through it.
"""

from __future__ import annotations

import functools
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, ParamSpec, TypeVar

from daemon.passkit import routes
from daemon.testing.fakepasskit_filters import (
    COUPON_FILTERS,
    PASS_FILTERS,
    SINK_FILTERS,
    TICKET_FILTERS,
    FilterField,
    Query,
    Row,
    query_of,
)
from daemon.testing.fakepasskit_protos import (
    FAILED_PRECONDITION,
    INVALID_ARGUMENT,
    KNOWN_FIELDS,
    NOT_FOUND,
    PROTOCOL_NUMBERS,
    ROUTE_COUNT_COUPONS,
    ROUTE_COUNT_MEMBERS,
    ROUTE_COUNT_TICKETS,
    ROUTE_CREATE_MESSAGE,
    ROUTE_CREATE_SINK,
    ROUTE_DELETE_SINK,
    ROUTE_GET_COUPON,
    ROUTE_GET_MEMBER,
    ROUTE_GET_MESSAGE,
    ROUTE_GET_PROGRAM,
    ROUTE_GET_SINK,
    ROUTE_GET_TEMPLATE,
    ROUTE_GET_TICKET,
    ROUTE_GET_TIER,
    ROUTE_LIST_COUPONS,
    ROUTE_LIST_MEMBERS,
    ROUTE_LIST_SINKS,
    ROUTE_LIST_TICKETS,
    ROUTE_REDEEM_COUPON,
    ROUTE_SEND_MESSAGE,
    ROUTE_SET_POINTS,
    ROUTE_UPDATE_COUPON,
    ROUTE_UPDATE_MEMBER,
    ROUTE_UPDATE_SINK,
    ROUTE_UPDATE_TICKET,
    ROUTE_VALIDATE_TICKET,
    WEBHOOK_METHOD,
    Answer,
    JsonObject,
    Refusal,
    Stream,
    enum,
    error,
    result_line,
    rfc3339,
)
from daemon.testing.fakepasskit_records import (
    GeneratedMembers,
    MessageState,
    PassState,
    SinkSubscription,
    WebhookDelivery,
    coupon_json,
    member_json,
    member_points_json,
    sink_of,
    ticket_json,
    ticket_limited_json,
    webhook_body,
)

Protocol = Literal["MEMBERSHIP", "COUPON", "EVENT_TICKET"]
# How a ticket already redeemed answers validation: 200 {"valid": false, …} or 400.
RepeatValidation = Literal["invalid", "refused"]
# Status recorded for a request the fake never answered (an injected timeout).
NO_ANSWER: Final = 0

_NOUN: Final = {"MEMBERSHIP": "member", "COUPON": "coupon", "EVENT_TICKET": "ticket"}


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    route: str
    pass_id: str | None
    body: Any
    at: float  # event-loop time of arrival
    status: int  # NO_ANSWER for an injected timeout
    latency: float  # seconds the fake waited before answering


@dataclass(frozen=True, slots=True)
class Webhook:
    """A delivery due at a subscription's targetUrl, and the body to send."""

    delivery: WebhookDelivery
    body: JsonObject


@dataclass(frozen=True, slots=True)
class _Listing:
    """What a pass list or count reads: one protocol's passes of one class."""

    protocol: str  # loyaltyd's name
    list_route: str
    count_route: str
    filters: Mapping[str, FilterField]
    render: Callable[[str, PassState], JsonObject]


_MEMBERS: Final = _Listing(
    "MEMBERSHIP", ROUTE_LIST_MEMBERS, ROUTE_COUNT_MEMBERS, PASS_FILTERS, member_json
)
_COUPONS: Final = _Listing(
    "COUPON", ROUTE_LIST_COUPONS, ROUTE_COUNT_COUPONS, COUPON_FILTERS, coupon_json
)
_TICKETS: Final = _Listing(
    "EVENT_TICKET", ROUTE_LIST_TICKETS, ROUTE_COUNT_TICKETS, TICKET_FILTERS, ticket_limited_json
)


class _Forced(Exception):
    """A pass forced to fail (`force_status`): every operation on it answers `answer`."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.payload.get("message"))
        self.answer = answer


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _operation(method: Callable[_P, _R]) -> Callable[_P, _R | Answer]:
    """A PassKit operation: a refusal is answered (its status and error body), not raised."""

    @functools.wraps(method)
    def answered(*args: _P.args, **kwargs: _P.kwargs) -> _R | Answer:
        try:
            return method(*args, **kwargs)
        except (Refusal, _Forced) as refused:
            return refused.answer

    return answered


Operation = Callable[[tuple[str, ...], JsonObject], Answer | Stream]


class PassKitModel:
    """What one PassKit account holds, and its operations. `wall_clock` stamps passMetaData
    and sink subscriptions; `deliver` is told each webhook due (None: recorded, not sent)."""

    def __init__(
        self,
        *,
        issued: Callable[[str], bool] | None = None,
        message_field: str = "loyaltydMessage",
        merge_metadata: bool = True,
        repeat_validation: RepeatValidation = "invalid",
        record_bodies: bool = True,
        wall_clock: Callable[[], float] = time.time,
        deliver: Callable[[Webhook], None] | None = None,
    ) -> None:
        # Ids PassKit has issued besides those added with add_pass (None: only those).
        self.issued = issued
        self.message_field = message_field
        # Whether PassKit merges a partial metaData map is undocumented: both are simulated.
        self.merge_metadata = merge_metadata
        self.repeat_validation: RepeatValidation = repeat_validation
        self.record_bodies = record_bodies
        self.wall_clock = wall_clock
        self.deliver = deliver
        # Sink subscriptions by id, and every webhook due so far (oldest first).
        self.sinks: dict[str, SinkSubscription] = {}
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.requests: list[RecordedRequest] = []
        # Request fields PassKit's messages do not have (ignored), by "route field".
        self.ignored_fields: Counter[str] = Counter()
        self._passes: dict[str, PassState] = {}
        # Deleted passes, as they were: never issued again (unless add_pass), but still the
        # subject of a late webhook.
        self._deleted: dict[str, PassState] = {}
        self._generated: dict[str, GeneratedMembers] = {}  # by program id
        self._by_external: dict[tuple[str, str, str], str] = {}
        self._by_ticket_number: dict[tuple[str, str], str] = {}
        self._messages: dict[str, MessageState] = {}
        self._message_ids = itertools.count(1)
        self._sink_ids = itertools.count(1)
        self._programs: dict[str, JsonObject] = {}
        self._tiers: dict[tuple[str, str], JsonObject] = {}
        self._templates: dict[str, JsonObject] = {}
        self._forced: dict[str, Answer] = {}
        self._counts: Counter[str] = Counter()
        self._latency_sum = 0.0
        self._answered = 0
        self._operations = self._operation_table()

    # --- a request ---------------------------------------------------------------------------

    def answer(self, route: str, path: tuple[str, ...], body: JsonObject) -> Answer | Stream:
        """What PassKit answers `route` (an Endpoint's `route`) with these path parameters
        and body."""
        return self._operations[route](path, body)

    def record(
        self,
        route: str,
        path: tuple[str, ...],
        body: Any,
        *,
        status: int,
        at: float,
        latency: float,
    ) -> None:
        """Log a request as the shell answered it: `status` (NO_ANSWER if never), `at` its
        arrival, `latency` the seconds waited before answering."""
        kept = body if self.record_bodies else None
        self.requests.append(
            RecordedRequest(route, subject_of(path, body), kept, at, status, latency)
        )
        self._counts[route] += 1
        if status != NO_ANSWER:
            self._latency_sum += latency
            self._answered += 1

    def reset_requests(self) -> None:
        self.requests.clear()
        self._counts.clear()
        self._latency_sum, self._answered = 0.0, 0

    def count(self, route: str | None = None) -> int:
        return self._counts.total() if route is None else self._counts[route]

    def mean_latency(self) -> float:
        """Mean seconds the fake waited before answering, over answered requests."""
        return self._latency_sum / self._answered if self._answered else 0.0

    def _operation_table(self) -> dict[str, Operation]:
        return {
            ROUTE_SET_POINTS: lambda _, body: self.set_points(body),
            ROUTE_UPDATE_MEMBER: lambda _, body: self.update_member(body),
            ROUTE_UPDATE_COUPON: lambda _, body: self.update_coupon(body),
            ROUTE_UPDATE_TICKET: lambda _, body: self.update_ticket(body),
            ROUTE_REDEEM_COUPON: lambda _, body: self.redeem_coupon(body),
            ROUTE_VALIDATE_TICKET: lambda _, body: self.validate_ticket(body),
            ROUTE_GET_MEMBER: lambda path, _: self.get_member(path[0]),
            ROUTE_GET_COUPON: lambda path, _: self.get_coupon(path[0]),
            ROUTE_GET_TICKET: lambda path, _: self.get_ticket(path[0]),
            ROUTE_CREATE_MESSAGE: lambda _, body: self.create_message(body),
            ROUTE_GET_MESSAGE: lambda path, _: self.get_message(path[0]),
            ROUTE_SEND_MESSAGE: lambda _, body: self.send_message(body),
            ROUTE_GET_PROGRAM: lambda path, _: self.get_program(path[0]),
            ROUTE_GET_TIER: lambda path, _: self.get_tier(path[0], path[1]),
            ROUTE_GET_TEMPLATE: lambda path, _: self.get_template(path[0]),
            ROUTE_LIST_MEMBERS: lambda path, body: self.list_members(path[0], body),
            ROUTE_COUNT_MEMBERS: lambda path, body: self.count_members(path[0], body),
            ROUTE_LIST_COUPONS: lambda path, body: self.list_coupons(path[0], body),
            ROUTE_COUNT_COUPONS: lambda path, body: self.count_coupons(path[0], body),
            ROUTE_LIST_TICKETS: lambda _, body: self.list_tickets(body),
            ROUTE_COUNT_TICKETS: lambda _, body: self.count_tickets(body),
            ROUTE_CREATE_SINK: lambda _, body: self.create_sink(body),
            ROUTE_UPDATE_SINK: lambda _, body: self.update_sink(body),
            ROUTE_LIST_SINKS: lambda _, body: self.list_sinks(body),
            ROUTE_GET_SINK: lambda path, _: self.get_sink(path[0], path[1]),
            ROUTE_DELETE_SINK: lambda path, _: self.delete_sink(path[0], path[1]),
        }

    def _heard(self, route: str, body: JsonObject) -> None:
        for key in body:
            if key not in KNOWN_FIELDS[route]:
                self.ignored_fields[f"{route} {key}"] += 1

    # --- knobs -------------------------------------------------------------------------------

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
        self._forced[pass_id] = error(status, message, headers)

    def clear_forced(self, pass_id: str | None = None) -> None:
        if pass_id is None:
            self._forced.clear()
        else:
            self._forced.pop(pass_id, None)

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
        generated = GeneratedMembers(program_id, count, prefix, self._now(), status, points)
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

    # --- webhooks ----------------------------------------------------------------------------

    def webhook(self, url: str, event: str, pass_id: str, method: str | None = None) -> Webhook:
        """One delivery by hand, about the pass as it is (or was, if deleted): a duplicate, a
        late event, one for a pass that is gone. Recorded; the caller sends it."""
        if event not in WEBHOOK_METHOD:
            raise ValueError(f"no webhook for {event!r}; one of {', '.join(WEBHOOK_METHOD)}")
        state = self._deleted.get(pass_id) or self._peek(pass_id)
        if state is None:
            raise KeyError(f"no pass {pass_id} at the fake")
        delivery = WebhookDelivery(url, method or WEBHOOK_METHOD[event], event, pass_id)
        self.webhook_deliveries.append(delivery)
        return Webhook(delivery, webhook_body(event, pass_id, state))

    def _fire(self, event: str, pass_id: str, state: PassState) -> None:
        """`event` is due at every subscription that wants it, each on its own: PassKit
        documents no ordering between deliveries."""
        if not self.sinks:
            return
        protocol = routes.PASSKIT_PROTOCOL[state.protocol]
        targets = [s for s in self.sinks.values() if s.wants(event, protocol, state.class_id)]
        body = webhook_body(event, pass_id, state)  # as the pass is now, not when sent
        for sink in targets:
            delivery = WebhookDelivery(sink.target_url, WEBHOOK_METHOD[event], event, pass_id)
            self.webhook_deliveries.append(delivery)
            if self.deliver is not None:
                self.deliver(Webhook(delivery, body))

    # --- accessors ---------------------------------------------------------------------------

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

    def _now(self) -> str:
        return rfc3339(self.wall_clock())

    # --- addressing --------------------------------------------------------------------------

    def _pass(self, pass_id: str, protocol: str) -> PassState:
        forced = self._forced.get(pass_id)
        if forced is not None:
            raise _Forced(forced)
        state = self._issued(pass_id, protocol)
        if state is None or state.protocol != protocol:
            raise Refusal(NOT_FOUND, f"{_NOUN[protocol]} {pass_id} not found")
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
                raise Refusal(INVALID_ARGUMENT, f"{class_key} is required with externalId")
            found = self._by_external.get((protocol, class_id, external))
            if found is None:
                raise Refusal(NOT_FOUND, f"{_NOUN[protocol]} {class_id}/{external} not found")
            return found, self._pass(found, protocol)
        raise Refusal(INVALID_ARGUMENT, f"id or externalId and {class_key} required")

    def _ticket_addressed(self, ticket: Any) -> tuple[str, PassState]:
        """A TicketId or Ticket: `ticketId`/`id`, or a ticket number within a production."""
        if not isinstance(ticket, dict):
            raise Refusal(INVALID_ARGUMENT, "ticket required")
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
                raise Refusal(NOT_FOUND, f"ticket {production}/{value} not found")
            return found, self._pass(found, "EVENT_TICKET")
        raise Refusal(INVALID_ARGUMENT, "ticket id or ticket number and production id required")

    # --- operations: passes ------------------------------------------------------------------

    @_operation
    def set_points(self, body: JsonObject) -> Answer:
        """members.SetPoints: a positive `points` or `tierPoints` sets it, a `reset*` flag
        zeroes it; answers MemberPoints."""
        self._heard(ROUTE_SET_POINTS, body)
        pass_id, state = self._addressed(body, "MEMBERSHIP", "programId")
        before = state.snapshot()
        _apply_points(state, body)
        self._updated(pass_id, state, before)
        return Answer(200, member_points_json(pass_id, state))

    @_operation
    def update_member(self, body: JsonObject) -> Answer:
        self._heard(ROUTE_UPDATE_MEMBER, body)
        pass_id, state = self._addressed(body, "MEMBERSHIP", "programId")
        program = body.get("programId")
        if isinstance(program, str) and program and state.class_id and program != state.class_id:
            raise Refusal(INVALID_ARGUMENT, "a member cannot move to another program")
        before = state.snapshot()
        tier = body.get("tierId")
        if isinstance(tier, str) and tier:  # PATCH applies every non-empty field
            state.tier_id = tier
        points = body.get("points")
        if isinstance(points, int | float) and not isinstance(points, bool) and points:
            state.points = points
        self._apply_metadata(state, body)
        self._updated(pass_id, state, before)
        return Answer(200, {"id": pass_id})

    @_operation
    def update_coupon(self, body: JsonObject) -> Answer:
        self._heard(ROUTE_UPDATE_COUPON, body)
        pass_id, state = self._addressed(body, "COUPON", "campaignId")
        before = state.snapshot()
        self._apply_metadata(state, body)
        self._updated(pass_id, state, before)
        return Answer(200, {"id": pass_id})

    @_operation
    def update_ticket(self, body: JsonObject) -> Answer:
        self._heard(ROUTE_UPDATE_TICKET, body)
        pass_id, state = self._ticket_addressed(body)
        before = state.snapshot()
        self._apply_metadata(state, body)
        self._updated(pass_id, state, before)
        return Answer(200, {"id": pass_id})

    @_operation
    def redeem_coupon(self, body: JsonObject) -> Answer:
        self._heard(ROUTE_REDEEM_COUPON, body)
        pass_id, state = self._addressed(body, "COUPON", "campaignId")
        # grpc-gateway writes FAILED_PRECONDITION as 400, for a repeat and for a coupon that
        # cannot be used alike: only the coupon's status tells them apart.
        if state.redeemed:
            raise Refusal(FAILED_PRECONDITION, "coupon has already been redeemed")
        if state.voided:
            raise Refusal(FAILED_PRECONDITION, "coupon has been voided")
        if state.expired:
            raise Refusal(FAILED_PRECONDITION, "coupon has expired")
        state.redeemed = True
        self._updated(pass_id, state, None)
        return Answer(200, {"id": pass_id})

    @_operation
    def validate_ticket(self, body: JsonObject) -> Answer:
        """ValidateTicketResponse; a ticket used up answers as `repeat_validation` says."""
        self._heard(ROUTE_VALIDATE_TICKET, body)
        pass_id, state = self._ticket_addressed(body.get("ticket"))
        if state.redeemed:
            if self.repeat_validation == "refused":
                raise Refusal(FAILED_PRECONDITION, "ticket has already been redeemed")
            return Answer(200, {"valid": False, "ticket": ticket_json(pass_id, state)})
        if state.expired or state.voided:
            return Answer(200, {"valid": False, "ticket": ticket_json(pass_id, state)})
        state.validations += 1
        limit = body.get("maxNumberOfValidations") or 0
        if isinstance(limit, int) and limit and state.validations >= limit:
            state.redeemed = True
        self._updated(pass_id, state, None)
        return Answer(200, {"valid": True, "ticket": ticket_json(pass_id, state)})

    @_operation
    def get_member(self, member_id: str) -> Answer:
        return Answer(200, member_json(member_id, self._pass(member_id, "MEMBERSHIP")))

    @_operation
    def get_coupon(self, coupon_id: str) -> Answer:
        return Answer(200, coupon_json(coupon_id, self._pass(coupon_id, "COUPON")))

    @_operation
    def get_ticket(self, ticket_id: str) -> Answer:
        return Answer(200, ticket_json(ticket_id, self._pass(ticket_id, "EVENT_TICKET")))

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
            raise Refusal(INVALID_ARGUMENT, "metaData must map strings to strings")
        if not metadata:  # an empty map is a falsey value: ignored
            return
        if self.merge_metadata:
            state.metadata.update(metadata)
        else:
            state.metadata = dict(metadata)
        if self.message_field in metadata:
            state.messages.append(metadata[self.message_field])

    # --- operations: lists and counts --------------------------------------------------------

    @_operation
    def list_members(self, program_id: str, body: JsonObject) -> Stream:
        self._heard(ROUTE_LIST_MEMBERS, body)
        return self._pass_list(_MEMBERS, program_id, body)

    @_operation
    def count_members(self, program_id: str, body: JsonObject) -> Answer:
        self._heard(ROUTE_COUNT_MEMBERS, body)
        return self._pass_count(_MEMBERS, program_id, body)

    @_operation
    def list_coupons(self, campaign_id: str, body: JsonObject) -> Stream:
        self._heard(ROUTE_LIST_COUPONS, body)
        return self._pass_list(_COUPONS, campaign_id, body)

    @_operation
    def count_coupons(self, campaign_id: str, body: JsonObject) -> Answer:
        self._heard(ROUTE_COUNT_COUPONS, body)
        return self._pass_count(_COUPONS, campaign_id, body)

    @_operation
    def list_tickets(self, body: JsonObject) -> Stream:
        self._heard(ROUTE_LIST_TICKETS, body)
        return self._pass_list(_TICKETS, _production_of(body), body)

    @_operation
    def count_tickets(self, body: JsonObject) -> Answer:
        self._heard(ROUTE_COUNT_TICKETS, body)
        return self._pass_count(_TICKETS, _production_of(body), body)

    def _pass_list(self, listing: _Listing, class_id: str, body: JsonObject) -> Stream:
        # A class PassKit does not have streams nothing, like one without passes: what
        # PassKit answers for an unknown program, campaign or production is undocumented.
        query = self._query(listing.list_route, listing.filters, body)
        rows = self._pass_rows(listing.protocol, class_id, query.ascending)
        generated = self._generated.get(class_id) if listing.protocol == "MEMBERSHIP" else None

        def line(row: Row[PassState | int]) -> str:
            pass_id, status, item = row
            if isinstance(item, PassState):
                return result_line(listing.render(pass_id, item))
            assert generated is not None
            return generated.line(item, status)

        return Stream(map(line, query.window(rows)))

    def _pass_count(self, listing: _Listing, class_id: str, body: JsonObject) -> Answer:
        query = self._query(listing.count_route, listing.filters, body)
        total = query.total(self._pass_rows(listing.protocol, class_id, ascending=True))
        return Answer(200, {"total": total})

    def _query(self, route: str, fields: Mapping[str, FilterField], body: JsonObject) -> Query:
        if body.get("emailAsCsv") is True:
            raise Refusal(INVALID_ARGUMENT, "emailAsCsv is not simulated by the fake")

        def note(key: str) -> None:
            self.ignored_fields[f"{route} {key}"] += 1

        return query_of(body.get("filters"), fields, note)

    def _pass_rows(
        self, protocol: str, class_id: str, ascending: bool
    ) -> Iterator[Row[PassState | int]]:
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
        self, generated: GeneratedMembers, ascending: bool
    ) -> Iterator[Row[PassState | int]]:
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

    # --- operations: sink subscriptions ------------------------------------------------------

    @_operation
    def create_sink(self, body: JsonObject) -> Answer:
        """Answers io.Id: PassKit assigns the id."""
        self._heard(ROUTE_CREATE_SINK, body)
        if body.get("id"):
            raise Refusal(INVALID_ARGUMENT, "id must not be set: PassKit assigns it")
        sink_id = f"sink{next(self._sink_ids):018d}"
        now = self._now()
        self.sinks[sink_id] = sink_of(sink_id, body, created_at=now, updated_at=now)
        return Answer(200, {"id": sink_id})

    @_operation
    def update_sink(self, body: JsonObject) -> Answer:
        self._heard(ROUTE_UPDATE_SINK, body)
        sink_id = body.get("id")
        if not isinstance(sink_id, str) or not sink_id:
            raise Refusal(INVALID_ARGUMENT, "id is required")
        old = self.sinks.get(sink_id)
        if old is None:
            raise Refusal(NOT_FOUND, f"subscription {sink_id} not found")
        # Replaced whole: createdAt stays, as PassKit sets it.
        self.sinks[sink_id] = sink_of(sink_id, body, old.created_at, updated_at=self._now())
        return Answer(200, {"id": sink_id})

    @_operation
    def list_sinks(self, body: JsonObject) -> Stream:
        """The subscriptions of a class and protocol (either may be left out), in creation
        order, descending unless `filters.orderAsc`."""
        self._heard(ROUTE_LIST_SINKS, body)
        query = self._query(ROUTE_LIST_SINKS, SINK_FILTERS, body)
        class_id = body.get("classId") or ""
        protocol = (
            enum(body["protocol"], PROTOCOL_NUMBERS, "protocol") if body.get("protocol") else ""
        )
        sinks = [
            sink
            for sink in self.sinks.values()
            if class_id in ("", sink.class_id) and protocol in ("", sink.protocol)
        ]
        if not query.ascending:
            sinks.reverse()
        rows = ((sink.id, sink.status, sink) for sink in sinks)
        return Stream(result_line(sink.to_json()) for _, _, sink in query.window(rows))

    @_operation
    def get_sink(self, protocol: str, subscription_id: str) -> Answer:
        return Answer(200, self._sink_at(protocol, subscription_id).to_json())

    @_operation
    def delete_sink(self, protocol: str, subscription_id: str) -> Answer:
        del self.sinks[self._sink_at(protocol, subscription_id).id]
        return Answer(200, {})  # google.protobuf.Empty

    def _sink_at(self, protocol: str, subscription_id: str) -> SinkSubscription:
        """A subscription as its path names it: under its own protocol (name or number)."""
        name = enum(protocol, PROTOCOL_NUMBERS, "protocol")
        sink = self.sinks.get(subscription_id)
        if sink is None or sink.protocol != name:
            raise Refusal(NOT_FOUND, f"subscription {subscription_id} not found")
        return sink

    # --- operations: messages, programs, tiers, templates ------------------------------------

    @_operation
    def create_message(self, body: JsonObject) -> Answer:
        """Answers io.Id; a title and plain text are required."""
        self._heard(ROUTE_CREATE_MESSAGE, body)
        title, text = body.get("title"), body.get("plainTextContent")
        if not (isinstance(title, str) and title and isinstance(text, str) and text):
            raise Refusal(INVALID_ARGUMENT, "title and plainTextContent are required")
        message_id = f"msg{next(self._message_ids):019d}"
        self._messages[message_id] = MessageState(title, text)
        return Answer(200, {"id": message_id})

    @_operation
    def get_message(self, message_id: str) -> Answer:
        message = self._messages.get(message_id)
        if message is None:
            raise Refusal(NOT_FOUND, f"message {message_id} not found")
        payload = {"id": message_id, "title": message.title, "plainTextContent": message.text}
        return Answer(200, payload)

    @_operation
    def send_message(self, body: JsonObject) -> Answer:
        """SendMessageResponse `{"count"}`: the passes of this account it reached."""
        self._heard(ROUTE_SEND_MESSAGE, body)
        message_id = body.get("messageId")
        message = self._messages.get(message_id) if isinstance(message_id, str) else None
        if message is None or not isinstance(message_id, str):
            raise Refusal(NOT_FOUND, f"message {message_id} not found")
        target = body.get("passIds")
        ids = target.get("ids") if isinstance(target, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise Refusal(INVALID_ARGUMENT, "passIds.ids (or protocol) required")
        count = 0
        for pass_id in dict.fromkeys(ids):  # a repeated id in one request is one pass
            state = None if pass_id in self._forced else self._issued(pass_id, "MEMBERSHIP")
            if state is None:
                continue  # not a pass of this account (or forced to fail): not counted
            state.bulk_messages.append(message_id)
            count += 1
        message.sent_to += count
        return Answer(200, {"count": count})

    @_operation
    def get_program(self, program_id: str) -> Answer:
        program = self._programs.get(program_id)
        if program is None:
            raise Refusal(NOT_FOUND, f"program {program_id} not found")
        return Answer(200, dict(program))

    @_operation
    def get_tier(self, program_id: str, tier_id: str) -> Answer:
        tier = self._tiers.get((program_id, tier_id))
        if tier is None:
            raise Refusal(NOT_FOUND, f"tier {tier_id} of program {program_id} not found")
        return Answer(200, dict(tier))

    @_operation
    def get_template(self, template_id: str) -> Answer:
        template = self._templates.get(template_id)
        if template is None:
            raise Refusal(NOT_FOUND, f"template {template_id} not found")
        return Answer(200, json.loads(json.dumps(template)))


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
        raise Refusal(INVALID_ARGUMENT, "points, secondaryPoints or tierPoints required")


def _production_of(body: JsonObject) -> str:
    """The production a ticket list or count is of (TicketListRequest: one is required)."""
    for key in ("eventId", "eventFilterByVenueAndStart", "ticketTypeId", "ticketTypeUid"):
        if body.get(key):
            raise Refusal(INVALID_ARGUMENT, f"{key} is not simulated by the fake")
    production = body.get("productionId")
    if isinstance(production, str) and production:
        return production
    if body.get("productionUid"):
        raise Refusal(INVALID_ARGUMENT, "productionUid is not simulated: give productionId")
    raise Refusal(INVALID_ARGUMENT, "productionId or productionUid is required")


def subject_of(path: tuple[str, ...], body: Any) -> str | None:
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


def issued_ids(*prefixes: str) -> Callable[[str], bool]:
    """`issued=` for passes created in bulk: every id with one of these prefixes."""
    return lambda pass_id: pass_id.startswith(prefixes)


def ids_of(values: Iterable[str]) -> Callable[[str], bool]:
    """`issued=` for a known set of ids."""
    known = frozenset(values)
    return known.__contains__
