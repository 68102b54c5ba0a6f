"""Helpers shared by the PassKit client, fake-server, policy and rate-limiter tests.

Imported explicitly (not through conftest.py) so these tests need no Postgres.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Coroutine, Iterator
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp
import jwt
import pytest
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core

from daemon.core.config import Settings

API_KEY = "test-api-key-0123456789"
# 32+ bytes: pyjwt warns about shorter HMAC keys.
API_SECRET = "test-api-secret-that-must-never-be-logged-0123"
BASE_URL = "https://api.test.passkit.io"

T = TypeVar("T")


def make_settings(base_url: str = BASE_URL, **overrides: Any) -> Settings:
    """Settings with credentials (real mode) unless overridden; no .env file is read."""
    values: dict[str, Any] = {
        "passkit_api_key": API_KEY,
        "passkit_api_secret": API_SECRET,
        "passkit_base_url": base_url,
        "passkit_rate_limit": 0,
        "passkit_timeout_seconds": 5.0,
    }
    values.update(overrides)
    return settings_of(values)


def settings_of(values: dict[str, Any]) -> Settings:
    """Settings from exactly these fields, no `.env`; a name Settings does not know is an error
    here (the daemon itself ignores unknown environment variables, so a test could not tell)."""
    unknown = sorted(set(values) - set(Settings.model_fields))
    if unknown:
        raise TypeError(f"Settings has no field {', '.join(unknown)}")
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def mock_settings(**overrides: Any) -> Settings:
    return make_settings(passkit_api_key=None, passkit_api_secret=None, **overrides)


def decode_token(header: str) -> dict[str, Any]:
    """The claims of an Authorization header value, verified with the test secret."""
    token = header.removeprefix("Bearer ")
    claims: dict[str, Any] = jwt.decode(
        token, API_SECRET, algorithms=["HS256"], options={"verify_exp": False}
    )
    return claims


class RecordingSleep:
    """A sleep that returns at once and remembers what it was asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class SteppingClock:
    """A wall clock that moves forward by `step` seconds each time it is read."""

    def __init__(self, start: float = 1_700_000_000.0, step: float = 1.0) -> None:
        self._ticks = itertools.count()
        self._start = start
        self._step = step

    def __call__(self) -> float:
        return self._start + next(self._ticks) * self._step


class VirtualTime:
    """Simulated time for asyncio code that takes `clock` and `sleep` parameters.

    `run()` drives the given coroutines: it lets every runnable task go as far as it can,
    then jumps the clock to the earliest sleeper and wakes it, until all are done.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(delay, 0.0), next(self._order), future))
        await future

    async def run(self, *coros: Coroutine[Any, Any, T]) -> list[T]:
        tasks = [asyncio.ensure_future(coro) for coro in coros]
        while not all(task.done() for task in tasks):
            await _settle()
            if all(task.done() for task in tasks):
                break
            if not self._sleepers:
                raise RuntimeError("deadlock: tasks pending but nobody is sleeping")
            self._wake_earliest()
        return [task.result() for task in tasks]

    def _wake_earliest(self) -> None:
        wake_at = self._sleepers[0][0]
        self.now = max(self.now, wake_at)
        while self._sleepers and self._sleepers[0][0] <= wake_at:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)


async def _settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


class _CompatResponse(aiohttp.ClientResponse):
    """aiohttp 3.14 made `stream_writer` a required argument of ClientResponse; aioresponses
    0.7.9 (the latest) does not pass it. A finished upload's writer only reports its size."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


def mocked_http(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    """aioresponses, made to work with the installed aiohttp (body of a fixture)."""
    monkeypatch.setattr(aioresponses_core, "ClientResponse", _CompatResponse)
    with aioresponses() as mocked:
        yield mocked
