"""The console as an aiohttp sub-application, mounted under /console/ by the HTTP server when
LOYALTYD_CONSOLE is on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from aiohttp import web

from daemon.console.admin import Admin
from daemon.console.auth import CookieSigner, Passwords, jwks_client
from daemon.console.campaigns import Campaigns
from daemon.console.context import ConsoleContext
from daemon.console.events import EventStreams, StreamLimits
from daemon.console.feed import Feed
from daemon.console.signin import SignIn
from daemon.console.web import (
    POOL_KEY,
    STATIC,
    ConsoleConfig,
    body_limit,
    html_errors,
    security_headers,
    session_middleware,
    templates,
)
from daemon.core.clock import utc_now
from daemon.core.config import Settings
from daemon.store.pool import Pool

# Room for the compose form's other fields on top of the largest CSV (or typed list of member
# ids) an admin may send.
_FORM_ROOM = 256 * 1024


def build_console(
    settings: Settings,
    pool: Pool,
    feed: Feed,
    *,
    stopping: asyncio.Event,
    clock: Callable[[], datetime] = utc_now,
    passkit_down: Callable[[], bool] = lambda: False,
    streams: StreamLimits | None = None,
    passwords: Passwords | None = None,
) -> web.Application:
    secret = settings.loyaltyd_console_secret
    if secret is None:
        raise ValueError("the console needs LOYALTYD_CONSOLE_SECRET")
    config = ConsoleConfig(settings, CookieSigner(secret.get_secret_value()))
    jwks = jwks_client(settings)
    env = templates()
    ctx = ConsoleContext(
        settings,
        config,
        pool,
        feed,
        env,
        stopping,
        clock,
        jwks,
        passkit_down,
        passwords or Passwords(),
    )
    app = web.Application(
        middlewares=[
            body_limit(settings.loyaltyd_console_csv_max_bytes + _FORM_ROOM),
            html_errors(env),
            session_middleware(config),
        ]
    )
    app[POOL_KEY] = pool
    app.on_response_prepare.append(security_headers)
    for part in (
        SignIn(ctx),
        Campaigns(ctx),
        Admin(ctx),
        EventStreams(ctx, streams or StreamLimits()),
    ):
        part.routes(app)
    app.router.add_static("/static/", STATIC, append_version=False)
    return app
