"""Member CSV import on real Postgres: every bad-row kind reported, good rows written, the
same file twice changes nothing, a broken file writes nothing."""

from __future__ import annotations

import csv
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from structlog.testing import LogCapture

from daemon.cli.commands import import_users as command
from daemon.cli.main import build_parser
from daemon.core.config import Settings
from daemon.members.importer import ImportReport, import_users
from daemon.members.rules import ImportAborted
from tests.factories import make_pass, make_program, make_user

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MEMBERS = FIXTURES / "import_members.csv"
TODAY = date(2024, 6, 15)

# line -> (outcome, words expected in the detail or warning) for tests/fixtures/import_members.csv
EXPECTED = {
    2: ("created", "user created, pass created"),
    3: ("created", "user created, pass created"),  # 1985/02/03 accepted
    4: ("created", "'N/A' is not a date"),
    5: ("created", "'Unknown' is not a date"),
    6: ("created", "'2023-02-29' does not exist"),
    7: ("created", "'2999-01-01' is in the future"),
    8: ("created", "'1850-05-05' is before 1900"),
    9: ("created", "'04/07/1990' is ambiguous"),
    10: ("rejected", "email 'not-an-email' is not a valid address"),
    11: ("rejected", "email is empty"),
    12: ("rejected", "same email as line 2"),
    13: ("rejected", "same member_id as line 2"),
    14: ("rejected", "member_id 'M-taken' already belongs to another member"),
    15: ("created", "user created, pass updated"),  # links the unlinked M-unlinked
    16: ("rejected", "member_id 'COUPON-1' is a COUPON pass"),
    17: ("created", "user created"),
    18: ("created", "passkit_internal_id ignored"),
    19: ("rejected", "row has 11 fields, the header has 9"),
    # line 20 is a row of empty cells: skipped, not reported
    21: ("updated", "user updated"),
    22: ("rejected", "same passkit_internal_id as line 2"),
    23: ("rejected", "passkit_internal_id 'pk-taken' already belongs to another pass"),
    24: ("rejected", "email 'uma @example.com' is not a valid address"),
    25: ("created", "user created, pass created"),
}


@contextmanager
def quiet_logs() -> Iterator[list[Any]]:
    capture = LogCapture()
    previous = structlog.get_config()["processors"]
    structlog.configure(processors=[capture])
    try:
        yield capture.entries
    finally:
        structlog.configure(processors=previous)


async def _existing_data(pool: asyncpg.Pool) -> uuid.UUID:
    """The database the fixture file is imported into."""
    program = await make_program(pool)
    other_program = await make_program(pool, name="Elsewhere")
    other = await make_user(pool, email="other@example.com")
    await make_pass(pool, program, user_id=other, external_id="M-taken")
    unlinked = await pool.fetchval(
        "INSERT INTO passes_master (program_id, external_id, status) "
        "VALUES ($1, 'M-unlinked', NULL) RETURNING id",
        program,
    )
    await pool.execute("INSERT INTO protocol_membership (pass_id) VALUES ($1)", unlinked)
    await make_pass(pool, program, user_id=other, external_id="COUPON-1", protocol="COUPON")
    await make_pass(
        pool, other_program, user_id=other, external_id="M-x", passkit_internal_id="pk-taken"
    )
    await make_user(pool, email="Existing@Example.com", first_name="Old", last_name=None)
    return program


async def _import(pool: asyncpg.Pool, path: Path, program: uuid.UUID, **kw: Any) -> ImportReport:
    with quiet_logs():
        return await import_users(pool, path, program, today=TODAY, **kw)


