"""Helpers of the campaign tests: campaign rows, a bulk audience, and the campaign machinery
(listener, planner, delivery worker) running in this event loop against a FakePassKit."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from daemon.app import claim_sizes, worker_config
from daemon.campaigns.bulk import MESSAGES_CHANNEL, ChunkStore, MessageChunkHandler
from daemon.campaigns.csv_audience import CsvFetcher
from daemon.campaigns.delivery import DeliveryHandler
from daemon.campaigns.planner import CHANNEL as CAMPAIGNS_CHANNEL
from daemon.campaigns.planner import CampaignPlanner, planner_store
from daemon.core.channels import Channel
from daemon.core.config import Settings
from daemon.core.metrics import Metrics
from daemon.engine.worker import Worker
from daemon.passkit.client import PassKitClient
from daemon.passkit.suffix import visible_text
from daemon.store.campaign_plans import CampaignPlans
from daemon.store.campaigns import CampaignJob
from daemon.store.deliveries import CHANNEL as DELIVERIES_CHANNEL
from daemon.store.deliveries import DeliveryStore, MessageDeliveryStore
from daemon.store.listener import Listener
from daemon.testing.fakepasskit import FakePassKit
from tests.harness import wait_until


async def insert_campaign(db: asyncpg.Connection | asyncpg.Pool, **cols: Any) -> uuid.UUID:
    """A push_campaigns row as Softr would write it (PENDING, ALL, unless told otherwise)."""
    values: dict[str, Any] = {"name": "Test blast", "message_text": "Hello {first_name|friend}!"}
    values.update(cols)
    names = ", ".join(values)
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    campaign_id: uuid.UUID = await db.fetchval(
        f"INSERT INTO push_campaigns ({names}) VALUES ({params}) RETURNING id", *values.values()
    )
    return campaign_id


async def stage_campaign(db: asyncpg.Connection | asyncpg.Pool, **cols: Any) -> uuid.UUID:
    """A push_campaigns row as the daemon would have left it (its status, counters and
    results as given): a campaign staged mid-flight or finished."""
    values: dict[str, Any] = {"name": "Test blast", "message_text": "Hello {first_name|friend}!"}
    values.update(cols)
    names = ", ".join(values)
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    campaign_id: uuid.UUID = await write_as_daemon(
        db, f"INSERT INTO push_campaigns ({names}) VALUES ({params}) RETURNING id", *values.values()
    )
    return campaign_id


async def write_as_daemon(db: asyncpg.Connection | asyncpg.Pool, sql: str, *args: Any) -> Any:
    """Run `sql` (its first value back) in a transaction marked as the daemon's, as the
    daemon's own statements are (sql/058): push_campaigns' rules let it write loyaltyd's
    columns. For tests that stage a campaign mid-flight."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await write_as_daemon(conn, sql, *args)
    async with db.transaction():
        await db.execute("SELECT loyaltyd.writing_as_daemon()")
        return await db.fetchval(sql, *args)


async def insert_slipped_in(conn: asyncpg.Connection, rule: str, **cols: Any) -> uuid.UUID:
    """A row breaking `rule`, as if it predated the (NOT VALID) rule: the daemon must still
    fail it cleanly."""
    definition = await conn.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'push_campaigns'::regclass AND conname = $1",
        rule,
    )
    assert definition is not None, rule
    await conn.execute(f"ALTER TABLE push_campaigns DROP CONSTRAINT {rule}")
    campaign_id = await insert_campaign(conn, **cols)
    await conn.execute(f"ALTER TABLE push_campaigns ADD CONSTRAINT {rule} {definition} NOT VALID")
    return campaign_id


async def bulk_audience(
    conn: asyncpg.Connection, program_id: uuid.UUID, count: int, *, prefix: str = "pk"
) -> None:
    """`count` messageable members of the program, set-based; passkit ids `{prefix}-{n}`,
    member ids `M-{prefix}-{n}`, first names `Member{n}`."""
    await conn.execute(
        """
        WITH u AS (
            INSERT INTO users (email, first_name)
            SELECT $3 || '-' || n || '@example.com', 'Member' || n
              FROM generate_series(1, $2) n
            RETURNING id, first_name
        ),
        p AS (
            INSERT INTO passes_master (program_id, user_id, passkit_internal_id, external_id,
                                       status)
            SELECT $1, u.id, $3 || '-' || substr(u.first_name, 7),
                   'M-' || $3 || '-' || substr(u.first_name, 7), 'INSTALLED'
              FROM u
            RETURNING id
        )
        INSERT INTO protocol_membership (pass_id, points_balance) SELECT id, 42 FROM p
        """,
        program_id,
        count,
        prefix,
    )


async def campaign(db: asyncpg.Connection | asyncpg.Pool, campaign_id: uuid.UUID) -> asyncpg.Record:
    row: asyncpg.Record = await db.fetchrow(
        "SELECT * FROM push_campaigns WHERE id = $1", campaign_id
    )
    return row


