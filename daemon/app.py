"""The composition root: builds every component from one Settings object, runs them under
one TaskGroup, and owns the shutdown sequence.

If any component crashes the TaskGroup cancels the rest and the process exits non-zero, so
systemd restarts it. SIGTERM/SIGINT only set the `stopping` event; each component then
winds down on its own terms (see `run_daemon`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import SecretStr

from daemon.birthday.bot import BirthdayBot
from daemon.campaigns.bulk import CHUNK_SLOTS, ChunkStore, MessageChunkHandler
from daemon.campaigns.delivery import DeliveryHandler
from daemon.campaigns.planner import (
    PLANNER_SLOTS,
    CampaignPlanner,
    planner_store,
)
from daemon.console.app import build_console
from daemon.console.feed import Feed
from daemon.core.channels import Channel
from daemon.core.clock import utc_now
from daemon.core.config import Settings
from daemon.core.logs import get_logger
from daemon.core.metrics import Metrics
from daemon.engine.retry import RetryPolicy
from daemon.engine.worker import Handler, Store, Worker, WorkerConfig
from daemon.history.retention import Retention
from daemon.ops.http import serve_http
from daemon.ops.sdnotify import notify_systemd
from daemon.passes.sync import PassSyncHandler
from daemon.passkit.budget import MIN_CLAIMED, FleetBudget, account_key
from daemon.passkit.client import PassKitClient, warn_if_mock
from daemon.passkit.outage import OutageWatch
from daemon.passkit.throttle import Throttle
from daemon.store.campaign_plans import CampaignPlans
from daemon.store.deliveries import DeliveryStore, MessageDeliveryStore
from daemon.store.instances import Heartbeat
from daemon.store.leases import LeasedTable, Takeovers
from daemon.store.listener import Listener
from daemon.store.outage import release_held_work
from daemon.store.passes import PassSyncStore
from daemon.store.pool import Pool, create_pool
from daemon.store.wallet import WalletEventStore
from daemon.wallet.inbox import WalletReadHandler
from daemon.wallet.scheduler import SweepScheduler
from daemon.wallet.seen import SeenReads
from daemon.wallet.sweep import Sweeper

log = get_logger(__name__)

T = TypeVar("T", bound=LeasedTable)


@dataclass(frozen=True)
class Daemon:
    """What is running, built once by `run_daemon`: for the HTTP server, the tests and the
    shutdown sequence."""

    settings: Settings
    dsn: str
    pool: Pool
    client: PassKitClient
    metrics: Metrics
    owner: uuid.UUID
    stopping: asyncio.Event
    heartbeat: Heartbeat
    workers: tuple[Worker[Any], ...]
    listener: Listener
    birthdays: BirthdayBot
    budget: FleetBudget | None = None
    feed: Feed | None = None  # the console's live feed, when the console is on
    seen: SeenReads | None = None  # coupons' and tickets' wallet state from the client's reads
    source: str = "DATABASE_URL"  # where the DSN came from, for error messages
    on_ready: Callable[[Daemon], Awaitable[None]] | None = None


def fleet_budget(settings: Settings, throttle: Throttle) -> FleetBudget | None:
    """Under a rate limit, this daemon's share of it (the limit is the account's)."""
    if settings.passkit_rate_limit <= 0:
        return None
    return FleetBudget(
        settings.passkit_rate_limit,
        settings.passkit_rate_burst,
        throttle.bucket,
        account=account_key(_secret(settings.passkit_api_key)),
        clock=time.monotonic,
    )


@asynccontextmanager
async def fleet_client(settings: Settings, pool: Pool) -> AsyncIterator[PassKitClient]:
    """A PassKit client for a command that calls PassKit beside the daemons (`loyaltyd
    wallet-sync`, `webhooks`): for as long as it runs it is one of the fleet, with a
    heartbeat, its share of the account's PASSKIT_RATE_LIMIT, and the same fence."""
    throttle = Throttle.from_settings(settings)
    budget = fleet_budget(settings, throttle)
    heartbeat = Heartbeat(
        pool,
        uuid.uuid4(),
        interval=settings.loyaltyd_heartbeat_seconds,
        stale=settings.loyaltyd_stale_seconds,
        budget=budget,
        account=account_key(_secret(settings.passkit_api_key)),
    )
    await heartbeat.beat()
    await heartbeat.beat()
    async with PassKitClient(settings, throttle=throttle, fence=heartbeat.fenced) as client:
        done = asyncio.Event()
        beating = asyncio.create_task(heartbeat.run(done), name="heartbeat")
        try:
            yield client
        finally:
            done.set()
            await beating


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def install_signal_handlers(stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig, stopping)


