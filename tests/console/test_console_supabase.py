"""The console on the user's Supabase database, signed in with a Supabase access token: its
reads and writes run as `authenticated` under the token's claims, so the user's own
admin_profiles and row-level security decide, as they do for Softr."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm

from daemon.core.config import Settings
from daemon.store import console as store
from tests.console.support import Client, browser, console_app, console_settings, csrf_of
from tests.store.test_supabase import (  # noqa: F401 - the Supabase-like database fixtures
    ADMIN_A,
    HISTORY_B,
    PROGRAM_A,
    PROGRAM_B,
    bare_supabase,
    supabase,
    supabase_roles,
)

JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"


def _token(sub: str = ADMIN_A, secret: str = JWT_SECRET, **claims: Any) -> str:
    body = {
        "sub": sub,
        "role": "authenticated",
        "aud": "authenticated",
        "email": "admin-a@pizza.example",
        "exp": int(time.time()) + 3600,
        **claims,
    }
    return jwt.encode(body, secret, algorithm="HS256")


@pytest.fixture
async def owner(supabase: str) -> AsyncIterator[asyncpg.Pool]:  # noqa: F811
    pool = await asyncpg.create_pool(supabase, min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()


@pytest.fixture
async def app(
    owner: asyncpg.Pool,
    make_settings: Callable[..., Settings],
    supabase: str,  # noqa: F811
) -> AsyncIterator[web.Application]:
    settings = console_settings(
        make_settings, database_url=supabase, supabase_jwt_secret=JWT_SECRET
    )
    async with console_app(settings, owner) as console:
        yield console


async def _sign_in(client: Client, token: str) -> Any:
    form = await client.get("/console/signin")
    assert "Sign in with a Supabase session" in await form.text()
    return await client.post(
        "/console/supabase",
        data={"csrf": csrf_of(await form.text()), "access_token": token},
        allow_redirects=False,
    )


async def test_an_admin_signed_in_with_supabase_sees_their_program_only(
    app: web.Application, owner: asyncpg.Pool
) -> None:
    async with browser(app) as client:
        assert (await _sign_in(client, _token())).status == 303
        listing = await client.get("/console/campaigns")
        text = await listing.text()
        assert listing.status == 200
        other = await client.get(f"/console/campaigns/{HISTORY_B}")
        assert other.status == 404
        page = await client.get("/console/campaigns/new")
        csrf = csrf_of(await page.text())
        created = await client.post(
            "/console/campaigns",
            data={
                "csrf": csrf,
                "program": PROGRAM_A,
                "name": "From Supabase",
                "message": "Hi",
                "segment": "ALL",
                "when": "now",
            },
            allow_redirects=False,
        )
        assert created.status == 303, await created.text()
        refused = await client.post(
            "/console/campaigns",
            data={
                "csrf": csrf,
                "program": PROGRAM_B,
                "name": "Not mine",
                "message": "Hi",
                "segment": "ALL",
                "when": "now",
            },
        )
        assert refused.status == 400
    assert "City Events" not in text
    row = await owner.fetchrow(
        "SELECT program_id, created_by, status FROM push_campaigns WHERE name = 'From Supabase'"
    )
    assert row is not None and str(row["program_id"]) == PROGRAM_A
    assert (row["created_by"], row["status"]) == ("console: admin-a@pizza.example", "DRAFT")
    assert await owner.fetchval("SELECT count(*) FROM push_campaigns WHERE name = 'Not mine'") == 0


async def test_an_admin_signed_in_with_supabase_changes_settings_and_the_change_is_logged(
    app: web.Application, owner: asyncpg.Pool
) -> None:
    async with browser(app) as client:
        assert (await _sign_in(client, _token())).status == 303
        url = f"/console/programs/{PROGRAM_A}/settings"
        page = await client.get(url)
        assert page.status == 200, await page.text()
        saved = await client.post(
            url,
            data={
                "csrf": csrf_of(await page.text()),
                "birthday_bot_enabled": "on",
                "birthday_reward_points": "25",
                "birthday_message": "Happy birthday!",
                "timezone": "Europe/Paris",
                "max_pushes_per_pass_per_day": "2",
            },
        )
        text = await saved.text()
        assert saved.status == 200 and "Saved:" in text, text
    changes = await owner.fetch(
        "SELECT changed_by, setting FROM loyaltyd.program_setting_changes WHERE program_id = $1",
        uuid.UUID(PROGRAM_A),
    )
    assert "timezone" in {c["setting"] for c in changes}
    assert {c["changed_by"] for c in changes} == {"console: admin-a@pizza.example"}


async def test_its_statements_run_as_authenticated_under_the_tokens_claims(
    owner: asyncpg.Pool,
) -> None:
    claims = jwt.decode(_token(), JWT_SECRET, algorithms=["HS256"], audience="authenticated")
    scope = store.Scope(owner, claims)
    async with scope.connection() as conn:
        who = await conn.fetchrow("SELECT current_user AS role, auth.uid() AS uid")
        seen = await conn.fetch("SELECT DISTINCT program_id FROM push_campaigns")
    assert who is not None and (who["role"], str(who["uid"])) == ("authenticated", ADMIN_A)
    assert {str(r["program_id"]) for r in seen} == {PROGRAM_A}  # the user's own RLS
    assert [str(p) for p in await store.supabase_programs(scope)] == [PROGRAM_A]


@pytest.mark.parametrize(
    ("token", "status", "words"),
    [
        (_token(secret="another-secret-that-is-also-long-enough-000"), 401, "Signature"),
        (_token(exp=int(time.time()) - 10), 401, "expired"),
        (_token(role="anon"), 401, "not a signed-in user"),
        (_token(aud="somebody-else"), 401, "audience"),
        ("not.a.jwt", 401, "not a JWT"),
        (_token(sub=str(uuid.uuid4())), 403, "administers no program"),
    ],
)
async def test_a_token_that_is_not_an_admins_is_refused(
    app: web.Application, token: str, status: int, words: str
) -> None:
    async with browser(app) as client:
        answer = await _sign_in(client, token)
        assert answer.status == status
        assert words.lower() in (await answer.text()).lower()
        assert (await client.get("/console/campaigns", allow_redirects=False)).status == 303


# --- tokens signed with the project's asymmetric keys (its JWKS) ---------------------------------

KID = "project-key-1"


@dataclass(frozen=True)
class Project:
    """A Supabase project's Auth as far as the console sees it: its JWKS, served locally."""

    issuer: str
    key: rsa.RSAPrivateKey

    def token(
        self, key: Any = None, algorithm: str = "RS256", kid: str = KID, **claims: Any
    ) -> str:
        body = {
            "sub": ADMIN_A,
            "role": "authenticated",
            "aud": "authenticated",
            "iss": self.issuer,
            "email": "admin-a@pizza.example",
            "exp": int(time.time()) + 3600,
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}  # None: leave the claim out
        return jwt.encode(body, key or self.key, algorithm=algorithm, headers={"kid": kid})


