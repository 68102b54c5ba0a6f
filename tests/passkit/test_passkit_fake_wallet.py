"""The fake PassKit's wallet truth over real HTTP: passMetaData and the wallet knobs, the list
and count routes as grpc-gateway streams (filters, paging, stream faults), deleted passes,
sink subscriptions and the webhooks they receive, and generated million-member programs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
from aiohttp import web

from daemon.testing.fakepasskit import (
    NO_ANSWER,
    ROUTE_COUNT_MEMBERS,
    ROUTE_LIST_MEMBERS,
    FakePassKit,
    LatencyModel,
)
from tests.passkit_fixtures import API_KEY, API_SECRET

T0 = 1_714_557_600  # 2024-05-01T10:00:00Z
MEMBERS = "/members/member/list/{}"
COUNT = "/members/count/{}"
SINK = "/integrations/sink"
Json = dict[str, Any]


class Clock:
    """The fake's wall clock, moved by the test, so timestamps are exact."""

    def __init__(self) -> None:
        self.at = float(T0)

    def __call__(self) -> float:
        return self.at


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture(loop_scope="function")
async def fake(clock: Clock) -> AsyncIterator[FakePassKit]:
    async with FakePassKit(API_KEY, API_SECRET, wall_clock=clock) as server:
        yield server


@dataclass
class Receiver:
    """A webhook endpoint: every request it got as (method, path, JSON body)."""

    url: str
    status: int = 200
    received: list[tuple[str, str, Json]] = field(default_factory=list)


@pytest_asyncio.fixture(loop_scope="function")
async def receiver() -> AsyncIterator[Receiver]:
    got = Receiver(url="")

    async def handle(request: web.Request) -> web.Response:
        got.received.append((request.method, request.path, await request.json()))
        return web.Response(status=got.status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    got.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield got
    finally:
        await runner.cleanup()


def token() -> str:
    """As the client's _TokenSigner signs it, at the fake's pinned clock."""
    claims = {"uid": API_KEY, "iat": T0 - 30, "exp": T0 + 10**8}
    return jwt.encode(claims, API_SECRET, algorithm="HS256")


async def call(fake: FakePassKit, method: str, path: str, body: Any = None) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(headers={"Authorization": token()}) as session,
        session.request(method, fake.url + path, json=body) as response,
    ):
        return response.status, await response.text()


async def answer(fake: FakePassKit, method: str, path: str, body: Any = None) -> tuple[int, Json]:
    status, text = await call(fake, method, path, body)
    return status, json.loads(text)


async def lines(fake: FakePassKit, path: str, body: Any = None) -> tuple[int, list[Json]]:
    status, text = await call(fake, "POST", path, {} if body is None else body)
    assert text == "" or text.endswith("\n"), "every line ends with the delimiter"
    return status, [json.loads(line) for line in text.splitlines()]


async def listed(fake: FakePassKit, program: str, **filters: Any) -> list[str]:
    """The ids a member list answers, in order."""
    status, got = await lines(fake, MEMBERS.format(program), {"filters": filters})
    assert status == 200
    return [line["result"]["id"] for line in got]


async def counted(fake: FakePassKit, program: str, **filters: Any) -> int:
    status, got = await answer(fake, "POST", COUNT.format(program), {"filters": filters})
    assert status == 200
    return int(got["total"])


def where(*tests: tuple[str, str], condition: str = "AND") -> Json:
    """A filter group of `eq` tests."""
    field_filters = [
        {"filterField": name, "filterValue": value, "filterOperator": "eq"} for name, value in tests
    ]
    return {"condition": condition, "fieldFilters": field_filters}


def stamp(seconds: int) -> str:
    """The RFC 3339 timestamp `seconds` after T0 (within the hour)."""
    return f"2024-05-01T10:{seconds // 60:02d}:{seconds % 60:02d}Z"


def wallet(status: str = "PASS_ISSUED", **stamps: int | None) -> Json:
    """passMetaData: `status`, issued at T0, and these timestamps (seconds after T0)."""
    names = [
        "firstInstalledAt",
        "lastInstalledAt",
        "firstUninstalledAt",
        "lastUninstalledAt",
        "invalidatedAt",
        "lastUpdatedAt",
    ]
    metadata: Json = {"status": status, "issueAt": stamp(0)}
    for name in names:
        seconds = stamps.get(name)
        metadata[name] = None if seconds is None else stamp(seconds)
    return metadata


def add_members(fake: FakePassKit, count: int, program: str = "prog") -> list[str]:
    ids = [f"m{n:02d}" for n in range(count)]
    for pass_id in ids:
        fake.add_pass(pass_id, class_id=program)
    return ids


# --- lists as grpc-gateway streams ---------------------------------------------------------------


