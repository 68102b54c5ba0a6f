"""Bad campaign input (SPEC §3.2): the database refuses what it can; whatever reaches the
daemon anyway ends FAILED with a readable error, nothing is sent, other campaigns go on."""

from __future__ import annotations

import ast
import uuid
from collections.abc import Callable
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from daemon.campaigns import rules
from daemon.core.config import Settings
from daemon.domain.campaigns import CampaignFields
from tests.campaign_support import (
    bulk_audience,
    campaign,
    campaign_rig,
    insert_campaign,
    insert_slipped_in,
    plan,
    write_as_daemon,
)
from tests.factories import make_program
from tests.harness import fake_passkit, messages_by_pass, settings_for

ALLOWED = "files.example.com"

# (case, rule that refuses it first or None, columns, words of the error)
BAD_INPUT: list[tuple[str, str | None, dict[str, Any], str]] = [
    (
        "unknown program",
        None,
        {"program_id": uuid.UUID(int=7)},
        "program 00000000-0000-0000-0000-000000000007 does not exist",
    ),
    (
        "unknown segment",
        "push_campaigns_segment_is_known",
        {"segment": "GOLD"},
        "unknown segment 'GOLD'; use one of ALL, VIP, WHALE, SLUMBER, LOCAL, CSV",
    ),
    (
        "no text",
        "push_campaigns_message_is_not_null",
        {"message_text": None},
        "the message is empty",
    ),
    (
        "blank text",
        "push_campaigns_message_1_to_500_chars",
        {"message_text": "   "},
        "the message is empty",
    ),
    (
        "over-long text",
        "push_campaigns_message_1_to_500_chars",
        {"message_text": "x" * 501},
        "the message is 501 characters long; the limit is 500",
    ),
    (
        "unknown placeholder",
        None,
        {"message_text": "Hi {nickname}!"},
        "unknown placeholder {nickname}",
    ),
    (
        "LOCAL without zip codes",
        "push_campaigns_local_segment_needs_zip_codes",
        {"segment": "LOCAL", "zip_codes": []},
        "the LOCAL segment needs at least one zip code in zip_codes",
    ),
    (
        "SLUMBER of 0 days",
        "push_campaigns_thresholds_not_negative",
        {"segment": "SLUMBER", "inactive_days": 0},
        "inactive_days must be a whole number from 1 to 3650 (got 0)",
    ),
    (
        "SLUMBER of 10 years and a day",
        "push_campaigns_inactive_days_up_to_3650",
        {"segment": "SLUMBER", "inactive_days": 3651},
        "from 1 to 3650 (got 3651)",
    ),
    (
        "VIP below zero",
        "push_campaigns_thresholds_not_negative",
        {"segment": "VIP", "min_tier_points": -1},
        "min_tier_points must be a whole number from 0 to 2147483647",
    ),
    (
        "CSV without ids",
        "push_campaigns_csv_segment_needs_member_ids_or_url",
        {"segment": "CSV"},
        "the CSV segment needs member ids",
    ),
    (
        "CSV with ids and a URL",
        None,
        {"segment": "CSV", "member_ids": ["M-1"], "csv_upload_url": f"https://{ALLOWED}/a.csv"},
        "takes member_ids or csv_upload_url, not both",
    ),
    (
        "CSV over http",
        "push_campaigns_csv_url_is_https",
        {"segment": "CSV", "csv_upload_url": f"http://{ALLOWED}/a.csv"},
        "csv_upload_url must be an https:// URL",
    ),
    (
        "CSV from a host not allowed",
        None,
        {"segment": "CSV", "csv_upload_url": "https://evil.example.org/a.csv"},
        "csv_upload_url host 'evil.example.org' is not allowed; allowed hosts: files.example.com",
    ),
]


