"""A campaign changes nothing at PassKit but each pass's message field: members sitting in a
tier PassKit moved them to (none stored locally) stay there, and their other fields stay, in
both metaData modes against a PassKit that merges and one that replaces a partial map."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import pytest

from daemon.core.config import Settings
from tests.campaign_support import bulk_audience, campaign_rig, insert_campaign
from tests.factories import make_program
from tests.harness import fake_passkit, settings_for


@pytest.mark.parametrize(
    ("mode", "merging"),
    [("read_modify_write", True), ("read_modify_write", False), ("merge", True)],
    ids=["rmw-passkit-merges", "rmw-passkit-replaces", "merge-passkit-merges"],
)
async def test_a_campaign_moves_no_member_to_another_tier(
    pool: asyncpg.Pool,
    database_url: str,
    make_settings: Callable[..., Settings],
    mode: str,
    merging: bool,
) -> None:
    program = await make_program(pool, passkit_program_id="prog", passkit_tier_id="base")
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, 20)
    async with fake_passkit(merge_metadata=merging) as fake:
        for n in range(1, 21):
            fake.add_pass(f"pk-{n}", class_id="prog", tier_id="gold", metadata={"card": "blue"})
        settings = settings_for(make_settings, fake.url, passkit_metadata_mode=mode)
        async with campaign_rig(pool, database_url, settings) as rig:
            row = await rig.finished(await insert_campaign(pool, program_id=program))
        assert (row["status"], row["sent_count"]) == ("COMPLETED", 20)
        assert {fake.tier_of(f"pk-{n}") for n in range(1, 21)} == {"gold"}
        assert {fake.metadata_of(f"pk-{n}")["card"] for n in range(1, 21)} == {"blue"}
        assert not fake.ignored_fields
