"""systemd notification: the protocol's addresses and variables, the datagram client, and the
daemon telling a fake NOTIFY_SOCKET READY, WATCHDOG (only while healthy) and STOPPING."""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from structlog.testing import capture_logs

from daemon.core.config import Settings
from daemon.core.dsn import database_of
from daemon.ops.sdnotify import SdNotifier, socket_address, watchdog_timeout
from tests.harness import DaemonProcess, fake_passkit, running_daemon, settings_for, wait_until
from tests.ops.test_http_daemon import free_port


@pytest.mark.parametrize(
    ("value", "address"),
    [
        (None, None),
        ("", None),
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@/org/freedesktop/systemd1/notify/123", "\0/org/freedesktop/systemd1/notify/123"),
        ("vsock:2:1234", None),
        ("relative/path", None),
    ],
)
def test_notify_socket_addresses(value: str | None, address: str | None) -> None:
    assert socket_address(value) == address


@pytest.mark.parametrize(
    ("environ", "timeout"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": "4242"}, 1.5),
        ({"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": ""}, 1.5),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({"WATCHDOG_USEC": ""}, None),
    ],
)
def test_watchdog_timeout_is_for_this_pid_only(
    environ: dict[str, str], timeout: float | None
) -> None:
    assert watchdog_timeout(environ, pid=4242) == timeout


@contextmanager
def receiver(abstract: bool = False) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket playing systemd; yields it and its NOTIFY_SOCKET value."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    directory = Path(tempfile.mkdtemp(prefix="sd-", dir="/tmp"))
    try:
        if abstract:
            name = f"loyaltyd-test-{uuid.uuid4().hex}"
            sock.bind("\0" + name)
            yield sock, "@" + name
        else:
            path = str(directory / "notify")
            sock.bind(path)
            yield sock, path
    finally:
        sock.close()
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()


@pytest.mark.parametrize("abstract", [False, True])
def test_notifier_sends_one_datagram_of_lines(abstract: bool) -> None:
    with receiver(abstract) as (sock, notify_socket):
        notifier = SdNotifier.from_environ({"NOTIFY_SOCKET": notify_socket})
        assert notifier is not None
        with notifier:
            assert notifier.send("READY=1", "STATUS=running")
        sock.settimeout(2)
        assert sock.recv(4096) == b"READY=1\nSTATUS=running"


def test_no_notify_socket_means_no_notifier() -> None:
    assert SdNotifier.from_environ({}) is None
    with capture_logs() as logs:
        assert SdNotifier.from_environ({"NOTIFY_SOCKET": "vsock:2:9"}) is None
    assert [e["event"] for e in logs] == ["sd_notify_socket_unsupported"]


def test_a_failed_send_is_logged_not_raised() -> None:
    with SdNotifier("/tmp/loyaltyd-no-such-socket-" + uuid.uuid4().hex) as notifier:
        with capture_logs() as logs:
            assert notifier.send("WATCHDOG=1") is False
    assert [(e["event"], e["fields"]) for e in logs] == [("sd_notify_failed", ["WATCHDOG"])]


def seen(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """`check` as `wait_until` wants it."""

    async def run() -> bool:
        return check()

    return run


class Datagrams:
    """What the daemon told the fake systemd, as received."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def count(self, line: str) -> int:
        return sum(line in m.split("\n") for m in self.messages)

    def index(self, line: str) -> int:
        return next(i for i, m in enumerate(self.messages) if line in m.split("\n"))


@asynccontextmanager
async def listening(sock: socket.socket) -> AsyncIterator[Datagrams]:
    received = Datagrams()
    sock.setblocking(False)
    loop = asyncio.get_running_loop()

    async def read() -> None:
        while True:
            received.messages.append((await loop.sock_recv(sock, 4096)).decode())

    reader = asyncio.create_task(read())
    try:
        yield received
    finally:
        reader.cancel()


async def test_loyaltyd_run_tells_systemd_ready_watchdog_and_stopping(
    database_url: str, tmp_path: Path
) -> None:
    """`python -m daemon run` under a fake systemd: READY once working, WATCHDOG every half
    period, STOPPING on SIGTERM, then exit 0."""
    port = free_port()
    with receiver() as (sock, notify_socket):
        async with listening(sock) as received:
            env = {
                "NOTIFY_SOCKET": notify_socket,
                "WATCHDOG_USEC": "1000000",
                "WATCHDOG_PID": "",
                "PASSKIT_API_KEY": "",
                "PASSKIT_API_SECRET": "",
                "LOYALTYD_HTTP_PORT": str(port),
                "LOYALTYD_LISTENER_PROBE_SECONDS": "0.5",
            }
            daemon = DaemonProcess(database_url, env, tmp_path / "daemon.log")
            try:
                await wait_until(seen(lambda: received.count("READY=1") == 1), timeout=30)
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                        assert response.status == 200
                await wait_until(seen(lambda: received.count("WATCHDOG=1") >= 3), timeout=10)
                assert received.count("STOPPING=1") == 0
                daemon.terminate()
                assert await daemon.wait(timeout=30) == 0
            finally:
                daemon.stop_now()
            await asyncio.sleep(0.1)  # the last datagram may still be in the socket
    assert received.count("READY=1") == 1
    assert received.count("STOPPING=1") == 1
    assert received.index("READY=1") < received.index("WATCHDOG=1") < received.index("STOPPING=1")
    assert "sd_notify_ready" in daemon.log_text()


async def test_watchdog_pings_stop_while_the_database_is_unreachable(
    pg_admin_dsn: str,
    database_url: str,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No WATCHDOG=1 while the daemon's database refuses it (systemd would restart us), and
    pings again once it is back."""
    admin = await asyncpg.connect(pg_admin_dsn)
    database = database_of(database_url)
    try:
        with receiver() as (sock, notify_socket):
            monkeypatch.setenv("NOTIFY_SOCKET", notify_socket)
            monkeypatch.setenv("WATCHDOG_USEC", "600000")
            monkeypatch.delenv("WATCHDOG_PID", raising=False)
            async with listening(sock) as received, fake_passkit() as fake:
                settings = settings_for(make_settings, fake.url)
                async with running_daemon(settings, database_url):
                    await wait_until(seen(lambda: received.count("WATCHDOG=1") >= 2))
                    await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
                    try:
                        await admin.execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = $1",
                            database,
                        )
                        await asyncio.sleep(0.4)  # a ping already on its way may still land
                        before = received.count("WATCHDOG=1")
                        await asyncio.sleep(1.5)  # five ping periods
                        assert received.count("WATCHDOG=1") == before
                    finally:
                        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
                    await wait_until(
                        seen(lambda: received.count("WATCHDOG=1") > before), timeout=15
                    )
    finally:
        await admin.close()


async def test_a_stalled_event_loop_withholds_the_watchdog_ping(
    database_url: str, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    with receiver() as (sock, notify_socket):
        monkeypatch.setenv("NOTIFY_SOCKET", notify_socket)
        monkeypatch.setenv("WATCHDOG_USEC", "400000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        async with listening(sock) as received, fake_passkit() as fake:
            async with running_daemon(settings_for(make_settings, fake.url), database_url):
                await wait_until(seen(lambda: received.count("WATCHDOG=1") >= 1))
                with capture_logs() as logs:
                    time.sleep(0.6)  # block the event loop for three ping periods
                    await wait_until(
                        seen(lambda: any(e["event"] == "event_loop_stalled" for e in logs))
                    )
                stalled = next(e for e in logs if e["event"] == "event_loop_stalled")
                assert stalled["lag_seconds"] >= 0.2
