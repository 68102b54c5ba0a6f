"""The console's plumbing: the sub-application, its templates, and the rules every request
follows.

- Every answer carries a strict Content-Security-Policy (`default-src 'self'`, no inline
  script or style, `frame-ancestors 'none'`), `X-Content-Type-Options: nosniff`, and pages
  for a signed-in person are `no-store`.
- Every state-changing request (POST) must come from the console itself: the browser's
  `Sec-Fetch-Site` (or, without it, `Origin`) says same-origin, and it carries the session's
  CSRF token (header `X-CSRF-Token`, form field `csrf`, or a multipart form's first part,
  checked before an uploaded file is read). The sign-in form, before any
  session, carries a token of its own in a cookie (double submit).
- A person is known by the signed session cookie (`HttpOnly`, `SameSite=Strict`, `Secure` over
  https or behind a proxy that says so); without one, pages redirect to sign-in.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, NoReturn
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.typedefs import Middleware
from yarl import URL

from daemon.console.auth import COOKIE, SIGNIN_COOKIE, CookieSigner, Viewer, digest
from daemon.core.config import Settings
from daemon.core.logs import get_logger
from daemon.store import console as store
from daemon.store.pool import Pool

log = get_logger(__name__)

PREFIX: Final = "/console"
STATIC: Final = Path(__file__).parent / "static"
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
# Reachable without a session.
PUBLIC: Final = (f"{PREFIX}/signin", f"{PREFIX}/invite/", f"{PREFIX}/static/", f"{PREFIX}/supabase")
VIEWER_KEY: Final = web.RequestKey("viewer", Viewer)
# A multipart form whose first part (the CSRF token) the session's check has read already.
FORM_READER_KEY: Final = web.RequestKey("form_reader", MultipartReader)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ConsoleConfig:
    settings: Settings
    signer: CookieSigner

    @property
    def session_seconds(self) -> float:
        return self.settings.loyaltyd_console_session_hours * 3600


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("daemon.console", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["number"] = lambda n: f"{int(n or 0):,}"
    env.filters["when"] = _when
    env.filters["clock"] = _clock
    env.filters["setting"] = _setting
    return env


def _setting(value: str | None) -> str:
    """A logged setting value as a person reads it."""
    if value in (None, ""):
        return "—"
    return {"true": "yes", "false": "no"}.get(value, value)


def _when(value: datetime | None, timezone: str | None = None) -> str:
    return _local(value, timezone, "%Y-%m-%d %H:%M %Z")


def _clock(value: datetime | None, timezone: str | None = None) -> str:
    """The time of day to the second (a retry due in a few seconds), in the program's zone."""
    return _local(value, timezone, "%H:%M:%S")


def _local(value: datetime | None, timezone: str | None, pattern: str) -> str:
    if value is None:
        return "—"
    if timezone:
        with contextlib.suppress(KeyError, ValueError):
            value = value.astimezone(ZoneInfo(timezone))
    return value.strftime(pattern)


def secure_request(request: web.Request, settings: Settings) -> bool:
    """Served over https: the connection itself, or a trusted proxy's X-Forwarded-Proto."""
    if request.secure:
        return True
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return settings.loyaltyd_console_trust_proxy and forwarded.split(",")[0].strip() == "https"


def client_address(request: web.Request, settings: Settings) -> str:
    """Who is asking: behind a trusted proxy, the address that proxy saw (the right-most
    X-Forwarded-For hop: the ones left of it are whatever the client wrote)."""
    if settings.loyaltyd_console_trust_proxy:
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
        if hops[-1]:
            return hops[-1]
    return request.remote or "unknown"


def same_origin(request: web.Request, settings: Settings) -> bool:
    """The request comes from the console's own pages (what a browser says of it; behind a
    trusted TLS proxy the page's origin is https, whatever the proxy's request to us is)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser's cross-site request (a browser sends one of the two)
    scheme = "https" if secure_request(request, settings) else request.scheme
    return origin == f"{scheme}://{request.host}"


def set_cookie(
    response: web.StreamResponse,
    request: web.Request,
    settings: Settings,
    name: str,
    value: str,
    max_age: float | None,
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=None if max_age is None else int(max_age),
        path=PREFIX,
        httponly=True,
        samesite="Strict",
        secure=secure_request(request, settings),
    )


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer as it is prepared (on_response_prepare): streamed ones (the CSV export,
    the event stream) and error pages included."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    if not request.path.startswith(f"{PREFIX}/static/"):
        response.headers["Cache-Control"] = "no-store"


def route_of(request: web.Request) -> str:
    """The route as logs may show it: its pattern (/console/invite/{token}), never a path that
    carries a token."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(no route)"


def body_limit(max_bytes: int) -> Middleware:
    """The console's own limit on request bodies. aiohttp applies the limit of the
    application a connection was accepted by (the daemon's, LOYALTYD_HTTP_MAX_BODY_BYTES, 64
    KiB by default), never a sub-application's: each console request is read under its own."""

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request.clone(client_max_size=max_bytes))

    return limit


