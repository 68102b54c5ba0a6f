"""The queue engine: claim what free slots can take, run each job in its own task, write
outcomes back in batches, keep leases alive, and give unfinished work back on shutdown.

It runs any `daemon.engine.outcomes.Queue` (pass syncs, campaign deliveries). NOTIFY only rings the
doorbell; the engine always claims from the table, and also polls, so a lost notification
delays work by at most one poll interval and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from daemon.core.logs import get_logger
from daemon.core.metrics import Metrics
from daemon.engine.outcomes import Failed, Outcome, Queue, RetryLater, Skipped, Succeeded

J = TypeVar("J")
log = get_logger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    slots: int
    poll_interval: float
    lease_seconds: float
    record_batch: int = 500
    record_delay: float = 0.01


def outcome_label(outcome: Outcome) -> str:
    labels: dict[type, str] = {
        Succeeded: "sent",
        Failed: "failed",
        Skipped: "skipped",
        RetryLater: "retried",
    }
    return labels[type(outcome)]


class Worker(Generic[J]):
    def __init__(
        self,
        queue: Queue[J],
        config: WorkerConfig,
        *,
        owner: uuid.UUID,
        doorbell: asyncio.Event,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.config = config
        self.owner = owner
        # The doorbell doubles as the engine's wake-up: NOTIFY, a freed slot and shutdown
        # all set it, and the loop re-claims from the table whenever it is set.
        self.wake = doorbell
        self.metrics = metrics
        self._rng = rng or random.Random()
        self._monotonic = monotonic
        self._tasks: dict[asyncio.Task[None], J] = {}
        self._results: list[tuple[J, Outcome]] = []
        self._results_ready = asyncio.Event()
        self._claim_failures = 0
        # fewer rows per claim than this, while work is in flight, is not worth a statement
        self._min_claim = max(1, config.slots // 4)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def _held(self) -> int:
        """Rows leased to us: being worked on, or done but not yet recorded. A slot frees only
        once its outcome is written, so a crash can repeat at most `slots` sends."""
        return len(self._tasks) + len(self._results)

    async def run(self, stopping: asyncio.Event, grace: float) -> None:
        """Work until `stopping` is set, then drain for at most `grace` seconds."""
        log.info("worker_started", queue=self.queue.name, slots=self.config.slots)
        recorder = asyncio.create_task(self._record_loop())
        leases = asyncio.create_task(self._lease_loop())
        try:
            await self._claim_loop(stopping)
            await self._drain(grace)
        finally:
            # Runs on crash and cancellation too: finish recording, give the rest back.
            shutdown = asyncio.ensure_future(self._shutdown(recorder, leases))
            try:
                await asyncio.shield(shutdown)
            except asyncio.CancelledError:
                await shutdown
                raise
        log.info("worker_stopped", queue=self.queue.name)

    # --- claiming -------------------------------------------------------------------------

    async def _claim_loop(self, stopping: asyncio.Event) -> None:
        stop_waiter = asyncio.create_task(self._forward(stopping))
        try:
            while not stopping.is_set():
                free = self.config.slots - self._held
                if free < self._min_claim and self._held:
                    # Recording outcomes frees slots and rings again; until then there is
                    # nothing to claim for, whatever else rang.
                    self.wake.clear()
                    await self._sleep()
                    continue
                self.wake.clear()
                claimed = await self._claim(free)
                if claimed < free:
                    await self._sleep()
        finally:
            stop_waiter.cancel()

    async def _forward(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        self.wake.set()

    async def _sleep(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), self.config.poll_interval)

    async def _claim(self, limit: int) -> int:
        try:
            jobs = await self.queue.claim(self.owner, limit)
        except Exception as exc:  # a lost pool connection must not stop the daemon
            await self._claim_failed(exc)
            return limit  # don't wait a poll interval on top of the back-off
        self._claim_failures = 0
        for job in jobs:
            task = asyncio.create_task(self._work(job))
            self._tasks[task] = job
            task.add_done_callback(self._job_done)
        return len(jobs)

    async def _claim_failed(self, exc: Exception) -> None:
        self._claim_failures += 1
        delay = min(5.0, 0.1 * 2**self._claim_failures) * (0.5 + self._rng.random())
        log.warning(
            "claim_failed", queue=self.queue.name, error=repr(exc), retry_in=round(delay, 2)
        )
        await asyncio.sleep(delay)

    # --- working --------------------------------------------------------------------------

    async def _work(self, job: J) -> None:
        try:
            outcome = await self.queue.handle(job)
        except Exception as exc:
            # handle() turns failures into outcomes; anything escaping is a bug, recorded
            # as a visible failure rather than silently retried forever.
            log.exception("job_crashed", queue=self.queue.name)
            outcome = Failed(f"internal error: {exc!r}")
        self._results.append((job, outcome))
        if self.metrics is not None:
            self.metrics.deliveries.labels(self.queue.name, outcome_label(outcome)).inc()
        self._results_ready.set()

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    # --- recording outcomes ---------------------------------------------------------------

    async def _record_loop(self) -> None:
        while True:
            await self._results_ready.wait()
            if len(self._results) < self._min_claim:
                # Let a few more results join the batch: one UPDATE for many rows. Enough
                # waiting slots to be worth a claim are recorded (and freed) at once.
                await asyncio.sleep(self.config.record_delay)
            self._results_ready.clear()
            await self._flush()

    async def _flush(self) -> None:
        while self._results:
            batch = self._results[: self.config.record_batch]
            try:
                await self.queue.record(self.owner, batch)
            except Exception as exc:
                # Keep the results and try again; the leases are still ours for a while.
                log.warning("record_failed", queue=self.queue.name, error=repr(exc))
                await asyncio.sleep(0.5)
                continue
            del self._results[: len(batch)]
            self.wake.set()  # recorded rows free their slots

    # --- leases ---------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        interval = self.config.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            jobs = list(self._tasks.values())
            if not jobs:
                continue
            try:
                await self.queue.extend(self.owner, jobs)
            except Exception as exc:
                log.warning("lease_extend_failed", queue=self.queue.name, error=repr(exc))

    # --- shutdown -------------------------------------------------------------------------

    async def _drain(self, grace: float) -> None:
        """Let in-flight calls finish within `grace`; cancel what is left."""
        if self._tasks:
            log.info("worker_draining", queue=self.queue.name, in_flight=len(self._tasks))
            await asyncio.wait(list(self._tasks), timeout=grace)

    async def _shutdown(self, recorder: asyncio.Task[None], leases: asyncio.Task[None]) -> None:
        unfinished = list(self._tasks.values())
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for background in (recorder, leases):
            background.cancel()
        await asyncio.gather(recorder, leases, return_exceptions=True)
        # Outcomes of cancelled jobs never arrived, so they are exactly the ones to give back.
        await self._final_flush()
        if unfinished:
            await self._release(unfinished)

    async def _final_flush(self) -> None:
        try:
            await asyncio.wait_for(self._flush(), timeout=10)
        except TimeoutError:
            log.error("record_abandoned", queue=self.queue.name, results=len(self._results))

    async def _release(self, jobs: list[J]) -> None:
        try:
            await self.queue.release(self.owner, jobs)
            log.info("jobs_released", queue=self.queue.name, count=len(jobs))
        except Exception as exc:
            # Their leases will expire and another daemon (or our restart) takes them.
            log.warning("release_failed", queue=self.queue.name, error=repr(exc))
