"""`loyaltyd webhooks register|list`: PassKit's webhooks (sink subscriptions) that tell
loyaltyd at once when a pass is installed, uninstalled, invalidated or deleted."""

from __future__ import annotations

import argparse
import sys
import uuid

from daemon.cli.commands._common import pool
from daemon.core.config import Settings
from daemon.core.errors import ConfigError, LoyaltydError
from daemon.passkit.client import PassKitClient
from daemon.store.wallet import sweep_classes
from daemon.wallet.webhooks import check_url, list_sinks, redacted, register

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
    if args.action == "register":
        url = check_url(args.url, token.get_secret_value() if token is not None else None)
    async with pool(settings, auto_migrate=False) as p:
        classes = await sweep_classes(p, args.program)
    if not classes:
        print("no program names a PassKit program, coupon campaign or production")
        return 0
    failures = 0
    async with PassKitClient(settings) as client:
        for target in classes:
            try:
                if args.action == "register":
                    done = await register(client, target, url)
                    print(f"{target.label}: {done} ({redacted(url)})")
                else:
                    for sink in await list_sinks(client, target):
                        mark = " (loyaltyd)" if sink.ours else ""
                        print(
                            f"{target.label}: {sink.id} {sink.status} {','.join(sink.events)} "
                            f"→ {redacted(sink.target_url)}{mark}"
                        )
            except (LoyaltydError, ConfigError) as exc:
                failures += 1
                print(f"{target.label}: failed: {exc}")
    return 1 if failures else 0
