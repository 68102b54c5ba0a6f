"""Time and waiting, in one place: the wall clock the pure parts take as a parameter, and
the two ways components wait (for any of several events, or until shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


async def wait_any(*events: asyncio.Event, within: float | None) -> None:
    """Return when any event is set, or after `within` seconds (None: no time limit)."""
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def sleep_or_stop(stopping: asyncio.Event, delay: float) -> None:
    """Sleep `delay` seconds, cut short by shutdown."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), delay)
