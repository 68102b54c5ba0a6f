"""Pass sync: transaction row → trigger → NOTIFY → claim → PassKit, against real Postgres and
the fake PassKit, with the daemon running in-process."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from daemon.cli.commands.status import render
from daemon.core.config import Settings
from daemon.passkit.suffix import visible_text
from daemon.store.status import status_report
from daemon.testing.fakepasskit import ROUTE_REDEEM_COUPON, ROUTE_SET_POINTS, Faults, LatencyModel
from tests.factories import make_pass, make_program
from tests.harness import fake_passkit, running_daemon, settings_for, wait_until

EARN = "SELECT process_membership_transaction($1, $2, $3, $4, NULL)"


async def _settled(pool: asyncpg.Pool) -> bool:
    """No sync owed or in flight."""
    busy = await pool.fetchval(
        "SELECT count(*) FROM loyaltyd.pass_syncs WHERE state IN ('pending', 'claimed')"
    )
    return bool(busy == 0)


async def _one_pass(pool: asyncpg.Pool, **cols: Any) -> tuple[uuid.UUID, str]:
    """A pass of a new program, and its PassKit id."""
    pass_id = await make_pass(pool, await make_program(pool), **cols)
    return pass_id, await _passkit_id(pool, pass_id)


async def _passkit_id(pool: asyncpg.Pool, pass_id: uuid.UUID) -> str:
    value: str = await pool.fetchval(
        "SELECT passkit_internal_id FROM passes_master WHERE id = $1", pass_id
    )
    return value


async def test_thousand_transactions_on_hundred_passes_end_with_newest_balances(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    rng = random.Random(7)
    program = await make_program(pool)
    members = [await make_pass(pool, program, points=1000) for _ in range(80)]
    coupons = [await make_pass(pool, program, protocol="COUPON") for _ in range(20)]
    async with fake_passkit(latency=LatencyModel(median_ms=5, p99_ms=30)) as fake:
        async with running_daemon(settings_for(make_settings, fake.url), database_url):
            sem = asyncio.Semaphore(20)

            async def one(i: int) -> None:
                async with sem:
                    if i % 10 == 0:
                        await pool.execute(
                            "INSERT INTO transactions (pass_id, kind) VALUES ($1, 'REDEEM')",
                            coupons[i // 10 % 20],
                        )
                    else:
                        await pool.execute(
                            EARN, rng.choice(members), rng.randint(-20, 50), "ADJUST", None
                        )

            await asyncio.gather(*(one(i) for i in range(1000)))
            await wait_until(lambda: _settled(pool), timeout=60)
        balances = dict(
            await pool.fetch(
                "SELECT p.passkit_internal_id, m.points_balance FROM protocol_membership m "
                "JOIN passes_master p ON p.id = m.pass_id"
            )
        )
        assert len(balances) == 80
        assert {pk: fake.points_of(pk) for pk in balances} == balances
        for coupon in coupons:
            pk = await _passkit_id(pool, coupon)
            ok = [
                r
                for r in fake.requests
                if r.route == ROUTE_REDEEM_COUPON and r.pass_id == pk and r.status == 200
            ]
            assert fake.redeemed(pk) and len(ok) == 1


async def test_transaction_message_is_written_to_the_message_field(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    pass_id, pk = await _one_pass(pool, points=10)
    async with fake_passkit() as fake:
        async with running_daemon(settings_for(make_settings, fake.url), database_url):
            await pool.execute(EARN, pass_id, 5, "EARN", "Thanks! +5 points")
            await wait_until(lambda: _settled(pool))
    assert fake.points_of(pk) == 15
    assert [visible_text(m) for m in fake.messages_for(pk)] == ["Thanks! +5 points"]
    routes = [r.route for r in fake.requests if r.pass_id == pk]
    assert routes[0] == ROUTE_SET_POINTS  # balance first, then the alert


async def test_change_during_a_call_is_synced_again_with_the_newest_balance(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    pass_id, pk = await _one_pass(pool, points=0)
    async with fake_passkit(latency=LatencyModel(median_ms=300)) as fake:
        async with running_daemon(settings_for(make_settings, fake.url), database_url):
            await pool.execute(EARN, pass_id, 10, "EARN", None)
            await wait_until(lambda: fake.count(ROUTE_SET_POINTS) == 1)
            await pool.execute(EARN, pass_id, 7, "EARN", None)  # lands while the call is out
            await wait_until(lambda: _settled(pool))
    assert [r.body["points"] for r in fake.requests if r.route == ROUTE_SET_POINTS] == [10, 17]
    assert fake.points_of(pk) == 17


async def test_zero_balance_is_set_with_the_reset_flag(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    pass_id, pk = await _one_pass(pool, points=40)
    async with fake_passkit() as fake:
        fake.add_pass(pk, points=40)
        async with running_daemon(settings_for(make_settings, fake.url), database_url):
            await pool.execute(EARN, pass_id, -40, "BURN", None)
            await wait_until(lambda: _settled(pool))
    body = next(r.body for r in fake.requests if r.route == ROUTE_SET_POINTS)
    assert body.get("resetPoints") is True
    assert fake.points_of(pk) == 0


async def test_ticket_check_in_validates_the_ticket(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    ticket, pk = await _one_pass(pool, protocol="EVENT_TICKET")
    async with fake_passkit() as fake:
        async with running_daemon(settings_for(make_settings, fake.url), database_url):
            await pool.execute(
                "INSERT INTO transactions (pass_id, kind) VALUES ($1, 'CHECK_IN')", ticket
            )
            await wait_until(lambda: _settled(pool))
    assert fake.validations_of(pk) == 1


async def test_passkit_404_ends_dead_once_and_is_not_retried(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    pass_id, pk = await _one_pass(pool, points=0)
    async with fake_passkit() as fake:
        fake.force_status(pk, 404, "member not found")
        async with running_daemon(settings_for(make_settings, fake.url), database_url):
            await pool.execute(EARN, pass_id, 3, "EARN", None)
            await wait_until(lambda: _settled(pool))
            await asyncio.sleep(1.5)  # more than a poll interval: nothing picks it up again
        row = await pool.fetchrow("SELECT state, last_error FROM loyaltyd.pass_syncs")
        assert row is not None and row["state"] == "dead"
        assert "404" in row["last_error"] or "not found" in row["last_error"]
        assert fake.count(ROUTE_SET_POINTS) == 1


async def test_thirty_percent_503_still_syncs_everything(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    passes = [await make_pass(pool, program, points=0) for _ in range(60)]
    async with fake_passkit(faults=Faults(p503=0.3), seed=3) as fake:
        settings = settings_for(make_settings, fake.url, loyaltyd_retry_base_seconds=0.2)
        async with running_daemon(settings, database_url):
            for i, pass_id in enumerate(passes):
                await pool.execute(EARN, pass_id, i + 1, "EARN", None)
            await wait_until(lambda: _settled(pool), timeout=60)
        assert (
            await pool.fetchval("SELECT count(*) FROM loyaltyd.pass_syncs WHERE state = 'dead'")
            == 0
        )
        for i, pass_id in enumerate(passes):
            assert fake.points_of(await _passkit_id(pool, pass_id)) == i + 1
        assert any(r.status == 503 for r in fake.requests)


async def test_pass_without_passkit_id_owes_passkit_nothing_its_sync_is_skipped(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    pass_id = await make_pass(pool, program, passkit_internal_id=None)
    async with fake_passkit() as fake:
        async with running_daemon(settings_for(make_settings, fake.url), database_url):
            await pool.execute(EARN, pass_id, 3, "EARN", "Thanks")
            await wait_until(lambda: _settled(pool))
        assert fake.count() == 0
    row = await pool.fetchrow("SELECT state, last_error FROM loyaltyd.pass_syncs")
    assert row["state"] == "idle", "skipped, not dead: there is nothing to requeue"
    assert "passkit_internal_id" in row["last_error"]
    balance = "SELECT points_balance FROM protocol_membership WHERE pass_id = $1"
    assert await pool.fetchval(balance, pass_id) == 3


async def test_killed_listener_connection_is_replaced_and_nothing_is_missed(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    pass_id, pk = await _one_pass(pool, points=0)
    async with fake_passkit() as fake:
        settings = settings_for(make_settings, fake.url, loyaltyd_poll_interval_seconds=2.0)
        async with running_daemon(settings, database_url) as daemon:
            assert daemon.listener is not None
            assert await pool.fetchval(
                "SELECT pg_terminate_backend($1)", daemon.listener.backend_pid
            ), "the listener's connection was not there to kill"
            await pool.execute(EARN, pass_id, 9, "EARN", None)  # notified while deaf
            await wait_until(lambda: fake.points_of(pk) == 9, timeout=4)
            await wait_until(
                lambda: daemon.listener is not None and daemon.listener.connects == 2,
                timeout=5,
            )


async def test_killed_pool_connections_do_not_lose_work(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    pass_id, pk = await _one_pass(pool, points=0)
    async with fake_passkit() as fake:
        settings = settings_for(make_settings, fake.url, loyaltyd_poll_interval_seconds=2.0)
        async with running_daemon(settings, database_url):
            killed = await pool.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'loyaltyd' AND datname = current_database()"
            )
            assert killed >= 1, "no pool connection of the daemon was killed"
            await pool.execute(EARN, pass_id, 4, "EARN", None)
            await wait_until(lambda: fake.points_of(pk) == 4, timeout=4)


async def test_requeue_dead_command_makes_dead_syncs_due_again(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    """`loyaltyd requeue-dead` after the cause is fixed: the pass syncs."""
    import subprocess
    import sys

    from tests.harness import REPO

    pass_id, pk = await _one_pass(pool, points=0)
    async with fake_passkit() as fake:
        fake.force_status(pk, 403, "no permission")
        async with running_daemon(settings_for(make_settings, fake.url), database_url):
            await pool.execute(EARN, pass_id, 8, "EARN", None)
            await wait_until(lambda: _settled(pool))
            assert await pool.fetchval("SELECT state FROM loyaltyd.pass_syncs") == "dead"
            fake.clear_forced(pk)
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "daemon", "requeue-dead"],
                cwd=REPO,
                env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            assert "requeued 1 dead" in done.stdout
            await wait_until(lambda: fake.points_of(pk) == 8, timeout=5)
    assert await pool.fetchval("SELECT state FROM loyaltyd.pass_syncs") == "idle"


async def test_an_expired_coupon_is_a_dead_sync_with_passkits_message_in_status(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    """Only a coupon PassKit holds as REDEEMED counts as redeemed; an expired one is a failure
    the admin can read, in last_error and in `loyaltyd status`."""
    coupon, pk = await _one_pass(pool, protocol="COUPON")
    async with fake_passkit() as fake:
        fake.add_pass(pk, protocol="COUPON", expired=True)
        async with running_daemon(settings_for(make_settings, fake.url), database_url):
            await pool.execute(
                "INSERT INTO transactions (pass_id, kind) VALUES ($1, 'REDEEM')", coupon
            )
            await wait_until(lambda: _settled(pool))
    assert not fake.redeemed(pk)
    row = await pool.fetchrow(
        "SELECT state, last_error FROM loyaltyd.pass_syncs WHERE pass_id = $1", coupon
    )
    assert row["state"] == "dead"
    assert "PassKit redeem_coupon answered 400" in row["last_error"]
    assert "coupon has expired" in row["last_error"]
    report = await status_report(pool, campaigns=5, dead=5)
    assert "coupon has expired" in render(report)
