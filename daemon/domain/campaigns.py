"""A campaign's audience, as the rules validate it and the store resolves it: the one
definition the planner, the store and the HTTP API share. Pure."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Final, NewType

from daemon.core.jsontext import jsonable

DEFAULT_MIN_TIER_POINTS: Final = 1000
DEFAULT_MIN_POINTS: Final = 500
DEFAULT_INACTIVE_DAYS: Final = 30

# A CSV audience's URL once checked (https, an allowed host).
CsvUrl = NewType("CsvUrl", str)


@dataclass(frozen=True)
class Audience:
    """Validated arguments of `push_campaign_audience()`; defaults filled in.

    `member_ids` holds the CSV segment's ids once known; `csv_url` is set while they still
    have to be fetched.
    """

    segment: str
    min_tier_points: int = DEFAULT_MIN_TIER_POINTS
    min_points: int = DEFAULT_MIN_POINTS
    inactive_days: int = DEFAULT_INACTIVE_DAYS
    zip_codes: tuple[str, ...] = ()
    member_ids: tuple[str, ...] = ()
    csv_url: CsvUrl | None = None

    @property
    def needs_csv(self) -> bool:
        return self.segment == "CSV" and self.csv_url is not None

    def with_member_ids(self, member_ids: Sequence[str]) -> Audience:
        return replace(self, member_ids=tuple(member_ids), csv_url=None)


@dataclass(frozen=True, slots=True)
class CampaignFields:
    """What a `push_campaigns` row says of its message and audience, as the planner reads it
    (a list over its limit is not read at all: only its count is). It is checked by the same
    rules as the HTTP API's JSON and the console's form (`campaigns/rules.py`), which take any
    input as a mapping of column names: `as_input()`."""

    name: str | None = None
    message_text: str | None = None
    segment: str | None = None
    min_tier_points: int | None = None
    min_points: int | None = None
    inactive_days: int | None = None
    zip_codes: tuple[str, ...] | None = None
    zip_code_count: int | None = None
    member_ids: tuple[str, ...] | None = None
    member_id_count: int | None = None
    csv_upload_url: str | None = None

    def as_input(self) -> dict[str, object]:
        """The fields by column name, as untrusted input is validated."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class CampaignProgress:
    """One row of the `push_campaign_progress` view (the columns Softr reads), as
    `GET /campaigns/{id}` answers it."""

    id: uuid.UUID
    program_id: uuid.UUID | None
    name: str | None
    status: str | None
    segment: str | None
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    recipient_count: int
    sent_count: int
    failed_count: int
    skipped_count: int
    remaining_count: int
    progress_percent: float
    error: str | None
    unknown_member_count: int | None
    created_at: datetime | None

    def as_json(self) -> dict[str, object]:
        """JSON-ready: ids and times as text, in the view's column order."""
        return {f.name: jsonable(getattr(self, f.name)) for f in fields(self)}
