"""Every start-up failure a user can cause ends in one sentence naming what to fix, exit 2,
never a traceback: bad DATABASE_URLs, a missing --env-file, a taken HTTP port, bad options."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from threading import Thread
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from structlog.testing import capture_logs

from daemon.cli.main import warn_retired
from daemon.testing.databases import with_database
from tests.harness import REPO


def _loyaltyd(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LOYALTYD_", "PASSKIT_", "DATABASE_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        cwd=cwd,
        env={**base, "LOYALTYD_LOG_FORMAT": "json", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_sentence(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("loyaltyd: ")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@contextmanager
def fake_postgres(error: bytes | None) -> Iterator[int]:
    """A TCP server that answers SSLRequest with 'N' (no TLS) and then, if `error` is given,
    refuses the start-up with that ErrorResponse body, as a TLS-only pg_hba.conf does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn, suppress(OSError, struct.error):
                _answer(conn, error)

    thread = Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()


def _answer(conn: socket.socket, error: bytes | None) -> None:
    length, code = struct.unpack("!II", conn.recv(8))
    conn.recv(length - 8)
    if code == 80877103:  # SSLRequest
        conn.sendall(b"N")
        length = struct.unpack("!I", conn.recv(4))[0]
        conn.recv(length - 4)
    if error is not None:
        conn.sendall(b"E" + struct.pack("!I", len(error) + 4) + error)


def _error_response(sqlstate: str, message: str) -> bytes:
    fields = [b"SFATAL", b"VFATAL", b"C" + sqlstate.encode(), b"M" + message.encode()]
    return b"\0".join(fields) + b"\0\0"


def _with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    netloc = f"{parts.username}:{password}@{parts.hostname or ''}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.mark.parametrize(
    ("url", "needles"),
    [
        ("not a dsn", ["DATABASE_URL", "postgresql://user:password@host:5432/database"]),
        ("host=db user=app dbname=x", ["DATABASE_URL", "must be a URL"]),
        ("mysql://a@b/c", ["DATABASE_URL", "must be a URL"]),
        ("postgresql://app@127.0.0.1:1/x", ["connection refused", "check the host and port"]),
        ("postgresql://app@no-such-host.invalid/x", ["host name not found"]),
    ],
)
def test_a_bad_database_url_is_one_sentence(url: str, needles: list[str]) -> None:
    for command in (["migrate"], ["run"], ["status"]):
        _one_sentence(_loyaltyd(*command, env={"DATABASE_URL": url}), *needles)


def test_an_unknown_database_is_one_sentence(pg_admin_dsn: str) -> None:
    url = with_database(pg_admin_dsn, "no_such_database_here")
    _one_sentence(
        _loyaltyd("migrate", env={"DATABASE_URL": url}),
        "no_such_database_here",
        "check the database name",
    )


def test_a_wrong_password_is_one_sentence_without_the_password(pg_admin_dsn: str) -> None:
    if "@/" not in pg_admin_dsn and urlsplit(pg_admin_dsn).password is None:
        pytest.skip("the test server trusts every connection")
    url = _with_password(pg_admin_dsn, "Wrong-S3cret-Pass")
    sentence = _one_sentence(
        _loyaltyd("run", env={"DATABASE_URL": url}), "password", "check the user name and password"
    )
    result = _loyaltyd("run", env={"DATABASE_URL": url})
    assert "Wrong-S3cret-Pass" not in sentence and "Wrong-S3cret-Pass" not in result.stderr


def test_a_server_that_requires_tls_is_one_sentence() -> None:
    refusal = _error_response(
        "28000",
        'no pg_hba.conf entry for host "127.0.0.1", user "app", database "x", no encryption',
    )
    with fake_postgres(refusal) as port:
        url = f"postgresql://app@127.0.0.1:{port}/x?sslmode=disable"
        _one_sentence(_loyaltyd("migrate", env={"DATABASE_URL": url}), "add ?sslmode=require")


def test_tls_asked_of_a_server_without_it_is_one_sentence() -> None:
    with fake_postgres(None) as port:
        url = f"postgresql://app@127.0.0.1:{port}/x?sslmode=require"
        _one_sentence(_loyaltyd("migrate", env={"DATABASE_URL": url}), "does not offer TLS")


