"""`loyaltyd webhooks register|list`: PassKit's webhooks (sink subscriptions) that tell
loyaltyd at once when a pass is installed, uninstalled, invalidated or deleted."""

from __future__ import annotations

import argparse
import sys
import uuid
from urllib.parse import urlsplit

from daemon.app import fleet_client
from daemon.cli.commands._common import pool
from daemon.core.config import Settings
from daemon.core.errors import LoyaltydError
from daemon.domain.wallet import SweepClass
from daemon.passkit.client import PassKitClient
from daemon.passkit.records import Sink
from daemon.store.wallet import sweep_classes
from daemon.wallet.webhooks import (
    WEBHOOK_PATH,
    check_url,
    list_sinks,
    redacted,
    register,
)

HELP = "Register (or list) the PassKit webhooks that call this daemon's /passkit/webhook/TOKEN."


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser(
        "register",
        help="create or update the webhook of every program class",
        description="Create (or update) the subscription of every program's members, coupon "
        "campaign and production, calling URL on install, uninstall, invalidation and "
        "deletion.",
    )
    add.add_argument(
        "--url",
        required=True,
        help="https://HOST/passkit/webhook/TOKEN (TOKEN = LOYALTYD_PASSKIT_WEBHOOK_TOKEN)",
    )
    add.add_argument("--program", type=uuid.UUID, help="only this program (uuid)")
    show = actions.add_parser("list", help="show the webhooks PassKit holds for each program")
    show.add_argument("--program", type=uuid.UUID, help="only this program (uuid)")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    if settings.passkit_mock_mode:
        sys.stderr.write(
            f"loyaltyd webhooks {args.action}: needs PASSKIT_API_KEY and PASSKIT_API_SECRET\n"
        )
        return 2
    token = settings.loyaltyd_passkit_webhook_token
    url = ""
    if args.action == "register":
        url = check_url(args.url, token.get_secret_value() if token is not None else None)
    async with pool(settings, auto_migrate=False) as p, fleet_client(settings, p) as client:
        classes = await sweep_classes(p, args.program)
        if not classes:
            print("no program names a PassKit program, coupon campaign or production")
            return 0
        return await _each(client, classes, args.action, url)


async def _each(client: PassKitClient, classes: list[SweepClass], action: str, url: str) -> int:
    """Register (or list) each class's subscription; 1 when any of them failed."""
    failures = 0
    for target in classes:
        try:
            if action == "register":
                print(f"{target.label}: {await register(client, target, url)} ({redacted(url)})")
            else:
                _show(target, await list_sinks(client, target))
        except LoyaltydError as exc:
            failures += 1
            print(f"{target.label}: failed: {exc}")
    return 1 if failures else 0


def _show(target: SweepClass, sinks: list[Sink]) -> None:
    for sink in sinks:
        ours = urlsplit(sink.target_url).path.startswith(WEBHOOK_PATH)
        print(
            f"{target.label}: {sink.id} {sink.status} {','.join(sink.events)} "
            f"→ {redacted(sink.target_url)}{' (loyaltyd)' if ours else ''}"
        )
