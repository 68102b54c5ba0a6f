"""No secret in any log line or stored error: every DSN form libpq accepts, API keys, the
PassKit secret and JWTs, through every path that logs (structlog, standard-library loggers
such as aiohttp.server and asyncio, start-up errors) or stores text (last_error, error)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from daemon.core.config import Settings
from daemon.core.dsn import redact
from daemon.core.logs import configure_logging, get_logger
from tests.factories import make_pass, make_program
from tests.harness import (
    API_KEY,
    API_SECRET,
    REPO,
    DaemonProcess,
    daemon_env,
    fake_passkit,
    running_daemon,
    settings_for,
    wait_until,
)

SECRET = "S3cretPassw0rd"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJ1aWQiOiJrZXkifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
DSN_FORMS = [
    f"postgresql://app:{SECRET}@127.0.0.1:1/db",
    f"postgres://app:{SECRET}@127.0.0.1:1/db?sslmode=disable",
    f"postgresql://app@127.0.0.1:1/db?password={SECRET}",
    f"postgresql://app@127.0.0.1:1/db?sslmode=disable&password={SECRET}",
    f"host=127.0.0.1 port=1 user=app password={SECRET} dbname=db",
    f"host=127.0.0.1 port=1 user=app password='{SECRET} x' dbname=db",
]


@pytest.mark.parametrize(
    "text", [*DSN_FORMS, f"PGPASSWORD={SECRET} psql", f"https://u:{SECRET}@h/x"]
)
def test_every_password_form_is_redacted(text: str) -> None:
    assert SECRET not in redact(text)
    assert "[redacted]" in redact(text)


@pytest.mark.parametrize("dsn", DSN_FORMS)
def test_a_dsn_in_any_form_never_reaches_the_output_of_a_failed_start(dsn: str) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LOYALTYD_", "PASSKIT_"))},
        "DATABASE_URL": dsn,
        "PGPASSWORD": SECRET,
        "LOYALTYD_LOG_FORMAT": "json",
    }
    for command in (["migrate"], ["run"]):
        result = subprocess.run(
            [sys.executable, "-m", "daemon", *command],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert SECRET not in result.stderr + result.stdout


def test_the_configured_dsn_is_logged_without_its_password(database_url: str) -> None:
    password = urlsplit(database_url).password
    if not password:
        pytest.skip("the test server takes no password")
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "migrate", "--check"],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": database_url, "LOYALTYD_LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "database_configured" in result.stderr
    assert password not in result.stderr


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """stderr as the log pipeline writes it (JSON), with the configured secrets."""
    out = io.StringIO()
    real = sys.stderr
    sys.stderr = out
    try:
        configure_logging("DEBUG", "json", [API_KEY, API_SECRET, SECRET])
        yield out
    finally:
        sys.stderr = real
        configure_logging("INFO", "console")


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize("logger", ["aiohttp.server", "asyncio", "asyncpg", "apscheduler"])
def test_standard_library_logging_is_json_and_scrubbed(captured: io.StringIO, logger: str) -> None:
    try:
        raise ValueError(f"bad header X-API-Key: {API_KEY}\x01 token {JWT} dsn {DSN_FORMS[4]}")
    except ValueError:
        logging.getLogger(logger).exception("Error handling request %s", API_SECRET)
    (line,) = _lines(captured)
    text = json.dumps(line)
    for secret in (API_KEY, API_SECRET, SECRET, JWT):
        assert secret not in text
    assert line["logger"] == logger and line["level"] == "error"
    assert "ValueError" in str(line["exception"])


def test_structlog_events_are_scrubbed_everywhere_in_them(captured: io.StringIO) -> None:
    get_logger("t").warning(
        "passkit_failed",
        error=f"answered 400: {API_SECRET}",
        nested={"dsn": DSN_FORMS[2], "tokens": [JWT]},
    )
    text = captured.getvalue()
    for secret in (API_SECRET, SECRET, JWT):
        assert secret not in text


async def test_a_passkit_error_body_echoing_secrets_is_stored_scrubbed(
    pool: asyncpg.Pool, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    pass_id = await make_pass(pool, program, points=0)
    pk = await pool.fetchval("SELECT passkit_internal_id FROM passes_master WHERE id = $1", pass_id)
    async with fake_passkit() as fake:
        fake.force_status(pk, 400, f"bad token {JWT} for key {API_KEY} secret {API_SECRET}")
        async with running_daemon(settings_for(make_settings, fake.url), database_url):
            await pool.execute(
                "SELECT process_membership_transaction($1, 3, 'EARN', NULL, NULL)", pass_id
            )
            await wait_until(
                lambda: pool.fetchval(
                    "SELECT state = 'dead' FROM loyaltyd.pass_syncs WHERE pass_id = $1", pass_id
                ),
                timeout=10,
            )
    error = await pool.fetchval(
        "SELECT last_error FROM loyaltyd.pass_syncs WHERE pass_id = $1", pass_id
    )
    assert "400" in error and "[redacted]" in error
    for secret in (JWT, API_KEY, API_SECRET):
        assert secret not in error


async def test_an_api_key_followed_by_a_control_byte_never_reaches_the_log(
    database_url: str, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = "k3y-" + "x" * 28
    async with fake_passkit() as fake:
        env = {
            **daemon_env(fake.url),
            "LOYALTYD_HTTP_PORT": str(port),
            "LOYALTYD_API_KEYS": key,
            "LOYALTYD_LOG_LEVEL": "DEBUG",
        }
        daemon = DaemonProcess(database_url, env, tmp_path / "d.log")
        try:
            await wait_until(lambda: "http_server_started" in daemon.log_text(), timeout=30)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"GET /api/campaigns/x HTTP/1.1\r\nHost: x\r\nX-API-Key: "
                + key.encode()
                + b"\x01\r\n\r\n"
            )
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(1000), 10)
            writer.close()
            assert answer.split(b" ")[1] == b"400"
            code, _ = await daemon.terminate_timed(30)
        finally:
            daemon.stop_now()
    text = daemon.log_text()
    assert code == 0
    assert key not in text
    for line in text.splitlines():
        json.loads(line)  # every line, the library's too, is JSON
