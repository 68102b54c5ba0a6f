"""The birthday bot's statements (queries/birthday.sql), one typed function each. A gift is
one transaction: its log row (unique per pass and year), the ledger's points and message
through the transaction function, and the link between the two."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

import asyncpg

from daemon.domain.birthdays import BirthdayMember, BirthdayProgram
from daemon.store.errors import DATABASE_ERRORS
from daemon.store.queries import q

# What a failed gift or a failed tick may raise from here: the database's trouble.
DatabaseError = DATABASE_ERRORS  # the name the birthday bot knows them by


@dataclass(frozen=True, slots=True)
class Gifted:
    new_balance: int
    message: str | None
    replayed: bool


async def programs(pool: asyncpg.Pool, program_id: uuid.UUID | None) -> list[BirthdayProgram]:
    """Programs with the bot enabled (or the one asked for, enabled or not)."""
    return [
        BirthdayProgram(
            r["id"],
            r["name"],
            r["timezone"],
            r["birthday_bot_enabled"],
            r["birthday_reward_points"],
            r["birthday_message"],
        )
        for r in await pool.fetch(q("birthday_programs"), program_id)
    ]


async def passes_due(
    pool: asyncpg.Pool,
    *,
    program_id: uuid.UUID,
    birthday_keys: Sequence[int],
    year: int,
    points_only: bool,
) -> list[BirthdayMember]:
    """The program's passes whose birthday is one of `birthday_keys`, not gifted in `year`."""
    rows = await pool.fetch(
        q("birthday_passes_due"), program_id, list(birthday_keys), year, points_only
    )
    return [
        BirthdayMember(r["pass_id"], r["first_name"], r["last_name"], r["installed"]) for r in rows
    ]


async def gift(
    pool: asyncpg.Pool,
    *,
    pass_id: uuid.UUID,
    program_id: uuid.UUID,
    year: int,
    local_date: date,
    points: int,
    message_for: Callable[[int], str | None],
) -> Gifted | None:
    """Give the gift once (None: this pass already had this year's); `message_for` gets the
    balance after the gift and returns the message, if any."""
    async with pool.acquire() as conn, conn.transaction():
        log_id = await conn.fetchval(q("birthday_log_gift"), pass_id, program_id, year, local_date)
        if log_id is None:
            return None
        balance = await conn.fetchval(q("birthday_balance_for_update"), pass_id) or 0
        message = message_for(balance + points)
        ref = f"birthday:{year}:{pass_id}"
        raw = await conn.fetchval(q("birthday_give_points"), pass_id, points, message, ref)
        result = json.loads(raw)
        await conn.execute(
            q("birthday_link_transaction"), log_id, uuid.UUID(result["transaction_id"])
        )
    return Gifted(result["new_balance"], message, result["replayed"])
