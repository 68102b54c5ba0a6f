"""A TCP proxy between a daemon and Postgres that can cut the line like a network partition:
while cut, nothing passes either way and nothing is closed (the daemon's queries hang, as they
would behind a dead switch), and new connections wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


class CuttableProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        # A host starting with / is a directory holding Postgres's unix socket.
        self._upstream = (upstream_host, upstream_port)
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self._open.clear()

    def restore(self) -> None:
        self._open.set()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._open.wait()
        try:
            host, port = self._upstream
            if host.startswith("/"):
                path = f"{host}/.s.PGSQL.{port}"
                up_reader, up_writer = await asyncio.open_unix_connection(path)
            else:
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._open.wait()  # while cut, what was read is held back
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.close()


@contextlib.asynccontextmanager
async def cuttable_proxy(dsn: str) -> AsyncIterator[tuple[CuttableProxy, str]]:
    """A proxy in front of the server `dsn` names, and the DSN that goes through it."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    host = query.pop("host", parts.hostname or "127.0.0.1")
    port = int(query.pop("port", parts.port or 5432))
    proxy = CuttableProxy(host, port)
    await proxy.start()
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    through = urlunsplit(
        parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}", query=urlencode(query))
    )
    try:
        yield proxy, through
    finally:
        await proxy.stop()
