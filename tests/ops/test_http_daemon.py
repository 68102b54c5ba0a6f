"""The HTTP server inside a running daemon (in-process, on a real port): readiness follows the
LISTEN connection, metrics follow the work, and the server goes away with the daemon."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import aiohttp
import asyncpg
import pytest
from structlog.testing import capture_logs

from daemon.app import run_daemon
from daemon.core.config import Settings
from daemon.core.dsn import database_of
from daemon.core.errors import ConfigError
from daemon.passkit.suffix import visible_text
from tests.factories import make_pass, make_program
from tests.harness import fake_passkit, running_daemon, settings_for, wait_until

KEY = "k-daemon-test-0123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as response:
        return response.status, await response.text()


@pytest.fixture
async def admin(pg_admin_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to another database: a database cannot refuse connections to itself."""
    conn = await asyncpg.connect(pg_admin_dsn)
    yield conn
    await conn.close()


async def test_readyz_goes_unready_when_the_listener_is_killed_and_ready_after_reconnect(
    admin: asyncpg.Connection, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    port = free_port()
    readyz = f"http://127.0.0.1:{port}/readyz"
    database = database_of(database_url)
    async with fake_passkit() as fake, aiohttp.ClientSession() as http:
        settings = settings_for(make_settings, fake.url, loyaltyd_http_port=port)
        async with running_daemon(settings, database_url) as daemon:
            assert daemon.listener is not None
            assert (await _get(http, readyz))[0] == 200
            killed = daemon.listener.backend_pid
            # While the database refuses new connections the listener cannot come back, so
            # the unready state lasts until the test lets it.
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            try:
                with capture_logs() as logs:
                    await admin.execute("SELECT pg_terminate_backend($1)", killed)

                    async def unready() -> bool:
                        status, body = await _get(http, readyz)
                        return status == 503 and '"listener": false' in body

                    await wait_until(unready, timeout=10)

                    async def retried() -> bool:
                        return any(e["event"] == "listener_connect_failed" for e in logs)

                    await wait_until(retried, timeout=10)
                    assert await unready()
            finally:
                await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')

            async def ready() -> bool:
                return (await _get(http, readyz))[0] == 200

            await wait_until(ready, timeout=15)
            assert daemon.listener.backend_pid != killed
            _, metrics = await _get(http, f"http://127.0.0.1:{port}/metrics")
            assert "loyaltyd_listener_reconnects_total 2.0" in metrics
            assert "loyaltyd_listener_up 1.0" in metrics


async def test_metrics_of_a_running_daemon_count_syncs_and_passkit_latency(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    port = free_port()
    program = await make_program(pool)
    pass_id = await make_pass(pool, program, points=10)
    async with fake_passkit() as fake, aiohttp.ClientSession() as http:
        settings = settings_for(make_settings, fake.url, loyaltyd_http_port=port)
        async with running_daemon(settings, database_url):
            await pool.execute(
                "SELECT process_membership_transaction($1, 5, 'EARN', NULL, NULL)", pass_id
            )

            async def synced() -> bool:
                _, text = await _get(http, f"http://127.0.0.1:{port}/metrics")
                # counted when PassKit answered, off the queue once the outcome is recorded
                return (
                    'loyaltyd_deliveries_total{kind="sync",outcome="sent"} 1.0' in text
                    and 'loyaltyd_queue_depth{queue="sync"} 0.0' in text
                )

            await wait_until(synced, timeout=15)
            _, text = await _get(http, f"http://127.0.0.1:{port}/metrics")
            assert 'loyaltyd_passkit_request_seconds_count{operation="set_points"} 1.0' in text
        # stopped with the daemon
        try:
            await _get(http, f"http://127.0.0.1:{port}/healthz")
        except aiohttp.ClientConnectionError:
            pass
        else:
            raise AssertionError("the HTTP server still answers after the daemon stopped")


async def test_without_a_port_there_is_no_http_server(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    async with fake_passkit() as fake:
        with capture_logs() as logs:
            async with running_daemon(settings_for(make_settings, fake.url), database_url):
                pass
    events = {e["event"] for e in logs}
    assert "daemon_ready" in events
    assert "http_server_started" not in events


async def test_the_api_works_through_the_daemons_port_and_warns_without_keys(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    port = free_port()
    program = await make_program(pool)
    async with fake_passkit() as fake, aiohttp.ClientSession() as http:
        with capture_logs() as logs:
            settings = settings_for(make_settings, fake.url, loyaltyd_http_port=port)
            async with running_daemon(settings, database_url):
                url = f"http://127.0.0.1:{port}/api/notify/broadcast"
                body = {"programId": str(program), "message": "Hi"}
                async with http.post(url, json=body, headers={"X-API-Key": KEY}) as response:
                    assert response.status == 401
        assert "http_api_keys_missing" in {e["event"] for e in logs}

        settings = settings_for(
            make_settings, fake.url, loyaltyd_http_port=port, loyaltyd_api_keys=KEY
        )
        async with running_daemon(settings, database_url):
            async with http.post(url, json=body, headers={"X-API-Key": KEY}) as response:
                assert response.status == 202
                campaign = (await response.json())["id"]
            async with http.get(
                f"http://127.0.0.1:{port}/api/campaigns/{campaign}", headers={"X-API-Key": KEY}
            ) as response:
                assert response.status == 200
                assert (await response.json())["id"] == campaign


async def test_a_port_in_use_stops_the_daemon_at_start(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    """Fail loudly (exit 2 with one sentence, see test_cli) rather than run without the HTTP
    server."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with fake_passkit() as fake:
            settings = settings_for(make_settings, fake.url, loyaltyd_http_port=port)
            with pytest.raises(ConfigError, match=f"cannot serve HTTP on 127.0.0.1:{port}.*in use"):
                await asyncio.wait_for(
                    run_daemon(settings, database_url, stopping=asyncio.Event()), timeout=30
                )


async def test_a_broadcast_through_the_api_buzzes_every_phone_and_reports_completed(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    port = free_port()
    program = await make_program(pool, name="Joe's Pizza")
    passes = [await make_pass(pool, program, points=100 * i) for i in range(1, 6)]
    api = f"http://127.0.0.1:{port}/api"
    auth = {"X-API-Key": KEY}
    async with fake_passkit() as fake, aiohttp.ClientSession() as http:
        settings = settings_for(
            make_settings, fake.url, loyaltyd_http_port=port, loyaltyd_api_keys=KEY
        )
        async with running_daemon(settings, database_url):
            body = {"programId": str(program), "message": "{points} points at {program_name}!"}
            async with http.post(f"{api}/notify/broadcast", json=body, headers=auth) as response:
                assert response.status == 202
                location = response.headers["Location"]

            async def completed() -> bool:
                async with http.get(f"http://127.0.0.1:{port}{location}", headers=auth) as r:
                    return bool((await r.json())["status"] == "COMPLETED")

            await wait_until(completed, timeout=30)
            async with http.get(f"http://127.0.0.1:{port}{location}", headers=auth) as response:
                progress = await response.json()
            _, metrics = await _get(http, f"http://127.0.0.1:{port}/metrics")
    assert 'loyaltyd_deliveries_total{kind="campaign",outcome="sent"} 5.0' in metrics
    assert 'loyaltyd_queue_depth{queue="campaign"}' in metrics  # kept by the planner
    assert (progress["recipient_count"], progress["sent_count"], progress["failed_count"]) == (
        5,
        5,
        0,
    )
    assert progress["progress_percent"] == 100.0
    for i, pass_id in enumerate(passes, start=1):
        passkit_id = await pool.fetchval(
            "SELECT passkit_internal_id FROM passes_master WHERE id = $1", pass_id
        )
        assert [visible_text(m) for m in fake.messages_for(passkit_id)] == [
            f"{100 * i} points at Joe's Pizza!"
        ]
