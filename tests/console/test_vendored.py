"""The vendored static files are the npm files VERSIONS.md names, byte for byte.

A hand edit, a file swapped without its row, or a row without its file fails here; the commands
to fetch a file again are in VERSIONS.md.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

VENDOR = Path(__file__).resolve().parents[2] / "daemon" / "console" / "static" / "vendor"
VERSIONS = VENDOR / "VERSIONS.md"
FILES_HEADER = "| file | package | version | path in the npm tarball | sha256 | licence |"


@dataclass(frozen=True)
class Row:
    file: str
    package: str
    version: str
    tarball_path: str
    sha256: str
    licence: str


def _cells(line: str) -> list[str]:
    return [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]


def vendored_rows() -> list[Row]:
    """The rows of VERSIONS.md's file table (the one under FILES_HEADER)."""
    lines = VERSIONS.read_text(encoding="utf-8").splitlines()
    start = lines.index(FILES_HEADER) + 2  # past the header and its |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(Row(*_cells(line)))
    return rows


ROWS = vendored_rows()


def test_the_table_lists_htmx_with_its_licence() -> None:
    assert {row.file for row in ROWS} == {"htmx.min.js", "htmx.LICENSE.txt"}


def test_every_file_in_the_folder_has_a_row() -> None:
    on_disk = {path.name for path in VENDOR.iterdir()} - {"VERSIONS.md"}
    assert on_disk == {row.file for row in ROWS}


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.file)
def test_the_file_matches_its_recorded_sha256(row: Row) -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", row.sha256), f"not a sha256: {row.sha256!r}"
    digest = hashlib.sha256((VENDOR / row.file).read_bytes()).hexdigest()
    assert digest == row.sha256, f"{row.file} differs from {row.package}@{row.version}"


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.file)
def test_the_row_names_a_version_a_tarball_path_and_a_licence(row: Row) -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", row.version)
    assert row.tarball_path.startswith("package/")
    assert row.licence


@pytest.mark.parametrize("package", sorted({row.package for row in ROWS}))
def test_each_package_ships_a_non_empty_licence_file(package: str) -> None:
    licences = [row.file for row in ROWS if row.package == package and row.file.endswith(".txt")]
    assert len(licences) == 1, f"{package} has no licence row"
    text = (VENDOR / licences[0]).read_text(encoding="utf-8")
    assert "Permission to use, copy, modify, and/or distribute this software" in text


def test_htmx_is_a_2_0_release_and_its_row_says_which() -> None:
    (row,) = (row for row in ROWS if row.file == "htmx.min.js")
    assert row.version.startswith("2.0.")
    source = (VENDOR / row.file).read_text(encoding="utf-8")
    assert f'version:"{row.version}"' in source


def test_the_csp_configuration_keys_exist_in_the_vendored_htmx() -> None:
    """VERSIONS.md tells each page to set these keys in its htmx-config meta tag."""
    source = (VENDOR / "htmx.min.js").read_text(encoding="utf-8")
    assert 'meta[name="htmx-config"]' in source
    for key in ("allowEval", "includeIndicatorStyles", "allowScriptTags"):
        assert f"{key}:true" in source, f"{key} is not an htmx {key} default any more"
    notes = VERSIONS.read_text(encoding="utf-8")
    assert (
        """content='{"allowEval":false,"includeIndicatorStyles":false,"allowScriptTags":false}'"""
        in notes
    )
