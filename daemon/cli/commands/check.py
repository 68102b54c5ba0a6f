"""`loyaltyd check`: verify the PassKit set-up against the live account (daemon.passkit.check)."""

from __future__ import annotations

import argparse

from daemon.core.config import Settings
from daemon.passkit.check import CheckRequest, run_check
from daemon.passkit.routes import PROTOCOLS

HELP = (
    "Check the PassKit set-up on the live account with one test pass: token, region, program "
    "and tier, how a partial metaData write behaves, optionally the template and a Messages "
    "API message. Changes nothing: the one field it writes gets its own value back."
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pass-id", required=True, help="PassKit id of a pass to test with")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="MEMBERSHIP")
    parser.add_argument("--program-id", help="PassKit program id (default: the test pass's)")
    parser.add_argument("--tier-id", help="PassKit tier id (default: the test pass's)")
    parser.add_argument(
        "--template",
        action="store_true",
        help="also check that the tier's template has the message field with a %%@ change message",
    )
    parser.add_argument(
        "--try-message",
        metavar="TEXT",
        help="also send TEXT to the test pass through the Messages API (to see on the phone "
        "whether it alerts)",
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    if settings.passkit_mock_mode:
        print(
            "loyaltyd check needs PASSKIT_API_KEY and PASSKIT_API_SECRET: it talks to your "
            "live PassKit account"
        )
        return 2
    request = CheckRequest(
        pass_id=args.pass_id,
        protocol=args.protocol,
        program_id=args.program_id,
        tier_id=args.tier_id,
        template=args.template,
        message=args.try_message,
    )
    steps = await run_check(settings, request)
    for step in steps:
        print(step.line(), flush=True)
    failed = [s for s in steps if not s.ok]
    print(f"{len(steps) - len(failed)} ok, {len(failed)} to fix")
    return 1 if failed else 0
