"""The queue engine without Postgres: a Worker against an in-memory store on a virtual clock.

What the engine promises, whatever the store: it claims only what free slots can take, writes
outcomes in batches, keeps leases of long calls alive, gives unfinished work back when it
stops, and turns a failure into the one retry decision, with the slot free meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from daemon.core.channels import Channel
from daemon.core.errors import Fenced, PermanentPassKitError, TransientPassKitError
from daemon.engine.outcomes import Failed, Outcome, RetryLater, Skipped, Succeeded
from daemon.engine.retry import RetryPolicy
from daemon.engine.worker import Worker, WorkerConfig
from tests.harness import wait_until


@dataclass(frozen=True, slots=True)
class Job:
    key: int
    attempts: int = 0
    owed_seconds: float = 0.0

    def log_fields(self) -> Mapping[str, str]:
        return {"job": str(self.key)}


@dataclass
class VirtualClock:
    now: float = 0.0


@dataclass
class _Row:
    job: Job
    due: float
    created: float
    leased_to: uuid.UUID | None = None
    outcome: Outcome | None = None


@dataclass
class MemoryStore:
    """A queue table in memory with what the SQL stores do: due times, leases, attempts
    counted at claim, retry delays from the moment of recording."""

    clock: VirtualClock
    name: str = "memory"
    channel: Channel = Channel.SYNCS  # any: nothing rings it here
    rows: dict[int, _Row] = field(default_factory=dict)
    claims: list[int] = field(default_factory=list)  # the limit of each claim
    records: list[list[tuple[Job, Outcome]]] = field(default_factory=list)
    extended: list[list[int]] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    most_held: int = 0
    fail_claims: int = 0

    def add(self, *keys: int) -> None:
        for key in keys:
            self.rows[key] = _Row(Job(key), due=self.clock.now, created=self.clock.now)

    @property
    def held(self) -> int:
        return sum(1 for r in self.rows.values() if r.leased_to is not None)

    def final(self) -> dict[int, Outcome | None]:
        return {k: r.outcome for k, r in self.rows.items()}

    async def claim(self, owner: uuid.UUID, limit: int) -> Sequence[Job]:
        self.claims.append(limit)
        if self.fail_claims:
            self.fail_claims -= 1
            raise ConnectionError("database went away")
        due = [
            r
            for r in self.rows.values()
            if r.leased_to is None and r.outcome is None and r.due <= self.clock.now
        ][:limit]
        jobs = []
        for row in due:
            row.leased_to = owner
            row.job = dataclasses.replace(
                row.job, attempts=row.job.attempts + 1, owed_seconds=self.clock.now - row.created
            )
            jobs.append(row.job)
        self.most_held = max(self.most_held, self.held)
        return jobs

    async def record(self, owner: uuid.UUID, results: Sequence[tuple[Job, Outcome]]) -> None:
        self.records.append(list(results))
        for job, outcome in results:
            row = self.rows[job.key]
            assert row.leased_to == owner, "only the lease holder records"
            row.leased_to = None
            if isinstance(outcome, RetryLater):
                row.due = self.clock.now + outcome.delay
            else:
                row.outcome = outcome

    async def seconds_to_next(self) -> float | None:
        return None

    async def extend(self, owner: uuid.UUID, jobs: Sequence[Job]) -> None:
        self.extended.append([j.key for j in jobs])

    async def release(self, owner: uuid.UUID, jobs: Sequence[Job]) -> None:
        for job in jobs:
            row = self.rows[job.key]
            row.leased_to = None
            row.job = dataclasses.replace(row.job, attempts=row.job.attempts - 1)
            self.released.append(job.key)


class ScriptedHandler:
    """Answers each job with what `script(job)` returns or raises; waits on `gate` first."""

    def __init__(self, script: Callable[[Job], Succeeded | Skipped] | None = None) -> None:
        self.script = script or (lambda job: Succeeded())
        self.gate: asyncio.Event | None = None
        self.handled: list[tuple[float, int]] = []
        self.clock: VirtualClock | None = None
        self.in_flight = 0
        self.most_in_flight = 0

    async def handle(self, job: Job) -> Succeeded | Skipped:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            self.handled.append((self.clock.now if self.clock else 0.0, job.key))
            return self.script(job)
        finally:
            self.in_flight -= 1


def worker_for(
    store: MemoryStore,
    handler: ScriptedHandler,
    *,
    slots: int = 4,
    lease_seconds: float = 60.0,
    retry: RetryPolicy | None = None,
) -> tuple[Worker[Job], asyncio.Event]:
    doorbell = asyncio.Event()
    config = WorkerConfig(
        slots=slots,
        poll_interval=0.01,
        lease_seconds=lease_seconds,
        retry=retry or RetryPolicy(),
    )
    worker = Worker(
        store, handler, config, owner=uuid.uuid4(), doorbell=doorbell, rng=random.Random(7)
    )
    return worker, doorbell


async def _all_final(store: MemoryStore) -> bool:
    return all(r.outcome is not None for r in store.rows.values())


async def test_claims_only_what_free_slots_can_take() -> None:
    store = MemoryStore(VirtualClock())
    store.add(*range(10))
    handler = ScriptedHandler()
    handler.gate = asyncio.Event()
    worker, _ = worker_for(store, handler, slots=4)
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping, grace=5))
    await wait_until(lambda: handler.in_flight == 4)
    await asyncio.sleep(0.05)  # several poll intervals: still nothing more claimed
    assert store.held == 4
    assert all(limit <= 4 for limit in store.claims)
    handler.gate.set()
    await wait_until(lambda: _all_final(store))
    stopping.set()
    await task
    assert store.most_held <= 4
    assert handler.most_in_flight <= 4
    assert store.final() == dict.fromkeys(range(10), Succeeded())


async def test_outcomes_are_recorded_in_batches_each_once() -> None:
    store = MemoryStore(VirtualClock())
    store.add(*range(200))
    worker, _ = worker_for(store, ScriptedHandler(), slots=100)
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping, grace=5))
    await wait_until(lambda: _all_final(store))
    stopping.set()
    await task
    recorded = [job.key for batch in store.records for job, _ in batch]
    assert sorted(recorded) == list(range(200)), "every outcome written exactly once"
    assert len(store.records) <= 20, f"{len(store.records)} record statements for 200 rows"


async def test_leases_of_long_calls_are_extended() -> None:
    store = MemoryStore(VirtualClock())
    store.add(1, 2)
    handler = ScriptedHandler()
    handler.gate = asyncio.Event()
    worker, _ = worker_for(store, handler, lease_seconds=0.09)  # extended every 0.03 s
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping, grace=5))
    await wait_until(lambda: len(store.extended) >= 3)
    assert all(sorted(keys) == [1, 2] for keys in store.extended)
    handler.gate.set()
    await wait_until(lambda: _all_final(store))
    stopping.set()
    await task


async def test_a_stop_drains_then_gives_unfinished_work_back() -> None:
    store = MemoryStore(VirtualClock())
    store.add(*range(6))
    handler = ScriptedHandler()
    handler.gate = asyncio.Event()  # never opened: the calls hang
    worker, _ = worker_for(store, handler, slots=3)
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping, grace=0.1))
    await wait_until(lambda: handler.in_flight == 3)
    stopping.set()
    await asyncio.wait_for(task, timeout=5)
    assert sorted(store.released) == [0, 1, 2]
    assert store.records == [], "nothing recorded for work that did not finish"
    assert store.held == 0
    assert all(r.job.attempts == 0 for r in store.rows.values()), "the attempt is not counted"


async def test_a_retry_after_frees_the_slot_and_holds_only_that_job_back() -> None:
    """Slots = 1: a 429 with Retry-After 90 on job 0 must not block job 1, and job 0 is not
    tried again before 90 s have passed on the clock."""
    clock = VirtualClock()
    store = MemoryStore(clock)
    store.add(0, 1)
    asked = {0: 0}

    def script(job: Job) -> Succeeded:
        if job.key == 0 and asked[0] == 0:
            asked[0] += 1
            raise TransientPassKitError("429 slow down", status=429, retry_after=90.0)
        return Succeeded()

    handler = ScriptedHandler(script)
    handler.clock = clock
    worker, doorbell = worker_for(store, handler, slots=1)
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping, grace=5))
    await wait_until(lambda: store.rows[1].outcome is not None)
    assert store.rows[0].outcome is None
    assert store.rows[0].due >= 90.0
    for now in (30.0, 60.0, 89.9):
        clock.now = now
        doorbell.set()
        await asyncio.sleep(0.05)
        assert [k for _, k in handler.handled].count(0) == 1, f"job 0 tried again at {now} s"
    clock.now = 90.0
    doorbell.set()
    await wait_until(lambda: store.rows[0].outcome is not None)
    stopping.set()
    await task
    assert handler.handled == [(0.0, 0), (0.0, 1), (90.0, 0)]
    [[(job, outcome)], *_] = store.records
    assert job.key == 0 and isinstance(outcome, RetryLater) and outcome.delay >= 90.0


async def test_failures_become_the_retry_decision() -> None:
    def script(job: Job) -> Succeeded | Skipped:
        if job.key == 0:
            raise PermanentPassKitError("404 not found", status=404)
        if job.key == 1:
            raise RuntimeError("a bug")
        if job.key == 2:
            return Skipped("not issued")
        return Succeeded()

    store = MemoryStore(VirtualClock())
    store.add(0, 1, 2, 3)
    worker, _ = worker_for(store, ScriptedHandler(script))
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping, grace=5))
    await wait_until(lambda: _all_final(store))
    stopping.set()
    await task
    assert store.final() == {
        0: Failed("404 not found"),
        1: Failed("internal error: RuntimeError('a bug')"),
        2: Skipped("not issued"),
        3: Succeeded(),
    }


async def test_a_failing_claim_is_retried_and_loses_nothing() -> None:
    store = MemoryStore(VirtualClock(), fail_claims=2)
    store.add(*range(5))
    worker, _ = worker_for(store, ScriptedHandler())
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping, grace=5))
    await wait_until(lambda: _all_final(store))
    stopping.set()
    await task
    assert store.final() == dict.fromkeys(range(5), Succeeded())


@pytest.mark.parametrize("outage_minutes", [10])
async def test_an_outage_heals_by_itself_on_virtual_time(outage_minutes: int) -> None:
    """PassKit answers 503 to everything for ten minutes, then recovers: every job arrives,
    none is failed, and each was tried a handful of times, not hundreds."""
    clock = VirtualClock()
    store = MemoryStore(clock)
    store.add(*range(30))
    outage_ends = outage_minutes * 60.0

    def script(job: Job) -> Succeeded:
        if clock.now < outage_ends:
            raise TransientPassKitError("503 unavailable", status=503)
        return Succeeded()

    handler = ScriptedHandler(script)
    handler.clock = clock
    worker, doorbell = worker_for(store, handler, slots=8)
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping, grace=5))
    while not await _all_final(store) and clock.now < 24 * 3600:
        await asyncio.sleep(0.01)
        if store.held == 0:
            waiting = [r.due for r in store.rows.values() if r.outcome is None]
            clock.now = max(clock.now, min(waiting, default=clock.now))  # the next due retry
            doorbell.set()
    stopping.set()
    await task
    assert store.final() == dict.fromkeys(range(30), Succeeded())
    tries = [k for _, k in handler.handled]
    assert all(2 <= tries.count(k) <= 12 for k in range(30))
    assert min(at for at, _ in handler.handled if at >= outage_ends) < outage_ends + 600 + 1


async def test_a_fenced_job_is_abandoned_unrecorded_and_its_slot_freed() -> None:
    """A daemon that lost its heartbeat sends nothing: the job is not recorded (its row is
    whoever's takes it over), and the worker goes on with the next."""

    def script(job: Job) -> Succeeded:
        if job.key == 0:
            raise Fenced("write_message not sent: this daemon lost its heartbeat")
        return Succeeded()

    store = MemoryStore(VirtualClock())
    store.add(0, 1, 2)
    worker, _ = worker_for(store, ScriptedHandler(script), slots=1)
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping, grace=5))
    await wait_until(lambda: all(store.rows[k].outcome is not None for k in (1, 2)))
    stopping.set()
    await task
    assert store.rows[0].outcome is None
    assert all(job.key != 0 for batch in store.records for job, _ in batch)
