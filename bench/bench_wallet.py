"""Wallet truth benchmarks (issue: wallet truth), against a fake PassKit in this process:

    python -m bench.bench_wallet [--database-url postgresql://postgres@host/postgres]
                                 [--members 1000000] [--blast 100000] [--webhooks 200]

1. sweep: `--members` passes INSTALLED by hand; PassKit (a generated program: 70 % installed,
   20 % uninstalled, 7 % invalidated, 3 % issued, one balance in a thousand changed in its
   portal) is swept by `loyaltyd wallet-sync`, a subprocess, twice: the first sweep writes
   every pass's wallet state, the second finds nothing new (the daily cost). Figures: members/s
   and the peak RSS of the sweeping process (target <= 150 MB).
2. webhooks under a blast: `loyaltyd run` (a subprocess) sends a `--blast`-recipient campaign
   (PASSKIT_MAX_CONCURRENCY 50, fake latency median 50 ms), and meanwhile `--webhooks` passes
   are uninstalled at PassKit, each announced by a webhook to the daemon's HTTP server.
   Figures: webhook -> passes_master.status latency p50 / p99 (target p99 <= 5 s).

Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from bench._common import Verdict, bench_database, percentile, print_table, print_verdicts
from bench.bench_campaign import DaemonProcess, seed_program
from daemon.testing.fakepasskit import FakePassKit, LatencyModel, issued_ids

REPO = Path(__file__).resolve().parent.parent
API_KEY = "bench-api-key"
API_SECRET = "bench-api-secret-long-enough-for-hs256-keys"
CLASS = "bench-wallet-program"
TOKEN = "bench-webhook-token-0123456789abcdefghij"
RSS_LIMIT_MB = 150.0
LATENCY_LIMIT_SECONDS = 5.0


def _status(i: int) -> str:
    r = i % 100
    if r < 70:
        return "PASS_INSTALLED"
    if r < 90:
        return "PASS_UNINSTALLED"
    if r < 97:
        return "PASS_INVALIDATED"
    return "PASS_ISSUED"


def _points(i: int) -> float:
    return 7.0 if i % 1000 == 0 else 10.0


def _env(fake_url: str, dsn: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": dsn,
        "PASSKIT_API_KEY": API_KEY,
        "PASSKIT_API_SECRET": API_SECRET,
        "PASSKIT_BASE_URL": fake_url,
        "PASSKIT_RATE_LIMIT": "0",
        "LOYALTYD_LOG_LEVEL": "WARNING",
    }


# --- 1. the sweep ------------------------------------------------------------------------------


async def _wallet_sync(env: dict[str, str], program: uuid.UUID) -> tuple[float, float, str]:
    """`loyaltyd wallet-sync --program`: seconds, peak RSS (MB) of the process, its output.
    Run from a thread, so this process's event loop (the fake PassKit) keeps answering."""
    return await asyncio.to_thread(_wallet_sync_blocking, env, program)


def _wallet_sync_blocking(env: dict[str, str], program: uuid.UUID) -> tuple[float, float, str]:
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "daemon", "wallet-sync", "--program", str(program)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
        # wait4 reports the child's own peak RSS (ru_maxrss, in KiB on Linux).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read().decode()
    seconds = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"wallet-sync failed:\n{output}")
    return seconds, usage.ru_maxrss / 1024, output


async def sweep_run(dsn: str, members: int) -> list[Verdict]:
    conn = await asyncpg.connect(dsn)
    try:
        program = await seed_program(conn, members, "g")
        # tier points compared too (each member holds 0 at PassKit and in the ledger)
        await conn.execute(
            "UPDATE programs SET passkit_program_id = $1, passkit_tier_points = true WHERE id = $2",
            CLASS,
            program,
        )
    finally:
        await conn.close()
    async with FakePassKit(API_KEY, API_SECRET) as fake:
        fake.add_generated_members(CLASS, members, prefix="g-", status=_status, points=_points)
        env = _env(fake.url, dsn)
        rows = [["sweep", "members", "seconds", "members/s", "peak RSS MB"]]
        verdicts = []
        for name in ("first (every pass new)", "second (nothing new)"):
            seconds, rss, output = await _wallet_sync(env, program)
            rows.append(
                [name, f"{members:,}", f"{seconds:.1f}", f"{members / seconds:,.0f}", f"{rss:.0f}"]
            )
            verdicts.append(Verdict(f"sweep {name.split()[0]}: peak RSS MB", rss, 0, RSS_LIMIT_MB))
            print(output.rstrip())
    print()
    print_table(rows)
    return verdicts


# --- 2. webhooks under a blast ---------------------------------------------------------------


