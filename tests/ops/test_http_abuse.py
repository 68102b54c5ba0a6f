"""The HTTP API under abuse, served as the daemon serves it (serve_http, on a real port):
half-open connections are dropped, the API keeps answering, every error is JSON (aiohttp's
own 400/404/405/413 too, with Allow on 405), and values the database would refuse are a 400
with a message, never a 500."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest

from daemon.core.config import Settings
from daemon.core.metrics import Metrics
from daemon.ops.http import serve_http
from daemon.store.listener import Listener
from tests.factories import make_program

KEY = "k-abuse-0123456789"


@dataclass
class Running:
    settings: Settings
    pool: asyncpg.Pool
    metrics: Metrics
    stopping: asyncio.Event
    listener: Listener | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def server(pool: asyncpg.Pool, make_settings: Callable[..., Settings]) -> AsyncIterator[str]:
    port = _free_port()
    settings = make_settings(
        loyaltyd_http_port=port,
        loyaltyd_api_keys=KEY,
        loyaltyd_http_header_timeout_seconds=2,
        loyaltyd_http_body_timeout_seconds=2,
        loyaltyd_http_connection_seconds=30,
    )
    async with serve_http(Running(settings, pool, Metrics(), asyncio.Event())):
        yield f"http://127.0.0.1:{port}"


async def _raw(base: str, request: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    return answer


def _json_body(answer: bytes) -> dict[str, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/json" in head.lower(), head
    parsed: dict[str, Any] = json.loads(body)
    return parsed


async def test_half_open_connections_are_dropped_and_the_api_keeps_answering(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    conns = [await asyncio.open_connection(host, int(port)) for _ in range(200)]
    for _, writer in conns:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
    async with aiohttp.ClientSession() as http, http.get(f"{server}/healthz") as answer:
        assert answer.status == 200  # answers while they hang on
    started = time.monotonic()
    closed = await asyncio.gather(*(asyncio.wait_for(r.read(), 20) for r, _ in conns))
    assert all(data == b"" for data in closed)
    assert time.monotonic() - started < 10, "dropped within the header timeout"
    for _, writer in conns:
        writer.close()


async def test_a_body_that_never_arrives_is_a_json_408(server: str) -> None:
    answer = await _raw(
        server,
        b"POST /api/notify/broadcast HTTP/1.1\r\nHost: x\r\nX-API-Key: "
        + KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    assert answer.split(b" ")[1] == b"408"
    assert "did not arrive" in _json_body(answer)["error"]


async def test_a_request_the_parser_refuses_is_a_json_400(server: str) -> None:
    answer = await _raw(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n")
    assert answer.split(b" ")[1] == b"400"
    error = _json_body(answer)["error"]
    assert error.startswith("bad request") and "a\\x01b" not in error


async def test_unknown_routes_wrong_methods_and_large_bodies_are_json(server: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server}/nope") as answer:
            assert answer.status == 404 and "error" in await answer.json()
        async with http.delete(f"{server}/healthz") as answer:
            assert answer.status == 405 and "error" in await answer.json()
            assert "GET" in answer.headers["Allow"]
        async with http.post(
            f"{server}/api/notify/broadcast", data=b"x" * 70_000, headers={"X-API-Key": KEY}
        ) as answer:
            assert answer.status == 413 and "error" in await answer.json()


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"segment": "WHALE", "minPoints": 2147483648}, "min_points must be a whole number"),
        ({"segment": "VIP", "minTierPoints": 10**12}, "min_tier_points must be a whole number"),
        ({"segment": "SLUMBER", "inactiveDays": 99999}, "inactive_days"),
        ({"message": "hi\x00there"}, "NUL"),
        ({"name": "bad\x00name"}, "NUL"),
        ({"segment": "LOCAL", "zipCodes": ["750\x0001"]}, "NUL"),
        ({"scheduledAt": "9999-12-31T23:59:59-23:59"}, "9999-12-31"),
    ],
)
async def test_values_the_database_would_refuse_are_a_400_with_a_message(
    server: str, pool: asyncpg.Pool, fields: dict[str, Any], complaint: str
) -> None:
    program = await make_program(pool)
    body = {"programId": str(program), "message": "Hello", **fields}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{server}/api/notify/broadcast", json=body, headers={"X-API-Key": KEY}
        ) as answer,
    ):
        assert answer.status == 400, await answer.text()
        assert complaint in (await answer.json())["error"]
    assert await pool.fetchval("SELECT count(*) FROM push_campaigns") == 0


async def test_the_length_rule_counts_what_is_sent(server: str, pool: asyncpg.Pool) -> None:
    """4,000 spaces + "hi" + 4,000 spaces is the message "hi": stored and sent so."""
    program = await make_program(pool)
    body = {"programId": str(program), "message": " " * 4000 + "hi" + " " * 4000}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{server}/api/notify/broadcast", json=body, headers={"X-API-Key": KEY}
        ) as answer,
    ):
        assert answer.status == 202
    assert await pool.fetchval("SELECT message_text FROM push_campaigns") == "hi"


async def test_a_padded_message_written_straight_into_the_table_is_stored_trimmed(
    pool: asyncpg.Pool,
) -> None:
    program = await make_program(pool)
    await pool.execute(
        "INSERT INTO push_campaigns (program_id, name, message_text) VALUES ($1, 'x', $2)",
        program,
        "\n  " + "a" * 500 + "  \t",
    )
    assert await pool.fetchval("SELECT message_text FROM push_campaigns") == "a" * 500
