"""`loyaltyd run`: the daemon."""

from __future__ import annotations

import argparse

from daemon.app import Daemon, run_daemon
from daemon.cli.commands._common import database
from daemon.cli.local import local_settings, welcome
from daemon.core.config import Settings
from daemon.core.errors import ConfigError
from daemon.core.logs import get_logger

HELP = (
    "Run the daemon: sync passes, send campaigns, run the birthday bot. Without DATABASE_URL "
    "it starts an embedded Postgres in LOYALTYD_DATA_DIR and serves the API and the console "
    "on http://127.0.0.1:8080 (printing where to sign in); without PassKit credentials it "
    "runs in mock mode."
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
        on_ready = None
        if target.embedded is not None:
            settings = local_settings(settings)
            say = welcome(settings, target.embedded)

            async def on_ready(daemon: Daemon) -> None:
                await say(daemon.pool)

        try:
            await run_daemon(settings, target.dsn, source=target.source, on_ready=on_ready)
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
