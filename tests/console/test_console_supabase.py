"""The console on the user's Supabase database, signed in with a Supabase access token: its
reads and writes run as `authenticated` under the token's claims, so the user's own
admin_profiles and row-level security decide, as they do for Softr. The whole access matrix
holds there too: two programs' admins, each signed in with a token, each gets a 404 for every
id-bearing route of the other's (while the other watches it live), hears only of their own
program's campaigns on the event stream, and composes, confirms and cancels their own."""

from __future__ import annotations

import asyncio
import contextlib
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

from daemon.console.app import build_console
from daemon.console.feed import Feed
from daemon.core.config import Settings
from daemon.store import console as store
from tests.campaign_support import plan, stage_campaign, write_as_daemon
from tests.console.support import Client, browser, console_app, console_settings, csrf_of
from tests.harness import wait_until
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


# --- the whole access matrix, two programs' admins signed in with Supabase tokens --------------

ADMIN_B = "bbbbbbbb-0000-0000-0000-00000000000b"
EMAIL_B = "admin-b@events.example"


def _token_b() -> str:
    return _token(sub=ADMIN_B, email=EMAIL_B)


def _id_routes(campaign: uuid.UUID | str) -> list[tuple[str, str]]:
    """Every route of the console that bears a campaign's id."""
    return [
        ("GET", f"/console/campaigns/{campaign}"),
        ("GET", f"/console/campaigns/{campaign}/live"),
        ("GET", f"/console/campaigns/{campaign}/progress"),
        ("GET", f"/console/campaigns/{campaign}/actions"),
        ("GET", f"/console/campaigns/{campaign}/confirm"),
        ("GET", f"/console/campaigns/{campaign}/cancel"),
        ("GET", f"/console/campaigns/{campaign}/recipients"),
        ("GET", f"/console/campaigns/{campaign}/recipients.csv"),
        ("POST", f"/console/campaigns/{campaign}/confirm"),
        ("POST", f"/console/campaigns/{campaign}/cancel"),
        ("POST", f"/console/campaigns/{campaign}/test"),
    ]


async def test_the_matrix_names_every_id_bearing_route_of_the_console(
    make_settings: Callable[..., Settings],
) -> None:
    unused: Any = None  # no statement runs: only the routes are read
    console = build_console(
        console_settings(make_settings), unused, Feed(unused), stopping=asyncio.Event()
    )
    bearing = {
        (route.method, f"/console{route.resource.canonical}")
        for route in console.router.routes()
        if route.resource is not None
        and "{id}" in route.resource.canonical
        and route.method != "HEAD"  # aiohttp's own, beside each GET
    }
    settings = {(m, "/console/programs/{id}/settings") for m in ("GET", "POST")}
    assert bearing == set(_id_routes("{id}")) | settings


async def _signed_in(client: Client, token: str) -> str:
    """Signed in with the token; the session's CSRF token (read from a page)."""
    assert (await _sign_in(client, token)).status == 303
    page = await client.get("/console/campaigns")
    assert page.status == 200, await page.text()
    return csrf_of(await page.text())


async def _call(client: Client, method: str, path: str, csrf: str, **extra: Any) -> Any:
    data = {"csrf": csrf, "count": "1", "typed": "1", "member": "B-1"}
    return await client.request(
        method, path, data=data if method == "POST" else None, allow_redirects=False, **extra
    )


async def _counted_draft(owner: asyncpg.Pool, program: str, name: str, count: int) -> uuid.UUID:
    """A DRAFT whose audience the daemon counted."""
    draft = await stage_campaign(owner, program_id=uuid.UUID(program), status="DRAFT", name=name)
    await write_as_daemon(
        owner,
        "UPDATE push_campaigns SET recipient_count = $2, audience_counted_at = now() WHERE id = $1",
        draft,
        count,
    )
    return draft


async def _sent(owner: asyncpg.Pool, campaign: uuid.UUID, sent: int) -> None:
    await write_as_daemon(
        owner, "UPDATE push_campaigns SET sent_count = $2 WHERE id = $1", campaign, sent
    )


async def _read_until(stream: Any, wanted: bytes, seconds: float) -> bytes:
    """What a stream says until `wanted` (or `seconds` pass)."""
    seen = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while wanted not in seen:
                seen += await stream.content.readany()
    return seen


@dataclass
class TwoPrograms:
    app: web.Application
    feed: Feed
    draft_b: uuid.UUID
    running_b: uuid.UUID
    running_a: uuid.UUID


