"""Wallet truth in Postgres (loyaltyd.wallet_* in docs/schema.sql; statements in
queries/wallet.sql).

- `SweepSession`: one sweep's own connection. It holds the program's advisory lock (two
  daemons never sweep one program at once; a crashed daemon's connection closes and frees it)
  and the staging table the list is copied into in batches; nothing is applied until the list
  has ended cleanly, then in one statement. A sweep killed half-way leaves nothing behind.
- `WalletEventStore`: the webhook inbox as an engine queue (one re-read per row).
- `apply_read`, `receive_event`: what one re-read said, and a webhook received.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from daemon.core.channels import Channel
from daemon.core.errors import TransientError
from daemon.domain.wallet import (
    Applied,
    Drift,
    LastSweep,
    SweepClass,
    SweepSummary,
    WalletRecord,
)
from daemon.engine.outcomes import Outcome, code, retry_in
from daemon.store.errors import DATABASE_ERRORS
from daemon.store.leases import LeasedTable
from daemon.store.pool import connect
from daemon.store.queries import bind, q

EVENTS_CHANNEL: Final = Channel.WALLET_EVENTS
# Rows a sweep writes beyond which loyaltyd.wallet_passes' statistics are refreshed.
ANALYZE_AFTER: Final = 10_000
# A sweep's rows are staged here; a re-read's values go by the same names (wallet_apply_read).
_STAGING: Final = "wallet_sweep_rows"
_STAGING_COLUMNS: Final = (
    "passkit_id",
    "status",
    "first_installed_at",
    "last_installed_at",
    "first_uninstalled_at",
    "last_uninstalled_at",
    "invalidated_at",
    "passkit_updated_at",
    "points",
    "tier_points",
)


def _row(record: WalletRecord) -> tuple[Any, ...]:
    t = record.times
    return (
        record.passkit_id,
        record.status,
        t.first_installed_at,
        t.last_installed_at,
        t.first_uninstalled_at,
        t.last_uninstalled_at,
        t.invalidated_at,
        t.updated_at,
        record.points,
        record.tier_points,
    )


# --- sweeps ---------------------------------------------------------------------------------


async def sweeps_due(pool: asyncpg.Pool, hour: int) -> list[SweepClass]:
    rows = await pool.fetch(q("wallet_sweeps_due"), hour)
    return [_sweep_class(r) for r in rows]


async def sweep_classes(pool: asyncpg.Pool, program_id: uuid.UUID | None) -> list[SweepClass]:
    rows = await pool.fetch(q("wallet_sweep_classes"), program_id)
    return [_sweep_class(r) for r in rows]


def _sweep_class(row: asyncpg.Record) -> SweepClass:
    return SweepClass(row["program_id"], row["protocol"], row["class_id"], row["name"] or "")


class SweepSession:
    """`async with SweepSession.open(dsn, source) as session:` a connection of the sweep's own."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.sweep_id: int | None = None
        self.started_at: datetime | None = None

    @classmethod
    async def open(cls, dsn: str, source: str = "DATABASE_URL") -> SweepSession:
        return cls(await connect(dsn, source=source))

    async def __aenter__(self) -> SweepSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Closing ends the session: its lock and its staging table go with it.
        await self._conn.close()

    async def lock(self, sweep: SweepClass) -> bool:
        """Whether this session now sweeps `sweep` (False: another daemon is at it)."""
        return bool(
            await self._conn.fetchval(q("wallet_sweep_lock"), sweep.program_id, sweep.protocol)
        )

    async def start(self, sweep: SweepClass, owner: uuid.UUID) -> None:
        row = await self._conn.fetchrow(
            q("wallet_sweep_start"), sweep.program_id, sweep.protocol, owner
        )
        self.sweep_id, self.started_at = row["id"], row["started_at"]
        await self._conn.execute(q("wallet_sweep_staging"))

    async def stage(self, records: Sequence[WalletRecord]) -> None:
        """A batch of the list, copied into the staging table (one short statement)."""
        await self._conn.copy_records_to_table(
            _STAGING, records=[_row(r) for r in records], columns=_STAGING_COLUMNS
        )

    async def apply(self, sweep: SweepClass) -> Applied:
        """The list, applied in one transaction; what re-reads said meanwhile stays."""
        await self._conn.execute(q("wallet_sweep_staging_ready"))
        async with self._conn.transaction():
            row = await self._conn.fetchrow(
                q("wallet_sweep_apply"), sweep.program_id, sweep.protocol, self.started_at
            )
            await self._conn.execute(
                q("wallet_sweep_reads_since"), sweep.program_id, self.started_at
            )
        applied = Applied(**dict(row))
        if applied.written > ANALYZE_AFTER:
            # Many new rows: the drift statement that follows plans with fresh statistics.
            await self._conn.execute("ANALYZE loyaltyd.wallet_passes")
        return applied

    async def missing(self, sweep: SweepClass, limit: int) -> tuple[list[str], int]:
        """Up to `limit` PassKit ids of passes the list lacked, and how many it lacked."""
        rows = await self._conn.fetch(
            q("wallet_sweep_missing"), sweep.program_id, sweep.protocol, max(limit, 1)
        )
        total = rows[0]["total"] if rows else 0
        return [r["passkit_internal_id"] for r in rows[:limit]], total

    async def drift(self, sweep: SweepClass, repair_cap: int) -> Drift:
        row = await self._conn.fetchrow(
            q("wallet_sweep_drift"), sweep.program_id, repair_cap, self.started_at
        )
        values = dict(row)
        values["reported_passes"] = tuple(values["reported_passes"] or ())
        return Drift(**values)

    async def finish(
        self,
        summary: SweepSummary | None,
        error: str | None = None,
        *,
        retry_in: float | None = None,
    ) -> None:
        """Record how the sweep ended; a failed one is tried again in `retry_in` seconds, or
        (None) at the next daily hour."""
        state = "completed" if error is None else "failed"
        document = json.dumps(summary.as_json()) if summary is not None else None
        await self._conn.execute(
            q("wallet_sweep_finish"), self.sweep_id, state, document, error, retry_in
        )


