"""Work held back while PassKit was down as a whole (due 'infinity'), made due again at once
when PassKit answers (queries/ops.sql release_held_work)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from daemon.store.queries import q


@dataclass(frozen=True, slots=True)
class Released:
    syncs: int = 0
    deliveries: int = 0
    reads: int = 0

    @property
    def total(self) -> int:
        return self.syncs + self.deliveries + self.reads


async def release_held_work(pool: asyncpg.Pool) -> Released:
    row = await pool.fetchrow(q("release_held_work"))
    return Released(row["syncs"], row["deliveries"], row["reads"])
