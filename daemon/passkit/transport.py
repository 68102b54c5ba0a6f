"""The seam under the PassKit client: one request in, one reply out.

`PassKitClient` decides what to send, signs it, throttles it, retries it and reads the
answer; a transport only carries it. `HttpTransport` carries it to PassKit over aiohttp (the
only aiohttp client in loyaltyd, its errors mapped here into `daemon.core.errors`);
`daemon.passkit.mock.MockPassKit` answers in-process, as PassKit would, in mock mode. Both
sit under the same throttle, fleet budget and read-before-write, so a mock run paces, counts
and cancels like a real one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from daemon.core.config import Settings
from daemon.core.errors import PassKitError, PermanentPassKitError, TransportFailed
from daemon.core.logs import SecretScrubber
from daemon.passkit.routes import Endpoint


@dataclass(frozen=True, slots=True)
class Request:
    """One attempt, as built by the client: `params` are the endpoint's path parameters."""

    endpoint: Endpoint
    params: tuple[str, ...]
    url: str
    body: bytes | None
    headers: Mapping[str, str]

    @property
    def operation(self) -> str:
        return self.endpoint.operation


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    retry_after: str | None = None


class Streamed(Protocol):
    """A reply read line by line (grpc-gateway streams one JSON object per line)."""

    @property
    def status(self) -> int: ...

    async def read(self) -> bytes: ...

    def lines(self) -> AsyncIterator[bytes]: ...


class Transport(Protocol):
    async def send(self, request: Request) -> Reply:
        """The reply to one attempt; a failure to get one raises a PassKitError."""

    def stream(
        self, request: Request, *, idle_seconds: float
    ) -> AbstractAsyncContextManager[Streamed]:
        """The reply as it arrives; only silence longer than `idle_seconds` ends it."""

    async def close(self) -> None: ...


# --- aiohttp -----------------------------------------------------------------------------------


class HttpTransport:
    """Requests to PassKit over one aiohttp session (owned unless given)."""

    def __init__(
        self, settings: Settings, scrubber: SecretScrubber, session: aiohttp.ClientSession | None
    ) -> None:
        self._settings = settings
        self._scrubber = scrubber
        self._session = session
        self._owns_session = session is None

    async def send(self, request: Request) -> Reply:
        session = self._open()
        try:
            async with session.request(
                request.endpoint.method, request.url, data=request.body, headers=request.headers
            ) as response:
                body = await response.read()
                return Reply(response.status, body, response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_error(request.operation, exc, self._scrubber) from exc

    @asynccontextmanager
    async def stream(self, request: Request, *, idle_seconds: float) -> AsyncIterator[Streamed]:
        session = self._open()
        # No total limit (a program of a million members streams for a while): only silence
        # longer than `idle_seconds` ends it.
        timeout = aiohttp.ClientTimeout(total=None, sock_read=idle_seconds)
        try:
            response = await session.request(
                request.endpoint.method,
                request.url,
                data=request.body,
                headers=request.headers,
                timeout=timeout,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_error(request.operation, exc, self._scrubber) from exc
        async with response:
            yield _HttpStreamed(response, request.operation, self._scrubber)

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = _new_session(self._settings)
        return self._session


class _HttpStreamed:
    def __init__(
        self, response: aiohttp.ClientResponse, operation: str, scrubber: SecretScrubber
    ) -> None:
        self._response = response
        self._operation = operation
        self._scrubber = scrubber

    @property
    def status(self) -> int:
        return self._response.status

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_error(self._operation, exc, self._scrubber) from exc

    async def lines(self) -> AsyncIterator[bytes]:
        try:
            async for line in self._response.content:
                yield line
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_error(self._operation, exc, self._scrubber) from exc
        except ValueError as exc:  # aiohttp: one line longer than it reads ("Chunk too big")
            raise PermanentPassKitError(
                f"PassKit {self._operation} streamed a record too long to read: {exc}"
            ) from exc


def _transport_error(operation: str, exc: BaseException, scrubber: SecretScrubber) -> PassKitError:
    if isinstance(exc, aiohttp.InvalidURL):
        return PermanentPassKitError(f"PassKit {operation}: invalid URL {exc}")
    if isinstance(exc, TimeoutError):
        return TransportFailed(f"PassKit {operation} timed out")
    return TransportFailed(
        scrubber.scrub(f"PassKit {operation} failed: {type(exc).__name__}: {exc}")
    )


def _new_session(settings: Settings) -> aiohttp.ClientSession:
    """The session a transport owns: bounded time per request, one connection per slot."""
    total = settings.passkit_timeout_seconds
    timeout = aiohttp.ClientTimeout(total=total, connect=min(total, 10.0), sock_read=total)
    connector = aiohttp.TCPConnector(
        limit=settings.passkit_max_concurrency,
        limit_per_host=settings.passkit_max_concurrency,
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(
        timeout=timeout,
        connector=connector,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
