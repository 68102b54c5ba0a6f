"""`loyaltyd` command line: one subcommand per module in `daemon.commands`.

Each command module defines `HELP`, `configure(parser)` and `async run(settings, args) -> int`.
The CLI builds the one Settings object, sets up logging, and runs the command's coroutine.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from pydantic import ValidationError

from daemon.config import Settings
from daemon.errors import LoyaltydError
from daemon.logs import configure_logging, get_logger

# name on the command line -> module in daemon.commands
COMMANDS = {
    "run": "run",
    "migrate": "migrate",
    "birthday-run": "birthday_run",
    "import-users": "import_users",
    "requeue-dead": "requeue_dead",
    "status": "status",
    "demo": "demo",
}

log = get_logger("loyaltyd")


def _load(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"daemon.commands.{module}")
    except ModuleNotFoundError as exc:
        if exc.name == f"daemon.commands.{module}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loyaltyd",
        description="Wallet-pass engine: Postgres rows in, PassKit wallet updates out.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = _load(module_name)
        if module is None:
            continue
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(command)
        command.set_defaults(_module=module)
    return parser


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()]
        sys.stderr.write("loyaltyd: invalid configuration\n" + "\n".join(lines) + "\n")
        raise SystemExit(2) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = _settings()
    configure_logging(settings.loyaltyd_log_level, settings.loyaltyd_log_format, settings.secrets())
    try:
        code: int = asyncio.run(args._module.run(settings, args))
    except KeyboardInterrupt:
        return 130
    except LoyaltydError as exc:
        log.error("command_failed", command=args.command, error=str(exc))
        return 1
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
