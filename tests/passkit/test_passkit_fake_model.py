"""The fake PassKit's model driven directly, without HTTP: each operation takes the decoded
request and answers as PassKit would (points, messages, coupons, tickets, the Messages API,
lists and counts, sink subscriptions), and the webhooks and request log it keeps."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from daemon.passkit import routes
from daemon.testing.fakepasskit_model import (
    NO_ANSWER,
    PassKitModel,
    Protocol,
    RepeatValidation,
    Webhook,
    issued_ids,
)
from daemon.testing.fakepasskit_protos import (
    ROUTE_GET_MEMBER,
    ROUTE_LIST_MEMBERS,
    ROUTE_SET_POINTS,
    ROUTE_UPDATE_MEMBER,
    Answer,
    Stream,
)

T0 = 1_714_557_600  # 2024-05-01T10:00:00Z
FIELD = "loyaltydMessage"
Json = dict[str, Any]


class Clock:
    def __init__(self) -> None:
        self.at = float(T0)

    def __call__(self) -> float:
        return self.at


def stamp(seconds: int) -> str:
    """The RFC 3339 timestamp `seconds` after T0 (within the hour)."""
    return f"2024-05-01T10:{seconds // 60:02d}:{seconds % 60:02d}Z"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def model(clock: Clock) -> PassKitModel:
    return PassKitModel(wall_clock=clock)


def ok(answer: Answer | Stream) -> Json:
    """The body of a 200 answer."""
    assert isinstance(answer, Answer) and answer.status == 200, answer
    return answer.payload


def refused(answer: Answer | Stream) -> tuple[int, int]:
    """(HTTP status, gRPC code) of a refusal, checking grpc-gateway's error body."""
    assert isinstance(answer, Answer), answer
    assert set(answer.payload) == {"code", "message", "details"}
    return answer.status, answer.payload["code"]


def records(answer: Answer | Stream) -> list[Json]:
    """The records a list streams, in order."""
    assert isinstance(answer, Stream), answer
    return [json.loads(line)["result"] for line in answer.lines]


def ids(answer: Answer | Stream) -> list[str]:
    return [record["id"] for record in records(answer)]


def where(*tests: tuple[str, str], condition: str = "AND") -> Json:
    fields = [{"filterField": f, "filterValue": v, "filterOperator": "eq"} for f, v in tests]
    return {"condition": condition, "fieldFilters": fields}


def sink_body(events: tuple[str, ...] = ("PASS_EVENT_INSTALLED",), **changes: Any) -> Json:
    return {
        "classId": "prog",
        "protocol": "MEMBERSHIP",
        "passEventId": list(events),
        "status": "INTEGRATION_ACTIVE",
        "configType": "WEBHOOK",
        "configuration": json.dumps({"targetUrl": "https://hooks.example/x"}),
        **changes,
    }


# --- points --------------------------------------------------------------------------------------


def test_set_points_sets_the_balance_and_a_reset_zeroes_it(model: PassKitModel) -> None:
    model.add_pass("m1", class_id="prog", external_id="M-1")
    assert ok(model.set_points({"id": "m1", "points": 250, "tierPoints": 40})) == {
        "id": "m1",
        "externalId": "M-1",
        "programId": "prog",
        "points": 250,
        "secondaryPoints": 0,
        "tierPoints": 40,
    }
    assert model.points_of("m1") == 250
    assert ok(model.set_points({"id": "m1", "resetPoints": True}))["points"] == 0
    state = model.state_of("m1")
    assert state is not None and (state.points, state.tier_points) == (0, 40)


@pytest.mark.parametrize(
    "body",
    [{"id": "m1", "points": 0}, {"id": "m1"}, {"points": 5}, {"externalId": "M-1", "points": 5}],
    ids=["zero", "no-points", "no-id", "external-id-without-program"],
)
def test_set_points_passkit_would_reject_is_invalid_argument(
    model: PassKitModel, body: Json
) -> None:
    """proto3 drops a zero, so PassKit sees no points; a pass needs an id or its class."""
    model.add_pass("m1", points=7)
    assert refused(model.set_points(body)) == (400, 3)
    assert model.points_of("m1") == 7


