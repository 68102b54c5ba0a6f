"""Named SQL statements, loaded once from the `.sql` files beside this module.

Each statement opens with `-- name: <name>` and a line saying what `$1…$n` mean. One file per
flow (sync, campaigns, birthdays, …) keeps each flow's SQL together; the names share one
namespace, and a duplicate name is an error.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable

QUERY_DIR: Traversable = files(__name__)
_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse_queries(text: str, source: str = "<string>") -> dict[str, str]:
    found: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        name = match.group(1)
        if name in found:
            raise ValueError(f"query {name!r} defined twice in {source}")
        found[name] = body
    return found


@cache
def queries(query_dir: Traversable = QUERY_DIR) -> dict[str, str]:
    merged: dict[str, str] = {}
    sql_files = (f for f in query_dir.iterdir() if f.name.endswith(".sql"))
    for path in sorted(sql_files, key=lambda f: f.name):
        for name, body in parse_queries(path.read_text(encoding="utf-8"), path.name).items():
            if name in merged:
                raise ValueError(f"query {name!r} defined in two files ({path.name})")
            merged[name] = body
    return merged


def q(name: str) -> str:
    """The statement called `name`; KeyError names the missing query."""
    try:
        return queries()[name]
    except KeyError:
        raise KeyError(f"no SQL query named {name!r} in {QUERY_DIR}") from None