async def test_a_list_is_a_chunked_stream_of_result_lines(fake: FakePassKit) -> None:
    fake.add_pass("m1", class_id="prog", points=12, tier_points=3, tier_id="gold")
    async with (
        aiohttp.ClientSession(headers={"Authorization": token()}) as session,
        session.post(fake.url + MEMBERS.format("prog"), json={}) as response,
    ):
        assert (response.status, response.content_type) == (200, "application/json")
        assert response.headers["Transfer-Encoding"] == "chunked"
        text = await response.text()
    assert text.endswith("}\n") and text.count("\n") == 1
    member = json.loads(text)["result"]
    assert (member["id"], member["programId"], member["points"]) == ("m1", "prog", 12)
    assert (member["tierPoints"], member["tierId"]) == (3, "gold")
    assert member["passMetaData"] == wallet()


async def test_a_list_answers_25_by_default_and_everything_with_minus_one(
    fake: FakePassKit,
) -> None:
    ids = add_members(fake, 40)
    assert len(await listed(fake, "prog")) == 25
    assert len(await listed(fake, "prog", limit=0)) == 25, "proto3's zero is no limit given"
    assert await listed(fake, "prog", limit=-1, orderAsc=True) == ids
    assert len(await listed(fake, "prog", limit=7)) == 7


async def test_a_list_is_newest_first_unless_ascending(fake: FakePassKit) -> None:
    """io.Filters: "ascending order if true, or descending order if false"."""
    ids = add_members(fake, 5)
    assert await listed(fake, "prog") == ids[::-1]
    assert await listed(fake, "prog", orderAsc=True, orderBy="created") == ids


async def test_offset_pages_through_every_member_once(fake: FakePassKit) -> None:
    ids = add_members(fake, 23)
    pages = [await listed(fake, "prog", limit=5, offset=o, orderAsc=True) for o in range(0, 25, 5)]
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    assert [pass_id for page in pages for pass_id in page] == ids
    assert await listed(fake, "prog", limit=-1, offset=20, orderAsc=True) == ids[20:]


async def test_pass_status_and_id_filters_with_and_or_groups(fake: FakePassKit) -> None:
    statuses = ["PASS_ISSUED", "PASS_INSTALLED", "PASS_UNINSTALLED", "PASS_INVALIDATED"] * 3
    for n, status in enumerate(statuses):
        fake.add_pass(f"m{n:02d}", class_id="prog", status=status)
    installed = [where(("passStatus", "PASS_INSTALLED"))]
    assert await listed(fake, "prog", filterGroups=installed, orderAsc=True) == [
        "m01",
        "m05",
        "m09",
    ]
    either = [
        where(("passStatus", "PASS_INSTALLED"), ("passStatus", "PASS_UNINSTALLED"), condition="OR")
    ]
    assert len(await listed(fake, "prog", filterGroups=either)) == 6
    one = [where(("passStatus", "PASS_INSTALLED"), ("id", "m05"))]
    assert await listed(fake, "prog", filterGroups=one) == ["m05"]
    groups_anded = [*either, where(("id", "m02"), ("id", "m03"), condition="OR")]
    assert await listed(fake, "prog", filterGroups=groups_anded) == ["m02"]
    none = [where(("passStatus", "PASS_INSTALLED"), ("id", "m00"))]
    assert await listed(fake, "prog", filterGroups=none) == []
    for groups, expected in [(installed, 3), (either, 6), (one, 1), (none, 0)]:
        assert await counted(fake, "prog", filterGroups=groups) == expected


async def test_a_count_applies_the_filters_but_not_the_page(fake: FakePassKit) -> None:
    add_members(fake, 40)
    assert await answer(fake, "POST", COUNT.format("prog"), {}) == (200, {"total": 40})
    assert await counted(fake, "prog", limit=5, offset=30) == 40


async def test_only_the_programs_own_members_are_listed(fake: FakePassKit) -> None:
    add_members(fake, 3)
    fake.add_pass("elsewhere", class_id="other")
    fake.add_pass("c1", protocol="COUPON", class_id="prog")
    fake.add_pass("t1", protocol="EVENT_TICKET", class_id="prog")
    assert sorted(await listed(fake, "prog")) == ["m00", "m01", "m02"]
    assert await counted(fake, "prog") == 3


async def test_a_program_without_members_streams_an_empty_200(fake: FakePassKit) -> None:
    assert await call(fake, "POST", MEMBERS.format("nobody"), {}) == (200, "")
    assert await answer(fake, "POST", COUNT.format("nobody"), {}) == (200, {"total": 0})


