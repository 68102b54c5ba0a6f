"""A killed daemon's work taken over (issue 14, figure c), with daemons as real subprocesses:

    python -m bench.bench_takeover [--database-url postgresql://postgres@host/postgres]
                                   [--recipients 20000]

A blast runs on one daemon (LOYALTYD_LEASE_SECONDS=60, LOYALTYD_HEARTBEAT_SECONDS=0.5,
LOYALTYD_STALE_SECONDS=3); mid-blast it is killed with SIGKILL and restarted at once, as
systemd does. Printed: how long after the kill every recipient the dead daemon held has its
message (target <= 5 s; the defaults, heartbeat 1 s and stale 5 s, add about 2 s), and how
many arrived twice (bounded by what was in flight).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections import Counter

import asyncpg

from bench._common import Verdict, bench_database, print_verdicts
from bench.bench_campaign import API_KEY, API_SECRET, DaemonProcess, seed_program
from daemon.core.logs import configure_logging
from daemon.testing.fakepasskit import ROUTE_UPDATE_MEMBER, FakePassKit, LatencyModel, issued_ids


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--database-url", help="admin DSN of a Postgres server (default: embedded)")
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--median-ms", type=float, default=50.0)
    return parser.parse_args()


def _reached(fake: FakePassKit) -> Counter[str]:
    return Counter(
        r.pass_id
        for r in fake.requests
        if r.route == ROUTE_UPDATE_MEMBER and r.status == 200 and r.pass_id
    )


async def run(args: argparse.Namespace) -> int:
    async with bench_database(args.database_url) as dsn:
        conn = await asyncpg.connect(dsn, server_settings={"application_name": "loyaltyd-bench"})
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
            "PASSKIT_RATE_LIMIT": "0",
            "PASSKIT_MAX_CONCURRENCY": "50",
            "LOYALTYD_LEASE_SECONDS": "60",
            "LOYALTYD_HEARTBEAT_SECONDS": "0.5",
            "LOYALTYD_STALE_SECONDS": "3",
            "LOYALTYD_POLL_INTERVAL_SECONDS": "1",
        }
        daemons: list[DaemonProcess] = []
        try:
            program = await seed_program(conn, args.recipients, "k")
            daemons.append(DaemonProcess(dsn, env))
            await asyncio.sleep(2)
            campaign = await conn.fetchval(
                "INSERT INTO push_campaigns (program_id, name, message_text)"
                " VALUES ($1, 'takeover', 'Hello') RETURNING id",
                program,
            )
            while fake.count() < args.recipients // 4:
                await asyncio.sleep(0.05)
            daemons[0].proc.send_signal(signal.SIGKILL)
            daemons[0].proc.wait()
            killed = time.monotonic()
            held = {
                r["passkit_internal_id"]
                for r in await conn.fetch(
                    "SELECT p.passkit_internal_id FROM loyaltyd.campaign_deliveries d"
                    " JOIN passes_master p ON p.id = d.pass_id WHERE d.state = 'claimed'"
                )
            }
            daemons.append(DaemonProcess(dsn, env))  # the restart
            while not all(_reached(fake).get(pk) for pk in held):
                if time.monotonic() - killed > 120:
                    raise SystemExit("the dead daemon's rows were not sent within 120 s")
                await asyncio.sleep(0.05)
            took = time.monotonic() - killed
            while (
                await conn.fetchval("SELECT status FROM push_campaigns WHERE id = $1", campaign)
                != "COMPLETED"
            ):
                await asyncio.sleep(0.1)
            reached = _reached(fake)
        finally:
            for daemon in daemons:
                if daemon.proc.poll() is None:
                    daemon.stop()
            await fake.stop()
            await conn.close()
    twice = sum(1 for n in reached.values() if n > 1)
    print(
        f"killed with {len(held)} recipients claimed; all of them sent {took:.2f} s after the "
        f"kill (leases: 60 s); {len(reached):,} of {args.recipients:,} reached, {twice} twice"
    )
    verdicts = [
        Verdict("dead daemon's rows sent again after kill (s)", took, 0, 5),
        Verdict("recipients reached", len(reached), args.recipients, args.recipients),
        Verdict("reached twice (<= claimed at the kill)", twice, 0, len(held)),
    ]
    print_verdicts(verdicts)
    return 0 if all(v.ok for v in verdicts) else 1


def main() -> int:
    configure_logging("WARNING", "console", [])
    return asyncio.run(run(parse_args()))


if __name__ == "__main__":
    sys.exit(main())
