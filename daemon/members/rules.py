"""Member CSV import, the pure part: header, cells, dates, emails, duplicates, pass conflicts.

Every rule returns a value (a member ready to write, or a rejection with a reason an admin
can act on); nothing here raises on bad *rows*. Only a file that cannot be read as a whole
(not UTF-8, no `email` column, …) raises ImportAborted, before anything is written.

Birth dates: year first only — `YYYY-MM-DD` (ISO 8601), also `YYYY/MM/DD` and one-digit months
or days (`1990-7-4`). Day-first and month-first forms (`04/07/1990`) are refused as
ambiguous. A date that is not a date ("N/A", "Unknown"), impossible (2023-02-29), in the
future or before 1900 is left empty and the row is imported with a warning; a blank cell is
simply no date.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

from daemon.core.csvtext import column_name, delimiter_for
from daemon.domain.members import ExistingPass

COLUMNS = (
    "email",
    "first_name",
    "last_name",
    "birth_date",
    "phone_number",
    "zip",
    "member_id",
    "passkit_internal_id",
)
REQUIRED_COLUMN = "email"
OLDEST_BIRTH_YEAR = 1900
# Generous limits that still catch a shifted column or a pasted paragraph.
MAX_LENGTH = {
    "email": 254,
    "first_name": 100,
    "last_name": 100,
    "phone_number": 40,
    "zip": 20,
    "member_id": 100,
    "passkit_internal_id": 100,
}

_DATE = re.compile(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})")
_DAY_OR_MONTH_FIRST = re.compile(r"\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}")
_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})"
)
# Control characters (NUL above all: Postgres text cannot hold it) mean a damaged cell.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class ImportAborted(ValueError):
    """The file as a whole cannot be imported; nothing was written. The text says why."""


@dataclass(frozen=True)
class Header:
    """Where each known column sits in a record, and the columns that will be ignored."""

    positions: Mapping[str, int]
    width: int
    ignored: tuple[str, ...] = ()


@dataclass(frozen=True)
class Member:
    """A valid row, cells cleaned (blank = None). `warnings` were reported, not fatal."""

    line: int
    email: str
    first_name: str | None = None
    last_name: str | None = None
    birth_date: date | None = None
    phone_number: str | None = None
    zip: str | None = None
    member_id: str | None = None
    passkit_internal_id: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def email_key(self) -> str:
        """What users_email_unique_ignoring_case compares: lower(email)."""
        return self.email.lower()


@dataclass(frozen=True)
class Rejected:
    line: int
    email: str | None
    member_id: str | None
    reason: str


# --- the file ----------------------------------------------------------------------------


def choose_delimiter(header_line: str) -> str:
    """Comma, unless the header only makes sense split on ';' or a tab (spreadsheets in many
    locales save "CSV" with semicolons)."""
    return delimiter_for(header_line, REQUIRED_COLUMN) or ","


def read_header(names: Sequence[str]) -> Header:
    cleaned = [column_name(n) for n in names]
    if REQUIRED_COLUMN not in cleaned:
        found = ", ".join(n for n in cleaned if n) or "none"
        raise ImportAborted(
            f"the file has no `email` column (columns found: {found}); "
            f"expected a header row with: {', '.join(COLUMNS)}"
        )
    seen: set[str] = set()
    for name in cleaned:
        if name and name in seen:
            raise ImportAborted(f"the column `{name}` appears twice in the header")
        seen.add(name)
    positions = {name: i for i, name in enumerate(cleaned) if name in COLUMNS}
    ignored = tuple(n for n in cleaned if n and n not in COLUMNS)
    return Header(positions=positions, width=len(cleaned), ignored=ignored)


# --- cells -------------------------------------------------------------------------------


def parse_birth_date(text: str | None, today: date) -> tuple[date | None, str | None]:
    """(the date or None, a warning or None). Never raises, never guesses."""
    raw = (text or "").strip()
    if not raw:
        return None, None
    match = _DATE.fullmatch(raw)
    if match is None:
        if _DAY_OR_MONTH_FIRST.fullmatch(raw):
            return None, f"birth_date {raw!r} is ambiguous (day or month first?); use YYYY-MM-DD"
        return None, f"birth_date {raw!r} is not a date (expected YYYY-MM-DD)"
    year, month, day = (int(part) for part in match.groups())
    try:
        value = date(year, month, day)
    except ValueError:
        return None, f"birth_date {raw!r} does not exist"
    if value > today:
        return None, f"birth_date {raw!r} is in the future"
    if year < OLDEST_BIRTH_YEAR:
        return None, f"birth_date {raw!r} is before {OLDEST_BIRTH_YEAR}"
    return value, None


def email_problem(email: str) -> str | None:
    if not email:
        return "email is empty"
    if not email.isascii():
        return f"email {email!r} has non-ASCII characters (not supported)"
    if len(email) > MAX_LENGTH["email"] or _EMAIL.fullmatch(email) is None:
        return f"email {email!r} is not a valid address"
    if len(email.partition("@")[0]) > 64:
        return f"email {email!r} is not a valid address (local part over 64 characters)"
    return None


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    stripped = value.strip()
    return stripped or None


def _cell_problem(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if _CONTROL.search(value):
        return f"{name} contains control characters"
    limit = MAX_LENGTH.get(name)
    if limit is not None and len(value) > limit:
        return f"{name} is longer than {limit} characters"
    return None


# --- rows --------------------------------------------------------------------------------


def is_blank(record: Sequence[str]) -> bool:
    """A row of empty cells (what spreadsheets leave below the data) is no row at all."""
    return all(not cell.strip() for cell in record)


def validate_row(
    line: int, record: Sequence[str], header: Header, today: date
) -> Member | Rejected:
    cells = {
        name: _clean(record[i]) if i < len(record) else None for name, i in header.positions.items()
    }
    email, member_id = cells.get("email"), cells.get("member_id")
    if len(record) != header.width:
        return Rejected(
            line, email, member_id, f"row has {len(record)} fields, the header has {header.width}"
        )
    for name, value in cells.items():
        problem = _cell_problem(name, value)
        if problem is not None:
            return Rejected(line, email, member_id, problem)
    problem = email_problem(email or "")
    if problem is not None:
        return Rejected(line, email, member_id, problem)
    assert email is not None
    birth_date, warning = parse_birth_date(cells.get("birth_date"), today)
    warnings = [warning] if warning else []
    if cells.get("passkit_internal_id") and not member_id:
        warnings.append("passkit_internal_id ignored: no member_id to attach it to")
    return Member(
        line=line,
        email=email,
        first_name=cells.get("first_name"),
        last_name=cells.get("last_name"),
        birth_date=birth_date,
        phone_number=cells.get("phone_number"),
        zip=cells.get("zip"),
        member_id=member_id,
        passkit_internal_id=cells.get("passkit_internal_id") if member_id else None,
        warnings=tuple(warnings),
    )


@dataclass
class Duplicates:
    """Remembers the first line of each email, member id and PassKit id in the file, so a
    later row repeating one is rejected (which of two rows is right is for a human)."""

    emails: dict[str, int] = field(default_factory=dict)
    member_ids: dict[str, int] = field(default_factory=dict)
    passkit_ids: dict[str, int] = field(default_factory=dict)

    def check(self, member: Member) -> Member | Rejected:
        keys = (
            ("email", self.emails, member.email_key),
            ("member_id", self.member_ids, member.member_id),
            ("passkit_internal_id", self.passkit_ids, member.passkit_internal_id),
        )
        for name, seen, key in keys:
            if key is not None and key in seen:
                return Rejected(
                    member.line, member.email, member.member_id, f"same {name} as line {seen[key]}"
                )
        for _, seen, key in keys:
            if key is not None:
                seen[key] = member.line
        return member


# --- passes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatePass:
    member: Member


@dataclass(frozen=True)
class LinkPass:
    member: Member
    existing: ExistingPass


PassPlan = CreatePass | LinkPass | None


def plan_pass(
    member: Member,
    by_member_id: Mapping[str, ExistingPass],
    by_passkit_id: Mapping[str, ExistingPass],
) -> PassPlan | Rejected:
    """What to do with the row's member_id: create the program's pass, link the existing one
    to this member, or refuse because that would take a pass from someone else.

    `by_member_id` holds the program's passes by external_id; `by_passkit_id` every pass
    (of any program: a PassKit id names one pass in the world) by passkit_internal_id.
    """
    if member.member_id is None:
        return None
    existing = by_member_id.get(member.member_id)
    reason = _link_problem(member, existing) if existing is not None else None
    reason = reason or _passkit_id_taken(member, existing, by_passkit_id)
    if reason is not None:
        return Rejected(member.line, member.email, member.member_id, reason)
    return CreatePass(member) if existing is None else LinkPass(member, existing)


def _link_problem(member: Member, existing: ExistingPass) -> str | None:
    if existing.protocol != "MEMBERSHIP":
        return f"member_id {member.member_id!r} is a {existing.protocol} pass, not a membership"
    if existing.user_id is not None and existing.owner_email_key != member.email_key:
        return f"member_id {member.member_id!r} already belongs to another member"
    pk_id = member.passkit_internal_id
    if pk_id and existing.passkit_internal_id and existing.passkit_internal_id != pk_id:
        return (
            f"member_id {member.member_id!r} has passkit_internal_id "
            f"{existing.passkit_internal_id!r}, the file says {pk_id!r}"
        )
    return None


def _passkit_id_taken(
    member: Member, own: ExistingPass | None, by_passkit_id: Mapping[str, ExistingPass]
) -> str | None:
    pk_id = member.passkit_internal_id
    holder = by_passkit_id.get(pk_id) if pk_id else None
    if holder is None or (own is not None and holder.id == own.id):
        return None
    return f"passkit_internal_id {pk_id!r} already belongs to another pass ({holder.external_id!r})"


def row_outcome(user_outcome: str, pass_outcome: str | None) -> str:
    """created / updated / unchanged for the row as a whole."""
    outcomes = {user_outcome, pass_outcome}
    if "created" in outcomes:
        return "created"
    if "updated" in outcomes:
        return "updated"
    return "unchanged"
