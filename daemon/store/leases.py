"""What every queue store shares: its pool, how long a lease lasts, when a silent daemon's
leases are void (its heartbeat is `stale_seconds` old), and counting the rows taken over."""

from __future__ import annotations

import asyncpg

from daemon.core.logs import get_logger
from daemon.core.metrics import Metrics

log = get_logger(__name__)


class Takeovers:
    """Rows this daemon's queues took over from dead daemons since it started (its heartbeat
    publishes the total)."""

    def __init__(self) -> None:
        self.count = 0

    def total(self) -> int:
        return self.count


class LeasedTable:
    name: str  # the queue: metrics label and log field

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        lease_seconds: float,
        stale_seconds: float = 5.0,
        metrics: Metrics | None = None,
        takeovers: Takeovers | None = None,
    ) -> None:
        self._pool = pool
        self._lease_seconds = lease_seconds
        self._stale_seconds = stale_seconds
        self._metrics = metrics
        self._takeovers = takeovers
        self.taken_over = 0

    def _count_taken_over(self, count: int) -> None:
        """Rows claimed from a dead daemon (its heartbeat stopped or its lease ran out)."""
        if not count:
            return
        self.taken_over += count
        if self._takeovers is not None:
            self._takeovers.count += count
        log.warning("leases_reclaimed", queue=self.name, count=count)
        if self._metrics is not None:
            self._metrics.leases_expired.labels(self.name).inc(count)
