"""Push campaign benchmarks (SPEC §5), with the daemon as a real subprocess:

    python -m bench.bench_campaign [--database-url postgresql://postgres@host/postgres]
                                   [--recipients 100000] [--mock-recipients 1000000]

1. blast: one campaign of `--recipients` sent by `loyaltyd run` (a subprocess) to a fake
   PassKit in this process with lognormal latency (median `--median-ms`, p99 `--p99-ms`),
   PASSKIT_MAX_CONCURRENCY `--concurrency`, no rate limit; once in each
   PASSKIT_METADATA_MODE (`--metadata-modes`): read_modify_write (the default, a GET before
   each write) and merge (the write alone), to show what the safe default costs.
   Target: requests/s >= 90 % of the ceiling `concurrency / mean latency` (the mean the fake
   waited); messages/s is requests/s divided by the requests a message takes.
2. the seeds' loop, reimplemented: the audience read in one query, then batches of 50 sent
   with gather, waiting for all, sleeping 200 ms; same fake, same client settings,
   `--baseline-recipients` of them. Target: the blast is >= 3x faster.
3. rate-limited blast: PASSKIT_RATE_LIMIT = `--rate-limit` over `--limited-recipients`.
   Target: requests/s 95-100 % of the limit.
4. mock mode (no PassKit credentials, nothing sent): a `--mock-recipients` campaign; the
   daemon's RSS sampled every 0.25 s from start to COMPLETED (target <= 200 MB); the time to
   resolve the audience (row inserted -> deliveries committed) printed.

Each run uses a program of its own (the frequency cap never interferes) and checks that
every recipient got exactly one message. Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from pydantic import SecretStr

from bench._common import Verdict, bench_database, print_table, print_verdicts
from daemon.core.config import Settings
from daemon.core.logs import configure_logging
from daemon.core.metrics import Metrics
from daemon.passkit.client import PassKitClient
from daemon.testing.fakepasskit import ROUTE_UPDATE_MEMBER, FakePassKit, LatencyModel, issued_ids

REPO = Path(__file__).resolve().parent.parent
API_KEY = "bench-api-key"
API_SECRET = "bench-api-secret-long-enough-for-hs256-keys"
SEED_BATCH = 50
SEED_PAUSE_SECONDS = 0.2
MESSAGE = "Double points this weekend, {first_name|friend}!"
RSS_LIMIT_MB = 200.0


# --- the daemon ------------------------------------------------------------------------------


class DaemonProcess:
    def __init__(self, dsn: str, env: dict[str, str]) -> None:
        full = {
            **os.environ,
            "PASSKIT_API_KEY": "",  # mock mode unless `env` has credentials
            "PASSKIT_API_SECRET": "",
            **env,
            "DATABASE_URL": dsn,
            "LOYALTYD_LOG_LEVEL": "WARNING",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--no-migrate"],
            cwd=REPO,
            env=full,
            stdout=subprocess.DEVNULL,
        )

    def rss_mb(self) -> float:
        """Resident set size of the daemon process, from /proc."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


@asynccontextmanager
async def daemon(dsn: str, env: dict[str, str]) -> AsyncIterator[DaemonProcess]:
    proc = DaemonProcess(dsn, env)
    try:
        await asyncio.sleep(2.0)  # connected and listening
        if proc.proc.poll() is not None:
            raise RuntimeError("the daemon exited at start-up")
        yield proc
    finally:
        proc.stop()


# --- database ----------------------------------------------------------------------------------


async def seed_program(conn: asyncpg.Connection, count: int, prefix: str) -> uuid.UUID:
    """A program with `count` messageable members (passkit ids `{prefix}-{n}`), set-based."""
    program: uuid.UUID = await conn.fetchval(
        "INSERT INTO programs (name, max_pushes_per_pass_per_day) VALUES ($1, 100) RETURNING id",
        f"Bench {prefix}",
    )
    await conn.execute(
        """
        WITH u AS (
            INSERT INTO users (email, first_name)
            SELECT $2 || '-' || n || '@example.com', 'M' || n FROM generate_series(1, $3) n
            RETURNING id, substr(first_name, 2) AS n
        ),
        p AS (
            INSERT INTO passes_master (program_id, user_id, passkit_internal_id, external_id,
                                       status)
            SELECT $1, u.id, $2 || '-' || u.n, $2 || '-' || u.n, 'INSTALLED' FROM u
            RETURNING id
        )
        INSERT INTO protocol_membership (pass_id, points_balance) SELECT id, 10 FROM p
        """,
        program,
        prefix,
        count,
    )
    await conn.execute("ANALYZE")
    return program


