"""Whose birthday is it, where the program is: pure date rules of the birthday bot.

Everything is decided from one UTC instant (the clock is a parameter) and the program's IANA
timezone, so a tick only ever celebrates the program's *local today*: a daemon that was down
at the usual hour catches up on any later tick the same local day, and a tick after local
midnight never celebrates yesterday's birthdays (SPEC §3.3).

Birthdays are matched on a single integer key, month * 100 + day, the same expression the
`users_birthday_month_day_idx` index is built on. 29 February birthdays are celebrated on
28 February in years without a 29 February.
"""

from __future__ import annotations

import calendar
from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

FEB_28 = 228
FEB_29 = 229
# The rendered message is stored in transactions.notification_message (CHECK: 500 chars).
MAX_MESSAGE_CHARS = 500


class UnknownTimezone(ValueError):
    """The program's timezone is not an IANA name this machine knows."""


def program_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UnknownTimezone(
            f"unknown timezone {name!r} (use an IANA name like Europe/Paris)"
        ) from exc


def local_date(now: datetime, zone: ZoneInfo) -> date:
    """The calendar date in `zone` at the instant `now` (which must carry a timezone)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (a UTC instant), not naive")
    return now.astimezone(zone).date()


def birthday_key(day: date) -> int:
    """month * 100 + day: the value indexed by users_birthday_month_day_idx."""
    return day.month * 100 + day.day


def birthday_keys(today: date) -> tuple[int, ...]:
    """The birth month/day keys celebrated on `today`.

    On 28 February of a year without 29 February, members born on 29 February are
    celebrated too; in leap years they wait for their own day.
    """
    key = birthday_key(today)
    if key == FEB_28 and not calendar.isleap(today.year):
        return (FEB_28, FEB_29)
    return (key,)


def gift_year(today: date) -> int:
    """The year a gift on `today` counts for: one gift per pass per local calendar year."""
    return today.year


def clip_message(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A rendered message that fits the ledger's 500-character column.

    A long first name could push a 500-character template over the limit; losing the tail
    of one member's message beats refusing that member's gift.
    """
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def manual_date_refusal(requested: date, local_today: date) -> str | None:
    """Why a hand-run for `requested` must not celebrate in a program whose date is
    `local_today`, or None when it may.

    A date other than the program's today would send "Happy Birthday" on the wrong day and
    use up those members' gift for the year; the operator must ask for it explicitly.
    """
    if requested == local_today:
        return None
    when = "already past" if requested < local_today else "not yet reached"
    return (
        f"{requested.isoformat()} is {when} in this program (local date "
        f"{local_today.isoformat()}); pass --force to celebrate it anyway"
    )
