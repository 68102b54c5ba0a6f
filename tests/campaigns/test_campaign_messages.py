"""PASSKIT_CAMPAIGN_DELIVERY=messages: a campaign with the same text for everyone goes out as one
PassKit message sent to chunks of pass ids, with the per-recipient ledger, frequency cap,
cancel and crash recovery working as they do pass by pass. The fake's per-pass records of
Messages API sends are the truth."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from daemon.core.config import Settings
from daemon.testing.fakepasskit import (
    ROUTE_CREATE_MESSAGE,
    ROUTE_SEND_MESSAGE,
    FakePassKit,
    LatencyModel,
)
from tests.campaign_support import bulk_audience, campaign, campaign_rig, insert_campaign
from tests.factories import make_program
from tests.harness import (
    DaemonProcess,
    daemon_env,
    fake_passkit,
    messages_by_pass,
    settings_for,
    wait_until,
)

TEXT = "Double points all weekend!"


def _settings(make_settings: Callable[..., Settings], fake: FakePassKit, **extra: Any) -> Settings:
    values: dict[str, Any] = {"passkit_campaign_delivery": "messages", "passkit_message_chunk": 100}
    values.update(extra)
    return settings_for(make_settings, fake.url, **values)


async def _program(pool: asyncpg.Pool, members: int, **cols: Any) -> uuid.UUID:
    """A program with `members` messageable members (passkit ids pk-1…)."""
    program = await make_program(pool, **cols)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, members)
    return program


async def _deliveries(pool: asyncpg.Pool, campaign_id: uuid.UUID) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT state, count(*) AS n FROM loyaltyd.campaign_deliveries WHERE campaign_id = $1 "
        "GROUP BY state",
        campaign_id,
    )
    return {r["state"]: r["n"] for r in rows}


async def test_an_unpersonalised_campaign_goes_out_as_one_message_in_chunks(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    program = await _program(pool, 250, name="Joe's Pizza")
    async with fake_passkit() as fake:
        async with campaign_rig(pool, database_url, _settings(make_settings, fake)) as rig:
            campaign_id = await insert_campaign(pool, program_id=program, message_text=TEXT)
            row = await rig.finished(campaign_id)
        assert (row["status"], row["recipient_count"], row["sent_count"]) == ("COMPLETED", 250, 250)
        assert fake.bulk_recipients() == {f"pk-{n}": 1 for n in range(1, 251)}
        assert fake.count(ROUTE_CREATE_MESSAGE) == 1
        assert fake.count(ROUTE_SEND_MESSAGE) == 3, "250 recipients in chunks of 100"
        assert not messages_by_pass(fake), "no pass's message field was written"
        (message_id,) = {m for pk in ("pk-1", "pk-250") for m in fake.bulk_messages_for(pk)}
        held = fake.message(message_id)
        assert held is not None and (held.title, held.text) == ("Joe's Pizza", TEXT)
        assert not fake.ignored_fields and not fake.undocumented
    assert (
        await pool.fetchval(
            "SELECT passkit_message_id FROM loyaltyd.campaign_messages WHERE campaign_id = $1",
            campaign_id,
        )
        == message_id
    )
    assert await _deliveries(pool, campaign_id) == {"sent": 250}


async def test_a_personalised_campaign_still_goes_pass_by_pass(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    program = await _program(pool, 30)
    async with fake_passkit() as fake:
        async with campaign_rig(pool, database_url, _settings(make_settings, fake)) as rig:
            row = await rig.finished(await insert_campaign(pool, program_id=program))
        assert (row["status"], row["sent_count"]) == ("COMPLETED", 30)
        assert fake.count(ROUTE_CREATE_MESSAGE) == 0
        assert set(messages_by_pass(fake).values()) == {1} and len(messages_by_pass(fake)) == 30


async def test_the_frequency_cap_holds_for_campaigns_sent_as_messages(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    program = await _program(pool, 40, max_pushes_per_pass_per_day=1)
    async with fake_passkit() as fake:
        async with campaign_rig(pool, database_url, _settings(make_settings, fake)) as rig:
            first_id = await insert_campaign(pool, program_id=program, message_text=TEXT)
            first = await rig.finished(first_id)
            second_id = await insert_campaign(pool, program_id=program, message_text="Again!")
            second = await rig.finished(second_id)
        assert (first["sent_count"], second["sent_count"], second["skipped_count"]) == (40, 0, 40)
        assert set(fake.bulk_recipients().values()) == {1}
        assert fake.count(ROUTE_CREATE_MESSAGE) == 1, "a campaign with nobody to send creates none"


async def test_a_chunk_passkit_reached_only_in_part_is_failed_not_retried(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    program = await _program(pool, 20)
    async with fake_passkit() as fake:
        fake.force_status("pk-7", 404, "pass not found")
        settings = _settings(make_settings, fake, passkit_message_chunk=10)
        async with campaign_rig(pool, database_url, settings) as rig:
            campaign_id = await insert_campaign(pool, program_id=program, message_text=TEXT)
            row = await rig.finished(campaign_id)
        assert (row["sent_count"], row["failed_count"]) == (10, 10)
        assert sum(fake.bulk_recipients().values()) == 19, "9 of the failed chunk got it once"
        assert max(fake.bulk_recipients().values()) == 1
    errors = await pool.fetch(
        "SELECT DISTINCT error FROM loyaltyd.campaign_deliveries WHERE state = 'failed'"
    )
    assert [e["error"] for e in errors] == [
        "PassKit's Messages API reached 9 of the 10 passes of this chunk and does not say "
        "which; not retried, so nobody gets it twice"
    ]


async def test_cancelling_a_campaign_sent_as_messages_stops_it(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    program = await _program(pool, 300)
    async with fake_passkit(latency=LatencyModel(median_ms=300)) as fake:
        settings = _settings(make_settings, fake, passkit_message_chunk=10, loyaltyd_worker_slots=2)
        async with campaign_rig(pool, database_url, settings) as rig:
            campaign_id = await insert_campaign(pool, program_id=program, message_text=TEXT)
            await wait_until(lambda: fake.count(ROUTE_SEND_MESSAGE) >= 1, timeout=10)
            await pool.execute(
                "UPDATE push_campaigns SET status = 'CANCELLED' WHERE id = $1", campaign_id
            )
            row = await rig.finished(campaign_id)
        reached = fake.bulk_recipients()
    assert row["status"] == "CANCELLED"
    assert 0 < len(reached) < 300 and set(reached.values()) == {1}
    assert row["sent_count"] == len(reached)
    assert row["sent_count"] + row["skipped_count"] == 300


@pytest.mark.slow
async def test_kill_9_mid_campaign_then_restart_reaches_everyone(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    recipients = 5_000
    program = await _program(pool, recipients)
    env_extra = {"PASSKIT_CAMPAIGN_DELIVERY": "messages", "PASSKIT_MESSAGE_CHUNK": "50"}
    async with fake_passkit(latency=LatencyModel(median_ms=100)) as fake:
        env = {**daemon_env(fake.url), **env_extra}
        first = DaemonProcess(database_url, env, tmp_path / "first.log")
        try:
            await asyncio.sleep(2)  # listening
            campaign_id = await insert_campaign(pool, program_id=program, message_text=TEXT)
            await wait_until(lambda: sum(fake.bulk_recipients().values()) >= 1_000, timeout=30)
            first.kill9()
        finally:
            first.stop_now()
        row = await campaign(pool, campaign_id)
        assert row["finished_at"] is None, "the kill should come mid-campaign"
        second = DaemonProcess(database_url, env, tmp_path / "second.log")
        try:
            await wait_until(lambda: _finished(pool, campaign_id), timeout=60)
            second.terminate()
            assert await second.wait(15) == 0
        finally:
            second.stop_now()
        reached = fake.bulk_recipients()
        creates = fake.count(ROUTE_CREATE_MESSAGE)
    assert set(reached) == {f"pk-{n}" for n in range(1, recipients + 1)}
    twice = [pk for pk, n in reached.items() if n > 1]
    # Only the chunks in flight when the daemon died (4 chunks of 50) can have gone twice.
    assert max(reached.values()) <= 2 and len(twice) <= 4 * 50, len(twice)
    assert creates == 1, "the restarted daemon sends the message already created"
    row = await campaign(pool, campaign_id)
    assert (row["status"], row["sent_count"], row["failed_count"]) == ("COMPLETED", recipients, 0)


async def _finished(pool: asyncpg.Pool, campaign_id: uuid.UUID) -> bool:
    row = await campaign(pool, campaign_id)
    return bool(row["status"] == "COMPLETED")
