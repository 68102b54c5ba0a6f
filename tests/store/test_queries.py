"""Every named statement in daemon/store/queries parses and plans against the schema the
migrations build: a typo in a rarely taken path fails here, not in production."""

from __future__ import annotations

import re

import asyncpg
import pytest

from daemon.store.queries import bind, compile_statement, q, queries, statements

# Statements that are several commands (run, not prepared); the first creates the staging
# table the sweep's statements read.
_SCRIPTS = ("wallet_sweep_staging", "wallet_sweep_staging_ready", "wallet_sweep_staging_drop")
# Statements on Supabase's own objects (auth.uid(), admin_profiles): tests/console/
# test_console_supabase.py runs them on a Supabase-like database.
_SUPABASE = {"console_supabase_programs"}


async def test_every_statement_parses_and_plans(conn: asyncpg.Connection) -> None:
    await conn.execute(q("wallet_sweep_staging"))  # the sweep's temp table, on this session
    failed = {}
    for name in sorted(set(queries()) - set(_SCRIPTS) - _SUPABASE):
        try:
            await conn.prepare(q(name))
        except asyncpg.PostgresError as exc:
            failed[name] = str(exc)
    assert failed == {}
    for name in _SCRIPTS:
        await conn.execute(q(name))


# Past this many parameters a statement names them: no argument is matched to `$9` by a comment.
MOST_POSITIONAL = 6


def test_long_statements_name_their_parameters() -> None:
    long = {}
    for name, statement in statements().items():
        if statement.names:
            continue
        places = {int(p) for p in re.findall(r"\$(\d+)", statement.sql)}
        if places and max(places) > MOST_POSITIONAL:
            long[name] = max(places)
    assert long == {}


def test_named_parameters_become_places_in_order_of_first_use() -> None:
    statement = compile_statement(
        "-- a comment naming $nothing\n"
        "SELECT $b::int, $a, $b -- and $this\n"
        "  FROM t WHERE x = $a AND y = 'a' || $c::text"
    )
    assert statement.names == ("b", "a", "c")
    assert "$nothing" not in statement.sql and "$this" not in statement.sql
    assert "SELECT $1::int, $2, $1" in statement.sql
    assert statement.sql.endswith("x = $2 AND y = 'a' || $3::text")


def test_a_statement_mixing_names_and_places_is_refused() -> None:
    with pytest.raises(ValueError, match="mixes"):
        compile_statement("SELECT $a, $1", "mixed")


def test_bind_orders_keywords_and_names_what_is_missing_or_unknown() -> None:
    audience = {
        "zip_codes": [],
        "inactive_days": 30,
        "min_points": 500,
        "min_tier_points": 1000,
        "segment": "ALL",
        "program_id": "p",
    }
    sql, args = bind("count_audience", member_ids=[], **audience)
    assert args == ["p", "ALL", 1000, 500, 30, [], []]
    assert "push_campaign_audience($1, $2, $3, $4," in sql
    with pytest.raises(TypeError, match="missing member_ids; unknown member_id"):
        bind("count_audience", member_id=[], **audience)
    with pytest.raises(TypeError, match="positional"):
        bind("claim_pass_syncs", owner="x")
