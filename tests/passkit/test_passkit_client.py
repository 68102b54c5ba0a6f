"""PassKitClient against aioresponses: request shapes, error mapping, retries, auth, mock mode,
payload guard and log redaction. No sockets, no sleeping (sleep and clocks are injected)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import structlog
from aioresponses import CallbackResult, aioresponses
from structlog.testing import capture_logs
from yarl import URL

from daemon.core.config import Settings
from daemon.core.errors import (
    PayloadTooLarge,
    PermanentPassKitError,
    TransientPassKitError,
    Unauthorized,
    WorkRefused,
)
from daemon.core.logs import configure_logging
from daemon.core.metrics import Metrics
from daemon.passkit.client import (
    MAX_PAYLOAD_BYTES,
    PassKitClient,
    already_done_matcher,
    encode_body,
    is_transient_status,
    parse_retry_after,
    warn_if_mock,
)
from daemon.passkit.suffix import NONCE_BITS, invisible_suffix, visible_text, with_invisible_nonce
from daemon.passkit.throttle import Throttle
from tests.passkit_fixtures import (
    API_KEY,
    API_SECRET,
    BASE_URL,
    RecordingSleep,
    SteppingClock,
    decode_token,
    make_settings,
    mock_settings,
    mocked_http,
)

POINTS_URL = f"{BASE_URL}/members/member/points/set"
MEMBER_URL = f"{BASE_URL}/members/member"
COUPON_URL = f"{BASE_URL}/coupon/singleUse/coupon"
REDEEM_URL = f"{BASE_URL}/coupon/singleUse/coupon/redeem"
TICKET_URL = f"{BASE_URL}/eventTickets/ticket"
VALIDATE_URL = f"{BASE_URL}/eventTickets/ticket/validate"
FIELD = "loyaltydMessage"


@pytest.fixture
def http(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    yield from mocked_http(monkeypatch)


def client_for(settings: Settings | None = None, **kwargs: Any) -> PassKitClient:
    kwargs.setdefault("sleep", RecordingSleep())
    kwargs.setdefault("rng", random.Random(7))
    return PassKitClient(settings or make_settings(), **kwargs)


def calls(http: aioresponses, method: str, url: str) -> list[dict[str, Any]]:
    """The keyword arguments of every request sent to `method url`."""
    return [call.kwargs for call in http.requests.get((method, URL(url)), [])]


def sent_json(http: aioresponses, method: str, url: str) -> list[Any]:
    return [json.loads(kwargs["data"]) for kwargs in calls(http, method, url)]


def total_requests(http: aioresponses) -> int:
    return sum(len(v) for v in http.requests.values())


# --- request shapes ------------------------------------------------------------------------------


async def test_set_points_puts_the_absolute_balance_with_the_id_in_the_body(
    http: aioresponses,
) -> None:
    http.put(POINTS_URL, payload={"id": "pk1", "points": 120})
    async with client_for() as client:
        await client.set_points("pk1", 120)
    assert sent_json(http, "PUT", POINTS_URL) == [{"id": "pk1", "points": 120}]


async def test_set_points_to_zero_sends_the_reset_flag(http: aioresponses) -> None:
    http.put(POINTS_URL, payload={"id": "pk1"})
    async with client_for() as client:
        await client.set_points("pk1", 0)
    assert sent_json(http, "PUT", POINTS_URL) == [{"id": "pk1", "points": 0, "resetPoints": True}]


async def test_negative_points_are_refused_before_sending(http: aioresponses) -> None:
    async with client_for() as client:
        with pytest.raises(WorkRefused, match="points"):
            await client.set_points("pk1", -5)
    assert total_requests(http) == 0


async def test_jwt_claims_are_uid_backdated_iat_and_short_exp(http: aioresponses) -> None:
    http.put(POINTS_URL, payload={})
    settings = make_settings(passkit_jwt_lifetime_seconds=90)
    async with client_for(settings, wall_clock=lambda: 1_700_000_000.5) as client:
        await client.set_points("pk1", 1)
    header = calls(http, "PUT", POINTS_URL)[0]["headers"]["Authorization"]
    assert not header.startswith("Bearer ")
    assert decode_token(header) == {
        "uid": API_KEY,
        "iat": 1_700_000_000 - 10,
        "exp": 1_700_000_000 + 90,
    }


async def test_bearer_scheme_prefixes_the_token(http: aioresponses) -> None:
    http.put(POINTS_URL, payload={})
    async with client_for(make_settings(passkit_auth_scheme="bearer")) as client:
        await client.set_points("pk1", 1)
    header = calls(http, "PUT", POINTS_URL)[0]["headers"]["Authorization"]
    assert header.startswith("Bearer ")
    assert decode_token(header)["uid"] == API_KEY


async def test_token_is_reused_within_half_its_lifetime_then_renewed(http: aioresponses) -> None:
    http.put(POINTS_URL, payload={}, repeat=True)
    now = [1_700_000_000.0]
    settings = make_settings(passkit_jwt_lifetime_seconds=60)
    async with client_for(settings, wall_clock=lambda: now[0]) as client:
        for offset in (0, 10, 29.9, 30, 45):
            now[0] = 1_700_000_000.0 + offset
            await client.set_points("pk1", 1)
    headers = [kw["headers"]["Authorization"] for kw in calls(http, "PUT", POINTS_URL)]
    assert headers[0] == headers[1] == headers[2]
    assert headers[3] != headers[2]
    assert headers[4] == headers[3]


MERGE = make_settings(passkit_metadata_mode="merge")


@pytest.mark.parametrize(
    ("protocol", "url"),
    [("MEMBERSHIP", MEMBER_URL), ("COUPON", COUPON_URL), ("EVENT_TICKET", TICKET_URL)],
)
async def test_write_message_in_merge_mode_sends_the_id_and_the_message_field_alone(
    http: aioresponses, protocol: str, url: str
) -> None:
    """No tierId, no programId: PassKit applies every non-empty field it is sent."""
    http.put(url, payload={"id": "pk1"})
    async with client_for(MERGE) as client:
        value = await client.write_message(protocol, "pk1", "Hello Ada")
    (body,) = sent_json(http, "PUT", url)
    assert body == {"id": "pk1", "metaData": {FIELD: value}}
    assert visible_text(value) == "Hello Ada"
    assert value != "Hello Ada"  # an invisible suffix makes repeats alert
    assert total_requests(http) == 1


async def test_read_modify_write_sends_back_the_members_own_program_and_tier(
    http: aioresponses,
) -> None:
    member = {"id": "pk1", "programId": "prog", "tierId": "gold", "points": 5, "metaData": {}}
    http.get(f"{MEMBER_URL}/id/pk1", payload=member)
    http.put(MEMBER_URL, payload={"id": "pk1"})
    async with client_for() as client:
        value = await client.write_message("MEMBERSHIP", "pk1", "Hi")
    assert sent_json(http, "PUT", MEMBER_URL) == [
        {"id": "pk1", "programId": "prog", "tierId": "gold", "metaData": {FIELD: value}}
    ]


async def test_read_modify_write_sends_a_coupon_its_id_and_metadata_only(
    http: aioresponses,
) -> None:
    coupon = {"id": "c1", "campaignId": "camp", "offerId": "o", "status": "UNREDEEMED"}
    http.get(f"{COUPON_URL}/c1", payload=coupon)
    http.put(COUPON_URL, payload={"id": "c1"})
    async with client_for() as client:
        value = await client.write_message("COUPON", "c1", "Hi")
    assert sent_json(http, "PUT", COUPON_URL) == [{"id": "c1", "metaData": {FIELD: value}}]


async def test_write_message_uses_the_configured_field(http: aioresponses) -> None:
    http.put(MEMBER_URL, payload={"id": "pk1"})
    async with client_for(
        make_settings(passkit_message_field="news", passkit_metadata_mode="merge")
    ) as client:
        value = await client.write_message("MEMBERSHIP", "pk1", "Hi")
    assert sent_json(http, "PUT", MEMBER_URL)[0]["metaData"] == {"news": value}


@pytest.mark.parametrize(
    ("protocol", "read_url", "write_url"),
    [
        ("MEMBERSHIP", f"{MEMBER_URL}/id/pk1", MEMBER_URL),
        ("COUPON", f"{COUPON_URL}/pk1", COUPON_URL),
        ("EVENT_TICKET", f"{TICKET_URL}/id/pk1", TICKET_URL),
    ],
)
async def test_read_modify_write_sends_the_whole_metadata_map_with_the_field_replaced(
    http: aioresponses, protocol: str, read_url: str, write_url: str
) -> None:
    http.get(read_url, payload={"id": "pk1", "metaData": {"tier": "gold", FIELD: "old"}})
    http.put(write_url, payload={"id": "pk1"})
    settings = make_settings(passkit_metadata_mode="read_modify_write")
    async with client_for(settings) as client:
        value = await client.write_message(protocol, "pk1", "new")
    assert sent_json(http, "PUT", write_url)[0]["metaData"] == {"tier": "gold", FIELD: value}


async def test_read_modify_write_never_rewrites_the_value_already_on_the_pass(
    http: aioresponses,
) -> None:
    """Even if the nonce repeats, the value sent differs from the one read."""
    clash = with_invisible_nonce("same", 1_700_000_000_000)
    http.get(f"{MEMBER_URL}/id/pk1", payload={"metaData": {FIELD: clash}})
    http.put(MEMBER_URL, payload={})
    settings = make_settings(passkit_metadata_mode="read_modify_write")
    async with client_for(settings, wall_clock=lambda: 1_700_000_000.0) as client:
        value = await client.write_message("MEMBERSHIP", "pk1", "same")
    assert value != clash
    assert visible_text(value) == "same"


async def test_unknown_protocol_is_a_value_error(http: aioresponses) -> None:
    async with client_for() as client:
        with pytest.raises(ValueError, match="FLIGHT"):
            await client.write_message("FLIGHT", "pk1", "Hi")
    assert total_requests(http) == 0


async def test_redeem_coupon_puts_the_id_in_the_body(http: aioresponses) -> None:
    http.put(REDEEM_URL, payload={"id": "c1"})
    async with client_for() as client:
        await client.redeem_coupon("c1")
    assert sent_json(http, "PUT", REDEEM_URL) == [{"id": "c1"}]


@pytest.mark.parametrize(
    "answer",
    [
        {"code": 9, "message": "coupon has already been redeemed", "details": []},
        {"code": 9, "message": "precondition failed", "details": []},
        {"error": "FAILED_PRECONDITION: redemption not allowed"},
    ],
)
async def test_a_refused_redeem_of_a_coupon_that_is_redeemed_counts_as_done(
    http: aioresponses, answer: dict[str, Any]
) -> None:
    http.put(REDEEM_URL, status=400, payload=answer)
    http.get(f"{COUPON_URL}/c1", payload={"id": "c1", "status": "REDEEMED"})
    async with client_for() as client:
        await client.redeem_coupon("c1")
    assert len(calls(http, "PUT", REDEEM_URL)) == 1


@pytest.mark.parametrize(
    "message", ["coupon has expired", "coupon has been voided", "outside the redemption window"]
)
async def test_a_refused_redeem_of_a_coupon_not_redeemed_is_a_failure_with_passkits_message(
    http: aioresponses, message: str
) -> None:
    """grpc-gateway writes every FAILED_PRECONDITION as 400: the coupon's status decides."""
    http.put(REDEEM_URL, status=400, payload={"code": 9, "message": message, "details": []})
    http.get(f"{COUPON_URL}/c1", payload={"id": "c1", "status": "UNREDEEMED"})
    async with client_for() as client:
        with pytest.raises(PermanentPassKitError) as caught:
            await client.redeem_coupon("c1")
    assert caught.value.status == 400
    assert message in str(caught.value)


