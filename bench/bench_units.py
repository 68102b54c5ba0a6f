"""What one recipient and one pass sync cost the database, for docs/scale.md, with the daemon
as a real subprocess against the fake PassKit (instant answers, concurrency 50, no limit):

    python -m bench.bench_units [--database-url postgresql://postgres@host/postgres]
                                [--recipients 20000] [--passes 20000]

1. a personalised campaign and one with the same text for all, `--recipients` each;
2. `--passes` transactions written (the triggers' share), then synced by the daemon.

For each, per unit: statements the daemon ran (pg_stat_statements, loaded on the embedded
server; on a server given with --database-url only where it is preloaded), transactions,
rows inserted, updated and deleted, WAL bytes, and bytes kept (table and indexes); and the
daemon's most frequent statements with their mean time, the claims among them. Bytes kept
are at rest (compacted), as the space a campaign's updates free is reused by the next. The same
daemon idle for as long is measured and taken off, as are this script's own reads.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench._common import print_table
from bench.bench_campaign import API_KEY, API_SECRET, daemon, real_env, seed_program
from daemon.store.embedded import EmbeddedPostgres
from daemon.store.migrate import migrate
from daemon.testing.databases import with_database
from daemon.testing.fakepasskit import FakePassKit, issued_ids

POLL_SECONDS = 0.5


# --- the server --------------------------------------------------------------------------------


@asynccontextmanager
async def server(dsn: str | None) -> AsyncIterator[str]:
    """An admin DSN: `dsn`, or an embedded server restarted once with pg_stat_statements."""
    if dsn is not None:
        yield dsn
        return
    root = Path(tempfile.mkdtemp(prefix="loyaltyd-bench-units-"))
    first = EmbeddedPostgres(root)
    admin = await asyncpg.connect(first.start())
    await admin.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    await admin.execute("ALTER SYSTEM SET pg_stat_statements.track = 'all'")
    await admin.close()
    first.stop()
    embedded = EmbeddedPostgres(root, remove_on_stop=True)
    try:
        yield embedded.start()
    finally:
        embedded.stop()
        shutil.rmtree(root, ignore_errors=True)


@asynccontextmanager
async def database(admin_dsn: str) -> AsyncIterator[str]:
    name = f"loyaltyd_units_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        dsn = with_database(admin_dsn, name)
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
            if await conn.fetchval(
                "SELECT 'pg_stat_statements' = ANY (string_to_array(replace("
                "current_setting('shared_preload_libraries'), ' ', ''), ','))"
            ):
                await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        finally:
            await conn.close()
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


# --- counters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counters:
    statements: int | None
    transactions: int
    inserted: int
    updated: int
    deleted: int
    wal: int

    def __sub__(self, other: Counters) -> Counters:
        statements = (
            None
            if self.statements is None or other.statements is None
            else self.statements - other.statements
        )
        return Counters(
            statements,
            self.transactions - other.transactions,
            self.inserted - other.inserted,
            self.updated - other.updated,
            self.deleted - other.deleted,
            self.wal - other.wal,
        )


async def has_statements(conn: asyncpg.Connection) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')"
    )
    return found


async def counters(dsn: str) -> Counters:
    """This database's counters, after the statistics of ended sessions are flushed."""
    await asyncio.sleep(1.5)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow(
            "SELECT xact_commit + xact_rollback AS transactions, tup_inserted, tup_updated, "
            "tup_deleted, pg_current_wal_lsn() - '0/0'::pg_lsn AS wal "
            "FROM pg_stat_database WHERE datname = current_database()"
        )
        statements = None
        if await has_statements(conn):
            statements = await conn.fetchval(
                "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s "
                "JOIN pg_roles r ON r.oid = s.userid "
                "WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND s.toplevel"
            )
        return Counters(
            statements,
            row["transactions"],
            row["tup_inserted"],
            row["tup_updated"],
            row["tup_deleted"],
            int(row["wal"]),
        )
    finally:
        await conn.close()


