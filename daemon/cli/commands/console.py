"""`loyaltyd console invite|revoke`: who may use the admins' console."""

from __future__ import annotations

import argparse
import sys
import uuid

from daemon.cli.commands._common import pool
from daemon.cli.local import local_settings
from daemon.console.auth import INVITE_HOURS, ROLES, digest, new_token
from daemon.core.config import Settings
from daemon.store import console as store

HELP = "Invite a person to the console (a one-time sign-in link), or revoke their access."


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    invite = actions.add_parser(
        "invite",
        help="print a one-time sign-in link (valid 24 h) for a person",
        description="Give EMAIL a role in a program (or the operator role) and print a "
        "one-time link, valid 24 hours, where they choose a password. The link is the last "
        "line of the output.",
    )
    invite.add_argument("--email", required=True)
    invite.add_argument("--program", type=uuid.UUID, help="the program (uuid)")
    invite.add_argument("--role", choices=ROLES, default="admin")
    invite.add_argument(
        "--operator",
        action="store_true",
        help="also see operations: daemons, work owed, dead syncs (across programs)",
    )
    revoke = actions.add_parser(
        "revoke",
        help="disable a person's account: sessions, password, operator role and pending "
        "invitations go (a new invitation lets them in again)",
    )
    revoke.add_argument("--email", required=True)
    revoke.add_argument(
        "--remove-access", action="store_true", help="also take away their programs"
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    email = args.email.strip().lower()
    if "@" not in email:
        sys.stderr.write(f"loyaltyd console: {args.email!r} is not an email address\n")
        return 2
    if args.action == "invite":
        return await _invite(settings, args, email)
    async with pool(settings, auto_migrate=False) as db:
        done = await store.revoke(db, email, remove_access=args.remove_access)
    if not done.people:
        print(f"no console account for {email}")
        return 1
    print(
        f"{email}: account disabled (password and operator role removed), "
        f"{done.sessions} session(s) ended, {done.invitations} pending invitation(s) deleted, "
        f"{done.memberships} program access(es) removed"
    )
    return 0


async def _invite(settings: Settings, args: argparse.Namespace, email: str) -> int:
    if args.program is None and not args.operator:
        sys.stderr.write("loyaltyd console invite: give --program (and --role), or --operator\n")
        return 2
    async with pool(settings, auto_migrate=False) as db:
        if args.program is not None and not await store.program_exists(db, args.program):
            sys.stderr.write(f"loyaltyd console invite: no program {args.program}\n")
            return 2
        program = (args.program, args.role) if args.program is not None else None
        person = await store.add_person(db, email, operator=args.operator, program=program)
        token = new_token()
        await store.create_invite(db, digest(token), person.id, INVITE_HOURS)
    what = f"{args.role} of program {args.program}" if program else "operator"
    if program and args.operator:
        what += ", and operator"
    if settings.database_url is None:
        settings = local_settings(settings)  # what `loyaltyd run` serves on the embedded default
    if not settings.loyaltyd_console:
        print("note: the console is off; set LOYALTYD_CONSOLE=1 and LOYALTYD_CONSOLE_SECRET")
    print(f"{email} invited as {what}; this link works once, for {INVITE_HOURS:.0f} hours:")
    print(f"{console_base(settings)}/console/invite/{token}")
    return 0


def console_base(settings: Settings) -> str:
    if settings.loyaltyd_console_url:
        return settings.loyaltyd_console_url.rstrip("/")
    host = settings.loyaltyd_http_host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.loyaltyd_http_port or 8080}"