async def test_a_configured_pattern_counts_a_matching_refusal_as_done_without_a_read(
    http: aioresponses,
) -> None:
    http.put(REDEEM_URL, status=400, payload={"code": 9, "message": "Coupon already redeemed"})
    settings = make_settings(passkit_already_done_pattern=r"already\s+redeemed")
    async with client_for(settings) as client:
        await client.redeem_coupon("c1")
    assert total_requests(http) == 1


async def test_a_404_on_redeem_is_a_failure_without_a_read(http: aioresponses) -> None:
    http.put(REDEEM_URL, status=404, payload={"code": 5, "message": "coupon not found"})
    async with client_for() as client:
        with pytest.raises(PermanentPassKitError):
            await client.redeem_coupon("c1")
    assert total_requests(http) == 1


async def test_check_in_validates_the_ticket_once(http: aioresponses) -> None:
    http.put(VALIDATE_URL, payload={"valid": True, "ticket": {"id": "t1"}})
    async with client_for() as client:
        await client.check_in_ticket("t1")
    assert sent_json(http, "PUT", VALIDATE_URL) == [
        {"ticket": {"ticketId": "t1"}, "maxNumberOfValidations": 1}
    ]


async def test_check_in_leaves_max_validations_to_the_ticket_when_set_to_zero(
    http: aioresponses,
) -> None:
    http.put(VALIDATE_URL, payload={"valid": True})
    async with client_for(make_settings(passkit_ticket_max_validations=0)) as client:
        await client.check_in_ticket("t1")
    assert sent_json(http, "PUT", VALIDATE_URL) == [{"ticket": {"ticketId": "t1"}}]


