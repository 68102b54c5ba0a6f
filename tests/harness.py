"""Running loyaltyd in tests: in-process (`running_daemon`) or as a real subprocess
(`DaemonProcess`, for kill -9 and SIGTERM), against a FakePassKit started by the test."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from daemon.app import Daemon, run_daemon
from daemon.core.config import Settings
from daemon.testing.fakepasskit import ROUTE_UPDATE_MEMBER, FakePassKit, issued_ids

API_KEY = "test-api-key-0123"
API_SECRET = "test-api-secret-4567-abcdefghijklmnop"
REPO = Path(__file__).resolve().parent.parent
# The passkit ids of tests.factories and tests.campaign_support.bulk_audience's prefixes.
FACTORY_ID_PREFIXES = ("pk", "csv-", "a-", "b-", "c-", "bad-", "good-", "sd-")


def messages_by_pass(fake: FakePassKit) -> Counter[str]:
    """Successful message writes to membership passes at the fake, per PassKit pass id."""
    return Counter(
        r.pass_id
        for r in fake.requests
        if r.route == ROUTE_UPDATE_MEMBER and r.status == 200 and r.pass_id
    )


@asynccontextmanager
async def fake_passkit(**kwargs: Any) -> AsyncIterator[FakePassKit]:
    # Every pass the tests' factories create is issued at the fake (their passkit ids start
    # with one of these); any other id is unknown there, as at PassKit.
    kwargs.setdefault("issued", issued_ids(*FACTORY_ID_PREFIXES))
    fake = FakePassKit(API_KEY, API_SECRET, **kwargs)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def daemon_env(fake_url: str) -> dict[str, str]:
    """Settings (as environment) that make a daemon talk to the fake quickly."""
    return {
        "PASSKIT_API_KEY": API_KEY,
        "PASSKIT_API_SECRET": API_SECRET,
        "PASSKIT_BASE_URL": fake_url,
        "PASSKIT_RATE_LIMIT": "0",
        "PASSKIT_MAX_CONCURRENCY": "10",
        "LOYALTYD_POLL_INTERVAL_SECONDS": "1",
        "LOYALTYD_LISTENER_PROBE_SECONDS": "0.5",
        "LOYALTYD_LEASE_SECONDS": "3",
        "LOYALTYD_SHUTDOWN_GRACE_SECONDS": "5",
        # The wallet tests sweep on purpose; elsewhere a start-up sweep would only add
        # requests to what a test counts.
        "LOYALTYD_WALLET_SWEEPS": "false",
    }


def settings_for(
    make_settings: Callable[..., Settings], fake_url: str, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {k.lower(): v for k, v in daemon_env(fake_url).items()}
    values.update(overrides)
    return make_settings(**values)


async def wait_until(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0, interval: float = 0.05
) -> float:
    """Poll `check` (plain or async) until true; return seconds waited; fail the test after
    `timeout`."""
    start = time.monotonic()
    while not await _holds(check):
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
    return time.monotonic() - start


async def _holds(check: Callable[[], Awaitable[bool] | bool]) -> bool:
    result = check()
    if inspect.isawaitable(result):
        return bool(await result)
    return bool(result)


@asynccontextmanager
async def running_daemon(settings: Settings, dsn: str) -> AsyncIterator[Daemon]:
    """The whole daemon in this event loop; stopped (gracefully) on exit."""
    stopping = asyncio.Event()
    started: list[Daemon] = []
    task = asyncio.create_task(
        run_daemon(settings, dsn, stopping=stopping, on_start=started.append)
    )

    async def listening() -> bool:
        if task.done():
            task.result()
        return bool(started) and started[0].listener is not None and started[0].listener.alive

    await wait_until(listening, timeout=15)
    try:
        yield started[0]
    finally:
        stopping.set()
        await asyncio.wait_for(task, timeout=30)


class DaemonProcess:
    """`python -m daemon run` as a child process."""

    def __init__(self, dsn: str, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        full_env = {**os.environ, **env, "DATABASE_URL": dsn, "LOYALTYD_LOG_FORMAT": "json"}
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--no-migrate"],
            cwd=REPO,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"daemon did not exit within {timeout} s")
            await asyncio.sleep(0.05)
        self._log.close()
        return self.proc.returncode

    async def terminate_timed(self, timeout: float) -> tuple[int, float]:
        """SIGTERM, then wait: the exit code and the seconds it took."""
        started = time.monotonic()
        self.terminate()
        code = await self.wait(timeout)
        return code, time.monotonic() - started

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop_now(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()
