"""The console's reads and writes (queries/console.sql).

Every statement that finds a program's data by an id from a request takes the viewer's
program ids and keeps to them; those that read a campaign's deliveries take a campaign the
viewer's programs were checked to hold. A
`Scope` runs them: as the daemon's own role for loyaltyd accounts, or, for a Supabase sign-in,
inside a transaction as `authenticated` with the access token's claims, so the user's own
row-level security decides as well (as it does for Softr). A console write never passes as the
daemon: it never marks its transaction (sql/058), so push_campaigns' rules apply to it as to
any form.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from daemon.domain.retrying import retry_cause
from daemon.store.queries import bind, q


class Scope:
    """Where a viewer's statements run: `claims` None runs them as the pool's role."""

    def __init__(self, pool: asyncpg.Pool, claims: Mapping[str, Any] | None = None) -> None:
        self._pool = pool
        self._claims = claims

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._pool.acquire() as conn:
            if self._claims is None:
                yield conn
                return
            async with conn.transaction():
                await conn.execute("SET LOCAL ROLE authenticated")
                await conn.execute(
                    "SELECT set_config('request.jwt.claims', $1, true)", json.dumps(self._claims)
                )
                yield conn

    async def fetch(self, name: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(q(name), *args)
            return rows

    async def fetchrow(self, name: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as conn:
            row: asyncpg.Record | None = await conn.fetchrow(q(name), *args)
            return row

    async def fetchval(self, query: str, /, *args: Any, **values: object) -> Any:
        """The first value of the statement's first row: positional arguments, or keywords
        for a statement that names its parameters."""
        sql, bound = bind(query, **values) if values else (q(query), list(args))
        async with self.connection() as conn:
            return await conn.fetchval(sql, *bound)


# --- people and sessions (always the daemon's own tables, never the viewer's scope) -----------


@dataclass(frozen=True, slots=True)
class Person:
    id: uuid.UUID
    email: str
    operator: bool
    has_password: bool


async def add_person(
    pool: asyncpg.Pool, email: str, *, operator: bool, program: tuple[uuid.UUID, str] | None
) -> Person:
    """The person (created if new) with access to `program` as (id, role)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(q("console_user_upsert"), email, operator)
        if program is not None:
            await conn.execute(q("console_membership_grant"), row["id"], *program)
    return Person(row["id"], row["email"], row["operator"], row["has_password"])


async def program_exists(pool: asyncpg.Pool, program_id: uuid.UUID) -> bool:
    return bool(await pool.fetchval(q("program_exists"), program_id))


async def create_invite(
    pool: asyncpg.Pool, token_hash: str, user_id: uuid.UUID, hours: float
) -> None:
    await pool.execute(q("console_invite_create"), token_hash, user_id, hours)


async def invite_email(pool: asyncpg.Pool, token_hash: str) -> str | None:
    email: str | None = await pool.fetchval(q("console_invite_peek"), token_hash)
    return email


@dataclass(frozen=True, slots=True)
class Invited:
    user_id: uuid.UUID
    email: str


