"""The birthday bot's rows, as the store reads them: a program that celebrates, and a member
whose birthday it is. Pure."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BirthdayProgram:
    id: uuid.UUID
    name: str | None
    timezone: str
    enabled: bool  # birthday_bot_enabled
    reward_points: int
    message: str | None  # the template; None or empty: points only


@dataclass(frozen=True, slots=True)
class BirthdayMember:
    pass_id: uuid.UUID
    first_name: str | None
    last_name: str | None
    installed: bool  # in a wallet: gets the message too
