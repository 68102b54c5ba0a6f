"""Member import rules: dates never guessed, emails checked, duplicates and pass conflicts
refused with a reason, header problems abort the whole file."""

from __future__ import annotations

import uuid
from datetime import date

import pytest

from daemon.domain.members import ExistingPass
from daemon.members.rules import (
    CreatePass,
    Duplicates,
    ImportAborted,
    LinkPass,
    Member,
    Rejected,
    choose_delimiter,
    email_problem,
    is_blank,
    parse_birth_date,
    plan_pass,
    read_header,
    row_outcome,
    validate_row,
)

TODAY = date(2024, 6, 15)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1990-06-15", date(1990, 6, 15)),
        ("  1990-06-15 ", date(1990, 6, 15)),
        ("1990/06/15", date(1990, 6, 15)),
        ("1990-7-4", date(1990, 7, 4)),
        ("2000-02-29", date(2000, 2, 29)),
        ("1900-01-01", date(1900, 1, 1)),
        ("2024-06-15", date(2024, 6, 15)),  # born today
    ],
)
def test_year_first_dates_are_accepted(text: str, expected: date) -> None:
    assert parse_birth_date(text, TODAY) == (expected, None)


@pytest.mark.parametrize("text", ["", "   ", None])
def test_a_blank_birth_date_is_no_date_and_no_warning(text: str | None) -> None:
    assert parse_birth_date(text, TODAY) == (None, None)


@pytest.mark.parametrize(
    ("text", "warning"),
    [
        ("N/A", "is not a date"),
        ("Unknown", "is not a date"),
        ("n/a", "is not a date"),
        ("15 June 1990", "is not a date"),
        ("1990-06-15T00:00:00", "is not a date"),
        ("19900615", "is not a date"),
        ("2023-02-29", "does not exist"),
        ("1990-13-01", "does not exist"),
        ("1990-00-10", "does not exist"),
        ("1990-04-31", "does not exist"),
        ("2024-06-16", "in the future"),
        ("2999-01-01", "in the future"),
        ("9999-12-31", "in the future"),
        ("1899-12-31", "before 1900"),
        ("0001-01-01", "before 1900"),
        ("04/07/1990", "ambiguous"),
        ("4/7/90", "ambiguous"),
        ("15.06.1990", "ambiguous"),
    ],
)
def test_bad_dates_are_left_empty_with_a_warning(text: str, warning: str) -> None:
    value, problem = parse_birth_date(text, TODAY)
    assert value is None
    assert problem is not None and warning in problem and repr(text.strip()) in problem


@pytest.mark.parametrize(
    "email",
    [
        "ada@example.com",
        "Ada.Lovelace+loyalty@mail.example.co.uk",
        "o'brien@example.ie",
        "x@xn--80ak6aa92e.com",
        "a@b.xn--p1ai",
    ],
)
def test_plausible_emails_pass(email: str) -> None:
    assert email_problem(email) is None


@pytest.mark.parametrize(
    ("email", "problem"),
    [
        ("", "empty"),
        ("not-an-email", "not a valid address"),
        ("ada@", "not a valid address"),
        ("@example.com", "not a valid address"),
        ("ada@example", "not a valid address"),
        ("ada @example.com", "not a valid address"),
        ("ada@@example.com", "not a valid address"),
        ("ada..l@example.com", "not a valid address"),
        ("ada@-example.com", "not a valid address"),
        ("zoé@example.com", "non-ASCII"),
        ("a" * 65 + "@example.com", "local part over 64"),
        ("a@" + "b" * 250 + ".com", "not a valid address"),
    ],
)
def test_bad_emails_are_named(email: str, problem: str) -> None:
    reason = email_problem(email)
    assert reason is not None and problem in reason


# --- header --------------------------------------------------------------------------------


def test_header_names_are_matched_ignoring_case_spaces_and_unknown_columns() -> None:
    header = read_header(["Email ", "First Name", "birth_date", "Favourite pizza", ""])
    assert header.positions == {"email": 0, "first_name": 1, "birth_date": 2}
    assert header.width == 5 and header.ignored == ("favourite_pizza",)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["e-mail", "first_name"], "no `email` column"),
        (["first_name"], "columns found: first_name"),
        (["email", "zip", "Email"], "appears twice"),
    ],
)
def test_a_header_that_cannot_work_aborts_the_file(names: list[str], message: str) -> None:
    with pytest.raises(ImportAborted, match=message):
        read_header(names)


@pytest.mark.parametrize(
    ("line", "delimiter"),
    [
        ("email,first_name\r\n", ","),
        ("email;first_name;birth_date\n", ";"),
        ("first_name\temail\n", "\t"),
        ("mail;name\n", ","),  # nothing fits: comma, and read_header will say what is missing
    ],
)
def test_the_delimiter_is_the_one_that_reveals_the_email_column(line: str, delimiter: str) -> None:
    assert choose_delimiter(line) == delimiter


# --- rows ----------------------------------------------------------------------------------

HEADER = read_header(["email", "first_name", "birth_date", "member_id", "passkit_internal_id"])


def _row(*cells: str) -> Member | Rejected:
    return validate_row(7, list(cells), HEADER, TODAY)


def test_a_good_row_is_cleaned_blank_cells_becoming_none() -> None:
    member = _row(" Ada@Example.com ", " Ada ", "1990-06-15", "", "")
    assert member == Member(
        line=7, email="Ada@Example.com", first_name="Ada", birth_date=date(1990, 6, 15)
    )
    assert isinstance(member, Member) and member.email_key == "ada@example.com"