@pytest.fixture
async def two(
    owner: asyncpg.Pool,
    make_settings: Callable[..., Settings],
    supabase: str,  # noqa: F811
) -> AsyncIterator[TwoPrograms]:
    """Program B's campaigns: the old tool's (history), a counted DRAFT and one being sent;
    one of A's being sent; the live feed running, as the daemon runs it."""
    draft_b = await _counted_draft(owner, PROGRAM_B, "B draft", 1)
    running_b = await stage_campaign(
        owner,
        program_id=uuid.UUID(PROGRAM_B),
        status="PROCESSING",
        name="B blast",
        recipient_count=1,
    )
    running_a = await stage_campaign(
        owner,
        program_id=uuid.UUID(PROGRAM_A),
        status="PROCESSING",
        name="A blast",
        recipient_count=1,
    )
    settings = console_settings(
        make_settings, database_url=supabase, supabase_jwt_secret=JWT_SECRET
    )
    feed = Feed(owner, read_every=0.2)
    stopping = asyncio.Event()
    task = asyncio.create_task(feed.run(stopping))
    try:
        async with console_app(settings, owner, feed) as console:
            yield TwoPrograms(console, feed, draft_b, running_b, running_a)
    finally:
        stopping.set()
        await task


async def test_an_admin_of_one_program_gets_404_for_everything_of_another_while_its_admin_watches(
    two: TwoPrograms, owner: asyncpg.Pool
) -> None:
    """B's admin watches B's campaigns live (the feed holds their progress) while A's admin
    asks for every id-bearing route of B's: each is a 404, as for an id that does not exist,
    and nothing of B's changes."""
    theirs = (uuid.UUID(HISTORY_B), two.draft_b, two.running_b)
    async with browser(two.app) as b, browser(two.app) as a:
        await _signed_in(b, _token_b())
        watching = await b.get("/console/events")
        assert watching.status == 200
        await wait_until(lambda: two.feed.known(two.running_b) is not None, timeout=10)
        csrf = await _signed_in(a, _token())
        for campaign in (*theirs, uuid.uuid4(), "not-an-id"):
            for method, path in _id_routes(campaign):
                answer = await _call(a, method, path, csrf)
                assert answer.status == 404, (method, path, answer.status)
        for method in ("GET", "POST"):
            answer = await a.request(
                method,
                f"/console/programs/{PROGRAM_B}/settings",
                data={"csrf": csrf, "timezone": "UTC"},
                allow_redirects=False,
            )
            assert answer.status == 404, method
        # The page that composes offers A's program only, and refuses B's.
        compose = await (await a.get("/console/campaigns/new")).text()
        assert PROGRAM_A in compose and PROGRAM_B not in compose
        listing = await (await a.get("/console/campaigns")).text()
        assert "B blast" not in listing and "B draft" not in listing
        assert "Concert night" not in listing and "A blast" in listing
        watching.close()
    rows = await owner.fetch(
        "SELECT name, status, confirmed_by, cancelled_by FROM push_campaigns "
        "WHERE program_id = $1 ORDER BY name",
        uuid.UUID(PROGRAM_B),
    )
    assert [tuple(r) for r in rows] == [
        ("B blast", "PROCESSING", None, None),
        ("B draft", "DRAFT", None, None),
        ("Concert night", "PENDING", None, None),
    ]
    changes = await owner.fetchval(
        "SELECT count(*) FROM loyaltyd.program_setting_changes WHERE program_id = $1",
        uuid.UUID(PROGRAM_B),
    )
    assert changes == 0


async def test_each_admins_stream_carries_their_own_programs_events_only(
    two: TwoPrograms, owner: asyncpg.Pool
) -> None:
    async with browser(two.app) as a, browser(two.app) as b:
        await _signed_in(a, _token())
        await _signed_in(b, _token_b())
        stream_a, stream_b = await a.get("/console/events"), await b.get("/console/events")
        assert (stream_a.status, stream_b.status) == (200, 200)
        await wait_until(
            lambda: None not in (two.feed.known(two.running_a), two.feed.known(two.running_b)),
            timeout=10,
        )
        await _sent(owner, two.running_b, 1)
        await _sent(owner, two.running_a, 1)
        seen_a = await _read_until(stream_a, f"campaign-{two.running_a}".encode(), 5)
        seen_b = await _read_until(stream_b, f"campaign-{two.running_b}".encode(), 5)
        stream_a.close()
        stream_b.close()
    assert f"data: campaign-{two.running_a}".encode() in seen_a
    assert f"data: campaign-{two.running_b}".encode() in seen_b
    assert str(two.running_b).encode() not in seen_a
    assert str(two.running_a).encode() not in seen_b