def test_a_pass_passkit_never_issued_is_not_found(model: PassKitModel) -> None:
    assert refused(model.set_points({"id": "nobody", "points": 1})) == (404, 5)
    model.issued = issued_ids("bulk")
    assert ok(model.set_points({"id": "bulk7", "points": 1}))["points"] == 1
    model.add_pass("c1", protocol="COUPON")
    assert refused(model.get_member("c1")) == (404, 5), "a coupon is not a member"


def test_a_pass_forced_to_fail_answers_its_status_until_cleared(model: PassKitModel) -> None:
    model.add_pass("m1")
    model.force_status("m1", 429, retry_after="7")
    answer = model.set_points({"id": "m1", "points": 3})
    assert isinstance(answer, Answer)
    assert (answer.status, answer.headers) == (429, {"Retry-After": "7"})
    model.clear_forced("m1")
    assert ok(model.set_points({"id": "m1", "points": 3}))["points"] == 3


# --- messages in the pass's own field ------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "update", "read"),
    [
        ("MEMBERSHIP", PassKitModel.update_member, PassKitModel.get_member),
        ("COUPON", PassKitModel.update_coupon, PassKitModel.get_coupon),
        ("EVENT_TICKET", PassKitModel.update_ticket, PassKitModel.get_ticket),
    ],
)
def test_a_message_written_to_the_field_is_kept_and_read_back(
    model: PassKitModel,
    protocol: Protocol,
    update: Callable[[PassKitModel, Json], Answer],
    read: Callable[[PassKitModel, str], Answer],
) -> None:
    model.add_pass("x1", protocol=protocol, metadata={"favourite": "margherita"})
    assert ok(update(model, {"id": "x1", "metaData": {FIELD: "Hi"}})) == {"id": "x1"}
    assert ok(update(model, {"id": "x1", "metaData": {FIELD: "Hi again"}})) == {"id": "x1"}
    assert model.messages_for("x1") == ["Hi", "Hi again"]
    expected = {"favourite": "margherita", FIELD: "Hi again"}
    assert ok(read(model, "x1"))["metaData"] == expected
    assert model.metadata_of("x1") == expected


def test_a_replacing_passkit_drops_the_keys_an_update_leaves_out(model: PassKitModel) -> None:
    model.merge_metadata = False
    model.add_pass("m1", metadata={"favourite": "margherita"})
    ok(model.update_member({"id": "m1", "metaData": {FIELD: "Hi"}}))
    assert model.metadata_of("m1") == {FIELD: "Hi"}


def test_an_update_applies_every_non_empty_field(model: PassKitModel) -> None:
    """PATCH semantics: a stray tierId moves the member; an empty map changes nothing."""
    model.add_pass("m1", class_id="prog", tier_id="gold", metadata={"k": "v"})
    ok(model.update_member({"id": "m1", "tierId": "silver", "metaData": {}}))
    assert (model.tier_of("m1"), model.metadata_of("m1")) == ("silver", {"k": "v"})
    moved = model.update_member({"id": "m1", "programId": "other", "metaData": {"k": "w"}})
    assert refused(moved) == (400, 3)
    assert refused(model.update_member({"id": "m1", "metaData": {FIELD: 5}})) == (400, 3)


def test_passes_are_addressed_by_external_id_within_their_class(model: PassKitModel) -> None:
    model.add_pass("m1", class_id="prog", external_id="M-1")
    model.add_pass("t1", protocol="EVENT_TICKET", class_id="prod", ticket_number="T-9")
    meta = {"metaData": {"k": "v"}}
    by_external = {"externalId": "M-1", "programId": "prog", **meta}
    assert ok(model.update_member(by_external)) == {"id": "m1"}
    elsewhere = {**by_external, "programId": "other"}
    assert refused(model.update_member(elsewhere)) == (404, 5)
    by_number = {"ticketNumber": "T-9", "event": {"production": {"id": "prod"}}, **meta}
    assert ok(model.update_ticket(by_number)) == {"id": "t1"}


