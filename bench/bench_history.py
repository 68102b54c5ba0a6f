"""A year of history (issue: cost stays flat as history grows), with the daemon as a real
subprocess against the fake PassKit:

    python -m bench.bench_history [--database-url postgresql://postgres@host/postgres]
                                  [--deliveries 20000000] [--syncs 5000000]
                                  [--steps blast wake status big bytes days]

Two databases on one server: EMPTY, and HISTORY, seeded (set-based, in minutes) with
`--deliveries` finished campaign deliveries over a year of daily campaigns and `--syncs`
finished pass syncs (one per pass: 5,000,000 passes). Both get the same blast program of
`--blast` members, 1,000 of whom already got 3 campaign messages in the last 24 h.

1. blast: the same `--blast`-recipient campaign in EMPTY, then in HISTORY (PassKit at 50 ms,
   concurrency 50). Target: HISTORY's rate >= 0.95 of EMPTY's. The frequency cap is exact:
   the 1,000 capped members are skipped, every other one gets one message.
2. wake: row inserted -> first PassKit request, in HISTORY. Target p50 <= 10 ms.
3. `loyaltyd status` (the report's reads) and a `/metrics` scrape on HISTORY. Target <= 200 ms.
4. a `--big`-member campaign starts in HISTORY (audience resolved, rows written): time and
   the daemon's RSS through it (reported).
5. bytes per delivery row (table and indexes): a personalised text per row, and the same text
   for everyone (stored once, on the campaign).
6. `--days` simulated days of `--per-day` deliveries, with the retention rule (90 days) and
   without: disk used every 50 days (each day ends with the vacuum autovacuum would run in
   24 h). Target: with retention, day 400 within 15 % of day 150.
7. the blast once more in HISTORY, by a daemon that meanwhile removes the deliveries past the
   90 days (three quarters of the year). Target: >= 0.95 of the blast without removal; the
   cap still exact.

Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg

from bench._common import Verdict, percentile, print_table, print_verdicts
from bench.bench_campaign import API_KEY, API_SECRET, daemon, real_env
from daemon.history.retention import Retention
from daemon.store.embedded import EmbeddedPostgres
from daemon.store.migrate import migrate
from daemon.store.status import status_report
from daemon.testing.databases import with_database
from daemon.testing.fakepasskit import ROUTE_UPDATE_MEMBER, FakePassKit, LatencyModel, issued_ids

REPO = Path(__file__).resolve().parent.parent
CAPPED = 1_000
# The daemons measured keep the whole year: its cost is what is measured (6. measures removal).
KEEP_ALL = {"LOYALTYD_DELIVERY_RETENTION_DAYS": "0", "LOYALTYD_SYNC_RETENTION_DAYS": "0"}
DAYS_OF_HISTORY = 365
STEPS = ("blast", "wake", "status", "big", "bytes", "days")
RATES: dict[str, float] = {}  # sent per second of the blasts, by database


# --- databases ---------------------------------------------------------------------------------


@asynccontextmanager
async def server(dsn: str | None) -> AsyncIterator[str]:
    if dsn is not None:
        yield dsn
        return
    embedded = EmbeddedPostgres(
        Path(tempfile.mkdtemp(prefix="loyaltyd-bench-")), remove_on_stop=True
    )
    try:
        yield embedded.start()
    finally:
        embedded.stop()


@asynccontextmanager
async def database(admin_dsn: str, label: str) -> AsyncIterator[str]:
    name = f"loyaltyd_bench_{label}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        dsn = with_database(admin_dsn, name)
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def members(conn: asyncpg.Connection, program: uuid.UUID, count: int, prefix: str) -> None:
    """`count` messageable members of `program` (passkit ids `{prefix}-{n}`), in batches."""
    step = 500_000
    for start in range(1, count + 1, step):
        stop = min(count, start + step - 1)
        await conn.execute(
            """
            WITH u AS (
                INSERT INTO users (email, first_name)
                SELECT $2 || '-' || n || '@example.com', 'M' || n
                  FROM generate_series($3::int, $4::int) n
                RETURNING id, substr(first_name, 2) AS n
            ),
            p AS (
                INSERT INTO passes_master (program_id, user_id, passkit_internal_id,
                                           external_id, status)
                SELECT $1, u.id, $2 || '-' || u.n, $2 || '-' || u.n, 'INSTALLED' FROM u
                RETURNING id
            )
            INSERT INTO protocol_membership (pass_id, points_balance) SELECT id, 10 FROM p
            """,
            program,
            prefix,
            start,
            stop,
        )


async def program(conn: asyncpg.Connection, name: str) -> uuid.UUID:
    value: uuid.UUID = await conn.fetchval(
        "INSERT INTO programs (name) VALUES ($1) RETURNING id", name
    )
    return value


async def finished_campaign(
    conn: asyncpg.Connection, program_id: uuid.UUID, days_ago: float, name: str
) -> uuid.UUID:
    """A COMPLETED campaign, written as the daemon writes it (sql/058)."""
    async with conn.transaction():
        await conn.execute("SELECT loyaltyd.writing_as_daemon()")
        value: uuid.UUID = await conn.fetchval(
            "INSERT INTO push_campaigns (program_id, name, message_text, status, started_at, "
            "finished_at) VALUES ($1, $2, 'Hello', 'COMPLETED', "
            "now() - make_interval(secs => $3 + 600), now() - make_interval(secs => $3)) "
            "RETURNING id",
            program_id,
            name,
            days_ago * 86_400,
        )
    return value


async def blast_program(conn: asyncpg.Connection, recipients: int) -> uuid.UUID:
    """The blast's program: `recipients` members, of whom CAPPED got 3 campaign messages in
    the last 24 h (its cap is the default, 3)."""
    blast = await program(conn, "Blast")
    await members(conn, blast, recipients, "b")
    for n in range(3):
        recent = await finished_campaign(conn, blast, 0.1 + n / 10, f"recent {n}")
        await conn.execute(
            "INSERT INTO loyaltyd.campaign_deliveries (campaign_id, pass_id, state, finished_at) "
            "SELECT $1, p.id, 'sent', now() - interval '2 hours' FROM passes_master p "
            "WHERE p.program_id = $2 ORDER BY p.external_id LIMIT $3",
            recent,
            blast,
            CAPPED,
        )
    return blast


async def seed_history(conn: asyncpg.Connection, deliveries: int, syncs: int, big: int) -> float:
    """A year of history; seconds it took."""
    started = time.perf_counter()
    big_program = await program(conn, "Big")
    await members(conn, big_program, big, "g")
    rest = max(0, syncs - big)
    history = await program(conn, "History")
    if rest:
        await conn.execute(
            "INSERT INTO passes_master (program_id, passkit_internal_id, external_id, status) "
            "SELECT $1, 'h-' || n, 'h-' || n, 'INSTALLED' FROM generate_series(1, $2) n",
            history,
            rest,
        )
    print(f"  {big + rest:,} passes in {time.perf_counter() - started:.0f} s", flush=True)
    await conn.execute(
        "INSERT INTO loyaltyd.pass_syncs (pass_id, program_id, state, updated_at, enqueued_at, "
        "last_synced_at) "
        "SELECT p.id, p.program_id, 'idle', t, t, t FROM passes_master p, "
        "LATERAL (SELECT now() - make_interval(secs => random() * 365 * 86400) AS t) x "
        "WHERE p.program_id IN ($1, $2) "
        "ON CONFLICT (pass_id) DO NOTHING",
        big_program,
        history,
    )
    print(f"  {syncs:,} idle pass syncs at {time.perf_counter() - started:.0f} s", flush=True)
    await conn.execute(
        "CREATE TEMP TABLE numbered AS SELECT row_number() OVER () AS n, id FROM passes_master "
        "WHERE program_id IN ($1, $2)",
        big_program,
        history,
    )
    await conn.execute("CREATE INDEX ON numbered (n)")
    total = await conn.fetchval("SELECT count(*) FROM numbered")
    per_day = deliveries // DAYS_OF_HISTORY
    for day in range(DAYS_OF_HISTORY):
        campaign = await finished_campaign(conn, history, DAYS_OF_HISTORY - day, f"day {day}")
        first = (day * per_day) % total
        await conn.execute(
            "INSERT INTO loyaltyd.campaign_deliveries (campaign_id, pass_id, state, finished_at) "
            "SELECT $1, id, 'sent', now() - make_interval(days => $4) FROM numbered "
            "WHERE n > $2 AND n <= $2 + $3",
            campaign,
            first,
            per_day,
            DAYS_OF_HISTORY - day,
        )
        if day % 73 == 72:
            print(
                f"  {(day + 1) * per_day:,} deliveries at {time.perf_counter() - started:.0f} s",
                flush=True,
            )
    await conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


# --- 1. the blast ------------------------------------------------------------------------------


async def run_blast(
    dsn: str, blast: uuid.UUID, recipients: int, keep: dict[str, str] = KEEP_ALL
) -> tuple[float, int, int]:
    """Sent per second, sent, skipped; `keep` the daemon's retention settings."""
    fake = FakePassKit(
        API_KEY,
        API_SECRET,
        latency=LatencyModel(median_ms=50, p99_ms=120),
        issued=issued_ids(""),
        record_bodies=False,
    )
    url = await fake.start()
    conn = await asyncpg.connect(dsn)
    try:
        async with daemon(dsn, real_env(url, 50, 0) | keep):
            campaign = await conn.fetchval(
                "INSERT INTO push_campaigns (program_id, name, message_text) VALUES ($1, "
                "'blast', 'Hi {first_name|friend}!') RETURNING id",
                blast,
            )
            started: float | None = None
            while True:
                row = await conn.fetchrow(
                    "SELECT status, started_at, sent_count, skipped_count FROM push_campaigns "
                    "WHERE id = $1",
                    campaign,
                )
                if started is None and row["started_at"] is not None:
                    started = time.perf_counter()
                if row["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                    break
                await asyncio.sleep(0.05)
            took = time.perf_counter() - (started or time.perf_counter())
        sent = sum(1 for r in fake.requests if r.route == ROUTE_UPDATE_MEMBER and r.status == 200)
        assert row["status"] == "COMPLETED", row
        expected = recipients - CAPPED
        assert sent == row["sent_count"] == expected, (sent, row["sent_count"], expected)
        return row["sent_count"] / took, row["sent_count"], row["skipped_count"]
    finally:
        await conn.close()
        await fake.stop()


# --- 2. wake -----------------------------------------------------------------------------------


async def wake(dsn: str, samples: int = 200) -> float:
    fake = FakePassKit(API_KEY, API_SECRET, issued=issued_ids(""), record_bodies=False)
    url = await fake.start()
    conn = await asyncpg.connect(dsn)
    try:
        passes = [
            tuple(r)
            for r in await conn.fetch(
                "SELECT p.id, p.passkit_internal_id FROM passes_master p "
                "JOIN protocol_membership m ON m.pass_id = p.id LIMIT $1",
                samples,
            )
        ]
        async with daemon(dsn, real_env(url, 20, 0) | KEEP_ALL):
            await asyncio.sleep(1)
            loop = asyncio.get_running_loop()
            inserted: dict[str, float] = {}
            for pass_id, passkit_id in passes:
                inserted[passkit_id] = loop.time()
                await conn.execute(
                    "SELECT process_membership_transaction($1, 1, 'EARN', NULL, NULL)", pass_id
                )
                await asyncio.sleep(0.02)
            await asyncio.sleep(1)
    finally:
        await conn.close()
        await fake.stop()
    first: dict[str, float] = {}
    for r in fake.requests:
        if r.pass_id is not None:
            first.setdefault(r.pass_id, r.at)
    waits = [(first[pk] - t) * 1000 for pk, t in inserted.items() if pk in first]
    assert len(waits) == len(inserted), f"{len(waits)} of {len(inserted)} reached PassKit"
    return percentile(waits, 50)


# --- 3. status and metrics ---------------------------------------------------------------------


async def status_and_metrics(dsn: str) -> tuple[float, float]:
    """Median milliseconds of five status reports and of five /metrics scrapes."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    assert pool is not None
    try:
        reports = []
        for _ in range(5):
            started = time.perf_counter()
            await status_report(pool, campaigns=5, dead=5)
            reports.append((time.perf_counter() - started) * 1000)
    finally:
        await pool.close()
    port = _free_port()
    scrapes = []
    env = {"LOYALTYD_HTTP_PORT": str(port), "PASSKIT_RATE_LIMIT": "0"} | KEEP_ALL
    async with daemon(dsn, env), aiohttp.ClientSession() as http:
        await asyncio.sleep(1)
        for _ in range(5):
            started = time.perf_counter()
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                await response.read()
                assert response.status == 200
            scrapes.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(1.1)  # past the gauges' once-a-second cache
    return statistics.median(reports), statistics.median(scrapes)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- 4. a big campaign starts ------------------------------------------------------------------


async def big_start(dsn: str) -> tuple[float, int, float, float]:
    """Seconds from insert to started (rows written), recipients, RSS at start and at most."""
    conn = await asyncpg.connect(dsn)
    try:
        big = await conn.fetchval("SELECT id FROM programs WHERE name = 'Big'")
        env = {"PASSKIT_RATE_LIMIT": "1", "PASSKIT_MOCK_LATENCY_MS": "0"} | KEEP_ALL
        async with daemon(dsn, env) as proc:
            rss = [proc.rss_mb()]
            started = time.perf_counter()
            campaign = await conn.fetchval(
                "INSERT INTO push_campaigns (program_id, name, message_text) VALUES ($1, 'big', "
                "'Hello') RETURNING id",
                big,
            )
            while True:
                rss.append(proc.rss_mb())
                row = await conn.fetchrow(
                    "SELECT started_at, recipient_count, status FROM push_campaigns WHERE id = $1",
                    campaign,
                )
                if row["started_at"] is not None or row["status"] == "FAILED":
                    break
                await asyncio.sleep(0.25)
            took = time.perf_counter() - started
            for _ in range(8):
                rss.append(proc.rss_mb())
                await asyncio.sleep(0.25)
            await conn.execute(
                "UPDATE push_campaigns SET status = 'CANCELLED' WHERE id = $1", campaign
            )
        return took, row["recipient_count"] or 0, rss[0], max(rss)
    finally:
        await conn.close()


# --- 5. bytes per delivery ---------------------------------------------------------------------


async def bytes_per_delivery(dsn: str, rows: int = 200_000) -> tuple[float, float]:
    """Bytes a sent delivery row costs (table and indexes): a text of its own, and none."""
    conn = await asyncpg.connect(dsn)
    try:
        p = await program(conn, "Bytes")
        sizes = []
        for text in ("Hi Ada, double points all weekend at Joe's Pizza, see you soon!", None):
            before = await conn.fetchval(
                "SELECT pg_total_relation_size('loyaltyd.campaign_deliveries')"
            )
            c = await finished_campaign(conn, p, 1, "bytes")
            await conn.execute(
                "INSERT INTO loyaltyd.campaign_deliveries (campaign_id, pass_id, state, "
                "rendered_text, finished_at) SELECT $1, gen_random_uuid(), 'sent', $2, now() "
                "FROM generate_series(1, $3)",
                c,
                text,
                rows,
            )
            await conn.execute("VACUUM ANALYZE loyaltyd.campaign_deliveries")
            after = await conn.fetchval(
                "SELECT pg_total_relation_size('loyaltyd.campaign_deliveries')"
            )
            sizes.append((after - before) / rows)
        return sizes[0], sizes[1]
    finally:
        await conn.close()


# --- 6. a year and more, day by day ------------------------------------------------------------


async def simulated_days(dsn: str, days: int, per_day: int, retention: bool) -> list[int]:
    """Disk used by the deliveries every 50 simulated days."""
    conn = await asyncpg.connect(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        p = await program(conn, f"Days {retention}")
        sizes = []
        for day in range(1, days + 1):
            ago = days - day  # "today" of the simulation, seen from now
            c = await finished_campaign(conn, p, ago, f"day {day}")
            await conn.execute(
                "INSERT INTO loyaltyd.campaign_deliveries (campaign_id, pass_id, state, "
                "finished_at) SELECT $1, gen_random_uuid(), 'sent', "
                "now() - make_interval(days => $3) FROM generate_series(1, $2)",
                c,
                per_day,
                ago,
            )
            if retention:
                # 90 days kept, counted from the simulation's today.
                await Retention(pool, delivery_days=90 + ago, sync_days=0).run_once()
            await conn.execute("VACUUM loyaltyd.campaign_deliveries")  # autovacuum's day
            if day % 50 == 0:
                sizes.append(
                    await conn.fetchval(
                        "SELECT pg_total_relation_size('loyaltyd.campaign_deliveries')"
                    )
                )
        return sizes
    finally:
        await pool.close()
        await conn.close()


# --- the run -----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="an admin DSN (default: an embedded Postgres)")
    parser.add_argument("--deliveries", type=int, default=20_000_000)
    parser.add_argument("--syncs", type=int, default=5_000_000)
    parser.add_argument("--blast", type=int, default=100_000)
    parser.add_argument("--big", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=400)
    parser.add_argument("--per-day", type=int, default=20_000)
    parser.add_argument(
        "--steps", nargs="+", choices=STEPS, default=list(STEPS), help="what to measure (all)"
    )
    return parser.parse_args()


async def bench(args: argparse.Namespace) -> int:
    verdicts: list[Verdict] = []
    steps = set(args.steps)
    async with server(args.database_url) as admin:
        async with database(admin, "empty") as empty, database(admin, "history") as history:
            for dsn in (empty, history):
                conn = await asyncpg.connect(dsn)
                await blast_program(conn, args.blast)
                await conn.close()
            print(f"seeding HISTORY: {args.deliveries:,} deliveries, {args.syncs:,} syncs…")
            conn = await asyncpg.connect(history)
            seeded = await seed_history(conn, args.deliveries, args.syncs, args.big)
            size = await conn.fetchval("SELECT pg_database_size(current_database())")
            await conn.close()
            print(f"seeded in {seeded:.0f} s; HISTORY is {size / 2**30:.1f} GB")
            if "blast" in steps:
                verdicts += await blasts(args, empty, history)
            if "wake" in steps:
                p50 = await wake(history)
                verdicts.append(Verdict("wake p50 in HISTORY (ms)", p50, 0, 10))
            if "status" in steps:
                status_ms, metrics_ms = await status_and_metrics(history)
                verdicts.append(Verdict("status report in HISTORY (ms)", status_ms, 0, 200))
                verdicts.append(Verdict("/metrics scrape in HISTORY (ms)", metrics_ms, 0, 200))
            if "big" in steps:
                took, recipients, rss0, rss_max = await big_start(history)
                print(
                    f"a {recipients:,}-recipient campaign started in {took:.1f} s (audience "
                    f"resolved, rows written); daemon RSS {rss0:.0f} MB -> {rss_max:.0f} MB"
                )
            if "blast" in steps:
                verdicts += await blast_while_removing(args, history)
            if "bytes" in steps:
                with_text, without = await bytes_per_delivery(empty)
                print(
                    f"bytes per delivery row (table + indexes): {with_text:.0f} with a text of "
                    f"its own, {without:.0f} with the campaign's text stored once"
                )
        if "days" in steps:
            verdicts += await days(admin, args)
    print()
    print_verdicts(verdicts)
    return 0 if all(v.ok for v in verdicts) else 1


async def blasts(args: argparse.Namespace, empty: str, history: str) -> list[Verdict]:
    verdicts = []
    for label, dsn in (("empty", empty), ("history", history)):
        rate, sent, skipped = await run_blast(dsn, await _blast_id(dsn), args.blast)
        RATES[label] = rate
        print(f"blast in {label}: {rate:,.0f} sent/s ({sent:,} sent, {skipped:,} skipped)")
        verdicts.append(Verdict(f"frequency cap exact ({label}): skipped", skipped, CAPPED, CAPPED))
    verdicts.append(Verdict("blast in HISTORY / in EMPTY", RATES["history"] / RATES["empty"], 0.95))
    return verdicts


async def blast_while_removing(args: argparse.Namespace, history: str) -> list[Verdict]:
    """7. The same blast once more in HISTORY, by a daemon that removes the year's expired
    deliveries (three quarters of them) meanwhile, from its start."""
    before = await _deliveries(history)
    rate, sent, skipped = await run_blast(history, await _blast_id(history), args.blast, {})
    removed = before + sent + skipped - await _deliveries(history)
    print(
        f"blast in HISTORY while retention removes: {rate:,.0f} sent/s "
        f"({removed:,} old deliveries removed meanwhile)"
    )
    return [
        Verdict("frequency cap exact (removing): skipped", skipped, CAPPED, CAPPED),
        Verdict("blast while removing / without", rate / RATES["history"], 0.95),
    ]


async def days(admin: str, args: argparse.Namespace) -> list[Verdict]:
    async with database(admin, "on") as on, database(admin, "off") as off:
        kept = await simulated_days(on, args.days, args.per_day, retention=True)
        grown = await simulated_days(off, args.days, args.per_day, retention=False)
    rows = [["day", "retention on (MB)", "retention off (MB)"]]
    for n, (a, b) in enumerate(zip(kept, grown, strict=True), start=1):
        rows.append([str(50 * n), f"{a / 2**20:,.0f}", f"{b / 2**20:,.0f}"])
    print()
    print_table(rows)
    if len(kept) < 8:
        return []
    return [Verdict("retention on: day 400 / day 150", kept[7] / kept[2], 0, 1.15)]


async def _deliveries(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        value: int = await conn.fetchval("SELECT count(*) FROM loyaltyd.campaign_deliveries")
        return value
    finally:
        await conn.close()


async def _blast_id(dsn: str) -> uuid.UUID:
    conn = await asyncpg.connect(dsn)
    try:
        value: uuid.UUID = await conn.fetchval("SELECT id FROM programs WHERE name = 'Blast'")
        return value
    finally:
        await conn.close()


def main() -> int:
    return asyncio.run(bench(parse_args()))


if __name__ == "__main__":
    sys.exit(main())
