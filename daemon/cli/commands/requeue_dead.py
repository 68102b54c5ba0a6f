"""`loyaltyd requeue-dead`: make dead pass syncs due again (after fixing their cause)."""

from __future__ import annotations

import argparse
import uuid

from daemon.cli.commands._common import pool
from daemon.core.config import Settings
from daemon.core.logs import get_logger
from daemon.store.passes import requeue_dead

HELP = "Re-queue pass syncs that ended dead (PassKit refused them or retries ran out)."
log = get_logger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pass", dest="pass_id", type=uuid.UUID, help="only this pass (uuid)")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    async with pool(settings, auto_migrate=False) as p:
        count = await requeue_dead(p, args.pass_id)
    log.info("dead_syncs_requeued", count=count)
    print(f"requeued {count} dead pass sync(s)")
    return 0
