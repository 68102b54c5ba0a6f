"""`loyaltyd migrate`: apply pending migrations from sql/ (safe to run twice, or concurrently)."""

from __future__ import annotations

import argparse

from daemon.core.config import Settings
from daemon.core.logs import get_logger
from daemon.store.migrate import migrate, pending
from daemon.store.pool import resolve_database, session

HELP = "Apply pending SQL migrations in order, once, under an advisory lock."
log = get_logger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check", action="store_true", help="only list pending migrations; exit 1 if any"
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    target = await resolve_database(settings)
    try:
        async with session(target) as conn:  # advisory locks need a session
            if args.check:
                missing = await pending(conn)
                log.info("migrations_pending", versions=missing)
                return 1 if missing else 0
            applied = await migrate(conn)
            log.info("migrate_finished", applied=applied, count=len(applied))
            return 0
    finally:
        target.close()
