"""Removal of old history (sql/068): finished campaign deliveries and idle pass syncs, in
small batches, under an advisory lock so one daemon at a time does it."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg

from daemon.store.queries import q

# One daemon at a time removes history (a session lock: released if its connection drops).
LOCK_KEY: Final = "loyaltyd:retention"
TABLES: Final = ("campaign_deliveries", "pass_syncs")

Connection = asyncpg.Connection
Batch = Callable[[], Awaitable[int]]  # one batch removed: how many rows


@dataclass(frozen=True, slots=True)
class FinishedCampaign:
    id: uuid.UUID
    finished_at: datetime


@dataclass(frozen=True, slots=True)
class HistoryTable:
    """A table loyaltyd keeps history in, as `loyaltyd status` shows it."""

    name: str
    rows: int  # the planner's estimate
    bytes: int  # on disk, with indexes
    oldest: datetime | None  # the oldest row kept
    last_run_at: datetime | None  # the last removal
    removed: int  # rows removed so far

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> HistoryTable:
        return cls(
            row["name"],
            row["rows"],
            row["bytes"],
            row["oldest"],
            row["last_run_at"],
            row["removed"],
        )


async def try_lock(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", LOCK_KEY)
    )


async def unlock(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", LOCK_KEY)


async def campaigns_due(
    conn: asyncpg.Connection, keep_seconds: float, limit: int
) -> list[FinishedCampaign]:
    rows = await conn.fetch(q("retention_campaigns_due"), keep_seconds, limit)
    return [FinishedCampaign(r["id"], r["finished_at"]) for r in rows]


async def remove_deliveries(conn: asyncpg.Connection, campaign: uuid.UUID, batch: int) -> int:
    return int(await conn.fetchval(q("retention_remove_deliveries"), campaign, batch))


async def remove_syncs(conn: asyncpg.Connection, keep_seconds: float, batch: int) -> int:
    return int(await conn.fetchval(q("retention_remove_syncs"), keep_seconds, batch))


async def advance(
    conn: asyncpg.Connection, table: str, purged_through: datetime | None, removed: int
) -> None:
    await conn.execute(q("retention_advance"), table, purged_through, removed)


async def vacuum(conn: asyncpg.Connection, table: str) -> None:
    """Make the space of removed rows reusable now (no lock that stops reads or writes)."""
    if table not in TABLES:
        raise ValueError(f"not a history table: {table!r}")
    await conn.execute(f"VACUUM (ANALYZE) loyaltyd.{table}")


async def history_tables(pool: asyncpg.Pool) -> list[HistoryTable]:
    return [HistoryTable.from_row(r) for r in await pool.fetch(q("history_tables"))]
