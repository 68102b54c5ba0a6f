"""What every console handler works with, and the few things they all do: render a page,
find the viewer's scope, answer 404 for what is not theirs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jinja2
import jwt
from aiohttp import web

from daemon.campaigns.rules import MAX_MESSAGE_CHARS
from daemon.console.auth import Passwords, Viewer
from daemon.console.feed import Feed
from daemon.console.web import PREFIX, VIEWER_KEY, ConsoleConfig
from daemon.core.config import Settings
from daemon.store import console as store
from daemon.store.pool import Pool


@dataclass
class ConsoleContext:
    settings: Settings
    config: ConsoleConfig
    pool: Pool
    feed: Feed
    env: jinja2.Environment
    stopping: asyncio.Event
    clock: Callable[[], datetime]
    jwks: jwt.PyJWKClient | None = None
    # Whether this daemon sees PassKit down (the operations page says so).
    passkit_down: Callable[[], bool] = lambda: False
    passwords: Passwords = field(default_factory=Passwords)

    def render(
        self, request: web.Request, template: str, *, status: int = 200, **context: Any
    ) -> web.Response:
        viewer = request.get(VIEWER_KEY)
        html = self.env.get_template(template).render(
            viewer=viewer,
            csrf=viewer.csrf if viewer is not None else "",
            prefix=PREFIX,
            max_message=MAX_MESSAGE_CHARS,
            **context,
        )
        return web.Response(text=html, content_type="text/html", status=status)

    def scope(self, viewer: Viewer) -> store.Scope:
        return store.Scope(self.pool, viewer.claims)


@dataclass(frozen=True)
class Form:
    """What a person typed into a form, as typed (shown back with the errors)."""

    values: Mapping[str, str]

    @classmethod
    def posted(cls, posted: Mapping[str, object]) -> Form:
        """A posted form's text fields (files are read apart)."""
        return cls({k: v for k, v in posted.items() if isinstance(v, str)})

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)


def not_found(what: str = "page") -> web.HTTPNotFound:
    """The same answer for what does not exist and for what is another program's."""
    return web.HTTPNotFound(text=f"no such {what}")


def uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def uuid_of(value: str, what: str = "page") -> uuid.UUID:
    """The id in a path: one that is not an id is a 404, like one that finds nothing."""
    found = uuid_or_none(value)
    if found is None:
        raise not_found(what)
    return found


def who(viewer: Viewer) -> str:
    """How the columns that say who did something name the viewer."""
    return f"console: {viewer.name}"