@pytest.mark.parametrize(
    "filters",
    [
        {"filterGroups": [where(("passStatus", "INSTALLED"))]},
        {"filterGroups": [where(("tierId", "gold"))]},
        {"filterGroups": [{"fieldFilters": [{"filterField": "id", "filterValue": "m1"}]}]},
        {"filterGroups": [{"condition": "XOR", "fieldFilters": []}]},
        {"filterGroups": [{"condition": "AND", "fieldFilters": []}]},
        {"orderBy": "points"},
        {"limit": -2},
        {"offset": -1},
        {"limit": "lots"},
    ],
    ids=[
        "bad-status",
        "unknown-field",
        "no-operator",
        "bad-condition",
        "empty-group",
        "order-by",
        "limit",
        "offset",
        "limit-type",
    ],
)
async def test_filters_the_fake_cannot_honour_are_refused(fake: FakePassKit, filters: Json) -> None:
    for path in (MEMBERS.format("prog"), COUNT.format("prog")):
        status, error = await answer(fake, "POST", path, {"filters": filters})
        assert (status, error["code"], error["details"]) == (400, 3, [])


async def test_unknown_request_and_filter_fields_are_counted_as_ignored(fake: FakePassKit) -> None:
    add_members(fake, 3)
    group = {**where(("id", "m01")), "negate": True}
    body = {"programId": "prog", "pageSize": 2, "filters": {"limt": 1, "filterGroups": [group]}}
    assert (await lines(fake, MEMBERS.format("prog"), body))[0] == 200
    assert fake.ignored_fields == {
        f"{ROUTE_LIST_MEMBERS} pageSize": 1,
        f"{ROUTE_LIST_MEMBERS} filters.limt": 1,
        f"{ROUTE_LIST_MEMBERS} filters.filterGroups.negate": 1,
    }


async def test_coupons_are_listed_and_counted_by_campaign(fake: FakePassKit) -> None:
    fake.add_pass("c1", protocol="COUPON", class_id="camp", external_id="C-1")
    fake.add_pass("c2", protocol="COUPON", class_id="camp", redeemed=True)
    fake.add_pass("c3", protocol="COUPON", class_id="other")
    status, got = await lines(fake, "/coupon/singleUse/coupons/list/camp", {})
    coupons = {line["result"]["id"]: line["result"] for line in got}
    assert status == 200 and set(coupons) == {"c1", "c2"}
    assert coupons["c1"]["campaignId"] == "camp" and coupons["c1"]["externalId"] == "C-1"
    assert (coupons["c1"]["status"], coupons["c2"]["status"]) == ("UNREDEEMED", "REDEEMED")
    assert coupons["c1"]["passMetaData"] == wallet()
    by_id = {"filters": {"filterGroups": [where(("passkitId", "c2"))]}}
    count = await answer(fake, "POST", "/coupon/singleUse/coupons/count/camp", by_id)
    assert count == (200, {"total": 1})


async def test_tickets_are_listed_by_production_as_limited_fields(fake: FakePassKit) -> None:
    fake.add_pass("t1", protocol="EVENT_TICKET", class_id="prod", ticket_number="T-1")
    fake.add_pass("t2", protocol="EVENT_TICKET", class_id="prod", status="PASS_INSTALLED")
    fake.add_pass("t3", protocol="EVENT_TICKET", class_id="other")
    status, got = await lines(fake, "/eventTickets/tickets/list", {"productionId": "prod"})
    tickets = {line["result"]["id"]: line["result"] for line in got}
    assert status == 200 and set(tickets) == {"t1", "t2"}
    assert tickets["t1"] == {
        "id": "t1",
        "ticketNumber": "T-1",
        "status": "ISSUED",
        "passMetaData": wallet(),
        "production": {"id": "prod"},
    }
    installed = {
        "productionId": "prod",
        "filters": {"filterGroups": [where(("passStatus", "PASS_INSTALLED"))]},
    }
    count = await answer(fake, "POST", "/eventTickets/tickets/count", installed)
    assert count == (200, {"total": 1})
    status, error = await answer(fake, "POST", "/eventTickets/tickets/list", {})
    assert (status, error["code"]) == (400, 3), "productionId or productionUid is required"


# --- stream faults and injected faults -----------------------------------------------------------


async def test_stream_error_after_ends_a_200_with_an_error_line(fake: FakePassKit) -> None:
    add_members(fake, 10)
    fake.stream_error_after = 3
    status, got = await lines(fake, MEMBERS.format("prog"), {"filters": {"limit": -1}})
    assert status == 200
    assert [set(line) for line in got] == [{"result"}] * 3 + [{"error"}]
    assert got[-1]["error"] == {"code": 14, "message": "stream broken", "details": []}
    fake.stream_error_after = 10
    status, got = await lines(fake, MEMBERS.format("prog"), {"filters": {"limit": 4}})
    assert (status, len(got)) == (200, 4), "a stream shorter than the fault point ends well"