async def use_invite(pool: asyncpg.Pool, token_hash: str, password_hash: str) -> Invited | None:
    """Use the invitation up and set the person's password, in one transaction; who they
    are, or None when the invitation is unknown, used or expired."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(q("console_invite_use"), token_hash)
        if row is None:
            return None
        await conn.execute(q("console_password_set"), row["id"], password_hash)
    return Invited(row["id"], row["email"])


@dataclass(frozen=True, slots=True)
class Account:
    id: uuid.UUID
    email: str
    password_hash: str | None
    operator: bool


async def account(pool: asyncpg.Pool, email: str) -> Account | None:
    row = await pool.fetchrow(q("console_user_by_email"), email)
    if row is None:
        return None
    return Account(row["id"], row["email"], row["password_hash"], row["operator"])


async def signin_attempt(
    pool: asyncpg.Pool, email: str | None, address: str, window_seconds: float
) -> tuple[int, int]:
    """Count a sign-in attempt before its password is checked; the attempts in the window,
    this one included, for the account and for the address."""
    row = await pool.fetchrow(q("console_signin_attempt"), email, address, window_seconds)
    return int(row["by_email"]), int(row["by_address"])


async def signin_succeeded(pool: asyncpg.Pool, email: str) -> None:
    await pool.execute(q("console_signin_succeeded"), email)


async def create_session(
    pool: asyncpg.Pool,
    id_hash: str,
    *,
    user_id: uuid.UUID | None,
    claims: Mapping[str, Any] | None,
    csrf: str,
    expires_at: datetime,
) -> None:
    document = json.dumps(dict(claims)) if claims is not None else None
    await pool.execute(q("console_session_create"), id_hash, user_id, document, csrf, expires_at)


@dataclass(frozen=True, slots=True)
class SessionRow:
    user_id: uuid.UUID | None
    email: str | None
    operator: bool
    roles: dict[uuid.UUID, str]
    claims: dict[str, Any] | None
    csrf: str
    expires_at: datetime


async def session(pool: asyncpg.Pool, id_hash: str) -> SessionRow | None:
    row = await pool.fetchrow(q("console_session"), id_hash)
    if row is None:
        return None
    roles = _json(row["roles"]) or {}
    claims = _json(row["supabase_claims"])
    return SessionRow(
        user_id=row["user_id"],
        email=row["email"],
        operator=bool(row["operator"]),
        roles={uuid.UUID(k): v for k, v in roles.items()},
        claims=claims,
        csrf=row["csrf_token"],
        expires_at=row["expires_at"],
    )


async def end_session(pool: asyncpg.Pool, id_hash: str) -> None:
    await pool.execute(q("console_session_end"), id_hash)


@dataclass(frozen=True, slots=True)
class Revoked:
    """What a revocation did: people found (0 or 1), sessions ended, unused invitations
    deleted, program accesses removed."""

    people: int
    sessions: int
    invitations: int
    memberships: int


async def revoke(pool: asyncpg.Pool, email: str, *, remove_access: bool) -> Revoked:
    """Disable the person's account: no password, no operator role, no session, no pending
    invitation (and, with `remove_access`, no program)."""
    row = await pool.fetchrow(q("console_revoke"), email, remove_access)
    return Revoked(row["people"], row["sessions"], row["invitations"], row["memberships"])


async def supabase_programs(scope: Scope) -> list[uuid.UUID]:
    return [r["program_id"] for r in await scope.fetch("console_supabase_programs")]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


# --- programs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Program:
    id: uuid.UUID
    name: str
    timezone: str
    max_pushes_per_pass_per_day: int
    birthday_bot_enabled: bool
    birthday_reward_points: int
    birthday_message: str | None


async def programs(scope: Scope, ids: Sequence[uuid.UUID]) -> list[Program]:
    rows = await scope.fetch("console_programs", list(ids))
    return [Program(**dict(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class ProgramSettings:
    birthday_bot_enabled: bool
    birthday_reward_points: int
    birthday_message: str
    timezone: str
    max_pushes_per_pass_per_day: int

    def values(self) -> dict[str, object]:
        """The settings, as console_program_update names them."""
        return {
            "birthday_bot_enabled": self.birthday_bot_enabled,
            "birthday_reward_points": self.birthday_reward_points,
            "birthday_message": self.birthday_message,
            "timezone": self.timezone,
            "max_pushes_per_pass_per_day": self.max_pushes_per_pass_per_day,
        }


async def update_program(
    scope: Scope,
    program_id: uuid.UUID,
    ids: Sequence[uuid.UUID],
    settings: ProgramSettings,
    who: str,
) -> list[str] | None:
    """Change the settings (in the viewer's scope; each change logged with `who` by the same
    statement); the names of the settings changed, or None when the program is not the
    viewer's."""
    changed = await scope.fetchval(
        "console_program_update",
        program_id=program_id,
        viewer_programs=list(ids),
        who=who,
        **settings.values(),
    )
    return None if changed is None else list(changed)


