"""Databases migrated as an earlier release left them, to test an upgrade."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import REPO


def migrations_before(version: str, into: Path) -> Path:
    """A copy of sql/ holding only the migrations before `version` ("075"), in `into`."""
    into.mkdir()
    for path in sorted((REPO / "sql").glob("[0-9][0-9][0-9]_*.sql")):
        if path.name < version:
            shutil.copy(path, into / path.name)
    return into
