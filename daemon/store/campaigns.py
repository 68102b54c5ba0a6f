"""The push_campaigns table as the planner's queue (queries/campaigns.sql): claimed with a
lease like any queue row, to be planned (validated, its audience resolved, counted or started)
or to be finished (a cancel applied, COMPLETED once every recipient has an outcome); outcomes
recorded in one statement. What planning writes is `daemon.store.campaign_plans`; what the
HTTP API writes, `daemon.store.campaign_api`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import asyncpg

from daemon.core.channels import Channel
from daemon.core.logs import get_logger
from daemon.core.metrics import Metrics
from daemon.domain.campaigns import CampaignFields
from daemon.engine.outcomes import Outcome, code, error_of, retry_in
from daemon.store.leases import LeasedTable, Takeovers
from daemon.store.queries import q

log = get_logger(__name__)

CHANNEL: Final = Channel.CAMPAIGNS
QUEUE_NAME: Final = "planner"

Kind = Literal["plan", "finish"]


@dataclass(frozen=True, slots=True)
class CampaignJob:
    """A campaign leased to this daemon, with the fields validation reads."""

    id: uuid.UUID
    version: str
    kind: Kind
    status: str  # after the claim: PROCESSING (to start), DRAFT (to count), CANCELLED…
    program_id: uuid.UUID | None
    program_exists: bool
    lease_expired: bool
    owed_seconds: float
    fields: CampaignFields
    # Set when the row breaks this rule and could not be leased: it is only to be failed.
    refused_by: str | None = None
    attempts: int = 1  # this claim's try since the campaign's last outcome (sql/071)

    @property
    def leased(self) -> bool:
        return self.refused_by is None

    @classmethod
    def from_row(
        cls, row: asyncpg.Record, status: str | None = None, refused_by: str | None = None
    ) -> CampaignJob:
        return cls(
            id=row["id"],
            version=row["version"],
            kind=row["kind"],
            status=status or row["status"],
            refused_by=refused_by,
            program_id=row["program_id"],
            program_exists=row["program_exists"],
            lease_expired=row["lease_expired"],
            owed_seconds=row["owed_seconds"],
            fields=_fields_of(row),
            attempts=row["attempts"],
        )

    def log_fields(self) -> Mapping[str, str]:
        return {"campaign_id": str(self.id), "program_id": str(self.program_id)}


def _fields_of(row: asyncpg.Record) -> CampaignFields:
    def listed(name: str) -> tuple[str, ...] | None:
        values = row[name]
        return None if values is None else tuple(values)

    return CampaignFields(
        name=row["name"],
        message_text=row["message_text"],
        segment=row["segment"],
        min_tier_points=row["min_tier_points"],
        min_points=row["min_points"],
        inactive_days=row["inactive_days"],
        zip_codes=listed("zip_codes"),
        zip_code_count=row["zip_code_count"],
        member_ids=listed("member_ids"),
        member_id_count=row["member_id_count"],
        csv_upload_url=row["csv_upload_url"],
    )


class CampaignStore(LeasedTable):
    name: Final = QUEUE_NAME
    channel: Final = CHANNEL

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        lease_seconds: float,
        max_member_ids: int,
        max_zip_codes: int,
        stale_seconds: float = 5.0,
        metrics: Metrics | None = None,
        takeovers: Takeovers | None = None,
    ) -> None:
        super().__init__(
            pool,
            lease_seconds=lease_seconds,
            stale_seconds=stale_seconds,
            metrics=metrics,
            takeovers=takeovers,
        )
        self._limits = (max_member_ids, max_zip_codes)

    # --- the queue ---------------------------------------------------------------------------

    async def claim(self, owner: uuid.UUID, limit: int) -> list[CampaignJob]:
        """Read the due campaigns, then lease in one statement each that no other daemon or
        admin got to first. A row that breaks a rule cannot be leased; it comes back
        refused, to be failed with the reason."""
        rows = await self._pool.fetch(q("due_campaigns"), limit, *self._limits, self._stale_seconds)
        if not rows:
            return []
        try:
            leased = await self._pool.fetch(
                q("claim_campaigns"),
                [row["id"] for row in rows],
                [row["version"] for row in rows],
                owner,
                self._lease_seconds,
            )
        except asyncpg.CheckViolationError:
            jobs = await self._claim_one_by_one(rows, owner)
        else:
            statuses = {r["id"]: r["status"] for r in leased}
            jobs = [
                CampaignJob.from_row(row, status=statuses[row["id"]])
                for row in rows
                if row["id"] in statuses
            ]
        self._count_taken_over(sum(1 for j in jobs if j.lease_expired and j.kind == "plan"))
        return jobs

    async def _claim_one_by_one(
        self, rows: Sequence[asyncpg.Record], owner: uuid.UUID
    ) -> list[CampaignJob]:
        """Some row breaks a rule (rare: a NOT VALID constraint let it in): each is leased on
        its own, and the one that cannot be comes back refused."""
        jobs: list[CampaignJob] = []
        for row in rows:
            try:
                leased = await self._pool.fetchrow(
                    q("claim_campaigns"), [row["id"]], [row["version"]], owner, self._lease_seconds
                )
            except asyncpg.CheckViolationError as exc:
                jobs.append(CampaignJob.from_row(row, refused_by=exc.constraint_name or "?"))
                continue
            if leased is not None:
                jobs.append(CampaignJob.from_row(row, status=leased["status"]))
        return jobs

    async def record(
        self, owner: uuid.UUID, results: Sequence[tuple[CampaignJob, Outcome]]
    ) -> None:
        leased = [(job, outcome) for job, outcome in results if job.leased]
        for job, outcome in results:
            error = error_of(outcome)
            if not job.leased and code(outcome) == "failed" and error is not None:
                # Failed as read: an admin's edit since then wins.
                await self._pool.execute(q("fail_unclaimed_campaign"), job.id, job.version, error)
        if not leased:
            return
        await self._pool.execute(
            q("record_campaigns"),
            owner,
            [job.id for job, _ in leased],
            [code(outcome) for _, outcome in leased],
            [retry_in(outcome) for _, outcome in leased],
            [error_of(outcome) for _, outcome in leased],
        )

    async def extend(self, owner: uuid.UUID, jobs: Sequence[CampaignJob]) -> None:
        await self._pool.execute(
            q("extend_campaign_leases"),
            owner,
            [j.id for j in jobs if j.leased],
            self._lease_seconds,
        )

    async def release(self, owner: uuid.UUID, jobs: Sequence[CampaignJob]) -> None:
        await self._pool.execute(q("release_campaigns"), owner, [j.id for j in jobs if j.leased])

    async def seconds_to_next(self) -> float | None:
        """Until the next scheduled campaign is due: the planner wakes for it on time."""
        value = await self._pool.fetchval(q("seconds_to_next_campaign"))
        return None if value is None else float(value)
