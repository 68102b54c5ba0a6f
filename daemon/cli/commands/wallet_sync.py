"""`loyaltyd wallet-sync`: sweep PassKit's lists now (what the daemon does daily) and print
what changed, per program."""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from daemon.app import fleet_client
from daemon.cli.commands._common import database
from daemon.core.config import Settings
from daemon.core.errors import LoyaltydError
from daemon.domain.wallet import SweepClass, SweepSummary, in_tier_points
from daemon.store.errors import DATABASE_ERRORS
from daemon.store.pool import create_pool
from daemon.store.wallet import sweep_classes
from daemon.wallet.sweep import Sweeper

HELP = (
    "Read every pass of every program from PassKit now: wallet status (installed, "
    "uninstalled, invalidated, deleted) into passes_master.status, balances checked."
)
PROGRESS_EVERY_SECONDS = 2.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--program", type=uuid.UUID, help="only this program (uuid)")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    if settings.passkit_mock_mode:
        sys.stderr.write(
            "loyaltyd wallet-sync: needs PASSKIT_API_KEY and PASSKIT_API_SECRET (mock mode has "
            "no passes to read)\n"
        )
        return 2
    async with database(settings, auto_migrate=False) as target:
        pool = await create_pool(target.dsn, settings.loyaltyd_pool_size, source=target.source)
        try:
            async with fleet_client(settings, pool) as client:
                sweeper = Sweeper(
                    client,
                    pool,
                    settings,
                    dsn=target.dsn,
                    owner=uuid.uuid4(),
                    source=target.source,
                    on_progress=_Progress(),
                )
                classes = await sweep_classes(pool, args.program)
                if not classes:
                    print("no program names a PassKit program, coupon campaign or production")
                    return 0
                failed = [c for c in classes if not await _sweep_one(sweeper, c)]
        finally:
            await pool.close()
    return 1 if failed else 0


async def _sweep_one(sweeper: Sweeper, target: SweepClass) -> bool:
    try:
        summary = await sweeper.sweep(target)
    except (LoyaltydError, *DATABASE_ERRORS) as exc:
        print(f"{target.label}: failed: {exc}")
        return False
    if summary is None:
        print(f"{target.label}: skipped, another daemon is sweeping it right now")
        return True
    print(describe(summary))
    return True


def describe(summary: SweepSummary) -> str:
    a, d = summary.applied, summary.drift
    lines = [
        f"{summary.sweep.label}: {a.checked:,} checked ({a.listed:,} listed by PassKit) "
        f"in {summary.seconds:.1f} s",
        f"  newly installed {a.installed:,} · uninstalled {a.uninstalled:,} · invalidated "
        f"{a.invalidated:,} · issued {a.issued:,} · deleted {summary.deleted:,}",
    ]
    if summary.unchecked:
        lines.append(f"  {summary.unchecked:,} missing from the list not read back yet")
    if summary.sweep.protocol == "MEMBERSHIP":
        lines.append(
            f"  balances: {d.found:,} differ{in_tier_points(d.tier_points_found)} · "
            f"{d.repaired:,} repaired · {d.reported:,} reported (drift again) · "
            f"{d.deferred:,} left for the next sweep · "
            f"{d.on_dead_syncs:,} on dead syncs"
        )
    return "\n".join(lines)


class _Progress:
    """`… 250,000 read` on stderr every few seconds of a long sweep."""

    def __init__(self) -> None:
        self._shown = time.monotonic()

    def __call__(self, target: SweepClass, read: int) -> None:
        now = time.monotonic()
        if now - self._shown >= PROGRESS_EVERY_SECONDS:
            self._shown = now
            sys.stderr.write(f"{target.label}: {read:,} read from PassKit…\n")
