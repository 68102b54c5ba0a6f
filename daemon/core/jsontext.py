"""Values as JSON carries them: ids and times as text, through dicts and lists."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, date):  # datetimes too
        return value.isoformat()
    return value