async def test_checking_in_an_already_redeemed_ticket_counts_as_done(http: aioresponses) -> None:
    http.put(VALIDATE_URL, status=400, payload={"code": 9, "message": "ticket redeemed"})
    http.get(f"{TICKET_URL}/id/t1", payload={"id": "t1", "status": "REDEEMED"})
    http.put(VALIDATE_URL, payload={"valid": False, "ticket": {"id": "t1", "status": "REDEEMED"}})
    async with client_for() as client:
        with capture_logs() as logs:
            await client.check_in_ticket("t1")
            await client.check_in_ticket("t1")
    events = [entry["event"] for entry in logs]
    assert events == ["passkit_request_refused", "passkit_already_done", "passkit_already_done"]


async def test_a_ticket_that_is_not_valid_and_not_redeemed_is_a_failure(
    http: aioresponses,
) -> None:
    http.put(VALIDATE_URL, payload={"valid": False, "ticket": {"id": "t1", "status": "ISSUED"}})
    async with client_for() as client:
        with pytest.raises(PermanentPassKitError, match="not valid"):
            await client.check_in_ticket("t1")


# --- error mapping and retries -------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422])
async def test_permanent_statuses_fail_at_once_without_retry(
    http: aioresponses, status: int
) -> None:
    http.put(POINTS_URL, status=status, payload={"error": "nope"}, repeat=True)
    sleep = RecordingSleep()
    async with client_for(sleep=sleep) as client:
        with pytest.raises(PermanentPassKitError) as caught:
            await client.set_points("pk1", 1)
    assert caught.value.status == status
    assert "nope" in str(caught.value)
    assert len(calls(http, "PUT", POINTS_URL)) == 1
    assert sleep.delays == []


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
async def test_a_transient_status_gets_one_quick_retry(http: aioresponses, status: int) -> None:
    http.put(POINTS_URL, status=status, payload={"error": "busy"})
    http.put(POINTS_URL, payload={"id": "pk1"})
    sleep = RecordingSleep()
    async with client_for(sleep=sleep) as client:
        await client.set_points("pk1", 1)
    assert len(calls(http, "PUT", POINTS_URL)) == 2
    [delay] = sleep.delays
    assert 0.25 <= delay <= 1.0  # PassKit: "back off for 250 ms and repeat"


