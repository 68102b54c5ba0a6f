"""What the database says about the work (queries/ops.sql): does it answer, how deep are the
queues, and the snapshot `loyaltyd status` prints. Read-only; every daemon on the database
reports the same."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from daemon.core.jsontext import jsonable
from daemon.core.logs import get_logger
from daemon.core.metrics import Metrics
from daemon.domain.retrying import RetryWait
from daemon.domain.wallet import LastSweep
from daemon.store.errors import DATABASE_ERRORS
from daemon.store.passes import PassSyncStore
from daemon.store.queries import q
from daemon.store.retention import HistoryTable, history_tables
from daemon.store.wallet import ProgramWallet, inbox_depth, wallet_status

log = get_logger(__name__)

# States of work still to do ('dead' rows wait for an operator, not for a worker).
OUTSTANDING = ("pending", "claimed")
SYNC_QUEUE = PassSyncStore.name
# Dead daemons listed by default (LOYALTYD_STATUS_DEAD_HOURS) and on the fleet gauges.
HOUR = 3600.0


async def database_ok(pool: asyncpg.Pool, within: float) -> bool:
    """The database answers a trivial query within `within` seconds."""
    try:
        async with asyncio.timeout(within):
            await pool.fetchval(q("ops_ping"))
    except DATABASE_ERRORS as exc:
        log.warning("database_unreachable", error=repr(exc))
        return False
    return True


# --- queue depths ----------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueDepth:
    """Rows of one queue ('sync' or 'campaign') in one state; age of the oldest in seconds."""

    queue: str
    state: str
    rows: int
    oldest_age: float


async def queue_depths(pool: asyncpg.Pool) -> list[QueueDepth]:
    rows = await pool.fetch(q("ops_queue_depths"))
    return [QueueDepth(r["queue"], r["state"], r["rows"], r["oldest_age"]) for r in rows]


async def refresh_queue_gauges(
    pool: asyncpg.Pool, metrics: Metrics, within: float, *, wallets: bool = True
) -> None:
    """Set the pass-sync queue's loyaltyd_queue_depth / loyaltyd_queue_oldest_age_seconds from
    the table, so a scrape sees it as it is (the whole database's queue: every daemon on it
    reports the same). The campaign queue's are kept by the campaign planner on each pass.
    On failure the previous values stay and the scrape still answers."""
    try:
        async with asyncio.timeout(within):
            row = await pool.fetchrow(q("ops_sync_queue_gauges"))
            instances = await pool.fetch(q("ops_instances"), HOUR)
            work = await pool.fetch(q("ops_work_by_program"))
            # Passes per status are kept counted (sql/073); the sweeps' and webhooks' parts
            # grow with the programs: the caller asks for them at most once a minute.
            programs = await wallet_status(pool) if wallets else None
            depth, _ = await inbox_depth(pool)
    except DATABASE_ERRORS as exc:
        log.warning("queue_gauges_stale", error=repr(exc))
        return
    metrics.queue_depth.labels(SYNC_QUEUE).set(row["rows"])
    metrics.queue_oldest_age.labels(SYNC_QUEUE).set(row["oldest_age"])
    metrics.dead_syncs.set(row["dead"])
    _show_fleet(metrics, [Instance.from_row(r) for r in instances])
    _show_work(metrics, [ProgramWork.from_row(r) for r in work])
    if programs is not None:
        _show_wallets(metrics, programs)
    metrics.wallet_inbox_depth.set(depth)


def _show_wallets(metrics: Metrics, wallets: list[ProgramWallet]) -> None:
    gauges = (
        metrics.wallet_passes,
        metrics.wallet_sweep_age,
        metrics.wallet_sweep_ok,
        metrics.wallet_sweep_drift,
        metrics.wallet_webhooks_received,
    )
    for gauge in gauges:
        gauge.clear()
    for w in wallets:
        program = str(w.program_id)
        for status, count in w.passes.items():
            metrics.wallet_passes.labels(program, status).set(count)
        if w.sweep_age is not None:
            metrics.wallet_sweep_age.labels(program).set(w.sweep_age)
        for event, count in w.webhooks.items():
            metrics.wallet_webhooks_received.labels(program, event).set(count)
        for sweep in w.sweeps:
            _show_sweep(metrics, program, sweep)


def _show_sweep(metrics: Metrics, program: str, sweep: LastSweep) -> None:
    if sweep.state == "running":
        return
    metrics.wallet_sweep_ok.labels(program, sweep.protocol).set(sweep.state == "completed")
    figures = sweep.summary
    if sweep.protocol == "MEMBERSHIP" and figures is not None:
        for outcome, value in (
            ("found", figures.drift_found),
            ("repaired", figures.drift_repaired),
            ("reported", figures.drift_reported),
        ):
            metrics.wallet_sweep_drift.labels(program, outcome).set(value)


def _show_fleet(metrics: Metrics, instances: list[Instance]) -> None:
    gauges = (
        metrics.fleet_heartbeat_age,
        metrics.fleet_budget_share,
        metrics.fleet_sent_per_second,
        metrics.fleet_taken_over,
    )
    for gauge in gauges:
        gauge.clear()
    for i in instances:
        labels = (str(i.id), i.host)
        metrics.fleet_heartbeat_age.labels(*labels).set(i.heartbeat_age)
        metrics.fleet_budget_share.labels(*labels).set(i.share)
        metrics.fleet_sent_per_second.labels(*labels).set(i.sent_per_second)
        metrics.fleet_taken_over.labels(*labels).set(i.taken_over)


def _show_work(metrics: Metrics, work: list[ProgramWork]) -> None:
    metrics.program_work.clear()
    metrics.program_oldest_age.clear()
    for w in work:
        labels = (str(w.program_id) if w.program_id else "none", w.queue)
        metrics.program_work.labels(*labels).set(w.rows)
        metrics.program_oldest_age.labels(*labels).set(w.oldest_age)


# --- the `loyaltyd status` snapshot ----------------------------------------------------------


@dataclass(frozen=True)
class CampaignProgress:
    id: uuid.UUID
    name: str | None
    program_name: str | None
    status: str
    recipients: int
    sent: int
    failed: int
    skipped: int
    percent: float
    error: str | None
    created_at: datetime
    retrying: RetryWait | None = None  # recipients waiting for another try, if any

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.skipped

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> CampaignProgress:
        return cls(
            id=row["id"],
            name=row["name"],
            program_name=row["program_name"],
            status=row["status"],
            recipients=row["recipient_count"],
            sent=row["sent_count"],
            failed=row["failed_count"],
            skipped=row["skipped_count"],
            percent=float(row["progress_percent"]),
            error=row["error"],
            created_at=row["created_at"],
        )


@dataclass(frozen=True)
class DeadSync:
    pass_id: uuid.UUID
    program_id: uuid.UUID | None
    program_name: str | None
    member_id: str | None
    attempts: int
    last_error: str | None
    failed_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> DeadSync:
        return cls(
            pass_id=row["pass_id"],
            program_id=row["program_id"],
            program_name=row["program_name"],
            member_id=row["external_id"],
            attempts=row["attempts"],
            last_error=row["last_error"],
            failed_at=row["updated_at"],
        )


@dataclass(frozen=True)
class BirthdaysToday:
    program_id: uuid.UUID
    program_name: str | None
    timezone: str | None
    timezone_known: bool
    bot_enabled: bool
    local_date: date
    gifted: int
    messaged: int

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> BirthdaysToday:
        return cls(
            program_id=row["program_id"],
            program_name=row["program_name"],
            timezone=row["timezone"],
            timezone_known=row["timezone_known"],
            bot_enabled=row["birthday_bot_enabled"],
            local_date=row["local_date"],
            gifted=row["gifted"],
            messaged=row["messaged"],
        )


@dataclass(frozen=True)
class Retrying:
    """Rows of one queue waiting for another try after a transient PassKit failure."""

    queue: str
    rows: int
    next_in: float
    latest_error: str | None
    # Of `rows`, those waiting for PassKit to answer again (held back while it was down).
    held: int = 0

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Retrying:
        return cls(
            row["queue"], row["rows"], max(0.0, row["next_in"]), row["latest_error"], row["held"]
        )


@dataclass(frozen=True)
class Instance:
    """A daemon on this database, by its heartbeat (loyaltyd.instances)."""

    id: uuid.UUID
    host: str
    pid: int
    started_at: datetime
    heartbeat_age: float
    rate_limit: float  # its PASSKIT_RATE_LIMIT (0: unlimited)
    share: float  # requests/s of the account's limit it may use
    sent_per_second: float  # what it sent over its last heartbeat
    taken_over: int  # rows it took over from dead daemons since it started

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Instance:
        return cls(
            row["id"],
            row["host"],
            row["pid"],
            row["started_at"],
            row["heartbeat_age"],
            row["rate_limit"],
            row["share"],
            row["sent_per_second"],
            row["taken_over"],
        )


@dataclass(frozen=True)
class ProgramWork:
    """Work owed to PassKit for one program and queue; age of the oldest in seconds."""

    program_id: uuid.UUID | None
    program_name: str | None
    queue: str
    rows: int
    oldest_age: float

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ProgramWork:
        return cls(
            row["program_id"], row["program_name"], row["queue"], row["rows"], row["oldest_age"]
        )


@dataclass(frozen=True)
class StatusReport:
    campaigns: tuple[CampaignProgress, ...] = ()
    queues: tuple[QueueDepth, ...] = ()
    retrying: tuple[Retrying, ...] = ()
    instances: tuple[Instance, ...] = ()
    work: tuple[ProgramWork, ...] = ()
    dead_syncs: tuple[DeadSync, ...] = ()
    birthdays: tuple[BirthdaysToday, ...] = ()
    wallets: tuple[ProgramWallet, ...] = ()
    history: tuple[HistoryTable, ...] = ()
    inbox: int = 0  # passes a webhook named, waiting to be re-read
    unknown_webhooks: int = 0  # webhooks about passes loyaltyd does not know

    @property
    def dead_sync_count(self) -> int:
        return sum(d.rows for d in self.queues if d.queue == "sync" and d.state == "dead")

    def to_dict(self) -> dict[str, Any]:
        data = {
            "campaigns": [asdict(c) for c in self.campaigns],
            "queues": [asdict(d) for d in self.queues],
            "retrying": [asdict(r) for r in self.retrying],
            "daemons": [asdict(i) for i in self.instances],
            "work_by_program": [asdict(w) for w in self.work],
            "dead_syncs": {
                "count": self.dead_sync_count,
                "recent": [asdict(d) for d in self.dead_syncs],
            },
            "birthdays_today": [asdict(b) for b in self.birthdays],
            "wallets": [asdict(w) for w in self.wallets],
            "history": [asdict(h) for h in self.history],
            "webhook_inbox": {"waiting": self.inbox, "unknown_passes": self.unknown_webhooks},
        }
        return {key: jsonable(value) for key, value in data.items()}


async def campaign_retry_waits(
    pool: asyncpg.Pool, campaigns: Sequence[uuid.UUID]
) -> dict[uuid.UUID, RetryWait]:
    """Per campaign with any: its recipients waiting for another try after a transient
    failure."""
    if not campaigns:
        return {}
    rows = await pool.fetch(q("campaign_retry_waits"), list(campaigns))
    return {
        r["campaign_id"]: RetryWait(r["waiting"], r["held"], r["next_in"], r["latest_error"])
        for r in rows
    }


async def status_report(
    pool: asyncpg.Pool, *, campaigns: int, dead: int, dead_daemons_shown: float = HOUR
) -> StatusReport:
    """`campaigns` campaigns (unfinished first), the `dead` newest dead syncs, daemons dead
    for less than `dead_daemons_shown` seconds, and the rest."""
    recent = await pool.fetch(q("ops_recent_campaigns"), campaigns)
    dead_rows = await pool.fetch(q("ops_dead_syncs"), dead)
    birthdays = await pool.fetch(q("ops_birthdays_today"))
    retrying = await pool.fetch(q("ops_retrying"))
    instances = await pool.fetch(q("ops_instances"), dead_daemons_shown)
    work = await pool.fetch(q("ops_work_by_program"))
    inbox, unknown = await inbox_depth(pool)
    running = [r["id"] for r in recent if r["status"] == "PROCESSING"]
    waits = await campaign_retry_waits(pool, running)
    return StatusReport(
        campaigns=tuple(
            dataclasses.replace(CampaignProgress.from_row(r), retrying=waits.get(r["id"]))
            for r in recent
        ),
        queues=tuple(await queue_depths(pool)),
        retrying=tuple(Retrying.from_row(r) for r in retrying),
        instances=tuple(Instance.from_row(r) for r in instances),
        work=tuple(ProgramWork.from_row(r) for r in work),
        dead_syncs=tuple(DeadSync.from_row(r) for r in dead_rows),
        birthdays=tuple(BirthdaysToday.from_row(r) for r in birthdays),
        wallets=tuple(await wallet_status(pool)),
        history=tuple(await history_tables(pool)),
        inbox=inbox,
        unknown_webhooks=unknown,
    )
