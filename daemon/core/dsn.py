"""Small pure helpers for Postgres connection strings."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_REDACTED = "[redacted]"


def database_of(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/") or "postgres"


# Every place libpq takes a password, whatever its value: URL userinfo
# (postgresql://user:secret@host, and any other URL's), a `password=` URL parameter, a
# key=value connection string (password=secret or password='s e c'), and PGPASSWORD.
_DSN_PASSWORDS = [
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*(@)"),
    re.compile(r"(?i)([?&]password=)[^&\s#]*"),
    re.compile(r"(?i)((?<![\w.])password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'&]+)"),
    re.compile(r"(?i)(PGPASSWORD\s*[=:]\s*)(\S+)"),
]


def redact(text: str) -> str:
    """`text` (a DSN, or any text holding one) with every password replaced."""
    # Every log line passes here: most hold no URL and no password at all.
    if "://" not in text and "password" not in text.lower():
        return text
    for pattern in _DSN_PASSWORDS:
        text = pattern.sub(_keep_label, text)
    return text


def _keep_label(match: re.Match[str]) -> str:
    """The part naming the password stays, the value goes: `password=[redacted]`."""
    closing = match.group(2) if match.re.groups >= 2 and match.group(2) == "@" else ""
    return match.group(1) + _REDACTED + closing
