"""The HTTP API against real Postgres through aiohttp's test server: every route, every kind of
bad request (no or wrong key, empty, malformed, oversized, mistyped), and what it logs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from daemon.core.config import Settings
from daemon.core.metrics import Metrics
from daemon.ops.http import HttpApi
from daemon.store.listener import Listener
from tests.factories import make_pass, make_program

KEY = "k-0123456789abcdef"
OTHER_KEY = "k-second-key-4567"
AUTH = {"X-API-Key": KEY}
NOON = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)
Client = TestClient[web.Request, web.Application]


@dataclass
class Running:
    """What the HTTP server reads of a running daemon (`daemon.ops.readiness.Running`)."""

    settings: Settings
    pool: asyncpg.Pool
    metrics: Metrics
    stopping: asyncio.Event
    listener: Listener | None = None


@pytest.fixture
def running(pool: asyncpg.Pool, make_settings: Callable[..., Settings]) -> Running:
    settings = make_settings(loyaltyd_api_keys=f"{KEY},{OTHER_KEY}")
    return Running(settings, pool, Metrics(), asyncio.Event())


async def _client(running: Running) -> Client:
    client: Client = TestClient(TestServer(HttpApi(running, clock=lambda: NOON).app()))
    await client.start_server()
    return client


@pytest.fixture
async def api(running: Running) -> AsyncIterator[Client]:
    client = await _client(running)
    yield client
    await client.close()


async def _campaign_count(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM push_campaigns")
    return count


# --- probes and metrics ------------------------------------------------------------------------


async def test_healthz_answers_without_a_key(api: Client) -> None:
    response = await api.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_is_503_while_there_is_no_listener(api: Client) -> None:
    response = await api.get("/readyz")
    assert response.status == 503
    assert await response.json() == {
        "ready": False,
        "database": True,
        "listener": False,
        "stopping": False,
    }


async def test_readyz_is_503_once_the_daemon_is_stopping(running: Running, api: Client) -> None:
    running.stopping.set()
    response = await api.get("/readyz")
    assert response.status == 503
    assert (await response.json())["stopping"] is True
    assert (await api.get("/healthz")).status == 200


async def test_metrics_show_the_fleet_and_the_work_per_program(
    api: Client, pool: asyncpg.Pool
) -> None:
    program = await make_program(pool)
    await pool.execute(
        "SELECT process_membership_transaction($1, 5, 'EARN', NULL, NULL)",
        await make_pass(pool, program, points=10),
    )
    await pool.execute(
        "INSERT INTO loyaltyd.instances (id, host, pid, rate_limit, share, sent_per_second,"
        " taken_over, ready_at) VALUES ('00000000-0000-0000-0000-00000000000a', 'web1', 1, 150,"
        " 50, 49.5, 7, now())"
    )
    text = await (await api.get("/metrics")).text()
    labels = '{host="web1",instance="00000000-0000-0000-0000-00000000000a"}'
    assert f"loyaltyd_fleet_budget_share{labels} 50.0" in text
    assert f"loyaltyd_fleet_sent_per_second{labels} 49.5" in text
    assert f"loyaltyd_fleet_rows_taken_over{labels} 7.0" in text
    assert f"loyaltyd_fleet_heartbeat_age_seconds{labels}" in text
    assert f'loyaltyd_program_queue_depth{{program="{program}",queue="sync"}} 1.0' in text
    assert f'loyaltyd_program_queue_oldest_age_seconds{{program="{program}",queue="sync"}}' in text

    await pool.execute("DELETE FROM loyaltyd.instances")
    await pool.execute("DELETE FROM loyaltyd.pass_syncs")
    text = await (await api.get("/metrics")).text()
    assert "loyaltyd_fleet_budget_share{" not in text, "a daemon that left drops out"
    assert "loyaltyd_program_queue_depth{" not in text, "nothing owed: no series"


async def test_readyz_reports_an_unreachable_database(running: Running, database_url: str) -> None:
    closed = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    await closed.close()
    running.pool = closed
    client = await _client(running)
    try:
        response = await client.get("/readyz")
        assert response.status == 503
        assert (await response.json())["database"] is False
    finally:
        await client.close()


async def test_metrics_are_prometheus_text_with_the_sync_queue_read_from_the_table(
    api: Client, pool: asyncpg.Pool
) -> None:
    program = await make_program(pool)
    passes = [await make_pass(pool, program, points=10) for _ in range(3)]
    for pass_id in passes:  # no daemon runs: each leaves a pending pass sync
        await pool.execute(
            "SELECT process_membership_transaction($1, 5, 'EARN', NULL, NULL)", pass_id
        )
    dead = await make_pass(pool, program, points=10)
    await pool.execute("SELECT process_membership_transaction($1, 5, 'EARN', NULL, NULL)", dead)
    await pool.execute("UPDATE loyaltyd.pass_syncs SET state = 'dead' WHERE pass_id = $1", dead)

    response = await api.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    assert 'loyaltyd_queue_depth{queue="sync"} 3.0' in text
    assert 'loyaltyd_queue_oldest_age_seconds{queue="sync"}' in text
    assert "loyaltyd_dead_syncs 1.0" in text
    for family in (
        "loyaltyd_passkit_requests_total",
        "loyaltyd_passkit_request_seconds",
        "loyaltyd_passkit_retries_total",
        "loyaltyd_ratelimit_wait_seconds",
        "loyaltyd_deliveries_total",
        "loyaltyd_listener_reconnects_total",
        "loyaltyd_listener_up",
        "loyaltyd_leases_reclaimed_total",
    ):
        assert f"# TYPE {family} " in text, family


# --- API keys ----------------------------------------------------------------------------------

API_ROUTES = [
    ("POST", "/api/notify/broadcast"),
    ("POST", "/api/notify/birthday-run"),
    ("GET", f"/api/campaigns/{uuid.uuid4()}"),
]


@pytest.mark.parametrize(("method", "path"), API_ROUTES)
@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, "missing X-API-Key header"),
        ({"X-API-Key": ""}, "missing X-API-Key header"),
        ({"X-API-Key": "k-0123456789abcdeX"}, "invalid API key"),
        ({"X-API-Key": KEY.upper()}, "invalid API key"),
        ({"Authorization": KEY}, "missing X-API-Key header"),
    ],
)
async def test_api_routes_refuse_a_missing_or_wrong_key_with_401(
    api: Client, pool: asyncpg.Pool, method: str, path: str, headers: dict[str, str], error: str
) -> None:
    body = json.dumps({"programId": str(uuid.uuid4()), "message": "Hi"})
    response = await api.request(method, path, headers=headers, data=body)
    assert response.status == 401
    assert await response.json() == {"error": error}
    assert await _campaign_count(pool) == 0


async def test_every_configured_key_is_accepted(api: Client) -> None:
    for key in (KEY, OTHER_KEY):
        response = await api.get(f"/api/campaigns/{uuid.uuid4()}", headers={"X-API-Key": key})
        assert response.status == 404, key


async def test_without_configured_keys_the_api_refuses_everyone(
    running: Running, make_settings: Callable[..., Settings]
) -> None:
    running.settings = make_settings(loyaltyd_api_keys="")
    client = await _client(running)
    try:
        response = await client.post("/api/notify/birthday-run", headers=AUTH)
        assert response.status == 401
        assert "no LOYALTYD_API_KEYS configured" in (await response.json())["error"]
        assert (await client.get("/healthz")).status == 200
    finally:
        await client.close()


async def test_the_api_key_is_never_logged(api: Client) -> None:
    with capture_logs() as logs:
        await api.post("/api/notify/broadcast", headers={"X-API-Key": "wrong-secret-key-777"})
        await api.post("/api/notify/broadcast", headers=AUTH, data=b"{")
    assert logs, "refusals are logged"
    assert "wrong-secret-key-777" not in repr(logs)
    assert KEY not in repr(logs)


# --- broadcast ---------------------------------------------------------------------------------


async def test_broadcast_inserts_a_pending_campaign_and_answers_202_with_its_id(
    api: Client, pool: asyncpg.Pool
) -> None:
    program = await make_program(pool)
    body = {
        "programId": str(program),
        "message": "Big spenders: {points} points!",
        "segment": "whale",
        "name": "Whales",
        "minPoints": 800,
    }
    response = await api.post("/api/notify/broadcast", headers=AUTH, json=body)
    assert response.status == 202
    answer = await response.json()
    campaign_id = uuid.UUID(answer["id"])
    assert answer == {
        "id": str(campaign_id),
        "status": "PENDING",
        "url": f"/api/campaigns/{campaign_id}",
    }
    assert response.headers["Location"] == f"/api/campaigns/{campaign_id}"
    row = await pool.fetchrow("SELECT * FROM push_campaigns WHERE id = $1", campaign_id)
    assert (row["program_id"], row["status"], row["segment"], row["min_points"], row["name"]) == (
        program,
        "PENDING",
        "WHALE",
        800,
        "Whales",
    )
    assert row["message_text"] == "Big spenders: {points} points!"
    # who asked: a label of the key that tells keys apart, never the key
    assert row["created_by"] == f"api key {hashlib.sha256(KEY.encode()).hexdigest()[:8]}"
    assert KEY not in row["created_by"]


async def test_broadcast_can_draft_and_schedule_a_local_campaign(
    api: Client, pool: asyncpg.Pool
) -> None:
    program = await make_program(pool)
    body = {
        "programId": str(program),
        "message": "Street party tonight",
        "segment": "LOCAL",
        "zipCodes": ["75011", "75012"],
        "draft": True,
        "scheduledAt": "2030-01-01T18:00:00+01:00",
    }
    response = await api.post("/api/notify/broadcast", headers=AUTH, json=body)
    assert response.status == 202, await response.text()
    row = await pool.fetchrow(
        "SELECT status, zip_codes, scheduled_at FROM push_campaigns WHERE id = $1",
        uuid.UUID((await response.json())["id"]),
    )
    assert (row["status"], row["zip_codes"], row["scheduled_at"]) == (
        "DRAFT",
        ["75011", "75012"],
        datetime(2030, 1, 1, 17, 0, tzinfo=UTC),
    )


PROGRAM = "00000000-0000-4000-8000-000000000001"  # replaced by the test's program


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "the request body is empty"),
        (b"   \n", "the request body is empty"),
        (b"{", "the request body is not valid JSON"),
        (b"programId=1&message=hi", "the request body is not valid JSON"),
        (b"\xff\xfe{}", "the request body is not valid JSON"),
        (b"[]", "the request body must be a JSON object"),
        (b'"hello"', "the request body must be a JSON object"),
        (b"null", "the request body must be a JSON object"),
        ({"message": "Hi"}, "programId: Field required"),
        ({"programId": PROGRAM}, "message: Field required"),
        ({}, "programId: Field required; message: Field required"),
        ({"programId": 5, "message": "Hi"}, "programId: UUID input should be a string"),
        ({"programId": "not-a-uuid", "message": "Hi"}, "programId: Input should be a valid UUID"),
        ({"programId": PROGRAM, "message": 7}, "message: Input should be a valid string"),
        ({"programId": PROGRAM, "message": None}, "message: Input should be a valid string"),
        ({"programId": PROGRAM, "message": "Hi", "segment": ["ALL"]}, "segment: Input should"),
        ({"programId": PROGRAM, "message": "Hi", "minPoints": "500"}, "minPoints: Input should"),
        ({"programId": PROGRAM, "message": "Hi", "minPoints": 1.5}, "minPoints: Input should"),
        ({"programId": PROGRAM, "message": "Hi", "draft": "yes"}, "draft: Input should"),
        ({"programId": PROGRAM, "message": "Hi", "zipCodes": "75011"}, "zipCodes: Input should"),
        ({"programId": PROGRAM, "message": "Hi", "zipCodes": [75011]}, "zipCodes.0: Input"),
        ({"programId": PROGRAM, "message": "Hi", "segmnet": "VIP"}, "segmnet: Extra inputs"),
        (
            {"programId": PROGRAM, "message": "Hi", "scheduledAt": "2030-01-01T18:00:00"},
            "scheduledAt: Input should have timezone info",
        ),
        ({"programId": PROGRAM, "message": "Hi", "name": "x" * 201}, "name: String should"),
        # the campaign rules of create_campaign, the same the daemon applies to Softr's rows
        ({"programId": PROGRAM, "message": ""}, "the message is empty"),
        ({"programId": PROGRAM, "message": "x" * 501}, "the limit is 500"),
        ({"programId": PROGRAM, "message": "Hi {nickname}"}, "nickname"),
        ({"programId": PROGRAM, "message": "Hi", "segment": "EVERYONE"}, "unknown segment"),
        ({"programId": PROGRAM, "message": "Hi", "segment": "LOCAL"}, "zip"),
        (
            {"programId": PROGRAM, "message": "Hi", "segment": "CSV", "csvUploadUrl": "http://x/a"},
            "https",
        ),
        (
            {"programId": str(uuid.UUID(int=7)), "message": "Hi"},
            f"program {uuid.UUID(int=7)} does not exist",
        ),
    ],
)
async def test_broadcast_refuses_bad_requests_with_400_and_a_message(
    api: Client, pool: asyncpg.Pool, body: bytes | dict[str, Any], error: str
) -> None:
    program = await make_program(pool)
    raw = body if isinstance(body, bytes) else json.dumps(body).replace(PROGRAM, str(program))
    response = await api.post(
        "/api/notify/broadcast",
        headers={**AUTH, "Content-Type": "application/json"},
        data=raw,
    )
    assert response.status == 400
    answer = await response.json()
    assert error in answer["error"]
    assert await _campaign_count(pool) == 0


async def test_a_400_lists_every_field_at_fault_and_never_echoes_the_input(
    api: Client, pool: asyncpg.Pool
) -> None:
    body = {"programId": "secret-looking-value", "message": 12, "minPoints": "many"}
    with capture_logs() as logs:
        response = await api.post("/api/notify/broadcast", headers=AUTH, json=body)
    error = (await response.json())["error"]
    assert error.count(";") == 2, error
    assert "secret-looking-value" not in error
    assert "secret-looking-value" not in repr(logs)


async def test_a_one_megabyte_body_is_refused_with_413(api: Client, pool: asyncpg.Pool) -> None:
    program = await make_program(pool)
    body = json.dumps({"programId": str(program), "message": "x" * 1_000_000}).encode()
    response = await api.post("/api/notify/broadcast", headers=AUTH, data=body)
    assert response.status == 413
    assert await response.json() == {"error": "the request body is larger than 65536 bytes"}
    assert await _campaign_count(pool) == 0


async def test_a_chunked_body_over_the_limit_is_refused_with_413_too(
    api: Client, pool: asyncpg.Pool
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"message": "'
        for _ in range(16):
            yield b"x" * 65_536
        yield b'"}'

    response = await api.post("/api/notify/birthday-run", headers=AUTH, data=chunks())
    assert response.status == 413
    assert await _campaign_count(pool) == 0


async def test_the_body_limit_is_a_setting(
    running: Running, make_settings: Callable[..., Settings], pool: asyncpg.Pool
) -> None:
    running.settings = make_settings(loyaltyd_api_keys=KEY, loyaltyd_http_max_body_bytes=2048)
    program = await make_program(pool)
    client = await _client(running)
    try:
        small = {"programId": str(program), "message": "x" * 400}
        large = {"programId": str(program), "message": "x" * 3000}
        assert (await client.post("/api/notify/broadcast", headers=AUTH, json=small)).status == 202
        assert (await client.post("/api/notify/broadcast", headers=AUTH, json=large)).status == 413
    finally:
        await client.close()


# --- campaigns ---------------------------------------------------------------------------------


async def test_get_campaign_returns_its_progress(api: Client, pool: asyncpg.Pool) -> None:
    program = await make_program(pool)
    created = await api.post(
        "/api/notify/broadcast",
        headers=AUTH,
        json={"programId": str(program), "message": "Hi", "name": "Hello all"},
    )
    campaign_id = (await created.json())["id"]
    response = await api.get(f"/api/campaigns/{campaign_id}", headers=AUTH)
    assert response.status == 200
    progress = await response.json()
    assert progress["id"] == campaign_id
    assert progress["program_id"] == str(program)
    assert (progress["name"], progress["status"], progress["sent_count"]) == (
        "Hello all",
        "PENDING",
        0,
    )
    assert progress["progress_percent"] == 0.0


async def test_get_unknown_campaign_is_404_and_a_bad_id_is_400(api: Client) -> None:
    unknown = uuid.uuid4()
    response = await api.get(f"/api/campaigns/{unknown}", headers=AUTH)
    assert response.status == 404
    assert await response.json() == {"error": f"no campaign with id {unknown}"}
    response = await api.get("/api/campaigns/42", headers=AUTH)
    assert response.status == 400
    assert await response.json() == {"error": "campaign id '42' is not a UUID"}


# --- birthday run ------------------------------------------------------------------------------


async def _birthday_program(pool: asyncpg.Pool) -> tuple[uuid.UUID, uuid.UUID]:
    program = await make_program(
        pool,
        birthday_bot_enabled=True,
        birthday_reward_points=100,
        birthday_message="Happy birthday {first_name}!",
        timezone="Europe/Paris",
    )
    pass_id = await make_pass(pool, program, points=5, birth_date=date(1990, 6, 15))
    return program, pass_id


@pytest.mark.parametrize("body", [None, b"", b"{}"])
async def test_birthday_run_gifts_todays_birthdays_and_returns_the_summary(
    api: Client, pool: asyncpg.Pool, body: bytes | None
) -> None:
    program, pass_id = await _birthday_program(pool)
    response = await api.post("/api/notify/birthday-run", headers=AUTH, data=body)
    assert response.status == 200
    summary = await response.json()
    assert (summary["ok"], summary["gifted"], summary["now"]) == (True, 1, NOON.isoformat())
    [result] = summary["programs"]
    assert (result["program_id"], result["local_date"], result["gifted"]) == (
        str(program),
        "2024-06-15",
        1,
    )
    balance = await pool.fetchval(
        "SELECT points_balance FROM protocol_membership WHERE pass_id = $1", pass_id
    )
    assert balance == 105
    again = await (await api.post("/api/notify/birthday-run", headers=AUTH)).json()
    assert (again["gifted"], again["programs"][0]["already_gifted"]) == (0, 0)


async def test_birthday_run_for_one_program(api: Client, pool: asyncpg.Pool) -> None:
    program, _ = await _birthday_program(pool)
    other, _ = await _birthday_program(pool)
    response = await api.post(
        "/api/notify/birthday-run", headers=AUTH, json={"programId": str(program)}
    )
    summary = await response.json()
    assert [p["program_id"] for p in summary["programs"]] == [str(program)]
    assert other != program


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"programId": str(uuid.UUID(int=9))}, 404, f"no program with id {uuid.UUID(int=9)}"),
        ({"programId": 9}, 400, "programId: UUID input should be a string"),
        ({"program": "x"}, 400, "program: Extra inputs are not permitted"),
        (b"{", 400, "the request body is not valid JSON"),
        (b"[1]", 400, "the request body must be a JSON object"),
    ],
)
async def test_birthday_run_refuses_bad_requests(
    api: Client, pool: asyncpg.Pool, body: bytes | dict[str, Any], status: int, error: str
) -> None:
    _, pass_id = await _birthday_program(pool)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await api.post("/api/notify/birthday-run", headers=AUTH, data=data)
    assert response.status == status
    assert (await response.json())["error"].startswith(error)
    gifts = await pool.fetchval("SELECT count(*) FROM birthday_logs WHERE pass_id = $1", pass_id)
    assert gifts == 0


# --- everything else ---------------------------------------------------------------------------


async def test_wrong_method_and_unknown_route_answer_json_errors(api: Client) -> None:
    response = await api.get("/api/notify/broadcast", headers=AUTH)
    assert response.status == 405
    assert await response.json() == {"error": "Method Not Allowed"}
    response = await api.get("/nope")
    assert response.status == 404
    assert await response.json() == {"error": "Not Found"}


async def test_an_unexpected_failure_is_a_logged_500_without_details(
    running: Running, database_url: str, pool: asyncpg.Pool
) -> None:
    broken = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    await broken.close()
    running.pool = broken
    client = await _client(running)
    try:
        with capture_logs() as logs:
            response = await client.get(f"/api/campaigns/{uuid.uuid4()}", headers=AUTH)
        assert response.status == 500
        assert await response.json() == {
            "error": "internal error; the daemon's log has the details"
        }
        assert [e["event"] for e in logs if e["log_level"] == "error"] == ["http_request_failed"]
    finally:
        await client.close()
