"""What watching costs (issue: the console), with `loyaltyd run` as a subprocess, console on:

    python -m bench.bench_console [--database-url …] [--recipients 100000] [--viewers 50]

Two `--recipients` blasts of one program, one after the other, by the same daemon
(PASSKIT_MAX_CONCURRENCY 50, the fake PassKit in this process at a 50 ms median): the first
with nobody watching, the second with `--viewers` console sessions each holding the live
event stream open and fetching the campaign's live fragment at every event, as a browser
does. Each blast's rate is measured over `--window` seconds once it is under way, and the
daemon's progress reads over the second window (loyaltyd_console_feed_reads on /metrics).

Targets: the watched blast keeps >= 95 % of the unwatched one's rate; the database gets at
most 2 progress reads a second in all. Exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg

from bench._common import Verdict, bench_database, print_table, print_verdicts
from bench.bench_campaign import DaemonProcess, seed_program
from daemon.console.auth import CookieSigner, digest, new_token
from daemon.store import console as store
from daemon.testing.fakepasskit import FakePassKit, LatencyModel, issued_ids

API_KEY = "bench-api-key"
API_SECRET = "bench-api-secret-long-enough-for-hs256-keys"
SECRET = "bench-console-secret-0123456789abcdefghij"
_READS = re.compile(r"^loyaltyd_console_feed_reads_total (\S+)$", re.MULTILINE)


async def _sessions(pool: asyncpg.Pool, program: uuid.UUID, count: int) -> list[str]:
    """Signed session cookies of `count` viewers of the program (as a sign-in makes them)."""
    signer = CookieSigner(SECRET)
    cookies = []
    for n in range(count):
        person = await store.add_person(
            pool, f"viewer{n}@bench.example", operator=False, program=(program, "viewer")
        )
        session_id = new_token()
        await store.create_session(
            pool,
            digest(session_id),
            user_id=person.id,
            claims=None,
            csrf=new_token(),
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        cookies.append(signer.sign(session_id))
    return cookies


async def _watch(base: str, cookie: str, campaign: uuid.UUID, stop: asyncio.Event) -> int:
    """One viewer: the event stream open, the live fragment fetched at every event."""
    fetched = 0
    jar = {"loyaltyd_session": cookie}
    async with aiohttp.ClientSession(cookies=jar) as client:
        async with client.get(f"{base}/console/events") as stream:
            while not stop.is_set():
                try:
                    line = await asyncio.wait_for(stream.content.readline(), 1.0)
                except TimeoutError:
                    continue
                if line.startswith(b"data: campaign-"):
                    async with client.get(f"{base}/console/campaigns/{campaign}/live") as live:
                        await live.read()
                    fetched += 1
    return fetched


async def _reads(base: str) -> float:
    async with aiohttp.ClientSession() as client, client.get(f"{base}/metrics") as answer:
        found = _READS.search(await answer.text())
    return float(found.group(1)) if found else 0.0


async def _blast(
    pool: asyncpg.Pool, program: uuid.UUID, warmup: float, window: float
) -> tuple[uuid.UUID, float]:
    """Start a blast; once under way, its messages a second over `window`."""
    campaign: uuid.UUID = await pool.fetchval(
        "INSERT INTO push_campaigns (program_id, name, message_text) VALUES ($1, $2, $2) "
        "RETURNING id",
        program,
        f"Bench {uuid.uuid4().hex[:6]}",
    )
    await asyncio.sleep(warmup)
    before, started = await _sent(pool, campaign), time.monotonic()
    await asyncio.sleep(window)
    rate = (await _sent(pool, campaign) - before) / (time.monotonic() - started)
    await pool.execute("UPDATE push_campaigns SET status = 'CANCELLED' WHERE id = $1", campaign)
    return campaign, rate


async def _sent(pool: asyncpg.Pool, campaign: uuid.UUID) -> int:
    value: int = await pool.fetchval(
        "SELECT sent_count FROM push_campaigns WHERE id = $1", campaign
    )
    return value or 0


async def bench(args: argparse.Namespace) -> int:
    async with bench_database(args.database_url) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            program = await seed_program(conn, args.recipients, "v")
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        assert pool is not None
        latency = LatencyModel(median_ms=50, p99_ms=150)
        base = f"http://127.0.0.1:{args.http_port}"
        try:
            async with FakePassKit(
                API_KEY, API_SECRET, latency=latency, issued=issued_ids("v-")
            ) as fake:
                env = {
                    "PASSKIT_API_KEY": API_KEY,
                    "PASSKIT_API_SECRET": API_SECRET,
                    "PASSKIT_BASE_URL": fake.url,
                    "PASSKIT_RATE_LIMIT": "0",
                    "PASSKIT_MAX_CONCURRENCY": "50",
                    "LOYALTYD_HTTP_PORT": str(args.http_port),
                    "LOYALTYD_CONSOLE": "1",
                    "LOYALTYD_CONSOLE_SECRET": SECRET,
                    "LOYALTYD_WALLET_SWEEPS": "false",
                }
                daemon = DaemonProcess(dsn, env)
                try:
                    await asyncio.sleep(3.0)
                    return await _runs(pool, program, base, args)
                finally:
                    daemon.stop()
        finally:
            await pool.close()


async def _runs(pool: asyncpg.Pool, program: uuid.UUID, base: str, args: argparse.Namespace) -> int:
    _, alone = await _blast(pool, program, args.warmup, args.window)
    await pool.execute(
        "UPDATE programs SET max_pushes_per_pass_per_day = 100 WHERE id = $1", program
    )
    cookies = await _sessions(pool, program, args.viewers)
    stop = asyncio.Event()
    reads_before = await _reads(base)
    started = time.monotonic()
    blast = asyncio.create_task(_blast(pool, program, args.warmup, args.window))
    await asyncio.sleep(0.5)
    campaign = await pool.fetchval(
        "SELECT id FROM push_campaigns WHERE status IN ('PENDING', 'PROCESSING') "
        "ORDER BY created_at DESC LIMIT 1"
    )
    viewers = [asyncio.create_task(_watch(base, c, campaign, stop)) for c in cookies]
    _, watched = await blast
    seconds = time.monotonic() - started
    reads = await _reads(base) - reads_before
    stop.set()
    fetched = sum(await asyncio.gather(*viewers))
    ratio = watched / alone if alone else 0.0
    print_table(
        [
            ["blast", "viewers", "messages/s", "fragments fetched", "progress reads/s"],
            ["alone", "0", f"{alone:.0f}", "0", "-"],
            [
                "watched",
                str(args.viewers),
                f"{watched:.0f}",
                str(fetched),
                f"{reads / seconds:.2f}",
            ],
        ]
    )
    print()
    verdicts = [
        Verdict("watched / alone (%)", 100 * ratio, 95.0),
        Verdict("progress reads per second", reads / seconds, 0.0, 2.0),
    ]
    print_verdicts(verdicts)
    return 0 if all(v.ok for v in verdicts) else 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--database-url", help="an admin DSN (default: an embedded Postgres)")
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--http-port", type=int, default=18_766)
    return parser.parse_args()


def main() -> int:
    return asyncio.run(bench(parse_args()))


if __name__ == "__main__":
    sys.exit(main())
