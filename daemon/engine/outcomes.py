"""Values that cross layers: the outcome of one unit of work, and what a queue must offer.

Pure: no asyncpg, aiohttp or apscheduler here.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar


@dataclass(frozen=True)
class Succeeded:
    """The work reached PassKit (or mock mode counted it)."""


@dataclass(frozen=True)
class RetryLater:
    """A transient failure outlived the client's own retries; try again at `at`."""

    at: datetime
    error: str


@dataclass(frozen=True)
class Failed:
    """Permanent failure (or retries exhausted): recorded once, never retried by itself."""

    error: str


@dataclass(frozen=True)
class Skipped:
    """Deliberately not sent (frequency cap, opted out since, …)."""

    reason: str


Outcome = Succeeded | RetryLater | Failed | Skipped

J = TypeVar("J")


class Queue(Protocol[J]):
    """A table of claimable work. Every method is one short SQL statement (or one batch);
    `handle` is the only one that talks to PassKit, and it never holds a transaction."""

    name: str  # metrics label and log field: "sync", "campaign", …
    channel: str  # NOTIFY channel that rings this queue's doorbell

    async def claim(self, owner: uuid.UUID, limit: int) -> list[J]:
        """Lease up to `limit` due rows to `owner` (FOR UPDATE SKIP LOCKED)."""
        ...

    async def handle(self, job: J) -> Outcome:
        """Do the work; turn every failure into an Outcome (only cancellation escapes)."""
        ...

    async def record(self, owner: uuid.UUID, results: Sequence[tuple[J, Outcome]]) -> None:
        """Write outcomes back, only for rows still leased to `owner`."""
        ...

    async def extend(self, owner: uuid.UUID, jobs: Sequence[J]) -> None:
        """Push the lease of in-flight rows forward (long retries must not lose them)."""
        ...

    async def release(self, owner: uuid.UUID, jobs: Sequence[J]) -> None:
        """Give rows back for immediate pickup (shutdown)."""
        ...
