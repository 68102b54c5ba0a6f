"""A dead daemon's rows are taken over as soon as its heartbeat is stale, not when its leases
run out; a live daemon's are not; a daemon that lost its heartbeat fences itself."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import asyncpg
import pytest
from pydantic import ValidationError

from daemon.core.config import Settings
from daemon.engine.outcomes import Succeeded
from daemon.store.instances import Heartbeat
from daemon.store.passes import PassSyncStore
from tests.factories import make_pass, make_program

EARN = "SELECT process_membership_transaction($1, $2, 'EARN', NULL, NULL)"


async def _beat(pool: asyncpg.Pool, owner: uuid.UUID, seconds_ago: float) -> None:
    await pool.execute(
        "INSERT INTO loyaltyd.instances (id, host, pid, heartbeat_at)"
        " VALUES ($1, 'h', 1, now() - make_interval(secs => $2))"
        " ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        owner,
        seconds_ago,
    )


async def test_a_stale_heartbeat_frees_its_rows_at_once_a_fresh_one_does_not(
    pool: asyncpg.Pool,
) -> None:
    program = await make_program(pool)
    for n in range(3):
        await pool.execute(EARN, await make_pass(pool, program), n + 1)
    store = PassSyncStore(pool, lease_seconds=600, stale_seconds=5)
    dead, alive, survivor = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await _beat(pool, alive, 1)
    held_by_alive = await store.claim(alive, 1)
    await _beat(pool, dead, 1)
    held_by_dead = await store.claim(dead, 2)
    assert (len(held_by_alive), len(held_by_dead)) == (1, 2)
    assert await store.claim(survivor, 10) == [], "both heartbeats are fresh"

    await _beat(pool, dead, 6)  # it stopped beating 6 s ago; its 600 s leases still run
    taken = await store.claim(survivor, 10)
    assert {j.pass_id for j in taken} == {j.pass_id for j in held_by_dead}
    assert all(j.lease_expired for j in taken)
    await store.record(dead, [(j, Succeeded()) for j in held_by_dead])  # the dead have no say
    owners = await pool.fetch("SELECT DISTINCT lease_owner FROM loyaltyd.pass_syncs")
    assert {r["lease_owner"] for r in owners} == {alive, survivor}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_the_heartbeat_fences_before_the_others_may_declare_it_dead(
    pool: asyncpg.Pool,
) -> None:
    clock = Clock()
    owner = uuid.uuid4()
    heartbeat = Heartbeat(pool, owner, interval=1, stale=5, clock=clock)
    assert heartbeat.fenced(), "no call before the first heartbeat"
    await heartbeat.beat()
    assert not heartbeat.fenced()
    clock.now += 3.0  # stale - 2 x interval: still allowed
    assert not heartbeat.fenced()
    clock.now += 0.1
    assert heartbeat.fenced(), "3.1 s without a heartbeat: stop before 5 s make it dead"
    await heartbeat.beat()
    assert not heartbeat.fenced()
    age = await pool.fetchval(
        "SELECT extract(epoch FROM now() - heartbeat_at) FROM loyaltyd.instances WHERE id = $1",
        owner,
    )
    assert float(age) < 1


async def test_a_clean_stop_leaves_the_instances_table(pool: asyncpg.Pool) -> None:
    owner = uuid.uuid4()
    heartbeat = Heartbeat(pool, owner, interval=0.1, stale=1)
    stopping = asyncio.Event()
    running = asyncio.create_task(heartbeat.run(stopping))
    for _ in range(100):
        if await pool.fetchval("SELECT count(*) FROM loyaltyd.instances WHERE id = $1", owner):
            break
        await asyncio.sleep(0.02)
    stopping.set()
    await asyncio.wait_for(running, 5)
    assert await pool.fetchval("SELECT count(*) FROM loyaltyd.instances") == 0


def test_the_stale_threshold_must_span_several_heartbeats(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(ValidationError, match="at least 3 x LOYALTYD_HEARTBEAT_SECONDS"):
        make_settings(loyaltyd_heartbeat_seconds=2, loyaltyd_stale_seconds=5)
    assert make_settings(loyaltyd_heartbeat_seconds=1, loyaltyd_stale_seconds=3)
