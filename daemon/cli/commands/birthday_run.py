"""`loyaltyd birthday-run`: run the birthday bot once, by hand (what the scheduled job does)."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import UTC, date, datetime

from daemon.birthday.bot import BirthdaySummary, ProgramBirthdays, run_birthdays
from daemon.cli.commands._common import pool
from daemon.core.config import Settings

HELP = (
    "Celebrate today's birthdays now, in every program with the birthday bot enabled "
    "(each in its own timezone). Safe to repeat: a pass gets at most one gift a year."
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--date",
        type=date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="celebrate this date's birthdays; refused in programs whose local date differs "
        "(that would greet members on the wrong day) unless --force",
    )
    parser.add_argument(
        "--program", type=uuid.UUID, metavar="ID", help="only this program (its id)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="with --date: celebrate it even where it is not the program's local today",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.force and args.date is None:
        sys.stderr.write("loyaltyd birthday-run: --force only makes sense with --date\n")
        return 2
    async with pool(settings) as db:
        summary = await run_birthdays(
            db,
            now=datetime.now(UTC),
            program_id=args.program,
            on_date=args.date,
            force=args.force,
        )
    sys.stdout.write(_render(summary, as_json=args.json))
    return 0 if summary.ok else 1


def _render(summary: BirthdaySummary, *, as_json: bool) -> str:
    if as_json:
        return json.dumps(summary.to_dict(), indent=2) + "\n"
    if summary.error is not None:
        return f"birthday run failed: {summary.error}\n"
    if not summary.programs:
        return "no program has the birthday bot enabled\n"
    return "".join(_line(p) for p in summary.programs) + (
        f"total: {summary.gifted} gifted, {summary.failed} failed, "
        f"{summary.failed_programs} program(s) not celebrated\n"
    )


def _line(p: ProgramBirthdays) -> str:
    name = f"{p.program_name or '(unnamed)'} [{p.program_id}]"
    if p.error is not None:
        return f"{name}: NOT celebrated: {p.error}\n"
    return (
        f"{name}: {p.local_date}: {p.gifted} gifted ({p.messaged} with the message, "
        f"{p.points} points each), {p.already_gifted} already celebrated, {p.failed} failed\n"
    )