async def test_a_stream_failing_before_its_first_line_takes_the_errors_status(
    fake: FakePassKit,
) -> None:
    add_members(fake, 3)
    fake.stream_error_after = 0
    status, got = await lines(fake, MEMBERS.format("prog"))
    assert (status, got) == (
        503,
        [{"error": {"code": 14, "message": "stream broken", "details": []}}],
    )
    assert fake.requests[-1].status == 503


async def test_stream_cut_after_drops_the_connection_mid_body(fake: FakePassKit) -> None:
    add_members(fake, 10)
    fake.stream_cut_after = 4
    received: list[bytes] = []
    async with (
        aiohttp.ClientSession(headers={"Authorization": token()}) as session,
        session.post(fake.url + MEMBERS.format("prog"), json={"filters": {"limit": -1}}) as r,
    ):
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for line in r.content:
                received.append(line)
    assert len(received) == 4 and all(json.loads(line)["result"] for line in received)
    fake.stream_cut_after = None
    assert len(await listed(fake, "prog", limit=-1)) == 10, "the fake still serves"


async def test_a_stream_cut_before_its_first_line_is_no_answer(fake: FakePassKit) -> None:
    add_members(fake, 3)
    fake.stream_cut_after, fake.stream_error_after = 0, 0
    with pytest.raises(aiohttp.ClientError):
        await call(fake, "POST", MEMBERS.format("prog"), {})
    assert fake.requests[-1].status == NO_ANSWER


async def test_injected_faults_and_latency_apply_to_lists_and_counts(fake: FakePassKit) -> None:
    add_members(fake, 3)
    fake.fail_next(503, 429)
    status, error = await answer(fake, "POST", MEMBERS.format("prog"), {})
    assert (status, error["code"]) == (503, 14), "a bare Status, before the stream opened"
    assert (await answer(fake, "POST", COUNT.format("prog"), {}))[0] == 429
    fake.latency = LatencyModel(median_ms=30)
    assert len(await listed(fake, "prog")) == 3
    assert [(r.route, r.status) for r in fake.requests] == [
        (ROUTE_LIST_MEMBERS, 503),
        (ROUTE_COUNT_MEMBERS, 429),
        (ROUTE_LIST_MEMBERS, 200),
    ]
    assert fake.requests[-1].latency == pytest.approx(0.03)


async def test_lists_need_the_token(fake: FakePassKit) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(fake.url + MEMBERS.format("prog"), json={}) as response,
    ):
        assert response.status == 401


# --- passMetaData and the wallet knobs -----------------------------------------------------------


async def test_install_and_uninstall_set_first_and_last_timestamps(
    fake: FakePassKit, clock: Clock
) -> None:
    fake.add_pass("m1", class_id="prog")
    assert (await answer(fake, "GET", "/members/member/id/m1"))[1]["passMetaData"] == wallet()
    for seconds, knob in [(10, fake.install), (20, fake.uninstall), (30, fake.install)]:
        clock.at = T0 + seconds
        knob("m1")
    status, member = await answer(fake, "GET", "/members/member/id/m1")
    assert status == 200
    assert member["passMetaData"] == wallet(
        "PASS_INSTALLED",
        firstInstalledAt=10,
        lastInstalledAt=30,
        firstUninstalledAt=20,
        lastUninstalledAt=20,
    )
    clock.at = T0 + 40
    fake.uninstall("m1")
    clock.at = T0 + 50
    fake.invalidate("m1")
    _, member = await answer(fake, "GET", "/members/member/id/m1")
    assert member["passMetaData"] == wallet(
        "PASS_INVALIDATED",
        firstInstalledAt=10,
        lastInstalledAt=30,
        firstUninstalledAt=20,
        lastUninstalledAt=40,
        invalidatedAt=50,
    )


async def test_a_pass_added_installed_was_installed_when_issued(fake: FakePassKit) -> None:
    fake.add_pass("c1", protocol="COUPON", class_id="camp", status="PASS_UNINSTALLED")
    fake.add_pass("t1", protocol="EVENT_TICKET", class_id="prod", status="PASS_INVALIDATED")
    _, coupon = await answer(fake, "GET", "/coupon/singleUse/coupon/c1")
    assert coupon["passMetaData"] == wallet(
        "PASS_UNINSTALLED",
        firstInstalledAt=0,
        lastInstalledAt=0,
        firstUninstalledAt=0,
        lastUninstalledAt=0,
    )
    _, ticket = await answer(fake, "GET", "/eventTickets/ticket/id/t1")
    assert ticket["passMetaData"] == wallet("PASS_INVALIDATED", invalidatedAt=0)
    with pytest.raises(ValueError, match="unknown pass status"):
        fake.add_pass("m1", status="INSTALLED")


