"""`loyaltyd import-users FILE --program ID`: import members from a CSV file."""

from __future__ import annotations

import argparse
import csv
import sys
import uuid
from datetime import date
from pathlib import Path
from typing import TextIO

from daemon.cli.commands._common import pool
from daemon.cli.progress import ProgressLine
from daemon.core.config import Settings
from daemon.core.csvtext import safe_cell
from daemon.members.importer import ImportReport, RowResult, import_users
from daemon.members.rules import COLUMNS, ImportAborted

HELP = "Import members from a CSV file: users upserted by email, passes created or linked."
DESCRIPTION = f"""\
Import members into one program from a UTF-8 CSV file (comma, semicolon or tab separated)
with a header row. Columns: {", ".join(COLUMNS)}; only email is required, others are
optional and unknown columns are ignored.

Users are matched by email ignoring case (created, or updated where the file brings new
values; an empty cell never erases a stored value). A member_id gets the program's
membership pass: created if missing (not installed until PassKit reports it), or linked
to this user. A member_id already linked to another user's email is rejected.

birth_date must be year first: YYYY-MM-DD (also YYYY/MM/DD, one-digit month or day).
Anything else ("N/A", "Unknown", 04/07/1990), impossible dates (2023-02-29), future dates
and years before 1900 leave the birth date empty and the row is reported with a warning.

Everything is written in one transaction: an unreadable file writes nothing. Rows needing
attention are printed; --report writes every row's outcome as CSV.
Exit status: 0 all rows imported, 1 some rows rejected, 2 the file was not imported."""

REPORT_FIELDS = ("line", "email", "member_id", "outcome", "detail", "warnings")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("file", type=Path, metavar="FILE", help="the CSV file")
    parser.add_argument(
        "--program", type=uuid.UUID, required=True, metavar="ID", help="the program's id"
    )
    parser.add_argument(
        "--report",
        metavar="FILE",
        help="write the outcome of every row to this CSV file ('-' for standard output)",
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    path: Path = args.file
    bar = _ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    try:
        async with pool(settings) as db:
            report = await import_users(db, path, args.program, today=date.today(), progress=bar)
    except ImportAborted as exc:
        return _aborted(str(exc), bar)
    if bar is not None:
        bar.finish()
    _print_report(report, sys.stdout)
    if args.report:
        _write_report(report, args.report)
    return 1 if report.rejected else 0


def _aborted(message: str, bar: _ProgressBar | None = None) -> int:
    if bar is not None:
        bar.finish()
    sys.stderr.write(f"loyaltyd import-users: {message}; nothing was imported\n")
    return 2


def _print_report(report: ImportReport, out: TextIO) -> None:
    for row in report.needing_attention():
        out.write(_problem_line(row))
    if report.ignored_columns:
        out.write(f"ignored columns: {printable(', '.join(report.ignored_columns))}\n")
    counts = report.counts
    out.write(
        f"{len(report.rows)} rows: {counts['created']} created, {counts['updated']} updated, "
        f"{counts['unchanged']} unchanged, {counts['rejected']} rejected; "
        f"{report.warned} with warnings\n"
    )


def _problem_line(row: RowResult) -> str:
    who = printable(row.email or "(no email)")
    if row.outcome == "rejected":
        return f"line {row.line}: {who}: REJECTED: {printable(row.detail)}\n"
    warnings = printable("; ".join(row.warnings))
    return f"line {row.line}: {who}: {row.outcome} with warning: {warnings}\n"


def printable(text: str) -> str:
    """Text from the file as it may reach a terminal: control characters (escape sequences,
    carriage returns, bells) written as escapes, never obeyed."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _write_report(report: ImportReport, target: str) -> None:
    if target == "-":
        _write_rows(report, sys.stdout)
        return
    with Path(target).open("w", encoding="utf-8", newline="") as handle:
        _write_rows(report, handle)


def _write_rows(report: ImportReport, handle: TextIO) -> None:
    writer = csv.writer(handle)
    writer.writerow(REPORT_FIELDS)
    for r in report.rows:
        cells = (r.email or "", r.member_id or "", r.outcome, r.detail, "; ".join(r.warnings))
        writer.writerow((r.line, *(safe_cell(c) for c in cells)))


class _ProgressBar:
    """One self-overwriting line on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._line = ProgressLine(stream, prefix="importing ", quarters=False)

    def __call__(self, done: int, total: int) -> None:
        self._line.show(done, total, f"{done:,}/{total:,} rows")

    def finish(self) -> None:
        self._line.finish()
