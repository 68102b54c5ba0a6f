"""The Notification Manager: the campaigns' history, composing a campaign (estimate, then
"This will buzz N phones. Are you sure?"), following one as it goes out, stopping it, and who
got what.

Every id in a path is looked up within the viewer's programs: another program's campaign is
a 404, the same answer as one that does not exist.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from aiohttp import BodyPartReader, web

from daemon.campaigns.csv_audience import parse_member_csv
from daemon.campaigns.rules import SEGMENTS, validate_campaign
from daemon.console import charts
from daemon.console.context import ConsoleContext, Form, not_found, uuid_of, uuid_or_none, who
from daemon.console.web import FORM_READER_KEY, PREFIX, viewer_of
from daemon.core.csvtext import safe_cell
from daemon.core.errors import CampaignInputError
from daemon.core.logs import get_logger
from daemon.core.templating import KNOWN_PLACEHOLDERS, TemplateError, parse_template
from daemon.store import console as store
from daemon.store.status import campaign_retry_waits

log = get_logger(__name__)

STATUSES: Final = ("DRAFT", "PENDING", "PROCESSING", "COMPLETED", "CANCELLED", "FAILED")
OUTCOMES: Final = ("pending", "claimed", "sent", "failed", "skipped")
PAGE: Final = 100
EXPORT_PAGE: Final = 5_000
SEGMENT_LABELS: Final = {
    "ALL": "All active members",
    "VIP": "VIP (tier points above…)",
    "WHALE": "Whales (points above…)",
    "SLUMBER": "Slumbering (no visit for … days)",
    "LOCAL": "Local (zip codes)",
    "CSV": "Member ids (a list or a CSV file)",
}


class Campaigns:
    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/campaigns", self.history)
        r.add_get("/campaigns/rows", self.rows)
        r.add_get("/campaigns/new", self.new)
        r.add_post("/campaigns/preview", self.preview)
        r.add_post("/campaigns", self.create)
        r.add_get("/campaigns/{id}", self.detail)
        r.add_get("/campaigns/{id}/live", self.live)
        r.add_get("/campaigns/{id}/progress", self.progress)
        r.add_get("/campaigns/{id}/actions", self.actions)
        r.add_get("/campaigns/{id}/confirm", self.confirm_page)
        r.add_post("/campaigns/{id}/confirm", self.confirm)
        r.add_get("/campaigns/{id}/cancel", self.cancel_page)
        r.add_post("/campaigns/{id}/cancel", self.cancel)
        r.add_post("/campaigns/{id}/test", self.test_send)
        r.add_get("/campaigns/{id}/recipients", self.recipients)
        r.add_get("/campaigns/{id}/recipients.csv", self.export)

    # --- history --------------------------------------------------------------------------------

    async def history(self, request: web.Request) -> web.Response:
        viewer = viewer_of(request)
        status = _status_filter(request)
        rows = await store.campaigns(self.ctx.scope(viewer), viewer.program_ids, status)
        programs = await store.programs(self.ctx.scope(viewer), viewer.program_ids)
        return self.ctx.render(
            request,
            "campaigns.html",
            rows=rows,
            bars=_bars(rows),
            status_filter=status or "",
            statuses=STATUSES,
            programs=programs,
        )

    async def rows(self, request: web.Request) -> web.Response:
        viewer = viewer_of(request)
        status = _status_filter(request)
        rows = await store.campaigns(self.ctx.scope(viewer), viewer.program_ids, status)
        return self.ctx.render(request, "_campaign_rows.html", rows=rows, bars=_bars(rows))

    async def progress(self, request: web.Request) -> web.Response:
        """One row's progress cell, from the feed's memory (no read per viewer)."""
        change = await self._progress(request)
        return self.ctx.render(request, "_progress.html", bar=_bar_of(change), change=change)

    async def _progress(self, request: web.Request) -> store.Change:
        viewer = viewer_of(request)
        campaign_id = uuid_of(request.match_info["id"], "campaign")
        change = self.ctx.feed.known(campaign_id)
        if change is None:
            row = await store.campaign(self.ctx.scope(viewer), campaign_id, viewer.program_ids)
            if row is None:
                raise not_found("campaign")
            change = await self._with_retries(_change_of(row, self.ctx.clock()))
            self.ctx.feed.remember(change)
        if change.program_id not in viewer.roles:
            raise not_found("campaign")
        return change

    async def _with_retries(self, change: store.Change) -> store.Change:
        """A running campaign's recipients waiting to retry, as the feed reads them."""
        if change.status != "PROCESSING":
            return change
        waits = await campaign_retry_waits(self.ctx.pool, [change.id])
        wait = waits.get(change.id)
        if wait is None:
            return change
        return dataclasses.replace(
            change,
            retry_waiting=wait.waiting,
            retry_held=wait.held,
            retry_next_at=self.ctx.clock() + timedelta(seconds=wait.next_in),
            retry_error=wait.latest_error,
        )

    # --- composing ------------------------------------------------------------------------------

    async def new(self, request: web.Request) -> web.Response:
        viewer = viewer_of(request)
        programs = await store.programs(self.ctx.scope(viewer), viewer.admin_programs)
        if not programs:
            raise web.HTTPForbidden(text="you may not send campaigns in any program")
        chosen = request.query.get("program") or str(programs[0].id)
        return self._compose(request, programs, Form({"program": chosen, "segment": "ALL"}))

    def _compose(
        self,
        request: web.Request,
        programs: list[store.Program],
        form: Form,
        *,
        errors: list[str] | None = None,
        status: int = 200,
    ) -> web.Response:
        return self.ctx.render(
            request,
            "new_campaign.html",
            status=status,
            programs=programs,
            form=form,
            errors=errors or [],
            segments=SEGMENT_LABELS,
            placeholders=sorted(KNOWN_PLACEHOLDERS),
            max_csv=self.ctx.settings.loyaltyd_console_csv_max_bytes,
            zone_name=_zone_of(programs, form.get("program")),
        )

    async def preview(self, request: web.Request) -> web.Response:
        """The message as a real member of the program would get it (fallbacks shown)."""
        viewer = viewer_of(request)
        form = await request.post()
        text = str(form.get("message") or form.get("birthday_message") or "")
        program = uuid_or_none(str(form.get("program") or ""))
        context: dict[str, Any] = {"text": text, "chars": len(text.strip())}
        try:
            template = parse_template(text.strip())
        except TemplateError as exc:
            return self.ctx.render(request, "_preview.html", error=str(exc), **context)
        member = None
        if program is not None and program in viewer.roles:
            member_id = str(form.get("member") or "").strip() or None
            member = await store.sample_member(
                self.ctx.scope(viewer), program, viewer.program_ids, member_id
            )
        values: Mapping[str, object | None] = dataclasses.asdict(member) if member else {}
        rendered = template.render(values)
        missing = sorted(p for p in template.placeholders if values.get(p) in (None, ""))
        return self.ctx.render(
            request, "_preview.html", rendered=rendered, member=member, missing=missing, **context
        )

    async def create(self, request: web.Request) -> web.Response:
        """Estimate: the campaign is saved as a DRAFT, whose audience the daemon counts."""
        viewer = viewer_of(request)
        programs = await store.programs(self.ctx.scope(viewer), viewer.admin_programs)
        try:
            form, upload = await self._read_form(request)
        except CampaignInputError as exc:
            return self._compose(request, programs, Form({}), errors=[str(exc)], status=400)
        try:
            draft = self._draft(form, upload, viewer.admin_programs, programs)
        except CampaignInputError as exc:
            return self._compose(request, programs, form, errors=str(exc).split("; "), status=400)
        campaign_id = await store.insert_draft(
            self.ctx.scope(viewer), draft, who(viewer), viewer.admin_programs
        )
        if campaign_id is None:
            raise not_found("program")
        log.info("console_campaign_drafted", campaign_id=str(campaign_id), user=viewer.name)
        raise web.HTTPSeeOther(f"{PREFIX}/campaigns/{campaign_id}")

    async def _read_form(self, request: web.Request) -> tuple[Form, list[str] | None]:
        """The form's fields, and a CSV file's member ids when one was uploaded (read as it
        streams in, up to LOYALTYD_CONSOLE_CSV_MAX_BYTES)."""
        if request.content_type != "multipart/form-data":
            posted = await request.post()
            return Form.posted(posted), None
        values: dict[str, str] = {}
        upload: list[str] | None = None
        reader = request.get(FORM_READER_KEY) or await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            if part.filename is not None:
                upload = await self._csv_ids(part) if part.filename else upload
            else:
                values[part.name] = (await part.read(decode=True)).decode("utf-8", "replace")
        return Form(values), upload

    async def _csv_ids(self, part: BodyPartReader) -> list[str] | None:
        limit = self.ctx.settings.loyaltyd_console_csv_max_bytes
        data = bytearray()
        while chunk := await part.read_chunk(65_536):
            data += chunk
            if len(data) > limit:
                raise CampaignInputError(f"the CSV file is larger than {limit:,} bytes")
        if not data:
            return None
        return list(parse_member_csv(bytes(data)))

    def _draft(
        self,
        form: Form,
        upload: list[str] | None,
        allowed: list[uuid.UUID],
        programs: list[store.Program],
    ) -> store.Draft:
        program = uuid_or_none(form.get("program"))
        if program is None or program not in allowed:
            raise CampaignInputError("choose one of your programs")
        segment = form.get("segment", "ALL")
        fields = _segment_fields(form, segment, upload)
        plan = validate_campaign({"message_text": form.get("message"), **fields}, ())
        zone = next((p.timezone for p in programs if p.id == program), "UTC")
        return store.Draft(
            program_id=program,
            name=form.get("name").strip()[:200] or None,
            message=form.get("message").strip(),
            segment=plan.audience.segment,
            min_tier_points=_int_or_none(fields.get("min_tier_points")),
            min_points=_int_or_none(fields.get("min_points")),
            inactive_days=_int_or_none(fields.get("inactive_days")),
            zip_codes=list(plan.audience.zip_codes) or None,
            member_ids=list(plan.audience.member_ids) or None,
            scheduled_at=_schedule(form, zone, self.ctx.clock()),
        )

    # --- one campaign ---------------------------------------------------------------------------

    async def detail(self, request: web.Request) -> web.Response:
        viewer = viewer_of(request)
        row = await self._campaign(request)
        change = _change_of(row, self.ctx.clock())
        self.ctx.feed.remember(change)
        outcomes = await store.outcomes(self.ctx.scope(viewer), row.id)
        now = self.ctx.clock()
        since = row.started_at or now
        rate = await store.send_rate(self.ctx.scope(viewer), row.id, since)
        end = row.finished_at or now
        chart = charts.time_series(
            rate,
            label="Messages sent per second",
            unit="per second",
            per_second=True,
            start=min(since, end - timedelta(seconds=60)),
            end=end + timedelta(seconds=1),
        )
        return self.ctx.render(
            request,
            "campaign.html",
            c=row,
            outcomes=outcomes,
            rate_chart=chart,
            admin=viewer.admins(row.program_id),
            confirm_above=self.ctx.settings.loyaltyd_console_confirm_above,
            test_sent=uuid_or_none(request.query.get("test", "")),
            **_live_of(change, now),
        )

    async def live(self, request: web.Request) -> web.Response:
        """The campaign's moving figures (status, funnel, progress, ETA), from the feed."""
        change = await self._progress(request)
        return self.ctx.render(request, "_campaign_live.html", **_live_of(change, self.ctx.clock()))

    async def actions(self, request: web.Request) -> web.Response:
        """What an admin may do to the campaign now: asked for again only when its status
        moves, so an open dialog is not swapped away while the figures move."""
        viewer = viewer_of(request)
        row = await self._campaign(request)
        return self.ctx.render(
            request,
            "_campaign_actions.html",
            c=row,
            admin=viewer.admins(row.program_id),
            confirm_above=self.ctx.settings.loyaltyd_console_confirm_above,
        )

    async def _campaign(self, request: web.Request) -> store.CampaignDetail:
        viewer = viewer_of(request)
        campaign_id = uuid_of(request.match_info["id"], "campaign")
        row = await store.campaign(self.ctx.scope(viewer), campaign_id, viewer.program_ids)
        if row is None:
            raise not_found("campaign")
        return row

    async def confirm_page(self, request: web.Request) -> web.Response:
        """Without JavaScript, the dialog is a page of its own."""
        row = await self._campaign(request)
        self._must_admin(request, row)
        return self.ctx.render(
            request,
            "confirm.html",
            c=row,
            confirm_above=self.ctx.settings.loyaltyd_console_confirm_above,
        )

    async def confirm(self, request: web.Request) -> web.Response:
        """The DRAFT, as counted, goes out: "This will buzz N phones" confirmed (above the
        threshold, by typing N)."""
        viewer = viewer_of(request)
        row = await self._campaign(request)
        self._must_admin(request, row)
        form = await request.post()
        count = _int_or_none(str(form.get("count") or ""))
        typed = str(form.get("typed") or "").replace(",", "").strip()
        threshold = self.ctx.settings.loyaltyd_console_confirm_above
        problem = None
        if count is None or count != row.recipient_count or row.audience_counted_at is None:
            problem = "The count changed since you saw it: look at the new number."
        elif count > threshold and typed != str(count):
            problem = f"Type {count:,} (the number of phones) to confirm."
        elif not await store.confirm(
            self.ctx.scope(viewer), row.id, viewer.admin_programs, who(viewer), count
        ):
            problem = "This campaign is no longer a counted draft."
        if problem is not None:
            fresh = await self._campaign(request)
            return self.ctx.render(
                request, "confirm.html", status=409, c=fresh, error=problem, confirm_above=threshold
            )
        log.info("console_campaign_confirmed", campaign_id=str(row.id), phones=count)
        raise web.HTTPSeeOther(f"{PREFIX}/campaigns/{row.id}")

    async def cancel_page(self, request: web.Request) -> web.Response:
        """Without JavaScript, the cancel dialog is a page of its own."""
        row = await self._campaign(request)
        self._must_admin(request, row)
        return self.ctx.render(request, "cancel.html", c=row)

    async def cancel(self, request: web.Request) -> web.Response:
        viewer = viewer_of(request)
        row = await self._campaign(request)
        self._must_admin(request, row)
        if await store.cancel(self.ctx.scope(viewer), row.id, viewer.admin_programs, who(viewer)):
            log.info("console_campaign_cancelled", campaign_id=str(row.id))
        raise web.HTTPSeeOther(f"{PREFIX}/campaigns/{row.id}")

    async def test_send(self, request: web.Request) -> web.Response:
        """The message to one chosen member first: a campaign of its own, sent at once."""
        viewer = viewer_of(request)
        row = await self._campaign(request)
        self._must_admin(request, row)
        form = await request.post()
        member = str(form.get("member") or "").strip()
        if not member:
            raise web.HTTPBadRequest(text="choose the member id to send the test to")
        scope = self.ctx.scope(viewer)
        if await store.sample_member(scope, row.program_id, viewer.program_ids, member) is None:
            raise web.HTTPBadRequest(text=f"no member {member} in this program: check the id")
        draft = store.Draft(
            program_id=row.program_id,
            name=f"Test of {row.name or 'a campaign'}"[:200],
            message=row.message_text or "",
            segment="CSV",
            min_tier_points=None,
            min_points=None,
            inactive_days=None,
            zip_codes=None,
            member_ids=[member],
            scheduled_at=None,
        )
        test_id = await store.insert_draft(
            self.ctx.scope(viewer), draft, who(viewer), viewer.admin_programs, status="PENDING"
        )
        if test_id is None:
            raise not_found("campaign")
        log.info("console_test_sent", campaign_id=str(test_id), user=viewer.name)
        raise web.HTTPSeeOther(f"{PREFIX}/campaigns/{row.id}?test={test_id}")

    def _must_admin(self, request: web.Request, row: store.CampaignDetail) -> None:
        if not viewer_of(request).admins(row.program_id):
            raise web.HTTPForbidden(text="viewers may look, not send or cancel")

    # --- who got what ---------------------------------------------------------------------------

    async def recipients(self, request: web.Request) -> web.Response:
        viewer = viewer_of(request)
        row = await self._campaign(request)
        outcome = request.query.get("outcome") or None
        if outcome not in (None, *OUTCOMES):
            outcome = None
        after = uuid_or_none(request.query.get("after", ""))
        page = await store.recipients(
            self.ctx.scope(viewer), row.id, outcome=outcome, after=after, limit=PAGE
        )
        return self.ctx.render(
            request,
            "recipients.html",
            c=row,
            page=page,
            outcome=outcome or "",
            outcomes=OUTCOMES,
            next_after=page[-1].pass_id if len(page) == PAGE else None,
        )

    async def export(self, request: web.Request) -> web.StreamResponse:
        """Every recipient as CSV, streamed page by page; cells a spreadsheet would run as a
        formula are quoted (as the import report's are)."""
        viewer = viewer_of(request)
        row = await self._campaign(request)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="recipients-{row.id}.csv"',
            }
        )
        await response.prepare(request)
        await response.write(_csv_line(["member_id", "outcome", "reason", "message", "at"]))
        after: uuid.UUID | None = None
        while True:
            page = await store.recipients(
                self.ctx.scope(viewer), row.id, outcome=None, after=after, limit=EXPORT_PAGE
            )
            for r in page:
                at = r.finished_at.isoformat() if r.finished_at else ""
                cells = [r.external_id or "", r.state, r.error or "", r.rendered_text or "", at]
                await response.write(_csv_line(cells))
            if len(page) < EXPORT_PAGE:
                break
            after = page[-1].pass_id
        await response.write_eof()
        return response