async def test_a_second_transient_failure_is_handed_to_the_queue(http: aioresponses) -> None:
    """Every longer wait is the queue's: the client holds no slot while PassKit recovers."""
    http.put(POINTS_URL, status=503, repeat=True)
    sleep = RecordingSleep()
    async with client_for(sleep=sleep) as client:
        with pytest.raises(TransientPassKitError) as caught:
            await client.set_points("pk1", 1)
    assert caught.value.status == 503
    assert len(calls(http, "PUT", POINTS_URL)) == 2
    assert len(sleep.delays) == 1


async def test_a_retry_after_of_a_second_is_waited_out_in_the_quick_retry(
    http: aioresponses,
) -> None:
    http.put(POINTS_URL, status=429, headers={"Retry-After": "1"})
    http.put(POINTS_URL, payload={})
    sleep = RecordingSleep()
    async with client_for(sleep=sleep) as client:
        await client.set_points("pk1", 1)
    assert sleep.delays == [1.0]


@pytest.mark.parametrize("retry_after", ["2", "90"])
async def test_a_longer_retry_after_is_not_slept_but_handed_to_the_queue(
    http: aioresponses, retry_after: str
) -> None:
    http.put(POINTS_URL, status=429, headers={"Retry-After": retry_after})
    sleep = RecordingSleep()
    async with client_for(sleep=sleep) as client:
        with pytest.raises(TransientPassKitError) as caught:
            await client.set_points("pk1", 1)
    assert caught.value.retry_after == float(retry_after)
    assert sleep.delays == []
    assert len(calls(http, "PUT", POINTS_URL)) == 1


