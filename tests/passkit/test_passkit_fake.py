"""PassKitClient against the fake PassKit server over real HTTP on localhost, and the fake's
own behaviour (JWT checks, request validation, state, knobs)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp
import jwt
import pytest
import pytest_asyncio

from daemon.core.errors import PermanentPassKitError, TransientPassKitError, Unauthorized
from daemon.passkit import routes
from daemon.passkit.client import PassKitClient
from daemon.passkit.suffix import visible_text
from daemon.testing.fakepasskit import (
    NO_ANSWER,
    ROUTE_GET_COUPON,
    ROUTE_GET_MEMBER,
    ROUTE_GET_TICKET,
    ROUTE_REDEEM_COUPON,
    ROUTE_SET_POINTS,
    ROUTE_UPDATE_COUPON,
    ROUTE_UPDATE_MEMBER,
    ROUTE_UPDATE_TICKET,
    ROUTE_VALIDATE_TICKET,
    FakePassKit,
    Faults,
    LatencyModel,
    _route_of,
)
from tests.passkit_fixtures import (
    API_KEY,
    API_SECRET,
    RecordingSleep,
    make_settings,
    mock_settings,
)

FIELD = "loyaltydMessage"


@pytest_asyncio.fixture(loop_scope="function")
async def fake() -> AsyncIterator[FakePassKit]:
    # Every pass is issued at this fake except ids starting "unknown".
    issued = lambda pass_id: not pass_id.startswith("unknown")  # noqa: E731
    async with FakePassKit(API_KEY, API_SECRET, hang_seconds=5.0, issued=issued) as server:
        yield server


def client_for(fake: FakePassKit, **overrides: Any) -> PassKitClient:
    sleep = overrides.pop("sleep", RecordingSleep())
    return PassKitClient(make_settings(fake.url, **overrides), sleep=sleep, rng=random.Random(3))


async def raw_put(fake: FakePassKit, path: str, body: Any, token: str | None) -> int:
    headers = {"Authorization": token} if token is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.put(fake.url + path, json=body, headers=headers) as response,
    ):
        return response.status


def sign(**claims: Any) -> str:
    return jwt.encode(claims, API_SECRET, algorithm="HS256")


def fresh_claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"uid": API_KEY, "iat": now - 10, "exp": now + 60, **changes}


# --- every call, end to end ----------------------------------------------------------------------


async def test_set_points_sets_and_resets_the_balance(fake: FakePassKit) -> None:
    async with client_for(fake) as client:
        await client.set_points("m1", 250)
        assert fake.points_of("m1") == 250
        await client.set_points("m1", 0)
    assert fake.points_of("m1") == 0
    assert fake.count(ROUTE_SET_POINTS) == 2


@pytest.mark.parametrize(
    ("protocol", "route"),
    [
        ("MEMBERSHIP", ROUTE_UPDATE_MEMBER),
        ("COUPON", ROUTE_UPDATE_COUPON),
        ("EVENT_TICKET", ROUTE_UPDATE_TICKET),
    ],
)
async def test_write_message_stores_the_text_in_the_message_field(
    fake: FakePassKit, protocol: str, route: str
) -> None:
    async with client_for(fake) as client:
        value = await client.write_message(protocol, "x1", "Hi there")
    assert fake.messages_for("x1") == [value]
    assert fake.metadata_of("x1") == {FIELD: value}
    assert fake.count(route) == 1
    assert fake.count() == 2, "read_modify_write (the default) reads the pass first"


async def test_the_same_text_twice_still_changes_the_stored_value(fake: FakePassKit) -> None:
    """Apple alerts only on a changed value: a repeated text must still alert."""
    async with client_for(fake) as client:
        for _ in range(3):
            await client.write_message("MEMBERSHIP", "m1", "Double points!")
    stored = fake.messages_for("m1")
    assert len(stored) == 3
    assert stored[0] != stored[1] != stored[2]
    assert {visible_text(value) for value in stored} == {"Double points!"}


async def test_read_modify_write_keeps_other_metadata_when_passkit_replaces_the_map(
    fake: FakePassKit,
) -> None:
    fake.merge_metadata = False
    fake.add_pass("m1", metadata={"favourite": "margherita"})
    async with client_for(fake, passkit_metadata_mode="read_modify_write") as client:
        value = await client.write_message("MEMBERSHIP", "m1", "Hi")
    assert fake.metadata_of("m1") == {"favourite": "margherita", FIELD: value}
    assert fake.count(ROUTE_GET_MEMBER) == 1


async def test_merge_mode_sends_only_the_message_field(fake: FakePassKit) -> None:
    """Why the read_modify_write mode exists: a replacing PassKit would drop other keys."""
    fake.merge_metadata = False
    fake.add_pass("m1", metadata={"favourite": "margherita"})
    async with client_for(fake, passkit_metadata_mode="merge") as client:
        value = await client.write_message("MEMBERSHIP", "m1", "Hi")
    assert fake.metadata_of("m1") == {FIELD: value}
    assert fake.count(ROUTE_GET_MEMBER) == 0


async def test_a_coupon_is_redeemed_once_and_a_second_redeem_counts_as_done(
    fake: FakePassKit,
) -> None:
    async with client_for(fake) as client:
        await client.redeem_coupon("c1")
        await client.redeem_coupon("c1")
    assert fake.redeemed("c1")
    # The refusal (400, FAILED_PRECONDITION) is judged by the coupon read back: REDEEMED.
    assert [(r.route, r.status) for r in fake.requests] == [
        (ROUTE_REDEEM_COUPON, 200),
        (ROUTE_REDEEM_COUPON, 400),
        (ROUTE_GET_COUPON, 200),
    ]


async def test_sending_a_coupon_a_message_never_redeems_it(fake: FakePassKit) -> None:
    async with client_for(fake) as client:
        await client.write_message("COUPON", "c1", "Still valid!")
    assert not fake.redeemed("c1")
    assert fake.count(ROUTE_REDEEM_COUPON) == 0


@pytest.mark.parametrize("repeat", ["invalid", "refused"])
async def test_check_in_validates_and_uses_up_the_ticket_and_repeats_count_as_done(
    fake: FakePassKit, repeat: Literal["invalid", "refused"]
) -> None:
    """A repeat may be a 200 {"valid": false} or a 400: both are judged by the ticket."""
    fake.repeat_validation = repeat
    async with client_for(fake) as client:
        await client.check_in_ticket("t1")
        await client.check_in_ticket("t1")
    assert fake.redeemed("t1")
    assert fake.validations_of("t1") == 1
    assert fake.count(ROUTE_VALIDATE_TICKET) == 2
    assert fake.count(ROUTE_GET_TICKET) == (1 if repeat == "refused" else 0)


# --- failures over real HTTP ---------------------------------------------------------------------


async def test_a_503_is_retried_once_after_passkits_250ms(fake: FakePassKit) -> None:
    fake.fail_next(503)
    sleep = RecordingSleep()
    async with client_for(fake, sleep=sleep) as client:
        await client.set_points("m1", 7)
    assert [r.status for r in fake.requests] == [503, 200]
    assert fake.points_of("m1") == 7
    [delay] = sleep.delays
    assert 0.25 <= delay <= 1.0


async def test_a_429_retry_after_from_the_server_reaches_the_caller(fake: FakePassKit) -> None:
    fake.faults.retry_after = "2"
    fake.fail_next(429)
    sleep = RecordingSleep()
    async with client_for(fake, sleep=sleep) as client:
        with pytest.raises(TransientPassKitError) as caught:
            await client.set_points("m1", 7)
    assert caught.value.retry_after == 2.0
    assert sleep.delays == []


async def test_500_is_retried(fake: FakePassKit) -> None:
    fake.fail_next(500)
    async with client_for(fake) as client:
        await client.redeem_coupon("c1")
    assert [r.status for r in fake.requests] == [500, 200]


async def test_a_hung_request_times_out_and_is_retried(fake: FakePassKit) -> None:
    fake.fail_next("timeout")
    async with client_for(fake, passkit_timeout_seconds=0.2) as client:
        await client.set_points("m1", 3)
    assert [r.status for r in fake.requests] == [NO_ANSWER, 200]
    assert fake.points_of("m1") == 3


async def test_timeouts_that_persist_end_as_a_transient_error(fake: FakePassKit) -> None:
    fake.fail_next("timeout", "timeout")
    async with client_for(fake, passkit_timeout_seconds=0.1) as client:
        with pytest.raises(TransientPassKitError, match="timed out"):
            await client.set_points("m1", 3)


async def test_connection_refused_is_a_transient_error_after_the_quick_retry() -> None:
    server = FakePassKit(API_KEY, API_SECRET)
    url = await server.start()
    await server.stop()  # nothing listens there any more
    sleep = RecordingSleep()
    async with PassKitClient(make_settings(url), sleep=sleep) as client:
        with pytest.raises(TransientPassKitError) as caught:
            await client.set_points("m1", 3)
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectionError)
    assert len(sleep.delays) == 1


@pytest.mark.parametrize("status", [400, 403, 404])
async def test_a_pass_forced_to_fail_permanently_is_tried_once(
    fake: FakePassKit, status: int
) -> None:
    fake.force_status("gone", status)
    async with client_for(fake) as client:
        with pytest.raises(PermanentPassKitError) as caught:
            await client.set_points("gone", 1)
        await client.set_points("other", 1)
    assert caught.value.status == status
    assert fake.count(ROUTE_SET_POINTS) == 2


async def test_the_fake_answers_404_for_passes_it_has_not_issued() -> None:
    async with FakePassKit(API_KEY, API_SECRET) as fake:
        fake.add_pass("known")
        async with client_for(fake) as client:
            await client.set_points("known", 1)
            with pytest.raises(PermanentPassKitError) as caught:
                await client.set_points("never-issued", 1)
            with pytest.raises(PermanentPassKitError):
                await client.write_message("COUPON", "known", "a member is not a coupon")
    assert caught.value.status == 404
    assert '"code": 5' in str(caught.value), "grpc-gateway's NOT_FOUND body"


async def test_a_wrong_secret_is_unauthorized_after_one_re_sign(fake: FakePassKit) -> None:
    settings = make_settings(fake.url, passkit_api_secret="a-different-secret-of-32-bytes-at-least")
    async with PassKitClient(settings, sleep=RecordingSleep()) as client:
        with pytest.raises(Unauthorized):
            await client.set_points("m1", 1)
    assert [r.status for r in fake.requests] == [401, 401]


async def test_a_one_off_401_is_cured_by_re_signing(fake: FakePassKit) -> None:
    fake.fail_next(401)
    async with client_for(fake) as client:
        await client.set_points("m1", 1)
    assert [r.status for r in fake.requests] == [401, 200]


async def test_bearer_scheme_is_accepted_and_flagged_as_undocumented(fake: FakePassKit) -> None:
    async with client_for(fake) as client:
        await client.set_points("m1", 1)
    assert not fake.undocumented, "the default sends the JWT without a prefix, as documented"
    async with client_for(fake, passkit_auth_scheme="bearer") as client:
        await client.set_points("m1", 2)
    assert fake.points_of("m1") == 2
    assert fake.undocumented == {"Authorization: Bearer": 1}


async def test_random_faults_leave_each_call_done_or_handed_back(fake: FakePassKit) -> None:
    """At most two attempts per call; a call either lands or raises a transient error for the
    queue to retry (the queue's side: test_sync, test_worker)."""
    fake.faults = Faults(p503=0.2, p429=0.1, p500=0.1, retry_after="0")
    handed_back = 0
    async with client_for(fake) as client:
        for n in range(30):
            try:
                await client.set_points(f"m{n}", n + 1)
            except TransientPassKitError:
                handed_back += 1
                continue
            assert fake.points_of(f"m{n}") == n + 1
    assert any(r.status in (429, 500, 503) for r in fake.requests)
    assert fake.count() <= 60
    assert handed_back < 30


async def test_mock_mode_sends_nothing_to_the_fake(fake: FakePassKit) -> None:
    async with PassKitClient(mock_settings(passkit_base_url=fake.url)) as client:
        await client.set_points("m1", 1)
        await client.write_message("MEMBERSHIP", "m1", "Hi")
        await client.redeem_coupon("c1")
        await client.check_in_ticket("t1")
    assert fake.count() == 0
    assert fake.requests == []


async def test_concurrent_calls_never_exceed_max_concurrency_at_the_server(
    fake: FakePassKit,
) -> None:
    fake.latency = LatencyModel(median_ms=20)
    async with client_for(fake, passkit_max_concurrency=3) as client:
        await asyncio.gather(*(client.set_points(f"m{n}", 1) for n in range(15)))
    edges = sorted(
        [(r.at, 1) for r in fake.requests] + [(r.at + r.latency, -1) for r in fake.requests],
        key=lambda edge: (edge[0], edge[1]),
    )
    in_flight = peak = 0
    for _, step in edges:
        in_flight += step
        peak = max(peak, in_flight)
    assert peak == 3


# --- the fake itself -----------------------------------------------------------------------------


async def test_fake_rejects_missing_expired_foreign_and_badly_signed_tokens(
    fake: FakePassKit,
) -> None:
    body = {"id": "m1", "points": 1}
    path = "/members/member/points/set"
    assert await raw_put(fake, path, body, sign(**fresh_claims())) == 200
    assert await raw_put(fake, path, body, "Bearer " + sign(**fresh_claims())) == 200
    assert await raw_put(fake, path, body, None) == 401
    assert await raw_put(fake, path, body, sign(**fresh_claims(exp=1_000))) == 401
    assert await raw_put(fake, path, body, sign(**fresh_claims(uid="someone-else"))) == 401
    forged = jwt.encode(fresh_claims(), "not-the-secret-but-32-bytes-long!!", algorithm="HS256")
    assert await raw_put(fake, path, body, forged) == 401
    assert await raw_put(fake, path, body, "garbage") == 401


async def test_fake_rejects_a_token_once_it_expires(fake: FakePassKit) -> None:
    """A verified token is remembered, but its expiry is still checked on every request."""
    token = sign(**fresh_claims())
    path = "/members/member/points/set"
    assert await raw_put(fake, path, {"id": "m1", "points": 1}, token) == 200
    fake._wall_clock = lambda: 4_000_000_000.0
    assert await raw_put(fake, path, {"id": "m1", "points": 1}, token) == 401


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/members/member", {"metaData": {FIELD: "no id"}}),
        ("/members/member", {"id": "m1", "metaData": {FIELD: 5}}),
        ("/members/member/points/set", {"id": "m1", "points": 0}),
        ("/members/member/points/set", {"id": "m1"}),
        ("/members/member/points/set", {"points": 5}),
        ("/coupon/singleUse/coupon/redeem", {}),
        ("/eventTickets/ticket/validate", {"id": "t1"}),
        ("/members/member", ["not", "an", "object"]),
    ],
)
async def test_fake_answers_400_to_requests_passkit_would_reject(
    fake: FakePassKit, path: str, body: Any
) -> None:
    assert await raw_put(fake, path, body, sign(**fresh_claims())) == 400


