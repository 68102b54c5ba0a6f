"""PassKit's JSON records as loyaltyd's values: a member, coupon or ticket (as a read or a
list streams it) as a `WalletRecord`, and a webhook body as a `PassEvent`.

protojson writes enums as names and timestamps as RFC 3339 strings (grpc-gateway's default
marshaller, EmitUnpopulated: unset fields are null); how PassKit serialises a webhook body is
undocumented, so numbers for enums and {"seconds", "nanos"} for times are read as well.
Anything that is not one of PassKit's shapes raises `MalformedRecord` (a ValueError too) with
what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from daemon.core.errors import MalformedRecord
from daemon.domain.wallet import WalletRecord, WalletTimes, status_of_passkit

# io/integration.pb.go PassEventId: names and numbers.
PASS_EVENTS: Final[dict[str | int, str]] = {
    "PASS_EVENT_RECORD_CREATED": "PASS_EVENT_RECORD_CREATED",
    "PASS_EVENT_INSTALLED": "PASS_EVENT_INSTALLED",
    "PASS_EVENT_RECORD_UPDATED": "PASS_EVENT_RECORD_UPDATED",
    "PASS_EVENT_UNINSTALLED": "PASS_EVENT_UNINSTALLED",
    "PASS_EVENT_INVALIDATED": "PASS_EVENT_INVALIDATED",
    "PASS_EVENT_RECORD_DELETED": "PASS_EVENT_RECORD_DELETED",
    1: "PASS_EVENT_RECORD_CREATED",
    2: "PASS_EVENT_INSTALLED",
    4: "PASS_EVENT_RECORD_UPDATED",
    8: "PASS_EVENT_UNINSTALLED",
    16: "PASS_EVENT_INVALIDATED",
    32: "PASS_EVENT_RECORD_DELETED",
}
# The events loyaltyd subscribes to: those that change whether a pass is reachable.
SUBSCRIBED_EVENTS: Final = (
    "PASS_EVENT_INSTALLED",
    "PASS_EVENT_UNINSTALLED",
    "PASS_EVENT_INVALIDATED",
    "PASS_EVENT_RECORD_DELETED",
)
# io/protocols.pb.go PassProtocol, as loyaltyd names its protocols.
_PROTOCOLS: Final[dict[str | int, str]] = {
    "MEMBERSHIP": "MEMBERSHIP",
    "SINGLE_USE_COUPON": "COUPON",
    "EVENT_TICKETING": "EVENT_TICKET",
    100: "MEMBERSHIP",
    101: "COUPON",
    102: "EVENT_TICKET",
}
_TIMES: Final = (
    ("firstInstalledAt", "first_installed_at"),
    ("lastInstalledAt", "last_installed_at"),
    ("firstUninstalledAt", "first_uninstalled_at"),
    ("lastUninstalledAt", "last_uninstalled_at"),
    ("invalidatedAt", "invalidated_at"),
    ("lastUpdatedAt", "updated_at"),
)
MAX_ID_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class PassEvent:
    """A webhook: which pass it names (a doorbell: the pass is re-read), and why."""

    event: str
    passkit_id: str
    protocol: str  # loyaltyd's name
    class_id: str | None


def wallet_record(record: Any, *, metadata_key: str = "passMetaData") -> WalletRecord:
    """A member, coupon or ticket as PassKit answers it. A member without `points` (or
    `tierPoints`) holds 0 (proto3 leaves a zero out); a coupon or ticket has no balance (None)."""
    if not isinstance(record, dict):
        raise MalformedRecord(f"a PassKit record is a JSON object, not {type(record).__name__}")
    passkit_id = _id(record.get("id"), "id")
    metadata = record.get(metadata_key)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise MalformedRecord(f"{metadata_key} is not an object")
    status = status_of_passkit(metadata.get("status"))
    if status is None:
        raise MalformedRecord(f"unknown pass status {metadata.get('status')!r}")
    times = WalletTimes(**{ours: _time(metadata.get(theirs), theirs) for theirs, ours in _TIMES})
    member = "programId" in record or "tierId" in record or "points" in record
    points = _points(record.get("points"), default=0.0 if member else None)
    tier_points = _points(record.get("tierPoints"), default=0.0 if member else None)
    return WalletRecord(passkit_id, status, times, points, tier_points)


def pass_event(body: Any) -> PassEvent:
    """A webhook body (io/integration.pb.go SinkSubscriptionPayload: `event`, `pass`)."""
    if not isinstance(body, dict):
        raise MalformedRecord("the body is not a JSON object")
    event = _lookup(PASS_EVENTS, body.get("event"))
    if event is None:
        raise MalformedRecord(f"unknown event {_shown(body.get('event'))}")
    held = body.get("pass")
    if not isinstance(held, dict):
        raise MalformedRecord("no pass object")
    protocol = _lookup(_PROTOCOLS, held.get("protocol"))
    if protocol is None:
        raise MalformedRecord(f"unknown protocol {_shown(held.get('protocol'))}")
    class_id = held.get("classId")
    return PassEvent(
        event,
        _id(held.get("id"), "pass.id"),
        protocol,
        class_id if isinstance(class_id, str) and class_id else None,
    )


def _shown(value: object) -> str:
    """A value from outside as an error may quote it: short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _lookup(names: dict[str | int, str], value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return names.get(value)


def _id(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_CHARS:
        raise MalformedRecord(f"{name} must be a string of 1 to {MAX_ID_CHARS} characters")
    return value


def _time(value: object, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise MalformedRecord(f"{name} is not an RFC 3339 time: {value!r}") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if isinstance(value, dict) and isinstance(value.get("seconds"), int | str):
        seconds = int(value["seconds"]) + int(value.get("nanos") or 0) / 1e9
        return datetime.fromtimestamp(seconds, UTC)
    raise MalformedRecord(f"{name} is not a time: {value!r}")


def _points(value: object, *, default: float | None) -> float | None:
    if isinstance(value, bool):
        return default
    if isinstance(value, int | float):
        return float(value)
    return default


@dataclass(frozen=True, slots=True)
class Sink:
    """One subscription as PassKit lists it."""

    id: str
    class_id: str
    protocol: str
    events: tuple[str, ...]
    status: str
    target_url: str

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Sink:
        try:
            config = json.loads(item.get("configuration") or "{}")
        except ValueError:
            config = {}
        events = item.get("passEventId") or []
        return cls(
            id=_text(item, "id"),
            class_id=_text(item, "classId"),
            protocol=_text(item, "protocol"),
            events=tuple(str(e) for e in events) if isinstance(events, list) else (),
            status=_text(item, "status"),
            target_url=_text(config, "targetUrl") if isinstance(config, dict) else "",
        )


def _text(item: dict[str, Any], key: str) -> str:
    """A string field; "" when unset (protojson writes an unset field as null)."""
    value = item.get(key)
    return "" if value is None else str(value)