async def test_retry_after_beyond_the_cap_is_handed_back_to_the_caller(
    http: aioresponses,
) -> None:
    http.put(POINTS_URL, status=429, headers={"Retry-After": "600"})
    async with client_for() as client:
        with pytest.raises(TransientPassKitError) as caught:
            await client.set_points("pk1", 1)
    assert caught.value.retry_after == 600.0


async def test_timeouts_are_transient_and_retried(http: aioresponses) -> None:
    http.put(POINTS_URL, timeout=True)
    http.put(POINTS_URL, payload={})
    async with client_for() as client:
        await client.set_points("pk1", 1)
    assert len(calls(http, "PUT", POINTS_URL)) == 2


async def test_connection_errors_become_transient_errors_chained_to_the_cause(
    http: aioresponses,
) -> None:
    http.put(POINTS_URL, exception=aiohttp.ClientConnectionError("Connection refused"), repeat=True)
    async with client_for() as client:
        with pytest.raises(TransientPassKitError) as caught:
            await client.set_points("pk1", 1)
    assert caught.value.status is None
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectionError)
    assert len(calls(http, "PUT", POINTS_URL)) == 2


async def test_timeout_maps_to_transient_error_chained_to_timeout(http: aioresponses) -> None:
    http.put(POINTS_URL, timeout=True, repeat=True)
    async with client_for() as client:
        with pytest.raises(TransientPassKitError, match="timed out") as caught:
            await client.set_points("pk1", 1)
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_401_re_signs_the_token_once_and_retries(http: aioresponses) -> None:
    http.put(POINTS_URL, status=401, payload={"error": "token expired"})
    http.put(POINTS_URL, payload={})
    async with client_for(wall_clock=SteppingClock()) as client:
        await client.set_points("pk1", 1)
    first, second = (kw["headers"]["Authorization"] for kw in calls(http, "PUT", POINTS_URL))
    assert first != second
    assert decode_token(second)["iat"] > decode_token(first)["iat"]


async def test_a_second_401_is_unauthorized_and_permanent(http: aioresponses) -> None:
    http.put(POINTS_URL, status=401, payload={"error": "bad signature"}, repeat=True)
    sleep = RecordingSleep()
    async with client_for(sleep=sleep) as client:
        with pytest.raises(Unauthorized) as caught:
            await client.set_points("pk1", 1)
    assert isinstance(caught.value, PermanentPassKitError)
    assert caught.value.status == 401
    assert len(calls(http, "PUT", POINTS_URL)) == 2
    assert sleep.delays == []


async def test_401_after_a_re_sign_and_a_503_is_unauthorized(http: aioresponses) -> None:
    """The re-sign happens once per call, not once per attempt."""
    http.put(POINTS_URL, status=401)
    http.put(POINTS_URL, status=503)
    http.put(POINTS_URL, status=401)
    http.put(POINTS_URL, payload={})
    async with client_for() as client:
        with pytest.raises(Unauthorized):
            await client.set_points("pk1", 1)
    assert len(calls(http, "PUT", POINTS_URL)) == 3