async def test_updates_stamp_last_updated_at_and_set_tier_points(
    fake: FakePassKit, clock: Clock
) -> None:
    fake.add_pass("m1", class_id="prog")
    clock.at = T0 + 5
    status, points = await answer(
        fake, "PUT", "/members/member/points/set", {"id": "m1", "points": 7, "tierPoints": 40}
    )
    assert (status, points["points"], points["tierPoints"]) == (200, 7, 40)
    _, member = await answer(fake, "GET", "/members/member/id/m1")
    assert member["tierPoints"] == 40
    assert member["passMetaData"] == wallet(lastUpdatedAt=5)
    clock.at = T0 + 9
    body = {"id": "m1", "metaData": {"k": "v"}}
    assert (await call(fake, "PUT", "/members/member", body))[0] == 200
    _, member = await answer(fake, "GET", "/members/member/id/m1")
    assert member["passMetaData"]["lastUpdatedAt"] == stamp(9)


async def test_knobs_refuse_a_pass_passkit_never_issued(fake: FakePassKit) -> None:
    with pytest.raises(KeyError):
        fake.install("nobody")


# --- deleted passes ------------------------------------------------------------------------------


async def test_a_deleted_pass_is_gone_from_every_route(fake: FakePassKit) -> None:
    fake.add_pass("m1", class_id="prog", external_id="M-1")
    fake.add_pass("m2", class_id="prog")
    fake.add_pass("c1", protocol="COUPON", class_id="camp")
    fake.add_pass("t1", protocol="EVENT_TICKET", class_id="prod", ticket_number="T-1")
    for pass_id in ("m1", "c1", "t1"):
        fake.delete(pass_id)
    requests: list[tuple[str, str, Json | None]] = [
        ("GET", "/members/member/id/m1", None),
        ("PUT", "/members/member/points/set", {"id": "m1", "points": 5}),
        ("PUT", "/members/member", {"id": "m1", "metaData": {"k": "v"}}),
        ("PUT", "/members/member", {"externalId": "M-1", "programId": "prog", "points": 1}),
        ("GET", "/coupon/singleUse/coupon/c1", None),
        ("PUT", "/coupon/singleUse/coupon/redeem", {"id": "c1"}),
        ("GET", "/eventTickets/ticket/id/t1", None),
        ("PUT", "/eventTickets/ticket/validate", {"ticket": {"ticketId": "t1"}}),
        (
            "PUT",
            "/eventTickets/ticket/validate",
            {"ticket": {"ticketNumber": {"productionId": "prod", "ticketNumber": "T-1"}}},
        ),
    ]
    for method, path, body in requests:
        status, error = await answer(fake, method, path, body)
        assert (status, error["code"]) == (404, 5), (method, path)
    assert await listed(fake, "prog") == ["m2"]
    assert await counted(fake, "prog") == 1
    assert await call(fake, "POST", "/coupon/singleUse/coupons/list/camp", {}) == (200, "")
    assert fake.points_of("m1") is None and fake.state_of("m1") is None
    with pytest.raises(KeyError):
        fake.install("m1")


async def test_issued_does_not_bring_a_deleted_pass_back(fake: FakePassKit) -> None:
    fake.issued = lambda pass_id: pass_id.startswith("bulk")
    assert (await call(fake, "GET", "/members/member/id/bulk1"))[0] == 200
    fake.delete("bulk1")
    fake.delete("bulk2")  # never touched: deleted all the same
    for pass_id in ("bulk1", "bulk2"):
        assert (await call(fake, "GET", f"/members/member/id/{pass_id}"))[0] == 404
    message = {"title": "Hi", "plainTextContent": "Hello"}
    _, created = await answer(fake, "POST", "/message", message)
    send = {"messageId": created["id"], "passIds": {"ids": ["bulk1", "bulk3"]}}
    assert await answer(fake, "POST", "/message/send", send) == (200, {"count": 1})
    fake.add_pass("bulk1")  # issued again, deliberately
    assert (await call(fake, "GET", "/members/member/id/bulk1"))[0] == 200


# --- sink subscriptions --------------------------------------------------------------------------


def sink_body(
    url: str = "https://hooks.example/x",
    *,
    class_id: str = "prog",
    protocol: str = "MEMBERSHIP",
    events: tuple[str, ...] = ("PASS_EVENT_INSTALLED",),
    status: str = "INTEGRATION_ACTIVE",
) -> Json:
    return {
        "classId": class_id,
        "protocol": protocol,
        "passEventId": list(events),
        "status": status,
        "configType": "WEBHOOK",
        "configuration": json.dumps({"targetUrl": url}),
    }


async def create_sink(fake: FakePassKit, body: Json) -> str:
    status, created = await answer(fake, "POST", SINK, body)
    assert status == 200 and set(created) == {"id"}
    return str(created["id"])