async def top_statements(dsn: str, limit: int = 12) -> list[list[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        if not await has_statements(conn):
            return []
        rows = await conn.fetch(
            "SELECT calls, mean_exec_time, rows, regexp_replace(query, '\\s+', ' ', 'g') AS q "
            "FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND toplevel ORDER BY calls DESC LIMIT $1",
            limit,
        )
        return [
            [f"{r['calls']:,}", f"{r['mean_exec_time']:.3f}", f"{r['rows']:,}", r["q"][:80]]
            for r in rows
        ]
    finally:
        await conn.close()


async def reset_statements(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        if await has_statements(conn):
            await conn.execute("SELECT pg_stat_statements_reset()")
    finally:
        await conn.close()


# --- the runs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    name: str
    units: int
    seconds: float
    counted: Counters
    polls: int  # this script's own statements among them
    kept_bytes: int


async def idle(dsn: str, url: str, seconds: float) -> Counters:
    """What the daemon costs doing nothing for `seconds`."""
    before = await counters(dsn)
    async with daemon(dsn, real_env(url, 50, 0)):
        await asyncio.sleep(seconds)
    return await counters(dsn) - before


async def campaign(dsn: str, url: str, program: uuid.UUID, name: str, text: str) -> Run:
    size = "SELECT pg_total_relation_size('loyaltyd.campaign_deliveries')"
    conn = await asyncpg.connect(dsn)
    try:
        # Sizes at rest (compacted): the space a campaign's updates leave is reused by the next.
        await conn.execute("VACUUM FULL loyaltyd.campaign_deliveries")
        bytes_before = await conn.fetchval(size)
    finally:
        await conn.close()
    before = await counters(dsn)
    polls = 0
    started = time.perf_counter()
    async with daemon(dsn, real_env(url, 50, 0)):
        conn = await asyncpg.connect(dsn)
        try:
            campaign_id = await conn.fetchval(
                "INSERT INTO push_campaigns (program_id, name, message_text) VALUES ($1, $2, $3) "
                "RETURNING id",
                program,
                name,
                text,
            )
            while True:
                await asyncio.sleep(POLL_SECONDS)
                polls += 1
                row = await conn.fetchrow(
                    "SELECT status, sent_count FROM push_campaigns WHERE id = $1", campaign_id
                )
                if row["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                    break
            assert row["status"] == "COMPLETED" and row["sent_count"] > 0, row
            took = time.perf_counter() - started
        finally:
            await conn.close()
    counted = await counters(dsn) - before
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM FULL loyaltyd.campaign_deliveries")
        kept = await conn.fetchval(size) - bytes_before
    finally:
        await conn.close()
    return Run(name, row["sent_count"], took, counted, polls + 1, kept)


async def syncs(dsn: str, url: str, program: uuid.UUID, passes: int) -> tuple[Run, Run]:
    """The transactions written (the triggers' share), then the daemon's syncs."""
    before = await counters(dsn)
    writer = await asyncpg.connect(dsn)  # closed, so its statistics are flushed
    started = time.perf_counter()
    try:
        await writer.execute(
            "SELECT process_membership_transaction(id, 5, 'EARN', NULL, NULL) "
            "FROM passes_master WHERE program_id = $1",
            program,
        )
    finally:
        await writer.close()
    conn = await asyncpg.connect(dsn)
    try:
        written = Run(
            "transactions written (triggers)",
            passes,
            time.perf_counter() - started,
            await counters(dsn) - before,
            1,
            0,
        )
        before = await counters(dsn)
        polls = 0
        started = time.perf_counter()
        async with daemon(dsn, real_env(url, 50, 0)):
            while True:
                await asyncio.sleep(POLL_SECONDS)
                polls += 1
                owed, dead = await conn.fetchrow(
                    "SELECT count(*) FILTER (WHERE state NOT IN ('idle', 'dead')), "
                    "count(*) FILTER (WHERE state = 'dead') "
                    "FROM loyaltyd.pass_syncs WHERE program_id = $1",
                    program,
                )
                if owed == 0:
                    assert dead == 0, f"{dead} pass syncs dead"
                    break
            took = time.perf_counter() - started
        counted = await counters(dsn) - before
        await conn.execute("VACUUM FULL loyaltyd.pass_syncs")
        kept = await conn.fetchval("SELECT pg_total_relation_size('loyaltyd.pass_syncs')")
        rows = await conn.fetchval("SELECT count(*) FROM loyaltyd.pass_syncs")
        synced = Run("pass syncs", passes, took, counted, polls, kept * passes // max(rows, 1))
        return written, synced
    finally:
        await conn.close()


def per_unit(run: Run, baseline: Counters, baseline_seconds: float) -> list[str]:
    """Figures per unit, the idle daemon's share for as long and the script's polls taken off."""
    share = run.seconds / baseline_seconds if baseline_seconds else 0.0

    def less(value: int, idle_value: int, polls: int = 0) -> str:
        return f"{(value - idle_value * share - polls) / run.units:.2f}"

    statements = (
        "n/a"
        if run.counted.statements is None or baseline.statements is None
        else less(run.counted.statements, baseline.statements, run.polls)
    )
    return [
        run.name,
        f"{run.units:,}",
        f"{run.seconds:.1f}",
        statements,
        less(run.counted.transactions, baseline.transactions, run.polls),
        less(run.counted.inserted, baseline.inserted),
        less(run.counted.updated, baseline.updated),
        less(run.counted.deleted, baseline.deleted),
        f"{(run.counted.wal - baseline.wal * share) / run.units:,.0f}",
        f"{run.kept_bytes / run.units:,.0f}" if run.kept_bytes else "",
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="an admin DSN (default: an embedded Postgres)")
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--passes", type=int, default=20_000)
    return parser.parse_args()


async def bench(args: argparse.Namespace) -> int:
    fake = FakePassKit(API_KEY, API_SECRET, issued=issued_ids(""), record_bodies=False)
    url = await fake.start()
    try:
        async with server(args.database_url) as admin, database(admin) as dsn:
            conn = await asyncpg.connect(dsn)
            try:
                audience = await seed_program(conn, args.recipients, "u")
                synced = await seed_program(conn, args.passes, "s")
            finally:
                await conn.close()
            await reset_statements(dsn)
            runs = [
                await campaign(dsn, url, audience, "personalised", "Hi {first_name|friend}!"),
                await campaign(dsn, url, audience, "same text for all", "Double points today"),
            ]
            written, synced_run = await syncs(dsn, url, synced, args.passes)
            runs += [written, synced_run]
            baseline_seconds = 20.0
            baseline = await idle(dsn, url, baseline_seconds)
            statements = await top_statements(dsn)
    finally:
        await fake.stop()
    print()
    print_table(
        [
            [
                "unit",
                "count",
                "seconds",
                "statements",
                "transactions",
                "inserted",
                "updated",
                "deleted",
                "WAL bytes",
                "bytes kept",
            ],
            *[
                per_unit(r, baseline, baseline_seconds)
                if r is not written
                else per_unit(r, Counters(0, 0, 0, 0, 0, 0), 0.0)
                for r in runs
            ],
        ]
    )
    print("(per unit; the idle daemon's share and this script's reads taken off)")
    if statements:
        print()
        print("the most frequent statements (all runs):")
        print_table([["calls", "mean ms", "rows", "statement"], *statements])
    return 0


def main() -> int:
    return asyncio.run(bench(parse_args()))


if __name__ == "__main__":
    sys.exit(main())
