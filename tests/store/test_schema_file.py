"""docs/schema.sql is what the migrations build: dumped from a copy of this run's template
database (migrated from sql/) the same way `make schema` dumps its own, it is the checked-in
file line for line."""

from __future__ import annotations

import difflib

import pytest

from daemon.store.schema import SCHEMA_FILE, OtherPostgres, parse, render

# Enough of a diff to see what changed; the fix is the same however long it is.
_DIFF_LINES = 60


async def test_the_schema_file_is_what_the_migrations_build(database_url: str) -> None:
    try:
        built = await render(database_url)
    except OtherPostgres as exc:
        pytest.skip(str(exc))
    checked_in = SCHEMA_FILE.read_text(encoding="utf-8") if SCHEMA_FILE.exists() else ""
    if built != checked_in:
        diff = difflib.unified_diff(
            checked_in.splitlines(),
            built.splitlines(),
            "docs/schema.sql",
            "what the migrations build",
            lineterm="",
        )
        shown = "\n".join(list(diff)[:_DIFF_LINES])
        pytest.fail(
            f"docs/schema.sql is not what the migrations build: run `make schema`\n{shown}",
            pytrace=False,
        )


def test_what_changes_between_dumps_is_left_out() -> None:
    """The versions and pg_dump's random \\restrict key go; the major versions are kept."""
    raw = (
        "--\n-- PostgreSQL database dump\n--\n\n"
        "\\restrict AbC123\n\n"
        "-- Dumped from database version 18.6 (Debian 18.6-1)\n"
        "-- Dumped by pg_dump version 18.7\n\n"
        "SET statement_timeout = 0;\n\nCREATE TABLE public.t (id integer);\n\n\n"
        "--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict AbC123\n\n"
    )
    dump = parse(raw)
    assert (dump.server_major, dump.pg_dump_major) == (18, 18)
    assert dump.body == "SET statement_timeout = 0;\n\nCREATE TABLE public.t (id integer);\n"