async def test_a_sink_subscription_is_created_read_listed_replaced_and_deleted(
    fake: FakePassKit, clock: Clock
) -> None:
    sink_id = await create_sink(fake, sink_body())
    other = await create_sink(fake, sink_body(class_id="camp", protocol="SINGLE_USE_COUPON"))
    status, sink = await answer(fake, "GET", f"{SINK}/MEMBERSHIP/{sink_id}")
    assert status == 200
    assert sink == {
        **sink_body(),
        "id": sink_id,
        "createdAt": stamp(0),
        "updatedAt": stamp(0),
    }
    assert (await answer(fake, "GET", f"{SINK}/100/{sink_id}"))[0] == 200, "a protocol number"
    _, every = await lines(fake, "/integrations/sinks/list", {})
    assert [line["result"]["id"] for line in every] == [other, sink_id]
    _, mine = await lines(fake, "/integrations/sinks/list", {"classId": "prog"})
    assert [line["result"]["id"] for line in mine] == [sink_id]
    _, coupons = await lines(fake, "/integrations/sinks/list", {"protocol": "SINGLE_USE_COUPON"})
    assert [line["result"]["id"] for line in coupons] == [other]
    clock.at = T0 + 60
    replaced = {**sink_body(events=("PASS_EVENT_UNINSTALLED",)), "id": sink_id}
    assert await answer(fake, "PUT", SINK, replaced) == (200, {"id": sink_id})
    _, sink = await answer(fake, "GET", f"{SINK}/MEMBERSHIP/{sink_id}")
    assert sink["passEventId"] == ["PASS_EVENT_UNINSTALLED"]
    assert (sink["createdAt"], sink["updatedAt"]) == (stamp(0), stamp(60))
    assert fake.sinks[sink_id].pass_events == ("PASS_EVENT_UNINSTALLED",)
    assert await answer(fake, "DELETE", f"{SINK}/MEMBERSHIP/{sink_id}") == (200, {})
    assert set(fake.sinks) == {other}
    for method in ("GET", "DELETE"):
        assert (await call(fake, method, f"{SINK}/MEMBERSHIP/{sink_id}"))[0] == 404


async def test_a_sink_is_addressed_under_its_own_protocol(fake: FakePassKit) -> None:
    sink_id = await create_sink(fake, sink_body())
    assert (await call(fake, "GET", f"{SINK}/EVENT_TICKETING/{sink_id}"))[0] == 404
    assert (await call(fake, "GET", f"{SINK}/EVENT_TICKETS/{sink_id}"))[0] == 400
    unknown = {**sink_body(), "id": "nope"}
    assert (await call(fake, "PUT", SINK, unknown))[0] == 404
    assert (await call(fake, "PUT", SINK, sink_body()))[0] == 400, "an update needs its id"


@pytest.mark.parametrize(
    ("change", "drop"),
    [
        ({"id": "mine"}, None),
        ({}, "classId"),
        ({}, "protocol"),
        ({}, "configuration"),
        ({"configuration": json.dumps({"url": "https://x"})}, None),
        ({"configuration": "not json"}, None),
        ({"configuration": json.dumps({"targetUrl": "ftp://x"})}, None),
        ({"configuration": json.dumps({"targetUrl": "https://x", "signingSecret": "s"})}, None),
        ({"passEventId": ["PASS_EVENT_EXPLODED"]}, None),
        ({"passEventId": []}, None),
        ({"configType": "ZAPIER"}, None),
        ({"protocol": "EVENT_TICKETS"}, None),
        ({"membershipEvents": {"ids": ["MEMBER_EVENT_ENROLLED"]}}, None),
    ],
    ids=[
        "id-on-create",
        "no-class",
        "no-protocol",
        "no-configuration",
        "no-target-url",
        "configuration-not-json",
        "not-http",
        "signing-secret",
        "unknown-event",
        "no-events",
        "not-a-webhook",
        "unknown-protocol",
        "member-events",
    ],
)
async def test_a_sink_passkit_would_refuse_is_invalid_argument(
    fake: FakePassKit, change: Json, drop: str | None
) -> None:
    body = {**sink_body(), **change}
    if drop is not None:
        del body[drop]
    status, error = await answer(fake, "POST", SINK, body)
    assert (status, error["code"]) == (400, 3)
    assert not fake.sinks


async def test_sink_fields_passkit_would_ignore_are_counted(fake: FakePassKit) -> None:
    await create_sink(fake, {**sink_body(), "signingKey": "x"})
    assert (await lines(fake, "/integrations/sinks/list", {"class": "prog"}))[0] == 200
    assert fake.ignored_fields == {
        "POST /integrations/sink signingKey": 1,
        "POST /integrations/sinks/list class": 1,
    }


# --- webhooks ------------------------------------------------------------------------------------