async def test_fake_answers_404_to_unknown_routes(fake: FakePassKit) -> None:
    assert await raw_put(fake, "/members/member/m1", {"id": "m1"}, sign(**fresh_claims())) == 404


async def test_fake_records_route_pass_body_and_status(fake: FakePassKit) -> None:
    async with client_for(fake) as client:
        await client.set_points("m1", 9)
    (record,) = fake.requests
    assert (record.route, record.pass_id, record.body, record.status) == (
        ROUTE_SET_POINTS,
        "m1",
        {"id": "m1", "points": 9},
        200,
    )
    fake.reset_requests()
    assert fake.count() == 0


async def test_stopping_the_fake_ends_hung_requests(fake: FakePassKit) -> None:
    fake.hang_seconds = 60
    fake.fail_next("timeout")
    task = asyncio.ensure_future(
        raw_put(fake, "/members/member/points/set", {"id": "m1", "points": 1}, None)
    )
    while fake.count() == 0:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(fake.stop(), 5)
    done, _ = await asyncio.wait([task], timeout=5)
    assert done, "the hung request still hangs after the fake stopped"
    outcome = task.exception() or task.result()
    assert outcome == 504 or isinstance(outcome, aiohttp.ClientError), outcome


def test_latency_model_has_the_configured_median_and_tail() -> None:
    model = LatencyModel(median_ms=50, p99_ms=150)
    rng = random.Random(11)
    samples = sorted(model.sample(rng) for _ in range(20_000))
    assert samples[10_000] == pytest.approx(0.050, rel=0.05)
    assert samples[19_800] == pytest.approx(0.150, rel=0.1)
    assert sum(samples) / len(samples) == pytest.approx(model.mean_ms / 1000, rel=0.05)


