"""Member CSV import speed: a generated 100,000-row file, imported, then imported again.

The file is realistic and a little dirty: every row has an email and a member id, half a
PassKit id, about 1 % an unusable birth date ("N/A", 2023-02-29, a future date) and 5 % none.

1. `import_users` into an empty program (every user and pass created);
2. the same file again (every row unchanged: the idempotent path);
3. the `loyaltyd import-users` command end to end, as a subprocess, into a second program
   (the same members with that program's PassKit ids: users exist, passes are created),
   including the process start-up.

    python -m bench.bench_import [--database-url postgresql://...] [--rows 100000]

`--database-url` is an admin DSN (a scratch database is created and dropped); without it an
embedded Postgres is started. Target: well under a minute for 100,000 rows. Exits 1 if the
first import takes 60 s or more, or if any row was rejected.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import asyncpg

from bench._common import bench_database
from daemon.members.importer import ImportReport, import_users
from daemon.members.rules import COLUMNS

REPO = Path(__file__).resolve().parent.parent
TODAY = date(2024, 6, 15)
TARGET_SECONDS = 60.0
BAD_DATES = ("N/A", "Unknown", "2023-02-29", "2999-01-01", "04/07/1990")


def write_csv(path: Path, rows: int, *, passkit_prefix: str = "pk", seed: int = 7) -> None:
    rng = random.Random(seed)
    first_names = ["Ada", "Bob", "Chloé", "Dmitri", "Eve", "Fatima", "Grace", "Hiro"]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for i in range(rows):
            writer.writerow(
                (
                    f"Member.{i}@Example.com",
                    rng.choice(first_names),
                    f"Lastname{i % 997}",
                    _birth_date(rng),
                    f"+33 6 {i:08d}",
                    f"{rng.randrange(100000):05d}",
                    f"M-{i:07d}",
                    f"{passkit_prefix}-{i:07d}" if i % 2 else "",
                )
            )


def _birth_date(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.05:
        return ""
    if roll < 0.06:
        return rng.choice(BAD_DATES)
    return (date(1940, 1, 1) + timedelta(days=rng.randrange(25000))).isoformat()


async def timed_import(
    pool: asyncpg.Pool, path: Path, program: uuid.UUID
) -> tuple[float, ImportReport]:
    started = time.perf_counter()
    report = await import_users(pool, path, program, today=TODAY)
    return time.perf_counter() - started, report


def show(label: str, rows: int, seconds: float, report: ImportReport | None = None) -> None:
    counts = f"  {report.counts}, {report.warned} warned" if report is not None else ""
    print(
        f"{label:<34} {rows:>8,} rows in {seconds:6.2f} s = {rows / seconds:>9,.0f} rows/s{counts}"
    )


def run_command(dsn: str, path: Path, program: uuid.UUID) -> tuple[float, int]:
    env = {**os.environ, "DATABASE_URL": dsn, "LOYALTYD_LOG_LEVEL": "WARNING"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "import-users", str(path), "--program", str(program)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    print("  command said:", done.stdout.strip().splitlines()[-1] if done.stdout else done.stderr)
    return seconds, done.returncode


async def main(database_url: str | None, rows: int) -> int:
    with tempfile.TemporaryDirectory(prefix="loyaltyd-bench-import-") as tmp:
        path = Path(tmp) / "members.csv"
        started = time.perf_counter()
        write_csv(path, rows)
        size = path.stat().st_size
        took = time.perf_counter() - started
        print(f"generated {rows:,} rows ({size / 1e6:.1f} MB) in {took:.1f} s")
        async with bench_database(database_url) as dsn:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
            assert pool is not None
            try:
                program = await pool.fetchval(
                    "INSERT INTO programs (name) VALUES ('A') RETURNING id"
                )
                second = await pool.fetchval(
                    "INSERT INTO programs (name) VALUES ('B') RETURNING id"
                )
                first_s, first = await timed_import(pool, path, program)
                show("import into an empty program", rows, first_s, first)
                again_s, again = await timed_import(pool, path, program)
                show("same file again (unchanged)", rows, again_s, again)
            finally:
                await pool.close()
            second_file = Path(tmp) / "members-b.csv"
            write_csv(second_file, rows, passkit_prefix="pkB")
            command_s, code = run_command(dsn, second_file, second)
            show(f"loyaltyd import-users (exit {code})", rows, command_s)
    ok = (
        first_s < TARGET_SECONDS
        and first.rejected == 0
        and again.counts["unchanged"] == rows
        and code == 0
    )
    print("OK" if ok else "FAIL", f"(target: {rows:,} rows well under {TARGET_SECONDS:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", help="admin DSN of a Postgres server (default: embedded)")
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.database_url, args.rows)))
