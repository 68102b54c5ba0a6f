"""What PassKit says of a pass in a wallet, in loyaltyd's words.

PassKit's `passMetaData.status` (io/metrics.pb.go Status, "the best determined status of the
pass") is one of PASS_ISSUED (0, also what a missing status means), PASS_INSTALLED,
PASS_UNINSTALLED and PASS_INVALIDATED; loyaltyd writes them into `passes_master.status` as
ISSUED, INSTALLED, UNINSTALLED and INVALIDATED, and DELETED once a read of the pass answered
404. For Apple, "uninstalled" also means notifications were turned off (metrics.pb.go
firstUninstalledAt): either way no alert reaches that phone.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Final, Literal
from uuid import UUID

WalletStatus = Literal["INSTALLED", "UNINSTALLED", "INVALIDATED", "ISSUED", "DELETED"]

# PassKit's names and numbers (protojson writes names; a webhook might carry numbers).
_OF_PASSKIT: Final[dict[str | int, WalletStatus]] = {
    "PASS_ISSUED": "ISSUED",
    "PASS_INSTALLED": "INSTALLED",
    "PASS_UNINSTALLED": "UNINSTALLED",
    "PASS_INVALIDATED": "INVALIDATED",
    0: "ISSUED",
    1: "INSTALLED",
    2: "UNINSTALLED",
    3: "INVALIDATED",
}
# Why a campaign message or a pass sync is not sent to a pass PassKit never issued (imported
# members before enrolment): it owes PassKit nothing, and its ledger stands without it.
NOT_AT_PASSKIT: Final = "pass has no passkit_internal_id (not issued in PassKit)"
# Why a campaign message or a pass sync is not sent to a pass PassKit says is out of reach.
UNREACHABLE: Final[dict[str, str]] = {
    "UNINSTALLED": "pass uninstalled from the wallet",
    "INVALIDATED": "pass invalidated at PassKit",
    "DELETED": "pass deleted at PassKit",
}


def status_of_passkit(value: object) -> WalletStatus | None:
    """loyaltyd's status for PassKit's (None: not a status PassKit defines). A missing value
    is PASS_ISSUED, proto3's zero."""
    if value is None:
        return "ISSUED"
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return _OF_PASSKIT.get(value)


def as_float32(value: float) -> float:
    """`value` as PassKit stores a balance (Member.points is a float32): integers beyond
    2**24 lose their last digits, so a balance is compared as PassKit can hold it."""
    rounded: float = struct.unpack("<f", struct.pack("<f", value))[0]
    return rounded


@dataclass(frozen=True, slots=True)
class WalletTimes:
    """passMetaData's times (io/metrics.pb.go Metadata), None where PassKit has none."""

    first_installed_at: datetime | None = None
    last_installed_at: datetime | None = None
    first_uninstalled_at: datetime | None = None
    last_uninstalled_at: datetime | None = None
    invalidated_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class WalletRecord:
    """One pass as PassKit holds it: its id, wallet status, times and (members) balance and
    tier points."""

    passkit_id: str
    status: WalletStatus
    times: WalletTimes = WalletTimes()
    points: float | None = None
    tier_points: float | None = None

    @classmethod
    def deleted(cls, passkit_id: str) -> WalletRecord:
        return cls(passkit_id, "DELETED")


@dataclass(frozen=True, slots=True)
class SweepClass:
    """What one sweep lists: a program's members, its coupon campaign or its production."""

    program_id: UUID
    protocol: str  # MEMBERSHIP, COUPON or EVENT_TICKET
    class_id: str
    program_name: str = ""

    @property
    def label(self) -> str:
        """`Joe's Pizza (members)`: how a person names it."""
        return f"{self.program_name or self.program_id} ({swept_as(self.protocol)})"


def in_tier_points(count: int) -> str:
    """How many of a sweep's differing balances were tier points, said where any were."""
    return f" ({count:,} in tier points)" if count else ""


def swept_as(protocol: str) -> str:
    """What a sweep of a protocol's class lists, in a person's words."""
    return {"MEMBERSHIP": "members", "COUPON": "coupons", "EVENT_TICKET": "tickets"}.get(
        protocol, protocol
    )


@dataclass(frozen=True, slots=True)
class Applied:
    """What a sweep's list changed: passes listed and matched to loyaltyd's, those whose
    status PassKit newly says, and how many rows were written."""

    listed: int = 0
    checked: int = 0
    written: int = 0
    moved: int = 0
    installed: int = 0
    uninstalled: int = 0
    invalidated: int = 0
    issued: int = 0


@dataclass(frozen=True, slots=True)
class Drift:
    """Balances PassKit showed that differ from the ledger, and what became of them.
    `tier_points_found` of the `found` differ in their tier points (where the program shows
    loyaltyd's at PassKit)."""

    found: int = 0
    tier_points_found: int = 0
    repaired: int = 0
    reported: int = 0
    still_reported: int = 0
    on_dead_syncs: int = 0
    deferred: int = 0
    reported_passes: tuple[UUID, ...] = ()


@dataclass(frozen=True, slots=True)
class SweepSummary:
    """One sweep, as `loyaltyd wallet-sync` prints it and wallet_sweeps.summary keeps it.
    `deleted` were missing from the list and read back as 404; `unchecked` were missing but
    not read back this time (over LOYALTYD_WALLET_DELETE_CHECKS, or the list came out short
    of PassKit's own count, which proves nothing)."""

    sweep: SweepClass
    applied: Applied = Applied()
    drift: Drift = Drift()
    deleted: int = 0
    unchecked: int = 0
    expected: int | None = None
    seconds: float = 0.0

    def as_json(self) -> dict[str, object]:
        a, d = self.applied, self.drift
        return {
            "listed": a.listed,
            "checked": a.checked,
            "expected": self.expected,
            "installed": a.installed,
            "uninstalled": a.uninstalled,
            "invalidated": a.invalidated,
            "issued": a.issued,
            "deleted": self.deleted,
            "unchecked": self.unchecked,
            "drift_found": d.found,
            "drift_tier_points": d.tier_points_found,
            "drift_repaired": d.repaired,
            "drift_reported": d.reported,
            "drift_deferred": d.deferred,
            "drift_on_dead_syncs": d.on_dead_syncs,
            "seconds": round(self.seconds, 1),
        }


@dataclass(frozen=True, slots=True)
class SweepFigures:
    """What a finished sweep found, as wallet_sweeps.summary keeps it (SweepSummary.as_json):
    the figures `loyaltyd status` and /metrics show."""

    checked: int = 0
    installed: int = 0
    uninstalled: int = 0
    invalidated: int = 0
    deleted: int = 0
    drift_found: int = 0
    drift_tier_points: int = 0
    drift_repaired: int = 0
    drift_reported: int = 0

    @classmethod
    def from_json(cls, document: object) -> SweepFigures | None:
        if not isinstance(document, dict) or not document:
            return None
        return cls(**{f.name: _count(document.get(f.name)) for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class LastSweep:
    """A program's last sweep of one class: when, how it ended, what it found."""

    protocol: str
    state: str  # running, completed or failed
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    summary: SweepFigures | None

    @classmethod
    def from_json(cls, document: dict[str, object]) -> LastSweep:
        error = document.get("error")
        return cls(
            protocol=str(document.get("protocol") or "?"),
            state=str(document.get("state") or "?"),
            started_at=_moment(document.get("started_at")),
            finished_at=_moment(document.get("finished_at")),
            error=error if isinstance(error, str) else None,
            summary=SweepFigures.from_json(document.get("summary")),
        )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
