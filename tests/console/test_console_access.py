"""Who may see and do what in the console, at the route level: the whole access matrix (no
session, another program's ids, a viewer, a cross-site or token-less POST, an expired or
revoked session), the headers every answer carries, text shown escaped, sign-in limits, and
invitations used once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from structlog.testing import capture_logs
from yarl import URL

from daemon.console.web import CSP
from daemon.core.config import Settings
from daemon.store import console as store
from daemon.store.queries import queries
from tests.campaign_support import bulk_audience, stage_campaign
from tests.console.support import (
    PASSWORD,
    Client,
    accept,
    browser,
    console_app,
    console_settings,
    csrf_of,
    invite,
    sign_in_as,
)
from tests.factories import make_program


@dataclass
class World:
    app: web.Application
    pizza: uuid.UUID
    events: uuid.UUID
    pizza_campaign: uuid.UUID
    events_campaign: uuid.UUID
    events_draft: uuid.UUID


@pytest.fixture
async def world(pool: asyncpg.Pool, make_settings: Callable[..., Settings]) -> AsyncIterator[World]:
    pizza = await make_program(pool, name="Joe's Pizza")
    events = await make_program(pool, name="City Events")
    async with pool.acquire() as conn:
        await bulk_audience(conn, pizza, 3, prefix="pk-p")
        await bulk_audience(conn, events, 3, prefix="pk-e")
    pizza_campaign = await stage_campaign(
        pool,
        program_id=pizza,
        name="<script>alert('pizza')</script>",
        status="COMPLETED",
        message_text="<img src=x onerror=alert(1)>",
        recipient_count=3,
        sent_count=3,
    )
    events_campaign = await stage_campaign(
        pool, program_id=events, name="Events blast", status="PROCESSING", recipient_count=3
    )
    events_draft = await stage_campaign(
        pool, program_id=events, name="Events draft", status="DRAFT"
    )
    async with console_app(console_settings(make_settings), pool) as app:
        yield World(app, pizza, events, pizza_campaign, events_campaign, events_draft)


def _id_routes(campaign: uuid.UUID) -> list[tuple[str, str]]:
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


async def _call(client: Client, method: str, path: str, csrf: str | None, **extra: Any) -> Any:
    data = {"csrf": csrf, "count": "3", "member": "M-pk-e-1"} if method == "POST" else None
    return await client.request(method, path, data=data, allow_redirects=False, **extra)


async def test_without_a_session_pages_lead_to_sign_in_and_the_rest_is_refused(
    world: World,
) -> None:
    async with browser(world.app) as client:
        for path in ("/console/campaigns", "/console/campaigns/new", "/console/operations"):
            page = await client.get(path, allow_redirects=False)
            assert page.status == 303
            location = URL(page.headers["Location"])
            assert (location.path, location.query["next"]) == ("/console/signin", path)
        for method, path in _id_routes(world.pizza_campaign):
            answer = await _call(client, method, path, None, headers={"HX-Request": "true"})
            assert answer.status in (401, 303), (method, path, answer.status)
        stream = await client.get("/console/events", allow_redirects=False)
        assert stream.status == 303


async def test_an_admin_of_one_program_gets_404_for_everything_of_another(
    world: World, pool: asyncpg.Pool
) -> None:
    async with browser(world.app) as client:
        csrf = await sign_in_as(client, pool, "a@pizza.example", world.pizza)
        for campaign in (world.events_campaign, world.events_draft, uuid.uuid4()):
            for method, path in _id_routes(campaign):
                answer = await _call(client, method, path, csrf)
                assert answer.status == 404, (method, path, answer.status)
        for method in ("GET", "POST"):
            answer = await client.request(
                method,
                f"/console/programs/{world.events}/settings",
                data={"csrf": csrf},
                allow_redirects=False,
            )
            assert answer.status == 404
        listing = await (await client.get("/console/campaigns")).text()
        assert "Events blast" not in listing and "Events draft" not in listing
    row = await pool.fetchrow(
        "SELECT status, cancelled_by FROM push_campaigns WHERE id = $1", world.events_campaign
    )
    assert row is not None and (row["status"], row["cancelled_by"]) == ("PROCESSING", None)


async def test_a_viewer_reads_but_may_not_send_cancel_or_compose(
    world: World, pool: asyncpg.Pool
) -> None:
    async with browser(world.app) as client:
        csrf = await sign_in_as(client, pool, "v@events.example", world.events, "viewer")
        detail = await client.get(f"/console/campaigns/{world.events_campaign}")
        assert detail.status == 200
        assert "Cancel" not in await detail.text()
        for path in ("confirm", "cancel", "test"):
            answer = await _call(
                client, "POST", f"/console/campaigns/{world.events_draft}/{path}", csrf
            )
            assert answer.status == 403, path
        assert (await client.get("/console/campaigns/new")).status == 403
        assert (await client.get(f"/console/programs/{world.events}/settings")).status == 404
    assert (
        await pool.fetchval("SELECT status FROM push_campaigns WHERE id = $1", world.events_draft)
        == "DRAFT"
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
    ],
)
async def test_a_cross_site_post_is_refused(
    world: World, pool: asyncpg.Pool, headers: dict[str, str]
) -> None:
    async with browser(world.app) as client:
        csrf = await sign_in_as(client, pool, "a@events.example", world.events)
        answer = await client.post(
            f"/console/campaigns/{world.events_campaign}/cancel",
            data={"csrf": csrf},
            headers=headers,
            allow_redirects=False,
        )
        assert answer.status == 403
    assert (
        await pool.fetchval(
            "SELECT status FROM push_campaigns WHERE id = $1", world.events_campaign
        )
        == "PROCESSING"
    )


async def test_a_post_without_the_sessions_token_is_refused(
    world: World, pool: asyncpg.Pool
) -> None:
    async with browser(world.app) as client:
        await sign_in_as(client, pool, "a@events.example", world.events)
        for data in ({}, {"csrf": "forged"}):
            answer = await client.post(
                f"/console/campaigns/{world.events_campaign}/cancel",
                data=data,
                allow_redirects=False,
            )
            assert answer.status == 403


async def test_expired_and_revoked_sessions_sign_out(world: World, pool: asyncpg.Pool) -> None:
    async with browser(world.app) as client:
        await sign_in_as(client, pool, "a@events.example", world.events)
        await pool.execute(
            "UPDATE loyaltyd.console_sessions SET expires_at = now() - interval '1 s'"
        )
        page = await client.get("/console/campaigns", allow_redirects=False)
        assert page.status == 303
    async with browser(world.app) as client:
        await sign_in_as(client, pool, "b@events.example", world.events)
        assert await store.revoke(pool, "b@events.example", remove_access=False) == store.Revoked(
            people=1, sessions=1, invitations=0, memberships=0
        )
        page = await client.get("/console/campaigns", allow_redirects=False)
        assert page.status == 303


async def test_every_answer_carries_the_security_headers(world: World, pool: asyncpg.Pool) -> None:
    async with browser(world.app) as client:
        signin = await client.get("/console/signin")
        await sign_in_as(client, pool, "a@pizza.example", world.pizza)
        page = await client.get("/console/campaigns")
        missing = await client.get(f"/console/campaigns/{uuid.uuid4()}")
        static = await client.get("/console/static/console.css")
        export = await client.get(f"/console/campaigns/{world.pizza_campaign}/recipients.csv")
        stream = await client.get("/console/events")
        stream.close()
    for answer in (signin, page, missing, export, stream):
        assert answer.headers["X-Frame-Options"] == "DENY"
        csp = answer.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Cache-Control"] == "no-store"
    assert static.headers["X-Content-Type-Options"] == "nosniff"
    cookie = page.request_info.headers.get("Cookie", "")
    assert "loyaltyd_session=" in cookie


async def test_a_session_cookie_is_httponly_and_strict(world: World, pool: asyncpg.Pool) -> None:
    async with browser(world.app) as client:
        token = await invite(pool, "a@pizza.example", world.pizza)
        answer = await accept(client, token)
    set_cookie = answer.headers.getall("Set-Cookie")
    session = next(c for c in set_cookie if c.startswith("loyaltyd_session="))
    assert "HttpOnly" in session and "SameSite=Strict" in session and "Path=/console" in session
    assert "Secure" not in session  # plain http in the test; https (or a trusted proxy) sets it


async def test_text_an_admin_typed_is_always_shown_escaped(
    world: World, pool: asyncpg.Pool
) -> None:
    async with browser(world.app) as client:
        await sign_in_as(client, pool, "a@pizza.example", world.pizza)
        listing = await (await client.get("/console/campaigns")).text()
        detail = await (await client.get(f"/console/campaigns/{world.pizza_campaign}")).text()
    assert "<script>alert" not in listing and "&lt;script&gt;alert(&#39;pizza&#39;)" in listing
    assert "<img src=x" not in detail and "&lt;img src=x onerror=alert(1)&gt;" in detail


async def test_sign_in_is_limited_per_account(world: World, pool: asyncpg.Pool) -> None:
    token = await invite(pool, "a@pizza.example", world.pizza)
    async with browser(world.app) as client:
        await accept(client, token)
    async with browser(world.app) as client:
        for _ in range(5):
            form = await client.get("/console/signin")
            wrong = await client.post(
                "/console/signin",
                data={
                    "csrf": csrf_of(await form.text()),
                    "email": "a@pizza.example",
                    "password": "nope-nope-nope",
                },
                allow_redirects=False,
            )
            assert wrong.status == 401
        form = await client.get("/console/signin")
        right = await client.post(
            "/console/signin",
            data={
                "csrf": csrf_of(await form.text()),
                "email": "A@Pizza.example",
                "password": PASSWORD,
            },
            allow_redirects=False,
        )
        assert right.status == 429
        assert "Too many sign-in attempts" in await right.text()


async def test_sign_in_is_limited_per_address(world: World, pool: asyncpg.Pool) -> None:
    async with browser(world.app) as client:
        for n in range(20):
            form = await client.get("/console/signin")
            await client.post(
                "/console/signin",
                data={
                    "csrf": csrf_of(await form.text()),
                    "email": f"guess{n}@x.example",
                    "password": "x" * 12,
                },
            )
        form = await client.get("/console/signin")
        answer = await client.post(
            "/console/signin",
            data={
                "csrf": csrf_of(await form.text()),
                "email": "new@x.example",
                "password": "x" * 12,
            },
        )
        assert answer.status == 429


async def test_an_invitation_works_once_and_not_after_a_day(
    world: World, pool: asyncpg.Pool
) -> None:
    token = await invite(pool, "a@pizza.example", world.pizza)
    async with browser(world.app) as client:
        assert (await accept(client, token)).status == 303
    async with browser(world.app) as client:
        again = await client.get(f"/console/invite/{token}")
        assert again.status == 404 and "no longer works" in await again.text()
    late = await invite(pool, "b@pizza.example", world.pizza)
    await pool.execute("UPDATE loyaltyd.console_invites SET expires_at = now() - interval '1 s'")
    async with browser(world.app) as client:
        assert (await client.get(f"/console/invite/{late}")).status == 404


async def test_a_short_or_mistyped_password_is_refused_and_the_link_still_works(
    world: World, pool: asyncpg.Pool
) -> None:
    token = await invite(pool, "a@pizza.example", world.pizza)
    async with browser(world.app) as client:
        page = await client.get(f"/console/invite/{token}")
        short = await client.post(
            f"/console/invite/{token}",
            data={"csrf": csrf_of(await page.text()), "password": "short", "confirm": "short"},
            allow_redirects=False,
        )
        assert short.status == 400 and "at least 10 characters" in await short.text()
        assert (await accept(client, token)).status == 303


def test_no_console_statement_writes_as_the_daemon() -> None:
    """The console's writes are a form's: push_campaigns' rules apply to them (sql/058)."""
    console = {name: body for name, body in queries().items() if name.startswith("console_")}
    assert console and not [n for n, body in console.items() if "writing_as_daemon" in body]


