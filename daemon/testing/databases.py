"""Databases for tests and benchmarks: a fresh one beside an admin DSN's."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def with_database(dsn: str, database: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))