def test_a_bad_date_keeps_the_row_with_a_warning() -> None:
    member = _row("ada@example.com", "Ada", "N/A", "M-1", "")
    assert isinstance(member, Member) and member.birth_date is None
    assert member.member_id == "M-1" and len(member.warnings) == 1


@pytest.mark.parametrize(
    ("cells", "reason"),
    [
        (("bad", "Ada", "", "", ""), "not a valid address"),
        (("", "Ada", "", "", ""), "email is empty"),
        (("ada@example.com", "Ada", ""), "row has 3 fields, the header has 5"),
        (("ada@example.com", "Ada", "", "", "", "x"), "row has 6 fields"),
        (("ada@example.com", "Ad\x00a", "", "", ""), "first_name contains control characters"),
        (("ada@example.com", "A" * 101, "", "", ""), "first_name is longer than 100"),
        (("ada@example.com", "Ada", "", "M" * 101, ""), "member_id is longer than 100"),
    ],
)
def test_rows_that_cannot_be_imported_are_rejected_with_a_reason(
    cells: tuple[str, ...], reason: str
) -> None:
    rejected = _row(*cells)
    assert isinstance(rejected, Rejected) and reason in rejected.reason and rejected.line == 7


def test_a_passkit_id_without_member_id_is_dropped_with_a_warning() -> None:
    member = _row("ada@example.com", "Ada", "", "", "pk-1")
    assert isinstance(member, Member) and member.passkit_internal_id is None
    assert "passkit_internal_id ignored" in member.warnings[0]


def test_blank_rows_are_recognised() -> None:
    assert is_blank(["", " ", ""]) and is_blank([])
    assert not is_blank(["", "x"])


def test_repeated_email_member_id_or_passkit_id_is_rejected_naming_the_first_line() -> None:
    seen = Duplicates()
    first = Member(line=2, email="ada@example.com", member_id="M-1", passkit_internal_id="pk")
    assert seen.check(first) is first
    cases = [
        (Member(line=3, email="ADA@example.com"), "same email as line 2"),
        (Member(line=4, email="bob@example.com", member_id="M-1"), "same member_id as line 2"),
        (
            Member(line=5, email="cy@example.com", member_id="M-9", passkit_internal_id="pk"),
            "same passkit_internal_id as line 2",
        ),
    ]
    for member, reason in cases:
        result = seen.check(member)
        assert isinstance(result, Rejected) and result.reason == reason
    # a rejected row does not claim its values: M-9 is still free
    later = Member(line=6, email="dee@example.com", member_id="M-9")
    assert seen.check(later) is later


# --- passes --------------------------------------------------------------------------------

PROGRAM = uuid.uuid4()
ADA = Member(line=2, email="Ada@example.com", member_id="M-1")


def _existing(**kw: object) -> ExistingPass:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "program_id": PROGRAM,
        "external_id": "M-1",
        "passkit_internal_id": None,
        "protocol": "MEMBERSHIP",
        "user_id": None,
        "owner_email_key": None,
    }
    values.update(kw)
    return ExistingPass(**values)  # type: ignore[arg-type]


def test_no_member_id_means_no_pass() -> None:
    assert plan_pass(Member(line=2, email="a@example.com"), {}, {}) is None


def test_an_unknown_member_id_creates_the_pass() -> None:
    assert plan_pass(ADA, {}, {}) == CreatePass(ADA)


@pytest.mark.parametrize(
    "existing",
    [
        _existing(),  # unlinked
        _existing(user_id=uuid.uuid4(), owner_email_key="ada@example.com"),  # already hers
    ],
)
def test_an_existing_pass_of_this_member_or_nobody_is_linked(existing: ExistingPass) -> None:
    assert plan_pass(ADA, {"M-1": existing}, {}) == LinkPass(ADA, existing)


@pytest.mark.parametrize(
    ("member", "existing", "reason"),
    [
        (
            ADA,
            _existing(user_id=uuid.uuid4(), owner_email_key="bob@example.com"),
            "already belongs to another member",
        ),
        (
            ADA,
            _existing(user_id=uuid.uuid4(), owner_email_key=None),
            "already belongs to another member",
        ),
        (ADA, _existing(protocol="COUPON"), "is a COUPON pass"),
        (
            Member(line=2, email="ada@example.com", member_id="M-1", passkit_internal_id="pk-new"),
            _existing(passkit_internal_id="pk-old"),
            "has passkit_internal_id 'pk-old'",
        ),
    ],
)
def test_a_member_id_that_would_take_someone_elses_pass_is_rejected(
    member: Member, existing: ExistingPass, reason: str
) -> None:
    result = plan_pass(member, {"M-1": existing}, {})
    assert isinstance(result, Rejected) and reason in result.reason


def test_a_passkit_id_held_by_another_pass_is_rejected() -> None:
    member = Member(line=2, email="ada@example.com", member_id="M-1", passkit_internal_id="pk")
    holder = _existing(external_id="M-7", passkit_internal_id="pk", program_id=uuid.uuid4())
    result = plan_pass(member, {}, {"pk": holder})
    assert (
        isinstance(result, Rejected) and "already belongs to another pass ('M-7')" in result.reason
    )
    own = _existing(passkit_internal_id="pk")
    assert plan_pass(member, {"M-1": own}, {"pk": own}) == LinkPass(member, own)


@pytest.mark.parametrize(
    ("user", "card", "outcome"),
    [
        ("created", "created", "created"),
        ("unchanged", "created", "created"),
        ("updated", None, "updated"),
        ("unchanged", "updated", "updated"),
        ("unchanged", "unchanged", "unchanged"),
        ("unchanged", None, "unchanged"),
    ],
)
def test_row_outcome_is_the_strongest_change(user: str, card: str | None, outcome: str) -> None:
    assert row_outcome(user, card) == outcome