def _on_signal(sig: signal.Signals, stopping: asyncio.Event) -> None:
    log.info("shutdown_requested", signal=sig.name)
    stopping.set()


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        slots=settings.worker_slots,
        poll_interval=settings.loyaltyd_poll_interval_seconds,
        lease_seconds=settings.loyaltyd_lease_seconds,
        retry=RetryPolicy(
            base=settings.loyaltyd_retry_base_seconds,
            cap=settings.loyaltyd_retry_cap_seconds,
            max_age=settings.loyaltyd_retry_max_age_seconds,
        ),
    )


@dataclass(frozen=True)
class Sizing:
    """How many rows a queue's worker holds claimed: its slots, and (under a fleet budget)
    the capacity that keeps them to a few seconds of this daemon's share."""

    slots: int
    capacity: Callable[[], int] | None = None


def claim_sizes(settings: Settings, budget: FleetBudget | None) -> dict[str, Sizing]:
    """Every queue's claim size, decided here. Under a shared budget the PassKit queues hold
    a few seconds of this daemon's share (`FleetBudget.claim_capacity`); a campaign message
    costs `requests_per_message` requests (a read before the write), a Messages API chunk one
    request for many recipients; the planner plans a few campaigns at a time."""
    slots = settings.worker_slots
    capacity = budget.claim_capacity if budget is not None else None
    return {
        "sync": Sizing(slots, capacity),
        "campaign": Sizing(slots, _per_message(capacity, settings.requests_per_message)),
        "campaign_messages": Sizing(min(CHUNK_SLOTS, slots)),
        "planner": Sizing(PLANNER_SLOTS),
        "wallet_events": Sizing(slots),
    }


