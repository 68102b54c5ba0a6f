"""Every page of the console renders for a signed-in admin."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from daemon.core.config import Settings
from tests.campaign_support import bulk_audience
from tests.console.support import browser, console_app, console_settings, sign_in_as
from tests.factories import make_program


async def test_the_pages_render(pool: asyncpg.Pool, make_settings: Callable[..., Settings]) -> None:
    program = await make_program(pool)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, 3)
    settings = console_settings(make_settings)
    async with console_app(settings, pool) as app, browser(app) as client:
        csrf = await sign_in_as(client, pool, "ada@example.com", program, operator=True)
        for path in (
            "/console/campaigns",
            "/console/campaigns/new",
            f"/console/programs/{program}/settings",
            "/console/operations",
        ):
            page = await client.get(path)
            assert page.status == 200, (path, await page.text())
        created = await client.post(
            "/console/campaigns",
            data={
                "csrf": csrf,
                "program": str(program),
                "name": "First",
                "message": "Hi {first_name|friend}",
                "segment": "ALL",
                "when": "now",
            },
            allow_redirects=False,
        )
        assert created.status == 303, await created.text()
        detail = await client.get(created.headers["Location"])
        assert detail.status == 200, await detail.text()
        text = await detail.text()
        assert "Counting the phones" in text