# --- measuring a campaign ----------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignRun:
    name: str
    recipients: int
    audience_seconds: float  # row inserted -> deliveries committed
    send_seconds: float  # deliveries committed -> COMPLETED
    sent: int
    requests: int = 0  # at the fake, while it ran

    @property
    def rate(self) -> float:
        return self.sent / self.send_seconds if self.send_seconds else 0.0

    @property
    def request_rate(self) -> float:
        return self.requests / self.send_seconds if self.send_seconds else 0.0


async def run_campaign(
    conn: asyncpg.Connection,
    program: uuid.UUID,
    name: str,
    on_sample: Callable[[], None] = lambda: None,
) -> CampaignRun:
    """Insert a campaign and watch it (every 50 ms) until COMPLETED."""
    started = time.perf_counter()
    campaign_id = await conn.fetchval(
        "INSERT INTO push_campaigns (program_id, name, message_text) VALUES ($1, $2, $3) "
        "RETURNING id",
        program,
        name,
        MESSAGE,
    )
    resolved: float | None = None
    while True:
        on_sample()
        row = await conn.fetchrow(
            "SELECT status, started_at, error, recipient_count, sent_count "
            "FROM push_campaigns WHERE id = $1",
            campaign_id,
        )
        now = time.perf_counter()
        if row["status"] in ("FAILED", "CANCELLED"):
            raise RuntimeError(f"{name}: campaign ended {row['status']}: {row['error']}")
        if resolved is None and row["started_at"] is not None:
            resolved = now
        if row["status"] == "COMPLETED":
            assert resolved is not None
            return CampaignRun(
                name, row["recipient_count"], resolved - started, now - resolved, row["sent_count"]
            )
        await asyncio.sleep(0.05)


def check_once_each(fake: FakePassKit, prefix: str, count: int) -> None:
    sent = Counter(
        r.pass_id
        for r in fake.requests
        if r.route == ROUTE_UPDATE_MEMBER
        and r.status == 200
        and (r.pass_id or "").startswith(prefix + "-")
    )
    assert len(sent) == count, f"{prefix}: {len(sent)} of {count} recipients got a message"
    assert max(sent.values()) == 1, f"{prefix}: a recipient got {max(sent.values())} messages"


def real_env(
    url: str, concurrency: int, rate: float, mode: str = "read_modify_write"
) -> dict[str, str]:
    return {
        "PASSKIT_METADATA_MODE": mode,
        "PASSKIT_API_KEY": API_KEY,
        "PASSKIT_API_SECRET": API_SECRET,
        "PASSKIT_BASE_URL": url,
        "PASSKIT_MAX_CONCURRENCY": str(concurrency),
        "PASSKIT_RATE_LIMIT": str(rate),
        "PASSKIT_TIMEOUT_SECONDS": "30",
    }


async def blast(
    conn: asyncpg.Connection,
    dsn: str,
    fake: FakePassKit,
    args: argparse.Namespace,
    recipients: int,
    rate: float,
    prefix: str,
    mode: str = "read_modify_write",
) -> CampaignRun:
    program = await seed_program(conn, recipients, prefix)
    fake.reset_requests()
    async with daemon(dsn, real_env(fake.url, args.concurrency, rate, mode)):
        result = await run_campaign(conn, program, prefix)
    check_once_each(fake, prefix, recipients)
    return dataclasses.replace(result, requests=fake.count())


