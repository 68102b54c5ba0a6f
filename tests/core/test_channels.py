"""NOTIFY channels are named once (daemon.core.channels): every channel the SQL rings or a
queue listens on is one of them, and each queue's released rows ring that queue's own
doorbell."""

from __future__ import annotations

import asyncio
import re
import uuid

import asyncpg

from daemon.core.channels import Channel
from daemon.store.deliveries import Delivery, DeliveryStore, MessageDeliveryStore
from tests.campaign_support import stage_campaign
from tests.conftest import REPO
from tests.factories import make_pass, make_program

_RUNG = re.compile(r"(?:pg_notify\(\s*'([a-z_]+)'|\bNOTIFY\s+([a-z_]+)\s*[;,])", re.IGNORECASE)


def test_every_channel_the_sql_rings_is_a_known_one() -> None:
    sql = [*(REPO / "sql").glob("[0-9]*.sql"), *(REPO / "daemon/store/queries").glob("*.sql")]
    rung = {a or b for path in sql for a, b in _RUNG.findall(path.read_text())}
    assert rung - {c.value for c in Channel} == set(), "a channel named outside Channel"
    assert {c.value for c in Channel} - rung == set(), "a channel nothing rings"


async def _released_rings(
    pool: asyncpg.Pool, dsn: str, store: DeliveryStore, listened: Channel, by_messages: bool
) -> bool:
    program = await make_program(pool)
    pass_id = await make_pass(pool, program)
    campaign = await stage_campaign(pool, program_id=program, status="PROCESSING")
    if by_messages:
        await pool.execute(
            "INSERT INTO loyaltyd.campaign_messages (campaign_id) VALUES ($1)", campaign
        )
    owner = uuid.uuid4()
    await pool.execute(
        "INSERT INTO loyaltyd.campaign_deliveries (campaign_id, pass_id, state, lease_owner) "
        "VALUES ($1, $2, 'claimed', $3)",
        campaign,
        pass_id,
        owner,
    )
    heard = asyncio.Event()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.add_listener(listened, lambda *_: heard.set())
        job = Delivery(
            campaign, pass_id, 1, 0.0, False, "MEMBERSHIP", "pk", "Hi", None, None, 0, None
        )
        await store.release(owner, [job])
        try:
            await asyncio.wait_for(heard.wait(), 2)
        except TimeoutError:
            return False
        return True
    finally:
        await conn.close()


async def test_released_messages_api_rows_ring_their_own_doorbell(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """Given back at shutdown, recipients sent through the Messages API wake the daemons that
    send them, not the pass-by-pass queue (which would leave them a poll interval)."""
    store = MessageDeliveryStore(pool, lease_seconds=30)
    assert await _released_rings(
        pool, database_url, store, Channel.CAMPAIGN_MESSAGES, by_messages=True
    )


async def test_released_deliveries_ring_the_deliveries_doorbell(
    pool: asyncpg.Pool, database_url: str
) -> None:
    store = DeliveryStore(pool, lease_seconds=30)
    assert await _released_rings(pool, database_url, store, Channel.DELIVERIES, by_messages=False)