def test_a_missing_env_file_is_one_sentence(tmp_path: Path) -> None:
    _one_sentence(
        _loyaltyd("--env-file", str(tmp_path / "nope.env"), "migrate"), "--env-file", "no such file"
    )
    _one_sentence(
        _loyaltyd("migrate", env={"LOYALTYD_ENV_FILE": str(tmp_path / "nope.env")}), "no such file"
    )


def test_the_env_file_is_read_from_anywhere_and_the_environment_wins(
    tmp_path: Path, database_url: str
) -> None:
    env_file = tmp_path / "loyaltyd.env"
    env_file.write_text("DATABASE_URL=postgresql://app@127.0.0.1:1/from_file\n")
    refused = _loyaltyd("--env-file", str(env_file), "migrate", "--check", cwd=tmp_path)
    _one_sentence(refused, "127.0.0.1:1/from_file")
    wins = _loyaltyd(
        "--env-file", str(env_file), "migrate", "--check", env={"DATABASE_URL": database_url}
    )
    assert wins.returncode == 0, wins.stderr


def test_invalid_settings_in_the_env_file_name_the_variable(tmp_path: Path) -> None:
    env_file = tmp_path / "loyaltyd.env"
    env_file.write_text("PASSKIT_MAX_CONCURRENCY=lots\n")
    result = _loyaltyd("--env-file", str(env_file), "migrate")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "PASSKIT_MAX_CONCURRENCY" in result.stderr


async def test_a_taken_http_port_is_one_sentence_and_leaves_no_heartbeat_row(
    database_url: str,
) -> None:
    """A start that fails before the daemon is ready deletes its own heartbeat row: it never
    shares the fleet's budget nor shows in `loyaltyd status` as a dead daemon."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _loyaltyd(
            "run",
            "--no-migrate",
            env={"DATABASE_URL": database_url, "LOYALTYD_HTTP_PORT": str(port)},
        )
    _one_sentence(result, f"127.0.0.1:{port}", "LOYALTYD_HTTP_PORT")
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM loyaltyd.instances") == 0
    finally:
        await conn.close()
    status = _loyaltyd("status", env={"DATABASE_URL": database_url})
    assert status.returncode == 0, status.stderr
    assert "Daemons: none running" in status.stdout


def test_a_subcommand_usage_error_shows_that_subcommands_usage() -> None:
    result = _loyaltyd("migrate", "--bogus")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: loyaltyd migrate"), result.stderr
    assert "unrecognized arguments: --bogus" in result.stderr


@pytest.mark.parametrize("members", ["0", "-5", "many"])
def test_the_demo_refuses_fewer_than_one_member(members: str) -> None:
    result = _loyaltyd("demo", "--members", members)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: loyaltyd demo"), result.stderr
    assert "--members" in result.stderr


def test_no_subcommand_shows_the_commands() -> None:
    result = _loyaltyd()
    assert result.returncode == 2 and "COMMAND" in result.stderr


def test_a_retired_setting_is_named_in_a_warning(tmp_path: Path) -> None:
    env_file = tmp_path / "loyaltyd.env"
    env_file.write_text("PASSKIT_API_KEY=\nexport LOYALTYD_MAX_JOB_ATTEMPTS=5\n")
    with capture_logs() as logs:
        found = warn_retired(env_file, environ={"PASSKIT_MAX_ATTEMPTS": "8", "PATH": "/bin"})
    assert found == ["LOYALTYD_MAX_JOB_ATTEMPTS", "PASSKIT_MAX_ATTEMPTS"]
    assert [e["setting"] for e in logs if e["event"] == "setting_retired"] == found
    with capture_logs() as logs:
        assert warn_retired(tmp_path / "missing.env", environ={}) == []
    assert logs == []


def test_the_demos_help_says_what_it_leaves_behind() -> None:
    result = _loyaltyd("demo", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "leaves nothing behind" not in text
    assert "temporary" in text and "loyaltyd-postgres" in text
