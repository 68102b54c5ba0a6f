"""Named SQL statements, loaded once from the `.sql` files beside this module.

Each statement opens with `-- name: <name>` and says what its parameters mean. A short one
takes positional parameters (`$1…$n`); a longer one names them (`$program_id`), and is called
with keywords: `sql, args = bind("insert_campaign", program_id=…, …)`, so no argument is
matched to its place by a comment. One file per flow (sync, campaigns, birthdays, …) keeps each
flow's SQL together; the names share one namespace, and a duplicate name is an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable

QUERY_DIR: Traversable = files(__name__)
_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
# `$name`, not `$1` and not a dollar quote (`$$`, `$tag$`).
_NAMED = re.compile(r"(?<![\w$])\$([a-z_][a-z0-9_]*)\b(?!\$)")
_POSITIONAL = re.compile(r"(?<![\w$])\$\d+")
# A comment: from `--` at the start of a line or after a blank, to the end of the line.
_COMMENT = re.compile(r"(^|\s)--.*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement as Postgres gets it (`$1…$n`), and, where it names its parameters,
    their names in that order."""

    sql: str
    names: tuple[str, ...] = ()

    def args(self, name: str, values: Mapping[str, object]) -> list[object]:
        missing = [n for n in self.names if n not in values]
        unknown = sorted(set(values) - set(self.names))
        if not self.names or missing or unknown:
            raise TypeError(
                f"query {name!r} takes {', '.join(self.names) or 'positional parameters'}"
                f"{'; missing ' + ', '.join(missing) if missing else ''}"
                f"{'; unknown ' + ', '.join(unknown) if unknown else ''}"
            )
        return [values[n] for n in self.names]


def compile_statement(body: str, name: str = "<string>") -> Statement:
    """`body` as Postgres takes it: named parameters (outside comments) become `$1…$n` in
    order of first use; a statement without any is left as written."""
    code = _COMMENT.sub(r"\1", body)
    names = list(dict.fromkeys(_NAMED.findall(code)))
    if not names:
        return Statement(body)
    if _POSITIONAL.search(code):
        raise ValueError(f"query {name!r} mixes named and positional parameters")
    place = {n: i for i, n in enumerate(names, start=1)}
    sql = _NAMED.sub(lambda m: f"${place[m.group(1)]}", code)
    return Statement(sql, tuple(names))


def parse_queries(text: str, source: str = "<string>") -> dict[str, Statement]:
    found: dict[str, Statement] = {}
    matches = list(_HEADER.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        name = match.group(1)
        if name in found:
            raise ValueError(f"query {name!r} defined twice in {source}")
        found[name] = compile_statement(body, name)
    return found


@cache
def statements(query_dir: Traversable = QUERY_DIR) -> dict[str, Statement]:
    merged: dict[str, Statement] = {}
    sql_files = (f for f in query_dir.iterdir() if f.name.endswith(".sql"))
    for path in sorted(sql_files, key=lambda f: f.name):
        for name, statement in parse_queries(path.read_text(encoding="utf-8"), path.name).items():
            if name in merged:
                raise ValueError(f"query {name!r} defined in two files ({path.name})")
            merged[name] = statement
    return merged


def queries() -> dict[str, str]:
    """Every statement's SQL as Postgres gets it, by name."""
    return {name: s.sql for name, s in statements().items()}


def _statement(name: str) -> Statement:
    try:
        return statements()[name]
    except KeyError:
        raise KeyError(f"no SQL query named {name!r} in {QUERY_DIR}") from None


def q(name: str) -> str:
    """The statement called `name`; KeyError names the missing query."""
    return _statement(name).sql


def bind(query: str, /, **values: object) -> tuple[str, list[object]]:
    """The statement called `query` and its arguments in order, from keywords: a missing or
    unknown name is a TypeError before anything reaches Postgres."""
    statement = _statement(query)
    return statement.sql, statement.args(query, values)
