"""The local admin of `loyaltyd run` on its embedded default (see `daemon.cli.local`)."""

from __future__ import annotations

import uuid

import asyncpg

from daemon.store.queries import q


async def local_admin(pool: asyncpg.Pool, email: str) -> tuple[uuid.UUID, bool]:
    """The local admin's id, and whether they chose a password already: an operator and the
    admin of every program, present and future."""
    row = await pool.fetchrow(q("local_admin"), email)
    assert row is not None
    return row["id"], bool(row["has_password"])