def test_fields_passkit_would_ignore_are_counted(model: PassKitModel) -> None:
    model.add_pass("m1")
    ok(model.update_member({"id": "m1", "tierName": "gold", "metaData": {"k": "v"}}))
    records(model.list_members("prog", {"pageSize": 2, "filters": {"limt": 1}}))
    assert model.ignored_fields == {
        f"{ROUTE_UPDATE_MEMBER} tierName": 1,
        f"{ROUTE_LIST_MEMBERS} pageSize": 1,
        f"{ROUTE_LIST_MEMBERS} filters.limt": 1,
    }


# --- coupons and tickets -------------------------------------------------------------------------


def test_a_coupon_redeems_once_and_a_repeat_is_a_failed_precondition(
    model: PassKitModel,
) -> None:
    model.add_pass("c1", protocol="COUPON", class_id="camp")
    assert ok(model.redeem_coupon({"id": "c1"})) == {"id": "c1"}
    repeat = model.redeem_coupon({"id": "c1"})
    assert refused(repeat) == (400, 9)
    assert isinstance(repeat, Answer) and "already been redeemed" in repeat.payload["message"]
    assert ok(model.get_coupon("c1"))["status"] == "REDEEMED"
    assert model.redeemed("c1")


@pytest.mark.parametrize("state", ["expired", "voided"])
def test_an_expired_or_voided_coupon_is_refused_and_stays_unredeemed(
    model: PassKitModel, state: str
) -> None:
    model.add_pass("c1", protocol="COUPON", expired=state == "expired", voided=state == "voided")
    assert refused(model.redeem_coupon({"id": "c1"})) == (400, 9)
    assert ok(model.get_coupon("c1"))["status"] == "UNREDEEMED"


@pytest.mark.parametrize("repeat", ["invalid", "refused"])
def test_a_ticket_validates_until_used_up_then_answers_as_configured(
    model: PassKitModel, repeat: RepeatValidation
) -> None:
    model.repeat_validation = repeat
    model.add_pass("t1", protocol="EVENT_TICKET", class_id="prod", ticket_number="T-1")
    by_number = {"ticketNumber": {"productionId": "prod", "ticketNumber": "T-1"}}
    first = ok(model.validate_ticket({"ticket": by_number, "maxNumberOfValidations": 1}))
    assert (first["valid"], first["ticket"]["id"], first["ticket"]["status"]) == (
        True,
        "t1",
        "REDEEMED",
    )
    again = model.validate_ticket({"ticket": {"ticketId": "t1"}})
    if repeat == "refused":
        assert refused(again) == (400, 9)
    else:
        assert ok(again)["valid"] is False
    assert model.validations_of("t1") == 1
    assert refused(model.validate_ticket({"id": "t1"})) == (400, 3), "the ticket goes in ticket"


def test_an_expired_ticket_is_not_valid_and_not_counted(model: PassKitModel) -> None:
    model.add_pass("t1", protocol="EVENT_TICKET", expired=True)
    assert ok(model.validate_ticket({"ticket": {"ticketId": "t1"}}))["valid"] is False
    assert model.validations_of("t1") == 0


# --- the Messages API ----------------------------------------------------------------------------


def test_a_message_is_created_read_and_sent_to_the_passes_it_reaches(
    model: PassKitModel,
) -> None:
    for n in range(3):
        model.add_pass(f"m{n}")
    model.force_status("m2", 503)
    message_id = ok(model.create_message({"title": "Joe's", "plainTextContent": "2x today"}))["id"]
    assert ok(model.get_message(message_id)) == {
        "id": message_id,
        "title": "Joe's",
        "plainTextContent": "2x today",
    }
    send = {"messageId": message_id, "passIds": {"ids": ["m0", "m1", "m1", "m2", "nobody"]}}
    assert ok(model.send_message(send)) == {"count": 2}, "once each; not forced, not unknown"
    assert ok(model.send_message({**send, "passIds": {"ids": ["m0"]}})) == {"count": 1}
    assert model.bulk_recipients() == {"m0": 2, "m1": 1}
    assert model.bulk_messages_for("m0") == [message_id, message_id]
    held = model.message(message_id)
    assert held is not None and held.sent_to == 3