async def seeds_loop(
    conn: asyncpg.Connection, fake: FakePassKit, args: argparse.Namespace
) -> CampaignRun:
    """The seeds' sendBroadcast: read the audience, then 50 at once, wait, sleep 200 ms."""
    program = await seed_program(conn, args.baseline_recipients, "seeds")
    fake.reset_requests()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        passkit_api_key=SecretStr(API_KEY),
        passkit_api_secret=SecretStr(API_SECRET),
        passkit_base_url=fake.url,
        passkit_max_concurrency=args.concurrency,
        passkit_rate_limit=0,
        passkit_timeout_seconds=30,
        passkit_metadata_mode=args.metadata_modes[0],  # as the blast it is compared with
    )
    started = time.perf_counter()
    passes = await conn.fetch(
        "SELECT p.passkit_internal_id, p.protocol, u.first_name FROM passes_master p "
        "JOIN users u ON u.id = p.user_id WHERE p.program_id = $1 AND p.is_active "
        "AND p.status = 'INSTALLED'",
        program,
    )
    read = time.perf_counter()
    async with PassKitClient(settings, Metrics()) as client:
        for start in range(0, len(passes), SEED_BATCH):
            batch = passes[start : start + SEED_BATCH]
            await asyncio.gather(
                *(
                    client.write_message(
                        p["protocol"],
                        p["passkit_internal_id"],
                        MESSAGE.replace("{first_name|friend}", p["first_name"]),
                    )
                    for p in batch
                )
            )
            await asyncio.sleep(SEED_PAUSE_SECONDS)
    done = time.perf_counter()
    check_once_each(fake, "seeds", len(passes))
    return CampaignRun("seeds' loop", len(passes), read - started, done - read, len(passes))


@dataclass(frozen=True)
class MockRun:
    run: CampaignRun
    max_rss_mb: float
    start_rss_mb: float


async def mock_blast(conn: asyncpg.Connection, dsn: str, args: argparse.Namespace) -> MockRun:
    print(f"seeding {args.mock_recipients:,} members for the mock run…", flush=True)
    program = await seed_program(conn, args.mock_recipients, "mock")
    # The mock run measures the audience and memory: mock PassKit unpaced and instant.
    env = {
        "PASSKIT_MAX_CONCURRENCY": str(args.mock_concurrency),
        "PASSKIT_RATE_LIMIT": "0",
        "PASSKIT_MOCK_LATENCY_MS": "0",
    }
    async with daemon(dsn, env) as proc:
        start_rss = proc.rss_mb()
        samples: list[float] = [start_rss]
        last = [0.0]

        def sample() -> None:
            now = time.perf_counter()
            if now - last[0] >= 0.25:
                last[0] = now
                samples.append(proc.rss_mb())

        result = await run_campaign(conn, program, "mock", sample)
    return MockRun(result, max(samples), start_rss)


# --- reporting ---------------------------------------------------------------------------------


def report(runs: list[CampaignRun], verdicts: list[Verdict], notes: list[str]) -> None:
    print()
    for note in notes:
        print(note)
    print()
    rows = [["run", "recipients", "audience s", "sending s", "msg/s", "requests/s"]]
    for r in runs:
        rows.append(
            [
                r.name,
                f"{r.recipients:,}",
                f"{r.audience_seconds:.2f}",
                f"{r.send_seconds:.2f}",
                f"{r.rate:,.1f}",
                f"{r.request_rate:,.1f}" if r.requests else "-",
            ]
        )
    print_table(rows)
    print()
    print_verdicts(verdicts)


# --- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("LOYALTYD_TEST_DATABASE_URL"),
        help="admin DSN of a Postgres server (default: an embedded one)",
    )
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--median-ms", type=float, default=50.0)
    parser.add_argument("--p99-ms", type=float, default=150.0)
    parser.add_argument("--baseline-recipients", type=int, default=5_000)
    parser.add_argument("--rate-limit", type=float, default=500.0, help="0 skips run 3")
    parser.add_argument(
        "--limited-recipients", type=int, default=None, help="default: 30 s worth at the limit"
    )
    parser.add_argument("--mock-recipients", type=int, default=1_000_000, help="0 skips run 4")
    parser.add_argument("--mock-concurrency", type=int, default=200)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--metadata-modes",
        nargs="+",
        choices=["read_modify_write", "merge"],
        default=["read_modify_write", "merge"],
        help="blast once in each (the first is also compared with the seeds' loop)",
    )
    return parser.parse_args()


