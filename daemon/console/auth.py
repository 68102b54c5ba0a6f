"""Who is at the console: passwords (argon2id), one-time invitations, signed session cookies,
sign-in limits, and Supabase access tokens.

A session cookie carries a random id and its HMAC-SHA256 under LOYALTYD_CONSOLE_SECRET; only
the id's SHA-256 is stored (loyaltyd.console_sessions), with its expiry, its CSRF token and
its revocation. An invitation token is random too, and stored as its hash only.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from daemon.core.config import Settings

COOKIE: Final = "loyaltyd_session"
SIGNIN_COOKIE: Final = "loyaltyd_signin"  # the sign-in form's CSRF token, before a session
INVITE_HOURS: Final = 24.0
MIN_PASSWORD_CHARS: Final = 10
MAX_PASSWORD_CHARS: Final = 1000
# Sign-in attempts allowed in the window, per account and per address (a success starts the
# account's count again, not the address's).
SIGNIN_WINDOW_SECONDS: Final = 15 * 60.0
SIGNIN_ATTEMPTS_PER_ACCOUNT: Final = 5
SIGNIN_ATTEMPTS_PER_ADDRESS: Final = 20
# argon2 checks running at once (each holds about 64 MiB): more queue.
PARALLEL_HASHES: Final = 4
ROLES: Final = ("admin", "viewer")

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(stored: str | None, offered: str) -> bool:
    """Whether `offered` is the password; a missing hash still costs a hash's time, so an
    unknown account answers as slowly as a wrong password."""
    try:
        return _hasher.verify(stored or _dummy_hash(), offered) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    """Made at the first sign-in, not at import: a hash holds 64 MiB while it runs, which
    every process importing the console (each CLI command) would otherwise keep."""
    return _hasher.hash(secrets.token_urlsafe(16))


class Passwords:
    """Hashing and checking passwords off the event loop, at most `parallel` at once, so a
    flood of sign-ins waits its turn instead of taking the host's memory."""

    def __init__(self, parallel: int = PARALLEL_HASHES) -> None:
        self._slots = asyncio.Semaphore(parallel)

    async def matches(self, stored: str | None, offered: str) -> bool:
        async with self._slots:
            return await asyncio.to_thread(password_matches, stored, offered)

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(hash_password, password)


def password_problem(password: str, confirm: str) -> str | None:
    """Why this new password is refused (None: it is fine)."""
    if password != confirm:
        return "the two passwords differ"
    if len(password) < MIN_PASSWORD_CHARS:
        return f"a password needs at least {MIN_PASSWORD_CHARS} characters"
    if len(password) > MAX_PASSWORD_CHARS:
        return f"a password has at most {MAX_PASSWORD_CHARS} characters"
    return None


def new_token() -> str:
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class CookieSigner:
    """`id.signature` cookies: only an id this daemon (or another with the same secret)
    issued passes."""

    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def sign(self, value: str) -> str:
        return f"{value}.{self._mac(value)}"

    def unsign(self, cookie: str | None) -> str | None:
        if not cookie or "." not in cookie:
            return None
        value, _, mac = cookie.rpartition(".")
        return value if hmac.compare_digest(mac, self._mac(value)) else None

    def _mac(self, value: str) -> str:
        raw = hmac.new(self._key, value.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class Viewer:
    """A signed-in person: their programs with a role each, and where their statements run
    (`claims`: a Supabase sign-in, run as `authenticated`)."""

    session_hash: str
    name: str
    csrf: str
    roles: Mapping[uuid.UUID, str] = field(default_factory=dict)
    operator: bool = False
    claims: Mapping[str, Any] | None = None

    @property
    def program_ids(self) -> list[uuid.UUID]:
        return list(self.roles)

    def admins(self, program_id: uuid.UUID) -> bool:
        return self.roles.get(program_id) == "admin"

    @property
    def admin_programs(self) -> list[uuid.UUID]:
        return [p for p, role in self.roles.items() if role == "admin"]


class TokenRefused(ValueError):
    """A Supabase access token loyaltyd does not accept; the text says why."""


# The asymmetric algorithms accepted, with the type of key each one is checked with.
_KEY_TYPES: Final = {"RS256": "RSA", "ES256": "EC"}
JWKS_SECONDS: Final = 5.0  # how long fetching the project's JWKS may take
_JWKS_PATH: Final = "/.well-known/jwks.json"


def jwks_client(settings: Settings) -> jwt.PyJWKClient | None:
    if settings.supabase_jwks_url is None:
        return None
    return jwt.PyJWKClient(settings.supabase_jwks_url, timeout=JWKS_SECONDS)


def supabase_claims(token: str, settings: Settings, jwks: jwt.PyJWKClient | None) -> dict[str, Any]:
    """The claims of a Supabase access token, checked: signed with the project's JWT secret
    (HS256) or one of its JWKS keys, not expired, for `authenticated`, with a subject; one
    checked against the JWKS also comes from that project (its `iss` is the JWKS's address
    without /.well-known/jwks.json, as Supabase Auth sets it)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenRefused("not a JWT") from exc
    key, algorithms = _key_for(header, token, settings, jwks)
    issuer = _issuer(settings) if algorithms != ["HS256"] else None
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience="authenticated",
            issuer=issuer,
            options={"require": ["exp", "sub", "aud", *(["iss"] if issuer else [])]},
        )
    except jwt.PyJWTError as exc:
        raise TokenRefused(f"refused: {exc}") from exc
    if claims.get("role") != "authenticated":
        raise TokenRefused("not a signed-in user's token (role is not authenticated)")
    return claims


def _issuer(settings: Settings) -> str | None:
    url = settings.supabase_jwks_url
    if url is None or not url.endswith(_JWKS_PATH):
        return None
    return url.removesuffix(_JWKS_PATH)


def _key_for(
    header: Mapping[str, Any], token: str, settings: Settings, jwks: jwt.PyJWKClient | None
) -> tuple[Any, list[str]]:
    algorithm = header.get("alg")
    if algorithm == "HS256" and settings.supabase_jwt_secret is not None:
        return settings.supabase_jwt_secret.get_secret_value(), ["HS256"]
    if algorithm in _KEY_TYPES and jwks is not None:
        try:
            found = jwks.get_signing_key_from_jwt(token)
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"no key for it in the project's JWKS: {exc}") from exc
        if found.key_type != _KEY_TYPES[algorithm]:
            # PyJWT would fail on the key itself (a TypeError), not on the token
            raise TokenRefused(f"refused: a {algorithm} token names a {found.key_type} key")
        return found.key, [algorithm]
    raise TokenRefused(f"a {algorithm} token is not accepted here (check SUPABASE_* settings)")
