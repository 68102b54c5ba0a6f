"""io.Filters (io/filter.pb.go) as the fake PassKit reads a list or count request: `limit` 25
unless given, -1 for all; `offset`; creation order, descending unless `orderAsc` (as the proto
says); filter groups of `eq` tests on a record's id or status, AND or OR within a group, groups
ANDed. What PassKit leaves undocumented is refused rather than guessed."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from daemon.testing.fakepasskit_protos import (
    DEFAULT_LIST_LIMIT,
    FIELD_FILTER_FIELDS,
    FILTERS_FIELDS,
    GROUP_FIELDS,
    INTEGRATION_STATUSES,
    INVALID_ARGUMENT,
    PASS_STATUSES,
    JsonObject,
    Refusal,
    int32,
    json_array,
    json_object,
)

_T = TypeVar("_T")
# A record as a list sees it: its id, its status (what a filter tests) and the record.
Row = tuple[str, str, _T]
# Told each field a request names that its message does not have ("filters.limt").
NoteIgnored = Callable[[str], None]

# What a filter tests: a record's id or its status.
_ID, _STATUS = 0, 1


@dataclass(frozen=True, slots=True)
class FilterField:
    slot: int  # _ID or _STATUS
    values: frozenset[str] | None = None  # the enum names it takes (None: any string)


PASS_FILTERS: Final[Mapping[str, FilterField]] = {
    "id": FilterField(_ID),
    "passStatus": FilterField(_STATUS, frozenset(PASS_STATUSES)),
}
# The quickstarts filter coupons by `passkitId` and tickets by `ticketId`.
COUPON_FILTERS: Final = {**PASS_FILTERS, "passkitId": FilterField(_ID)}
TICKET_FILTERS: Final = {**PASS_FILTERS, "ticketId": FilterField(_ID)}
SINK_FILTERS: Final[Mapping[str, FilterField]] = {
    "id": FilterField(_ID),
    "status": FilterField(_STATUS, frozenset(INTEGRATION_STATUSES)),
}


@dataclass(frozen=True, slots=True)
class _Group:
    any_of: bool  # OR; AND otherwise
    tests: tuple[tuple[int, str], ...]  # (slot, value): equal

    def admits(self, values: tuple[str, str]) -> bool:
        hits = (values[slot] == value for slot, value in self.tests)
        return any(hits) if self.any_of else all(hits)


@dataclass(frozen=True, slots=True)
class Query:
    """A list request's io.Filters, checked."""

    limit: int | None  # None: every record
    offset: int
    ascending: bool
    groups: tuple[_Group, ...]

    def admits(self, row: Row[object]) -> bool:
        values = (row[0], row[1])
        return all(group.admits(values) for group in self.groups)

    def window(self, rows: Iterator[Row[_T]]) -> Iterator[Row[_T]]:
        admitted = filter(self.admits, rows) if self.groups else rows
        stop = None if self.limit is None else self.offset + self.limit
        return itertools.islice(admitted, self.offset, stop)

    def total(self, rows: Iterator[Row[_T]]) -> int:
        # A count is of every record the filters admit: limit and offset page a list only
        # (undocumented; the stricter reading for a client that pages by the count).
        admitted = filter(self.admits, rows) if self.groups else rows
        return sum(1 for _ in admitted)


def query_of(raw: Any, fields: Mapping[str, FilterField], note: NoteIgnored) -> Query:
    """The Query of a request's `filters`; `fields` are those a filter may test."""
    filters = json_object(raw, "filters")
    _note_unknown(filters, FILTERS_FIELDS, "filters.", note)
    limit = int32(filters.get("limit"), "filters.limit")
    offset = int32(filters.get("offset"), "filters.offset")
    if limit < -1 or offset < 0:
        # Undocumented: refused as the stricter choice.
        raise Refusal(INVALID_ARGUMENT, "filters.limit must be -1 or more, offset 0 or more")
    groups = tuple(
        _group_of(group, fields, note)
        for group in json_array(filters.get("filterGroups"), "filters.filterGroups")
    )
    return Query(
        limit=None if limit == -1 else limit or DEFAULT_LIST_LIMIT,
        offset=offset,
        ascending=_ascending(filters),
        groups=groups,
    )


def _ascending(filters: JsonObject) -> bool:
    # PassKit's own examples order by "created"; what else it takes is undocumented, so
    # anything else is refused rather than silently ignored.
    order_by = filters.get("orderBy") or ""
    if order_by not in ("", "created"):
        raise Refusal(INVALID_ARGUMENT, f"orderBy {order_by!r} is not simulated (only created)")
    ascending = filters.get("orderAsc")
    if ascending is not None and not isinstance(ascending, bool):
        raise Refusal(INVALID_ARGUMENT, "filters.orderAsc must be a boolean")
    return ascending is True


def _group_of(raw: Any, fields: Mapping[str, FilterField], note: NoteIgnored) -> _Group:
    group = json_object(raw, "filters.filterGroups[]")
    _note_unknown(group, GROUP_FIELDS, "filters.filterGroups.", note)
    condition = group.get("condition") or "AND"  # io.Operator: AND = 0, OR = 1
    if condition not in ("AND", "OR", 1):
        raise Refusal(INVALID_ARGUMENT, f"invalid filter group condition {condition!r}")
    tests = tuple(
        _test_of(test, fields, note)
        for test in json_array(group.get("fieldFilters"), "fieldFilters")
    )
    if not tests:
        # What an empty group matches is undocumented: refused.
        raise Refusal(INVALID_ARGUMENT, "a filter group needs fieldFilters")
    return _Group(any_of=condition in ("OR", 1), tests=tests)


def _test_of(raw: Any, fields: Mapping[str, FilterField], note: NoteIgnored) -> tuple[int, str]:
    test = json_object(raw, "fieldFilters[]")
    _note_unknown(test, FIELD_FILTER_FIELDS, "filters.filterGroups.fieldFilters.", note)
    name, value = test.get("filterField"), test.get("filterValue")
    known = fields.get(name) if isinstance(name, str) else None
    if known is None:
        raise Refusal(
            INVALID_ARGUMENT, f"filterField {name!r} is not simulated (only {', '.join(fields)})"
        )
    if test.get("filterOperator") != "eq":
        operator = test.get("filterOperator")
        raise Refusal(INVALID_ARGUMENT, f"filterOperator {operator!r} is not simulated (only eq)")
    if not isinstance(value, str) or (known.values is not None and value not in known.values):
        raise Refusal(INVALID_ARGUMENT, f"invalid filterValue {value!r} for {name}")
    return known.slot, value


def _note_unknown(
    message: JsonObject, known: frozenset[str], prefix: str, note: NoteIgnored
) -> None:
    for key in message:
        if key not in known:
            note(prefix + key)