ALL_EVENTS = (
    "PASS_EVENT_RECORD_CREATED",
    "PASS_EVENT_INSTALLED",
    "PASS_EVENT_RECORD_UPDATED",
    "PASS_EVENT_UNINSTALLED",
    "PASS_EVENT_INVALIDATED",
    "PASS_EVENT_RECORD_DELETED",
)


async def test_each_wallet_event_is_sent_with_its_method(
    fake: FakePassKit, receiver: Receiver, clock: Clock
) -> None:
    await create_sink(fake, sink_body(receiver.url + "/hook", events=ALL_EVENTS))
    fake.add_pass("m1", class_id="prog", external_id="M-1")
    await fake.webhooks_settled()
    for seconds, knob in enumerate([fake.install, fake.uninstall, fake.invalidate, fake.delete]):
        clock.at = T0 + seconds + 1
        knob("m1")
        await fake.webhooks_settled()  # one at a time: PassKit promises no order
    got = [(method, body["event"]) for method, _, body in receiver.received]
    assert got == [
        ("POST", "PASS_EVENT_RECORD_CREATED"),
        ("PUT", "PASS_EVENT_INSTALLED"),
        ("PUT", "PASS_EVENT_UNINSTALLED"),
        ("PUT", "PASS_EVENT_INVALIDATED"),
        ("DELETE", "PASS_EVENT_RECORD_DELETED"),
    ]
    assert {path for _, path, _ in receiver.received} == {"/hook"}
    installed = receiver.received[1][2]
    assert installed == {
        "event": "PASS_EVENT_INSTALLED",
        "pass": {
            "id": "m1",
            "classId": "prog",
            "protocol": "MEMBERSHIP",
            "externalId": "M-1",
            "personDetails": {},
            "metadata": wallet("PASS_INSTALLED", firstInstalledAt=1, lastInstalledAt=1),
            "recordData": {},
        },
    }
    deleted = receiver.received[-1][2]["pass"]["metadata"]
    assert deleted["status"] == "PASS_INVALIDATED", "the pass as it was when deleted"
    assert [(d.method, d.status, d.error) for d in fake.webhook_deliveries] == [
        (method, 200, None) for method, _ in got
    ]


async def test_only_active_subscriptions_of_the_class_protocol_and_event_are_sent(
    fake: FakePassKit, receiver: Receiver
) -> None:
    fake.add_pass("c1", protocol="COUPON", class_id="camp")
    await create_sink(
        fake, sink_body(receiver.url + "/right", class_id="camp", protocol="SINGLE_USE_COUPON")
    )
    wrong = [
        sink_body(receiver.url + "/class", class_id="other", protocol="SINGLE_USE_COUPON"),
        sink_body(receiver.url + "/protocol", class_id="camp", protocol="MEMBERSHIP"),
        sink_body(
            receiver.url + "/event",
            class_id="camp",
            protocol="SINGLE_USE_COUPON",
            events=("PASS_EVENT_UNINSTALLED",),
        ),
        sink_body(
            receiver.url + "/off",
            class_id="camp",
            protocol="SINGLE_USE_COUPON",
            status="INTEGRATION_DISABLED",
        ),
    ]
    for body in wrong:
        await create_sink(fake, body)
    fake.install("c1")
    await fake.webhooks_settled()
    assert [(method, path) for method, path, _ in receiver.received] == [("PUT", "/right")]
    assert receiver.received[0][2]["pass"]["protocol"] == "SINGLE_USE_COUPON"


async def test_record_updated_is_sent_for_a_change_only(
    fake: FakePassKit, receiver: Receiver, clock: Clock
) -> None:
    fake.add_pass("m1", class_id="prog")
    await create_sink(fake, sink_body(receiver.url, events=("PASS_EVENT_RECORD_UPDATED",)))
    for seconds, points in [(1, 10), (2, 10), (3, 11)]:
        clock.at = T0 + seconds
        body = {"id": "m1", "points": points}
        assert (await call(fake, "PUT", "/members/member/points/set", body))[0] == 200
    await fake.webhooks_settled()
    sent = [body["pass"]["metadata"]["lastUpdatedAt"] for _, _, body in receiver.received]
    assert sent == [stamp(1), stamp(3)], "the repeat of 10 changed nothing"
    assert [method for method, _, _ in receiver.received] == ["PUT", "PUT"]
    _, member = await answer(fake, "GET", "/members/member/id/m1")
    assert member["passMetaData"]["lastUpdatedAt"] == stamp(3)


