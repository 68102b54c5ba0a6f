"""The queue engine: claim what free slots can take, run each job in its own task, decide
what a failure means, write outcomes back in batches, keep leases alive, and give unfinished
work back on shutdown.

    Store.claim → Handler.handle → retry.decide (on failure) → Store.record

It runs any `Store` (pass syncs, campaign deliveries, the campaigns themselves) with its
`Handler`. NOTIFY only rings
the doorbell; the engine always claims from the table, and also polls, so a lost notification
delays work by at most one poll interval and loses nothing.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import structlog

from daemon.core.channels import Channel
from daemon.core.clock import wait_any
from daemon.core.errors import Fenced, LoyaltydError
from daemon.core.logs import get_logger
from daemon.core.metrics import Metrics
from daemon.engine.outcomes import Failed, Outcome, RetryLater, Skipped, Succeeded, code
from daemon.engine.retry import RetryPolicy, backoff, decide

log = get_logger(__name__)
# Never spin faster than this when a row is about to become due.
_MIN_IDLE_SECONDS = 0.01


class Job(Protocol):
    """A claimed row, frozen. `attempts` counts this one; `owed_seconds` is how long the work
    had been owed when it was claimed (the retry policy's age)."""

    @property
    def attempts(self) -> int: ...

    @property
    def owed_seconds(self) -> float: ...

    def log_fields(self) -> Mapping[str, str]:
        """Bound to every log line about this job (pass_id, campaign_id…)."""
        ...


J = TypeVar("J", bound=Job)
J_contra = TypeVar("J_contra", bound=Job, contravariant=True)


class Store(Protocol[J]):
    """A table of claimable work. Every method is one short SQL statement (or one batch)."""

    @property
    def name(self) -> str:
        """Metrics label and log field: "sync", "campaign", "planner"."""
        ...

    @property
    def channel(self) -> Channel:
        """The NOTIFY channel that rings this queue's doorbell."""
        ...

    async def claim(self, owner: uuid.UUID, limit: int) -> Sequence[J]:
        """Lease up to `limit` due rows to `owner` (FOR UPDATE SKIP LOCKED)."""
        ...

    async def record(self, owner: uuid.UUID, results: Sequence[tuple[J, Outcome]]) -> None:
        """Write outcomes back, only for rows still leased to `owner`."""
        ...

    async def extend(self, owner: uuid.UUID, jobs: Sequence[J]) -> None:
        """Push the lease of in-flight rows forward."""
        ...

    async def release(self, owner: uuid.UUID, jobs: Sequence[J]) -> None:
        """Give rows back for immediate pickup (shutdown)."""
        ...

    async def seconds_to_next(self) -> float | None:
        """When a row not due yet becomes due, if the store knows cheaply (None: the poll
        interval is soon enough)."""
        ...


class Handler(Protocol[J_contra]):
    """Does the work of one job and never touches the queue table. It returns what happened,
    or raises: a `TransientPassKitError` (tried again later), any other `LoyaltydError`
    (recorded as failed), anything else (a bug: failed, with a traceback in the log)."""

    async def handle(self, job: J_contra) -> Succeeded | Skipped: ...


@dataclass(frozen=True)
class WorkerConfig:
    slots: int
    poll_interval: float
    lease_seconds: float
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    record_batch: int = 500
    record_delay: float = 0.01


class Worker(Generic[J]):
    def __init__(
        self,
        store: Store[J],
        handler: Handler[J],
        config: WorkerConfig,
        *,
        owner: uuid.UUID,
        doorbell: asyncio.Event,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
        capacity: Callable[[], int] | None = None,
        passkit_down: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        self.handler = handler
        self.name = store.name
        self.config = config
        self.owner = owner
        # The doorbell doubles as the engine's wake-up: NOTIFY, a freed slot and shutdown
        # all set it, and the loop re-claims from the table whenever it is set.
        self.wake = doorbell
        self.metrics = metrics
        self._rng = rng or random.Random()
        # Fewer slots than configured while this is lower (the daemon's share of a rate limit
        # shared with other daemons: rows claimed beyond it would wait here, not elsewhere).
        self._capacity = capacity
        # For the queues that call PassKit: while it is down as a whole, nothing is claimed
        # (the work waits for PassKit, not for a back-off) and transient failures wait for it.
        self._passkit_down = passkit_down or (lambda: False)
        self._tasks: dict[asyncio.Task[None], J] = {}
        self._results: list[tuple[J, Outcome]] = []
        self._results_ready = asyncio.Event()
        self._claim_failures = 0
        # fewer rows per claim than this, while work is in flight, is not worth a statement
        self._min_claim = max(1, config.slots // 4)

    @property
    def _held(self) -> int:
        """Rows leased to us: being worked on, or done but not yet recorded. A slot frees only
        once its outcome is written, so a crash can repeat at most `slots` sends."""
        return len(self._tasks) + len(self._results)

    async def run(self, stopping: asyncio.Event, grace: float) -> None:
        """Work until `stopping` is set, then drain for at most `grace` seconds."""
        log.info("worker_started", queue=self.name, slots=self.config.slots)
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
        log.info("worker_stopped", queue=self.name)

    async def work_once(self) -> int:
        """One claim, its jobs run one after another, their outcomes recorded together; how
        many jobs there were. For one-shot runs and tests."""
        jobs = await self.store.claim(self.owner, self.config.slots)
        outcomes = [(job, await self._outcome_of_bound(job)) for job in jobs]
        results = [(job, outcome) for job, outcome in outcomes if outcome is not None]
        if results:
            await self.store.record(self.owner, results)
        return len(jobs)

    async def _outcome_of_bound(self, job: J) -> Outcome | None:
        with structlog.contextvars.bound_contextvars(**job.log_fields()):
            return await self._outcome_of(job)

    # --- claiming -------------------------------------------------------------------------

    async def _claim_loop(self, stopping: asyncio.Event) -> None:
        stop_waiter = asyncio.create_task(self._forward(stopping))
        try:
            while not stopping.is_set():
                free = self._slots - self._held
                if self._passkit_down():
                    # Rung again when PassKit answers (the rows held back are released).
                    self.wake.clear()
                    await wait_any(self.wake, within=self.config.poll_interval)
                    continue
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

    @property
    def _slots(self) -> int:
        if self._capacity is None:
            return self.config.slots
        return max(1, min(self.config.slots, self._capacity()))

    async def _forward(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        self.wake.set()

    async def _sleep(self) -> None:
        await wait_any(self.wake, within=await self._idle_for())

    async def _idle_for(self) -> float:
        try:
            due = await self.store.seconds_to_next()
        except Exception as exc:  # only a hint; the poll interval still applies
            log.warning("next_due_unknown", queue=self.name, error=repr(exc))
            due = None
        if due is None:
            return self.config.poll_interval
        return max(_MIN_IDLE_SECONDS, min(self.config.poll_interval, due))

    async def _claim(self, limit: int) -> int:
        try:
            jobs = await self.store.claim(self.owner, limit)
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
        delay = backoff(self._claim_failures, self._rng, base=0.1, cap=5.0)
        log.warning("claim_failed", queue=self.name, error=repr(exc), retry_in=round(delay, 2))
        await asyncio.sleep(delay)

    # --- working --------------------------------------------------------------------------

    async def _work(self, job: J) -> None:
        outcome = await self._outcome_of_bound(job)
        if outcome is None:
            return  # abandoned: its row is whoever's takes it over
        self._results.append((job, outcome))
        if self.metrics is not None:
            self.metrics.deliveries.labels(self.name, code(outcome)).inc()
        self._results_ready.set()

    async def _outcome_of(self, job: J) -> Outcome | None:
        """What came of the job; None when it was abandoned unsent (this daemon is fenced)."""
        try:
            return await self.handler.handle(job)
        except Fenced:
            log.warning("job_abandoned_fenced", queue=self.name)
            return None
        except LoyaltydError as exc:
            outcome = decide(
                exc,
                job.attempts,
                job.owed_seconds,
                self._rng,
                self.config.retry,
                passkit_down=self._passkit_down(),
            )
        except Exception as exc:
            # Anything else escaping a handler is a bug: recorded as a visible failure rather
            # than silently retried forever.
            log.exception("job_crashed", queue=self.name)
            return Failed(f"internal error: {exc!r}")
        if isinstance(outcome, RetryLater) and outcome.until_passkit_answers:
            log.info("job_waits_for_passkit", queue=self.name, attempts=job.attempts)
        elif isinstance(outcome, RetryLater):
            log.info(
                "job_retry_later",
                queue=self.name,
                attempts=job.attempts,
                retry_in=round(outcome.delay, 1),
                error=outcome.error,
            )
        else:
            log.warning("job_failed", queue=self.name, attempts=job.attempts, error=outcome.error)
        return outcome

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
                await self.store.record(self.owner, batch)
            except Exception as exc:
                # Keep the results and try again; the leases are still ours for a while.
                log.warning("record_failed", queue=self.name, error=repr(exc))
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
                await self.store.extend(self.owner, jobs)
            except Exception as exc:
                log.warning("lease_extend_failed", queue=self.name, error=repr(exc))

    # --- shutdown -------------------------------------------------------------------------

    async def _drain(self, grace: float) -> None:
        """Let in-flight calls finish within `grace`; cancel what is left."""
        if self._tasks:
            log.info("worker_draining", queue=self.name, in_flight=len(self._tasks))
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
            log.error("record_abandoned", queue=self.name, results=len(self._results))

    async def _release(self, jobs: list[J]) -> None:
        try:
            await self.store.release(self.owner, jobs)
            log.info("jobs_released", queue=self.name, count=len(jobs))
        except Exception as exc:
            # Their leases will expire and another daemon (or our restart) takes them.
            log.warning("release_failed", queue=self.name, error=repr(exc))