# --- one pass ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Moved:
    """A pass whose status a re-read changed (or would have, where the program opted out)."""

    pass_id: uuid.UUID
    program_id: uuid.UUID
    was: str | None
    moved: bool


@asynccontextmanager
async def database_trouble() -> AsyncIterator[None]:
    """Postgres trouble as the engine reads it: worth another try, later."""
    try:
        yield
    except DATABASE_ERRORS as exc:
        raise TransientError(f"database: {exc!r}") from exc


async def apply_read(pool: asyncpg.Pool, protocol: str, record: WalletRecord) -> list[Moved]:
    """What one read of a pass said (DELETED for a 404), applied to every pass of loyaltyd's
    holding that PassKit id."""
    # The read's values by the staging table's column names, which the statement's are too.
    values = dict(zip(_STAGING_COLUMNS, _row(record), strict=True))
    sql, args = bind("wallet_apply_read", protocol=protocol, **values)
    async with database_trouble():
        rows = await pool.fetch(sql, *args)
    return [Moved(r["pass_id"], r["program_id"], r["was"], r["moved"]) for r in rows]


@dataclass(frozen=True, slots=True)
class Received:
    program_id: uuid.UUID | None
    queued: bool


async def receive_event(
    pool: asyncpg.Pool, passkit_id: str, protocol: str, event: str, class_id: str | None
) -> Received:
    row = await pool.fetchrow(q("wallet_event_receive"), passkit_id, protocol, event, class_id)
    return Received(row["program_id"], row["queued"])


# --- the webhook inbox as a queue ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WalletEventJob:
    """A pass to re-read because a webhook named it."""

    id: int
    passkit_id: str
    protocol: str
    event: str
    attempts: int
    owed_seconds: float
    lease_expired: bool

    def log_fields(self) -> dict[str, str]:
        return {"passkit_id": self.passkit_id, "webhook_event": self.event}


class WalletEventStore(LeasedTable):
    name: Final = "wallet_events"
    channel: Final = EVENTS_CHANNEL

    async def claim(self, owner: uuid.UUID, limit: int) -> list[WalletEventJob]:
        rows = await self._pool.fetch(
            q("claim_wallet_events"), owner, limit, self._lease_seconds, self._stale_seconds
        )
        jobs = [WalletEventJob(**dict(r)) for r in rows]
        self._count_taken_over(sum(1 for j in jobs if j.lease_expired))
        return jobs

    async def record(
        self, owner: uuid.UUID, results: Sequence[tuple[WalletEventJob, Outcome]]
    ) -> None:
        await self._pool.execute(
            q("record_wallet_events"),
            owner,
            [job.id for job, _ in results],
            [code(outcome) for _, outcome in results],
            [retry_in(outcome) for _, outcome in results],
        )

    async def extend(self, owner: uuid.UUID, jobs: Sequence[WalletEventJob]) -> None:
        await self._pool.execute(
            q("extend_wallet_events"), owner, [j.id for j in jobs], self._lease_seconds
        )

    async def release(self, owner: uuid.UUID, jobs: Sequence[WalletEventJob]) -> None:
        await self._pool.execute(q("release_wallet_events"), owner, [j.id for j in jobs])

    async def seconds_to_next(self) -> None:
        return None


# --- what an operator sees ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProgramWallet:
    program_id: uuid.UUID
    name: str | None
    follows: bool
    passes: dict[str, int]
    sweeps: list[LastSweep]
    sweep_age: float | None
    webhooks: dict[str, int]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ProgramWallet:
        return cls(
            program_id=row["program_id"],
            name=row["name"],
            follows=row["follows"],
            passes=_json(row["passes"]) or {},
            sweeps=[LastSweep.from_json(s) for s in _json(row["sweeps"]) or []],
            sweep_age=row["sweep_age"],
            webhooks=_json(row["webhooks"]) or {},
        )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def wallet_status(pool: asyncpg.Pool) -> list[ProgramWallet]:
    return [ProgramWallet.from_row(r) for r in await pool.fetch(q("wallet_status_by_program"))]


async def inbox_depth(pool: asyncpg.Pool) -> tuple[int, int]:
    """Passes waiting to be re-read, and webhooks about passes loyaltyd does not know."""
    row = await pool.fetchrow(q("wallet_inbox_depth"))
    return int(row["depth"]), int(row["unknown"])
