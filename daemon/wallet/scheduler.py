"""When sweeps run: each program class that PassKit can list is swept once a day at
LOYALTYD_WALLET_SWEEP_HOUR in the program's time zone, and at start-up when it has not been
swept since the last such hour. Any daemon may find a sweep due; the advisory lock lets one
run it and the others skip it. Sweeps run one at a time per daemon."""

from __future__ import annotations

import asyncio

from daemon.core.clock import sleep_or_stop
from daemon.core.errors import LoyaltydError
from daemon.core.logs import get_logger
from daemon.store import wallet as store
from daemon.store.errors import DATABASE_ERRORS
from daemon.store.pool import Pool
from daemon.wallet.sweep import Sweeper

log = get_logger(__name__)

# How often the daemon looks for a sweep that has come due (and retries a failed one: a sweep
# that failed in the last ten minutes is not due yet, sql wallet_sweeps_due).
CHECK_SECONDS = 60.0


class SweepScheduler:
    def __init__(
        self,
        pool: Pool,
        sweeper: Sweeper,
        *,
        hour: int,
        check_every: float = CHECK_SECONDS,
    ) -> None:
        self._pool = pool
        self._sweeper = sweeper
        self._hour = hour
        self._check_every = check_every

    async def run(self, stopping: asyncio.Event) -> None:
        """Sweep what is due until `stopping` is set; a sweep in progress at shutdown is
        abandoned (its connection closes: nothing of it is applied)."""
        while not stopping.is_set():
            await self.sweep_due(stopping)
            await sleep_or_stop(stopping, self._check_every)

    async def sweep_due(self, stopping: asyncio.Event | None = None) -> int:
        """Every sweep due now, one after another; how many ran to the end."""
        try:
            due = await store.sweeps_due(self._pool, self._hour)
        except DATABASE_ERRORS as exc:
            log.warning("wallet_sweeps_unknown", error=repr(exc))
            return 0
        done = 0
        for target in due:
            if stopping is not None and stopping.is_set():
                break
            try:
                done += await self._sweeper.sweep(target) is not None
            except (LoyaltydError, *DATABASE_ERRORS):
                continue  # recorded and logged by the sweep; tried again later
            except Exception:
                # A sweep must never stop the daemon: what went wrong is logged whole, and the
                # program is swept again at its next daily hour.
                log.exception("wallet_sweep_crashed", program_id=str(target.program_id))
        return done