async def bench(args: argparse.Namespace) -> int:
    configure_logging("WARNING", "console")
    latency = LatencyModel(median_ms=args.median_ms, p99_ms=args.p99_ms)
    fake = FakePassKit(
        API_KEY,
        API_SECRET,
        issued=issued_ids(""),  # every member the bench seeded is issued
        latency=latency,
        seed=args.seed,
        record_bodies=False,
    )
    await fake.start()
    runs: list[CampaignRun] = []
    verdicts: list[Verdict] = []
    notes = [
        f"fake PassKit (this process): lognormal latency, median {args.median_ms:g} ms, "
        f"p99 {args.p99_ms:g} ms; daemon: separate process; concurrency {args.concurrency}; "
        f"{os.cpu_count()} CPUs"
    ]
    try:
        async with bench_database(args.database_url) as dsn:
            conn = await asyncpg.connect(dsn)
            try:
                await http_runs(conn, dsn, fake, args, runs, verdicts, notes)
                if args.mock_recipients:
                    await mock_run(conn, dsn, args, runs, verdicts, notes)
            finally:
                await conn.close()
    finally:
        await fake.stop()
    report(runs, verdicts, notes)
    return 0 if all(v.ok for v in verdicts) else 1


async def http_runs(
    conn: asyncpg.Connection,
    dsn: str,
    fake: FakePassKit,
    args: argparse.Namespace,
    runs: list[CampaignRun],
    verdicts: list[Verdict],
    notes: list[str],
) -> None:
    blasts: dict[str, CampaignRun] = {}
    for mode in args.metadata_modes:
        print(f"blast of {args.recipients:,} recipients, {mode}…", flush=True)
        run = await blast(conn, dsn, fake, args, args.recipients, 0, f"blast-{mode}", mode)
        ceiling = args.concurrency / fake.mean_latency()
        notes.append(
            f"blast ({mode}): fake mean latency {1000 * fake.mean_latency():.1f} ms -> ceiling "
            f"{ceiling:,.1f} requests/s; {run.requests / run.recipients:.2f} requests a message"
        )
        runs.append(run)
        blasts[mode] = run
        verdicts.append(
            Verdict(f"blast {mode}: % of ceiling", 100 * run.request_rate / ceiling, 90.0)
        )
    if {"merge", "read_modify_write"} <= blasts.keys():
        cost = blasts["merge"].rate / blasts["read_modify_write"].rate
        notes.append(
            f"the safe default's cost: merge sends {cost:.2f}x the messages a second of "
            "read_modify_write (which reads each pass first)"
        )
    unlimited = blasts[args.metadata_modes[0]]
    print(f"seeds' loop over {args.baseline_recipients:,} recipients…", flush=True)
    seeds = await seeds_loop(conn, fake, args)
    runs.append(seeds)
    verdicts.append(Verdict("blast / seeds' loop (x)", unlimited.rate / seeds.rate, 3.0))
    if args.rate_limit > 0:
        count = args.limited_recipients or int(args.rate_limit * 30)
        print(f"rate-limited blast of {count:,} recipients at {args.rate_limit:g}/s…", flush=True)
        limited = await blast(conn, dsn, fake, args, count, args.rate_limit, "limited")
        runs.append(limited)
        verdicts.append(
            Verdict(
                "rate-limited: requests/s % of limit",
                100 * limited.request_rate / args.rate_limit,
                95.0,
                100.0,
            )
        )


async def mock_run(
    conn: asyncpg.Connection,
    dsn: str,
    args: argparse.Namespace,
    runs: list[CampaignRun],
    verdicts: list[Verdict],
    notes: list[str],
) -> None:
    mock = await mock_blast(conn, dsn, args)
    runs.append(mock.run)
    notes.append(
        f"mock: daemon RSS {mock.start_rss_mb:.0f} MB at start, {mock.max_rss_mb:.0f} MB at "
        f"most; audience of {mock.run.recipients:,} resolved in "
        f"{mock.run.audience_seconds:.2f} s (row inserted -> deliveries committed)"
    )
    verdicts.append(Verdict("mock: max daemon RSS (MB)", mock.max_rss_mb, 0, RSS_LIMIT_MB))


def main() -> int:
    return asyncio.run(bench(parse_args()))


if __name__ == "__main__":
    sys.exit(main())