async def webhook_run(dsn: str, recipients: int, webhooks: int, port: int) -> list[Verdict]:
    conn = await asyncpg.connect(dsn)
    try:
        program = await seed_program(conn, recipients, "b")
    finally:
        await conn.close()
    latency = LatencyModel(median_ms=50, p99_ms=150)
    async with FakePassKit(API_KEY, API_SECRET, latency=latency, issued=issued_ids("b-")) as fake:
        env = {
            **_env(fake.url, dsn),
            "PASSKIT_MAX_CONCURRENCY": "50",
            "LOYALTYD_HTTP_PORT": str(port),
            "LOYALTYD_PASSKIT_WEBHOOK_TOKEN": TOKEN,
            "LOYALTYD_WALLET_SWEEPS": "false",
        }
        env = {k: v for k, v in env.items() if k not in ("DATABASE_URL",)}
        daemon = DaemonProcess(dsn, env)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        assert pool is not None
        try:
            await asyncio.sleep(2.0)
            campaign = await pool.fetchval(
                "INSERT INTO push_campaigns (program_id, name, message_text) "
                "VALUES ($1, 'Bench blast', 'Flash sale today') RETURNING id",
                program,
            )
            await _until(
                pool, "SELECT sent_count >= 2000 FROM push_campaigns WHERE id = $1", campaign
            )
            sent_before = await _sent(pool, campaign)
            blast_started = time.monotonic()
            delays = await _webhooks(pool, fake, port, recipients, webhooks)
            blast_rate = (await _sent(pool, campaign) - sent_before) / (
                time.monotonic() - blast_started
            )
            await pool.execute(
                "UPDATE push_campaigns SET status = 'CANCELLED' WHERE id = $1", campaign
            )
        finally:
            await pool.close()
            daemon.stop()
    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    print_table(
        [
            ["webhooks under a blast", "count", "p50 s", "p99 s", "max s", "blast msg/s meanwhile"],
            [
                "uninstall -> passes_master.status",
                str(len(delays)),
                f"{p50:.3f}",
                f"{p99:.3f}",
                f"{max(delays):.3f}",
                f"{blast_rate:.0f}",
            ],
        ]
    )
    return [Verdict("webhook -> status p99 s", p99, 0, LATENCY_LIMIT_SECONDS)]


async def _webhooks(
    pool: asyncpg.Pool, fake: FakePassKit, port: int, recipients: int, count: int
) -> list[float]:
    """Uninstall `count` random passes at PassKit, one every 50 ms, each announced by a
    webhook; how long each took to show in passes_master.status."""
    url = f"http://127.0.0.1:{port}/passkit/webhook/{TOKEN}"
    chosen = random.Random(7).sample(range(1, recipients + 1), count)
    sent_at: dict[str, float] = {}
    seen: dict[str, float] = {}
    watcher = asyncio.create_task(_watch(pool, sent_at, seen, count))
    for n in chosen:
        passkit_id = f"b-{n}"
        fake.uninstall(passkit_id)
        sent_at[passkit_id] = time.monotonic()
        delivery = await fake.send_webhook(url, "PASS_EVENT_UNINSTALLED", passkit_id)
        if delivery.status != 200:
            raise RuntimeError(f"webhook answered {delivery.status}: {delivery.error}")
        await asyncio.sleep(0.05)
    await asyncio.wait_for(watcher, 60)
    return [seen[p] - sent_at[p] for p in sent_at]


async def _watch(
    pool: asyncpg.Pool, sent_at: dict[str, float], seen: dict[str, float], count: int
) -> None:
    while len(seen) < count:
        waiting = [p for p in sent_at if p not in seen]
        if waiting:
            rows = await pool.fetch(
                "SELECT passkit_internal_id FROM passes_master "
                "WHERE passkit_internal_id = ANY($1::text[]) AND status = 'UNINSTALLED'",
                waiting,
            )
            now = time.monotonic()
            for r in rows:
                seen[r["passkit_internal_id"]] = now
        await asyncio.sleep(0.01)


async def _until(pool: asyncpg.Pool, query: str, *args: object) -> None:
    deadline = time.monotonic() + 300
    while not await pool.fetchval(query, *args):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not reached in time: {query}")
        await asyncio.sleep(0.1)


async def _sent(pool: asyncpg.Pool, campaign: uuid.UUID) -> int:
    sent: int = await pool.fetchval("SELECT sent_count FROM push_campaigns WHERE id = $1", campaign)
    return sent


# --- main ----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--database-url", help="an admin DSN (default: an embedded Postgres)")
    parser.add_argument("--members", type=int, default=1_000_000, help="0 skips the sweep")
    parser.add_argument("--blast", type=int, default=100_000)
    parser.add_argument("--webhooks", type=int, default=200, help="0 skips run 2")
    parser.add_argument("--http-port", type=int, default=18_765)
    return parser.parse_args()


async def bench(args: argparse.Namespace) -> int:
    verdicts: list[Verdict] = []
    if args.members:
        async with bench_database(args.database_url) as dsn:
            verdicts += await sweep_run(dsn, args.members)
    if args.webhooks:
        print()
        async with bench_database(args.database_url) as dsn:
            verdicts += await webhook_run(dsn, args.blast, args.webhooks, args.http_port)
    print()
    print_verdicts(verdicts)
    return 0 if all(v.ok for v in verdicts) else 1


def main() -> int:
    return asyncio.run(bench(parse_args()))


if __name__ == "__main__":
    sys.exit(main())