async def test_backoff_sleeps_without_holding_a_concurrency_slot(http: aioresponses) -> None:
    http.put(POINTS_URL, status=503)
    http.put(POINTS_URL, payload={})
    throttle = Throttle(1)
    held_while_sleeping: list[int] = []

    async def sleep(_: float) -> None:
        held_while_sleeping.append(throttle.in_flight)

    async with client_for(throttle=throttle, sleep=sleep) as client:
        await client.set_points("pk1", 1)
    assert held_while_sleeping == [0]


# --- payload guard -------------------------------------------------------------------------------


async def test_payload_over_10000_bytes_is_refused_before_sending(http: aioresponses) -> None:
    async with client_for(MERGE) as client:
        with pytest.raises(PayloadTooLarge) as caught:
            await client.write_message("MEMBERSHIP", "pk1", "x" * 10_000)
    assert caught.value.size > MAX_PAYLOAD_BYTES
    assert total_requests(http) == 0


async def test_the_invisible_suffix_counts_toward_the_payload_limit(http: aioresponses) -> None:
    """A text that fits only without its suffix is refused; one that fits with it is sent."""
    http.put(MEMBER_URL, payload={}, repeat=True)
    overhead = len(encode_body({"id": "pk1", "metaData": {FIELD: with_invisible_nonce("", 0)}}))
    fitting = "a" * (MAX_PAYLOAD_BYTES - overhead)
    async with client_for(MERGE) as client:
        await client.write_message("MEMBERSHIP", "pk1", fitting)
        with pytest.raises(PayloadTooLarge):
            await client.write_message("MEMBERSHIP", "pk1", fitting + "a")
    (kwargs,) = calls(http, "PUT", MEMBER_URL)
    assert len(kwargs["data"]) == MAX_PAYLOAD_BYTES


def test_encode_body_is_compact_utf8() -> None:
    assert encode_body({"id": "a", "t": "é\u200b"}) == '{"id":"a","t":"é\u200b"}'.encode()


# --- mock mode (more in test_mock_mode.py) -----------------------------------------------------


async def test_mock_mode_still_refuses_oversized_payloads() -> None:
    async with client_for(mock_settings()) as client:
        with pytest.raises(PayloadTooLarge):
            await client.write_message("COUPON", "c1", "x" * 20_000)


@pytest.mark.parametrize(
    "settings",
    [
        mock_settings(),
        make_settings(passkit_api_secret=""),
        make_settings(passkit_api_key="  "),
    ],
    ids=["both-unset", "empty-secret", "blank-key"],
)
def test_warn_if_mock_says_so_loudly_when_credentials_are_missing(settings: Settings) -> None:
    with capture_logs() as logs:
        assert warn_if_mock(settings) is True
    assert logs[0]["event"] == "passkit_mock_mode"
    assert logs[0]["log_level"] == "warning"


def test_warn_if_mock_is_silent_with_credentials() -> None:
    with capture_logs() as logs:
        assert warn_if_mock(make_settings()) is False
    assert logs == []


# --- metrics, lifecycle --------------------------------------------------------------------------


async def test_metrics_count_requests_retries_and_latency(http: aioresponses) -> None:
    http.put(POINTS_URL, status=503)
    http.put(POINTS_URL, payload={})
    metrics = Metrics()
    async with client_for(metrics=metrics) as client:
        await client.set_points("pk1", 1)

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    op = {"operation": "set_points"}
    assert sample("loyaltyd_passkit_requests_total", **op, outcome="ok") == 1.0
    assert sample("loyaltyd_passkit_requests_total", **op, outcome="transient") == 1.0
    assert sample("loyaltyd_passkit_retries_total", **op, reason="503") == 1.0
    assert sample("loyaltyd_passkit_request_seconds_count", **op) == 2.0
    assert sample("loyaltyd_ratelimit_wait_seconds_count") == 2.0


async def test_calls_outside_async_with_are_a_programming_error() -> None:
    client = client_for()
    with pytest.raises(RuntimeError, match="async with"):
        await client.set_points("pk1", 1)


async def test_a_session_passed_in_is_left_open(http: aioresponses) -> None:
    http.put(POINTS_URL, payload={})
    async with aiohttp.ClientSession() as session:
        async with client_for(session=session) as client:
            await client.set_points("pk1", 1)
        assert not session.closed


# --- pure helpers --------------------------------------------------------------------------------