def _per_message(capacity: Callable[[], int] | None, requests: int) -> Callable[[], int] | None:
    """A capacity in requests as one in message writes of `requests` requests each: what the
    claimed rows hold is seconds of sending, whatever a message costs."""
    if capacity is None or requests == 1:
        return capacity
    return lambda: max(MIN_CLAIMED, capacity() // requests)


@dataclass(frozen=True)
class Queue:
    """One kind of work: its store, its handler, and whether it calls PassKit."""

    store: Store[Any]
    handler: Handler[Any]
    calls_passkit: bool = True


def queues(
    settings: Settings,
    pool: Pool,
    client: PassKitClient,
    metrics: Metrics,
    owner: uuid.UUID,
    takeovers: Takeovers,
) -> list[Queue]:
    """Every queue on the engine; adding one is one line here. Pass syncs, campaign
    recipients (pass by pass, and through the Messages API, whatever this daemon's own
    PASSKIT_CAMPAIGN_DELIVERY), the campaigns themselves (which the planner turns into
    recipients and finishes), and passes a PassKit webhook named (the read is the truth)."""

    def leased(table: type[T]) -> T:
        return table(
            pool,
            lease_seconds=settings.loyaltyd_lease_seconds,
            stale_seconds=settings.loyaltyd_stale_seconds,
            metrics=metrics,
            takeovers=takeovers,
        )

    messages = leased(MessageDeliveryStore)
    campaigns = planner_store(pool, settings, metrics, takeovers=takeovers)
    planner = CampaignPlanner(
        CampaignPlans(pool), settings, owner=owner, mock_mode=client.mock_mode, metrics=metrics
    )
    return [
        Queue(leased(PassSyncStore), PassSyncHandler(client)),
        Queue(leased(DeliveryStore), DeliveryHandler(client)),
        Queue(
            ChunkStore(messages, settings.passkit_message_chunk),
            MessageChunkHandler(client, messages),
        ),
        Queue(campaigns, planner, calls_passkit=False),
        Queue(leased(WalletEventStore), WalletReadHandler(client, pool)),
    ]


def workers(
    settings: Settings,
    work: list[Queue],
    sizes: dict[str, Sizing],
    client: PassKitClient,
    metrics: Metrics,
    owner: uuid.UUID,
) -> tuple[tuple[Worker[Any], ...], dict[Channel, asyncio.Event]]:
    """A worker per queue, and the doorbells their channels ring (shared per channel)."""
    doorbells: dict[Channel, asyncio.Event] = {}
    built = []
    for queue in work:
        size = sizes[queue.store.name]
        config = dataclasses.replace(worker_config(settings), slots=size.slots)
        built.append(
            Worker(
                queue.store,
                queue.handler,
                config,
                owner=owner,
                doorbell=doorbells.setdefault(queue.store.channel, asyncio.Event()),
                metrics=metrics,
                capacity=size.capacity,
                passkit_down=(lambda: client.health.down) if queue.calls_passkit else None,
            )
        )
    return tuple(built), doorbells


async def _supervise(daemon: Daemon) -> None:
    s = daemon.settings
    workers_done = asyncio.Event()

    async def run_workers() -> None:
        try:
            async with asyncio.TaskGroup() as workers:
                for worker in daemon.workers:
                    workers.create_task(
                        worker.run(daemon.stopping, s.loyaltyd_shutdown_grace_seconds),
                        name=f"worker-{worker.name}",
                    )
        finally:
            workers_done.set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(daemon.listener.run(daemon.stopping), name="listener")
        # The heartbeat outlives the workers' drain: a draining daemon is not dead.
        tg.create_task(daemon.heartbeat.run(workers_done), name="heartbeat")
        tg.create_task(run_workers(), name="workers")
        # Its gifts reach PassKit through the sync queue like any other transaction.
        tg.create_task(
            daemon.birthdays.run(daemon.stopping, s.loyaltyd_shutdown_grace_seconds),
            name="birthday-bot",
        )
        if daemon.feed is not None:
            tg.create_task(daemon.feed.run(daemon.stopping), name="console-feed")
        retention = _retention(daemon)
        if retention.enabled:
            tg.create_task(retention.run(daemon.stopping), name="history-retention")
        if not daemon.client.mock_mode:
            # Mock mode has no PassKit to sweep, nor to be down.
            tg.create_task(_outage_watch(daemon).run(daemon.stopping), name="passkit-outage")
            if s.loyaltyd_wallet_sweeps:
                tg.create_task(_sweeps(daemon).run(daemon.stopping), name="wallet-sweeps")
            if daemon.seen is not None:
                tg.create_task(daemon.seen.run(daemon.stopping), name="wallet-reads")
        # READY / WATCHDOG / STOPPING to systemd (a no-op outside it)
        tg.create_task(notify_systemd(daemon), name="systemd-notify")
        await daemon.heartbeat.mark_ready()
        log.info("daemon_ready", instance=str(daemon.owner))
        if daemon.on_ready is not None:
            await daemon.on_ready(daemon)


def _console(daemon: Daemon) -> web.Application | None:
    """The admins' console under /console/, when LOYALTYD_CONSOLE is on."""
    if daemon.feed is None:
        return None
    client = daemon.client
    return build_console(
        daemon.settings,
        daemon.pool,
        daemon.feed,
        stopping=daemon.stopping,
        passkit_down=lambda: client.health.down,
    )


def _retention(daemon: Daemon) -> Retention:
    s = daemon.settings
    return Retention(
        daemon.pool,
        delivery_days=s.loyaltyd_delivery_retention_days,
        sync_days=s.loyaltyd_sync_retention_days,
        metrics=daemon.metrics,
    )


def _sweeps(daemon: Daemon) -> SweepScheduler:
    s = daemon.settings
    sweeper = Sweeper(
        daemon.client,
        daemon.pool,
        s,
        dsn=daemon.dsn,
        owner=daemon.owner,
        source=daemon.source,
        metrics=daemon.metrics,
    )
    return SweepScheduler(daemon.pool, sweeper, hour=s.loyaltyd_wallet_sweep_hour)


def _outage_watch(daemon: Daemon) -> OutageWatch:
    async def release() -> int:
        return (await release_held_work(daemon.pool)).total

    return OutageWatch(
        daemon.client, release, probe_every=daemon.settings.loyaltyd_passkit_probe_seconds
    )


async def run_daemon(
    settings: Settings,
    dsn: str,
    *,
    stopping: asyncio.Event | None = None,
    on_start: Callable[[Daemon], None] | None = None,
    on_ready: Callable[[Daemon], Awaitable[None]] | None = None,
    source: str = "DATABASE_URL",
) -> None:
    """Run until `stopping` is set (signals set it when not given).

    Shutdown, in order: workers stop claiming, drain in-flight calls for at most the grace
    period and give back the rest (inside Worker.run); the listener closes; then the HTTP
    server (which answers /readyz with 503 while the others wind down), the PassKit session
    and finally the pool close here.
    """
    owner = uuid.uuid4()
    structlog.contextvars.bind_contextvars(instance=str(owner)[:8])
    if stopping is None:
        stopping = asyncio.Event()
        install_signal_handlers(stopping)
    warn_if_mock(settings)
    metrics = Metrics()
    pool = await create_pool(dsn, settings.loyaltyd_pool_size, source=source)
    try:
        # Built once, top-down: the budget shares the throttle's bucket, the heartbeat
        # publishes the budget and the rows taken over, the client is fenced by the heartbeat.
        throttle = Throttle.from_settings(settings)
        budget = fleet_budget(settings, throttle)
        takeovers = Takeovers()
        heartbeat = Heartbeat(
            pool,
            owner,
            interval=settings.loyaltyd_heartbeat_seconds,
            stale=settings.loyaltyd_stale_seconds,
            budget=budget,
            account=account_key(_secret(settings.passkit_api_key)),
            taken_over=takeovers.total,
        )
        seen = SeenReads(pool)
        async with PassKitClient(
            settings, metrics, throttle=throttle, fence=heartbeat.fenced, on_read=seen.note
        ) as client:
            # Alive before the first claim. The second beat publishes the share the first
            # worked out, and starts using it (a daemon alone gets the whole limit at once).
            await heartbeat.beat()
            try:
                await heartbeat.beat()
                daemon = _daemon(
                    settings,
                    dsn,
                    pool,
                    client,
                    metrics,
                    owner,
                    stopping,
                    heartbeat,
                    budget,
                    takeovers,
                    seen,
                    source=source,
                    on_ready=on_ready,
                )
                if on_start is not None:
                    on_start(daemon)
                # The HTTP port is bound first: a taken port stops start-up before any work.
                async with serve_http(daemon, console=_console(daemon)):
                    await _supervise(daemon)
            finally:
                if not heartbeat.ready:
                    # Failed or stopped before it was ready: it never was one of the fleet.
                    await asyncio.shield(heartbeat.leave())
    finally:
        await pool.close()
    log.info("daemon_stopped")


def _daemon(
    settings: Settings,
    dsn: str,
    pool: Pool,
    client: PassKitClient,
    metrics: Metrics,
    owner: uuid.UUID,
    stopping: asyncio.Event,
    heartbeat: Heartbeat,
    budget: FleetBudget | None,
    takeovers: Takeovers,
    seen: SeenReads,
    *,
    source: str,
    on_ready: Callable[[Daemon], Awaitable[None]] | None,
) -> Daemon:
    """The running daemon's parts: the queues and their workers, the listener ringing their
    doorbells (and the console's feed, when it is on), the birthday bot."""
    work = queues(settings, pool, client, metrics, owner, takeovers)
    built, doorbells = workers(
        settings, work, claim_sizes(settings, budget), client, metrics, owner
    )
    feed = Feed(pool, metrics=metrics) if settings.loyaltyd_console else None
    listener = Listener(
        dsn,
        doorbells,
        probe_interval=settings.loyaltyd_listener_probe_seconds,
        metrics=metrics,
        watchers={Channel.CAMPAIGNS: feed.rung} if feed is not None else None,
    )
    return Daemon(
        settings,
        dsn,
        pool,
        client,
        metrics,
        owner,
        stopping,
        heartbeat,
        built,
        listener,
        BirthdayBot(pool, settings, utc_now),
        budget=budget,
        feed=feed,
        seen=seen,
        source=source,
        on_ready=on_ready,
    )