def test_the_messages_api_refuses_what_passkit_would(model: PassKitModel) -> None:
    assert refused(model.create_message({"title": "", "plainTextContent": "x"})) == (400, 3)
    assert refused(model.get_message("msg1")) == (404, 5)
    send = {"messageId": "msg1", "passIds": {"ids": ["m1"]}}
    assert refused(model.send_message(send)) == (404, 5)
    message_id = ok(model.create_message({"title": "t", "plainTextContent": "x"}))["id"]
    assert refused(model.send_message({"messageId": message_id})) == (400, 3)


# --- lists and counts ----------------------------------------------------------------------------


def test_a_list_pages_in_creation_order_and_a_count_ignores_the_page(
    model: PassKitModel,
) -> None:
    members = [f"m{n:02d}" for n in range(30)]
    for pass_id in members:
        model.add_pass(pass_id, class_id="prog")
    model.add_pass("elsewhere", class_id="other")
    model.add_pass("c1", protocol="COUPON", class_id="prog")
    assert ids(model.list_members("prog", {})) == members[::-1][:25], "newest first, 25"
    every = {"filters": {"limit": -1, "orderAsc": True}}
    assert ids(model.list_members("prog", every)) == members
    page = {"filters": {"limit": 5, "offset": 25, "orderAsc": True}}
    assert ids(model.list_members("prog", page)) == members[25:]
    assert ok(model.count_members("prog", page)) == {"total": 30}
    assert records(model.list_members("nobody", {})) == []


def test_filters_test_the_status_and_the_id(model: PassKitModel) -> None:
    for n, status in enumerate(["PASS_ISSUED", "PASS_INSTALLED", "PASS_UNINSTALLED"] * 2):
        model.add_pass(f"m{n}", class_id="prog", status=status)
    installed = {"filters": {"filterGroups": [where(("passStatus", "PASS_INSTALLED"))]}}
    assert sorted(ids(model.list_members("prog", installed))) == ["m1", "m4"]
    assert ok(model.count_members("prog", installed)) == {"total": 2}
    either = where(("id", "m0"), ("id", "m1"), condition="OR")
    both = {"filters": {"filterGroups": [either, where(("passStatus", "PASS_INSTALLED"))]}}
    assert ids(model.list_members("prog", both)) == ["m1"]
    bad = {"filters": {"filterGroups": [where(("passStatus", "INSTALLED"))]}}
    assert refused(model.list_members("prog", bad)) == (400, 3)
    assert refused(model.count_members("prog", {"filters": {"orderBy": "points"}})) == (400, 3)


def test_coupons_list_by_campaign_and_tickets_by_production(model: PassKitModel) -> None:
    model.add_pass("c1", protocol="COUPON", class_id="camp", redeemed=True)
    model.add_pass("c2", protocol="COUPON", class_id="other")
    model.add_pass("t1", protocol="EVENT_TICKET", class_id="prod", ticket_number="T-1")
    [coupon] = records(model.list_coupons("camp", {}))
    assert (coupon["id"], coupon["campaignId"], coupon["status"]) == ("c1", "camp", "REDEEMED")
    by_id = {"filters": {"filterGroups": [where(("passkitId", "c1"))]}}
    assert ok(model.count_coupons("camp", by_id)) == {"total": 1}
    [ticket] = records(model.list_tickets({"productionId": "prod"}))
    assert (ticket["ticketNumber"], ticket["production"]) == ("T-1", {"id": "prod"})
    assert ok(model.count_tickets({"productionId": "prod"})) == {"total": 1}
    assert refused(model.list_tickets({})) == (400, 3), "productionId is required"


def test_a_list_sees_a_change_made_while_it_streams(model: PassKitModel) -> None:
    """Read as it streams, like a database cursor."""
    for n in range(3):
        model.add_pass(f"m{n}", class_id="prog")
    stream = model.list_members("prog", {"filters": {"orderAsc": True}})
    assert isinstance(stream, Stream)
    first = json.loads(next(stream.lines))["result"]
    model.install("m2")
    rest = [json.loads(line)["result"] for line in stream.lines]
    assert first["passMetaData"]["status"] == "PASS_ISSUED"
    assert rest[-1]["passMetaData"]["status"] == "PASS_INSTALLED"


