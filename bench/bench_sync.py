"""Pass-sync benchmarks, with the daemon as a real subprocess:

1. latency: row inserted -> first PassKit request at the fake (p50, p99);
2. throughput in mock mode (no HTTP, no simulated latency): syncs per second draining a queue
   of N owed syncs, the engine's own pace.

    python -m bench.bench_sync [--database-url postgresql://...] [--syncs 50000]

Targets (SPEC §5): p50 <= 20 ms, p99 <= 100 ms; >= 5,000 syncs/s. Exits 1 if missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from bench._common import bench_database, percentile
from daemon.testing.fakepasskit import FakePassKit, issued_ids

REPO = Path(__file__).resolve().parent.parent
KEY, SECRET = "bench-key", "bench-secret-0123456789abcdef-0123456789"


def start_daemon(dsn: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    full = {**os.environ, **env, "DATABASE_URL": dsn, "LOYALTYD_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "-m", "daemon", "run", "--no-migrate"],
        cwd=REPO,
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


async def seed_passes(conn: asyncpg.Connection, count: int) -> None:
    """`count` installed membership passes of one program, set-based (fast for 100k)."""
    await conn.execute(
        """
        WITH prog AS (INSERT INTO programs (name) VALUES ('Bench') RETURNING id),
        u AS (INSERT INTO users (email) SELECT 'bench' || i || '@example.com'
              FROM generate_series(1, $1) i RETURNING id),
        p AS (INSERT INTO passes_master (program_id, user_id, passkit_internal_id, external_id,
                                         status)
              SELECT prog.id, u.id, 'pk' || row_number() OVER (), 'M' || row_number() OVER (),
                     'INSTALLED' FROM u, prog RETURNING id)
        INSERT INTO protocol_membership (pass_id) SELECT id FROM p
        """,
        count,
    )


async def bench_latency(dsn: str, samples: int) -> tuple[float, float]:
    conn = await asyncpg.connect(dsn)
    await seed_passes(conn, samples)
    passes = [
        tuple(r) for r in await conn.fetch("SELECT id, passkit_internal_id FROM passes_master")
    ]
    await conn.execute("UPDATE loyaltyd.pass_syncs SET state = 'idle'")
    # Every member the bench seeded is issued at the fake.
    fake = FakePassKit(KEY, SECRET, issued=issued_ids(""), record_bodies=False)
    url = await fake.start()
    proc = start_daemon(
        dsn,
        {
            "PASSKIT_API_KEY": KEY,
            "PASSKIT_API_SECRET": SECRET,
            "PASSKIT_BASE_URL": url,
            "PASSKIT_RATE_LIMIT": "0",
        },
    )
    try:
        await asyncio.sleep(3)  # started and listening
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
        stop(proc)
        await fake.stop()
        await conn.close()
    first: dict[str, float] = {}
    for r in fake.requests:
        if r.pass_id is not None:
            first.setdefault(r.pass_id, r.at)
    lat = [(first[pk] - t0) * 1000 for pk, t0 in inserted.items() if pk in first]
    if len(lat) != len(inserted):
        raise SystemExit(f"only {len(lat)} of {len(inserted)} rows reached the fake")
    return percentile(lat, 50), percentile(lat, 99)


async def bench_mock_throughput(dsn: str, count: int) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "TRUNCATE programs, users, passes_master, protocol_membership, "
            "loyaltyd.pass_syncs CASCADE"
        )
        await seed_passes(conn, count)
        await conn.execute("UPDATE protocol_membership SET points_balance = 7")
        owed = await conn.fetchval(
            "SELECT count(*) FROM loyaltyd.pass_syncs WHERE state = 'pending'"
        )
        proc = start_daemon(
            dsn,
            {
                "PASSKIT_API_KEY": "",
                "PASSKIT_API_SECRET": "",
                "PASSKIT_RATE_LIMIT": "0",
                "PASSKIT_MAX_CONCURRENCY": "100",
                # The engine's own pace: mock mode otherwise waits 5 ms a call, as PassKit
                # might, which bounds 100 calls at once to 20,000/s before the database.
                "PASSKIT_MOCK_LATENCY_MS": "0",
            },
        )
        try:
            started = None
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"the daemon exited early with code {proc.returncode}")
                left = await conn.fetchval(
                    "SELECT count(*) FROM loyaltyd.pass_syncs WHERE state IN ('pending', 'claimed')"
                )
                now = time.monotonic()
                if started is None and left < owed:
                    started, at_start = now, left
                if left == 0:
                    break
                await asyncio.sleep(0.05)
        finally:
            stop(proc)
        dead = await conn.fetchval("SELECT count(*) FROM loyaltyd.pass_syncs WHERE state = 'dead'")
        if dead:
            raise SystemExit(f"{dead} syncs ended dead in mock mode")
    finally:
        await conn.close()
    assert started is not None
    # from the first sync seen to the last: daemon start-up is not part of the rate
    return float(at_start) / (now - started)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", help="admin DSN of a server (default: embedded)")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--syncs", type=int, default=50_000)
    args = parser.parse_args()
    async with bench_database(args.database_url) as dsn:
        p50, p99 = await bench_latency(dsn, args.samples)
        rate = await bench_mock_throughput(dsn, args.syncs)
    ok_latency = p50 <= 20 and p99 <= 100
    ok_rate = rate >= 5000
    print(f"{'metric':<44}{'figure':>12}{'target':>12}  ok")
    print(
        f"{'row inserted -> first PassKit request p50':<44}{p50:>9.1f} ms{'<= 20 ms':>12}"
        f"  {ok_latency}"
    )
    print(
        f"{'row inserted -> first PassKit request p99':<44}{p99:>9.1f} ms{'<= 100 ms':>12}"
        f"  {ok_latency}"
    )
    print(
        f"{f'mock-mode syncs/s ({args.syncs} owed)':<44}{rate:>12,.0f}{'>= 5,000':>12}  {ok_rate}"
    )
    return 0 if ok_latency and ok_rate else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
