"""The database failures loyaltyd treats as "the database is unreachable or refused this
just now": logged and tried again later, never the daemon's end."""

from __future__ import annotations

from typing import Final

import asyncpg

DATABASE_ERRORS: Final = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError)
