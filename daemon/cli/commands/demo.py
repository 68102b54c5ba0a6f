"""`loyaltyd demo`: a guided tour on an embedded Postgres and a fake PassKit."""

from __future__ import annotations

import argparse

from daemon.cli.demo_data import DemoOptions, run_demo
from daemon.core.config import Settings
from daemon.core.logs import configure_logging

HELP = (
    "Show loyaltyd working end to end in under a minute: embedded Postgres, a fake PassKit "
    "with realistic latency, sample members; a transaction, a coupon, a campaign blast with "
    "a progress bar and a birthday run. Needs nothing but Python. Its database is temporary "
    "and deleted at the end; started as root it also creates, once, the system user "
    "loyaltyd-postgres that runs Postgres (and says so)."
)


def _number(text: str, low: float, high: float, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(
            f"must be between {low:g} and {high:g}{what}, not {value:g}"
        )
    return value


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _latency(text: str) -> float:
    return _number(text, 0, 10_000, " ms")


def _percent(text: str) -> float:
    return _number(text, 0, 50, " %")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--members", type=_at_least_one, default=3000, help="sample members (default 3000)"
    )
    parser.add_argument(
        "--concurrency", type=_at_least_one, default=50, help="PassKit requests in flight"
    )
    parser.add_argument(
        "--latency-ms", type=_latency, default=50.0, help="fake PassKit median latency"
    )
    parser.add_argument(
        "--passkit-503",
        type=_percent,
        default=2.0,
        metavar="PERCENT",
        help="how often the fake PassKit answers 503 'busy' (default 2): rehearse retries",
    )
    parser.add_argument(
        "--use-database-url",
        action="store_true",
        help="run in DATABASE_URL (an empty database!) instead of a temporary embedded one",
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    # The demo narrates on stdout; the daemon's own events would drown it.
    configure_logging("WARNING", settings.loyaltyd_log_format, settings.secrets())
    url = settings.database_url.get_secret_value() if settings.database_url else None
    options = DemoOptions(
        members=args.members,
        concurrency=args.concurrency,
        median_ms=args.latency_ms,
        p503=args.passkit_503 / 100,
        database_url=url if args.use_database_url else None,
    )
    return await run_demo(options)
