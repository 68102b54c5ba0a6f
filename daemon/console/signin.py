"""Signing in and out: a loyaltyd account (an invitation, then email and password), or a
Supabase access token. Failed sign-ins are limited per account and per address."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from daemon.console import auth
from daemon.console.context import ConsoleContext
from daemon.console.web import (
    PREFIX,
    check_signin_csrf,
    client_address,
    safe_next,
    set_cookie,
    viewer_of,
)
from daemon.core.logs import get_logger
from daemon.store import console as store

log = get_logger(__name__)

_TOO_MANY = "Too many sign-in attempts: wait 15 minutes and try again."


class SignIn:
    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.home)
        app.router.add_get("/signin", self.form)
        app.router.add_post("/signin", self.sign_in)
        app.router.add_post("/signout", self.sign_out)
        app.router.add_get("/invite/{token}", self.invite_form)
        app.router.add_post("/invite/{token}", self.accept_invite)
        app.router.add_post("/supabase", self.supabase)

    async def home(self, _request: web.Request) -> web.Response:
        raise web.HTTPSeeOther(f"{PREFIX}/campaigns")

    # --- a loyaltyd account ----------------------------------------------------------------------

    async def form(self, request: web.Request) -> web.Response:
        return self._form(request, "signin.html")

    def _form(
        self, request: web.Request, template: str, *, status: int = 200, **context: Any
    ) -> web.Response:
        token = auth.new_token()
        response = self.ctx.render(
            request,
            template,
            status=status,
            form_csrf=token,
            supabase=self._supabase_configured,
            next=safe_next(request.query.get("next")) or "",
            **context,
        )
        set_cookie(response, request, self.ctx.settings, auth.SIGNIN_COOKIE, token, 3600)
        return response

    @property
    def _supabase_configured(self) -> bool:
        s = self.ctx.settings
        return s.supabase_jwt_secret is not None or s.supabase_jwks_url is not None

    async def sign_in(self, request: web.Request) -> web.Response:
        form = await request.post()
        check_signin_csrf(request, self.ctx.settings, _field(form, "csrf"))
        email = _field(form, "email").strip().lower()
        password = _field(form, "password")
        address = client_address(request, self.ctx.settings)
        if await self._limited(email, address):
            return self._form(request, "signin.html", status=429, error=_TOO_MANY, email=email)
        account = await store.account(self.ctx.pool, email)
        # A hash is checked whether or not the account exists (a dummy one for an unknown
        # email), so the answer's time does not tell which emails have accounts.
        stored = account.password_hash if account is not None else None
        matches = await self.ctx.passwords.matches(stored, password)
        if account is None or not matches:
            log.info("console_signin_failed", address=address)
            return self._form(
                request, "signin.html", status=401, error="Wrong email or password.", email=email
            )
        await store.signin_succeeded(self.ctx.pool, email)
        log.info("console_signed_in", user=account.email)
        back = safe_next(_field(form, "next"))
        return await self._session(request, user_id=account.id, claims=None, to=back)

    async def _limited(self, email: str | None, address: str) -> bool:
        """Count this attempt, before any password or token is checked; whether it is one
        too many (for the account, or for the address)."""
        by_email, by_address = await store.signin_attempt(
            self.ctx.pool, email, address, auth.SIGNIN_WINDOW_SECONDS
        )
        limited = (
            by_email > auth.SIGNIN_ATTEMPTS_PER_ACCOUNT
            or by_address > auth.SIGNIN_ATTEMPTS_PER_ADDRESS
        )
        if limited:
            log.warning("console_signin_limited", address=address)
        return limited

    async def _session(
        self,
        request: web.Request,
        *,
        user_id: uuid.UUID | None,
        claims: dict[str, Any] | None,
        until: datetime | None = None,
        to: str | None = None,
    ) -> web.Response:
        session_id = auth.new_token()
        lasts = self.ctx.config.session_seconds
        now = self.ctx.clock()
        expires = now + timedelta(seconds=lasts)
        if until is not None:
            expires = min(expires, until)
        await store.create_session(
            self.ctx.pool,
            auth.digest(session_id),
            user_id=user_id,
            claims=claims,
            csrf=auth.new_token(),
            expires_at=expires,
        )
        response = web.HTTPSeeOther(to or f"{PREFIX}/campaigns")
        seconds = (expires - now).total_seconds()
        set_cookie(
            response,
            request,
            self.ctx.settings,
            auth.COOKIE,
            self.ctx.config.signer.sign(session_id),
            seconds,
        )
        response.del_cookie(auth.SIGNIN_COOKIE, path=PREFIX)
        raise response

    async def sign_out(self, request: web.Request) -> web.Response:
        await store.end_session(self.ctx.pool, viewer_of(request).session_hash)
        response = web.HTTPSeeOther(f"{PREFIX}/signin")
        response.del_cookie(auth.COOKIE, path=PREFIX)
        raise response

    # --- an invitation ----------------------------------------------------------------------------

    async def invite_form(self, request: web.Request) -> web.Response:
        email = await store.invite_email(self.ctx.pool, auth.digest(request.match_info["token"]))
        if email is None:
            return self.ctx.render(request, "invite_used.html", status=404)
        return self._form(request, "set_password.html", email=email)

    async def accept_invite(self, request: web.Request) -> web.Response:
        form = await request.post()
        check_signin_csrf(request, self.ctx.settings, _field(form, "csrf"))
        token_hash = auth.digest(request.match_info["token"])
        password, confirm = _field(form, "password"), _field(form, "confirm")
        problem = auth.password_problem(password, confirm)
        if problem is not None:
            email = await store.invite_email(self.ctx.pool, token_hash)
            if email is None:
                return self.ctx.render(request, "invite_used.html", status=404)
            return self._form(request, "set_password.html", status=400, email=email, error=problem)
        hashed = await self.ctx.passwords.hash(password)
        invited = await store.use_invite(self.ctx.pool, token_hash, hashed)
        if invited is None:
            return self.ctx.render(request, "invite_used.html", status=404)
        log.info("console_invitation_accepted", user=invited.email)
        return await self._session(request, user_id=invited.user_id, claims=None)

    # --- Supabase ---------------------------------------------------------------------------------

    async def supabase(self, request: web.Request) -> web.Response:
        """Sign in with a Supabase access token (the user's session in the app that signed them
        in): its reads and writes run as `authenticated` under its claims."""
        form = await request.post()
        check_signin_csrf(request, self.ctx.settings, _field(form, "csrf"))
        if await self._limited(None, client_address(request, self.ctx.settings)):
            return self._form(request, "signin.html", status=429, error=_TOO_MANY)
        try:
            claims = await asyncio.to_thread(
                auth.supabase_claims,
                _field(form, "access_token").strip(),
                self.ctx.settings,
                self.ctx.jwks,
            )
        except auth.TokenRefused as exc:
            log.info("console_supabase_refused", reason=str(exc))
            return self._form(request, "signin.html", status=401, error=f"Supabase token {exc}.")
        programs = await store.supabase_programs(store.Scope(self.ctx.pool, claims))
        if not programs:
            return self._form(
                request,
                "signin.html",
                status=403,
                error="This Supabase user administers no program (admin_profiles).",
            )
        until = datetime.fromtimestamp(int(claims["exp"]), UTC)
        log.info("console_signed_in_supabase", subject=str(claims.get("sub")))
        back = safe_next(_field(form, "next"))
        return await self._session(request, user_id=None, claims=claims, until=until, to=back)


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""