@pytest.mark.parametrize(
    ("rule", "columns", "error"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
async def test_bad_campaign_ends_failed_nothing_sent_and_the_daemon_carries_on(
    pool: asyncpg.Pool,
    database_url: str,
    make_settings: Callable[..., Settings],
    rule: str | None,
    columns: dict[str, Any],
    error: str,
) -> None:
    bad_program, good_program = await make_program(pool), await make_program(pool)
    async with pool.acquire() as conn:
        await bulk_audience(conn, bad_program, 5, prefix="bad")
        await bulk_audience(conn, good_program, 5, prefix="good")
        cols = {"program_id": bad_program, **columns}
        if rule is None:
            bad = await insert_campaign(conn, **cols)
        else:
            bad = await insert_slipped_in(conn, rule, **cols)
    async with fake_passkit() as fake:
        settings = settings_for(make_settings, fake.url, loyaltyd_csv_allowed_hosts=ALLOWED)
        async with campaign_rig(pool, database_url, settings) as rig:
            failed = await rig.finished(bad)
            good = await rig.finished(await insert_campaign(pool, program_id=good_program))
    assert failed["status"] == "FAILED"
    assert error in failed["error"], failed["error"]
    assert failed["finished_at"] is not None and failed["started_at"] is None
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM loyaltyd.campaign_deliveries WHERE campaign_id = $1", bad
        )
        == 0
    )
    assert good["status"] == "COMPLETED"
    assert set(messages_by_pass(fake)) == {f"good-{n}" for n in range(1, 6)}


@pytest.mark.parametrize(
    ("rule", "columns"),
    [(case[1], case[2]) for case in BAD_INPUT if case[1] is not None],
    ids=[case[0] for case in BAD_INPUT if case[1] is not None],
)
@pytest.mark.parametrize("status", ["PENDING", "DRAFT"])
async def test_the_database_refuses_a_bad_campaign_first_naming_the_rule(
    conn: asyncpg.Connection, rule: str, columns: dict[str, Any], status: str
) -> None:
    program = await make_program(conn)
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await insert_campaign(conn, program_id=program, status=status, **columns)
    assert refused.value.constraint_name == rule


async def test_bad_draft_fails_too_and_a_fixed_one_is_counted(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, 3)
    draft = await insert_campaign(
        pool, program_id=program, status="DRAFT", message_text="{points} pts, {nickname}"
    )
    await plan(pool, make_settings())
    row = await campaign(pool, draft)
    assert (row["status"], row["audience_counted_at"]) == ("FAILED", None)
    assert "unknown placeholder {nickname}" in row["error"]
    await pool.execute(
        "UPDATE push_campaigns SET status = 'DRAFT', message_text = '{points} pts' WHERE id = $1",
        draft,
    )
    await plan(pool, make_settings())
    row = await campaign(pool, draft)
    assert (row["status"], row["error"], row["recipient_count"]) == ("DRAFT", None, 3)


async def test_a_started_campaign_keeps_its_message_and_is_never_sent_again(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, 3)
    campaign_id = await insert_campaign(pool, program_id=program)
    await plan(pool, make_settings())
    with pytest.raises(asyncpg.CheckViolationError) as edited:
        await pool.execute(
            "UPDATE push_campaigns SET message_text = 'changed' WHERE id = $1", campaign_id
        )
    assert edited.value.constraint_name == (
        "push_campaigns_started_campaigns_keep_message_and_audience"
    )
    await pool.execute("UPDATE push_campaigns SET status = 'CANCELLED' WHERE id = $1", campaign_id)
    # From a form, PENDING on a cancelled campaign is a stale write-back: ignored.
    await pool.execute("UPDATE push_campaigns SET status = 'PENDING' WHERE id = $1", campaign_id)
    assert (await campaign(pool, campaign_id))["status"] == "CANCELLED"
    # Not even the daemon's own statements may send it again.
    with pytest.raises(asyncpg.CheckViolationError) as resent:
        await write_as_daemon(
            pool, "UPDATE push_campaigns SET status = 'PENDING' WHERE id = $1", campaign_id
        )
    assert resent.value.constraint_name == "push_campaigns_started_campaigns_are_not_sent_again"


def _columns_read(source: str) -> set[str]:
    """String keys of `fields.get("…")` and of calls whose first argument is `fields`."""
    read: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func, args = node.func, node.args
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "get"
            and isinstance(func.value, ast.Name)
            and func.value.id == "fields"
        ):
            key = args[0]
        elif len(args) > 1 and isinstance(args[0], ast.Name) and args[0].id == "fields":
            key = args[1]
        else:
            continue
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            read.add(key.value)
    return read


def test_the_planner_gives_validation_every_column_it_reads() -> None:
    """Every column the rules read is a field of the typed row the store hands the planner
    (`CampaignFields`), so none is silently missing there."""
    read = _columns_read(Path(rules.__file__).read_text(encoding="utf-8"))
    assert {"message_text", "segment", "min_points", "csv_upload_url"} <= read  # the scan works
    assert read <= {f.name for f in dataclass_fields(CampaignFields)}
