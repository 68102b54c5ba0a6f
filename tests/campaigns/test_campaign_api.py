"""What the HTTP API calls: create_campaign (the daemon's checks, up front) and
campaign_status (the push_campaign_progress view, JSON-ready)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from daemon.campaigns.api import campaign_status, create_campaign
from daemon.core.config import Settings
from daemon.core.errors import CampaignInputError, LoyaltydError
from tests.campaign_support import campaign, plan, stage_campaign
from tests.factories import make_pass, make_program


async def test_create_campaign_inserts_a_pending_campaign_the_planner_sends(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    await make_pass(pool, program, points=900)
    await make_pass(pool, program, points=100)
    campaign_id = await create_campaign(
        pool,
        program_id=str(program),
        message="Big spender: {points}",
        segment="whale",
        name="Whales",
        min_points=800,
    )
    row = await campaign(pool, campaign_id)
    assert (row["status"], row["segment"], row["min_points"], row["name"]) == (
        "PENDING",
        "WHALE",
        800,
        "Whales",
    )
    await plan(pool, make_settings())
    assert (await campaign(pool, campaign_id))["recipient_count"] == 1


async def test_create_campaign_can_draft_and_schedule(pool: asyncpg.Pool) -> None:
    program = await make_program(pool)
    when = datetime.now(UTC) + timedelta(days=1)
    draft = await create_campaign(
        pool, program_id=program, message="Soon", draft=True, scheduled_at=when
    )
    row = await campaign(pool, draft)
    assert (row["status"], row["scheduled_at"]) == ("DRAFT", when)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"program_id": "nope"}, "program id 'nope' is not a UUID"),
        (
            {"program_id": uuid.UUID(int=1)},
            "program 00000000-0000-0000-0000-000000000001 does not exist",
        ),
        ({"message": ""}, "the message is empty"),
        ({"message": "y" * 501}, "501 characters long"),
        ({"message": "Hi {nick}"}, "unknown placeholder {nick}"),
        ({"segment": "GOLD"}, "unknown segment 'GOLD'"),
        ({"segment": "LOCAL"}, "needs at least one zip code"),
        ({"segment": "VIP", "min_tier_points": -3}, "min_tier_points must be a whole number"),
        ({"segment": "CSV", "csv_upload_url": "http://x.example.com/a.csv"}, "https"),
        (
            {
                "segment": "CSV",
                "csv_upload_url": "https://x.example.com/a.csv",
                "allowed_hosts": ["files.example.com"],
            },
            "host 'x.example.com' is not allowed",
        ),
        ({"zip_code": ["1"]}, "unknown campaign field zip_code"),
    ],
)
async def test_create_campaign_refuses_bad_input_with_a_message_for_a_400(
    pool: asyncpg.Pool, kwargs: dict[str, Any], error: str
) -> None:
    values: dict[str, Any] = {"program_id": await make_program(pool), "message": "Hello"}
    values.update(kwargs)
    with pytest.raises(CampaignInputError) as refused:
        await create_campaign(pool, **values)
    assert error in str(refused.value)
    assert isinstance(refused.value, LoyaltydError)
    assert await pool.fetchval("SELECT count(*) FROM push_campaigns") == 0


async def test_create_campaign_leaves_the_host_check_to_the_daemon_when_not_told(
    pool: asyncpg.Pool,
) -> None:
    program = await make_program(pool)
    campaign_id = await create_campaign(
        pool,
        program_id=program,
        message="Hi",
        segment="CSV",
        csv_upload_url="https://x.example.com/a.csv",
    )
    assert (await campaign(pool, campaign_id))["csv_upload_url"] == "https://x.example.com/a.csv"


async def test_campaign_status_is_the_progress_row_as_json_values(pool: asyncpg.Pool) -> None:
    program = await make_program(pool)
    started = datetime.now(UTC) - timedelta(minutes=1)
    campaign_id = await stage_campaign(
        pool,
        program_id=program,
        status="PROCESSING",
        recipient_count=200,
        sent_count=50,
        failed_count=10,
        skipped_count=40,
        started_at=started,
    )
    status = await campaign_status(pool, campaign_id)
    assert status is not None
    assert status["id"] == str(campaign_id) and status["program_id"] == str(program)
    assert (status["status"], status["progress_percent"], status["remaining_count"]) == (
        "PROCESSING",
        50.0,
        100,
    )
    assert (status["sent_count"], status["failed_count"], status["skipped_count"]) == (50, 10, 40)
    assert status["started_at"] == started.isoformat()
    assert await campaign_status(pool, uuid.uuid4()) is None
    assert await campaign_status(pool, "not-a-uuid") is None


@pytest.mark.parametrize(
    ("cols", "percent"),
    [
        ({"status": "PENDING"}, 0.0),
        ({"status": "PROCESSING", "recipient_count": 3, "sent_count": 1}, 33.3),
        ({"status": "COMPLETED", "recipient_count": 0}, 100.0),
        (
            {"status": "CANCELLED", "recipient_count": 10, "sent_count": 2, "skipped_count": 8},
            100.0,
        ),
        ({"status": "PENDING", "recipient_count": None, "sent_count": None}, 0.0),
    ],
)
async def test_progress_percent_for_softr(
    pool: asyncpg.Pool, cols: dict[str, Any], percent: float
) -> None:
    campaign_id = await stage_campaign(pool, program_id=await make_program(pool), **cols)
    value = await pool.fetchval(
        "SELECT progress_percent FROM push_campaign_progress WHERE id = $1", campaign_id
    )
    assert float(value) == percent
