"""What each PassKit route is sent and what is read from its answer lives beside the route table
(daemon/passkit/routes.py): the client and the callers above it name no PassKit field, and each
reader takes PassKit's proto3 JSON as PassKit writes it (a zero left out) and refuses what it
cannot read."""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from daemon.core.errors import PermanentPassKitError, TransientPassKitError, WorkRefused
from daemon.passkit import routes
from tests.conftest import REPO

# Files that call PassKit routes: none spells a body or reads an answer field by hand.
CALLERS = ("daemon/passkit/client.py", "daemon/wallet/webhooks.py")
# PassKit's JSON field names, as the protos spell them.
PASSKIT_FIELDS = {
    "id",
    "points",
    "tierPoints",
    "resetPoints",
    "resetTierPoints",
    "metaData",
    "programId",
    "tierId",
    "ticket",
    "ticketId",
    "maxNumberOfValidations",
    "valid",
    "status",
    "title",
    "plainTextContent",
    "messageId",
    "passIds",
    "ids",
    "count",
    "total",
    "result",
    "error",
    "classId",
    "protocol",
    "passEventId",
    "configType",
    "configuration",
    "filters",
}


def _field_names(path: Path) -> list[str]:
    """String literals used as dict keys, `.get()` keys or subscripts in `path`."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        keys: Sequence[ast.expr | None] = []
        if isinstance(node, ast.Dict):
            keys = list(node.keys)
        elif isinstance(node, ast.Subscript):
            keys = [node.slice]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "get":
            keys = node.args[:1]
        found += [k.value for k in keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    return found


@pytest.mark.parametrize("caller", CALLERS)
def test_callers_name_no_passkit_field(caller: str) -> None:
    assert sorted(set(_field_names(REPO / caller)) & PASSKIT_FIELDS) == []


def test_the_checker_guards_what_it_should(tmp_path: Path) -> None:
    """The scan sees a body spelled by hand (so the test above can fail)."""
    path = tmp_path / "caller.py"
    path.write_text(
        "body = {'metaData': {}}\nx = answer.get('count')\ny = answer['total']\n",
        encoding="utf-8",
    )
    assert set(_field_names(path)) == {"metaData", "count", "total"}


def test_set_points_sends_absolute_balances_and_a_zero_with_its_reset_flag() -> None:
    assert routes.set_points_body("m1", 5, None) == {"id": "m1", "points": 5}
    assert routes.set_points_body("m1", 0, 0) == {
        "id": "m1",
        "points": 0,
        "resetPoints": True,
        "tierPoints": 0,
        "resetTierPoints": True,
    }
    with pytest.raises(WorkRefused, match="tier points must be >= 0"):
        routes.set_points_body("m1", 1, -1)


def test_balances_shown_read_a_left_out_zero_and_skip_what_is_no_number() -> None:
    assert routes.balances_shown(b'{"tierPoints": 7.5}') == {"points": 0.0, "tierPoints": 7.5}
    assert routes.balances_shown(b'{"points": true, "tierPoints": "3"}') == {}
    with pytest.raises(PermanentPassKitError, match="non-JSON"):
        routes.balances_shown(b"<html>")


def test_a_message_update_sends_the_members_own_tier_back_and_nothing_of_ours() -> None:
    current = {"id": "m1", "programId": "p", "tierId": "gold", "points": 9, "metaData": {"a": "1"}}
    metadata = routes.metadata_of(current)
    metadata["note"] = "hi"
    body = routes.message_update_body("MEMBERSHIP", "m1", metadata, current)
    assert body == {"id": "m1", "programId": "p", "tierId": "gold", "metaData": metadata}
    assert current["metaData"] == {"a": "1"}, "the pass as read is not changed"
    assert routes.message_update_body("COUPON", "c1", {"n": "x"}, {"campaignId": "k"}) == {
        "id": "c1",
        "metaData": {"n": "x"},
    }
    assert routes.metadata_of(None) == {} and routes.metadata_of({"metaData": "x"}) == {}


@pytest.mark.parametrize(
    ("answer", "refused_as"),
    [
        (b"", None),
        (b"{}", None),
        (b'{"valid": true}', None),
        (b'{"valid": false, "ticket": {"status": "REDEEMED"}}', "REDEEMED"),
        (b'{"valid": false, "ticket": {"status": "VOIDED"}}', "VOIDED"),
        (b'{"valid": false}', ""),
    ],
)
def test_a_ticket_validation_answer_says_why_it_was_refused(
    answer: bytes, refused_as: str | None
) -> None:
    assert routes.ticket_refused_as(answer) == refused_as


def test_messages_api_bodies_and_answers() -> None:
    with pytest.raises(WorkRefused):
        routes.create_message_body("", "text")
    assert routes.created_id(b'{"id": "msg1"}') == "msg1"
    with pytest.raises(PermanentPassKitError, match="without an id"):
        routes.created_id(b'{"id": ""}')
    assert routes.send_message_body("msg1", ("a", "b")) == {
        "messageId": "msg1",
        "passIds": {"ids": ["a", "b"]},
    }
    assert routes.sent_count(b"{}") == 0  # proto3 leaves a zero out
    with pytest.raises(PermanentPassKitError, match="count"):
        routes.sent_count(b'{"count": "2"}')


def test_a_count_refuses_what_is_no_count() -> None:
    assert routes.counted_total(routes.COUNT_MEMBERS, b"{}") == 0
    assert routes.counted_total(routes.COUNT_MEMBERS, b'{"total": 12}') == 12
    for bad in (b'{"total": -1}', b'{"total": 1.5}', b'{"total": false}'):
        with pytest.raises(PermanentPassKitError, match="total"):
            routes.counted_total(routes.COUNT_MEMBERS, bad)


def test_a_stream_line_is_a_record_a_blank_or_the_error_that_ends_it() -> None:
    assert routes.streamed_record("list", b'{"result": {"id": "m"}}\n', 0) == {"id": "m"}
    assert routes.streamed_record("list", b"  \n", 0) is None
    unavailable = json.dumps({"error": {"code": 14, "message": "down"}}).encode()
    with pytest.raises(TransientPassKitError, match="after 3 records: 14 down"):
        routes.streamed_record("list", unavailable, 3)
    with pytest.raises(PermanentPassKitError, match="7"):
        routes.streamed_record("list", b'{"error": {"code": 7}}', 0)
    with pytest.raises(PermanentPassKitError, match="without a result"):
        routes.streamed_record("list", b'{"result": 1}', 0)


def test_a_webhook_subscription_names_passkits_protocol_and_its_target() -> None:
    body = routes.webhook_sink_body("COUPON", "camp", "https://x/y", ["PASS_EVENT_RECORD_CREATED"])
    assert body["protocol"] == "SINGLE_USE_COUPON" and "id" not in body
    assert json.loads(body["configuration"]) == {"targetUrl": "https://x/y"}
    assert routes.webhook_sink_body("COUPON", "camp", "u", [], "s1")["id"] == "s1"
    assert routes.list_sinks_body("EVENT_TICKET", "prod") == {
        "classId": "prod",
        "protocol": "EVENT_TICKETING",
        "filters": routes.ALL_RECORDS,
    }
    with pytest.raises(PermanentPassKitError):
        routes.created_sink_id({})
