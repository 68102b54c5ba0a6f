"""The user import's statements (queries/import.sql), on the one connection and transaction a
whole file is written in: nothing of a file lands unless all of it does."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import date

import asyncpg

from daemon.domain.members import ExistingPass, WrittenUser
from daemon.store.queries import bind, q


class ImportWriter:
    """Set-based writes of one batch of rows at a time, each statement for the whole batch."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def existing_passes(
        self, program_id: uuid.UUID, *, member_ids: Sequence[str], passkit_ids: Sequence[str]
    ) -> list[ExistingPass]:
        """Passes that already carry one of these member ids (in the program) or PassKit ids."""
        rows = await self._conn.fetch(
            q("import_existing_passes"), program_id, list(member_ids), list(passkit_ids)
        )
        return [ExistingPass(**dict(r)) for r in rows]

    async def upsert_users(
        self,
        program_id: uuid.UUID,
        *,
        emails: Sequence[str],
        first_names: Sequence[str | None],
        last_names: Sequence[str | None],
        birth_dates: Sequence[date | None],
        phone_numbers: Sequence[str | None],
        zips: Sequence[str | None],
    ) -> list[WrittenUser]:
        """Users by email (case-insensitive): created, updated, or left as another program's."""
        sql, args = bind(
            "import_upsert_users",
            emails=list(emails),
            first_names=list(first_names),
            last_names=list(last_names),
            birth_dates=list(birth_dates),
            phone_numbers=list(phone_numbers),
            zips=list(zips),
            program_id=program_id,
        )
        rows = await self._conn.fetch(sql, *args)
        return [
            WrittenUser(r["email_key"], r["user_id"], r["outcome"], r["withheld"]) for r in rows
        ]

    async def create_passes(
        self,
        program_id: uuid.UUID,
        *,
        member_ids: Sequence[str | None],
        user_ids: Sequence[uuid.UUID | None],
        passkit_ids: Sequence[str | None],
    ) -> set[str]:
        """New passes; the member ids actually created (another writer may have been first)."""
        rows = await self._conn.fetch(
            q("import_create_passes"),
            program_id,
            list(member_ids),
            list(user_ids),
            list(passkit_ids),
        )
        return {r["external_id"] for r in rows}

    async def link_passes(
        self,
        *,
        pass_ids: Sequence[object],
        user_ids: Sequence[uuid.UUID | None],
        passkit_ids: Sequence[str | None],
    ) -> set[object]:
        """Existing passes given their user and PassKit id; the ids actually changed."""
        rows = await self._conn.fetch(
            q("import_link_passes"), list(pass_ids), list(user_ids), list(passkit_ids)
        )
        return {r["id"] for r in rows}


@asynccontextmanager
async def import_transaction(
    pool: asyncpg.Pool, program_id: uuid.UUID
) -> AsyncIterator[ImportWriter | None]:
    """A writer inside one transaction; None (and nothing opened) if the program is unknown."""
    async with pool.acquire() as conn:
        if not await conn.fetchval(q("import_program_exists"), program_id):
            yield None
            return
        async with conn.transaction():
            yield ImportWriter(conn)