def test_a_deleted_pass_is_gone_from_reads_lists_and_counts(model: PassKitModel) -> None:
    model.issued = issued_ids("m")
    model.add_pass("m1", class_id="prog", external_id="M-1")
    model.add_pass("m2", class_id="prog")
    model.delete("m1")
    assert refused(model.get_member("m1")) == (404, 5), "issued cannot bring it back"
    by_external = {"externalId": "M-1", "programId": "prog", "points": 3}
    assert refused(model.set_points(by_external)) == (404, 5)
    assert ids(model.list_members("prog", {})) == ["m2"]
    assert ok(model.count_members("prog", {})) == {"total": 1}
    with pytest.raises(KeyError):
        model.install("m1")


def test_generated_members_are_listed_and_what_happens_to_one_sticks(
    model: PassKitModel,
) -> None:
    model.add_generated_members("big", 10, prefix="g", points=lambda i: i * 2.0)
    ok(model.set_points({"id": "g3", "points": 99}))
    model.delete("g4")
    every = {"filters": {"limit": -1, "orderAsc": True}}
    listed = records(model.list_members("big", every))
    assert [m["id"] for m in listed][:4] == ["g1", "g2", "g3", "g5"]
    assert (listed[1]["points"], listed[2]["points"]) == (4.0, 99)
    assert listed[0] == ok(model.get_member("g1")), "a generated line is what a read answers"
    assert ok(model.count_members("big", {})) == {"total": 9}


# --- sink subscriptions and webhooks -------------------------------------------------------------


def test_a_sink_is_created_read_listed_replaced_and_deleted(
    model: PassKitModel, clock: Clock
) -> None:
    sink_id = ok(model.create_sink(sink_body()))["id"]
    other = ok(model.create_sink(sink_body(classId="camp", protocol="SINGLE_USE_COUPON")))["id"]
    expected = {**sink_body(), "id": sink_id, "createdAt": stamp(0), "updatedAt": stamp(0)}
    assert ok(model.get_sink("MEMBERSHIP", sink_id)) == expected
    assert ok(model.get_sink("100", sink_id)) == expected, "the protocol by its number"
    assert refused(model.get_sink("EVENT_TICKETING", sink_id)) == (404, 5)
    assert ids(model.list_sinks({})) == [other, sink_id]
    assert ids(model.list_sinks({"classId": "prog"})) == [sink_id]
    clock.at = T0 + 60
    replaced = sink_body(events=("PASS_EVENT_UNINSTALLED",), id=sink_id)
    assert ok(model.update_sink(replaced)) == {"id": sink_id}
    sink = ok(model.get_sink("MEMBERSHIP", sink_id))
    assert (sink["passEventId"], sink["createdAt"], sink["updatedAt"]) == (
        ["PASS_EVENT_UNINSTALLED"],
        stamp(0),
        stamp(60),
    )
    assert ok(model.delete_sink("MEMBERSHIP", sink_id)) == {}
    assert set(model.sinks) == {other}
    assert refused(model.delete_sink("MEMBERSHIP", sink_id)) == (404, 5)


@pytest.mark.parametrize(
    "body",
    [
        sink_body(id="mine"),
        sink_body(classId=""),
        sink_body(passEventId=[]),
        sink_body(configType="ZAPIER"),
        sink_body(configuration=json.dumps({"targetUrl": "ftp://x"})),
    ],
    ids=["id-on-create", "no-class", "no-events", "not-a-webhook", "not-http"],
)
def test_a_sink_passkit_would_refuse_is_invalid_argument(model: PassKitModel, body: Json) -> None:
    assert refused(model.create_sink(body)) == (400, 3)
    assert not model.sinks


