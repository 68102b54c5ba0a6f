"""Row builders for tests: programs, users, passes. Defaults make a pass that can be messaged."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import asyncpg


async def make_program(conn: asyncpg.Connection | asyncpg.Pool, **cols: Any) -> uuid.UUID:
    values: dict[str, Any] = {
        "name": "Joe's Pizza",
        "passkit_program_id": "pk-program",
        "passkit_tier_id": "pk-tier",
    }
    values.update(cols)
    return await _insert(conn, "programs", values)


async def make_user(conn: asyncpg.Connection | asyncpg.Pool, **cols: Any) -> uuid.UUID:
    values: dict[str, Any] = {"email": f"{uuid.uuid4().hex[:12]}@example.com", "first_name": "Ada"}
    values.update(cols)
    return await _insert(conn, "users", values)


async def make_pass(
    conn: asyncpg.Connection | asyncpg.Pool,
    program_id: uuid.UUID,
    *,
    user_id: uuid.UUID | None = None,
    points: int = 0,
    tier_points: int = 0,
    birth_date: date | None = None,
    **cols: Any,
) -> uuid.UUID:
    """An active, INSTALLED pass (MEMBERSHIP unless `protocol` says otherwise)."""
    if user_id is None:
        user_id = await make_user(conn, birth_date=birth_date)
    values: dict[str, Any] = {
        "program_id": program_id,
        "user_id": user_id,
        "passkit_internal_id": "pk-" + uuid.uuid4().hex[:18],
        "external_id": "M-" + uuid.uuid4().hex[:10],
        "protocol": "MEMBERSHIP",
        "status": "INSTALLED",
        "is_active": True,
    }
    values.update(cols)
    pass_id = await _insert(conn, "passes_master", values)
    if values["protocol"] == "MEMBERSHIP":
        await conn.execute(
            "INSERT INTO protocol_membership (pass_id, points_balance, tier_points) "
            "VALUES ($1, $2, $3)",
            pass_id,
            points,
            tier_points,
        )
    return pass_id


async def _insert(
    conn: asyncpg.Connection | asyncpg.Pool, table: str, values: dict[str, Any]
) -> uuid.UUID:
    columns = ", ".join(values)
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    row_id: uuid.UUID = await conn.fetchval(
        f"INSERT INTO {table} ({columns}) VALUES ({params}) RETURNING id", *values.values()
    )
    return row_id
