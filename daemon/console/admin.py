"""A program's settings (its admins: birthday bot, reward, message, time zone, frequency cap;
every change recorded with who and when), operations (the `operator` role: daemons, work
owed, PassKit, dead syncs with a Requeue button, sends and errors over the last hour)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final
from zoneinfo import available_timezones

from aiohttp import web

from daemon.campaigns.rules import MAX_MESSAGE_CHARS
from daemon.console import charts
from daemon.console.context import ConsoleContext, Form, not_found, uuid_of, who
from daemon.console.web import PREFIX, viewer_of
from daemon.core.logs import get_logger
from daemon.core.templating import TemplateError, parse_template
from daemon.store import console as store
from daemon.store.passes import requeue_dead
from daemon.store.status import status_report

log = get_logger(__name__)

MAX_REWARD: Final = 1_000_000
MAX_CAP: Final = 100
MAX_MESSAGE: Final = MAX_MESSAGE_CHARS


class Admin:
    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/programs/{id}/settings", self.settings)
        r.add_post("/programs/{id}/settings", self.save_settings)
        r.add_get("/operations", self.operations)
        r.add_get("/operations/live", self.operations_live)
        r.add_post("/operations/requeue", self.requeue)

    # --- program settings -----------------------------------------------------------------------

    async def settings(self, request: web.Request) -> web.Response:
        program = await self._program(request)
        return await self._settings_page(request, program, form=None)

    async def _settings_page(
        self,
        request: web.Request,
        program: store.Program,
        *,
        form: Form | None,
        errors: list[str] | None = None,
        saved: list[str] | None = None,
        status: int = 200,
    ) -> web.Response:
        changes = await store.setting_changes(self.ctx.pool, program.id)
        return self.ctx.render(
            request,
            "settings.html",
            status=status,
            program=program,
            form=form or _form_of(program),
            errors=errors or [],
            saved=saved,
            changes=changes,
            timezones=sorted(available_timezones()),
        )

    async def _program(self, request: web.Request) -> store.Program:
        viewer = viewer_of(request)
        program_id = uuid_of(request.match_info["id"], "program")
        if not viewer.admins(program_id):
            raise not_found("program")
        found = await store.programs(self.ctx.scope(viewer), [program_id])
        if not found:
            raise not_found("program")
        return found[0]

    async def save_settings(self, request: web.Request) -> web.Response:
        viewer = viewer_of(request)
        program = await self._program(request)
        posted = await request.post()
        form = Form.posted(posted)
        errors, settings = _check_settings(form)
        if settings is None:
            return await self._settings_page(request, program, form=form, errors=errors, status=400)
        changed = await store.update_program(
            self.ctx.scope(viewer), program.id, [program.id], settings, who(viewer)
        )
        if changed is None:
            raise not_found("program")
        log.info("console_program_settings_saved", program_id=str(program.id), changed=changed)
        (fresh,) = await store.programs(self.ctx.scope(viewer), [program.id])
        return await self._settings_page(request, fresh, form=None, saved=changed)

    # --- operations -----------------------------------------------------------------------------

    async def operations(self, request: web.Request) -> web.Response:
        self._must_operate(request)
        return self.ctx.render(request, "operations.html", **await self._operations())

    async def operations_live(self, request: web.Request) -> web.Response:
        self._must_operate(request)
        return self.ctx.render(request, "_operations_live.html", **await self._operations())

    async def _operations(self) -> dict[str, Any]:
        report = await status_report(self.ctx.pool, campaigns=0, dead=20)
        end = self.ctx.clock()
        start = end - timedelta(hours=1)
        series = await store.sends_per_second(self.ctx.pool, start)
        return {
            "report": report,
            "passkit_up": not self.ctx.passkit_down(),
            "sends": charts.time_series(
                [(at, sent) for at, sent, _ in series],
                label="Campaign messages sent per second, last hour",
                unit="per second",
                per_second=True,
                start=start,
                end=end,
            ),
            "errors": charts.time_series(
                [(at, failed) for at, _, failed in series],
                label="Campaign messages failed per second, last hour",
                unit="per second",
                per_second=True,
                start=start,
                end=end,
            ),
            "stale": self.ctx.settings.loyaltyd_stale_seconds,
        }

    async def requeue(self, request: web.Request) -> web.Response:
        self._must_operate(request)
        form = await request.post()
        value = str(form.get("pass") or "")
        pass_id = uuid_of(value, "pass") if value else None
        count = await requeue_dead(self.ctx.pool, pass_id)
        log.info("console_dead_syncs_requeued", count=count, user=viewer_of(request).name)
        raise web.HTTPSeeOther(f"{PREFIX}/operations")

    def _must_operate(self, request: web.Request) -> None:
        if not viewer_of(request).operator:
            raise not_found()


def _form_of(program: store.Program) -> Form:
    return Form(
        {
            "birthday_bot_enabled": "on" if program.birthday_bot_enabled else "",
            "birthday_reward_points": str(program.birthday_reward_points),
            "birthday_message": program.birthday_message or "",
            "timezone": program.timezone,
            "max_pushes_per_pass_per_day": str(program.max_pushes_per_pass_per_day),
        }
    )


def _check_settings(form: Form) -> tuple[list[str], store.ProgramSettings | None]:
    """The settings as the program row takes them, or every problem with them."""
    errors: list[str] = []
    reward = _whole(form.get("birthday_reward_points"), 0, MAX_REWARD, "the reward", errors)
    cap = _whole(form.get("max_pushes_per_pass_per_day"), 1, MAX_CAP, "the cap", errors)
    message = form.get("birthday_message").strip()
    if len(message) > MAX_MESSAGE:
        errors.append(f"the birthday message is longer than {MAX_MESSAGE} characters")
    try:
        parse_template(message)
    except TemplateError as exc:
        errors.append(f"the birthday message has an {exc}")
    timezone = form.get("timezone").strip()
    if timezone not in available_timezones():
        errors.append(f"{timezone!r} is not a time zone (e.g. Europe/Paris)")
    if errors or reward is None or cap is None:
        return errors, None
    enabled = form.get("birthday_bot_enabled") in ("on", "true", "1")
    return [], store.ProgramSettings(enabled, reward, message, timezone, cap)


def _whole(value: str, low: int, high: int, what: str, errors: list[str]) -> int | None:
    try:
        number = int(value.replace(",", "").strip())
    except ValueError:
        errors.append(f"{what} must be a whole number")
        return None
    if not low <= number <= high:
        errors.append(f"{what} must be between {low:,} and {high:,}")
        return None
    return number