def test_a_change_is_due_at_each_subscription_that_wants_it(clock: Clock) -> None:
    due: list[Webhook] = []
    model = PassKitModel(wall_clock=clock, deliver=due.append)
    model.add_pass("m1", class_id="prog", external_id="M-1")
    events = ("PASS_EVENT_INSTALLED", "PASS_EVENT_RECORD_UPDATED")
    ok(model.create_sink(sink_body(events=events)))
    ok(model.create_sink(sink_body(classId="other")))
    clock.at = T0 + 1
    model.install("m1")
    for points in (10, 10, 11):  # the repeat changes nothing: no event
        ok(model.set_points({"id": "m1", "points": points}))
    assert [(w.delivery.method, w.body["event"]) for w in due] == [
        ("PUT", "PASS_EVENT_INSTALLED"),
        ("PUT", "PASS_EVENT_RECORD_UPDATED"),
        ("PUT", "PASS_EVENT_RECORD_UPDATED"),
    ]
    installed = due[0].body["pass"]
    assert (installed["id"], installed["protocol"], installed["externalId"]) == (
        "m1",
        "MEMBERSHIP",
        "M-1",
    )
    assert installed["metadata"]["firstInstalledAt"] == stamp(1)
    assert model.webhook_deliveries == [w.delivery for w in due]
    assert {w.delivery.url for w in due} == {"https://hooks.example/x"}


def test_a_webhook_by_hand_can_be_about_a_deleted_pass(model: PassKitModel) -> None:
    model.add_pass("m1", class_id="prog")
    model.install("m1")
    model.delete("m1")
    late = model.webhook("https://hooks.example/late", "PASS_EVENT_INSTALLED", "m1")
    assert (late.delivery.method, late.delivery.status) == ("PUT", None)
    assert late.body["pass"]["metadata"]["status"] == "PASS_INSTALLED"
    assert model.webhook_deliveries == [late.delivery]
    with pytest.raises(KeyError):
        model.webhook("https://hooks.example/late", "PASS_EVENT_INSTALLED", "nobody")


# --- routes and the request log ------------------------------------------------------------------


def test_every_route_of_the_shared_table_has_an_operation(model: PassKitModel) -> None:
    for endpoint in routes.ALL:
        path = tuple(f"pk{n}" for n in range(endpoint.parameters))
        answer = model.answer(endpoint.route, path, {})
        assert isinstance(answer, Answer | Stream), endpoint.route
    assert model.answer(routes.GET_MEMBER.route, ("nobody",), {}) == model.get_member("nobody")


def test_the_request_log_counts_routes_subjects_and_latency(model: PassKitModel) -> None:
    model.record(ROUTE_SET_POINTS, (), {"id": "m1", "points": 1}, status=200, at=1.0, latency=0.2)
    model.record(ROUTE_GET_MEMBER, ("m2",), None, status=200, at=2.0, latency=0.4)
    model.record(ROUTE_GET_MEMBER, ("m3",), None, status=NO_ANSWER, at=3.0, latency=0.0)
    assert [(r.route, r.pass_id, r.status) for r in model.requests] == [
        (ROUTE_SET_POINTS, "m1", 200),
        (ROUTE_GET_MEMBER, "m2", 200),
        (ROUTE_GET_MEMBER, "m3", NO_ANSWER),
    ]
    assert (model.count(), model.count(ROUTE_GET_MEMBER)) == (3, 2)
    assert model.mean_latency() == pytest.approx(0.3), "a request never answered waited none"
    model.reset_requests()
    assert (model.requests, model.count(), model.mean_latency()) == ([], 0, 0.0)


def test_bodies_are_left_out_of_the_log_when_asked(clock: Clock) -> None:
    model = PassKitModel(wall_clock=clock, record_bodies=False)
    model.record(ROUTE_SET_POINTS, (), {"id": "m1"}, status=200, at=1.0, latency=0.0)
    [request] = model.requests
    assert (request.pass_id, request.body) == ("m1", None)


def test_the_model_imports_nothing_asynchronous() -> None:
    """Plain synchronous Python: no aiohttp, asyncio or JWT library behind it."""
    probe = (
        "import sys, daemon.testing.fakepasskit_model\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'aiohttp', 'asyncio', 'jwt', 'asyncpg'}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
