"""PassKit's records and webhook bodies read as loyaltyd's values: every shape protojson (or
a plain JSON encoder) can write, and a clear refusal of anything else."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from daemon.domain.wallet import as_float32, status_of_passkit
from daemon.passkit.records import pass_event, wallet_record


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("PASS_INSTALLED", "INSTALLED"),
        ("PASS_UNINSTALLED", "UNINSTALLED"),
        ("PASS_INVALIDATED", "INVALIDATED"),
        ("PASS_ISSUED", "ISSUED"),
        (None, "ISSUED"),  # proto3's zero, left out of the JSON
        (1, "INSTALLED"),
        (2, "UNINSTALLED"),
        (3, "INVALIDATED"),
        (0, "ISSUED"),
        ("INSTALLED", None),
        (True, None),
        (7, None),
    ],
)
def test_passkit_statuses_in_loyaltyds_words(value: object, status: str | None) -> None:
    assert status_of_passkit(value) == status


def test_a_member_with_its_wallet_state() -> None:
    record = wallet_record(
        {
            "id": "pk-1",
            "points": 120.0,
            "passMetaData": {
                "status": "PASS_UNINSTALLED",
                "firstInstalledAt": "2024-05-01T10:00:00.123456789Z",
                "lastUninstalledAt": {"seconds": "1717236000", "nanos": 0},
                "invalidatedAt": None,
            },
        }
    )
    assert (record.passkit_id, record.status, record.points) == ("pk-1", "UNINSTALLED", 120.0)
    assert record.times.first_installed_at == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert record.times.last_uninstalled_at == datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    assert record.times.invalidated_at is None


def test_a_record_without_pass_metadata_is_issued() -> None:
    record = wallet_record({"id": "c-1", "passMetaData": None})
    assert (record.status, record.points) == ("ISSUED", None)


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ([], "JSON object"),
        ({"passMetaData": {}}, "id must be a string"),
        ({"id": "x" * 201}, "id must be a string"),
        ({"id": "a", "passMetaData": "INSTALLED"}, "passMetaData is not an object"),
        ({"id": "a", "passMetaData": {"status": "GONE"}}, "unknown pass status"),
        ({"id": "a", "passMetaData": {"lastInstalledAt": "yesterday"}}, "not an RFC 3339"),
        ({"id": "a", "passMetaData": {"lastInstalledAt": 12}}, "is not a time"),
    ],
)
def test_a_record_that_is_not_passkits_is_refused(record: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        wallet_record(record)


def test_a_webhook_names_its_event_and_pass() -> None:
    event = pass_event(
        {
            "event": "PASS_EVENT_UNINSTALLED",
            "pass": {"id": "pk-1", "classId": "prog", "protocol": "MEMBERSHIP", "metadata": {}},
        }
    )
    assert (event.event, event.passkit_id, event.protocol, event.class_id) == (
        "PASS_EVENT_UNINSTALLED",
        "pk-1",
        "MEMBERSHIP",
        "prog",
    )
    numeric = pass_event({"event": 32, "pass": {"id": "t-1", "protocol": 102}})
    assert (numeric.event, numeric.protocol, numeric.class_id) == (
        "PASS_EVENT_RECORD_DELETED",
        "EVENT_TICKET",
        None,
    )


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("PASS_EVENT_INSTALLED", "not a JSON object"),
        ({"pass": {"id": "a", "protocol": "MEMBERSHIP"}}, "unknown event"),
        ({"event": "PASS_EVENT_EXPLODED", "pass": {}}, "unknown event"),
        ({"event": "PASS_EVENT_INSTALLED"}, "no pass object"),
        ({"event": "PASS_EVENT_INSTALLED", "pass": {"id": "a"}}, "unknown protocol"),
        ({"event": "PASS_EVENT_INSTALLED", "pass": {"protocol": "MEMBERSHIP"}}, "pass.id"),
        ({"event": True, "pass": {"id": "a", "protocol": "MEMBERSHIP"}}, "unknown event"),
    ],
)
def test_a_body_that_is_not_a_passkit_webhook_is_refused(body: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        pass_event(body)


def test_balances_are_compared_as_passkit_holds_them() -> None:
    """Member.points is a float32: above 2**24 a balance keeps only its leading digits."""
    assert as_float32(120.0) == 120.0
    assert as_float32(16_777_217.0) == 16_777_216.0
    assert as_float32(16_777_219.0) != 16_777_216.0


def test_a_member_without_points_holds_zero_and_a_coupon_none() -> None:
    """proto3 leaves a zero balance out of the JSON: a member that shows none shows 0."""
    assert wallet_record({"id": "m", "programId": "p"}).points == 0.0
    assert wallet_record({"id": "c", "campaignId": "x"}).points is None
