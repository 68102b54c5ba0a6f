"""What the benchmark scripts share: a freshly migrated database to measure in, and how
targets are judged and printed."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from daemon.store.embedded import EmbeddedPostgres
from daemon.store.migrate import migrate
from daemon.testing.databases import with_database


@asynccontextmanager
async def bench_database(server_dsn: str | None) -> AsyncIterator[str]:
    """A new database on `server_dsn` (an admin DSN), or on an embedded server; dropped after."""
    embedded: EmbeddedPostgres | None = None
    if server_dsn is None:
        embedded = EmbeddedPostgres(
            Path(tempfile.mkdtemp(prefix="loyaltyd-bench-")), remove_on_stop=True
        )
        server_dsn = embedded.start()
    name = f"loyaltyd_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        dsn = with_database(server_dsn, name)
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        if embedded is not None:
            embedded.stop()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass(frozen=True)
class Verdict:
    """One target: `value` must lie in [low, high]."""

    label: str
    value: float
    low: float
    high: float = float("inf")

    @property
    def ok(self) -> bool:
        return self.low <= self.value <= self.high


def print_table(rows: list[list[str]]) -> None:
    """Columns aligned (first left, others right), a rule under the header row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = (
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        print("  ".join(cells))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def print_verdicts(verdicts: list[Verdict]) -> None:
    rows = [["target", "measured", "wanted", "ok"]]
    for v in verdicts:
        wanted = f">= {v.low:g}" if v.high == float("inf") else f"{v.low:g} .. {v.high:g}"
        rows.append([v.label, f"{v.value:.1f}", wanted, "yes" if v.ok else "NO"])
    print_table(rows)
