"""Whether PassKit is answering, as this daemon sees it: for `/metrics`, `/readyz` details and
one warning a minute while it is down, instead of one per request.

PassKit counts as down after `DOWN_AFTER` transient failures in a row (5xx, timeouts,
connection errors; a 429 is PassKit answering, and does not count); any answer that is not
transient (2xx, or a 4xx refusal) brings it back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

from daemon.core.logs import get_logger
from daemon.core.metrics import Metrics

log = get_logger(__name__)

DOWN_AFTER: Final = 5
WARN_EVERY_SECONDS: Final = 60.0


class PassKitHealth:
    def __init__(
        self,
        metrics: Metrics | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        warn_every: float = WARN_EVERY_SECONDS,
    ) -> None:
        self._metrics = metrics
        self._clock = clock
        self._warn_every = warn_every
        self._failures = 0  # transient failures in a row
        self._down_since: float | None = None
        self._warned_at: float | None = None
        self._failures_since_warning = 0
        self.last_error: str | None = None
        # Set when PassKit answers again after being down (the outage watch releases the work
        # held back meanwhile, and clears it).
        self.recovered = asyncio.Event()

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def down_for(self) -> float:
        return 0.0 if self._down_since is None else self._clock() - self._down_since

    def failed(self, operation: str, error: str) -> None:
        self._failures += 1
        self._failures_since_warning += 1
        self.last_error = f"{operation}: {error}"
        now = self._clock()
        if self._down_since is None and self._failures >= DOWN_AFTER:
            self._down_since = now
            if self._metrics is not None:
                self._metrics.passkit_up.set(0)
        if self._down_since is None:
            return
        if self._warned_at is None or now - self._warned_at >= self._warn_every:
            log.warning(
                "passkit_unavailable",
                down_seconds=round(now - self._down_since, 1),
                failed_requests=self._failures_since_warning,
                last_error=self.last_error,
                detail="work waits in the queue until PassKit answers (probed every few "
                "seconds); nothing is lost",
            )
            self._warned_at = now
            self._failures_since_warning = 0

    def answered(self) -> None:
        if self._down_since is not None:
            log.info(
                "passkit_recovered",
                down_seconds=round(self._clock() - self._down_since, 1),
                failed_requests=self._failures,
            )
            if self._metrics is not None:
                self._metrics.passkit_up.set(1)
            self.recovered.set()
        self._failures = 0
        self._failures_since_warning = 0
        self._down_since = None
        self._warned_at = None
