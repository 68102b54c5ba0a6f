"""Mock mode's in-process PassKit: nothing leaves the machine, yet every request is throttled,
read before it is written, answered as PassKit answers, paced by PASSKIT_MOCK_LATENCY_MS, and
summarised in the logs once a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
from aioresponses import aioresponses
from structlog.testing import capture_logs

from daemon.core.errors import Fenced
from daemon.core.metrics import Metrics
from daemon.passkit.client import PassKitClient
from daemon.passkit.mock import MockPassKit
from daemon.passkit.suffix import visible_text
from tests.passkit_fixtures import mock_settings, mocked_http


@pytest.fixture
def http(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    yield from mocked_http(monkeypatch)


def _events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def test_nothing_leaves_the_machine_and_each_request_is_logged_at_debug(
    http: aioresponses,
) -> None:
    metrics = Metrics()
    async with PassKitClient(mock_settings(passkit_mock_latency_ms=0), metrics) as client:
        assert client.mock_mode
        with capture_logs() as logs:
            await client.set_points("pk1", 5)
            value = await client.write_message("COUPON", "c1", "Hi " + "x" * 200)
            await client.redeem_coupon("c1")
            await client.check_in_ticket("t1")
    assert not http.requests
    assert visible_text(value).startswith("Hi xxx")
    requests = _events(logs, "passkit_mock_request")
    assert [(e["operation"], e.get("passkit_id")) for e in requests] == [
        ("set_points", "pk1"),
        ("get_coupon", "c1"),  # read_modify_write reads first, in mock mode too
        ("write_message", "c1"),
        ("redeem_coupon", "c1"),
        ("check_in_ticket", "t1"),
    ]
    assert all(e["log_level"] == "debug" for e in requests)
    assert requests[0]["points"] == 5
    text = requests[2]["text"]
    assert isinstance(text, str) and text.startswith("Hi xxx") and len(text) == 80
    assert text.endswith("…")
    sample = metrics.registry.get_sample_value
    labels = {"operation": "set_points", "outcome": "mock"}
    assert sample("loyaltyd_passkit_requests_total", labels) == 1.0
    assert sample("loyaltyd_passkit_requests_total", {**labels, "outcome": "ok"}) is None


async def test_traffic_is_summarised_once_a_second_by_operation() -> None:
    with capture_logs() as logs:
        async with PassKitClient(mock_settings(passkit_mock_latency_ms=0)) as client:
            for n in range(3):
                await client.set_points(f"pk{n}", n)
            await client.write_message("MEMBERSHIP", "m1", "Hello")
            await asyncio.sleep(1.3)
            summaries = _events(logs, "passkit_mock_traffic")
            assert len(summaries) == 1
            assert summaries[0]["log_level"] == "info"
            assert summaries[0]["requests"] == {
                "get_member": 1,
                "set_points": 3,
                "write_message": 1,
            }
            assert summaries[0]["total"] == 5
            await asyncio.sleep(1.2)
            assert len(_events(logs, "passkit_mock_traffic")) == 1, "a quiet second says nothing"
            await client.set_points("pk9", 1)
    # The last partial second is said on close.
    assert _events(logs, "passkit_mock_traffic")[-1]["requests"] == {"set_points": 1}


async def test_mock_calls_wait_for_the_rate_limit_like_real_ones() -> None:
    settings = mock_settings(passkit_mock_latency_ms=0, passkit_rate_limit=20, passkit_rate_burst=1)
    async with PassKitClient(settings) as client:
        started = time.monotonic()
        await asyncio.gather(*(client.set_points(f"pk{n}", 1) for n in range(21)))
        elapsed = time.monotonic() - started
    assert elapsed >= 0.95, f"21 calls at 20/s took {elapsed:.2f} s"


async def test_each_answer_takes_the_configured_latency() -> None:
    async with PassKitClient(mock_settings(passkit_mock_latency_ms=60)) as client:
        started = time.monotonic()
        await client.write_message("MEMBERSHIP", "m1", "Hello")  # a read and a write
        elapsed = time.monotonic() - started
    assert elapsed >= 0.12


async def test_a_message_reads_back_what_the_last_one_wrote() -> None:
    """The mock remembers each pass's metaData, so read_modify_write keeps other keys and the
    invisible suffix changes from one write to the next (Apple alerts on a change only)."""
    transport = MockPassKit(0, message_field="loyaltydMessage")
    settings = mock_settings()
    async with PassKitClient(settings, transport=transport) as client:
        first = await client.write_message("MEMBERSHIP", "m1", "Same")
        held = await client.read_pass("MEMBERSHIP", "m1")
        second = await client.write_message("MEMBERSHIP", "m1", "Same")
    assert held == {"id": "m1", "metaData": {"loyaltydMessage": first}}
    assert first != second and visible_text(first) == visible_text(second) == "Same"


async def test_the_messages_api_answers_an_id_and_a_count() -> None:
    async with PassKitClient(mock_settings(passkit_mock_latency_ms=0)) as client:
        message_id = await client.create_message("Title", "Text")
        assert message_id
        assert await client.send_message(message_id, ["a", "b", "c"]) == 3


async def test_a_fenced_daemon_sends_nothing_even_in_mock_mode() -> None:
    transport = MockPassKit(0, message_field="loyaltydMessage")
    async with PassKitClient(mock_settings(), transport=transport) as client:
        client.fence = lambda: True
        with pytest.raises(Fenced):
            await client.set_points("pk1", 1)
    assert transport.requests == 0
