"""Helpers of the wallet tests: a program whose passes loyaltyd and the fake PassKit both hold,
and a Sweeper wired as the daemon wires it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from daemon.core.config import Settings
from daemon.domain.wallet import SweepClass, SweepSummary
from daemon.passkit.client import PassKitClient
from daemon.testing.fakepasskit import FakePassKit
from daemon.wallet.sweep import Sweeper
from tests.harness import settings_for

PROGRAM_CLASS = "wallet-program"


async def wallet_program(
    pool: asyncpg.Pool,
    fake: FakePassKit,
    statuses: Sequence[str | None],
    *,
    prefix: str = "w-",
    points: int = 10,
    passkit_points: Callable[[int], float] | None = None,
    class_id: str = PROGRAM_CLASS,
    tier_points: int = 0,
    passkit_tier_points: Callable[[int], int] | None = None,
    tiers_at_passkit: bool = False,
) -> uuid.UUID:
    """A program with one pass per entry of `statuses`: every pass INSTALLED by hand in
    passes_master with `points` and `tier_points`; at PassKit, pass i (1-based, id
    f"{prefix}{i}") has wallet status statuses[i-1] (None: PassKit has no such pass),
    `passkit_points(i)` and `passkit_tier_points(i)` (default: the ledger's).
    `tiers_at_passkit`: the program shows loyaltyd's tier points at PassKit."""
    program: uuid.UUID = await pool.fetchval(
        "INSERT INTO programs (name, passkit_program_id, passkit_tier_id, passkit_tier_points) "
        "VALUES ('Wallet Bar', $1, 'tier', $2) RETURNING id",
        class_id,
        tiers_at_passkit,
    )
    await pool.execute(
        """
        WITH u AS (
            INSERT INTO users (email, first_name)
            SELECT $3 || n || '@example.com', 'Member' || n FROM generate_series(1, $2) n
            RETURNING id, substr(first_name, 7)::int AS n
        ),
        p AS (
            INSERT INTO passes_master (program_id, user_id, passkit_internal_id, external_id,
                                       status, is_active)
            SELECT $1, u.id, $3 || u.n, 'M-' || $3 || u.n, 'INSTALLED', true FROM u
            RETURNING id
        )
        INSERT INTO protocol_membership (pass_id, points_balance, tier_points)
        SELECT id, $4, $5 FROM p
        """,
        program,
        len(statuses),
        prefix,
        points,
        tier_points,
    )
    for i, status in enumerate(statuses, start=1):
        if status is not None:
            balance = passkit_points(i) if passkit_points else float(points)
            tiers = passkit_tier_points(i) if passkit_tier_points else tier_points
            fake.add_pass(
                f"{prefix}{i}", class_id=class_id, status=status, points=balance, tier_points=tiers
            )
    return program


def wallet_settings(
    make_settings: Callable[..., Settings], fake: FakePassKit, **extra: Any
) -> Settings:
    """The daemon's settings against `fake`, with no sweeps of its own: a test sweeps."""
    return settings_for(make_settings, fake.url, loyaltyd_wallet_sweeps=False, **extra)


async def sweep_members(
    pool: asyncpg.Pool, settings: Settings, dsn: str, program: uuid.UUID
) -> SweepSummary:
    """One sweep of the program's members, as the daemon runs it."""
    async with PassKitClient(settings) as client:
        summary = await sweeper(client, pool, settings, dsn).sweep(
            SweepClass(program, "MEMBERSHIP", PROGRAM_CLASS, "Wallet Bar")
        )
    assert summary is not None, "another sweep held the program"
    return summary


def sweeper(client: PassKitClient, pool: asyncpg.Pool, settings: Settings, dsn: str) -> Sweeper:
    return Sweeper(client, pool, settings, dsn=dsn, owner=uuid.uuid4())


async def statuses(pool: asyncpg.Pool, program: uuid.UUID) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT status, count(*) AS n FROM passes_master WHERE program_id = $1 GROUP BY status",
        program,
    )
    return {r["status"]: r["n"] for r in rows}
