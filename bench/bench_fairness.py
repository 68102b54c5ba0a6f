"""Fair share across programs (issue 14, figure a), with the daemon as a real subprocess:

    python -m bench.bench_fairness [--database-url postgresql://postgres@host/postgres]
                                   [--blast 100000] [--small 50] [--rate-limit 100]

Program A blasts `--blast` recipients at PASSKIT_RATE_LIMIT `--rate-limit` (it would take
blast / rate seconds). Once A is sending, program B inserts a `--small`-recipient campaign and
program C a points transaction. Targets: B COMPLETED <= 3 s after its insert; C's points reach
the fake PassKit <= 1 s after the transaction. The blast is stopped there, unfinished.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from bench._common import Verdict, bench_database, print_verdicts
from bench.bench_campaign import API_KEY, API_SECRET, daemon, seed_program
from daemon.core.logs import configure_logging
from daemon.testing.fakepasskit import ROUTE_SET_POINTS, FakePassKit, LatencyModel, issued_ids


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--database-url", help="admin DSN of a Postgres server (default: embedded)")
    parser.add_argument("--blast", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--rate-limit", type=float, default=100.0)
    parser.add_argument("--median-ms", type=float, default=50.0)
    return parser.parse_args()


async def _insert_campaign(conn: asyncpg.Connection, program: uuid.UUID, text: str) -> uuid.UUID:
    campaign_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO push_campaigns (program_id, name, message_text) VALUES ($1, $2, $2)"
        " RETURNING id",
        program,
        text,
    )
    return campaign_id


async def _until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def run(args: argparse.Namespace) -> int:
    async with bench_database(args.database_url) as dsn:
        conn = await asyncpg.connect(dsn, server_settings={"application_name": "loyaltyd-bench"})
        try:
            print(f"seeding {args.blast:,} members of A, {args.small} of B, one of C…")
            a = await seed_program(conn, args.blast, "a")
            b = await seed_program(conn, args.small, "b")
            c = await seed_program(conn, 1, "c")
            member = await conn.fetchval("SELECT id FROM passes_master WHERE program_id = $1", c)
            member_pk = await conn.fetchval(
                "SELECT passkit_internal_id FROM passes_master WHERE id = $1", member
            )
            fake = FakePassKit(
                API_KEY,
                API_SECRET,
                issued=issued_ids(""),  # every member the bench seeded is issued
                latency=LatencyModel(median_ms=args.median_ms),
            )
            await fake.start()
            env = {
                "PASSKIT_API_KEY": API_KEY,
                "PASSKIT_API_SECRET": API_SECRET,
                "PASSKIT_BASE_URL": fake.url,
                "PASSKIT_RATE_LIMIT": str(args.rate_limit),
                "PASSKIT_MAX_CONCURRENCY": "20",
            }
            try:
                async with daemon(dsn, env):
                    blast = await _insert_campaign(conn, a, "A: the big blast")

                    async def blasting() -> bool:
                        sent = await conn.fetchval(
                            "SELECT sent_count FROM push_campaigns WHERE id = $1", blast
                        )
                        return bool(sent and sent >= 5 * args.rate_limit)

                    await _until(blasting, 120, "the blast starting")
                    small = await _insert_campaign(conn, b, "B: flash sale")
                    b_inserted = time.monotonic()
                    await conn.execute(
                        "SELECT process_membership_transaction($1, 7, 'EARN', NULL, NULL)",
                        member,
                    )
                    c_inserted = asyncio.get_running_loop().time()

                    async def b_done() -> bool:
                        status = await conn.fetchval(
                            "SELECT status FROM push_campaigns WHERE id = $1", small
                        )
                        return bool(status == "COMPLETED")

                    await _until(b_done, 120, "B completing")
                    b_seconds = time.monotonic() - b_inserted
                    c_at = next(
                        (
                            r.at
                            for r in fake.requests
                            if r.route == ROUTE_SET_POINTS and r.pass_id == member_pk
                        ),
                        None,
                    )
                    a_sent = await conn.fetchval(
                        "SELECT sent_count FROM push_campaigns WHERE id = $1", blast
                    )
            finally:
                await fake.stop()
        finally:
            await conn.close()
    c_seconds = (c_at - c_inserted) if c_at is not None else float("inf")
    print(
        f"A: {a_sent:,} of {args.blast:,} sent when B finished (rate {args.rate_limit:g}/s); "
        f"B: {args.small} recipients COMPLETED {b_seconds:.2f} s after its insert; "
        f"C: points at PassKit {c_seconds:.3f} s after the transaction"
    )
    verdicts = [
        Verdict("B completed after its insert (s)", b_seconds, 0, 3),
        Verdict("C's sync at PassKit after its insert (s)", c_seconds, 0, 1),
    ]
    print_verdicts(verdicts)
    return 0 if all(v.ok for v in verdicts) else 1


def main() -> int:
    configure_logging("WARNING", "console", [])
    return asyncio.run(run(parse_args()))


if __name__ == "__main__":
    sys.exit(main())