# --- pure helpers --------------------------------------------------------------------------------


def _status_filter(request: web.Request) -> str | None:
    status = request.query.get("status", "").upper()
    return status if status in STATUSES else None


def _int_or_none(value: object) -> int | None:
    if isinstance(value, int):
        return value
    try:
        return int(str(value).replace(",", "").strip())
    except ValueError:
        return None


def _segment_fields(form: Form, segment: str, upload: list[str] | None) -> dict[str, object]:
    """The chosen segment's parameters, as the campaign rules take them."""
    fields: dict[str, object] = {"segment": segment}
    if segment not in SEGMENTS:
        return fields
    for name in ("min_tier_points", "min_points", "inactive_days"):
        if form.get(name).strip():
            value = _int_or_none(form.get(name))
            if value is None:
                raise CampaignInputError(f"{name.replace('_', ' ')} must be a whole number")
            fields[name] = value
    if segment == "LOCAL":
        fields["zip_codes"] = [z for z in form.get("zip_codes").replace(",", " ").split() if z]
    if segment == "CSV":
        typed = [m for m in form.get("member_ids").replace(",", " ").split() if m]
        fields["member_ids"] = upload if upload is not None else typed
    return fields


def _schedule(form: Form, timezone: str, now: datetime) -> datetime | None:
    """Now (None), or the local time the admin chose in the program's time zone: refused when
    missing, when the clocks skip it (a daylight-saving gap), or when it has passed."""
    if form.get("when") != "later":
        return None
    typed = form.get("scheduled_at").strip()
    if not typed:
        raise CampaignInputError("choose the date and time to send it (or 'As soon as I confirm')")
    try:
        local = datetime.fromisoformat(typed)
    except ValueError:
        raise CampaignInputError("the schedule must be a date and a time") from None
    zone = ZoneInfo(timezone)
    when = local.replace(tzinfo=zone) if local.tzinfo is None else local
    if local.tzinfo is None and when.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != local:
        raise CampaignInputError(
            f"{local:%Y-%m-%d %H:%M} does not exist in {timezone}: the clocks skip it that "
            "night; choose another time"
        )
    if when <= now:
        raise CampaignInputError("the scheduled time has passed: choose a time to come")
    return when