def test_invisible_suffix_is_zero_width_and_distinct_for_consecutive_nonces() -> None:
    suffixes = [invisible_suffix(n) for n in range(1_000, 1_100)]
    assert len(set(suffixes)) == len(suffixes)
    assert all(len(s) == NONCE_BITS and set(s) <= {"\u200b", "\u200c"} for s in suffixes)


def test_visible_text_is_unchanged_by_the_nonce() -> None:
    for text in ["Hello", "", "Emoji 🎉", "trailing space "]:
        assert visible_text(with_invisible_nonce(text, 12345)) == text
    # A text that already carries a suffix gets a new one, not two.
    twice = with_invisible_nonce(with_invisible_nonce("Hi", 1), 2)
    assert twice == with_invisible_nonce("Hi", 2)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        ("-4", 0.0),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("soon", None),
        ("nan", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after_reads_seconds_and_http_dates(
    header: str | None, expected: float | None
) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(header, now) == expected


@pytest.mark.parametrize(
    ("status", "transient"),
    [
        (408, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (501, False),
        (400, False),
        (403, False),
        (404, False),
        (409, False),
    ],
)
def test_transient_statuses(status: int, transient: bool) -> None:
    assert is_transient_status(status) is transient


@pytest.mark.parametrize(
    ("status", "body", "done"),
    [
        (400, '{"message": "coupon already redeemed"}', True),
        (409, '{"message": "ALREADY REDEEMED"}', True),
        (400, '{"message": "coupon has expired"}', False),
        (404, "already redeemed", False),
        (401, "already redeemed", False),
        (429, "already redeemed", False),
        (500, "already redeemed", False),
        (200, "already redeemed", False),
    ],
)
def test_the_configured_already_done_matcher(status: int, body: str, done: bool) -> None:
    matcher = already_done_matcher(r"already\s+redeemed")
    assert matcher is not None
    assert matcher(status, body) is done
    assert already_done_matcher("") is None, "no text counts by default"


def test_a_pattern_that_is_not_a_regular_expression_is_refused() -> None:
    with pytest.raises(ValueError, match="not a regular expression"):
        make_settings(passkit_already_done_pattern="(unclosed")


# --- secrets in logs -----------------------------------------------------------------------------


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_structlog")
async def test_logs_never_contain_the_secret_or_a_jwt(
    http: aioresponses, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even when PassKit echoes the token back in an error body that we log."""
    settings = make_settings()
    configure_logging("DEBUG", "json", settings.secrets())
    tokens: list[str] = []

    def echo_token(_url: URL, **kwargs: Any) -> CallbackResult:
        token = kwargs["headers"]["Authorization"]
        tokens.append(token)
        return CallbackResult(status=401, body=f'{{"error": "bad token {token} for {API_KEY}"}}')

    http.put(POINTS_URL, callback=echo_token, repeat=True)
    http.put(REDEEM_URL, status=503)
    http.put(REDEEM_URL, status=404, body=f"no coupon; secret was {API_SECRET}")
    async with client_for(settings, wall_clock=SteppingClock()) as client:
        with pytest.raises(Unauthorized):
            await client.set_points("pk1", 1)
        with pytest.raises(PermanentPassKitError):
            await client.redeem_coupon("c1")
    err = capsys.readouterr().err
    assert "passkit_unauthorized_resigning" in err
    assert "passkit_request_retry" in err
    assert err.count("passkit_request_refused") == 2
    assert "[redacted]" in err
    assert API_SECRET not in err
    assert len(tokens) == 2
    for token in tokens:
        assert token not in err
        assert token.split(".")[2] not in err  # not even the signature


async def test_a_refusal_whose_coupon_cannot_be_read_back_stays_the_refusal(
    http: aioresponses,
) -> None:
    http.put(REDEEM_URL, status=400, payload={"code": 3, "message": "coupon id is malformed"})
    http.get(f"{COUPON_URL}/c1", status=404, payload={"code": 5, "message": "not found"})
    async with client_for() as client:
        with pytest.raises(PermanentPassKitError, match="malformed") as caught:
            await client.redeem_coupon("c1")
    assert caught.value.status == 400
