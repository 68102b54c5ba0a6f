"""The console's flows at the route level: compose with a CSV file (unknown member ids told
before anything is sent), the confirmation that must name the daemon's own count (typed above
the threshold), a test send, program settings with their change log, the recipients' export,
and operations for operators only."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiohttp import FormData, web

from daemon.console.feed import Feed
from daemon.core.config import Settings
from tests.campaign_support import bulk_audience, plan, stage_campaign, write_as_daemon
from tests.console.support import browser, console_app, console_settings, csrf_of, sign_in_as
from tests.factories import make_program


@pytest.fixture
async def app(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> AsyncIterator[web.Application]:
    settings = console_settings(make_settings, loyaltyd_console_confirm_above=2)
    async with console_app(settings, pool) as console:
        yield console


async def _program(pool: asyncpg.Pool, members: int = 3) -> uuid.UUID:
    program = await make_program(pool)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, members)
    return program


def _upload(csrf: str, program: uuid.UUID, csv: bytes) -> FormData:
    form = FormData()
    for name, value in (
        ("csrf", csrf),
        ("program", str(program)),
        ("name", "From a file"),
        ("message", "Hello {first_name}"),
        ("segment", "CSV"),
        ("when", "now"),
    ):
        form.add_field(name, value)
    form.add_field("csv", csv, filename="members.csv", content_type="text/csv")
    return form


async def test_a_csv_file_becomes_a_draft_whose_unknown_member_ids_are_told_before_sending(
    app: web.Application, pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> None:
    program = await _program(pool)
    async with browser(app) as client:
        csrf = await sign_in_as(client, pool, "a@x.example", program)
        csv = b"member_id\nM-pk-1\nM-pk-2\nNOBODY-1\nNOBODY-2\n"
        created = await client.post(
            "/console/campaigns",
            data=_upload(csrf, program, csv),
            allow_redirects=False,
        )
        assert created.status == 303, await created.text()
        await plan(pool, make_settings())  # the daemon counts the DRAFT
        page = await (await client.get(created.headers["Location"])).text()
    assert "This will buzz <strong>2</strong> phones." in page
    assert "2 member ids match no pass of this program" in page and "NOBODY-1" in page


async def test_a_csv_file_over_the_limit_is_refused(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> None:
    program = await _program(pool)
    settings = console_settings(make_settings, loyaltyd_console_csv_max_bytes=1024)
    async with console_app(settings, pool) as console, browser(console) as client:
        csrf = await sign_in_as(client, pool, "a@x.example", program)
        csv = b"member_id\n" + b"M-1234567890\n" * 200
        answer = await client.post("/console/campaigns", data=_upload(csrf, program, csv))
        assert answer.status == 400
        assert "larger than 1,024 bytes" in await answer.text()
    assert await pool.fetchval("SELECT count(*) FROM push_campaigns") == 0


async def test_a_bad_campaign_is_shown_back_with_what_to_fix(
    app: web.Application, pool: asyncpg.Pool
) -> None:
    program = await _program(pool)
    async with browser(app) as client:
        csrf = await sign_in_as(client, pool, "a@x.example", program)
        answer = await client.post(
            "/console/campaigns",
            data={
                "csrf": csrf,
                "program": str(program),
                "name": "Oops",
                "message": "Hi {nickname}",
                "segment": "LOCAL",
                "when": "now",
            },
        )
        text = await answer.text()
    assert answer.status == 400
    assert "unknown placeholder {nickname}" in text
    assert "zip" in text.lower()
    assert 'value="Oops"' in text  # what was typed stays
    assert await pool.fetchval("SELECT count(*) FROM push_campaigns") == 0


async def test_confirming_needs_the_count_the_daemon_made_and_above_the_threshold_typing_it(
    app: web.Application, pool: asyncpg.Pool
) -> None:
    program = await _program(pool, members=3)
    draft = await stage_campaign(pool, program_id=program, status="DRAFT", name="Blast")
    await write_as_daemon(
        pool,
        "UPDATE push_campaigns SET recipient_count = 3, audience_counted_at = now() WHERE id = $1",
        draft,
    )
    async with browser(app) as client:
        csrf = await sign_in_as(client, pool, "a@x.example", program)
        url = f"/console/campaigns/{draft}/confirm"
        stale = await client.post(url, data={"csrf": csrf, "count": "2", "typed": "2"})
        assert stale.status == 409 and "The count changed" in await stale.text()
        untyped = await client.post(url, data={"csrf": csrf, "count": "3"})
        assert untyped.status == 409 and "Type 3" in await untyped.text()
        page = await (await client.get(url)).text()
        assert "This will buzz <strong>3</strong> phones. Are you sure?" in page
        sent = await client.post(
            url, data={"csrf": csrf, "count": "3", "typed": "3"}, allow_redirects=False
        )
        assert sent.status == 303
    row = await pool.fetchrow(
        "SELECT status, confirmed_by, confirmed_at FROM push_campaigns WHERE id = $1", draft
    )
    assert row is not None and (row["status"], row["confirmed_by"]) == (
        "PENDING",
        "console: a@x.example",
    )
    assert row["confirmed_at"] is not None


async def test_a_test_send_goes_to_the_one_member_chosen(
    app: web.Application, pool: asyncpg.Pool
) -> None:
    program = await _program(pool)
    draft = await stage_campaign(
        pool, program_id=program, status="DRAFT", name="Blast", message_text="Hi!"
    )
    async with browser(app) as client:
        csrf = await sign_in_as(client, pool, "a@x.example", program)
        unknown = await client.post(
            f"/console/campaigns/{draft}/test", data={"csrf": csrf, "member": "M-nobody"}
        )
        assert unknown.status == 400 and "no member M-nobody" in await unknown.text()
        answer = await client.post(
            f"/console/campaigns/{draft}/test",
            data={"csrf": csrf, "member": "M-pk-2"},
            allow_redirects=False,
        )
        assert answer.status == 303
        assert answer.headers["Location"].startswith(f"/console/campaigns/{draft}?test=")
        back = await (await client.get(answer.headers["Location"])).text()
        assert "A test is on its way" in back
    row = await pool.fetchrow(
        "SELECT name, status, segment, member_ids, message_text FROM push_campaigns WHERE id <> $1",
        draft,
    )
    assert row is not None
    assert (row["name"], row["status"], row["segment"], row["member_ids"], row["message_text"]) == (
        "Test of Blast",
        "PENDING",
        "CSV",
        ["M-pk-2"],
        "Hi!",
    )


async def test_program_settings_are_saved_with_who_and_when(
    app: web.Application, pool: asyncpg.Pool
) -> None:
    program = await _program(pool)
    async with browser(app) as client:
        csrf = await sign_in_as(client, pool, "a@x.example", program)
        url = f"/console/programs/{program}/settings"
        bad = await client.post(
            url,
            data={
                "csrf": csrf,
                "birthday_reward_points": "-5",
                "birthday_message": "Hi {nick}",
                "timezone": "Mars/Base",
                "max_pushes_per_pass_per_day": "3",
            },
        )
        text = await bad.text()
        assert bad.status == 400
        assert "the reward must be between 0 and 1,000,000" in text
        assert "unknown placeholder {nick}" in text and "not a time zone" in text
        good = await client.post(
            url,
            data={
                "csrf": csrf,
                "birthday_bot_enabled": "on",
                "birthday_reward_points": "50",
                "birthday_message": "Happy birthday {first_name|friend}!",
                "timezone": "Europe/Paris",
                "max_pushes_per_pass_per_day": "2",
            },
        )
        text = await good.text()
        assert good.status == 200 and "Saved:" in text
    row = await pool.fetchrow(
        "SELECT birthday_bot_enabled, birthday_reward_points, timezone, "
        "max_pushes_per_pass_per_day FROM programs WHERE id = $1",
        program,
    )
    assert row is not None and tuple(row) == (True, 50, "Europe/Paris", 2)
    changes = await pool.fetch(
        "SELECT changed_by, setting, old_value, new_value FROM "
        "loyaltyd.program_setting_changes ORDER BY setting"
    )
    assert {c["setting"]: (c["old_value"], c["new_value"]) for c in changes}["timezone"] == (
        "UTC",
        "Europe/Paris",
    )
    assert {c["changed_by"] for c in changes} == {"console: a@x.example"}
    assert "Europe/Paris" in text  # the change log on the page
    assert "<td>birthday bot enabled</td><td>no</td><td>yes</td>" in text


async def test_saving_what_is_already_there_logs_nothing(
    app: web.Application, pool: asyncpg.Pool
) -> None:
    """An empty birthday message is no message: saving the form as loaded changes nothing."""
    program = await _program(pool)
    await pool.execute("UPDATE programs SET birthday_message = NULL")
    logged = await pool.fetchval("SELECT count(*) FROM loyaltyd.program_setting_changes")
    async with browser(app) as client:
        csrf = await sign_in_as(client, pool, "a@x.example", program)
        url = f"/console/programs/{program}/settings"
        form = {
            "csrf": csrf,
            "birthday_reward_points": "0",
            "birthday_message": "",
            "timezone": "UTC",
            "max_pushes_per_pass_per_day": "3",
        }
        current = await pool.fetchrow(
            "SELECT birthday_reward_points, max_pushes_per_pass_per_day FROM programs"
        )
        assert current is not None
        form["birthday_reward_points"] = str(current["birthday_reward_points"])
        form["max_pushes_per_pass_per_day"] = str(current["max_pushes_per_pass_per_day"])
        text = await (await client.post(url, data=form)).text()
    assert "Nothing changed." in text
    count = await pool.fetchval("SELECT count(*) FROM loyaltyd.program_setting_changes")
    assert count == logged


async def test_a_settings_change_made_elsewhere_is_logged_too(pool: asyncpg.Pool) -> None:
    """The log is written by the statement that changes the program, whoever runs it."""
    program = await _program(pool)
    await pool.execute("UPDATE programs SET timezone = 'Europe/Paris' WHERE id = $1", program)
    row = await pool.fetchrow(
        "SELECT changed_by, setting, old_value, new_value FROM loyaltyd.program_setting_changes"
    )
    assert row is not None
    assert (row["setting"], row["old_value"], row["new_value"]) == (
        "timezone",
        "UTC",
        "Europe/Paris",
    )
    assert row["changed_by"].startswith("database: ")


async def test_the_recipients_export_is_formula_safe(
    app: web.Application, pool: asyncpg.Pool
) -> None:
    program = await _program(pool)
    campaign = await stage_campaign(pool, program_id=program, status="COMPLETED", name="Done")
    pass_id = await pool.fetchval("SELECT id FROM passes_master WHERE external_id = 'M-pk-1'")
    await pool.execute(
        "UPDATE passes_master SET external_id = '=HYPERLINK(\"x\")' WHERE id = $1", pass_id
    )
    await pool.execute(
        "INSERT INTO loyaltyd.campaign_deliveries (campaign_id, pass_id, state, rendered_text, "
        "finished_at) VALUES ($1, $2, 'sent', '+1 for you', now())",
        campaign,
        pass_id,
    )
    async with browser(app) as client:
        await sign_in_as(client, pool, "a@x.example", program)
        export = await client.get(f"/console/campaigns/{campaign}/recipients.csv")
        body = await export.text()
    assert export.headers["Content-Type"].startswith("text/csv")
    lines = body.splitlines()
    assert lines[0] == "member_id,outcome,reason,message,at"
    assert lines[1].startswith('"\'=HYPERLINK(""x"")",sent,,\'+1 for you,')


async def test_operations_is_for_operators_only(app: web.Application, pool: asyncpg.Pool) -> None:
    program = await _program(pool)
    async with browser(app) as client:
        await sign_in_as(client, pool, "a@x.example", program)
        assert (await client.get("/console/operations")).status == 404
    async with browser(app) as client:
        csrf = await sign_in_as(client, pool, "ops@x.example", None, operator=True)
        page = await client.get("/console/operations")
        assert page.status == 200 and "Dead pass syncs" in await page.text()
        requeue = await client.post(
            "/console/operations/requeue", data={"csrf": csrf}, allow_redirects=False
        )
        assert requeue.status == 303


async def test_the_preview_renders_a_real_members_message(
    app: web.Application, pool: asyncpg.Pool
) -> None:
    program = await _program(pool)
    async with browser(app) as client:
        csrf = await sign_in_as(client, pool, "a@x.example", program)
        answer = await client.post(
            "/console/campaigns/preview",
            data={
                "program": str(program),
                "message": "Hi {first_name}, {points} pts at {program_name}",
                "member": "M-pk-2",
            },
            headers={"X-CSRF-Token": csrf, "HX-Request": "true"},
        )
        text = await answer.text()
    assert "Hi Member2, 42 pts at Joe&#39;s Pizza" in text


async def test_without_javascript_cancel_is_a_page_with_its_own_form(
    app: web.Application, pool: asyncpg.Pool
) -> None:
    program = await _program(pool)
    campaign = await stage_campaign(
        pool, program_id=program, status="PROCESSING", name="Blast", recipient_count=3
    )
    async with browser(app) as client:
        await sign_in_as(client, pool, "a@x.example", program)
        detail = await (await client.get(f"/console/campaigns/{campaign}")).text()
        assert f'href="/console/campaigns/{campaign}/cancel"' in detail
        page = await client.get(f"/console/campaigns/{campaign}/cancel")
        text = await page.text()
        assert page.status == 200 and "Stop sending?" in text
        cancelled = await client.post(
            f"/console/campaigns/{campaign}/cancel",
            data={"csrf": csrf_of(text)},
            allow_redirects=False,
        )
        assert cancelled.status == 303
    assert (
        await pool.fetchval("SELECT status FROM push_campaigns WHERE id = $1", campaign)
        == "CANCELLED"
    )


async def test_a_status_set_in_the_database_shows_on_the_page_and_its_live_part(
    app: web.Application, pool: asyncpg.Pool
) -> None:
    """However the campaign got there, a page read after it shows where it is: the page
    renders the row it read, and nothing unwatched is kept to go stale."""
    program = await _program(pool)
    campaign = await stage_campaign(
        pool, program_id=program, status="PROCESSING", name="Blast", recipient_count=3
    )
    async with browser(app) as client:
        await sign_in_as(client, pool, "a@x.example", program)
        for path in ("", "/live", "/progress"):
            assert (await client.get(f"/console/campaigns/{campaign}{path}")).status == 200
        await write_as_daemon(
            pool,
            "UPDATE push_campaigns SET status = 'COMPLETED', sent_count = 3, "
            "finished_at = now() WHERE id = $1",
            campaign,
        )
        detail = await (await client.get(f"/console/campaigns/{campaign}")).text()
        live = await (await client.get(f"/console/campaigns/{campaign}/live")).text()
        progress = await (await client.get(f"/console/campaigns/{campaign}/progress")).text()
    for text in (detail, live):
        assert ">Completed</span>" in text and ">Processing</span>" not in text
    assert "3 of 3" in progress


def _later(csrf: str, program: uuid.UUID, at: str) -> dict[str, str]:
    return {
        "csrf": csrf,
        "program": str(program),
        "name": "Tomorrow's",
        "message": "Hello",
        "segment": "ALL",
        "when": "later",
        "scheduled_at": at,
    }


async def test_later_without_a_time_is_refused_and_the_form_kept(
    app: web.Application, pool: asyncpg.Pool
) -> None:
    program = await _program(pool)
    async with browser(app) as client:
        csrf = await sign_in_as(client, pool, "a@x.example", program)
        answer = await client.post("/console/campaigns", data=_later(csrf, program, ""))
        text = await answer.text()
    assert answer.status == 400
    assert "choose the date and time to send it" in text
    assert 'value="Tomorrow&#39;s"' in text
    assert await pool.fetchval("SELECT count(*) FROM push_campaigns") == 0


async def test_a_time_the_clocks_skip_is_refused(app: web.Application, pool: asyncpg.Pool) -> None:
    program = await _program(pool)
    await pool.execute("UPDATE programs SET timezone = 'Europe/Paris' WHERE id = $1", program)
    async with browser(app) as client:
        csrf = await sign_in_as(client, pool, "a@x.example", program)
        answer = await client.post(
            "/console/campaigns", data=_later(csrf, program, "2031-03-30T02:30")
        )
        text = await answer.text()
    assert answer.status == 400
    assert "2031-03-30 02:30 does not exist in Europe/Paris" in text
    assert await pool.fetchval("SELECT count(*) FROM push_campaigns") == 0


async def test_the_schedule_and_its_time_zone_are_shown_before_sending(
    app: web.Application, pool: asyncpg.Pool
) -> None:
    program = await _program(pool)
    await pool.execute("UPDATE programs SET timezone = 'Europe/Paris' WHERE id = $1", program)
    async with browser(app) as client:
        csrf = await sign_in_as(client, pool, "a@x.example", program)
        form = await (await client.get("/console/campaigns/new")).text()
        assert "in the program's time zone (<span data-zone-name>Europe/Paris</span>)" in form
        created = await client.post(
            "/console/campaigns",
            data=_later(csrf, program, "2031-06-01T09:00"),
            allow_redirects=False,
        )
        assert created.status == 303, await created.text()
        campaign = created.headers["Location"].rsplit("/", 1)[1]
        await write_as_daemon(
            pool,
            "UPDATE push_campaigns SET recipient_count = 3, audience_counted_at = now() "
            "WHERE id = $1",
            uuid.UUID(campaign),
        )
        detail = await (await client.get(created.headers["Location"])).text()
        confirm = await (await client.get(f"{created.headers['Location']}/confirm")).text()
    at = await pool.fetchval("SELECT scheduled_at FROM push_campaigns")
    assert at.isoformat() == "2031-06-01T07:00:00+00:00"
    for text in (detail, confirm):
        assert "It goes out at <strong>2031-06-01 09:00 CEST</strong> (Europe/Paris time)." in text


async def test_the_live_part_tells_unknown_ids_who_got_what_and_when_it_finished(
    app: web.Application, pool: asyncpg.Pool
) -> None:
    program = await _program(pool)
    campaign = await stage_campaign(pool, program_id=program, status="DRAFT", name="Blast")
    live = f"/console/campaigns/{campaign}/live"
    async with browser(app) as client:
        await sign_in_as(client, pool, "a@x.example", program)
        before = await (await client.get(live)).text()
        await write_as_daemon(
            pool,
            "UPDATE push_campaigns SET recipient_count = 2, audience_counted_at = now(), "
            "unknown_member_count = 2, unknown_member_ids = '{NOBODY-1,NOBODY-2}' WHERE id = $1",
            campaign,
        )
        counted = await (await client.get(live)).text()
        await write_as_daemon(
            pool,
            "UPDATE push_campaigns SET status = 'COMPLETED', started_at = now(), "
            "finished_at = '2031-01-01 12:00+00', sent_count = 2 WHERE id = $1",
            campaign,
        )
        done = await (await client.get(live)).text()
    assert "match no pass" not in before and "Who got what" not in before
    assert "2 member ids match no pass of this program, for example NOBODY-1, NOBODY-2" in counted
    assert "Finished 2031-01-01 12:00 UTC" in done
    assert f'href="/console/campaigns/{campaign}/recipients"' in done


async def test_the_feed_brings_what_the_live_part_shows(pool: asyncpg.Pool) -> None:
    program = await _program(pool)
    campaign = await stage_campaign(pool, program_id=program, status="DRAFT", name="Blast")
    await write_as_daemon(
        pool,
        "UPDATE push_campaigns SET unknown_member_count = 7, "
        "unknown_member_ids = '{A,B,C,D,E,F,G}' WHERE id = $1",
        campaign,
    )
    feed = Feed(pool)
    feed.subscribe([program])
    await feed._read_once()
    change = feed.known(campaign)
    assert change is not None
    assert (change.unknown, change.unknown_sample, change.timezone) == (
        7,
        ["A", "B", "C", "D", "E"],
        "UTC",
    )


async def test_operations_charts_say_messages_per_second_truthfully(
    app: web.Application, pool: asyncpg.Pool
) -> None:
    """One message a second for a minute is 1 per second, not 60."""
    program = await _program(pool, members=60)
    campaign = await stage_campaign(pool, program_id=program, status="COMPLETED", name="Done")
    await pool.execute(
        "INSERT INTO loyaltyd.campaign_deliveries (campaign_id, pass_id, state, finished_at) "
        "SELECT $1, p.id, 'sent', date_trunc('minute', now()) - interval '2 minutes' "
        "       + (row_number() OVER (ORDER BY p.id)) * interval '1 second' "
        "  FROM passes_master p WHERE p.program_id = $2",
        campaign,
        program,
    )
    async with browser(app) as client:
        await sign_in_as(client, pool, "ops@x.example", None, operator=True)
        page = await (await client.get("/console/operations")).text()
    peaks = [
        float(p)
        for p in re.findall(
            r"Campaign messages sent per second, last hour: "
            r"[^\"]*, peak ([\d.]+) per second",
            page,
        )
    ]
    assert peaks and all(0.5 <= p <= 1 for p in peaks)  # its minute may straddle two bars


@pytest.mark.parametrize("multipart", [True, False], ids=["multipart", "urlencoded"])
async def test_a_long_typed_member_list_fits_under_the_daemons_body_limit(
    app: web.Application, pool: asyncpg.Pool, multipart: bool
) -> None:
    """The daemon's own routes take 64 KiB bodies; the console's compose form takes what a CSV
    may be."""
    program = await _program(pool)
    members = " ".join(f"M-{n:07d}" for n in range(12_000))  # about 120 KiB
    async with browser(app) as client:
        csrf = await sign_in_as(client, pool, "a@x.example", program)
        fields = {
            "csrf": csrf,
            "program": str(program),
            "name": "Many",
            "message": "Hello",
            "segment": "CSV",
            "when": "now",
            "member_ids": members,
        }
        data: Any = FormData(fields) if not multipart else _multipart(fields)
        answer = await client.post("/console/campaigns", data=data, allow_redirects=False)
        assert answer.status == 303, (answer.status, await answer.text())
    ids = await pool.fetchval("SELECT member_ids FROM push_campaigns")
    assert len(ids) == 12_000


def _multipart(fields: dict[str, str]) -> FormData:
    form = FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("csv", b"", filename="", content_type="application/octet-stream")
    return form


async def test_a_multipart_form_must_open_with_its_csrf_token(
    app: web.Application, pool: asyncpg.Pool
) -> None:
    """The token is checked before an uploaded file is read: a token in the address, or one
    after the file, is refused."""
    program = await _program(pool)
    async with browser(app) as client:
        csrf = await sign_in_as(client, pool, "a@x.example", program)
        file_first = FormData()
        file_first.add_field("csv", b"member_id\nM-pk-1\n", filename="m.csv")
        file_first.add_field("csrf", csrf)
        file_first.add_field("program", str(program))
        in_address = _multipart({"program": str(program), "message": "Hi", "segment": "ALL"})
        for url, form in (
            ("/console/campaigns", file_first),
            (f"/console/campaigns?csrf={csrf}", in_address),
        ):
            answer = await client.post(url, data=form, allow_redirects=False)
            assert answer.status == 403, url
    assert await pool.fetchval("SELECT count(*) FROM push_campaigns") == 0


async def test_the_schedule_is_checked_against_the_consoles_clock(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> None:
    program = await _program(pool)
    settings = console_settings(make_settings)
    later = datetime(2040, 1, 1, tzinfo=UTC)
    async with console_app(settings, pool, clock=lambda: later) as app, browser(app) as client:
        csrf = await sign_in_as(client, pool, "a@x.example", program)
        answer = await client.post(
            "/console/campaigns", data=_later(csrf, program, "2035-06-01T09:00")
        )
        assert answer.status == 400
        assert "the scheduled time has passed" in await answer.text()


async def test_the_live_part_says_when_recipients_wait_on_retries(
    app: web.Application, pool: asyncpg.Pool
) -> None:
    """ "4 waiting to retry after PassKit 503, next try at …": read by the feed in its one read,
    shown on the campaign's live part."""
    program = await _program(pool, members=6)
    campaign = await stage_campaign(
        pool, program_id=program, status="PROCESSING", name="Blast", recipient_count=6
    )
    passes = [r["id"] for r in await pool.fetch("SELECT id FROM passes_master")]
    await pool.executemany(
        "INSERT INTO loyaltyd.campaign_deliveries (campaign_id, pass_id, state, error, "
        "available_at) VALUES ($1, $2, 'pending', $3, now() + interval '3 seconds')",
        [(campaign, p, "PassKit write_message answered 503: busy") for p in passes[:4]],
    )
    feed = Feed(pool)
    feed.subscribe([program])
    await feed._read_once()
    change = feed.known(campaign)
    assert change is not None and change.retry_waiting == 4
    assert change.retry_cause == "PassKit 503" and change.retry_next_at is not None
    live = f"/console/campaigns/{campaign}/live"
    async with browser(app) as client:
        await sign_in_as(client, pool, "a@x.example", program)
        text = await (await client.get(live)).text()
    assert re.search(r"4 waiting to retry after PassKit 503, next try at \d\d:\d\d:\d\d", text)
