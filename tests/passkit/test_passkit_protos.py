"""The client against a fake that follows PassKit's published definitions, in both metaData
modes and against both metaData semantics the fake can play: a message moves no tier, only a
true repeat counts as redeemed, passes are addressed as the protos allow, nothing is sent that
PassKit would ignore, and the Messages API answers as SendMessageResponse says."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio

from daemon.core.errors import PermanentPassKitError, Unauthorized, WorkRefused
from daemon.passkit import routes
from daemon.passkit.client import PassKitClient
from daemon.passkit.suffix import visible_text
from daemon.testing.fakepasskit import (
    ROUTE_GET_COUPON,
    ROUTE_REDEEM_COUPON,
    ROUTE_SEND_MESSAGE,
    ROUTE_UPDATE_MEMBER,
    FakePassKit,
)
from tests.passkit_fixtures import API_KEY, API_SECRET, RecordingSleep, make_settings

FIELD = "loyaltydMessage"
MODES = ["read_modify_write", "merge"]


@pytest_asyncio.fixture(loop_scope="function")
async def fake() -> AsyncIterator[FakePassKit]:
    async with FakePassKit(API_KEY, API_SECRET) as server:
        yield server


def client_for(fake: FakePassKit, **overrides: Any) -> PassKitClient:
    settings = make_settings(fake.url, **overrides)
    return PassKitClient(settings, sleep=RecordingSleep(), rng=random.Random(3))


async def raw(fake: FakePassKit, method: str, path: str, body: Any) -> tuple[int, Any]:
    now = int(time.time())
    token = jwt.encode({"uid": API_KEY, "iat": now, "exp": now + 60}, API_SECRET)
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, fake.url + path, json=body, headers={"Authorization": token}
        ) as response,
    ):
        return response.status, await response.json()


# --- 1. updates say only what they mean ----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("merging", [True, False], ids=["passkit-merges", "passkit-replaces"])
async def test_a_message_never_moves_a_members_tier(
    fake: FakePassKit, mode: str, merging: bool
) -> None:
    fake.merge_metadata = merging
    for n in range(20):
        fake.add_pass(f"m{n}", class_id="prog", tier_id="gold", metadata={"favourite": "salami"})
    async with client_for(fake, passkit_metadata_mode=mode) as client:
        for n in range(20):
            await client.write_message("MEMBERSHIP", f"m{n}", "Double points!")
            await client.set_points(f"m{n}", 10 + n)
    assert {fake.tier_of(f"m{n}") for n in range(20)} == {"gold"}
    assert fake.points_of("m7") == 17
    assert not fake.ignored_fields
    bodies = [r.body for r in fake.requests if r.route == ROUTE_UPDATE_MEMBER]
    if mode == "merge":
        assert {frozenset(b) for b in bodies} == {frozenset({"id", "metaData"})}
    else:  # the member's own program and tier, read back, as PassKit's PHP example sends
        assert {(b["programId"], b["tierId"]) for b in bodies} == {("prog", "gold")}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("merging", [True, False], ids=["passkit-merges", "passkit-replaces"])
async def test_what_a_message_does_to_the_passs_other_fields(
    fake: FakePassKit, mode: str, merging: bool
) -> None:
    """The default (read_modify_write) keeps them whatever PassKit does; merge mode keeps
    them only if PassKit merges, which is why `loyaltyd check` exists."""
    fake.merge_metadata = merging
    fake.add_pass("c1", protocol="COUPON", class_id="camp", metadata={"size": "large"})
    async with client_for(fake, passkit_metadata_mode=mode) as client:
        value = await client.write_message("COUPON", "c1", "Still valid!")
    kept = mode == "read_modify_write" or merging
    expected = {"size": "large", FIELD: value} if kept else {FIELD: value}
    assert fake.metadata_of("c1") == expected
    assert visible_text(fake.messages_for("c1")[-1]) == "Still valid!"


# --- 2. "already done" is narrow -----------------------------------------------------------------


@pytest.mark.parametrize("state", ["expired", "voided"])
async def test_an_expired_or_voided_coupon_is_refused_with_passkits_message(
    fake: FakePassKit, state: str
) -> None:
    fake.add_pass("c1", protocol="COUPON", expired=state == "expired", voided=state == "voided")
    async with client_for(fake) as client:
        with pytest.raises(PermanentPassKitError) as caught:
            await client.redeem_coupon("c1")
    assert caught.value.status == 400
    assert f"coupon has {'expired' if state == 'expired' else 'been voided'}" in str(caught.value)
    assert not fake.redeemed("c1")
    assert fake.count(ROUTE_GET_COUPON) == 1, "the coupon was read back to tell"


async def test_a_coupon_redeemed_elsewhere_counts_as_done(fake: FakePassKit) -> None:
    fake.add_pass("c1", protocol="COUPON", redeemed=True)
    async with client_for(fake) as client:
        await client.redeem_coupon("c1")  # refused by PassKit, judged done: no exception
    assert [(r.route, r.status) for r in fake.requests] == [
        (ROUTE_REDEEM_COUPON, 400),
        (ROUTE_GET_COUPON, 200),
    ]


async def test_an_expired_ticket_is_a_failure_not_a_check_in(fake: FakePassKit) -> None:
    fake.add_pass("t1", protocol="EVENT_TICKET", expired=True)
    async with client_for(fake) as client:
        with pytest.raises(PermanentPassKitError, match="not valid"):
            await client.check_in_ticket("t1")
    assert fake.validations_of("t1") == 0


# --- 4. the fake follows the protos --------------------------------------------------------------


async def test_passes_are_addressed_by_external_id_with_their_class(fake: FakePassKit) -> None:
    fake.add_pass("m1", class_id="prog", external_id="M-1")
    fake.add_pass("c1", protocol="COUPON", class_id="camp", external_id="C-1")
    fake.add_pass("t1", protocol="EVENT_TICKET", class_id="prod", ticket_number="T-9")
    meta = {"metaData": {"k": "v"}}
    member = {"externalId": "M-1", "programId": "prog", **meta}
    assert await raw(fake, "PUT", "/members/member", member) == (200, {"id": "m1"})
    status, answer = await raw(fake, "PUT", "/members/member", {"externalId": "M-1", **meta})
    assert (status, answer["code"]) == (400, 3)
    elsewhere = {**member, "programId": "other"}
    assert (await raw(fake, "PUT", "/members/member", elsewhere))[0] == 404
    coupon = {"externalId": "C-1", "campaignId": "camp", **meta}
    assert await raw(fake, "PUT", "/coupon/singleUse/coupon", coupon) == (200, {"id": "c1"})
    by_number = {"ticket": {"ticketNumber": {"productionId": "prod", "ticketNumber": "T-9"}}}
    status, answer = await raw(fake, "PUT", "/eventTickets/ticket/validate", by_number)
    assert (status, answer["valid"], answer["ticket"]["id"]) == (200, True, "t1")
    update = {"ticketNumber": "T-9", "event": {"production": {"id": "prod"}}, **meta}
    assert await raw(fake, "PUT", "/eventTickets/ticket", update) == (200, {"id": "t1"})
    assert fake.metadata_of("m1") == fake.metadata_of("c1") == fake.metadata_of("t1") == {"k": "v"}


async def test_answers_have_the_published_shapes(fake: FakePassKit) -> None:
    fake.add_pass("m1", class_id="prog", tier_id="gold", external_id="M-1")
    body = {"id": "m1", "points": 5}
    status, points = await raw(fake, "PUT", "/members/member/points/set", body)
    assert status == 200
    member_points = {"id", "externalId", "programId", "points", "secondaryPoints", "tierPoints"}
    assert set(points) == member_points
    status, member = await raw(fake, "GET", "/members/member/id/m1", None)
    assert (member["tierId"], member["programId"], member["points"]) == ("gold", "prog", 5)
    status, error = await raw(fake, "GET", "/members/member/id/nobody", None)
    assert (status, set(error)) == (404, {"code", "message", "details"})


async def test_fields_passkit_would_ignore_are_counted(fake: FakePassKit) -> None:
    fake.add_pass("m1")
    await raw(fake, "PUT", "/members/member", {"id": "m1", "tierName": "gold", "metaData": {}})
    assert fake.ignored_fields == {"PUT /members/member tierName": 1}


@pytest.mark.parametrize(("issued_in", "status"), [(0, 200), (30, 200), (3600, 401)])
async def test_a_token_issued_in_the_future_is_refused(
    fake: FakePassKit, issued_in: int, status: int
) -> None:
    """Within a minute of clock skew is fine; an hour ahead is not."""
    fake.add_pass("m1")
    iat = int(time.time()) + issued_in
    token = jwt.encode({"uid": API_KEY, "iat": iat, "exp": iat + 60}, API_SECRET)
    async with (
        aiohttp.ClientSession() as session,
        session.get(fake.url + "/members/member/id/m1", headers={"Authorization": token}) as r,
    ):
        assert r.status == status


async def test_unknown_keys_are_unauthorized(fake: FakePassKit) -> None:
    settings = make_settings(fake.url, passkit_api_key="someone-else")
    async with PassKitClient(settings, sleep=RecordingSleep()) as client:
        with pytest.raises(Unauthorized):
            await client.get(routes.GET_MEMBER, "m1")


# --- the Messages API ----------------------------------------------------------------------------


async def test_a_message_is_created_once_and_sent_to_chunks_of_pass_ids(fake: FakePassKit) -> None:
    for n in range(5):
        fake.add_pass(f"m{n}")
    async with client_for(fake) as client:
        message_id = await client.create_message("Joe's Pizza", "Double points today!")
        assert await client.send_message(message_id, ["m0", "m1", "m2"]) == 3
        assert await client.send_message(message_id, ["m3", "m4", "not-a-pass"]) == 2
        held = await client.get(routes.GET_MESSAGE, message_id)
    assert held["plainTextContent"] == "Double points today!"
    assert fake.bulk_recipients() == {f"m{n}": 1 for n in range(5)}
    sent = [r.body for r in fake.requests if r.route == ROUTE_SEND_MESSAGE]
    assert sent[0] == {"messageId": message_id, "passIds": {"ids": ["m0", "m1", "m2"]}}
    assert not fake.ignored_fields


async def test_sending_a_message_that_does_not_exist_is_refused(fake: FakePassKit) -> None:
    async with client_for(fake) as client:
        with pytest.raises(PermanentPassKitError) as caught:
            await client.send_message("no-such-message", ["m1"])
        with pytest.raises(WorkRefused, match="title"):
            await client.create_message("", "text")
    assert caught.value.status == 404
