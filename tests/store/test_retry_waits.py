"""While a campaign waits on retries, progress says so: how many, after what, and when the
next try is due ("4 waiting to retry after PassKit 503, next in 3 s")."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from daemon.cli.commands.status import render
from daemon.domain.retrying import RetryWait, retry_cause
from daemon.store.status import campaign_retry_waits, status_report
from tests.campaign_support import stage_campaign
from tests.factories import make_pass, make_program

ERROR_503 = 'PassKit write_message answered 503: {"code": 14, "message": "busy"}'


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (ERROR_503, "PassKit 503"),
        ("PassKit set_points answered 429: slow down", "PassKit 429"),
        ("PassKit write_message timed out", "a PassKit timeout"),
        ("PassKit write_message failed: ClientConnectorError: refused", "a connection failure"),
        (None, "a failed attempt"),
    ],
)
def test_the_cause_is_read_from_the_stored_error(error: str | None, cause: str) -> None:
    assert retry_cause(error) == cause


@pytest.mark.parametrize(
    ("wait", "text"),
    [
        (RetryWait(4, 0, 2.2, ERROR_503), "4 waiting to retry after PassKit 503, next in 3 s"),
        (RetryWait(1, 0, 0.0, ERROR_503), "1 waiting to retry after PassKit 503, retrying now"),
        (
            RetryWait(1_200, 1_200, 0.0, ERROR_503),
            "1,200 waiting to retry after PassKit being down, until it answers again",
        ),
    ],
)
def test_a_wait_reads_as_a_sentence(wait: RetryWait, text: str) -> None:
    assert wait.describe() == text


async def test_status_shows_a_running_campaigns_retries(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    program = await make_program(conn)
    passes = [await make_pass(conn, program) for _ in range(6)]
    campaign = await stage_campaign(
        conn, program_id=program, status="PROCESSING", recipient_count=6, sent_count=2
    )
    rows = [(p, "pending", ERROR_503, f"{3 + i} seconds") for i, p in enumerate(passes[:4])] + [
        (p, "pending", None, "0 seconds") for p in passes[4:]
    ]
    await conn.executemany(
        "INSERT INTO loyaltyd.campaign_deliveries (campaign_id, pass_id, state, error, "
        "available_at) VALUES ($1, $2, $3, $4, now() + $5::text::interval)",
        [(campaign, *row) for row in rows],
    )
    waits = await campaign_retry_waits(pool, [campaign, uuid.uuid4()])
    assert list(waits) == [campaign]
    assert waits[campaign].waiting == 4 and 2 < waits[campaign].next_in <= 3

    report = await status_report(pool, campaigns=5, dead=0)
    assert "4 waiting to retry after PassKit 503, next in 3 s" in render(report)
    assert report.to_dict()["campaigns"][0]["retrying"]["waiting"] == 4
