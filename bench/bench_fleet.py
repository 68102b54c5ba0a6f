"""Several daemons on one database (issue 14, figures b and d), as real subprocesses:

    python -m bench.bench_fleet [--database-url postgresql://postgres@host/postgres]
                                [--budget-recipients 4500] [--scale-recipients 20000]

(b) Three daemons with PASSKIT_RATE_LIMIT=150 (burst 5) send one blast: the busiest second
    of requests at the fake (target <= 160) and the steady rate, from the first second to
    the last request (target >= 135/s). In read_modify_write a message is two requests.
(d) Without a limit (PASSKIT_MAX_CONCURRENCY=20, the fake answering in 50 ms): one daemon's
    blast rate, then three daemons' on a blast as large (target >= 2.5x).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import sys

import asyncpg

from bench._common import Verdict, bench_database, print_table, print_verdicts
from bench.bench_campaign import API_KEY, API_SECRET, DaemonProcess, seed_program
from daemon.core.logs import configure_logging
from daemon.testing.fakepasskit import ROUTE_UPDATE_MEMBER, FakePassKit, LatencyModel, issued_ids


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--database-url", help="admin DSN of a Postgres server (default: embedded)")
    parser.add_argument("--budget-recipients", type=int, default=4_500)
    parser.add_argument("--scale-recipients", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--burst", type=int, default=5)
    return parser.parse_args()


def busiest_second(times: list[float]) -> int:
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + 1.0) - i for i, t in enumerate(ordered)), default=0)


async def blast(
    conn: asyncpg.Connection, dsn: str, daemons: int, recipients: int, env: dict[str, str], tag: str
) -> tuple[list[float], int]:
    """One blast by `daemons` daemons; the fake's arrival times of its requests, and how many
    recipients were reached more than once."""
    fake = FakePassKit(
        API_KEY,
        API_SECRET,
        issued=issued_ids(""),  # every member the bench seeded is issued
        latency=LatencyModel(median_ms=50, p99_ms=100),
    )
    await fake.start()
    env = {
        **env,
        "PASSKIT_API_KEY": API_KEY,
        "PASSKIT_API_SECRET": API_SECRET,
        "PASSKIT_BASE_URL": fake.url,
        "LOYALTYD_POLL_INTERVAL_SECONDS": "1",
    }
    fleet: list[DaemonProcess] = []
    try:
        program = await seed_program(conn, recipients, tag)
        fleet = [DaemonProcess(dsn, env) for _ in range(daemons)]
        await asyncio.sleep(3)  # listening, beating, shares settled
        campaign = await conn.fetchval(
            "INSERT INTO push_campaigns (program_id, name, message_text)"
            " VALUES ($1, $2, 'Hello') RETURNING id",
            program,
            tag,
        )
        while (
            await conn.fetchval("SELECT status FROM push_campaigns WHERE id = $1", campaign)
            != "COMPLETED"
        ):
            await asyncio.sleep(0.1)
            if any(d.proc.poll() is not None for d in fleet):
                raise SystemExit("a daemon exited during the blast")
    finally:
        for daemon in fleet:
            if daemon.proc.poll() is None:
                daemon.stop()
        await fake.stop()
    sent = [r for r in fake.requests if r.route == ROUTE_UPDATE_MEMBER and r.status == 200]
    per_pass: dict[str | None, int] = {}
    for r in sent:
        per_pass[r.pass_id] = per_pass.get(r.pass_id, 0) + 1
    # Every request counts against the limit (in read_modify_write a message is a GET and a
    # PUT), so the arrival times are of all requests.
    return [r.at for r in fake.requests], sum(1 for n in per_pass.values() if n > 1)


def steady_rate(times: list[float]) -> float:
    """Requests per second from one second after the first to the last."""
    ordered = sorted(times)
    steady = [t for t in ordered if t >= ordered[0] + 1.0]
    return (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else 0.0


async def run(args: argparse.Namespace) -> int:
    async with bench_database(args.database_url) as dsn:
        conn = await asyncpg.connect(dsn, server_settings={"application_name": "loyaltyd-bench"})
        try:
            limited = {
                "PASSKIT_RATE_LIMIT": f"{args.rate:g}",
                "PASSKIT_RATE_BURST": str(args.burst),
                "PASSKIT_MAX_CONCURRENCY": "20",
            }
            budget, budget_twice = await blast(conn, dsn, 3, args.budget_recipients, limited, "b3")
            unlimited = {"PASSKIT_RATE_LIMIT": "0", "PASSKIT_MAX_CONCURRENCY": "20"}
            one, one_twice = await blast(conn, dsn, 1, args.scale_recipients, unlimited, "d1")
            three, three_twice = await blast(conn, dsn, 3, args.scale_recipients, unlimited, "d3")
        finally:
            await conn.close()
    busiest = busiest_second(budget)
    rate = steady_rate(budget)
    one_rate, three_rate = steady_rate(one), steady_rate(three)
    print_table(
        [
            ["run", "daemons", "requests", "busiest second", "steady /s", "reached twice"],
            [
                f"(b) limit {args.rate:g}/s",
                "3",
                f"{len(budget):,}",
                str(busiest),
                f"{rate:.1f}",
                str(budget_twice),
            ],
            [
                "(d) no limit",
                "1",
                f"{len(one):,}",
                str(busiest_second(one)),
                f"{one_rate:.1f}",
                str(one_twice),
            ],
            [
                "(d) no limit",
                "3",
                f"{len(three):,}",
                str(busiest_second(three)),
                f"{three_rate:.1f}",
                str(three_twice),
            ],
        ]
    )
    verdicts = [
        Verdict("(b) busiest second at the fake", busiest, 0, args.rate + 10),
        Verdict("(b) steady rate (/s)", rate, 0.9 * args.rate),
        Verdict("(b) recipients reached twice", budget_twice, 0, 0),
        Verdict("(d) 3 daemons / 1 daemon", three_rate / one_rate if one_rate else 0, 2.5),
    ]
    print_verdicts(verdicts)
    return 0 if all(v.ok for v in verdicts) else 1


def main() -> int:
    configure_logging("WARNING", "console", [])
    return asyncio.run(run(parse_args()))


if __name__ == "__main__":
    sys.exit(main())