async def test_an_unexpected_error_is_a_page_with_the_same_headers(
    database_url: str, pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    own = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert own is not None
    async with console_app(console_settings(make_settings), own) as app, browser(app) as client:
        await sign_in_as(client, own, "a@x.example", program)
        await own.close()  # the database is gone: every request fails inside
        with capture_logs() as logs:
            page = await client.get("/console/campaigns")
            text = await page.text()
    assert page.status == 500 and page.headers["Content-Type"].startswith("text/html")
    assert "Something went wrong" in text
    assert page.headers["Content-Security-Policy"] == CSP
    assert page.headers["Cache-Control"] == "no-store"
    assert [e["route"] for e in logs if e["event"] == "console_request_failed"] == [
        "/console/campaigns"
    ]


async def test_a_refused_invitation_post_logs_its_route_not_its_token(
    world: World, pool: asyncpg.Pool
) -> None:
    token = await invite(pool, "a@pizza.example", world.pizza)
    async with browser(world.app) as client:
        page = await client.get(f"/console/invite/{token}")
        with capture_logs() as logs:
            answer = await client.post(
                f"/console/invite/{token}",
                data={"csrf": csrf_of(await page.text()), "password": "x", "confirm": "x"},
                headers={"Sec-Fetch-Site": "cross-site"},
            )
    assert answer.status == 403
    refused = [e for e in logs if e["event"] == "console_cross_site_refused"]
    assert refused and refused[0]["route"] == "/console/invite/{token}"
    assert token not in repr(logs)


async def test_an_error_page_can_sign_out(world: World, pool: asyncpg.Pool) -> None:
    async with browser(world.app) as client:
        await sign_in_as(client, pool, "a@pizza.example", world.pizza)
        missing = await client.get(f"/console/campaigns/{uuid.uuid4()}")
        assert missing.status == 404
        out = await client.post(
            "/console/signout",
            data={"csrf": csrf_of(await missing.text())},
            allow_redirects=False,
        )
        assert out.status == 303
        page = await client.get("/console/campaigns", allow_redirects=False)
        assert page.status == 303


async def test_an_insert_cannot_say_who_confirmed_or_cancelled(pool: asyncpg.Pool) -> None:
    program = await make_program(pool)
    row = await pool.fetchrow(
        "INSERT INTO push_campaigns (program_id, message_text, status, created_by, "
        "confirmed_by, confirmed_at, cancelled_by, cancelled_at) VALUES ($1, 'Hi', 'DRAFT', "
        "'console: a@x.example', 'forged', now(), 'forged', now()) "
        "RETURNING created_by, confirmed_by, confirmed_at, cancelled_by, cancelled_at",
        program,
    )
    assert row is not None
    assert tuple(row) == ("console: a@x.example", None, None, None, None)


async def test_old_sessions_and_invitations_are_purged_as_people_sign_in(
    world: World, pool: asyncpg.Pool
) -> None:
    async with browser(world.app) as client:
        await sign_in_as(client, pool, "a@pizza.example", world.pizza)
    await invite(pool, "b@pizza.example", world.pizza)
    await pool.execute(
        "UPDATE loyaltyd.console_sessions SET expires_at = now() - interval '2 days'"
    )
    await pool.execute("UPDATE loyaltyd.console_invites SET expires_at = now() - interval '2 days'")
    async with browser(world.app) as client:
        await sign_in_as(client, pool, "c@pizza.example", world.pizza)
    assert await pool.fetchval("SELECT count(*) FROM loyaltyd.console_sessions") == 1
    assert await pool.fetchval("SELECT count(*) FROM loyaltyd.console_invites") == 1  # c's


async def test_behind_a_trusted_tls_proxy_an_https_origin_is_the_consoles_own(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> None:
    """A browser without Sec-Fetch-Site says only Origin: https, as the person sees it."""
    program = await make_program(pool)
    campaign = await stage_campaign(pool, program_id=program, status="PENDING", name="Soon")
    settings = console_settings(make_settings, loyaltyd_console_trust_proxy=True)
    async with console_app(settings, pool) as app, browser(app) as client:
        csrf = await sign_in_as(client, pool, "a@x.example", program)
        origin = str(client.make_url("")).replace("http://", "https://").rstrip("/")
        answer = await client.post(
            f"/console/campaigns/{campaign}/cancel",
            data={"csrf": csrf},
            headers={"Origin": origin, "X-Forwarded-Proto": "https"},
            allow_redirects=False,
        )
        assert answer.status == 303
    assert await pool.fetchval("SELECT status FROM push_campaigns") == "CANCELLED"


async def test_after_signing_in_a_person_is_back_where_they_were(
    world: World, pool: asyncpg.Pool
) -> None:
    token = await invite(pool, "a@pizza.example", world.pizza)
    async with browser(world.app) as client:
        assert (await accept(client, token)).status == 303
        await client.post(
            "/console/signout",
            data={"csrf": csrf_of(await (await client.get("/console/campaigns")).text())},
        )
        wanted = f"/console/campaigns/{world.pizza_campaign}/recipients?outcome=sent"
        page = await client.get(wanted)  # to sign-in, which remembers the page
        assert page.url.path == "/console/signin"
        answer = await client.post(
            str(page.url.relative()),
            data={
                "csrf": csrf_of(await page.text()),
                "next": page.url.query["next"],
                "email": "a@pizza.example",
                "password": PASSWORD,
            },
            allow_redirects=False,
        )
        assert (answer.status, answer.headers["Location"]) == (303, wanted)


@pytest.mark.parametrize(
    "offered", ["https://evil.example/", "//evil.example/console/", "/console/signin", "/other"]
)
async def test_sign_in_never_sends_a_person_elsewhere(
    world: World, pool: asyncpg.Pool, offered: str
) -> None:
    token = await invite(pool, "a@pizza.example", world.pizza)
    async with browser(world.app) as client:
        assert (await accept(client, token)).status == 303
    async with browser(world.app) as client:
        form = await client.get("/console/signin")
        answer = await client.post(
            "/console/signin",
            data={
                "csrf": csrf_of(await form.text()),
                "next": offered,
                "email": "a@pizza.example",
                "password": PASSWORD,
            },
            allow_redirects=False,
        )
        assert (answer.status, answer.headers["Location"]) == (303, "/console/campaigns")


async def test_a_fragment_without_a_session_takes_its_page_to_sign_in(world: World) -> None:
    async with browser(world.app) as client:
        page = f"/console/campaigns/{world.pizza_campaign}"
        answer = await client.get(
            f"{page}/live",
            headers={"HX-Request": "true", "HX-Current-URL": f"http://127.0.0.1{page}"},
        )
    assert answer.status == 401
    location = URL(answer.headers["HX-Redirect"])
    assert (location.path, location.query["next"]) == ("/console/signin", page)
