"""PassKit's webhooks at loyaltyd's HTTP server: a doorbell. Only the secret path admits one
(compared in constant time, never logged); a body that is not PassKit's is a 400 that changes
nothing; a good one is queued for a re-read (at most one waiting per pass, however many
webhooks name it) and counted for its program, and answered at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from daemon.core.config import Settings
from daemon.core.metrics import Metrics
from daemon.ops.http import HttpApi
from tests.factories import make_pass, make_program
from tests.ops.test_http import Running

TOKEN = "wh-0123456789abcdefghijklmnopqrstuvwxyz"
URL = f"/passkit/webhook/{TOKEN}"
Client = TestClient[web.Request, web.Application]


def _event(passkit_id: str, event: str = "PASS_EVENT_UNINSTALLED", **extra: Any) -> Any:
    return {
        "event": event,
        "pass": {"id": passkit_id, "classId": "pk-program", "protocol": "MEMBERSHIP", **extra},
    }


@pytest.fixture
async def hook(pool: asyncpg.Pool, make_settings: Callable[..., Settings]) -> AsyncIterator[Client]:
    running = Running(
        make_settings(loyaltyd_passkit_webhook_token=TOKEN), pool, Metrics(), asyncio.Event()
    )
    client: Client = TestClient(TestServer(HttpApi(running).app()))
    await client.start_server()
    yield client
    await client.close()


async def _inbox(pool: asyncpg.Pool) -> list[tuple[str, str, int]]:
    rows = await pool.fetch(
        "SELECT passkit_id, event, events FROM loyaltyd.wallet_events ORDER BY id"
    )
    return [(r["passkit_id"], r["event"], r["events"]) for r in rows]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_a_webhook_is_queued_for_a_reread_and_answered_at_once(
    hook: Client, pool: asyncpg.Pool, method: str
) -> None:
    program = await make_program(pool)
    await make_pass(pool, program, passkit_internal_id="pk-alice")
    response = await hook.request(method, URL, json=_event("pk-alice"))
    assert response.status == 200
    assert await response.json() == {"status": "queued"}
    assert await _inbox(pool) == [("pk-alice", "PASS_EVENT_UNINSTALLED", 1)]
    counts = await pool.fetch(
        "SELECT program_id, event, received FROM loyaltyd.wallet_event_counts"
    )
    assert [tuple(r) for r in counts] == [(program, "PASS_EVENT_UNINSTALLED", 1)]


async def test_a_flood_about_one_pass_waits_as_one_reread(hook: Client, pool: asyncpg.Pool) -> None:
    program = await make_program(pool)
    await make_pass(pool, program, passkit_internal_id="pk-alice")
    events = ["PASS_EVENT_UNINSTALLED", "PASS_EVENT_INSTALLED"] * 50
    answers = await asyncio.gather(*(hook.put(URL, json=_event("pk-alice", e)) for e in events))
    assert {a.status for a in answers} == {200}
    (row,) = await _inbox(pool)
    assert (row[0], row[2]) == ("pk-alice", 100)
    received = await pool.fetchval("SELECT sum(received) FROM loyaltyd.wallet_event_counts")
    assert received == 100


async def test_a_pass_loyaltyd_does_not_know_is_counted_not_queued(
    hook: Client, pool: asyncpg.Pool
) -> None:
    response = await hook.post(URL, json=_event("pk-stranger", classId="elsewhere"))
    assert (response.status, await response.json()) == (200, {"status": "unknown pass"})
    assert await _inbox(pool) == []
    row = await pool.fetchrow("SELECT program_id, received FROM loyaltyd.wallet_event_counts")
    assert row is not None and (row["program_id"], row["received"]) == (None, 1)


@pytest.mark.parametrize(
    "path",
    [
        "/passkit/webhook/wrong-0123456789abcdefghijklmnopqrstuvwxyz",
        "/passkit/webhook/" + TOKEN[:-1],
        "/passkit/webhook/" + TOKEN + "x",
        "/passkit/webhook/",
    ],
)
async def test_a_wrong_or_missing_token_is_a_404_that_is_logged_without_it(
    hook: Client, pool: asyncpg.Pool, path: str
) -> None:
    program = await make_program(pool)
    await make_pass(pool, program, passkit_internal_id="pk-alice")
    with capture_logs() as logs:
        response = await hook.post(path, json=_event("pk-alice"))
    assert response.status == 404
    assert await _inbox(pool) == []
    assert TOKEN[:12] not in json.dumps(logs, default=str)
    tail = path.rsplit("/", 1)[-1]
    if tail:
        assert tail not in json.dumps(logs, default=str)


async def test_without_a_configured_token_every_webhook_is_a_404(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> None:
    running = Running(make_settings(), pool, Metrics(), asyncio.Event())
    client: Client = TestClient(TestServer(HttpApi(running).app()))
    await client.start_server()
    try:
        response = await client.post(URL, json=_event("pk-alice"))
    finally:
        await client.close()
    assert response.status == 404


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"event": "PASS_EVENT_EXPLODED", "pass": {}}).encode(), "unknown event"),
        (json.dumps({"event": "PASS_EVENT_INSTALLED"}).encode(), "no pass object"),
        (
            json.dumps(
                {"event": "PASS_EVENT_INSTALLED", "pass": {"id": "a", "protocol": "X"}}
            ).encode(),
            "unknown protocol",
        ),
        (
            json.dumps(
                {"event": "PASS_EVENT_INSTALLED", "pass": {"protocol": "MEMBERSHIP"}}
            ).encode(),
            "pass.id",
        ),
    ],
)
async def test_a_body_that_is_not_a_passkit_webhook_is_a_400_that_changes_nothing(
    hook: Client, pool: asyncpg.Pool, body: bytes, words: str
) -> None:
    response = await hook.post(URL, data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert words in (await response.json())["error"]
    assert await _inbox(pool) == []
    assert await pool.fetchval("SELECT count(*) FROM loyaltyd.wallet_event_counts") == 0


async def test_a_body_too_large_to_be_a_webhook_is_refused(
    hook: Client, pool: asyncpg.Pool
) -> None:
    body = json.dumps(_event("pk-alice", padding="x" * 70_000))
    response = await hook.post(URL, data=body, headers={"Content-Type": "application/json"})
    assert response.status == 413
    assert await _inbox(pool) == []


async def test_other_methods_are_refused(hook: Client) -> None:
    response = await hook.get(URL)
    assert response.status == 405


async def test_a_webhook_that_cannot_be_queued_is_a_503_for_passkit_to_send_again(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    broken = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert broken is not None
    await broken.close()
    running = Running(
        make_settings(loyaltyd_passkit_webhook_token=TOKEN), broken, Metrics(), asyncio.Event()
    )
    client: Client = TestClient(TestServer(HttpApi(running).app()))
    await client.start_server()
    try:
        response = await client.put(URL, json=_event("pk-alice"))
    finally:
        await client.close()
    assert response.status == 503
