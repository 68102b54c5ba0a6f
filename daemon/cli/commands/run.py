"""`loyaltyd run`: the daemon."""

from __future__ import annotations

import argparse

from daemon.app import run_daemon
from daemon.cli.commands._common import database
from daemon.core.config import Settings
from daemon.core.errors import ConfigError
from daemon.core.logs import get_logger

HELP = (
    "Run the daemon: sync passes, send campaigns, run the birthday bot. Without DATABASE_URL "
    "it starts an embedded Postgres in LOYALTYD_DATA_DIR; without PassKit credentials it runs "
    "in mock mode."
)
log = get_logger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not apply pending migrations at start-up (refuse to start if any are pending)",
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    async with database(settings, auto_migrate=not args.no_migrate) as target:
        try:
            await run_daemon(settings, target.dsn, source=target.source)
        except ConfigError:
            raise  # the user's to fix: one sentence and exit 2 (see cli.main)
        except Exception as exc:
            # A crashed component stopped them all: exit non-zero so systemd restarts us.
            for error in _leaves(exc):
                log.error("daemon_crashed", error=repr(error))
            return 1
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]
