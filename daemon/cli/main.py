"""`loyaltyd` command line: one subcommand per module in `daemon.cli.commands`.

Each command module defines `HELP`, `configure(parser)` and `async run(settings, args) -> int`.
The CLI builds the one Settings object, sets up logging, and runs the command's coroutine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from pydantic import ValidationError

from daemon.core.config import Settings
from daemon.core.errors import ConfigError, LoyaltydError
from daemon.core.logs import configure_logging, get_logger

# name on the command line -> module in daemon.cli.commands
COMMANDS = {
    "run": "run",
    "migrate": "migrate",
    "birthday-run": "birthday_run",
    "import-users": "import_users",
    "requeue-dead": "requeue_dead",
    "status": "status",
    "check": "check",
    "wallet-sync": "wallet_sync",
    "webhooks": "webhooks",
    "console": "console",
    "demo": "demo",
}

ENV_FILE_VARIABLE = "LOYALTYD_ENV_FILE"
log = get_logger("loyaltyd")


def _load(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"daemon.cli.commands.{module}")
    except ModuleNotFoundError as exc:
        if exc.name == f"daemon.cli.commands.{module}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loyaltyd",
        description="Wallet-pass engine: Postgres rows in, PassKit wallet updates out.",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        metavar="PATH",
        default=os.environ.get(ENV_FILE_VARIABLE) or None,
        help="read settings from this file (the one systemd's EnvironmentFile names, e.g. "
        f"/etc/loyaltyd/loyaltyd.env) instead of ./.env; also ${ENV_FILE_VARIABLE}. "
        "Variables set in the environment win over the file.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = _load(module_name)
        if module is None:
            continue
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(command)
        command.set_defaults(_module=module, _parser=command)
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Like parse_args, but an unknown option is reported with its subcommand's usage."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args._parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _settings(env_file: Path | None) -> Settings:
    if env_file is not None and not env_file.is_file():
        _fail(f"--env-file {env_file}: no such file; check the path (or ${ENV_FILE_VARIABLE})")
    try:
        if env_file is None:
            return Settings()
        return Settings(_env_file=env_file)  # type: ignore[call-arg]
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()]
        sys.stderr.write("loyaltyd: invalid configuration\n" + "\n".join(lines) + "\n")
        raise SystemExit(2) from None
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read the settings file {env_file}: {exc}")


def _fail(sentence: str) -> NoReturn:
    """A start-up failure the user can fix: one sentence on stderr, exit 2, no traceback."""
    sys.stderr.write(f"loyaltyd: {sentence}\n")
    raise SystemExit(2)


# Settings that no longer exist, and what replaced them: still set, they would silently do
# nothing, so a warning says so.
RETIRED_SETTINGS = {
    "PASSKIT_MAX_ATTEMPTS": "a request gets one quick retry; every other retry is the queue's",
    "LOYALTYD_MAX_JOB_ATTEMPTS": "work is retried until LOYALTYD_RETRY_MAX_AGE_SECONDS",
}


def warn_retired(env_file: Path | None, environ: Mapping[str, str] = os.environ) -> list[str]:
    """Names of retired settings found in the environment or the settings file (warned)."""
    names = {k.upper() for k in environ}
    path = env_file if env_file is not None else Path(".env")
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in path.read_text(encoding="utf-8").splitlines():
            key, sep, _ = line.strip().removeprefix("export ").partition("=")
            if sep:
                names.add(key.strip().upper())
    found = sorted(names & RETIRED_SETTINGS.keys())
    for name in found:
        log.warning("setting_retired", setting=name, detail=RETIRED_SETTINGS[name])
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = _settings(args.env_file)
    configure_logging(settings.loyaltyd_log_level, settings.loyaltyd_log_format, settings.secrets())
    warn_retired(args.env_file)
    try:
        code: int = asyncio.run(args._module.run(settings, args))
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        _fail(str(exc))
    except LoyaltydError as exc:
        log.error("command_failed", command=args.command, error=str(exc))
        return 1
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