async def test_a_webhook_sent_by_hand_can_repeat_or_come_late(
    fake: FakePassKit, receiver: Receiver
) -> None:
    fake.add_pass("m1", class_id="prog")
    fake.install("m1")
    fake.delete("m1")
    url = receiver.url + "/late"
    first = await fake.send_webhook(url, "PASS_EVENT_INSTALLED", "m1")
    again = await fake.send_webhook(url, "PASS_EVENT_INSTALLED", "m1", method="POST")
    assert (first.method, first.status, again.method, again.status) == ("PUT", 200, "POST", 200)
    bodies = [body for _, _, body in receiver.received]
    assert bodies[0] == bodies[1]
    assert bodies[0]["pass"]["metadata"]["status"] == "PASS_INSTALLED"
    assert fake.webhook_deliveries == [first, again]
    with pytest.raises(KeyError):
        await fake.send_webhook(url, "PASS_EVENT_INSTALLED", "nobody")


async def test_a_failed_delivery_is_recorded(fake: FakePassKit, receiver: Receiver) -> None:
    fake.add_pass("m1", class_id="prog")
    receiver.status = 500
    refused = await fake.send_webhook(receiver.url, "PASS_EVENT_INSTALLED", "m1")
    assert (refused.status, refused.error) == (500, None)
    nobody = await fake.send_webhook("http://127.0.0.1:9/", "PASS_EVENT_UNINSTALLED", "m1")
    assert nobody.status is None and nobody.error is not None


# --- generated programs --------------------------------------------------------------------------


STATUSES = ("PASS_ISSUED", "PASS_INSTALLED", "PASS_UNINSTALLED", "PASS_INVALIDATED")


def generate(fake: FakePassKit, count: int = 100) -> None:
    fake.add_generated_members(
        "big", count, prefix="g", status=lambda i: STATUSES[i % 4], points=lambda i: i * 1.5
    )


async def test_generated_members_are_listed_counted_and_filtered(fake: FakePassKit) -> None:
    generate(fake)
    ids = await listed(fake, "big", limit=-1, orderAsc=True)
    assert ids == [f"g{i}" for i in range(1, 101)]
    assert (await listed(fake, "big"))[:2] == ["g100", "g99"]
    assert await counted(fake, "big") == 100
    installed = [where(("passStatus", "PASS_INSTALLED"))]
    assert await listed(fake, "big", filterGroups=installed, limit=3, orderAsc=True) == [
        "g1",
        "g5",
        "g9",
    ]
    assert await counted(fake, "big", filterGroups=installed) == 25


async def test_a_generated_members_line_is_what_a_read_answers(fake: FakePassKit) -> None:
    generate(fake, 8)
    _, got = await lines(fake, MEMBERS.format("big"), {"filters": {"limit": -1}})
    streamed = {line["result"]["id"]: line["result"] for line in got}
    for i in range(1, 9):
        status, member = await answer(fake, "GET", f"/members/member/id/g{i}")
        assert status == 200 and member == streamed[f"g{i}"]
    assert streamed["g5"]["points"] == 7.5
    assert streamed["g6"]["passMetaData"] == wallet(
        "PASS_UNINSTALLED",
        firstInstalledAt=0,
        lastInstalledAt=0,
        firstUninstalledAt=0,
        lastUninstalledAt=0,
    )


async def test_generated_members_keep_what_happens_to_them(
    fake: FakePassKit, receiver: Receiver
) -> None:
    generate(fake)
    await create_sink(
        fake, sink_body(receiver.url, class_id="big", events=("PASS_EVENT_UNINSTALLED",))
    )
    body = {"id": "g4", "points": 99}
    assert (await call(fake, "PUT", "/members/member/points/set", body))[0] == 200
    fake.uninstall("g5")
    fake.delete("g6")
    await fake.webhooks_settled()
    _, got = await lines(
        fake, MEMBERS.format("big"), {"filters": {"limit": 4, "offset": 2, "orderAsc": True}}
    )
    assert [
        (m["result"]["id"], m["result"]["points"], m["result"]["passMetaData"]["status"])
        for m in got
    ] == [
        ("g3", 4.5, "PASS_INVALIDATED"),
        ("g4", 99, "PASS_ISSUED"),
        ("g5", 7.5, "PASS_UNINSTALLED"),
        ("g7", 10.5, "PASS_INVALIDATED"),
    ]
    assert await counted(fake, "big") == 99
    assert fake.points_of("g4") == 99 and fake.points_of("g8") == 12
    assert [(body["event"], body["pass"]["id"]) for _, _, body in receiver.received] == [
        ("PASS_EVENT_UNINSTALLED", "g5")
    ]
    for missing in ("g6", "g101", "g0", "g007"):
        assert (await call(fake, "GET", f"/members/member/id/{missing}"))[0] == 404, missing


async def test_generated_programs_cannot_share_ids(fake: FakePassKit) -> None:
    generate(fake)
    with pytest.raises(ValueError, match="overlaps"):
        fake.add_generated_members("other", 10, prefix="g1")
    fake.add_generated_members("other", 10, prefix="gx")
    assert await listed(fake, "other", limit=2, orderAsc=True) == ["gx1", "gx2"]
