"""Campaign input rules: segments, their parameters and defaults, the message, the CSV URL.

Pure: no asyncpg or aiohttp. The planner and `create_campaign` run the same rules, so a
campaign the API accepts is one the daemon will send, and a row written straight into
`push_campaigns` (Softr, psql) that breaks them ends FAILED with the same words. The audience
itself is resolved in SQL (`loyaltyd.push_campaign_audience()` in docs/schema.sql); this module
only decides the arguments it gets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypeGuard
from urllib.parse import urlsplit

from daemon.core.errors import CampaignInputError
from daemon.core.templating import Template, TemplateError, parse_template
from daemon.domain.campaigns import (
    DEFAULT_INACTIVE_DAYS,
    DEFAULT_MIN_POINTS,
    DEFAULT_MIN_TIER_POINTS,
    Audience,
    CsvUrl,
)

SEGMENTS: Final = ("ALL", "VIP", "WHALE", "SLUMBER", "LOCAL", "CSV")
MAX_INACTIVE_DAYS: Final = 3650
MAX_MESSAGE_CHARS: Final = 500
MAX_ZIP_CODES: Final = 10_000
MAX_ZIP_CODE_CHARS: Final = 20
MAX_MEMBER_ID_CHARS: Final = 200
# Member ids of one CSV campaign (the member_ids column or a CSV file): a documented bound, so
# a campaign cannot make a daemon hold millions of ids; larger audiences are segments.
MAX_MEMBER_IDS: Final = 200_000
MAX_NAME_CHARS: Final = 200
# push_campaigns' thresholds are Postgres `integer` columns.
MAX_THRESHOLD: Final = 2**31 - 1

# The row columns (and `create_campaign` keywords) that parametrise a segment.
SEGMENT_PARAMETERS: Final = (
    "min_tier_points",
    "min_points",
    "inactive_days",
    "zip_codes",
    "member_ids",
    "csv_upload_url",
)


@dataclass(frozen=True)
class CampaignPlan:
    """A campaign that may be sent: its message template and its audience."""

    template: Template
    audience: Audience


def validate_campaign(fields: Mapping[str, object], allowed_hosts: Sequence[str]) -> CampaignPlan:
    """Check a campaign's message and segment (a `push_campaigns` row or API input).

    Raises CampaignInputError listing every problem found, so the admin fixes them at once.
    """
    problems: list[str] = []
    template: Template | None = None
    audience: Audience | None = None
    nul = [name for name, value in fields.items() if _holds_nul(value)]
    if nul:
        raise CampaignInputError(f"{', '.join(sorted(nul))} must not contain NUL characters")
    try:
        template = validate_message(fields.get("message_text"))
    except CampaignInputError as exc:
        problems.append(str(exc))
    try:
        audience = validate_audience(fields, allowed_hosts)
    except CampaignInputError as exc:
        problems.append(str(exc))
    if template is None or audience is None:
        raise CampaignInputError("; ".join(problems))
    return CampaignPlan(template, audience)


def message_text(text: str) -> str:
    """The message as it is counted, stored and sent: without surrounding blanks."""
    return text.strip()


def validate_message(text: object) -> Template:
    if not isinstance(text, str) or not message_text(text):
        raise CampaignInputError("the message is empty")
    if "\x00" in text:
        raise CampaignInputError("the message must not contain NUL characters")
    text = message_text(text)
    length = len(text)
    if length > MAX_MESSAGE_CHARS:
        raise CampaignInputError(
            f"the message is {length} characters long; the limit is {MAX_MESSAGE_CHARS}"
        )
    try:
        return parse_template(text)
    except TemplateError as exc:
        raise CampaignInputError(f"the message has an {exc}") from exc


def validate_audience(fields: Mapping[str, object], allowed_hosts: Sequence[str]) -> Audience:
    """The segment and its parameters; parameters of other segments are ignored."""
    segment = normalise_segment(fields.get("segment"))
    if segment == "VIP":
        return Audience(segment, min_tier_points=_threshold(fields, "min_tier_points"))
    if segment == "WHALE":
        return Audience(segment, min_points=_threshold(fields, "min_points"))
    if segment == "SLUMBER":
        return Audience(segment, inactive_days=_inactive_days(fields.get("inactive_days")))
    if segment == "LOCAL":
        return Audience(
            segment, zip_codes=_zip_codes(fields.get("zip_codes"), fields.get("zip_code_count"))
        )
    if segment == "CSV":
        return _csv_audience(fields, allowed_hosts)
    return Audience(segment)


def normalise_segment(value: object) -> str:
    """NULL means the column default, ALL; case and surrounding blanks do not matter."""
    if value is None:
        return "ALL"
    segment = value.strip().upper() if isinstance(value, str) else None
    if segment not in SEGMENTS:
        raise CampaignInputError(f"unknown segment {value!r}; use one of {', '.join(SEGMENTS)}")
    return segment


_DEFAULTS: Final[Mapping[str, int]] = {
    "min_tier_points": DEFAULT_MIN_TIER_POINTS,
    "min_points": DEFAULT_MIN_POINTS,
}


def _threshold(fields: Mapping[str, object], name: str) -> int:
    value = fields.get(name)
    if value is None:
        return _DEFAULTS[name]
    if not _is_int(value) or not 0 <= value <= MAX_THRESHOLD:
        raise CampaignInputError(
            f"{name} must be a whole number from 0 to {MAX_THRESHOLD} (got {value!r})"
        )
    return value


def _inactive_days(value: object) -> int:
    if value is None:
        return DEFAULT_INACTIVE_DAYS
    if not _is_int(value) or not 1 <= value <= MAX_INACTIVE_DAYS:
        raise CampaignInputError(
            f"inactive_days must be a whole number from 1 to {MAX_INACTIVE_DAYS} (got {value!r})"
        )
    return value


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple):
        return any(isinstance(v, str) and "\x00" in v for v in value)
    return False


def check_name(name: object) -> str | None:
    """A campaign's name: optional text, NUL-free, at most MAX_NAME_CHARS after trimming."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise CampaignInputError("name must be text")
    if "\x00" in name:
        raise CampaignInputError("name must not contain NUL characters")
    if len(name.strip()) > MAX_NAME_CHARS:
        raise CampaignInputError(f"name is longer than {MAX_NAME_CHARS} characters")
    return name.strip() or None