async def _snapshot(pool: asyncpg.Pool) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the import can touch, with its timestamps."""
    tables = {
        "users": "SELECT * FROM users ORDER BY id",
        "passes": "SELECT * FROM passes_master ORDER BY id",
        "balances": "SELECT * FROM protocol_membership ORDER BY pass_id",
    }
    return {name: [tuple(r) for r in await pool.fetch(sql)] for name, sql in tables.items()}


async def test_the_fixture_file_reports_every_row_as_expected(pool: asyncpg.Pool) -> None:
    program = await _existing_data(pool)
    report = await _import(pool, MEMBERS, program)

    got = {r.line: r for r in report.rows}
    assert sorted(got) == sorted(EXPECTED)
    for line, (outcome, words) in EXPECTED.items():
        row = got[line]
        text = row.detail + " | " + "; ".join(row.warnings)
        assert row.outcome == outcome and words in text, (line, row)
    assert report.counts == {"created": 12, "updated": 1, "unchanged": 0, "rejected": 10}
    assert report.ignored_columns == ("favourite_pizza",)


async def test_the_fixture_file_writes_what_it_says(pool: asyncpg.Pool) -> None:
    program = await _existing_data(pool)
    await _import(pool, MEMBERS, program)

    ada = await pool.fetchrow("SELECT * FROM users WHERE email = 'ada@example.com'")
    assert ada is not None
    assert (ada["first_name"], ada["last_name"], ada["birth_date"]) == (
        "Ada",
        "Lovelace",
        date(1990, 6, 15),
    )
    assert (ada["phone_number"], ada["zip"]) == ("+44 20 7946 0000", "01234")  # zip keeps its 0
    m1 = await pool.fetchrow(
        "SELECT p.*, m.points_balance FROM passes_master p "
        "JOIN protocol_membership m ON m.pass_id = p.id "
        "WHERE p.program_id = $1 AND p.external_id = 'M-001'",
        program,
    )
    assert m1 is not None and m1["user_id"] == ada["id"]
    assert (
        m1["protocol"],
        m1["status"],
        m1["is_active"],
        m1["passkit_internal_id"],
        m1["points_balance"],
    ) == ("MEMBERSHIP", None, True, "pk-001", 0)

    dates = dict(
        await pool.fetch(
            "SELECT first_name, birth_date FROM users WHERE first_name = ANY($1)",
            ["Bob", "Carol", "Dan", "Erin", "Frank", "Gina", "Hank", "Leo"],
        )
    )
    assert dates == {
        "Bob": date(1985, 2, 3),
        "Carol": None,
        "Dan": None,
        "Erin": None,
        "Frank": None,
        "Gina": None,
        "Hank": None,
    }  # Leo was rejected
    assert (
        # emails are stored in lower case (sql/053)
        await pool.fetchval("SELECT email FROM users WHERE first_name = 'Bob'") == "bob@example.com"
    )
    assert (
        await pool.fetchval("SELECT first_name FROM users WHERE email = 'oli@example.com'")
        == "O'Brien, Oliver"
    )

    mia = await pool.fetchval("SELECT id FROM users WHERE email = 'mia@example.com'")
    linked = await pool.fetchrow(
        "SELECT user_id, passkit_internal_id FROM passes_master WHERE external_id = 'M-unlinked'"
    )
    assert linked is not None and tuple(linked) == (mia, "pk-unlinked")

    existing = await pool.fetchrow("SELECT * FROM users WHERE email = 'existing@example.com'")
    assert existing is not None
    assert (existing["first_name"], existing["last_name"]) == ("Old", "Newlast")  # blank kept
    assert await pool.fetchval(
        "SELECT user_id FROM passes_master WHERE external_id = 'M-taken'"
    ) == await pool.fetchval("SELECT id FROM users WHERE email = 'other@example.com'")
    for rejected in ("not-an-email", "kim@example.com", "leo@example.com", "quinn@example.com"):
        assert await pool.fetchval("SELECT count(*) FROM users WHERE email = $1", rejected) == 0


async def test_importing_the_same_file_again_changes_nothing(pool: asyncpg.Pool) -> None:
    program = await _existing_data(pool)
    first = await _import(pool, MEMBERS, program)
    before = await _snapshot(pool)

    second = await _import(pool, MEMBERS, program)

    assert await _snapshot(pool) == before  # not even updated_at / last_updated moved
    assert second.counts == {"created": 0, "updated": 0, "unchanged": 13, "rejected": 10}
    assert [r.line for r in second.rows if r.outcome == "rejected"] == [
        r.line for r in first.rows if r.outcome == "rejected"
    ]


async def test_emails_match_existing_users_ignoring_case(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    program = await make_program(pool)
    user = await make_user(pool, email="Ada@Example.COM", first_name="Ada")
    path = tmp_path / "m.csv"
    path.write_text("email,first_name,birth_date,member_id\nada@example.com,,1990-06-15,M-1\n")
    report = await _import(pool, path, program)
    assert [(r.outcome, r.detail) for r in report.rows] == [
        ("created", "user updated, pass created")
    ]
    row = await pool.fetchrow("SELECT * FROM users WHERE id = $1", user)
    assert row is not None and row["email"] == "ada@example.com" and row["first_name"] == "Ada"
    assert row["birth_date"] == date(1990, 6, 15)
    assert await pool.fetchval("SELECT count(*) FROM users") == 1
    assert (
        await pool.fetchval("SELECT user_id FROM passes_master WHERE external_id = 'M-1'") == user
    )


async def test_excel_bom_and_semicolons_are_understood(pool: asyncpg.Pool, tmp_path: Path) -> None:
    program = await make_program(pool)
    path = tmp_path / "excel.csv"
    path.write_bytes(
        "\ufeffEmail;First name;Birth date\r\nzoe@example.com;Zoé;1990-01-02\r\n".encode()
    )
    report = await _import(pool, path, program)
    assert [r.outcome for r in report.rows] == ["created"]
    row = await pool.fetchrow("SELECT first_name, birth_date FROM users")
    assert row is not None and tuple(row) == ("Zoé", date(1990, 1, 2))


# --- broken files write nothing ----------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        ("import_latin1.csv", "not UTF-8 text (line 2, byte 46: 0xe9)"),
        ("import_no_email_column.csv", "no `email` column (columns found: e-mail,"),
    ],
)
async def test_a_broken_file_fails_with_one_clear_message(
    pool: asyncpg.Pool, fixture: str, message: str
) -> None:
    program = await make_program(pool)
    with pytest.raises(ImportAborted) as caught:
        await _import(pool, FIXTURES / fixture, program)
    assert message in str(caught.value)
    assert await pool.fetchval("SELECT count(*) FROM users") == 0


async def test_a_file_unreadable_after_thousands_of_rows_writes_nothing(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """Rows already written in earlier batches are rolled back with the rest."""
    program = await make_program(pool)
    path = tmp_path / "late.csv"
    good = "".join(f"m{i}@example.com,M{i}\n" for i in range(3000))
    huge = "x" * (csv.field_size_limit() + 10)  # valid UTF-8, but no CSV field is this big
    path.write_text(f"email,member_id\n{good}late@example.com,{huge}\n")
    with pytest.raises(ImportAborted, match="line 3002: unreadable CSV"):
        await _import(pool, path, program, batch_size=500)
    assert await pool.fetchval("SELECT count(*) FROM users") == 0
    assert await pool.fetchval("SELECT count(*) FROM passes_master") == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"\n\n", "no header row"),
        (b"email\n\xff\xfe", "not UTF-8 text (line 2, byte 6: 0xff)"),
        ("email\nzo\u00e9".encode()[:-1], "not UTF-8 text (line 2, byte 8: 0xc3)"),
    ],
)
async def test_empty_or_truncated_files_are_refused(
    pool: asyncpg.Pool, tmp_path: Path, content: bytes, message: str
) -> None:
    program = await make_program(pool)
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    with pytest.raises(ImportAborted, match=re.escape(message)):
        await _import(pool, path, program)


async def test_an_unknown_program_or_missing_file_is_refused(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    with pytest.raises(ImportAborted, match="no program with id"):
        await _import(pool, MEMBERS, uuid.uuid4())
    with pytest.raises(ImportAborted, match="cannot read"):
        await _import(pool, tmp_path / "missing.csv", await make_program(pool))


async def test_progress_is_reported_per_batch(pool: asyncpg.Pool, tmp_path: Path) -> None:
    program = await make_program(pool)
    path = tmp_path / "p.csv"
    path.write_text("email\n" + "".join(f"m{i}@example.com\n" for i in range(2500)))
    calls: list[tuple[int, int]] = []
    await _import(pool, path, program, batch_size=1000, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1000, 2500), (2000, 2500), (2500, 2500)]


# --- the command -------------------------------------------------------------------------


async def _command(settings: Settings, *argv: str) -> int:
    args = build_parser().parse_args(["import-users", *argv])
    with quiet_logs():
        code: int = await command.run(settings, args)
    return code


async def test_command_prints_problem_rows_writes_the_report_and_exits_1_on_rejections(
    pool: asyncpg.Pool,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    program = await _existing_data(pool)
    report_path = tmp_path / "report.csv"
    code = await _command(
        make_settings(), str(MEMBERS), "--program", str(program), "--report", str(report_path)
    )
    assert code == 1
    out = capsys.readouterr().out
    assert "line 10: not-an-email: REJECTED: email 'not-an-email' is not a valid address" in out
    assert "line 4: carol@example.com: created with warning: birth_date 'N/A'" in out
    assert "23 rows: 12 created, 1 updated, 0 unchanged, 10 rejected; 7 with warnings" in out
    assert "ignored columns: favourite_pizza" in out
    with report_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 23
    assert rows[0] == {
        "line": "2",
        "email": "ada@example.com",
        "member_id": "M-001",
        "outcome": "created",
        "detail": "user created, pass created",
        "warnings": "",
    }


async def test_command_exits_0_when_every_row_is_accepted(
    pool: asyncpg.Pool,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    program = await make_program(pool)
    path = tmp_path / "ok.csv"
    path.write_text("email,birth_date\nada@example.com,N/A\n")
    assert await _command(make_settings(), str(path), "--program", str(program)) == 0
    assert "1 rows: 1 created" in capsys.readouterr().out


async def test_command_exits_2_with_one_message_for_a_broken_file(
    pool: asyncpg.Pool,
    make_settings: Callable[..., Settings],
    capsys: pytest.CaptureFixture[str],
) -> None:
    program = await make_program(pool)
    code = await _command(
        make_settings(), str(FIXTURES / "import_latin1.csv"), "--program", str(program)
    )
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "nothing was imported" in captured.err


async def test_an_import_for_one_program_never_rewrites_another_programs_member(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """ALICE is a member of program A. Importing her for B fills only what is empty, and the
    report says why the rest was not written."""
    program_a = await make_program(pool, name="A")
    program_b = await make_program(pool, name="B")
    alice = await make_user(
        pool, email="alice@example.com", first_name="Alice", birth_date=date(1990, 1, 2)
    )
    await make_pass(pool, program_a, user_id=alice)
    path = tmp_path / "b.csv"
    path.write_text(
        "email,first_name,birth_date,phone_number,zip,member_id\n"
        "ALICE@example.com,Alicia,1991-03-04,+15550100,75001,B-1\n"
    )
    report = await _import(pool, path, program_b)
    (row,) = report.rows
    assert row.outcome == "created" and "not changed: member of another program" in row.detail
    stored = await pool.fetchrow("SELECT * FROM users WHERE id = $1", alice)
    assert stored is not None
    assert (stored["first_name"], stored["birth_date"]) == ("Alice", date(1990, 1, 2))
    # empty fields are filled
    assert (stored["phone_number"], stored["zip"]) == ("+15550100", "75001")
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM passes_master WHERE user_id = $1 AND program_id = $2",
            alice,
            program_b,
        )
        == 1
    )


async def test_a_member_of_this_program_only_is_updated_by_the_file(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    program = await make_program(pool)
    bob = await make_user(pool, email="bob@example.com", first_name="Bob")
    await make_pass(pool, program, user_id=bob, external_id="M-1")
    path = tmp_path / "a.csv"
    path.write_text("email,first_name,member_id\nbob@example.com,Robert,M-1\n")
    (row,) = (await _import(pool, path, program)).rows
    assert row.outcome == "updated" and "another program" not in row.detail
    assert await pool.fetchval("SELECT first_name FROM users WHERE id = $1", bob) == "Robert"


async def test_the_report_and_the_terminal_are_safe_to_open(
    pool: asyncpg.Pool,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Formula cells are quoted in the report (OWASP CSV injection); control characters are
    escaped on the terminal, never obeyed."""
    program = await make_program(pool)
    path = tmp_path / "evil.csv"
    path.write_text(
        "email,first_name,member_id\n"
        '=HYPERLINK("http://x")@example.com,A,M-1\n'
        "ok@example.com,B,+SUM(A1)\n"
        "bad\x1b[2Jmail,C,@M-3\n"
        "-fine@example.com,D,M-4\n",
        encoding="utf-8",
    )
    report_path = tmp_path / "report.csv"
    code = await _command(
        make_settings(), str(path), "--program", str(program), "--report", str(report_path)
    )
    assert code == 1
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\\x1b[2J" in printed
    with report_path.open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    cells = [cell for row in rows for cell in row[1:]]
    assert all(not c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in cells), cells
    assert "'+SUM(A1)" in cells and "'@M-3" in cells and "'-fine@example.com" in cells


async def test_one_oversize_cell_rejects_its_row_not_the_file(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    program = await make_program(pool)
    path = tmp_path / "big.csv"
    path.write_text(
        "email,first_name,member_id\n"
        f"big@example.com,{'x' * 200_000},M-1\n"
        "small@example.com,Sam,M-2\n"
    )
    report = await _import(pool, path, program)
    assert [r.outcome for r in report.rows] == ["rejected", "created"]
    assert "first_name is longer than" in report.rows[0].detail
