"""One contract, one suite: every queue's `Store` (daemon.engine.worker.Store) passes the same
tests, against its real table. A store claims only due rows, and a row held by a live daemon
by no one else; only the holder records an outcome; extending a lease keeps the row; a row
given back is claimable at once; a dead daemon's rows are taken over at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from daemon.campaigns.bulk import ChunkStore
from daemon.engine.outcomes import RetryLater, Succeeded
from daemon.engine.worker import Store
from daemon.store.campaigns import CampaignStore
from daemon.store.deliveries import DeliveryStore, MessageDeliveryStore
from daemon.store.passes import PassSyncStore
from daemon.store.wallet import WalletEventStore
from tests.campaign_support import insert_campaign, stage_campaign, write_as_daemon
from tests.factories import make_pass, make_program

LEASE = 30.0
Key = Any


@dataclass(frozen=True)
class Queue:
    name: str
    store: Callable[[asyncpg.Pool, float], Store[Any]]
    due: Callable[[asyncpg.Pool], Awaitable[Key]]  # one row due now
    later: Callable[[asyncpg.Pool], Awaitable[Key]]  # one row not due yet
    holder: Callable[[asyncpg.Pool, Key], Awaitable[uuid.UUID | None]]
    key: Callable[[Any], Key]  # a claimed job's row

    def __str__(self) -> str:
        return self.name


# --- pass syncs ---------------------------------------------------------------------------------


async def _sync_due(pool: asyncpg.Pool) -> Key:
    pass_id = await make_pass(pool, await make_program(pool), points=1)
    await pool.execute("SELECT process_membership_transaction($1, 1, 'EARN', NULL, NULL)", pass_id)
    return pass_id


async def _sync_later(pool: asyncpg.Pool) -> Key:
    pass_id = await _sync_due(pool)
    await pool.execute(
        "UPDATE loyaltyd.pass_syncs SET available_at = now() + interval '1 hour' "
        "WHERE pass_id = $1",
        pass_id,
    )
    return pass_id


async def _sync_holder(pool: asyncpg.Pool, key: Key) -> uuid.UUID | None:
    owner: uuid.UUID | None = await pool.fetchval(
        "SELECT lease_owner FROM loyaltyd.pass_syncs WHERE pass_id = $1", key
    )
    return owner


# --- campaign recipients ---------------------------------------------------------------------


async def _delivery(pool: asyncpg.Pool, *, later: bool, by_messages: bool) -> Key:
    program = await make_program(pool)
    pass_id = await make_pass(pool, program)
    campaign = await stage_campaign(
        pool, program_id=program, status="PROCESSING", started_at=None, recipient_count=1
    )
    await write_as_daemon(
        pool, "UPDATE push_campaigns SET started_at = now() WHERE id = $1", campaign
    )
    if by_messages:
        await pool.execute(
            "INSERT INTO loyaltyd.campaign_messages (campaign_id) VALUES ($1)", campaign
        )
    await pool.execute(
        "INSERT INTO loyaltyd.campaign_deliveries (campaign_id, pass_id, available_at) "
        "VALUES ($1, $2, now() + CASE WHEN $3 THEN interval '1 hour' ELSE interval '0' END)",
        campaign,
        pass_id,
        later,
    )
    return (campaign, pass_id)


async def _delivery_holder(pool: asyncpg.Pool, key: Key) -> uuid.UUID | None:
    owner: uuid.UUID | None = await pool.fetchval(
        "SELECT lease_owner FROM loyaltyd.campaign_deliveries "
        "WHERE campaign_id = $1 AND pass_id = $2",
        *key,
    )
    return owner


# --- campaigns to plan -----------------------------------------------------------------------


async def _campaign_due(pool: asyncpg.Pool) -> Key:
    return await insert_campaign(pool, program_id=await make_program(pool))


async def _campaign_later(pool: asyncpg.Pool) -> Key:
    return await insert_campaign(
        pool,
        program_id=await make_program(pool),
        scheduled_at=await pool.fetchval("SELECT now() + interval '1 hour'"),
    )


async def _campaign_holder(pool: asyncpg.Pool, key: Key) -> uuid.UUID | None:
    owner: uuid.UUID | None = await pool.fetchval(
        "SELECT lease_owner FROM push_campaigns WHERE id = $1", key
    )
    return owner


# --- webhook re-reads ------------------------------------------------------------------------


async def _event(pool: asyncpg.Pool, *, later: bool) -> Key:
    key: int = await pool.fetchval(
        "INSERT INTO loyaltyd.wallet_events (passkit_id, protocol, event, available_at) "
        "VALUES ($1, 'MEMBERSHIP', 'PASS_EVENT_INSTALLED', "
        "        now() + CASE WHEN $2 THEN interval '1 hour' ELSE interval '0' END) RETURNING id",
        "pk-" + uuid.uuid4().hex[:12],
        later,
    )
    return key


async def _event_holder(pool: asyncpg.Pool, key: Key) -> uuid.UUID | None:
    owner: uuid.UUID | None = await pool.fetchval(
        "SELECT lease_owner FROM loyaltyd.wallet_events WHERE id = $1", key
    )
    return owner


QUEUES = [
    Queue(
        "sync",
        lambda pool, lease: PassSyncStore(pool, lease_seconds=lease),
        _sync_due,
        _sync_later,
        _sync_holder,
        lambda job: job.pass_id,
    ),
    Queue(
        "campaign",
        lambda pool, lease: DeliveryStore(pool, lease_seconds=lease),
        lambda pool: _delivery(pool, later=False, by_messages=False),
        lambda pool: _delivery(pool, later=True, by_messages=False),
        _delivery_holder,
        lambda job: (job.campaign_id, job.pass_id),
    ),
    Queue(
        "campaign_messages",
        lambda pool, lease: ChunkStore(MessageDeliveryStore(pool, lease_seconds=lease), 10),
        lambda pool: _delivery(pool, later=False, by_messages=True),
        lambda pool: _delivery(pool, later=True, by_messages=True),
        _delivery_holder,
        lambda chunk: (chunk.campaign_id, chunk.deliveries[0].pass_id),
    ),
    Queue(
        "planner",
        lambda pool, lease: CampaignStore(
            pool, lease_seconds=lease, max_member_ids=100, max_zip_codes=100
        ),
        _campaign_due,
        _campaign_later,
        _campaign_holder,
        lambda job: job.id,
    ),
    Queue(
        "wallet_events",
        lambda pool, lease: WalletEventStore(pool, lease_seconds=lease),
        lambda pool: _event(pool, later=False),
        lambda pool: _event(pool, later=True),
        _event_holder,
        lambda job: job.id,
    ),
]

every_queue = pytest.mark.parametrize("queue", QUEUES, ids=str)


async def _claimed(store: Store[Any], owner: uuid.UUID, queue: Queue) -> list[Key]:
    return [queue.key(job) for job in await store.claim(owner, 10)]


async def _dead(pool: asyncpg.Pool, owner: uuid.UUID) -> None:
    """`owner`'s heartbeat stopped a minute ago."""
    await pool.execute(
        "INSERT INTO loyaltyd.instances (id, host, pid, heartbeat_at, ready_at) "
        "VALUES ($1, 'gone', 1, now() - interval '1 minute', now() - interval '1 hour')",
        owner,
    )


