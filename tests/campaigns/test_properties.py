"""Property tests (hypothesis): random bytes and random rows never escape the CSV reader or the
campaign validator as anything but a readable CampaignInputError, never hang, and never leave
a campaign unsettled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.campaigns.csv_audience import parse_member_csv
from daemon.campaigns.rules import SEGMENTS, CampaignPlan, validate_campaign
from daemon.core.config import Settings
from daemon.core.errors import CampaignInputError
from tests.campaign_support import plan

# Cells made of what breaks CSV readers: quotes, separators, every line end, NUL, non-ASCII.
_CELL = st.text(alphabet=st.sampled_from(list("ab1 \"',;\t|\r\n\x00é€")), max_size=12)
_CSV_TEXT = st.lists(st.lists(_CELL, max_size=5), max_size=8).map(
    lambda rows: "\n".join(",".join(r) for r in rows)
)
_CSV_BYTES = st.one_of(
    st.binary(max_size=400),
    _CSV_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
    _CSV_TEXT.map(lambda t: ("member_id\n" + t).encode()),
    _CSV_TEXT.map(lambda t: ("\ufeffMember ID;x\r" + t).encode()),
)


@settings(max_examples=400, deadline=2000)
@given(_CSV_BYTES)
def test_the_csv_reader_returns_ids_or_a_readable_refusal(data: bytes) -> None:
    try:
        ids = parse_member_csv(data)
    except CampaignInputError as exc:
        assert str(exc)
        return
    assert ids and all(isinstance(i, str) and i == i.strip() and i for i in ids)
    assert len(set(ids)) == len(ids)


_ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.text(max_size=30),
    st.lists(st.text(max_size=10), max_size=5),
    st.floats(allow_nan=True),
)
_FIELDS = st.fixed_dictionaries(
    {
        "message_text": st.one_of(_ANYTHING, st.text(max_size=600)),
        "segment": st.one_of(st.sampled_from(SEGMENTS), _ANYTHING),
        "min_tier_points": _ANYTHING,
        "min_points": _ANYTHING,
        "inactive_days": _ANYTHING,
        "zip_codes": _ANYTHING,
        "member_ids": _ANYTHING,
        "csv_upload_url": st.one_of(_ANYTHING, st.just("https://files.example.com/a.csv")),
    }
)


@settings(max_examples=600, deadline=2000)
@given(_FIELDS)
def test_the_campaign_validator_returns_a_plan_or_a_readable_refusal(
    fields: dict[str, Any],
) -> None:
    try:
        plan = validate_campaign(fields, ["files.example.com"])
    except CampaignInputError as exc:
        assert str(exc)
        return
    assert isinstance(plan, CampaignPlan)
    assert plan.audience.segment in SEGMENTS


# Rows as a form could write them (the table's rules may refuse some: that is fine too).
_ROWS = st.fixed_dictionaries(
    {
        "message_text": st.text(max_size=80),
        "segment": st.one_of(st.sampled_from(SEGMENTS), st.text(max_size=8)),
        "min_points": st.one_of(st.none(), st.integers(-5, 2**31 - 1)),
        "inactive_days": st.one_of(st.none(), st.integers(-5, 5000)),
        "zip_codes": st.one_of(st.none(), st.lists(st.text(max_size=25), max_size=3)),
        "member_ids": st.one_of(st.none(), st.lists(st.text(max_size=12), max_size=3)),
        "csv_upload_url": st.one_of(st.none(), st.text(max_size=20)),
    }
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(_ROWS, min_size=1, max_size=3))
def test_random_rows_never_leave_a_campaign_unsettled(
    rows: list[dict[str, Any]], database_url: str, make_settings: Callable[..., Settings]
) -> None:
    """After one planning pass each row the database took is PROCESSING (sending), or
    FAILED with an error: never PENDING with nothing said."""
    asyncio.run(_plan_rows(rows, database_url, make_settings()))


async def _plan_rows(rows: list[dict[str, Any]], dsn: str, config: Settings) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    assert pool is not None
    try:
        program = await pool.fetchval("INSERT INTO programs (name) VALUES ('p') RETURNING id")
        taken = []
        for row in rows:
            try:
                taken.append(
                    await pool.fetchval(
                        "INSERT INTO push_campaigns (program_id, name, message_text, segment, "
                        "min_points, inactive_days, zip_codes, member_ids, csv_upload_url) "
                        "VALUES ($1, 'x', $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                        program,
                        *row.values(),
                    )
                )
            except (asyncpg.CheckViolationError, asyncpg.CharacterNotInRepertoireError):
                pass  # refused by a named rule: the form shows it
            except asyncpg.DataError:
                pass
        await plan(pool, config)
        for campaign_id in taken:
            status, error = await pool.fetchrow(
                "SELECT status, error FROM push_campaigns WHERE id = $1", campaign_id
            )
            assert status in ("PROCESSING", "COMPLETED") or (status == "FAILED" and error), (
                status,
                error,
            )
    finally:
        await pool.execute("TRUNCATE push_campaigns, programs CASCADE")
        await pool.close()


async def test_a_campaign_over_the_member_id_limit_fails_with_a_message(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> None:
    """The documented bound (MAX_MEMBER_IDS): an over-long list is FAILED from its count,
    without the planner reading the ids."""
    from daemon.campaigns.rules import MAX_MEMBER_IDS

    program = await pool.fetchval("INSERT INTO programs (name) VALUES ('p') RETURNING id")
    campaign_id = await pool.fetchval(
        "INSERT INTO push_campaigns (program_id, name, message_text, segment, member_ids) "
        "SELECT $1, 'huge', 'hi', 'CSV', array_agg('M-' || n) "
        "FROM generate_series(1, $2) n RETURNING id",
        program,
        MAX_MEMBER_IDS + 1,
    )
    await plan(pool, make_settings())
    status, error = await pool.fetchrow(
        "SELECT status, error FROM push_campaigns WHERE id = $1", campaign_id
    )
    assert status == "FAILED"
    assert f"lists {MAX_MEMBER_IDS + 1:,} member ids; the limit is {MAX_MEMBER_IDS:,}" in error
