"""What both CSV readers (a campaign's member list, the user import) agree on: how a header's
column names are read, and which delimiter a spreadsheet used."""

from __future__ import annotations

import csv
from typing import Final

# Spreadsheets in many locales save "CSV" with semicolons; some export tabs or pipes.
DELIMITERS: Final = (",", ";", "\t", "|")


def column_name(raw: str, *, dashes: bool = False) -> str:
    """`" First Name "` reads as `first_name`; with `dashes`, `"member-id"` as `member_id`."""
    name = raw.strip().strip('"').strip().lower().replace(" ", "_")
    return name.replace("-", "_") if dashes else name


def header_names(header_line: str, delimiter: str, *, dashes: bool = False) -> list[str]:
    cells = next(csv.reader([header_line], delimiter=delimiter), [])
    return [column_name(n, dashes=dashes) for n in cells]


def delimiter_for(header_line: str, column: str, *, dashes: bool = False) -> str | None:
    """The delimiter that makes `column` one of the header's names (None: none does)."""
    for delimiter in DELIMITERS:
        if column in header_names(header_line, delimiter, dashes=dashes):
            return delimiter
    return None


# OWASP "CSV injection": a spreadsheet runs a cell that starts with one of these.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: str) -> str:
    """A cell a spreadsheet shows as text: a leading formula character is quoted."""
    return "'" + value if value.startswith(_FORMULA_START) else value
