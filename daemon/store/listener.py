"""The doorbell: one dedicated LISTEN connection (never from the pool) that sets an
asyncio.Event per channel when a NOTIFY arrives.

The connection is probed every few seconds, so a dead or deaf one (terminated backend,
silent network) is noticed quickly and replaced with jittered back-off. After every
(re)connect every doorbell rings once: whatever was notified while we were deaf is found by
the claim that follows, because the tables, not the notifications, are the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg

from daemon.core.channels import Channel
from daemon.core.clock import sleep_or_stop, wait_any
from daemon.core.logs import get_logger
from daemon.core.metrics import Metrics
from daemon.engine.retry import backoff
from daemon.store.errors import DATABASE_ERRORS

log = get_logger(__name__)

Connect = Callable[[str], Awaitable[asyncpg.Connection]]


class Listener:
    def __init__(
        self,
        dsn: str,
        doorbells: Mapping[Channel, asyncio.Event],
        *,
        probe_interval: float,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
        connect: Connect | None = None,
        watchers: Mapping[Channel, asyncio.Event] | None = None,
    ) -> None:
        self._dsn = dsn
        self._doorbells = doorbells
        # Rung too, beside a channel's doorbell (the console's live feed watches campaigns).
        self._watchers = dict(watchers or {})
        self._probe_interval = probe_interval
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._connect = connect or _default_connect
        self._lost = asyncio.Event()
        self.alive = False
        self.connects = 0
        self.backend_pid: int | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        failures = 0
        while not stopping.is_set():
            conn = await self._open()
            if conn is None:
                failures += 1
                await sleep_or_stop(stopping, self._backoff(failures))
                continue
            failures = 0
            try:
                await self._serve(conn, stopping)
            finally:
                await self._close(conn)
            if not stopping.is_set():
                await sleep_or_stop(stopping, self._backoff(1))

    def _backoff(self, failures: int) -> float:
        return backoff(failures, self._rng, base=0.2, cap=10.0)

    async def _open(self) -> asyncpg.Connection | None:
        try:
            conn = await asyncio.wait_for(self._connect(self._dsn), timeout=10)
            for channel in self._doorbells:
                await conn.add_listener(channel, self._on_notify)
        except DATABASE_ERRORS as exc:
            log.warning("listener_connect_failed", error=repr(exc))
            return None
        return conn

    async def _serve(self, conn: asyncpg.Connection, stopping: asyncio.Event) -> None:
        self._lost.clear()
        conn.add_termination_listener(self._on_terminated)
        self._set_alive(True, conn)
        # Sweep: anything that arrived while we were not listening is claimed now.
        for doorbell in self._doorbells.values():
            doorbell.set()
        while not stopping.is_set():
            if not await self._probe(conn):
                return
            await wait_any(stopping, self._lost, within=self._probe_interval)

    async def _probe(self, conn: asyncpg.Connection) -> bool:
        if self._lost.is_set() or conn.is_closed():
            log.warning("listener_lost", reason="connection closed")
            return False
        try:
            await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=self._probe_interval)
        except DATABASE_ERRORS as exc:
            log.warning("listener_lost", reason=repr(exc))
            return False
        return True

    def _set_alive(self, alive: bool, conn: asyncpg.Connection | None = None) -> None:
        self.alive = alive
        if self._metrics is not None:
            self._metrics.listener_up.set(1 if alive else 0)
        if alive:
            self.connects += 1
            self.backend_pid = conn.get_server_pid() if conn is not None else None
            if self._metrics is not None:
                self._metrics.listener_reconnects.inc()
            log.info("listener_connected", channels=sorted(self._doorbells), connects=self.connects)

    async def _close(self, conn: asyncpg.Connection) -> None:
        self._set_alive(False)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), timeout=2)
        if not conn.is_closed():
            conn.terminate()

    def _on_notify(self, _conn: Any, _pid: int, name: str, _payload: str) -> None:
        channel = Channel(name)  # LISTENed to by name: always one of ours
        for ringing in (self._doorbells.get(channel), self._watchers.get(channel)):
            if ringing is not None:
                ringing.set()

    def _on_terminated(self, _conn: Any) -> None:
        self._lost.set()


async def _default_connect(dsn: str) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(
        dsn, server_settings={"application_name": "loyaltyd-listener"}
    )
    return conn