def _zone_of(programs: list[store.Program], chosen: str) -> str:
    """The time zone of the chosen program (else of the first)."""
    found = [p for p in programs if str(p.id) == chosen] or programs
    return found[0].timezone if found else "UTC"


def _change_of(row: store.CampaignDetail, now: datetime) -> store.Change:
    return store.Change(
        id=row.id,
        program_id=row.program_id,
        status=row.status or "",
        sent=row.sent_count or 0,
        failed=row.failed_count or 0,
        skipped=row.skipped_count or 0,
        recipient_count=row.recipient_count,
        counted=row.audience_counted_at is not None,
        started_at=row.started_at,
        finished_at=row.finished_at,
        updated_at=row.updated_at or now,
        unknown=row.unknown_member_count or 0,
        unknown_sample=list(row.unknown_member_ids or [])[:5],
        timezone=row.timezone,
    )


def _bar_of(change: store.Change) -> str:
    return charts.progress_bar(
        change.sent,
        change.failed,
        change.skipped,
        change.recipient_count or 0,
        label=f"Progress of campaign {change.id}",
    )


def _bars(rows: list[store.CampaignRow]) -> dict[uuid.UUID, str]:
    return {
        r.id: charts.progress_bar(r.sent, r.failed, r.skipped, r.recipients, label="Progress")
        for r in rows
    }


def _live_of(change: store.Change, now: datetime) -> dict[str, Any]:
    total = change.recipient_count or 0
    pending = max(total - change.done, 0)
    return {
        "change": change,
        "bar": _bar_of(change),
        "funnel": charts.funnel(
            total, change.sent, change.failed, change.skipped, pending, label="Where it went"
        ),
        "pending": pending,
        "eta": _eta(change, pending, now),
    }


def _eta(change: store.Change, pending: int, now: datetime) -> str | None:
    """When the last message should go, at the rate so far."""
    if change.status != "PROCESSING" or change.started_at is None or not pending:
        return None
    elapsed = (now - change.started_at).total_seconds()
    if elapsed <= 0 or change.done == 0:
        return None
    seconds = pending / (change.done / elapsed)
    if seconds < 60:
        return f"about {max(1, round(seconds))} s"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def _csv_line(cells: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerow([safe_cell(c) for c in cells])
    return out.getvalue().encode()
