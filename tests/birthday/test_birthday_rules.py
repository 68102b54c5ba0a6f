"""Birthday date rules: the program's local date, 29 February, the gift year, hand-run dates."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from daemon.birthday.rules import (
    UnknownTimezone,
    birthday_key,
    birthday_keys,
    clip_message,
    gift_year,
    local_date,
    manual_date_refusal,
    program_zone,
)

# 11:00 UTC on 10 March 2024: already 11 March in Auckland (UTC+13), still the morning of
# 10 March in Los Angeles (UTC-7, the first day of daylight saving time).
INSTANT = datetime(2024, 3, 10, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "zone", "expected"),
    [
        (INSTANT, "Pacific/Auckland", date(2024, 3, 11)),
        (INSTANT, "America/Los_Angeles", date(2024, 3, 10)),
        (INSTANT, "UTC", date(2024, 3, 10)),
        (datetime(2024, 12, 31, 23, 30, tzinfo=UTC), "Europe/Paris", date(2025, 1, 1)),
        (datetime(2025, 1, 1, 0, 30, tzinfo=UTC), "America/New_York", date(2024, 12, 31)),
        # the same instant expressed in another offset is the same instant
        (INSTANT.astimezone(timezone(timedelta(hours=-5))), "Pacific/Auckland", date(2024, 3, 11)),
    ],
)
def test_local_date_is_the_programs_calendar_day_at_that_instant(
    now: datetime, zone: str, expected: date
) -> None:
    assert local_date(now, program_zone(zone)) == expected


def test_a_naive_now_is_refused_rather_than_guessed() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        local_date(datetime(2024, 3, 10, 11, 0), program_zone("UTC"))


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "", "../etc/passwd", "Europe/"])
def test_an_unknown_timezone_raises_a_readable_error(name: str) -> None:
    with pytest.raises(UnknownTimezone, match="unknown timezone"):
        program_zone(name)


@pytest.mark.parametrize(
    ("today", "keys"),
    [
        (date(2023, 2, 28), (228, 229)),  # no 29 February in 2023: its birthdays move here
        (date(2024, 2, 28), (228,)),  # leap year: they wait for their own day
        (date(2024, 2, 29), (229,)),
        (date(2023, 3, 1), (301,)),  # never on 1 March
        (date(2100, 2, 28), (228, 229)),  # 2100 is not a leap year
        (date(2000, 2, 28), (228,)),  # 2000 is
        (date(2024, 12, 31), (1231,)),
        (date(2024, 1, 1), (101,)),
    ],
)
def test_birthday_keys_of_a_day(today: date, keys: tuple[int, ...]) -> None:
    assert birthday_keys(today) == keys


@pytest.mark.parametrize(
    ("born", "today", "celebrated"),
    [
        (date(2000, 2, 29), date(2023, 2, 28), True),
        (date(2000, 2, 29), date(2023, 3, 1), False),
        (date(2000, 2, 29), date(2024, 2, 28), False),
        (date(2000, 2, 29), date(2024, 2, 29), True),
        (date(1990, 2, 28), date(2023, 2, 28), True),
        (date(1990, 2, 28), date(2024, 2, 28), True),
        (date(1990, 2, 28), date(2024, 2, 29), False),
        (date(1990, 7, 14), date(2024, 7, 14), True),
        (date(1990, 7, 14), date(2024, 7, 15), False),
    ],
)
def test_a_birth_date_is_celebrated_on_the_days_whose_keys_hold_its_key(
    born: date, today: date, celebrated: bool
) -> None:
    """What birthday_passes_due asks of the index: key(birth date) = ANY(keys(today))."""
    assert (birthday_key(born) in birthday_keys(today)) is celebrated


def test_birthday_key_matches_the_indexed_expression() -> None:
    """month * 100 + day, as in users_birthday_month_day_idx."""
    assert birthday_key(date(1985, 11, 3)) == 1103


def test_the_gift_counts_for_the_local_year() -> None:
    assert gift_year(date(2025, 1, 1)) == 2025


def test_a_message_over_500_characters_is_clipped_with_an_ellipsis() -> None:
    clipped = clip_message("x" * 600)
    assert len(clipped) == 500 and clipped.endswith("…")
    assert clip_message("Happy birthday!") == "Happy birthday!"
    assert clip_message("y" * 500) == "y" * 500


@pytest.mark.parametrize(
    ("requested", "today", "refused"),
    [
        (date(2024, 5, 1), date(2024, 5, 1), None),
        (date(2024, 4, 30), date(2024, 5, 1), "already past"),
        (date(2024, 5, 2), date(2024, 5, 1), "not yet reached"),
    ],
)
def test_a_hand_run_for_another_day_than_local_today_is_refused(
    requested: date, today: date, refused: str | None
) -> None:
    reason = manual_date_refusal(requested, today)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason and "--force" in reason