async def status_of(db: asyncpg.Connection | asyncpg.Pool, campaign_id: uuid.UUID) -> str:
    status: str = await db.fetchval("SELECT status FROM push_campaigns WHERE id = $1", campaign_id)
    return status


def texts_sent(fake: FakePassKit, passkit_id: str) -> list[str]:
    return [visible_text(m) for m in fake.messages_for(passkit_id)]


def planner_worker(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    csv_fetcher: CsvFetcher | None = None,
    doorbell: asyncio.Event | None = None,
    mock_mode: bool = True,
) -> Worker[CampaignJob]:
    """The campaign planner on the engine, as the composition root wires it."""
    owner = uuid.uuid4()
    store = planner_store(pool, settings, metrics)
    planner = CampaignPlanner(
        CampaignPlans(pool),
        settings,
        owner=owner,
        mock_mode=mock_mode,
        metrics=metrics,
        csv_fetcher=csv_fetcher,
    )
    return Worker(
        store,
        planner,
        dataclasses.replace(
            worker_config(settings), slots=claim_sizes(settings, None)["planner"].slots
        ),
        owner=owner,
        doorbell=doorbell or asyncio.Event(),
        metrics=metrics,
    )


async def plan(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    csv_fetcher: CsvFetcher | None = None,
) -> int:
    """Everything the planner can do now, done (claims until none is left); how many jobs."""
    worker = planner_worker(pool, settings, metrics=metrics, csv_fetcher=csv_fetcher)
    total = 0
    for _ in range(50):
        done = await worker.work_once()
        total += done
        if not done:
            return total
    raise AssertionError("the planner still had work after 50 claims")


@dataclass
class Rig:
    pool: asyncpg.Pool
    settings: Settings
    planner: Worker[CampaignJob]
    queue: DeliveryStore
    workers: list[Worker[Any]]
    listener: Listener
    doorbells: dict[Channel, asyncio.Event] = field(default_factory=dict)

    async def finished(self, campaign_id: uuid.UUID, timeout: float = 20) -> asyncpg.Record:
        async def done() -> bool:
            row = await campaign(self.pool, campaign_id)
            return row["status"] == "FAILED" or row["finished_at"] is not None

        await wait_until(done, timeout=timeout)
        return await campaign(self.pool, campaign_id)

    async def drafted(self, campaign_id: uuid.UUID, timeout: float = 10) -> asyncpg.Record:
        async def counted() -> bool:
            row = await campaign(self.pool, campaign_id)
            return row["audience_counted_at"] is not None or row["status"] == "FAILED"

        await wait_until(counted, timeout=timeout)
        return await campaign(self.pool, campaign_id)


@asynccontextmanager
async def campaign_rig(
    pool: asyncpg.Pool,
    dsn: str,
    settings: Settings,
    *,
    csv_fetcher: CsvFetcher | None = None,
) -> AsyncIterator[Rig]:
    """Listener, planner and delivery worker(s) of one daemon, as the composition root wires
    them, stopped gracefully on exit."""
    stopping = asyncio.Event()
    doorbells = {
        CAMPAIGNS_CHANNEL: asyncio.Event(),
        DELIVERIES_CHANNEL: asyncio.Event(),
        MESSAGES_CHANNEL: asyncio.Event(),
    }
    listener = Listener(dsn, doorbells, probe_interval=0.5)
    async with PassKitClient(settings) as client:
        planner = planner_worker(
            pool,
            settings,
            csv_fetcher=csv_fetcher,
            doorbell=doorbells[CAMPAIGNS_CHANNEL],
            mock_mode=client.mock_mode,
        )
        queue = DeliveryStore(pool, lease_seconds=settings.loyaltyd_lease_seconds)
        messages = MessageDeliveryStore(pool, lease_seconds=settings.loyaltyd_lease_seconds)
        owner = uuid.uuid4()
        crew: list[Worker[Any]] = [
            Worker(
                queue,
                DeliveryHandler(client),
                worker_config(settings),
                owner=owner,
                doorbell=doorbells[DELIVERIES_CHANNEL],
            ),
            Worker(
                ChunkStore(messages, settings.passkit_message_chunk),
                MessageChunkHandler(client, messages),
                worker_config(settings),
                owner=owner,
                doorbell=doorbells[MESSAGES_CHANNEL],
            ),
        ]
        tasks = [
            asyncio.create_task(listener.run(stopping)),
            asyncio.create_task(planner.run(stopping, 5.0)),
            *(asyncio.create_task(w.run(stopping, 5.0)) for w in crew),
        ]

        async def listening() -> bool:
            return listener.alive

        try:
            await wait_until(listening, timeout=10)
            yield Rig(pool, settings, planner, queue, crew, listener, doorbells)
        finally:
            stopping.set()
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