async def test_the_owning_admin_reaches_every_route_of_their_programs_campaigns(
    two: TwoPrograms,
) -> None:
    async with browser(two.app) as b:
        await _signed_in(b, _token_b())
        for campaign in (uuid.UUID(HISTORY_B), two.draft_b, two.running_b):
            for method, path in _id_routes(campaign):
                if method == "GET":
                    answer = await b.get(path)
                    assert answer.status == 200, (path, answer.status, await answer.text())
        export = await b.get(f"/console/campaigns/{two.running_b}/recipients.csv")
        assert export.headers["Content-Type"].startswith("text/csv")
        detail = await (await b.get(f"/console/campaigns/{two.draft_b}")).text()
        assert "This will buzz <strong>1</strong> phones." in detail
        settings = await b.get(f"/console/programs/{PROGRAM_B}/settings")
        assert settings.status == 200
        assert (await b.get(f"/console/programs/{PROGRAM_A}/settings")).status == 404
        assert (await b.get("/console/operations")).status == 404  # not an operator


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}, None],
)
async def test_a_cross_site_or_token_less_post_is_refused_in_jwt_mode(
    two: TwoPrograms, owner: asyncpg.Pool, headers: dict[str, str] | None
) -> None:
    async with browser(two.app) as b:
        csrf = await _signed_in(b, _token_b())
        answer = await b.post(
            f"/console/campaigns/{two.running_b}/cancel",
            data={"csrf": csrf if headers else "forged"},
            headers=headers,
            allow_redirects=False,
        )
        assert answer.status == 403
    status = await owner.fetchval("SELECT status FROM push_campaigns WHERE id = $1", two.running_b)
    assert status == "PROCESSING"


async def test_the_owning_admin_estimates_confirms_follows_and_cancels_a_campaign(
    app: web.Application,
    owner: asyncpg.Pool,
    make_settings: Callable[..., Settings],
    supabase: str,  # noqa: F811
) -> None:
    """In JWT mode, end to end with the daemon's planner: B's admin composes, the daemon
    counts, the admin confirms the count, the daemon starts it, its recipients and export are
    read under the admin's own rules, a test send goes, and the admin cancels it. Then the
    admin's admin_profiles row goes, and so does everything of B's."""
    daemon = make_settings(database_url=supabase)
    async with browser(app) as b:
        csrf = await _signed_in(b, _token_b())
        created = await b.post(
            "/console/campaigns",
            data={
                "csrf": csrf,
                "program": PROGRAM_B,
                "name": "Doors at 8",
                "message": "Hi {first_name|friend}, doors open at 8",
                "segment": "ALL",
                "when": "now",
            },
            allow_redirects=False,
        )
        assert created.status == 303, await created.text()
        page = created.headers["Location"]
        campaign = uuid.UUID(page.rsplit("/", 1)[1])
        await plan(owner, daemon)  # the daemon counts the DRAFT
        detail = await (await b.get(page)).text()
        assert "This will buzz <strong>1</strong> phones." in detail
        dialog = await b.get(f"{page}/confirm")
        assert "This will buzz <strong>1</strong> phones. Are you sure?" in await dialog.text()
        stale = await b.post(f"{page}/confirm", data={"csrf": csrf, "count": "2"})
        assert stale.status == 409 and "The count changed" in await stale.text()
        confirmed = await b.post(
            f"{page}/confirm", data={"csrf": csrf, "count": "1"}, allow_redirects=False
        )
        assert (confirmed.status, confirmed.headers["Location"]) == (303, page)
        await plan(owner, daemon)  # the daemon starts it: its recipients are written
        recipients = await (await b.get(f"{page}/recipients")).text()
        assert "B-1" in recipients
        export = await (await b.get(f"{page}/recipients.csv")).text()
        assert export.splitlines()[0] == "member_id,outcome,reason,message,at"
        assert [line.split(",")[0] for line in export.splitlines()[1:]] == ["B-1"]
        tested = await b.post(
            f"{page}/test", data={"csrf": csrf, "member": "B-1"}, allow_redirects=False
        )
        assert tested.status == 303 and tested.headers["Location"].startswith(f"{page}?test=")
        cancel_page = await b.get(f"{page}/cancel")
        assert cancel_page.status == 200
        cancelled = await b.post(f"{page}/cancel", data={"csrf": csrf}, allow_redirects=False)
        assert (cancelled.status, cancelled.headers["Location"]) == (303, page)
        actions = await (await b.get(f"{page}/actions")).text()
        assert f"{page}/cancel" not in actions and "Send Push Blast" not in actions

        await owner.execute("DELETE FROM admin_profiles WHERE id = $1", uuid.UUID(ADMIN_B))
        assert (await b.get(page)).status == 404
        assert "Doors at 8" not in await (await b.get("/console/campaigns")).text()
    row = await owner.fetchrow(
        "SELECT status, created_by, confirmed_by, confirmed_at, cancelled_by, cancelled_at "
        "FROM push_campaigns WHERE id = $1",
        campaign,
    )
    assert row is not None and row["status"] == "CANCELLED"
    who = f"console: {EMAIL_B}"
    assert (row["created_by"], row["confirmed_by"], row["cancelled_by"]) == (who, who, who)
    assert row["confirmed_at"] is not None and row["cancelled_at"] is not None
    test_send = await owner.fetchrow(
        "SELECT program_id, status, member_ids, created_by FROM push_campaigns "
        "WHERE name = 'Test of Doors at 8'"
    )
    assert test_send is not None
    assert (str(test_send["program_id"]), test_send["status"], test_send["member_ids"]) == (
        PROGRAM_B,
        "PENDING",
        ["B-1"],
    )
    assert test_send["created_by"] == who
