"""A campaign through PassKit's Messages API (PASSKIT_CAMPAIGN_DELIVERY=messages), with the
daemon as a real subprocess:

    python -m bench.bench_messages [--database-url postgresql://postgres@host/postgres]
                                   [--recipients 100000] [--chunk 100]

One unpersonalised campaign of `--recipients` members sent by `loyaltyd run` to a fake
PassKit in this process (latency median `--median-ms`), at the default PASSKIT_RATE_LIMIT
(`--rate-limit`). Printed: requests per 100 recipients (target <= 2), the time from the row
inserted to COMPLETED, and that every recipient was reached exactly once at the fake; beside
it, what the same campaign pass by pass would take at that limit (two requests a recipient in
the default read_modify_write mode).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import asyncpg

from bench._common import Verdict, bench_database, print_table, print_verdicts
from bench.bench_campaign import API_KEY, API_SECRET, daemon, seed_program
from daemon.core.logs import configure_logging
from daemon.testing.fakepasskit import (
    ROUTE_CREATE_MESSAGE,
    ROUTE_SEND_MESSAGE,
    FakePassKit,
    LatencyModel,
    issued_ids,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--database-url", help="admin DSN of a Postgres server (default: embedded)")
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--median-ms", type=float, default=50.0)
    parser.add_argument("--rate-limit", type=float, default=50.0)
    return parser.parse_args()


async def run(args: argparse.Namespace) -> int:
    configure_logging("WARNING", "console")
    fake = FakePassKit(
        API_KEY,
        API_SECRET,
        issued=issued_ids("msg-"),
        latency=LatencyModel(median_ms=args.median_ms),
        record_bodies=False,
    )
    await fake.start()
    env = {
        "PASSKIT_API_KEY": API_KEY,
        "PASSKIT_API_SECRET": API_SECRET,
        "PASSKIT_BASE_URL": fake.url,
        "PASSKIT_RATE_LIMIT": f"{args.rate_limit:g}",
        "PASSKIT_CAMPAIGN_DELIVERY": "messages",
        "PASSKIT_MESSAGE_CHUNK": str(args.chunk),
    }
    try:
        async with bench_database(args.database_url) as dsn:
            conn = await asyncpg.connect(dsn)
            try:
                print(f"seeding {args.recipients:,} members…", flush=True)
                program = await seed_program(conn, args.recipients, "msg")
                async with daemon(dsn, env):
                    fake.reset_requests()
                    started = time.perf_counter()
                    campaign = await conn.fetchval(
                        "INSERT INTO push_campaigns (program_id, name, message_text)"
                        " VALUES ($1, 'messages', 'Double points all weekend!') RETURNING id",
                        program,
                    )
                    while True:
                        row = await conn.fetchrow(
                            "SELECT status, sent_count, failed_count, skipped_count, error "
                            "FROM push_campaigns WHERE id = $1",
                            campaign,
                        )
                        if row["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                            break
                        await asyncio.sleep(0.05)
                    seconds = time.perf_counter() - started
            finally:
                await conn.close()
    finally:
        await fake.stop()
    if row["status"] != "COMPLETED":
        print(f"campaign ended {row['status']}: {row['error']}", file=sys.stderr)
        return 1
    reached = fake.bulk_recipients()
    requests = fake.count()
    per_100 = 100 * requests / args.recipients
    field_seconds = 2 * args.recipients / args.rate_limit
    print()
    print_table(
        [
            ["figure", "value"],
            ["recipients", f"{args.recipients:,}"],
            ["requests at the fake", f"{requests:,}"],
            ["  POST /message", f"{fake.count(ROUTE_CREATE_MESSAGE):,}"],
            ["  POST /message/send", f"{fake.count(ROUTE_SEND_MESSAGE):,}"],
            ["requests per 100 recipients", f"{per_100:.2f}"],
            ["inserted -> COMPLETED (s)", f"{seconds:.1f}"],
            [
                "sent / failed / skipped",
                f"{row['sent_count']} / {row['failed_count']} / {row['skipped_count']}",
            ],
            [
                "reached at the fake",
                f"{len(reached):,}, at most {max(reached.values(), default=0)} each",
            ],
            [f"pass by pass at {args.rate_limit:g}/s (estimate, s)", f"{field_seconds:,.0f}"],
        ]
    )
    print()
    once_each = len(reached) == args.recipients and set(reached.values()) == {1}
    verdicts = [
        Verdict("requests per 100 recipients", per_100, 0, 2.0),
        Verdict("recipients reached exactly once (%)", 100.0 * once_each, 100.0),
    ]
    print_verdicts(verdicts)
    return 0 if all(v.ok for v in verdicts) else 1


def main() -> int:
    return asyncio.run(run(parse_args()))


if __name__ == "__main__":
    sys.exit(main())