async def _alive(pool: asyncpg.Pool, owner: uuid.UUID) -> None:
    await pool.execute(
        "INSERT INTO loyaltyd.instances (id, host, pid, ready_at) VALUES ($1, 'here', 1, now())",
        owner,
    )


@every_queue
async def test_only_due_rows_are_claimed(queue: Queue, pool: asyncpg.Pool) -> None:
    due, _later = await queue.due(pool), await queue.later(pool)
    owner = uuid.uuid4()
    assert await _claimed(queue.store(pool, LEASE), owner, queue) == [due]
    assert await queue.holder(pool, due) == owner


@every_queue
async def test_a_row_held_by_a_live_daemon_is_nobody_elses(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    due = await queue.due(pool)
    first, second = uuid.uuid4(), uuid.uuid4()
    await _alive(pool, first)
    store = queue.store(pool, LEASE)
    assert await _claimed(store, first, queue) == [due]
    assert await _claimed(store, second, queue) == []
    assert await queue.holder(pool, due) == first


@every_queue
async def test_only_the_holder_records(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.due(pool)
    holder, stranger = uuid.uuid4(), uuid.uuid4()
    store = queue.store(pool, LEASE)
    jobs = await store.claim(holder, 10)
    assert len(jobs) == 1
    await store.record(stranger, [(jobs[0], Succeeded())])
    assert await queue.holder(pool, queue.key(jobs[0])) == holder, "a stranger has no say"
    await store.record(holder, [(jobs[0], Succeeded())])
    assert await queue.holder(pool, queue.key(jobs[0])) is None
    assert await _claimed(store, stranger, queue) == [], "done work is not claimed again"


@every_queue
async def test_an_extended_lease_outlives_its_first_length(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    due = await queue.due(pool)
    holder, other = uuid.uuid4(), uuid.uuid4()
    short = queue.store(pool, 1.0)
    jobs = await short.claim(holder, 10)
    await queue.store(pool, LEASE).extend(holder, jobs)
    await asyncio.sleep(1.3)
    assert await _claimed(queue.store(pool, LEASE), other, queue) == []
    assert await queue.holder(pool, due) == holder


@every_queue
async def test_a_lease_that_ran_out_is_taken_over(queue: Queue, pool: asyncpg.Pool) -> None:
    """A daemon that never wrote a heartbeat loses its rows when their leases run out."""
    due = await queue.due(pool)
    holder, other = uuid.uuid4(), uuid.uuid4()
    await _claimed(queue.store(pool, 1.0), holder, queue)
    await asyncio.sleep(1.3)
    assert await _claimed(queue.store(pool, LEASE), other, queue) == [due]


@every_queue
async def test_a_row_given_back_is_claimable_at_once(queue: Queue, pool: asyncpg.Pool) -> None:
    due = await queue.due(pool)
    holder, other = uuid.uuid4(), uuid.uuid4()
    await _alive(pool, holder)
    store = queue.store(pool, LEASE)
    jobs = await store.claim(holder, 10)
    await store.release(holder, jobs)
    assert await _claimed(store, other, queue) == [due]


@every_queue
async def test_a_dead_daemons_rows_are_taken_over_at_once(queue: Queue, pool: asyncpg.Pool) -> None:
    due = await queue.due(pool)
    dead, alive = uuid.uuid4(), uuid.uuid4()
    store = queue.store(pool, LEASE)
    assert await _claimed(store, dead, queue) == [due]
    await _dead(pool, dead)
    assert await _claimed(store, alive, queue) == [due], "no wait for the lease to run out"
    assert await queue.holder(pool, due) == alive


@pytest.mark.parametrize("queue", [q for q in QUEUES if q.name != "campaign_messages"], ids=str)
async def test_each_retry_counts_an_attempt_so_back_off_grows(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    """Every queue counts the tries of a row since its last outcome (the retry decision backs
    off from it); an outcome starts the count again."""
    await queue.due(pool)
    owner = uuid.uuid4()
    store = queue.store(pool, LEASE)
    seen = []
    for _ in range(3):
        jobs = await store.claim(owner, 10)
        assert len(jobs) == 1
        seen.append(jobs[0].attempts)
        await store.record(owner, [(jobs[0], RetryLater(0.0, "PassKit answered 503"))])
    assert seen == [1, 2, 3]