def session_middleware(config: ConsoleConfig) -> Middleware:
    @web.middleware
    async def known(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(PUBLIC):
            return await handler(request)
        viewer = await _viewer(request, config)
        if viewer is None:
            _to_sign_in(request)
        if request.method not in ("GET", "HEAD"):
            _check_csrf(request, config.settings, viewer.csrf, await _form_token(request))
        request[VIEWER_KEY] = viewer
        return await handler(request)

    return known


def _to_sign_in(request: web.Request) -> NoReturn:
    """Without a session: a page goes to sign-in, and back to itself after; a fragment
    (htmx) takes its whole page there (HX-Redirect), so nothing fails silently."""
    if "HX-Request" in request.headers:
        back = safe_next(URL(request.headers.get("HX-Current-URL", "")).path_qs)
        raise web.HTTPUnauthorized(text="sign in first", headers={"HX-Redirect": signin_url(back)})
    if request.method == "GET":
        raise web.HTTPSeeOther(signin_url(safe_next(request.path_qs)))
    raise web.HTTPUnauthorized(text="sign in first")


def signin_url(back: str | None) -> str:
    return f"{PREFIX}/signin" + (f"?{urlencode({'next': back})}" if back else "")


def safe_next(value: str | None) -> str | None:
    """A page of the console to return to after signing in: a path of its own (never another
    site, nor the sign-in page itself), else None."""
    if not value or not value.startswith(f"{PREFIX}/") or value.startswith(f"{PREFIX}/signin"):
        return None
    if "//" in value or "\\" in value or any(ord(c) < 0x20 for c in value):
        return None
    return value


async def _viewer(request: web.Request, config: ConsoleConfig) -> Viewer | None:
    session_id = config.signer.unsign(request.cookies.get(COOKIE))
    if session_id is None:
        return None
    return await load_viewer(request.app[POOL_KEY], digest(session_id))


async def load_viewer(pool: Pool, id_hash: str) -> Viewer | None:
    """The person of a live session (None: ended, expired, or their account revoked)."""
    row = await store.session(pool, id_hash)
    if row is None:
        return None
    if row.claims is not None:
        programs = await store.supabase_programs(store.Scope(pool, row.claims))
        name = str(row.claims.get("email") or row.claims.get("sub"))
        return Viewer(id_hash, name, row.csrf, {p: "admin" for p in programs}, False, row.claims)
    return Viewer(id_hash, row.email or "?", row.csrf, row.roles, row.operator)


async def _form_token(request: web.Request) -> str | None:
    """The CSRF token a request offers: a header (htmx), a form field, or the first part of a
    multipart form (checked before anything after it, an uploaded file, is read)."""
    header = request.headers.get("X-CSRF-Token")
    if header:
        return header
    if request.content_type == "multipart/form-data":
        reader = await request.multipart()
        request[FORM_READER_KEY] = reader
        part = await reader.next()
        if isinstance(part, BodyPartReader) and part.name == "csrf" and part.filename is None:
            return await _small_text(part)
        return None
    if request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        value = form.get("csrf")
        return value if isinstance(value, str) else None
    return None


async def _small_text(part: BodyPartReader, limit: int = 1024) -> str | None:
    data = bytearray()
    while chunk := await part.read_chunk(limit):
        data += chunk
        if len(data) > limit:
            return None
    return data.decode("utf-8", "replace")


def _check_csrf(
    request: web.Request, settings: Settings, expected: str, offered: str | None
) -> None:
    if not same_origin(request, settings):
        log.warning("console_cross_site_refused", route=route_of(request))
        raise web.HTTPForbidden(text="cross-site request refused")
    if offered is None or not hmac.compare_digest(offered, expected):
        log.warning("console_csrf_refused", route=route_of(request))
        raise web.HTTPForbidden(text="the form is out of date: reload the page and try again")


def check_signin_csrf(request: web.Request, settings: Settings, offered: str | None) -> None:
    """The sign-in form's own token (double submit) and same origin."""
    expected = request.cookies.get(SIGNIN_COOKIE)
    if expected is None:
        raise web.HTTPForbidden(text="the form is out of date: reload the page and try again")
    _check_csrf(request, settings, expected, offered)


POOL_KEY: Final = web.AppKey("pool", Pool)


def viewer_of(request: web.Request) -> Viewer:
    return request[VIEWER_KEY]


_TITLES: Final = {
    400: "That did not work",
    401: "Sign in first",
    403: "Not for you",
    404: "Not found",
    409: "Changed meanwhile",
    413: "Too large",
    429: "Too many tries",
}


def html_errors(env: jinja2.Environment) -> Middleware:
    """An error a person hits in the browser is a page (an unexpected one too: a 500, its
    details in the log); a fragment's (htmx) stays a short text, for the page around it."""

    @web.middleware
    async def page(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400 or "HX-Request" in request.headers:
                raise
            return _error_page(env, request, exc.status, exc.text or exc.reason)
        except Exception:
            log.exception("console_request_failed", route=route_of(request))
            if "HX-Request" in request.headers:
                return web.Response(status=500, text="something went wrong: try again")
            return _error_page(env, request, 500, "Something went wrong on our side: try again.")

    return page


def _error_page(
    env: jinja2.Environment, request: web.Request, status: int, message: str
) -> web.Response:
    viewer = request.get(VIEWER_KEY)
    html = env.get_template("error.html").render(
        viewer=viewer,
        csrf=viewer.csrf if viewer is not None else "",
        prefix=PREFIX,
        title=_TITLES.get(status, "Something went wrong"),
        message=message,
    )
    return web.Response(text=html, content_type="text/html", status=status)