def check_schedule(at: datetime | None) -> datetime | None:
    """A schedule time with a zone, that Postgres (and Python) can hold in UTC."""
    if at is None:
        return None
    if at.tzinfo is None:
        raise CampaignInputError("scheduled_at needs a time zone (e.g. 2026-12-24T18:00:00Z)")
    try:
        return at.astimezone(UTC)
    except OverflowError:
        raise CampaignInputError(
            "scheduled_at must be a date no later than 9999-12-31 in UTC"
        ) from None


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _zip_codes(value: object, listed: object = None) -> tuple[str, ...]:
    if _is_int(listed) and listed > MAX_ZIP_CODES:
        raise CampaignInputError(f"zip_codes lists {listed} codes; the limit is {MAX_ZIP_CODES}")
    codes = _clean_strings(value, "zip_codes")
    if not codes:
        raise CampaignInputError("the LOCAL segment needs at least one zip code in zip_codes")
    if len(codes) > MAX_ZIP_CODES:
        raise CampaignInputError(
            f"zip_codes lists {len(codes)} codes; the limit is {MAX_ZIP_CODES}"
        )
    too_long = [c for c in codes if len(c) > MAX_ZIP_CODE_CHARS]
    if too_long:
        raise CampaignInputError(f"zip code {too_long[0][:40]!r} is not a zip code (too long)")
    return codes


def _csv_audience(fields: Mapping[str, object], allowed_hosts: Sequence[str]) -> Audience:
    # The planner reads only the count of an over-long list (see due_campaigns).
    listed = fields.get("member_id_count")
    if _is_int(listed) and listed > MAX_MEMBER_IDS:
        raise _too_many_member_ids(listed)
    member_ids = _clean_strings(fields.get("member_ids"), "member_ids")
    url = fields.get("csv_upload_url")
    has_url = isinstance(url, str) and bool(url.strip())
    if member_ids and has_url:
        raise CampaignInputError("the CSV segment takes member_ids or csv_upload_url, not both")
    if member_ids:
        return Audience("CSV", member_ids=check_member_ids(member_ids))
    if has_url:
        assert isinstance(url, str)
        return Audience("CSV", csv_url=check_csv_url(url, allowed_hosts))
    raise CampaignInputError("the CSV segment needs member ids: fill member_ids or csv_upload_url")


def check_member_ids(member_ids: Iterable[str]) -> tuple[str, ...]:
    """Blank-free, without duplicates, in first-seen order; raises on an absurd id or on
    more than MAX_MEMBER_IDS of them."""
    unique = tuple(dict.fromkeys(m.strip() for m in member_ids if m.strip()))
    if len(unique) > MAX_MEMBER_IDS:
        raise _too_many_member_ids(len(unique))
    too_long = [m for m in unique if len(m) > MAX_MEMBER_ID_CHARS]
    if too_long:
        raise CampaignInputError(
            f"member id {too_long[0][:40]!r}… is longer than {MAX_MEMBER_ID_CHARS} characters"
        )
    return unique


def _too_many_member_ids(count: int) -> CampaignInputError:
    return CampaignInputError(
        f"the campaign lists {count:,} member ids; the limit is {MAX_MEMBER_IDS:,} "
        "(use a segment for larger audiences)"
    )


def _clean_strings(value: object, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise CampaignInputError(f"{name} must be a list of text values")
    if not all(isinstance(v, str) for v in value):
        raise CampaignInputError(f"{name} must be a list of text values")
    return tuple(dict.fromkeys(v.strip() for v in value if v.strip()))


def check_csv_url(url: str, allowed_hosts: Sequence[str]) -> CsvUrl:
    """The URL, stripped, if it is https and its host is allowed; CampaignInputError if not.
    Only a URL checked here can be downloaded (`CsvFetcher.member_ids` takes a `CsvUrl`).

    An allowed host matches exactly (case-insensitive); an entry starting with a dot
    (`.supabase.co`) also matches every subdomain.
    """
    url = url.strip()
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError as exc:
        raise CampaignInputError(f"csv_upload_url is not a URL: {exc}") from exc
    if parts.scheme.lower() != "https":
        raise CampaignInputError("csv_upload_url must be an https:// URL")
    if not host:
        raise CampaignInputError("csv_upload_url has no host")
    if parts.username or parts.password:
        raise CampaignInputError("csv_upload_url must not carry a user name or password")
    if not host_is_allowed(host, allowed_hosts):
        allowed = ", ".join(allowed_hosts) or "none (set LOYALTYD_CSV_ALLOWED_HOSTS)"
        raise CampaignInputError(
            f"csv_upload_url host {host!r} is not allowed; allowed hosts: {allowed}"
        )
    return CsvUrl(url)


def host_is_allowed(host: str, allowed_hosts: Sequence[str]) -> bool:
    host = host.lower().rstrip(".")
    for entry in (a.strip().lower() for a in allowed_hosts):
        if entry.startswith(".") and (host.endswith(entry) or host == entry[1:]):
            return True
        if entry and host == entry:
            return True
    return False