@pytest.fixture
async def project() -> AsyncIterator[Project]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": KID, "alg": "RS256"}

    async def jwks(_request: web.Request) -> web.Response:
        return web.json_response({"keys": [jwk]})

    app = web.Application()
    app.router.add_get("/auth/v1/.well-known/jwks.json", jwks)
    server = TestServer(app)
    await server.start_server()
    try:
        yield Project(str(server.make_url("/auth/v1")), key)
    finally:
        await server.close()


@pytest.fixture
async def jwks_app(
    owner: asyncpg.Pool,
    make_settings: Callable[..., Settings],
    supabase: str,  # noqa: F811
    project: Project,
) -> AsyncIterator[web.Application]:
    settings = console_settings(
        make_settings,
        database_url=supabase,
        supabase_jwks_url=f"{project.issuer}/.well-known/jwks.json",
    )
    async with console_app(settings, owner) as console:
        yield console


async def test_a_token_signed_with_the_projects_jwks_key_signs_in(
    jwks_app: web.Application, project: Project
) -> None:
    async with browser(jwks_app) as client:
        assert (await _sign_in(client, project.token())).status == 303
        listing = await client.get("/console/campaigns")
        assert listing.status == 200
        assert (await client.get(f"/console/campaigns/{HISTORY_B}")).status == 404


@pytest.mark.parametrize(
    ("forge", "words"),
    [
        ("another key", "Signature"),
        ("another project", "issuer"),
        ("no issuer", "iss"),
        ("an EC key under the RSA key's id", "refused"),
        ("an unknown key id", "no key for it"),
        ("HS256 without a secret", "not accepted"),
    ],
)
async def test_a_token_the_jwks_does_not_vouch_for_is_refused(
    jwks_app: web.Application, project: Project, forge: str, words: str
) -> None:
    tokens = {
        "another key": lambda: project.token(
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ),
        "another project": lambda: project.token(iss="https://other.supabase.co/auth/v1"),
        "no issuer": lambda: project.token(iss=None),
        "an EC key under the RSA key's id": lambda: project.token(
            ec.generate_private_key(ec.SECP256R1()), algorithm="ES256"
        ),
        "an unknown key id": lambda: project.token(kid="nobody"),
        "HS256 without a secret": lambda: _token(),
    }
    async with browser(jwks_app) as client:
        answer = await _sign_in(client, tokens[forge]())
        assert answer.status == 401, await answer.text()
        assert words.lower() in (await answer.text()).lower()
