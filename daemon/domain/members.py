"""The import's view of what the database already holds, as the store reads it: the passes
the file's member ids and PassKit ids name, and each user as the batch wrote it. Pure."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class ExistingPass:
    """A pass already in the database, as the import needs to see it."""

    id: uuid.UUID
    program_id: uuid.UUID | None
    external_id: str | None
    passkit_internal_id: str | None
    protocol: str
    user_id: uuid.UUID | None
    owner_email_key: str | None  # lower(email) of its user; None when unlinked or no email


@dataclass(frozen=True, slots=True)
class WrittenUser:
    """A user of the batch, as its upsert left it."""

    email_key: str  # lower(email)
    user_id: uuid.UUID | None
    outcome: str  # created / updated / unchanged
    # the file's values for a member of another program that were not written
    withheld: bool = False