@dataclass(frozen=True, slots=True)
class SettingChange:
    changed_by: str
    changed_at: datetime
    setting: str
    old_value: str | None
    new_value: str | None


async def setting_changes(
    pool: asyncpg.Pool, program_id: uuid.UUID, limit: int = 20
) -> list[SettingChange]:
    rows = await pool.fetch(q("console_setting_changes"), program_id, limit)
    return [SettingChange(**dict(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class SampleMember:
    """A real member of the program, for the message preview."""

    pass_id: uuid.UUID
    external_id: str | None
    passkit_internal_id: str | None
    first_name: str | None
    last_name: str | None
    points: int | None
    program_name: str | None


async def sample_member(
    scope: Scope, program_id: uuid.UUID, ids: Sequence[uuid.UUID], member_id: str | None
) -> SampleMember | None:
    row = await scope.fetchrow("console_sample_member", program_id, list(ids), member_id)
    return None if row is None else SampleMember(**dict(row))


# --- campaigns -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CampaignRow:
    """A campaign as the history table shows it."""

    id: uuid.UUID
    program_id: uuid.UUID
    program_name: str | None
    name: str | None
    segment: str | None
    status: str
    scheduled_at: datetime | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    recipients: int
    sent: int
    failed: int
    skipped: int
    error: str | None
    created_by: str | None

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.skipped


async def campaigns(
    scope: Scope, ids: Sequence[uuid.UUID], status: str | None, limit: int = 100
) -> list[CampaignRow]:
    rows = await scope.fetch("console_campaigns", list(ids), status, limit)
    return [CampaignRow(**dict(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class CampaignDetail:
    """One campaign as its page shows it: its row (as an admin or Softr wrote it, so every
    column may be empty), its program's name and time zone, and the program's daily cap."""

    id: uuid.UUID
    program_id: uuid.UUID
    program_name: str | None
    timezone: str
    max_pushes_per_pass_per_day: int | None
    name: str | None
    message_text: str | None
    status: str | None
    segment: str | None
    min_tier_points: int | None
    min_points: int | None
    inactive_days: int | None
    zip_codes: list[str] | None
    member_ids: list[str] | None
    csv_upload_url: str | None
    scheduled_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    recipient_count: int | None
    sent_count: int | None
    failed_count: int | None
    skipped_count: int | None
    audience_counted_at: datetime | None
    unknown_member_count: int | None
    unknown_member_ids: list[str] | None
    error: str | None
    created_by: str | None
    confirmed_by: str | None
    confirmed_at: datetime | None
    cancelled_by: str | None
    cancelled_at: datetime | None


async def campaign(
    scope: Scope, campaign_id: uuid.UUID, ids: Sequence[uuid.UUID]
) -> CampaignDetail | None:
    row = await scope.fetchrow("console_campaign", campaign_id, list(ids))
    return None if row is None else CampaignDetail(**dict(row))


@dataclass(frozen=True, slots=True)
class Draft:
    program_id: uuid.UUID
    name: str | None
    message: str
    segment: str
    min_tier_points: int | None
    min_points: int | None
    inactive_days: int | None
    zip_codes: list[str] | None
    member_ids: list[str] | None
    scheduled_at: datetime | None


async def insert_draft(
    scope: Scope, draft: Draft, who: str, ids: Sequence[uuid.UUID], *, status: str = "DRAFT"
) -> uuid.UUID | None:
    """A DRAFT in the viewer's program (None: not theirs); the daemon counts its audience. A
    test send is inserted PENDING."""
    value = await scope.fetchval(
        "console_campaign_insert",
        program_id=draft.program_id,
        name=draft.name,
        message=draft.message,
        segment=draft.segment,
        min_tier_points=draft.min_tier_points,
        min_points=draft.min_points,
        inactive_days=draft.inactive_days,
        zip_codes=draft.zip_codes,
        member_ids=draft.member_ids,
        scheduled_at=draft.scheduled_at,
        status=status,
        created_by=who,
        viewer_programs=list(ids),
    )
    return value if isinstance(value, uuid.UUID) else None


async def confirm(
    scope: Scope, campaign_id: uuid.UUID, ids: Sequence[uuid.UUID], who: str, count: int
) -> bool:
    return (
        await scope.fetchval("console_campaign_confirm", campaign_id, list(ids), who, count)
        is not None
    )


async def cancel(scope: Scope, campaign_id: uuid.UUID, ids: Sequence[uuid.UUID], who: str) -> bool:
    return await scope.fetchval("console_campaign_cancel", campaign_id, list(ids), who) is not None


@dataclass(frozen=True, slots=True)
class Reason:
    state: str
    reason: str
    n: int


async def outcomes(scope: Scope, campaign_id: uuid.UUID) -> list[Reason]:
    return [Reason(**dict(r)) for r in await scope.fetch("console_outcomes", campaign_id)]


async def send_rate(
    scope: Scope, campaign_id: uuid.UUID, since: datetime
) -> list[tuple[datetime, float]]:
    return [(r["at"], r["n"]) for r in await scope.fetch("console_send_rate", campaign_id, since)]


@dataclass(frozen=True, slots=True)
class Recipient:
    pass_id: uuid.UUID
    external_id: str | None
    state: str
    error: str | None
    rendered_text: str | None
    finished_at: datetime | None


async def recipients(
    scope: Scope,
    campaign_id: uuid.UUID,
    *,
    outcome: str | None,
    after: uuid.UUID | None,
    limit: int,
) -> list[Recipient]:
    rows = await scope.fetch("console_recipients", campaign_id, outcome, after, limit)
    return [Recipient(**dict(r)) for r in rows]


# --- the live feed -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """A campaign's progress, as the live feed keeps it."""

    id: uuid.UUID
    program_id: uuid.UUID
    status: str
    sent: int
    failed: int
    skipped: int
    recipient_count: int | None
    counted: bool
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    unknown: int  # member ids of a CSV audience that match no pass, and the first few
    unknown_sample: list[str]
    timezone: str  # the program's
    retry_waiting: int = 0  # recipients waiting to retry after a transient failure
    retry_held: int = 0  # of those, waiting for PassKit to answer at all
    retry_next_at: datetime | None = None  # when the soonest of the others is due
    retry_error: str | None = None  # the newest error among them

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.skipped

    @property
    def retry_cause(self) -> str:
        """What the waiting recipients met: "PassKit 503", "PassKit being down", …"""
        if self.retry_held and self.retry_held == self.retry_waiting:
            return "PassKit being down"
        return retry_cause(self.retry_error)


async def changes_since(
    pool: asyncpg.Pool, program_ids: Sequence[uuid.UUID], since: datetime
) -> tuple[list[Change], bool]:
    """Campaigns of the programs changed since `since`, and whether any of them is being sent
    (or counted): one statement."""
    rows = await pool.fetch(q("console_progress_changes"), list(program_ids), since)
    running = bool(rows and rows[0]["running"])
    changes = [
        Change(
            **{k: v for k, v in r.items() if k not in ("running", "unknown_sample")},
            unknown_sample=list(r["unknown_sample"]),
        )
        for r in rows
        if r["id"] is not None
    ]
    return changes, running


async def sends_per_second(
    pool: asyncpg.Pool, since: datetime
) -> list[tuple[datetime, float, float]]:
    rows = await pool.fetch(q("console_sends_per_second"), since)
    return [(r["at"], r["sent"], r["failed"]) for r in rows]