def test_latency_model_without_a_tail_is_constant_and_zero_is_instant() -> None:
    rng = random.Random(1)
    assert LatencyModel(median_ms=20).sample(rng) == 0.020
    assert LatencyModel().sample(rng) == 0.0


def test_faults_are_drawn_at_their_rates() -> None:
    faults = Faults(p503=0.1, p429=0.05, p_timeout=0.02)
    rng = random.Random(5)
    drawn = [faults.draw(rng) for _ in range(20_000)]
    assert drawn.count(503) / 20_000 == pytest.approx(0.1, abs=0.01)
    assert drawn.count(429) / 20_000 == pytest.approx(0.05, abs=0.01)
    assert drawn.count("timeout") / 20_000 == pytest.approx(0.02, abs=0.005)
    assert drawn.count(500) == 0


def test_the_fake_answers_exactly_the_routes_the_client_calls() -> None:
    """One table: every route the client can build is one the fake serves, with its id."""
    for endpoint in routes.ALL:
        values = tuple(f"pk{n}" for n in range(endpoint.parameters))
        served, path = _route_of(endpoint.method, endpoint.url("", *values))
        assert served == endpoint.route
        assert path == values
    assert _route_of("DELETE", "/members/member") == (None, ())
    assert _route_of("GET", "/members/member/id/a/b") == (None, ())
    assert _route_of("PUT", "/members/member/points/earn") == (None, ())
    assert _route_of("GET", "/members/tier/p1/t1") == (routes.GET_TIER.route, ("p1", "t1"))
