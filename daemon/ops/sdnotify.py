"""Telling systemd how we are (`Type=notify`): READY once the daemon works, WATCHDOG while it
is healthy, STOPPING when it winds down. The sd_notify protocol, without libsystemd: one
datagram of `KEY=value` lines to the unix socket named by NOTIFY_SOCKET (a path, or an
abstract socket written with a leading '@').

The protocol's variables (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID) are set by the service
manager for this process, not configuration, so they are read here and not in Settings.
Outside systemd NOTIFY_SOCKET is unset and all of this does nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from types import TracebackType

from daemon.core.clock import sleep_or_stop
from daemon.core.logs import get_logger
from daemon.ops.readiness import Running, listener_alive
from daemon.store.status import database_ok

log = get_logger(__name__)

# How often the start-up check looks whether the listener is up yet.
_READY_POLL_SECONDS = 0.05


def socket_address(value: str | None) -> str | None:
    """The address to send to: a filesystem path, or an abstract name ('@x' -> '\\0x').
    None when unset or of a kind not supported here (systemd's vsock addresses)."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_timeout(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds systemd waits for a WATCHDOG=1 before it kills us; None when no watchdog is
    asked of this process (unset, not a positive integer, or meant for another pid)."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


class SdNotifier:
    """Sends sd_notify datagrams. A failed send is logged, never raised: telling systemd
    must not be what stops the daemon (a missing WATCHDOG will, if it matters)."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> SdNotifier | None:
        raw = environ.get("NOTIFY_SOCKET")
        address = socket_address(raw)
        if raw and address is None:
            log.warning("sd_notify_socket_unsupported", notify_socket=raw)
        return cls(address) if address is not None else None

    def send(self, *fields: str) -> bool:
        payload = "\n".join(fields).encode()
        try:
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            log.warning(
                "sd_notify_failed", fields=[f.split("=", 1)[0] for f in fields], error=repr(exc)
            )
            return False
        return True

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> SdNotifier:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()


async def notify_systemd(
    running: Running,
    *,
    environ: Mapping[str, str] = os.environ,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """The daemon's side of `Type=notify`, run beside the other components: READY=1 once
    the LISTEN connection is up (the workers are started before this runs), WATCHDOG=1 every
    half watchdog period while the event loop keeps time and the database answers, and
    STOPPING=1 as soon as shutdown begins (or this task is cancelled by a crash)."""
    notifier = SdNotifier.from_environ(environ)
    if notifier is None:
        return
    timeout = watchdog_timeout(environ, os.getpid())
    with notifier:
        try:
            if await _until_ready(running):
                # Logged first: the line reaches the journal before systemd's "Started",
                # which READY=1 makes it write.
                log.info("sd_notify_ready", watchdog_seconds=timeout)
                notifier.send("READY=1", "STATUS=running")
                await _watchdog(running, notifier, timeout, monotonic)
        finally:
            notifier.send("STOPPING=1", "STATUS=stopping: draining in-flight work")


async def _until_ready(running: Running) -> bool:
    """Wait for the listener; False when the daemon stops first."""
    while not listener_alive(running):
        if await _stopped_within(running.stopping, _READY_POLL_SECONDS):
            return False
    return not running.stopping.is_set()


async def _watchdog(
    running: Running,
    notifier: SdNotifier,
    period: float | None,
    monotonic: Callable[[], float],
) -> None:
    if period is None:
        await running.stopping.wait()
        return
    interval = period / 2  # sd_watchdog_enabled(3): ping at half the period
    while True:
        due = monotonic() + interval
        if await _stopped_within(running.stopping, interval):
            return
        if await _healthy(running, lag=monotonic() - due, interval=interval):
            notifier.send("WATCHDOG=1")


async def _healthy(running: Running, *, lag: float, interval: float) -> bool:
    """Withholding the ping is the point: if this stays false, systemd restarts us."""
    if lag > interval:
        # the loop was blocked for longer than a ping period: something hogs it
        log.warning("event_loop_stalled", lag_seconds=round(lag, 3))
        return False
    if not await database_ok(running.pool, interval):
        log.warning("watchdog_ping_withheld", reason="database unreachable")
        return False
    return True


async def _stopped_within(stopping: asyncio.Event, seconds: float) -> bool:
    await sleep_or_stop(stopping, seconds)
    return stopping.is_set()
